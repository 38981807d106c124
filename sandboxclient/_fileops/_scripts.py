"""The shell scripts ``sb.files`` runs in a sandbox, and what their exit codes mean.

Each is a fixed ``sh -c`` script; paths come as its positional arguments, never spliced in.
A script checks what it can before acting and says what is wrong with an exit code of its
own (90 and up), which :func:`raise_for_exit` turns into the typed error naming the path. The
codes are the sandbox's word, like everything it sends: a lying sandbox only misreports its own
files.
"""

from __future__ import annotations

import re

from ..errors import (
    FileOperationError,
    IsADirectoryPathError,
    MissingToolError,
    NotADirectoryPathError,
    PathExistsError,
    PathNotFoundError,
    PathPermissionError,
)

__all__ = (
    "LIST",
    "MAKE_DIR",
    "READ",
    "REMOVE",
    "RENAME",
    "STAT",
    "TAR_IN",
    "TAR_OUT",
    "WRITE",
    "checked_path",
    "raise_for_exit",
)

_MISSING, _IS_DIR, _NOT_DIR, _DENIED, _EXISTS, _NO_TOOL, _NOT_EMPTY, _FAILED = range(90, 98)

# need TOOL...: exit 95 naming the first one missing. gone PATH: why PATH cannot be reached
# (the deepest ancestor there is no directory, or not searchable, or PATH is just missing).
# parent PATH: its directory must exist and be writable.
_PROLOGUE = """\
need() { for t; do command -v "$t" >/dev/null 2>&1 || { printf 'missing tool: %s' "$t" >&2; \
exit 95; }; done; }
gone() { a=$1; while [ ! -e "$a" ] && [ ! -L "$a" ]; do a=${a%/*}; a=${a:-/}; done; \
[ -d "$a" ] || exit 92; [ -x "$a" ] || exit 93; exit 90; }
parent() { d=${1%/*}; d=${d:-/}; [ -e "$d" ] || gone "$d"; [ -d "$d" ] || exit 92; \
{ [ -w "$d" ] && [ -x "$d" ]; } || exit 93; }
"""

READ = (
    _PROLOGUE
    + """need cat
[ -e "$1" ] || gone "$1"
[ -d "$1" ] && exit 91
[ -r "$1" ] || exit 93
exec cat -- "$1"
"""
)

WRITE = (
    _PROLOGUE
    + """need cat chmod
[ -d "$1" ] && exit 91
if [ -e "$1" ]; then [ -w "$1" ] || exit 93; else parent "$1"; fi
umask 077
cat > "$1" || exit 97
chmod "$2" "$1" || exit 97
"""
)

STAT = (
    _PROLOGUE
    + """need stat readlink
[ -e "$1" ] || [ -L "$1" ] || gone "$1"
exec sh -c "$2" sh "$1"
"""
)

LIST = (
    _PROLOGUE
    + """need find stat readlink
[ -e "$1" ] || gone "$1"
[ -d "$1" ] || exit 92
{ [ -r "$1" ] && [ -x "$1" ]; } || exit 93
find -H "$1" -mindepth 1 -maxdepth "$2" -exec sh -c "$3" sh {} + 2>/dev/null
exit 0
"""
)

MAKE_DIR = (
    _PROLOGUE
    + """need mkdir
if [ -e "$1" ] || [ -L "$1" ]; then
  [ "$2" = p ] && [ -d "$1" ] && exit 0
  exit 94
fi
if [ "$2" = p ]; then
  a=$1; while [ ! -e "$a" ] && [ ! -L "$a" ]; do a=${a%/*}; a=${a:-/}; done
  [ -d "$a" ] || exit 92
  { [ -w "$a" ] && [ -x "$a" ]; } || exit 93
  mkdir -p -m "$3" -- "$1" || exit 97
else
  parent "$1"
  mkdir -m "$3" -- "$1" || exit 97
fi
"""
)

