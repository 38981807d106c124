"""A real containerd as ``ctr`` and ``/proc`` see it, and a client of its Python sandboxer:
what tests of the real daemon check after the fact."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sandboxclient import Client, Sandbox, SandboxStatus, UnavailableError
from sandboxclient.testing._hostpaths import logged_shim_sockets
from tests.support.backends import PLUGIN_NAME, RealContainerd

__all__ = ("answering", "client_for", "ctr_ids", "nothing_left", "shim_sockets_of", "shims_of")


def client_for(real: RealContainerd, namespace: str) -> Client:
    """A Client of the session's daemon and its Python sandboxer in ``namespace``."""
    return Client(real.daemon.address, namespace=namespace, sandboxer=PLUGIN_NAME, timeout=20)


def ctr_ids(real: RealContainerd, namespace: str, *what: str) -> list[str]:
    """The ids ``ctr ... ls`` lists in ``namespace`` (first column, header aside)."""
    out = real.daemon.ctr(*what, "ls", namespace=namespace).stdout.splitlines()
    return [line.split()[0] for line in out[1:] if line.strip()]


def shims_of(real: RealContainerd, namespace: str) -> list[int]:
    """The daemon's shims that serve ``namespace``."""
    found = []
    for pid in real.daemon.shim_pids():
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"-namespace" in argv and argv[argv.index(b"-namespace") + 1] == namespace.encode():
            found.append(pid)
    return found


def shim_sockets_of(real: RealContainerd, namespace: str) -> list[Path]:
    """The sockets, on the machine's shared path, of the shims the daemon ran for
    ``namespace`` (its log names them) that are still there."""
    daemon = real.daemon
    found = logged_shim_sockets(daemon.log_path, daemon.address, namespace=namespace)
    return sorted(p for p in found if p.exists())


def nothing_left(real: RealContainerd, namespace: str) -> None:
    """No container, task, snapshot or shim of ``namespace`` is left, as ctr sees it, and no
    socket of a shim of ``namespace``."""
    assert ctr_ids(real, namespace, "containers") == []
    assert ctr_ids(real, namespace, "tasks") == []
    assert ctr_ids(real, namespace, "snapshots") == []
    assert shims_of(real, namespace) == []
    sockets = shim_sockets_of(real, namespace)
    assert sockets == [], f"the shims of {namespace} left their sockets: {sockets}"


async def answering(sb: Sandbox, timeout: float = 30.0) -> SandboxStatus:
    """The sandbox's status, once containerd reaches the restarted sandboxer again.

    containerd's proxy answers UNAVAILABLE until it has reconnected to the plugin's socket.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.05
    while True:
        try:
            return await sb.status(verbose=True, timeout=5)
        except UnavailableError:
            if loop.time() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
