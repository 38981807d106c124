"""The sandboxer's socket, the sandboxer's alone from the moment it exists.

Whoever can connect to a sandbox controller's socket can create, stop and shut down any
sandbox in any namespace (the namespace is a header the caller sets), so the socket is made
mode 0600 (0660 with a group) whatever the umask: it is bound in a fresh directory of mode
0700 next to its path, given its mode and group there, and renamed into place, so there is
no moment at which it is reachable with a wider mode. Where the staging path would be too
long for a unix socket, the umask is narrowed around the bind instead.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Final

from .._serve._server import UnixServer, clear_stale_socket

__all__ = ("listen_private",)

_SOCKET_MAX: Final = 107  # sun_path is 108 bytes including the terminating NUL


def _stage(path: str) -> tuple[str, str, str | None]:
    """(the absolute path, a fresh 0700 staging directory next to it, the socket's path in
    it, or None when that would be too long for a unix socket)."""
    path = os.path.abspath(path)
    clear_stale_socket(path)
    staging = tempfile.mkdtemp(prefix=".sock-", dir=os.path.dirname(path))
    tmp = os.path.join(staging, "s")
    return path, staging, tmp if len(os.fsencode(tmp)) <= _SOCKET_MAX else None


def _publish(bound: str, path: str, mode: int, group: int | None) -> None:
    if group is not None:
        os.chown(bound, -1, group)
    os.chmod(bound, mode)
    if bound != path:
        os.rename(bound, path)


async def listen_private(server: UnixServer, path: str, *, group: int | None = None) -> None:
    """Have ``server`` listen on ``path``, mode 0600 (0660 and group ``group`` if given)."""
    mode = 0o600 if group is None else 0o660
    path, staging, tmp = _stage(path)
    try:
        if tmp is None:
            old = os.umask(0o777 & ~mode)
            try:
                await server.start_unix(path)
            finally:
                os.umask(old)
        else:
            await server.start_unix(tmp)
        _publish(tmp or path, path, mode, group)
    except BaseException:
        await server.shutdown()
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(staging)
