"""CNI's exec protocol: the runtime's half of the Container Network Interface spec.

A network is a conflist (``{"cniVersion", "name", "plugins": [...]}``); each plugin is a
binary found in the bin directories, run with ``CNI_COMMAND`` (ADD, DEL, CHECK, VERSION),
``CNI_CONTAINERID``, ``CNI_NETNS``, ``CNI_IFNAME``, ``CNI_ARGS`` and ``CNI_PATH`` in its
environment and its configuration on stdin: the plugin's object with the list's
``cniVersion`` and ``name``, the previous result as ``prevResult``, and ``runtimeConfig``
holding what the runtime gives for each capability the plugin declares (``portMappings``,
``bandwidth``...). ADD runs the plugins in order, each getting the one before's result; DEL
runs them in reverse with the cached ADD result; CHECK in order with it. A plugin that
fails exits non-zero with ``{"code", "msg", "details"}`` on stdout: :class:`CniError`.

Only spec versions this module speaks (:data:`SPEC_VERSIONS`, 1.0.0 being what Debian's
plugins 1.1.1 support newest) are accepted. No plugin is re-implemented here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = (
    "DEFAULT_BIN_DIRS",
    "SPEC_VERSIONS",
    "CniError",
    "CniResult",
    "NetworkList",
    "Observer",
    "invoke",
    "load_network_list",
    "network_add",
    "network_check",
    "network_del",
)

SPEC_VERSIONS: Final = ("1.0.0",)
"""The ``cniVersion`` values this runtime speaks (CNI 1.0: ADD, DEL, CHECK, VERSION)."""

DEFAULT_BIN_DIRS: Final = ("/usr/lib/cni", "/opt/cni/bin")
"""Where plugins are looked for unless told otherwise (Debian's, then upstream's)."""

Observer = Callable[[str, str, float], None]
"""Told (command, plugin, seconds) after each plugin ran: how the time is spent."""

_OUTPUT_LIMIT: Final = 1 << 20
_ENV_KEEP: Final = ("PATH", "LANG", "LC_ALL", "XTABLES_LOCKFILE")


class CniError(Exception):
    """A plugin failed, or its answer is not what the spec says; ``code`` is CNI's."""

    def __init__(self, plugin: str, command: str, code: int, msg: str, details: str = "") -> None:
        self.plugin, self.command, self.code, self.msg, self.details = (
            plugin,
            command,
            code,
            msg,
            details,
        )
        text = f"CNI plugin {plugin} {command} failed (code {code}): {msg}"
        super().__init__(f"{text}: {details}" if details else text)


@dataclass(frozen=True, slots=True)
class NetworkList:
    """A parsed conflist: its name, version and plugin objects (as given)."""

    name: str
    cni_version: str
    plugins: tuple[Mapping[str, Any], ...]
    raw: Mapping[str, Any] = field(repr=False)

    @property
    def capabilities(self) -> frozenset[str]:
        """The capabilities (``portMappings``, ``bandwidth``...) some plugin declares."""
        return frozenset(
            name
            for plugin in self.plugins
            for name, on in (plugin.get("capabilities") or {}).items()
            if on is True
        )


@dataclass(frozen=True, slots=True)
class CniResult:
    """The part of an ADD result the sandboxer uses, and the whole as sent."""

    ips: tuple[tuple[str, str | None], ...]
    """(address with prefix, gateway or None) of each IP the network gave."""
    interfaces: tuple[str, ...]
    """The names of the interfaces inside the namespace (those with a ``sandbox``)."""
    raw: Mapping[str, Any] = field(repr=False)


