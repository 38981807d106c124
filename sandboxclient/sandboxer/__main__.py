"""``python -m sandboxclient.sandboxer --socket PATH [options]``: a sandbox controller for
containerd's proxy plugins. ``--help`` says what it isolates and what it does not.

By default (``--isolation container``) it serves a
:class:`~sandboxclient.sandboxer.ContainerSandboxer`, which runs each sandbox as a runc
container through containerd (``--containerd``); with ``--isolation none`` a
:class:`~sandboxclient.sandboxer.ProcessSandboxer`, whose sandboxes are plain host processes.
It prints one line saying where it listens once the socket accepts calls, and on SIGTERM or
SIGINT stops serving, kills its sandboxes and exits with status 0. With ``--state-dir`` the
sandboxes outlive a sandboxer that is killed (SIGKILL, a crash): started again over the same
directory, it takes them back. With ``--trace-calls`` it appends a line to FILE for every
call as it arrives, before handling it: the call's gRPC route
(``/containerd.services.sandbox.v1.Controller/Wait``).
"""

from __future__ import annotations

import argparse
import asyncio
import grp
import os
import signal
import sys
import tempfile
from collections.abc import Mapping, Sequence

from .._facts._sizes import parse_size
from .._serve._calls import CallLog
from ._base import SandboxController, serve
from ._handlers import Handlers, parse_handler
from ._handlers_service import HandlersIntrospection
from ._harden import DEFAULT_CPUS, DEFAULT_PIDS, DefaultLimits
from ._isolated import DEFAULT_CONTAINERD, ContainerSandboxer
from ._podlog import DEFAULT_LOG_LIMIT
from ._process import ProcessSandboxer
from ._userns import DEFAULT_POOL, parse_pool

__all__ = ("main", "run")

ISOLATIONS = ("container", "none")

_DESCRIPTION = """\
Serve containerd's sandbox Controller API (plug it in with
[proxy_plugins.NAME] type = "sandbox", address = the socket).

--isolation container (the default): each sandbox is a container that this sandboxer creates
through containerd (--containerd), under io.containerd.runc.v2, from the sandbox's OCI spec
over containerd's defaults: its own pid, mount, network, ipc and uts namespaces, its own
root filesystem (never the host's /), containerd's default capabilities, no_new_privileges,
and the user, seccomp profile, resource limits, mounts and hostname its spec asks for.
Secure by default: a spec with no seccomp profile gets the default one (an allow-list in the
family of containerd's and Docker's; opting out takes the annotation
io.sandboxclient.seccomp=unconfined), a spec with no memory, pids or CPU limit gets
--default-memory (no swap), --default-pids and --default-cpus, every tmpfs gets an inode
bound, a root's writable layer is a tmpfs of --default-disk bytes counted in its
memory, its output log keeps --log-limit bytes, and it runs in a user namespace of its own:
root inside is a block of 65,536 unprivileged host ids from --userns-pool, its own while it
lives, its root filesystem idmapped so that it still looks root-owned inside (opting out
takes the annotation io.sandboxclient.host-users=true; a spec with its own user namespace
is used as given; see docs/security.md). Containers share
the host's kernel, as with runc anywhere: a kernel bug is an escape. For stronger isolation
start it with --runtime-handler gvisor=/usr/bin/runsc and ask for runtime_handler="gvisor"
(the spec annotation io.sandboxclient.runtime-handler): such a sandbox runs on gVisor's
kernel (see sandboxclient/sandboxer/_handlers.py for what applies there), or use a VM-based
runtime such as Kata Containers through containerd's own shim sandboxer. A spec that
names no user runs as root (uid 0) inside its namespaces, which with host users is the
host's uid 0 with fewer capabilities. Refused, naming the field: OCI hooks,
process.terminal, a runtime other than runc's, a runtime handler it was not given,
Create options, the host's
/ as root.path or as a bind mount's source, and anything else it would otherwise silently
drop; runtime options are its container's runc options; a started sandbox's spec and runtime
cannot be updated.

Networks: a sandbox has only lo unless it asks (annotation io.sandboxclient.network,
new_sandbox(network="bridge", ports=..., egress=..., bandwidth=...)); then, at Start, the
CNI plugins (--cni-bin-dir) connect it to the network list in --cni-conf-dir or to the
default bridge (10.213.0.0/16, NAT out, published ports on 127.0.0.1), with an egress policy
that refuses private, link-local and the host's own addresses unless allowed. Stop,
Shutdown and a failed Start tear it down (CNI DEL). See docs/sandboxer.md.

--isolation none: each sandbox is a process on this host, running with this sandboxer's
own uid and privileges, in its namespaces, on its file system. NOTHING IS ISOLATED. Any spec
field it cannot honour (root, mounts, linux.*, process.user, hostname, capabilities,
no_new_privileges, rlimits, ...) is refused, and so are a Create's rootfs mounts,
netns_path, options and annotations, runtime options, and any runtime but runc's. For
trusted code and tests only.

TRUST: the sandboxer runs as root (runc needs it) and so does containerd. Whoever can
connect to its socket is trusted like a containerd client: it can create, stop and shut
down any sandbox in any namespace, its specs may join host namespaces by path, bind any
host path but / itself, ask for any capability and run as root without a user namespace,
and its runtime options may name the runc binary. The refusals above stop mistakes, not a
hostile caller. So the socket is made mode 0600 (0660 with --socket-group) whatever the
umask; give it to containerd only. The state directory must be the sandboxer's own (its
uid, not writable by group or others), and so must the directories above it (root's or
its uid's, writable by nobody else unless sticky).
"""


