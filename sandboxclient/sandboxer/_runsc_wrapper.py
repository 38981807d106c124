"""The wrapper through which containerd's runc shim runs gVisor's runsc for a handler.

containerd's runc shim runs any runc-compatible binary named by its ``BinaryName`` option.
For a sandbox's own container runsc behaves as runc does, and the wrapper only adds the
flags the sandboxer relies on (``--network=none --oci-seccomp``, see ``_handlers``). A
networked sandbox's wrapper in a user namespace runs every runsc call as the block's first
host id with the host root's capabilities (``setpriv``, :func:`run_as_command`; why in
``_gvisor_net``).

A sandbox's members are runsc *subcontainers*: their spec carries the annotations by which
runsc (``runsc/specutils/cri.go``) and containerd's CRI join a container to a running
sandbox, ``io.kubernetes.cri.container-type: container`` and ``io.kubernetes.cri.sandbox-id``
(the sandbox's own container id, which is the sandbox's id); runsc then creates the
container inside the sandbox's gVisor kernel instead of starting a kernel of its own. Two
things runsc does for a subcontainer fit gVisor's own shim and not runc's, and the wrapper
bridges them:

- ``runsc create`` writes the *sandbox's* host pid in the pid file (a subcontainer has no
  host process of its own), so the runc shim would see the member exit only when the whole
  sandbox does. The wrapper writes instead the pid of a small keeper process it leaves
  behind (a child of the shim, which is its subreaper); once the member is started, the
  keeper runs ``runsc wait`` and exits with the member's status (128 + the signal for a
  member killed by one, as the shim reports a runc process), which the shim reaps and
  reports as the member's exit.
- ``runsc start`` hands the subcontainer its *own* stdio, where runc's shim gives the
  container's stdio to ``create`` and reads ``start``'s output to its end. The keeper holds
  the stdio ``create`` was given until the start, and the wrapper's ``start`` gives runsc
  those (reopened through ``/proc/<keeper>/fd``), so the member's output reaches its
  streams and ends when it exits. A member with a terminal gets it at create, as runc's do.

runsc 20221219 takes a container id that is the prefix of another one in the same root for
ambiguous (``runsc/container/state_file.go``: sandbox ``web`` beside member ``web-db``, or
sandboxes ``a`` and ``ab`` in one namespace), so the wrapper gives runsc every container's
id as ``+ID+``: ``+`` is valid in runsc's ids and never in containerd's, so no such id is
the prefix of another. A member's ``io.kubernetes.cri.sandbox-id`` names its sandbox by that
id; the sandboxer gives it on the sandbox's own container's spec, whence the client copies it.

The keeper's state (its pid, a FIFO that tells it the member started or was deleted) is a
directory per member in the sandboxer's private state; ``delete`` releases the keeper of a
member that never started and removes the directory.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path
from typing import Final

__all__ = ("MEMBERS_DIR", "run_as_command", "runsc_id", "wrapper_script", "write_wrapper")

MEMBERS_DIR: Final = "members"
"""Under the wrappers' directory: one directory of keeper state per live member."""

_CONTAINER_COMMANDS: Final = (
    "checkpoint|create|delete|events|exec|kill|pause|ps|restore|resume|start|state|update|wait"
)