def parse_network_list(document: Mapping[str, Any], where: str) -> NetworkList:
    """Check a conflist's shape; ValueError naming ``where`` and the problem."""
    if not isinstance(document, Mapping):
        raise ValueError(f"{where}: a network list must be a JSON object")
    name, version, plugins = (
        document.get("name"),
        document.get("cniVersion"),
        document.get("plugins"),
    )
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: name must be a non-empty string")
    if version not in SPEC_VERSIONS:
        raise ValueError(
            f"{where}: cniVersion {version!r} is not one this sandboxer speaks "
            f"({', '.join(SPEC_VERSIONS)})"
        )
    if not isinstance(plugins, list) or not plugins:
        raise ValueError(f"{where}: plugins must be a non-empty list")
    for index, plugin in enumerate(plugins):
        kind = plugin.get("type") if isinstance(plugin, Mapping) else None
        if not isinstance(kind, str) or not kind or "/" in kind or kind.startswith("."):
            raise ValueError(f"{where}: plugins[{index}].type must be a plugin's file name")
    return NetworkList(name, version, tuple(plugins), document)


def load_network_list(path: str) -> NetworkList:
    """Read and check a ``.conflist`` file (OSError, or ValueError naming it)."""
    with open(path, encoding="utf-8") as f:
        try:
            document = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not JSON: {exc}") from None
    return parse_network_list(document, path)


def find_plugin(kind: str, bin_dirs: Sequence[str]) -> str | None:
    """The path of plugin ``kind`` in the first of ``bin_dirs`` that has it, or None."""
    for directory in bin_dirs:
        path = os.path.join(directory, kind)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


@dataclass(frozen=True, slots=True)
class _Call:
    command: str
    container_id: str
    netns: str
    ifname: str
    bin_dirs: tuple[str, ...]
    args: str = ""