def _group_id(name: str) -> int:
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise SystemExit(f"sandboxer: no group named {name!r}") from None


def make_controller(
    isolation: str,
    state_dir: str | None,
    containerd: str = DEFAULT_CONTAINERD,
    limits: DefaultLimits | None = None,
    log_limit: int = DEFAULT_LOG_LIMIT,
    userns_pool: str = DEFAULT_POOL,
    runtime_handlers: Mapping[str, str] | None = None,
    cni_conf_dir: str | None = None,
    cni_bin_dirs: tuple[str, ...] | None = None,
) -> ContainerSandboxer | ProcessSandboxer:
    """The controller ``--isolation`` names (OSError if its state directory is refused,
    ValueError for a runtime handler it cannot use)."""
    if isolation == "none":
        return ProcessSandboxer(state_dir)
    return ContainerSandboxer(
        state_dir,
        containerd=containerd,
        limits=limits,
        log_limit=log_limit,
        userns_pool=userns_pool,
        runtime_handlers=runtime_handlers,
        cni_conf_dir=cni_conf_dir,
        cni_bin_dirs=cni_bin_dirs,
    )


_UNLIMITED = "unlimited"


def _size_or_none(text: str) -> int | None:
    if text == _UNLIMITED:
        return None
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _pool(text: str) -> str:
    try:
        parse_pool(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _int_or_none(text: str) -> int | None:
    if text == _UNLIMITED:
        return None
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number or {_UNLIMITED!r}")
    return int(text)


def _cpus_or_none(text: str) -> float | None:
    if text == _UNLIMITED:
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or {_UNLIMITED!r}") from None


async def run(
    path: str,
    state_dir: str | None = None,
    trace_calls: str | None = None,
    *,
    isolation: str = "container",
    containerd: str = DEFAULT_CONTAINERD,
    group: int | None = None,
    limits: DefaultLimits | None = None,
    log_limit: int = DEFAULT_LOG_LIMIT,
    userns_pool: str = DEFAULT_POOL,
    runtime_handlers: Mapping[str, str] | None = None,
    cni_conf_dir: str | None = None,
    cni_bin_dirs: tuple[str, ...] | None = None,
) -> int:
    """Serve the controller ``isolation`` names on ``path`` until SIGTERM or SIGINT."""
    calls = CallLog(trace_calls) if trace_calls else None
    try:
        controller = make_controller(
            isolation,
            state_dir,
            containerd,
            limits,
            log_limit,
            userns_pool,
            runtime_handlers,
            cni_conf_dir,
            cni_bin_dirs,
        )
        return await _serve(controller, path, calls, group)
    finally:
        if calls is not None:
            calls.close()


async def _serve(
    controller: SandboxController, path: str, calls: CallLog | None, group: int | None
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    serving = False
    try:
        told = []  # what the isolating sandboxer tells of itself beside its Controller
        if isinstance(controller, ContainerSandboxer):
            told.append(HandlersIntrospection(controller.handlers))
        async with serve(controller, path, calls=calls, group=group, services=told):
            serving = True
            print(f"sandboxer listening on unix://{path}", flush=True)
            await stop.wait()
            # Closed first, while the server still serves: the Starts in flight end within
            # their grace and are answered; leaving ``serve`` would cancel every call at once.
            await controller.aclose()
    finally:
        try:
            if not serving and getattr(controller, "state_dir", None) is not None:
                # could not serve: leave the sandboxes it took back to the next attempt
                assert isinstance(controller, ContainerSandboxer | ProcessSandboxer)
                controller.detach()
            await controller.aclose()
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
    return 0


def parser() -> argparse.ArgumentParser:
    """The command line's parser."""
    p = argparse.ArgumentParser(
        prog="python -m sandboxclient.sandboxer",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--socket", metavar="PATH", help="unix socket to listen on (required)")
    p.add_argument(
        "--isolation",
        choices=ISOLATIONS,
        default="container",
        help="container: runc containers through containerd (default); none: host processes "
        "with the sandboxer's privileges, isolating nothing",
    )
    p.add_argument(
        "--containerd",
        metavar="ADDRESS",
        default=DEFAULT_CONTAINERD,
        help=f"containerd's socket, for --isolation container (default {DEFAULT_CONTAINERD})",
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="keep the sandboxes' records here and take them back after a restart "
        "(default: in memory only; the sandboxes end with the sandboxer). It must be owned "
        "by the sandboxer's uid and not writable by group or others",
    )
    p.add_argument(
        "--socket-group",
        metavar="GROUP",
        help="make the socket mode 0660 and owned by GROUP (default: mode 0600, owner only)",
    )
    p.add_argument(
        "--default-memory",
        metavar="SIZE",
        type=_size_or_none,
        default="512Mi",
        help="memory of a sandbox whose spec sets none, swap excluded (default 512Mi; "
        "'unlimited' for none)",
    )
    p.add_argument(
        "--default-pids",
        metavar="N",
        type=_int_or_none,
        default=str(DEFAULT_PIDS),
        help=f"tasks of a sandbox whose spec sets no pids limit (default {DEFAULT_PIDS})",
    )
    p.add_argument(
        "--default-cpus",
        metavar="CPUS",
        type=_cpus_or_none,
        default=str(DEFAULT_CPUS),
        help=f"CPU time, in CPUs, of a sandbox whose spec sets no quota (default {DEFAULT_CPUS:g})",
    )
    p.add_argument(
        "--default-disk",
        metavar="SIZE",
        type=_size,
        help="bytes of a sandbox root's writable layer, a tmpfs counted in the sandbox's memory "
        "(default 256Mi; at most --default-memory; a sandbox whose memory limit is less than "
        "twice as much gets half of it); a sandbox asks for another with the spec annotation "
        "io.sandboxclient.disk (new_sandbox(disk=))",
    )
    p.add_argument(
        "--log-limit",
        metavar="SIZE",
        type=_size,
        default="16Mi",
        help="bytes of a sandbox's output kept in its log (default 16Mi); the rest is "
        "dropped and counted in its Status (info log_dropped_bytes)",
    )
    p.add_argument(
        "--userns-pool",
        metavar="START:SIZExCOUNT",
        type=_pool,
        default=DEFAULT_POOL,
        help="host ids for the sandboxes' user namespaces: COUNT blocks of SIZE ids from "
        f"START, one block per live sandbox (default {DEFAULT_POOL}); give each sandboxer "
        "on a host a pool of its own",
    )
    p.add_argument(
        "--runtime-handler",
        dest="runtime_handlers",
        metavar="NAME=PATH",
        type=_handler,
        action="append",
        default=[],
        help="a runtime sandboxes may ask for by NAME (runtime_handler=NAME): runc or "
        "gVisor's runsc at PATH (repeatable; 'runc', the shim's own runc, is always there)",
    )
    p.add_argument(
        "--list-runtime-handlers",
        action="store_true",
        help="print the runtime handlers (name, kind, binary, version) and exit",
    )
    p.add_argument(
        "--cni-conf-dir",
        metavar="DIR",
        help="the network of sandboxes that ask for network='bridge': the first *.conflist "
        "in DIR (cniVersion 1.0.0); default: a bridge network (sbxclient0, 10.213.0.0/16, "
        "NAT out, portmap) written into the state directory",
    )
    p.add_argument(
        "--cni-bin-dir",
        metavar="DIR",
        action="append",
        help="where the CNI plugins are (repeatable; default /usr/lib/cni then /opt/cni/bin)",
    )
    p.add_argument(
        "--trace-calls",
        metavar="FILE",
        help="append each call's gRPC route to FILE as it arrives, before it is handled "
        "(for tests that must know a call is in flight)",
    )
    return p


def _handler(text: str) -> tuple[str, str]:
    try:
        return parse_handler(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _list_handlers(given: Mapping[str, str]) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        for handler in Handlers(given, scratch):
            path = handler.path or "runc (the shim's default)"
            print(f"{handler.name}\t{handler.kind}\t{path}\t{handler.version or '-'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and serve until told to stop; the process exit status."""
    args = parser().parse_args(argv)
    handlers = dict(args.runtime_handlers)
    if len(handlers) != len(args.runtime_handlers):
        raise SystemExit("sandboxer: --runtime-handler names a handler twice")
    if args.list_runtime_handlers:
        try:
            return _list_handlers(handlers)
        except ValueError as exc:
            raise SystemExit(f"sandboxer: {exc}") from None
    if not args.socket:
        parser().error("the following arguments are required: --socket")
    group = _group_id(args.socket_group) if args.socket_group else None
    try:
        limits = DefaultLimits(
            args.default_memory, args.default_pids, args.default_cpus, args.default_disk
        )
    except ValueError as exc:
        raise SystemExit(f"sandboxer: {exc}") from None
    if args.isolation == "none" and (args.cni_conf_dir or args.cni_bin_dir):
        raise SystemExit("sandboxer: --cni-conf-dir and --cni-bin-dir need --isolation container")
    if args.isolation == "none":
        print(
            "sandboxer: WARNING: --isolation none: every sandbox is a host process running "
            f"with this sandboxer's uid ({os.geteuid()}) and privileges, in its namespaces "
            "and on its file system; nothing is isolated",
            file=sys.stderr,
            flush=True,
        )
    try:
        return asyncio.run(
            run(
                args.socket,
                args.state_dir,
                args.trace_calls,
                isolation=args.isolation,
                containerd=args.containerd,
                group=group,
                limits=limits,
                log_limit=args.log_limit,
                userns_pool=args.userns_pool,
                runtime_handlers=handlers,
                cni_conf_dir=args.cni_conf_dir,
                cni_bin_dirs=tuple(args.cni_bin_dir) if args.cni_bin_dir else None,
            )
        )
    except ValueError as exc:
        raise SystemExit(f"sandboxer: {exc}") from None
    except OSError as exc:
        print(f"sandboxer: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
