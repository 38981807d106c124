"""The sandbox commands of ``sandboxctl``: each takes a Client and returns an Outcome."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence

from .._client import Client
from .._facts._lifetime import IDLE_TIMEOUT_LABEL, checked_seconds
from .._facts._netcheck import NETWORK_CHECK_KEY, parse_check
from .._sandbox import Sandbox
from ..errors import ContainerdError
from ._base import DEFAULT_RUNTIME, EXIT_ERROR, LabelEdit, Outcome
from ._exec import stream_exec
from ._netopts import NetworkOptions
from ._render import (
    exit_code,
    fields_text,
    info_json,
    iso,
    labels_text,
    start_json,
    status_json,
    table,
    when,
)

__all__ = (
    "cmd_info",
    "cmd_labels",
    "cmd_limits",
    "cmd_ls",
    "cmd_rm",
    "cmd_run",
    "cmd_start",
    "cmd_status",
    "cmd_stop",
    "cmd_wait",
)


async def cmd_ls(client: Client, filters: Sequence[str] = ()) -> Outcome:
    """List the sandboxes matching any of ``filters`` (containerd filter syntax), or all,
    with the time limits their labels ask for."""
    infos = sorted(await client.list_sandboxes(*filters), key=lambda i: i.id)
    rows = [
        (
            i.id,
            i.sandboxer,
            when(i.created_at),
            when(i.deadline),
            i.labels.get(IDLE_TIMEOUT_LABEL, "-"),
            labels_text(i.labels),
        )
        for i in infos
    ]
    return Outcome(
        [info_json(i) for i in infos],
        table(("ID", "SANDBOXER", "CREATED", "DEADLINE", "IDLE", "LABELS"), rows),
    )


async def cmd_info(client: Client, sandbox_id: str) -> Outcome:
    """Show a sandbox's store record."""
    info = await client.get_sandbox(sandbox_id)
    spec = "-" if info.spec is None else json.dumps(dict(info.spec), separators=(",", ":"))
    if info.spec is None and info.spec_any is not None:
        spec = f"{info.spec_any.type_url} ({len(info.spec_any.value)} bytes)"
    extensions = ", ".join(
        f"{k} ({v.type_url}, {len(v.value)} bytes)" for k, v in sorted(info.extensions.items())
    )
    text = fields_text(
        [
            ("ID", info.id),
            ("SANDBOXER", info.sandboxer),
            ("RUNTIME", info.runtime.name or "-"),
            ("CREATED", when(info.created_at)),
            ("UPDATED", when(info.updated_at)),
            ("DEADLINE", when(info.deadline)),
            ("LABELS", labels_text(info.labels)),
            ("SPEC", spec),
            ("EXTENSIONS", extensions or "-"),
        ],
        raw=("SPEC",),  # JSON, ASCII-escaped already
    )
    return Outcome(info_json(info), text)


async def cmd_run(
    client: Client,
    sandbox_id: str,
    command: Sequence[str],
    *,
    labels: Mapping[str, str] | None = None,
    runtime: str = DEFAULT_RUNTIME,
    wait: bool = False,
    network: NetworkOptions | None = None,
    lifetime: float | None = None,
    idle_timeout: float | None = None,
) -> Outcome:
    """Create a sandbox that runs ``command`` and start it, on ``network`` if given, with
    the time limits given (see ``new_sandbox``).

    With ``wait``, the sandbox runs its controller's own process instead, ``command`` runs
    in it (an exec into its own task) with its output shown on this process's stdout and
    stderr, then the sandbox is stopped; the outcome's code is the command's. If the
    sandbox cannot be started it is shut down again, so the id can be reused.
    """
    if not command:
        raise ValueError("a command to run is required")
    sb = await client.new_sandbox(
        sandbox_id,
        labels=dict(labels or {}),
        runtime=runtime,
        spec={} if wait else {"process": {"args": list(command)}},
        lifetime=lifetime,
        idle_timeout=idle_timeout,
        **(network or NetworkOptions()).keywords(),
    )
    try:
        started = await sb.start()
    except ContainerdError:
        with contextlib.suppress(ContainerdError):
            await sb.shutdown()
        raise
    data = start_json(sb.id, started)
    if not wait:
        return Outcome(data, f"started {sb.id} (pid {started.pid})")
    try:
        code = await stream_exec(sb, command, interactive=False, terminal=False)
    finally:
        with contextlib.suppress(ContainerdError):
            await sb.stop()
    data["returncode"] = code
    return Outcome(data, "", exit_code(code))


async def cmd_limits(
    client: Client,
    sandbox_id: str,
    *,
    lifetime: float | None = None,
    idle_timeout: float | None = None,
) -> Outcome:
    """Give a sandbox a new lifetime (seconds from now) and/or idle timeout (seconds), as
    ``Sandbox.set_lifetime`` and ``set_idle_timeout`` do; show the limits in force."""
    if lifetime is None and idle_timeout is None:
        raise ValueError("give --lifetime, --idle-timeout or both")
    for value, name in ((lifetime, "lifetime"), (idle_timeout, "idle_timeout")):
        if value is not None:  # both checked before either is changed: none is, or both
            checked_seconds(value, name)
    sb = await client.load_sandbox(sandbox_id)
    if lifetime is not None:
        await sb.set_lifetime(lifetime)
    if idle_timeout is not None:
        await sb.set_idle_timeout(idle_timeout)
    status = await sb.status()
    shown = {"deadline": iso(status.deadline), "idle_timeout": status.info.get("idle_timeout")}
    pairs = [
        ("ID", sb.id),
        ("DEADLINE", when(status.deadline)),
        ("IDLE TIMEOUT", shown["idle_timeout"] or "-"),
        ("IDLE DEADLINE", when(status.idle_deadline)),
    ]
    return Outcome({"id": sb.id, **shown}, fields_text(pairs))