async def invoke(
    call: _Call, plugin: str, config: Mapping[str, Any], *, timeout: float
) -> Mapping[str, Any] | None:
    """Run one plugin for ``call`` with ``config`` on stdin; its JSON answer (None when
    empty, as DEL and CHECK answer). CniError on failure; the plugin is killed on
    timeout or cancellation."""
    path = find_plugin(plugin, call.bin_dirs)
    if path is None:
        raise CniError(plugin, call.command, 0, f"plugin not found in {':'.join(call.bin_dirs)}")
    env = {k: os.environ[k] for k in _ENV_KEEP if k in os.environ}
    env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    env.update(
        CNI_COMMAND=call.command,
        CNI_CONTAINERID=call.container_id,
        CNI_NETNS=call.netns,
        CNI_IFNAME=call.ifname,
        CNI_ARGS=call.args,
        CNI_PATH=os.pathsep.join(call.bin_dirs),
    )
    process = await asyncio.create_subprocess_exec(
        path,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd="/",
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate(json.dumps(config).encode())
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await asyncio.shield(process.wait())
        raise
    answer = _decode(out[:_OUTPUT_LIMIT], plugin, call.command)
    if process.returncode != 0:
        if isinstance(answer, Mapping) and isinstance(answer.get("msg"), str):
            code = answer.get("code")
            raise CniError(
                plugin,
                call.command,
                code if isinstance(code, int) else 999,
                answer["msg"],
                str(answer.get("details") or ""),
            )
        why = err.decode(errors="replace").strip()[:500] or f"exit status {process.returncode}"
        raise CniError(plugin, call.command, 999, why)
    if answer is not None and not isinstance(answer, Mapping):
        raise CniError(plugin, call.command, 999, "its answer is not a JSON object")
    return answer


async def _timed(
    call: _Call,
    plugin: str,
    config: Mapping[str, Any],
    timeout: float,
    observe: Observer | None,
) -> Mapping[str, Any] | None:
    began = time.perf_counter()
    try:
        return await invoke(call, plugin, config, timeout=timeout)
    finally:
        if observe is not None:
            observe(call.command, plugin, time.perf_counter() - began)


def _decode(out: bytes, plugin: str, command: str) -> Any:
    text = out.decode(errors="replace").strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise CniError(plugin, command, 999, f"its answer is not JSON: {text[:200]!r}") from None


def _plugin_config(
    network: NetworkList,
    plugin: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    runtime_config: Mapping[str, Any],
) -> dict[str, Any]:
    config = dict(plugin)
    config["cniVersion"] = network.cni_version
    config["name"] = network.name
    asked = {k for k, on in (plugin.get("capabilities") or {}).items() if on is True}
    given = {k: v for k, v in runtime_config.items() if k in asked}
    if given:
        config["runtimeConfig"] = given
    else:
        config.pop("runtimeConfig", None)
    if previous is not None:
        config["prevResult"] = previous
    return config


def parse_result(raw: Mapping[str, Any]) -> CniResult:
    """The addresses and interface names of an ADD result (ValueError if malformed)."""
    ips: list[tuple[str, str | None]] = []
    for ip in raw.get("ips") or []:
        if not isinstance(ip, Mapping) or not isinstance(ip.get("address"), str):
            raise ValueError("a result's ips entries must have an address")
        gateway = ip.get("gateway")
        ips.append((ip["address"], gateway if isinstance(gateway, str) else None))
    names = tuple(
        str(i.get("name"))
        for i in raw.get("interfaces") or []
        if isinstance(i, Mapping) and i.get("sandbox")
    )
    return CniResult(tuple(ips), names, raw)


async def network_add(
    network: NetworkList,
    *,
    container_id: str,
    netns: str,
    ifname: str,
    bin_dirs: Sequence[str],
    runtime_config: Mapping[str, Any] | None = None,
    timeout: float = 30.0,
    observe: Observer | None = None,
) -> CniResult:
    """ADD every plugin of ``network`` in order; the last one's result. On failure the
    caller DELs (the spec's way to undo a partial ADD)."""
    call = _Call("ADD", container_id, netns, ifname, tuple(bin_dirs))
    previous: Mapping[str, Any] | None = None
    for plugin in network.plugins:
        config = _plugin_config(network, plugin, previous, runtime_config or {})
        answer = await _timed(call, str(plugin["type"]), config, timeout, observe)
        if answer is None:
            raise CniError(str(plugin["type"]), "ADD", 999, "it answered no result")
        previous = answer
    assert previous is not None
    try:
        return parse_result(previous)
    except ValueError as exc:
        raise CniError(str(network.plugins[-1]["type"]), "ADD", 999, str(exc)) from None


async def network_del(
    network: NetworkList,
    *,
    container_id: str,
    netns: str,
    ifname: str,
    bin_dirs: Sequence[str],
    runtime_config: Mapping[str, Any] | None = None,
    previous: Mapping[str, Any] | None = None,
    timeout: float = 30.0,
    observe: Observer | None = None,
) -> None:
    """DEL every plugin of ``network`` in reverse order, with the cached ADD result if any.

    Every plugin runs even when one fails (what each holds is released); the first failure
    is raised at the end. DEL of what is already gone succeeds, as the spec requires."""
    call = _Call("DEL", container_id, netns, ifname, tuple(bin_dirs))
    failure: CniError | None = None
    for plugin in reversed(network.plugins):
        config = _plugin_config(network, plugin, previous, runtime_config or {})
        try:
            await _timed(call, str(plugin["type"]), config, timeout, observe)
        except CniError as exc:
            failure = failure or exc
    if failure is not None:
        raise failure


async def network_check(
    network: NetworkList,
    *,
    container_id: str,
    netns: str,
    ifname: str,
    bin_dirs: Sequence[str],
    previous: Mapping[str, Any],
    runtime_config: Mapping[str, Any] | None = None,
    timeout: float = 30.0,
    on_failure: Callable[[CniError, Mapping[str, Any]], None] | None = None,
) -> None:
    """CHECK every plugin of ``network`` in order against the cached ADD result.

    ``on_failure`` is shown a plugin's failure with the config it was given before it is
    raised (it may raise something else instead)."""
    call = _Call("CHECK", container_id, netns, ifname, tuple(bin_dirs))
    for plugin in network.plugins:
        config = _plugin_config(network, plugin, previous, runtime_config or {})
        try:
            await invoke(call, str(plugin["type"]), config, timeout=timeout)
        except CniError as exc:
            if on_failure is not None:
                on_failure(exc, config)
            raise
