"""A gVisor sandbox's bridge network: made before runsc creates the sandbox, joined by path.

Under runc the sandboxer sets up a bridge sandbox's network in the namespace runc made for
the created task, before its process runs (``_podnet``). runsc instead reads the network it
is to serve when it *creates* the sandbox (its interfaces, addresses and routes), so the
namespace must be ready before: the sandboxer makes it (a helper process that unshares a
network namespace and waits), sets it up through the same CNI path, pinned where
the network's state says, as under runc (so teardown, restarts and the host-side counts are the
same), and names the pinned path in the spec's network namespace, which runsc joins. The
handler's wrapper for networked sandboxes runs runsc with ``--network=`` this module's
:data:`GVISOR_NETWORK_MODE` instead of ``none``.

``host`` there means the host kernel's network stack *in the sandbox's own namespace*: the
sandbox's sockets are the host kernel's, made by gVisor's kernel for it through its filtered
host-socket layer, so the egress rules in the namespace, the published ports and the
bandwidth shaping hold as under runc; gVisor's own network stack is not used. runsc's
``sandbox`` mode, which runs gVisor's stack on the namespace's interfaces, cannot serve:

- runsc 20221219 refuses it on this kernel: it takes any namespace for the host's root one
  ("cannot run with network enabled in root network namespace"), judging by
  ``/proc/sys/net/core/rmem_default``, which newer kernels have in every namespace;
- its frames leave through a packet socket on ``eth0``, which the namespace's iptables never
  see: the egress policy (and the default denial of private ranges and the host) would not
  hold.

In ``host`` mode runsc 20221219 starts gVisor's kernel in the spec's user namespace (it
makes the namespace with the spec's mappings as it starts the process) but, run by the
host's root, leaves the process's credentials as they were: it stays the host's root, which
the namespace does not map (its log says ``UID: 65534``), so its ``execve`` drops every
capability and it cannot set itself up ("error setting up chroot: error converting mounts:
operation not permitted"), before any network is touched. (gVisor's later releases start it
as the namespace's root; joining a namespace by path is no way round, runsc being
multithreaded.) runsc run by *another* user does what is needed: it takes that user for the
namespace's root and starts the kernel as it. So a networked sandbox in the sandboxer's user
namespace gets a wrapper of its own block (``_handlers``, ``_runsc_wrapper``) that runs
every runsc call for it and its members as the block's first host id, with the capabilities
the host's root has, ambient (util-linux's ``setpriv``); runsc then writes the namespace's
maps through ``newuidmap``/``newgidmap``, for which the wrapper puts stand-ins first in its
``PATH`` that write them directly (no ``/etc/subuid`` entry is needed). gVisor's kernel and
file server then run in the sandbox's user namespace as its root, the block's first id on
the host, with the spec's capabilities there only (containerd's defaults, never
``CAP_NET_ADMIN``: see ``_egress``); the namespace's egress rules, ports and shaping are the
same, and the namespace lets any of its processes bind any port (gVisor's kernel checks the
spec's capabilities first; under runc the sandbox's user namespace owns its network
namespace and its root may). What runsc itself writes for the sandbox is then the block's
id's: the cgroups it makes are given back to root by the wrapper after ``create`` (runsc
keeps the capabilities to manage them), and a namespace's runsc state directory is made by
the wrapper, as root, before runsc runs; the sandbox's own state files in it stay the
block's id's, which gVisor's kernel runs as: out of its reach in its chroot and behind its
system call filter, but a kernel that escaped both could rewrite them, which runsc, with the
host root's capabilities, then reads (with the host's users, ``host_users=True``, that
kernel would be the host's root itself). A spec with a user namespace of its own is refused
(:func:`check_network`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from .._facts._golang import go_quote
from .._serve._refusals import failed_precondition, invalid_argument
from ._netconf import NETWORK_STATE_FILE
from ._netns import netns_holder
from ._podnet import network_request_of
from ._state import read_private_json
from ._userns import has_own_user_namespace, host_users_asked

__all__ = (
    "GVISOR_NETWORK_MODE",
    "block_uid",
    "check_network",
    "joins_network",
    "network_before_create",
)

GVISOR_NETWORK_MODE: Final = "host"
"""runsc's network mode for a sandbox with a bridge network: the sockets of the network
namespace runsc joins (the sandbox's own, never the host's), through gVisor's filtered
host-socket layer (see the module's docstring for why not ``sandbox``)."""


def check_network(
    handler: str, spec: Mapping[str, Any] | None, annotations: Mapping[str, str]
) -> None:
    """Refuse, at Create, a gVisor sandbox with a network that runsc cannot run: one whose
    spec brings a user namespace of its own (INVALID_ARGUMENT naming why and the way out);
    the sandboxer's own user namespace is served (see the module's docstring), where
    util-linux's setpriv is installed (FAILED_PRECONDITION without it)."""
    if network_request_of(spec, annotations).mode != "bridge":
        return
    if not has_own_user_namespace(spec):
        if host_users_asked(spec, annotations) is not True and shutil.which("setpriv") is None:
            raise failed_precondition(
                f"network 'bridge' with runtime handler {go_quote(handler)} (gVisor) in the "
                "sandbox's user namespace needs util-linux's setpriv on the sandboxer's host "
                "(runsc runs as the namespace's root through it); install it, or ask for "
                "host_users=True"
            )
        return
    raise invalid_argument(
        f"network 'bridge' with runtime handler {go_quote(handler)} (gVisor) and a user "
        "namespace of its own in the spec: runsc serves the network as root of the "
        "sandboxer's user namespace for the sandbox (its block of host ids); leave the "
        "spec's user namespace and id mappings out, or ask for host_users=True"
    )


def block_uid(spec: Mapping[str, Any] | None) -> int | None:
    """The host uid of root in ``spec``'s user namespace (its ``uidMappings``), or None."""
    for entry in ((spec or {}).get("linux") or {}).get("uidMappings") or []:
        if isinstance(entry, Mapping) and entry.get("containerID") == 0:
            host = entry.get("hostID")
            return host if isinstance(host, int) else None
    return None


def joins_network(spec: Mapping[str, Any] | None) -> bool:
    """Whether ``spec`` joins a network namespace by path."""
    namespaces = ((spec or {}).get("linux") or {}).get("namespaces") or []
    return any(
        isinstance(n, Mapping) and n.get("type") == "network" and n.get("path") for n in namespaces
    )


async def _unprivileged_ports(pid: int) -> None:
    """Let any process of the namespace of ``pid`` bind any port: gVisor's kernel, in the
    sandbox's user namespace, has no ``CAP_NET_BIND_SERVICE`` over a network namespace the
    host's owns (under runc the sandbox's user namespace owns it, and its root has it).
    gVisor's kernel still checks the spec's capabilities for its own processes."""
    done = await asyncio.create_subprocess_exec(
        "nsenter",
        f"--net=/proc/{pid}/ns/net",
        "sh",
        "-c",
        "echo 0 >/proc/sys/net/ipv4/ip_unprivileged_port_start",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await done.communicate()
    if done.returncode != 0:
        raise OSError(f"cannot open the low ports of the sandbox's network: {err.decode()!r}")


async def network_before_create(
    gvisor: bool,
    spec: dict[str, Any],
    attach: Callable[[int], Awaitable[None]] | None,
    directory: str,
) -> Callable[[int], Awaitable[None]] | None:
    """For a gVisor sandbox with a network (``attach``, from ``PodNetworks.start``): set
    it up now in a namespace of the sandboxer's making and name it in ``spec`` (changed in
    place); nothing is left for after the task is created (None). Otherwise ``attach``
    as given. On failure what ``attach`` set up is its own to tear down, as under runc."""
    if not gvisor or attach is None:
        return attach
    async with netns_holder(None) as pid:  # the sandboxer's own user namespace
        await attach(pid)
        if block_uid(spec) is not None:
            await _unprivileged_ports(pid)
    linux = spec.setdefault("linux", {})
    others = [n for n in linux.get("namespaces") or [] if n.get("type") != "network"]
    # Where the setup pinned it (the sandboxer's own record, written by the setup above).
    path = str(read_private_json(os.path.join(directory, NETWORK_STATE_FILE))["netns"])
    linux["namespaces"] = [*others, {"type": "network", "path": path}]
    return None