# POSIX sh (Debian's dash): what runs for every runtime call of a gVisor sandbox and its
# members, so the common path is one scan of the arguments and an exec.
_TEMPLATE: Final = r"""#!/bin/sh
# runsc for the sandboxer's runtime handler @NAME@ (see sandboxer/_runsc_wrapper.py)
runsc=@RUNSC@
flags=@FLAGS@
members=@MEMBERS@
runas=@RUNAS@
[ -z "$runas" ] || PATH=@IDMAP@:$PATH
sub= root= bundle= pidfile= console= prev=
for a in "$@"; do
    case $prev in
    --root) root=$a ;;
    --bundle | -b) bundle=$a ;;
    --pid-file) pidfile=$a ;;
    --console-socket) console=$a ;;
    esac
    prev=$a
    if [ -z "$sub" ]; then
        case $a in @COMMANDS@) sub=$a ;; esac
    fi
done
# runsc run as the block's uid would make a namespace's state directory its own: root's.
[ -z "$runas" ] || [ -z "$root" ] || [ -d "$root" ] || mkdir -p -m 711 "$root" || exit 1
[ -n "$sub" ] || exec $runas "$runsc" $flags "$@"
# The container's id, the last argument (kill's: ID SIGNAL), becomes runsc's +ID+.
if [ "$sub" = kill ]; then at=$(($# - 1)); else at=$#; fi
i=0 n=$# id=
for a in "$@"; do
    i=$((i + 1))
    if [ "$i" -eq "$at" ]; then id=$a a=+$a+; fi
    set -- "$@" "$a"
done
shift "$n"
case $sub in create | start | delete) ;; *) exec $runas "$runsc" $flags "$@" ;; esac
[ -n "$root" ] || exec $runas "$runsc" $flags "$@"
dir=$members/$(printf '%s' "$root" | tr '/' '_')/$id

keep() {
    read -r what <"$dir/go" || what=
    exec 3<&- 4>&- 5>&-
    [ "$what" = started ] || exit 255
    out=$($runas "$runsc" $flags --root "$root" wait "+$id+" 2>/dev/null)
    status=${out##*\"exitStatus\":}
    status=${status%%[!0-9]*}
    exit "${status:-255}"
}

# runsc run as the block's uid makes the sandbox's cgroups (and its namespace's, if new) its
# own: give them back to root, so that gVisor's kernel, which runs as that uid, does not own
# its limits. runsc keeps the host root's capabilities to manage them.
rootcgroups() {
    cg=$(tr -d ' \n' <"$1" | sed -n 's/.*"cgroupsPath":"\(\/[^":]*\)".*/\1/p')
    [ -n "$cg" ] || return 0
    for base in /sys/fs/cgroup /sys/fs/cgroup/*; do
        d=$base$cg
        [ -d "$d" ] || continue
        chown -R 0:0 "$d"
        find "${d%/*}" -maxdepth 1 ! -type d ! -user 0 -exec chown 0:0 {} + 2>/dev/null
        chown 0:0 "${d%/*}"
    done
}

case $sub in
create)
    [ -n "$pidfile" ] && [ -n "$bundle" ] &&
        grep -Eq '"io\.kubernetes\.cri\.container-type"[[:space:]]*:[[:space:]]*"container"' \
            "$bundle/config.json" || {
        [ -n "$runas" ] || exec "$runsc" $flags "$@"
        $runas "$runsc" $flags "$@" || exit $?
        rootcgroups "$bundle/config.json"
        exit 0
    }
    rm -rf "$dir"
    mkdir -p -m 700 "$dir" && mkfifo -m 600 "$dir/go" || exit 1
    $runas "$runsc" $flags "$@" || { rc=$?; rm -rf "$dir"; exit $rc; }
    # The keeper holds none of the wrapper's stdio but in 3-5 (with a terminal, none).
    if [ -n "$console" ]; then
        (exec 3</dev/null 4>/dev/null 5>/dev/null </dev/null >/dev/null 2>&1 && keep) &
    else
        (exec 3<&0 4>&1 5>&2 </dev/null >/dev/null 2>&1 && keep) &
    fi
    printf '%s' $! >"$dir/pid"
    printf '%s' $! >"$pidfile"
    ;;
start)
    [ -f "$dir/pid" ] || exec $runas "$runsc" $flags "$@"
    k=$(cat "$dir/pid")
    $runas "$runsc" $flags "$@" <"/proc/$k/fd/3" >>"/proc/$k/fd/4" 2>>"/proc/$k/fd/5" || exit $?
    echo started >"$dir/go"
    ;;
delete)
    $runas "$runsc" $flags "$@" || exit $?
    if [ -d "$dir" ]; then
        { echo deleted >&6; } 6<>"$dir/go"
        rm -rf "$dir"
    fi
    ;;
esac
"""


