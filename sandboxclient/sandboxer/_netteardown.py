"""Tearing a sandbox's network down: CNI's DEL, then its namespace's pin, now or in the
background after the sandbox is gone.

DEL is most of a networked sandbox's cost (the plugins' iptables writes: portmap's and
bridge's DEL take 100-200 ms together), and nothing the client waits for needs it done: by
the time Stop or Shutdown tears a network down, the sandbox's processes are gone, its host
ports are no longer held by the sandboxer, and what DEL releases (an address lease, a veth,
NAT rules) belongs to no one else. So Stop and Shutdown *defer* it: the sandbox's
``network.json`` is renamed into ``<base>/cni/pending/`` (one rename: a sandboxer killed
now finds it there) and a task this module owns runs the DEL. What is deferred is finished:

- before a Start whose sandbox has the same key or asks for a host port the pending one
  had (their DNAT would shadow the new one's), which awaits it first
  (:meth:`Teardowns.wait_for`);
- before the sandboxer closes (:meth:`Teardowns.settle`);
- by the next sandboxer over the same state directory, for a sandboxer killed meanwhile
  (:meth:`Teardowns.resume`, at its first Create, Start, Status, Stop, Shutdown or close:
  the first call that runs in its event loop).

A DEL that fails leaves its file, logged, for the next Start, the sandboxer's close or the
next sandboxer to try again. A Start that fails tears its network down at once
(:func:`release`), as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from ._cni import CniError, network_del, parse_network_list
from ._netns import is_mounted, remove_netns
from ._state import read_private_json

__all__ = ("PENDING_DIR", "Teardowns", "release")

_log = logging.getLogger("sandboxclient.sandboxer")

PENDING_DIR: Final = "pending"
"""Under ``<base>/cni``: the states of networks whose DEL is under way or still owed."""

Port = tuple[str, int, str]
"""(host address, host port, protocol) of a published port."""


async def release(
    data: Mapping[str, Any], where: str, *, bin_dirs: Sequence[str], timeout: float
) -> None:
    """DEL the network described by ``data`` (a network state; ``where`` names it in
    errors) with its cached ADD result, then unpin its namespace. Idempotent; raises
    (CniError, OSError, ValueError) leaving what is left for a later attempt."""
    netns = str(data["netns"])
    if os.path.lexists(netns):  # noqa: ASYNC240 (a stat, not I/O worth a thread)
        network = parse_network_list(data["network"], where)
        await network_del(
            network,
            container_id=str(data["container_id"]),
            netns=netns if is_mounted(netns) else "",
            ifname=str(data["ifname"]),
            bin_dirs=bin_dirs,
            runtime_config=data.get("runtime_config") or {},
            previous=data.get("result"),
            timeout=timeout,
        )
    await remove_netns(netns)


def ports_of(data: Mapping[str, Any]) -> set[Port]:
    """The host ports a network state publishes."""
    found: set[Port] = set()
    for raw in data.get("ports") or []:
        if isinstance(raw, Mapping):
            port = int(raw.get("host_port") or 0)
            found.add((str(raw.get("host_ip")), port, str(raw.get("protocol"))))
    return found


class Teardowns:
    """The deferred DELs of one sandboxer (see the module's docstring)."""

    def __init__(self, base: str, *, bin_dirs: Sequence[str], timeout: float) -> None:
        """``base`` is the sandboxer's state (``<base>/cni/pending`` holds the files)."""
        self.directory = os.path.join(base, "cni", PENDING_DIR)
        self._bin_dirs, self._timeout = tuple(bin_dirs), timeout
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._owners: dict[str, tuple[str, set[Port]]] = {}
        self._scanned = False

    def defer(self, state_path: str, data: Mapping[str, Any], key: str) -> None:
        """Move the state at ``state_path`` (read as ``data``) into the pending directory
        and DEL it in the background."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        name = f"{data['container_id']}.json"
        path = os.path.join(self.directory, name)
        os.rename(state_path, path)
        self._start(path, key, ports_of(data))

    def resume(self, *, again: bool = False) -> None:
        """Start the DEL of every pending file not under way (a killed sandboxer's), once
        per sandboxer; ``again``: also those that failed since."""
        if self._scanned and not again:
            return
        self._scanned = True
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return
        for name in names:
            path = os.path.join(self.directory, name)
            if name.endswith(".json") and path not in self._tasks:
                try:  # its ports: a Start that publishes one of them waits for this DEL
                    data = read_private_json(path)
                    ports = ports_of(data) if isinstance(data, dict) else set()
                except (OSError, ValueError):
                    ports = set()  # _run says what is wrong with it
                self._start(path, "", ports)

    @property
    def pending(self) -> int:
        """How many DELs are under way."""
        return len(self._tasks)

    def _start(self, path: str, key: str, ports: set[Port]) -> None:
        self._owners[path] = (key, ports)
        task = asyncio.get_running_loop().create_task(self._run(path))
        self._tasks[path] = task
        task.add_done_callback(lambda _: self._forget(path, task))

    def _forget(self, path: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(path) is task:
            del self._tasks[path]
            self._owners.pop(path, None)

    async def _run(self, path: str) -> None:
        try:
            data = read_private_json(path)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            await release(data, path, bin_dirs=self._bin_dirs, timeout=self._timeout)
        except FileNotFoundError:
            return
        except (CniError, OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            _log.error("network teardown %s (left for a later attempt): %s", path, exc)
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    async def wait_for(self, key: str, ports: Iterable[Port]) -> None:
        """Await the pending DELs of sandbox ``key`` or of any of ``ports`` (a port 0 is
        one the kernel picks: it conflicts with none)."""
        wanted = {p for p in ports if p[1]}
        waits = [
            task
            for path, task in list(self._tasks.items())
            if (owner := self._owners.get(path)) is not None
            and ((key and owner[0] == key) or owner[1] & wanted)
        ]
        if waits:
            await asyncio.shield(asyncio.gather(*waits, return_exceptions=True))

    async def settle(self) -> None:
        """Await every DEL under way (each bounded by the plugins' timeout)."""
        while self._tasks:
            await asyncio.shield(asyncio.gather(*self._tasks.values(), return_exceptions=True))