async def cmd_start(client: Client, sandbox_id: str) -> Outcome:
    """Start a created sandbox."""
    sb = await client.load_sandbox(sandbox_id)
    started = await sb.start()
    return Outcome(start_json(sb.id, started), f"started {sb.id} (pid {started.pid})")


async def cmd_stop(client: Client, sandbox_id: str, grace: float | None = None) -> Outcome:
    """Stop a sandbox; ``grace`` is how long its controller waits before killing it."""
    sb = await client.load_sandbox(sandbox_id)
    await sb.stop(grace=grace)
    return Outcome({"id": sb.id, "stopped": True}, f"stopped {sb.id}")


async def _wait_exit(sb: Sandbox, timeout: float | None = None) -> Outcome:
    channel = await sb.wait(timeout=timeout)
    try:
        status = await channel
    finally:
        channel.close()
    if status.error is not None:
        raise status.error
    data = {"id": sb.id, "returncode": status.returncode, "exited_at": iso(status.exited_at)}
    return Outcome(data, str(status.returncode), exit_code(status.returncode))


async def cmd_wait(client: Client, sandbox_id: str, *, timeout: float | None = None) -> Outcome:
    """Wait (at most ``timeout`` seconds) for a sandbox to exit; the outcome's code is the
    sandbox's exit code."""
    return await _wait_exit(await client.load_sandbox(sandbox_id), timeout)


async def cmd_rm(client: Client, sandbox_ids: Sequence[str]) -> Outcome:
    """Shut down and delete each sandbox; those that fail are reported and the rest go on."""
    removed: list[str] = []
    errors: list[str] = []
    for sandbox_id in sandbox_ids:
        try:
            sb = await client.load_sandbox(sandbox_id)
            await sb.shutdown()
        except ContainerdError as exc:
            errors.append(f"{sandbox_id}: {exc}")
        else:
            removed.append(sandbox_id)
    return Outcome(
        {"removed": removed}, "\n".join(removed), EXIT_ERROR if errors else 0, tuple(errors)
    )


async def cmd_labels(client: Client, sandbox_id: str, edits: Sequence[LabelEdit] = ()) -> Outcome:
    """Show a sandbox's labels; with ``edits``, apply them first (in order)."""
    info = await client.get_sandbox(sandbox_id)
    if edits:
        # Only the keys edited travel, as field paths: a concurrent writer of other keys
        # keeps its change.
        labels = dict(info.labels)
        for key, value in edits:
            if value:
                labels[key] = value
            else:
                labels.pop(key, None)
        paths = list(dict.fromkeys(f"labels.{key}" for key, _ in edits))
        info = await client.sandbox_handle(info).update(labels=labels, fields=paths)
    labels = dict(info.labels)
    return Outcome(labels, table(("KEY", "VALUE"), sorted(labels.items())))


async def cmd_status(client: Client, sandbox_id: str) -> Outcome:
    """Show a sandbox's runtime state as its controller reports it, verbosely: this
    project's isolating sandboxer adds the limits, seccomp profile and user namespace
    (its host ids and owner) in force, the bytes its log dropped, its network (mode,
    addresses, published ports) and what CNI's CHECK of it found."""
    sb = await client.load_sandbox(sandbox_id)
    status = await sb.status(verbose=True)
    pairs = [
        ("ID", status.id or sb.id),
        ("STATE", str(status.state) or "-"),
        ("PID", str(status.pid) if status.pid else "-"),
        ("CREATED", when(status.created_at)),
        ("EXITED", when(status.exited_at)),
    ]
    if status.deadline is not None or "idle_timeout" in status.info:
        pairs.append(("DEADLINE", when(status.deadline)))
        pairs.append(("IDLE DEADLINE", when(status.idle_deadline)))
    if status.address:
        pairs.append(("ADDRESS", status.address))
    if "network" in status.info:
        with contextlib.suppress(ContainerdError):  # shown raw below when it does not parse
            net = await sb.network()
            gateway = f" via {net.gateway}" if net.gateway else ""
            pairs.append(("NETWORK", f"{net.mode} {' '.join(map(str, net.addresses))}{gateway}"))
            pairs.extend(
                ("PORT", f"{p.host_ip}:{p.host_port}->{p.container_port}/{p.protocol}")
                for p in net.ports
            )
    if NETWORK_CHECK_KEY in status.info:
        with contextlib.suppress(ValueError):  # shown raw below when it does not parse
            checked = parse_check(status.info[NETWORK_CHECK_KEY])
            each = ", ".join(f"{p.plugin} {p.outcome}" for p in checked.plugins)
            pairs.append(("CHECK", f"{'ok' if checked.ok else 'FAILED'} ({each})"))
    pairs.extend((f"INFO {k}", v) for k, v in sorted(status.info.items()))
    return Outcome(status_json(status), fields_text(pairs))
