"""The networks of the isolating sandboxer's sandboxes: CNI, set up at Start, torn down after.

A sandbox asks through its spec's annotation
:data:`~sandboxclient._facts._network.NETWORK_ANNOTATION` (see
:mod:`sandboxclient._facts._network`). ``none`` (or nothing) is the old behaviour: runc makes
a network namespace holding only ``lo``. ``bridge``:

1. at Start, once the task is created and before its process runs (:meth:`PodNetworks.start`
   gives the hook ``PodRuntime.launch`` calls with the task's pid): the published ports'
   host sockets are taken (:mod:`._netports`; a port taken already is INVALID_ARGUMENT,
   with nothing set up); the network namespace runc made for the task (in the sandbox's
   user namespace, which must own it for ``/sys`` to mount) is pinned by a bind mount at
   ``<state>/cni/netns/<CNI container id>`` (:mod:`._netns`); CNI's ``loopback`` brings
   ``lo`` up and the network list (:mod:`._cni`) is ADDed as ``eth0`` with the
   ``portMappings`` and ``bandwidth`` runtime config, while the egress policy is loaded
   into the namespace's own iptables (:mod:`._egress`);
2. at Stop and Shutdown the ports are let go and the DEL (with the cached ADD result, then
   the namespace's pin removed) runs in the background, finished before a Start that needs
   what it holds and before the sandboxer closes (:mod:`._netteardown`); after a failed
   Start, and when a sandboxer without a state directory closes, at once.

What teardown needs is written to ``<sandbox dir>/network.json`` before the ADD (and the
ADD's result after it), so a sandboxer killed at any point and started again over the same
state directory tears down what its predecessor set up; it takes the holders back for the
sandboxes still running. Teardown is idempotent: the file goes last. The CNI container id
is new at each Start, so a DEL still under way never meets a later life's chains.

The network list is the first ``*.conflist`` (by name) in ``--cni-conf-dir``, or the default
bridge list this module writes into the state directory (:func:`default_network_list`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from grpclib.exceptions import GRPCError

from .._facts._golang import go_quote
from .._facts._netcheck import NETWORK_CHECK_KEY
from .._facts._network import (
    NETWORK_INFO_KEY,
    NetworkRequest,
    PortMapping,
    SandboxNetwork,
)
from .._serve._refusals import failed_precondition, invalid_argument
from ._cni import (
    DEFAULT_BIN_DIRS,
    CniError,
    CniResult,
    NetworkList,
    find_plugin,
    load_network_list,
    network_add,
    parse_network_list,
    parse_result,
)
from ._egress import apply_egress, check_capabilities
from ._netcheck import check_network
from ._netconf import (
    DEFAULT_NETWORK_NAME,
    IFNAME,
    LOOPBACK,
    NETWORK_STATE_FILE,
    STATE_VERSION,
    container_id,
    default_network_list,
    join_network,
    netns_path,
    network_request_of,
    network_state,
    used_plugins,
    user_namespace_path,
)
from ._netns import make_netns, pin_netns
from ._netports import Holders, hold
from ._netteardown import Teardowns, release
from ._podstate import PodEntry, PodTable
from ._spec import decode_spec
from ._state import read_private_json, write_json

__all__ = (
    "DEFAULT_NETWORK_NAME",
    "NETWORK_STATE_FILE",
    "PodNetworks",
    "default_network_list",
    "network_request_of",
)

_log = logging.getLogger("sandboxclient.sandboxer")


class PodNetworks:
    """The CNI networks of one sandboxer's sandboxes (see the module's docstring)."""

    def __init__(
        self,
        table: PodTable,
        *,
        conf_dir: str | None = None,
        bin_dirs: Sequence[str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        """``conf_dir``: where the network list is (its first ``*.conflist``; ValueError
        or OSError if unusable), else the default one is written into the state; ``bin_dirs``:
        where the plugins are (:data:`~._cni.DEFAULT_BIN_DIRS` by default). The published
        ports of the table's running sandboxes are held again."""
        self.bin_dirs = tuple(bin_dirs) if bin_dirs is not None else DEFAULT_BIN_DIRS
        self.timeout = timeout
        self._table = table
        self._holders: dict[str, Holders] = {}
        self.teardowns = Teardowns(table.base, bin_dirs=self.bin_dirs, timeout=timeout)
        self._setups: dict[str, asyncio.Task[str]] = {}
        self._problem: str | None = None
        self.network: NetworkList | None = None
        self._default = conf_dir is None
        try:
            self.network = self._load(table.base, conf_dir)
        except (OSError, ValueError) as exc:
            if conf_dir is not None:
                raise
            self._problem = str(exc)
        if self.network is not None:
            missing = [
                str(p["type"])
                for p in (*self.network.plugins, {"type": "loopback"})
                if find_plugin(str(p["type"]), self.bin_dirs) is None
            ]
            if missing:
                self._problem = (
                    f"CNI plugins {', '.join(missing)} not found in {':'.join(self.bin_dirs)}"
                )
        for entry in table.entries():
            if entry.started and entry.record.exit_status is None:
                self.take_back(table.sandbox_dir(entry), entry.record.key)

    def _load(self, base: str, conf_dir: str | None) -> NetworkList:
        if conf_dir is not None:
            names = sorted(n for n in os.listdir(conf_dir) if n.endswith(".conflist"))
            if not names:
                raise ValueError(f"--cni-conf-dir {conf_dir}: no *.conflist file in it")
            return load_network_list(os.path.join(conf_dir, names[0]))
        directory = os.path.join(base, "cni")
        os.makedirs(directory, mode=0o700, exist_ok=True)
        path = os.path.join(directory, f"{DEFAULT_NETWORK_NAME}.conflist")
        write_json(path, default_network_list())
        return load_network_list(path)

    def check(self, request: NetworkRequest, index_hint: str = "network") -> None:
        """Refuse, at Create, what this sandboxer cannot give (INVALID_ARGUMENT naming the
        field): a bridge without a usable network list or plugins, ports without a plugin
        that maps them, a host address that is not the host's or a port taken already."""
        if request.mode == "none":
            return
        if self.network is None or self._problem is not None:
            raise invalid_argument(
                f"{index_hint} {request.mode!r} is not available on this sandboxer: "
                f"{self._problem or 'no network list'}"
            )
        if request.ports and "portMappings" not in self.network.capabilities:
            raise invalid_argument(
                f"ports: network list {self.network.name!r} has no plugin with the "
                "portMappings capability"
            )
        if request.bandwidth is not None and "bandwidth" not in self.network.capabilities:
            raise invalid_argument(
                f"bandwidth: network list {self.network.name!r} has no plugin with the "
                "bandwidth capability"
            )
        for index, port in enumerate(request.ports):
            sock, _ = hold(port, index)
            sock.close()

    # --- what a sandbox has -------------------------------------------------------------

    @staticmethod
    def _state_path(directory: str) -> str:
        return os.path.join(directory, NETWORK_STATE_FILE)

    def state(self, directory: str) -> dict[str, Any] | None:
        """The sandbox's network state, or None when it has none set up."""
        path = self._state_path(directory)
        try:
            data = read_private_json(path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            _log.warning("unreadable network state %s: %s", path, exc)
            return None
        return data if isinstance(data, dict) and data.get("version") == STATE_VERSION else None

    def info(self, directory: str) -> SandboxNetwork | None:
        """What the sandbox got, for Status (None when it has no network set up)."""
        data = self.state(directory)
        if data is None or not isinstance(data.get("result"), dict):
            return None
        result = parse_result(data["result"])
        addresses = tuple(ipaddress.ip_interface(a) for a, _ in result.ips)
        gateways = [g for _, g in result.ips if g]
        ports = tuple(PortMapping.from_json(p, "ports") for p in data.get("ports") or [])
        return SandboxNetwork(
            "bridge",
            addresses,
            ipaddress.ip_address(gateways[0]) if gateways else None,
            ports,
            str(data.get("network", {}).get("name", "")),
        )

    # --- setup and teardown -------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _undone(self, directory: str, key: str) -> AsyncIterator[None]:
        """On failure, tear down what was set up, then raise (FAILED_PRECONDITION for a
        plugin's or the system's failure). A setup run ahead of the task (:meth:`start`) is
        not undone by itself: its teardown would cancel it as a setup still running, and
        unpin the namespace the task is being created in. The Start's failure, which its
        error becomes once the task is made, tears it down (stopping it first if need be)."""
        try:
            yield
        except BaseException as exc:
            if self._setups.get(key) is not asyncio.current_task():
                await asyncio.shield(self._teardown_logged(directory, key))
            if isinstance(exc, CniError | OSError):
                raise failed_precondition(f"cannot set up the sandbox's network: {exc}") from None
            raise

    async def prepare(
        self,
        directory: str,
        key: str,
        request: NetworkRequest,
        pin: Callable[[str], Awaitable[None]],
        cid: str,
    ) -> dict[str, Any]:
        """The first half of a ``bridge`` sandbox's setup: its host ports held, its state
        written, the network namespace ``pin`` pins at the path it is given (the created
        task's, or one made for the task to join: in the sandbox's user namespace either
        way, so that its sysfs can be mounted). The state; on failure, nothing is left."""
        assert request.mode == "bridge"
        wanted = [(p.host_ip, p.host_port or 0, p.protocol) for p in request.ports]
        await self.teardowns.wait_for(key, wanted)
        self.check(request)
        assert self.network is not None
        holders = Holders()
        ports: list[PortMapping] = []
        try:
            for index, port in enumerate(request.ports):
                sock, number = hold(port, index)
                holders.sockets.append(sock)
                ports.append(PortMapping(port.container_port, number, port.host_ip, port.protocol))
        except BaseException:
            holders.close()
            raise
        self._holders[key] = holders
        netns = netns_path(self._table.base, cid)
        listed = used_plugins(self.network, request) if self._default else self.network
        state = network_state(listed, cid, netns, ports, request)
        async with self._undone(directory, key):
            write_json(self._state_path(directory), state)
            await pin(str(state["netns"]))
        return state

    async def connect(
        self, directory: str, key: str, request: NetworkRequest, state: dict[str, Any]
    ) -> str:
        """The second half: loopback and the network list ADDed while the egress rules load;
        the namespace's path. On failure what was set up is torn down."""
        netns = str(state["netns"])
        async with self._undone(directory, key):
            # The egress rules live in the namespace alone: loaded while the plugins run.
            rules = asyncio.ensure_future(apply_egress(netns, request.egress, timeout=self.timeout))
            try:
                result = await self._add(netns, state)
            finally:
                await asyncio.wait([rules])
                failed = rules.exception()  # retrieved even when the plugins failed too
            if failed is not None:
                raise failed
            state["result"] = dict(result.raw)
            write_json(self._state_path(directory), state)
        return netns

    async def _add(self, netns: str, state: dict[str, Any]) -> CniResult:
        listed = parse_network_list(state["network"], "network")
        loopback = parse_network_list(LOOPBACK, "lo")
        for network, ifname in ((loopback, "lo"), (listed, IFNAME)):
            result = await network_add(
                network,
                container_id=str(state["container_id"]),
                netns=netns,
                ifname=ifname,
                bin_dirs=self.bin_dirs,
                runtime_config=state["runtime_config"] if network is listed else None,
                timeout=self.timeout,
            )
        return result

    def take_back(self, directory: str, key: str) -> None:
        """After a restart: hold again the ports of a sandbox still running."""
        data = self.state(directory)
        if data is None or key in self._holders:
            return
        holders = Holders()
        for index, raw in enumerate(data.get("ports") or []):
            try:
                sock, _ = hold(PortMapping.from_json(raw, "ports"), index)
            except Exception as exc:  # the sandbox keeps its DNAT; only the guard is lost
                _log.warning("sandbox %s: cannot hold published port again: %s", key, exc)
                continue
            holders.sockets.append(sock)
        self._holders[key] = holders

    async def teardown(self, directory: str, key: str) -> None:
        """DEL the sandbox's network and remove its namespace; nothing if it has none.
        Idempotent; raises (CniError, OSError) leaving the state for a later attempt."""
        await self._stop_setup(key)
        holders = self._holders.pop(key, None)
        if holders is not None:
            holders.close()
        path = self._state_path(directory)
        data = self.state(directory)
        if data is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        await release(data, path, bin_dirs=self.bin_dirs, timeout=self.timeout)
        os.unlink(path)

    async def _stop_setup(self, key: str) -> None:
        """Cancel and await a setup of ``key`` still running (it undoes what it did)."""
        task = self._setups.pop(key, None)
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
            if not task.cancelled():
                task.exception()  # its caller, if any, has it; here it is only undone

    async def defer(self, entry: PodEntry) -> None:
        """Let go of the sandbox's ports now and DEL its network in the background (see
        :mod:`._netteardown`); nothing if it has none."""
        self.teardowns.resume()
        key, directory = entry.record.key, self._table.sandbox_dir(entry)
        await self._stop_setup(key)
        holders = self._holders.pop(key, None)
        if holders is not None:
            holders.close()
        data = self.state(directory)
        path = self._state_path(directory)
        if data is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        if os.path.dirname(str(data["netns"])) == directory:  # pinned where Shutdown removes
            await self.teardown_checked(entry)  # (a Start before pins moved to cni/netns)
            return
        self.teardowns.defer(path, data, key)

    # --- what the controller calls ------------------------------------------------------

    def check_sandbox(
        self, spec: Mapping[str, Any] | None, annotations: Mapping[str, str], netns_path: str
    ) -> None:
        """Refuse, at Create or Update, a network this sandboxer cannot give the sandbox
        (INVALID_ARGUMENT naming it)."""
        self.teardowns.resume()
        request = network_request_of(spec, annotations)
        if request.mode != "bridge":
            return
        joined = [
            n
            for n in ((spec or {}).get("linux") or {}).get("namespaces") or []
            if isinstance(n, dict) and n.get("type") == "network" and n.get("path")
        ]
        if netns_path or joined:
            raise invalid_argument(
                "network 'bridge' and a network namespace to join (netns_path or the spec's "
                "linux.namespaces) both given: give one of them"
            )
        check_capabilities(spec)
        self.check(request)

    async def start(
        self, entry: PodEntry, given: Mapping[str, Any] | None, spec: dict[str, Any] | None = None
    ) -> Callable[[int], Awaitable[None]] | None:
        """At Start: tear down what a failed Start left; for a sandbox that asks for a
        network, what sets it up once its task is created, given the task's pid.

        When ``spec`` (the task's, about to be created) joins a user namespace by path, the
        network namespace is made in it now and the spec joins it too: the plugins then run
        while the task is created, and the hook only awaits them (see :mod:`._netns`)."""
        self.teardowns.resume(again=True)  # a DEL that failed since is tried again
        await self.teardown_checked(entry)
        record = entry.record
        request = network_request_of(given, record.annotations)
        if request.mode != "bridge":
            return None
        directory, key, cid = self._table.sandbox_dir(entry), record.key, container_id(record.key)
        userns = user_namespace_path(spec)
        if spec is None or userns is None:

            async def attach(pid: int) -> None:
                pin = functools.partial(pin_netns, pid)
                state = await self.prepare(directory, key, request, pin, cid)
                await self.connect(directory, key, request, state)

            return attach
        make = functools.partial(make_netns, userns, timeout=self.timeout)
        state = await self.prepare(directory, key, request, make, cid)
        join_network(spec, str(state["netns"]))
        task = asyncio.ensure_future(self.connect(directory, key, request, state))
        self._setups[key] = task

        async def joined(pid: int) -> None:
            try:
                await asyncio.shield(task)
            finally:  # if cut short, the ADD goes on: teardown cancels and awaits it
                if task.done() and self._setups.get(key) is task:
                    del self._setups[key]

        return joined

    def has_network(self, entry: PodEntry) -> bool:
        """Whether the sandbox has (or had, not yet torn down) a network set up."""
        record = entry.record  # not sandbox_dir(), which would make the directory
        directory = os.path.join(self._table.base, "sandboxes", record.namespace, record.sandbox_id)
        return os.path.exists(self._state_path(directory))

    async def teardown_checked(self, entry: PodEntry) -> None:
        """:meth:`teardown`, FAILED_PRECONDITION if it fails (what is left stays recorded,
        for the next Stop or Shutdown)."""
        record = entry.record
        try:
            await self.teardown(self._table.sandbox_dir(entry), record.key)
        except (CniError, OSError) as exc:
            raise failed_precondition(
                f"cannot tear down the network of sandbox {go_quote(record.sandbox_id)}: {exc}"
            ) from None

    async def teardown_quietly(self, entry: PodEntry) -> None:
        """:meth:`teardown`, a failure logged (an error is being raised already)."""
        await self._teardown_logged(self._table.sandbox_dir(entry), entry.record.key)

    async def _teardown_logged(self, directory: str, key: str) -> None:
        try:
            await self.teardown(directory, key)
        except (CniError, OSError) as exc:
            _log.error("sandbox %s: network teardown: %s", key, exc)

    async def status_info(self, entry: PodEntry, *, verbose: bool = False) -> dict[str, str]:
        """Status ``info[NETWORK_INFO_KEY]``: what the sandbox got while it runs, its mode
        alone once it has stopped; with ``verbose``, a running sandbox's network is also
        CHECKed (``info[NETWORK_CHECK_KEY]``, see :mod:`._netcheck`)."""
        self.teardowns.resume()
        try:
            record = entry.record
            request = network_request_of(decode_spec(record.sandbox.spec), record.annotations)
        except GRPCError:
            request = NetworkRequest()
        directory = self._table.sandbox_dir(entry)
        found = self.info(directory) if entry.running else None
        info = {NETWORK_INFO_KEY: json.dumps((found or SandboxNetwork(request.mode)).to_json())}
        data = self.state(directory) if verbose and found is not None else None
        if data is not None and isinstance(data.get("result"), dict):
            checked = await check_network(
                parse_network_list(data["network"], self._state_path(directory)),
                container_id=str(data["container_id"]),
                netns=str(data["netns"]),
                ifname=str(data["ifname"]),
                bin_dirs=self.bin_dirs,
                previous=data["result"],
                runtime_config=data.get("runtime_config") or {},
                timeout=self.timeout,
            )
            info[NETWORK_CHECK_KEY] = json.dumps(checked.to_json())
        return info

    async def close(self, *, teardown: bool) -> None:
        """Let go of every held port; with ``teardown`` (a sandboxer without a state
        directory, whose sandboxes go with it) tear down every network first. Otherwise
        the networks stay, for the next sandboxer."""
        if teardown:
            for entry in self._table.entries():
                if not entry.lock.locked():  # a Start or Shutdown under way undoes its own
                    await self.teardown_quietly(entry)
        self.teardowns.resume(again=True)
        await self.teardowns.settle()
        for holders in self._holders.values():
            holders.close()
        self._holders.clear()