REMOVE = (
    _PROLOGUE
    + """need rm rmdir
[ -e "$1" ] || [ -L "$1" ] || gone "$1"
parent "$1"
if [ -d "$1" ] && [ ! -L "$1" ]; then
  if [ "$2" = r ]; then rm -rf -- "$1" || exit 97; else rmdir -- "$1" 2>/dev/null || exit 96; fi
else
  rm -f -- "$1" || exit 97
fi
"""
)

RENAME = (
    _PROLOGUE
    + """need mv
[ -e "$1" ] || [ -L "$1" ] || gone "$1"
parent "$1"
[ -d "$2" ] && [ ! -L "$2" ] && exit 91
parent "$2"
mv -f -- "$1" "$2" || exit 97
"""
)

TAR_IN = (
    _PROLOGUE
    + """need tar
[ -e "$1" ] || gone "$1"
[ -d "$1" ] || exit 92
{ [ -w "$1" ] && [ -x "$1" ]; } || exit 93
cd -- "$1" || exit 93
exec tar -x -o -f -
"""
)

TAR_OUT = (
    _PROLOGUE
    + """need tar
if [ "$1" = / ]; then p=/$2; else p=$1/$2; fi
[ -e "$p" ] || [ -L "$p" ] || gone "$p"
[ -r "$p" ] || exit 93
cd -- "$1" || exit 93
exec tar -c -f - -- "$2"
"""
)

_TOOL = re.compile(r"missing tool: ([A-Za-z0-9_.+-]{1,32})\Z")


def checked_path(path: object, name: str = "path") -> str:
    """An absolute path in the sandbox, without trailing slashes; ValueError or TypeError
    naming what is wrong. bytes must be UTF-8 (an exec's arguments travel as JSON text)."""
    if isinstance(path, bytes):
        try:
            path = path.decode()
        except UnicodeDecodeError:
            raise ValueError(f"{name} must be UTF-8 to be passed to the sandbox") from None
    if not isinstance(path, str):
        raise TypeError(f"{name} must be str or bytes, got {type(path).__name__}")
    if not path.startswith("/"):
        raise ValueError(f"{name} must be an absolute path in the sandbox, got {path!r}")
    if "\0" in path:
        raise ValueError(f"{name} must not contain NUL bytes")
    try:
        path.encode()
    except UnicodeEncodeError:
        raise ValueError(f"{name} must be UTF-8 to be passed to the sandbox") from None
    return path.rstrip("/") or "/"


def raise_for_exit(op: str, path: str, code: int, stderr: bytes) -> None:
    """Nothing for 0; else the typed error the script's exit ``code`` stands for."""
    if code == 0:
        return
    where = f"files.{op}: {path!r}"
    said = stderr[:200].decode("utf-8", "replace").strip()
    if code == _MISSING:
        raise PathNotFoundError(f"{where} does not exist", path=path)
    if code == _IS_DIR:
        raise IsADirectoryPathError(f"{where} (or the destination) is a directory", path=path)
    if code == _NOT_EMPTY:
        raise IsADirectoryPathError(
            f"{where} is a directory that is not empty: pass recursive=True", path=path
        )
    if code == _NOT_DIR:
        raise NotADirectoryPathError(f"{where}: a component is not a directory", path=path)
    if code == _DENIED:
        raise PathPermissionError(
            f"{where}: permission denied (or a read-only file system)", path=path
        )
    if code == _EXISTS:
        raise PathExistsError(f"{where} exists already", path=path)
    if code in (_NO_TOOL, 127):
        match = _TOOL.search(said)
        tool = match[1] if match else ""
        raise MissingToolError(
            f"files.{op}: the sandbox has no {tool or 'program it needs'!s} "
            f"(files.{op} runs it there){': ' + said if not match and said else ''}",
            tool=tool,
        )
    raise FileOperationError(
        f"{where}: the sandbox's command failed with exit code {code}"
        + (f": {said!r}" if said else ""),
        path=path,
    )
