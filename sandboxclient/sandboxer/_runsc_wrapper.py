"""The wrapper through which containerd's runc shim runs gVisor's runsc for a handler.

containerd's runc shim runs any runc-compatible binary named by its ``BinaryName`` option.
For a sandbox's own container runsc behaves as runc does, and the wrapper only adds the
flags the sandboxer relies on (``--network=none --oci-seccomp``, see ``_handlers``).

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
from pathlib import Path
from typing import Final

__all__ = ("MEMBERS_DIR", "runsc_id", "wrapper_script", "write_wrapper")

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
[ -n "$sub" ] || exec "$runsc" $flags "$@"
# The container's id, the last argument (kill's: ID SIGNAL), becomes runsc's +ID+.
if [ "$sub" = kill ]; then at=$(($# - 1)); else at=$#; fi
i=0 n=$# id=
for a in "$@"; do
    i=$((i + 1))
    if [ "$i" -eq "$at" ]; then id=$a a=+$a+; fi
    set -- "$@" "$a"
done
shift "$n"
case $sub in create | start | delete) ;; *) exec "$runsc" $flags "$@" ;; esac
[ -n "$root" ] || exec "$runsc" $flags "$@"
dir=$members/$(printf '%s' "$root" | tr '/' '_')/$id

keep() {
    read -r what <"$dir/go" || what=
    exec 3<&- 4>&- 5>&-
    [ "$what" = started ] || exit 255
    out=$("$runsc" $flags --root "$root" wait "+$id+" 2>/dev/null)
    status=${out##*\"exitStatus\":}
    status=${status%%[!0-9]*}
    exit "${status:-255}"
}

case $sub in
create)
    [ -n "$pidfile" ] && [ -n "$bundle" ] &&
        grep -Eq '"io\.kubernetes\.cri\.container-type"[[:space:]]*:[[:space:]]*"container"' \
            "$bundle/config.json" || exec "$runsc" $flags "$@"
    rm -rf "$dir"
    mkdir -p -m 700 "$dir" && mkfifo -m 600 "$dir/go" || exit 1
    "$runsc" $flags "$@" || { rc=$?; rm -rf "$dir"; exit $rc; }
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
    [ -f "$dir/pid" ] || exec "$runsc" $flags "$@"
    k=$(cat "$dir/pid")
    "$runsc" $flags "$@" <"/proc/$k/fd/3" >>"/proc/$k/fd/4" 2>>"/proc/$k/fd/5" || exit $?
    echo started >"$dir/go"
    ;;
delete)
    "$runsc" $flags "$@" || exit $?
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


def wrapper_script(name: str, runsc: str, flags: tuple[str, ...], members: str) -> str:
    """The wrapper's text for handler ``name`` running ``runsc`` with ``flags``, keeping its
    members' state under ``members``."""
    return (
        _TEMPLATE.replace("@NAME@", name)
        .replace("@RUNSC@", shlex.quote(runsc))
        .replace("@FLAGS@", shlex.quote(" ".join(flags)))
        .replace("@MEMBERS@", shlex.quote(members))
        .replace("@COMMANDS@", _CONTAINER_COMMANDS)
    )


def write_wrapper(folder: Path, name: str, runsc: str, flags: tuple[str, ...]) -> str:
    """Write (atomically) handler ``name``'s wrapper in ``folder``; its path."""
    members = folder / MEMBERS_DIR
    members.mkdir(mode=0o700, exist_ok=True)
    path = folder / name
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(wrapper_script(name, runsc, flags, str(members)))
    tmp.chmod(0o700)
    tmp.replace(path)
    return str(path)