def runsc_id(container_id: str) -> str:
    """The id runsc knows container ``container_id`` by, through the wrapper."""
    return f"+{container_id}+"


def wrapper_script(
    name: str, runsc: str, flags: tuple[str, ...], members: str, runas: str = "", idmap: str = ""
) -> str:
    """The wrapper's text for handler ``name`` running ``runsc`` with ``flags``, keeping its
    members' state under ``members``; each runsc call prefixed by the command ``runas``
    (words without spaces), with ``idmap`` first in its ``PATH``, when given."""
    return (
        _TEMPLATE.replace("@NAME@", name)
        .replace("@RUNSC@", shlex.quote(runsc))
        .replace("@FLAGS@", shlex.quote(" ".join(flags)))
        .replace("@MEMBERS@", shlex.quote(members))
        .replace("@RUNAS@", shlex.quote(runas))
        .replace("@IDMAP@", shlex.quote(idmap))
        .replace("@COMMANDS@", _CONTAINER_COMMANDS)
    )


def write_wrapper(
    folder: Path, name: str, runsc: str, flags: tuple[str, ...], run_as: int | None = None
) -> str:
    """Write (atomically) handler ``name``'s wrapper in ``folder``; its path. With
    ``run_as``, runsc runs as that host uid and gid (see :func:`run_as_command`)."""
    members = folder / MEMBERS_DIR
    members.mkdir(mode=0o700, exist_ok=True)
    runas = idmap = ""
    if run_as is not None:
        runas, idmap = run_as_command(run_as), _write_idmap(folder)
    path = folder / name
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(wrapper_script(name, runsc, flags, str(members), runas, idmap))
    tmp.chmod(0o700)
    tmp.replace(path)
    return str(path)


# capabilities(7)'s names by number, as setpriv takes them.
_CAPS: Final = (
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
)


def _bounding_set() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                return int(line.split()[1], 16)
    return 0


def run_as_command(uid: int) -> str:
    """util-linux's ``setpriv`` running a command as host uid and gid ``uid`` (no other
    group) with every capability the sandboxer's own bounding set has, ambient, so that
    it keeps them across its ``execve`` as the host's root would."""
    bounding = _bounding_set()
    caps = ",".join(f"+{name}" for bit, name in enumerate(_CAPS) if bounding >> bit & 1)
    return (
        f"{shutil.which('setpriv') or 'setpriv'} --reuid={uid} --regid={uid} --clear-groups "
        f"--inh-caps=-all,{caps} --ambient-caps=-all,{caps}"
    )


# runsc not run by the host's root takes the user namespace's mappings to be set by
# shadow-utils' newuidmap/newgidmap (``newuidmap PID ID HOSTID COUNT...``), which check
# /etc/subuid. runsc run as the block's uid with the host root's capabilities may write
# them itself: these stand-ins do, in one write (a map is written once).
_IDMAP: Final = r"""#!/bin/sh
case $0 in *newgidmap) f=gid_map ;; *) f=uid_map ;; esac
pid=$1
shift
map=
while [ $# -ge 3 ]; do
    map="$map$1 $2 $3
"
    shift 3
done
printf '%s' "$map" >"/proc/$pid/$f"
"""


def _write_idmap(folder: Path) -> str:
    idmap = folder / "idmap"
    idmap.mkdir(mode=0o700, exist_ok=True)
    for name in ("newuidmap", "newgidmap"):
        tmp = idmap / f"{name}.tmp"
        tmp.write_text(_IDMAP)
        tmp.chmod(0o700)
        tmp.replace(idmap / name)
    return str(idmap)
