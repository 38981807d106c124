"""The user an image's config names (``User``), as the uid and gid a spec takes.

``"uid"`` and ``"uid:gid"`` are used as they are (a lone uid gets gid 0, as
``oci.with_user``). A name (``"app"``, ``"app:staff"``, ``"1000:staff"``) is looked up in the
image's own ``/etc/passwd`` and ``/etc/group``, read from the snapshot's layer directories
(the overlay mount's ``upperdir`` and ``lowerdir``\\s, top first, or a bind's source) as
overlayfs would show them: a whiteout hides a file, an opaque directory hides the layers
below it. The files are the image author's, so hostile input: each is read up to
:data:`MAX_FILE` bytes, every path component is opened without following a symbolic link
(a link anywhere on the way is refused, never followed out of the root), and only a regular
file is read. Anything that cannot be used is an ``InvalidArgumentError`` naming the image
and the file; a snapshot whose directories this process cannot read (another host, another
user) is a ``FailedPreconditionError`` saying to give a numeric user instead.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from .._facts._golang import go_quote
from .._models import Mount
from ..errors import FailedPreconditionError, InvalidArgumentError

__all__ = ("MAX_FILE", "ImageUser", "image_user", "layer_dirs", "needs_lookup")

MAX_FILE: Final = 1024 * 1024
"""The most bytes of an image's ``/etc/passwd`` or ``/etc/group`` read."""

_MAX_ID: Final = 2**32 - 2
_OPAQUE: Final = ("trusted.overlay.opaque", "user.overlay.opaque")
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class ImageUser:
    """The uid and gid an image's process runs as."""

    uid: int
    gid: int

    def to_spec(self) -> dict[str, int]:
        """The OCI spec's ``process.user``."""
        return {"uid": self.uid, "gid": self.gid}


def _number(text: str) -> int | None:
    if not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= _MAX_ID else None


def needs_lookup(user: str) -> bool:
    """Whether ``user`` names a user or group, to be looked up in the image's files."""
    name, _, group = user.partition(":")
    return _number(name) is None or (bool(group) and _number(group) is None)


def image_user(user: str, image: str, mounts: Sequence[Mount]) -> ImageUser:
    """The uid and gid of the image's ``User`` (see the module's docstring)."""
    name, _, group = user.partition(":")
    if not name or ":" in group:
        raise InvalidArgumentError(f"image {go_quote(image)} has a malformed User {go_quote(user)}")
    uid, gid = _number(name), _number(group) if group else None
    if uid is not None and (gid is not None or not group):
        return ImageUser(uid, gid or 0)
    layers = layer_dirs(mounts, image)
    if uid is None:
        entry = _find(_read(layers, "passwd", image), name, 2, image, "passwd")
        uid = _id(entry[2], image, "passwd")
        if not group:
            return ImageUser(uid, _id(entry[3], image, "passwd"))
    if gid is None:
        entry = _find(_read(layers, "group", image), group, 2, image, "group")
        gid = _id(entry[2], image, "group")
    return ImageUser(uid, gid)


def _id(text: str, image: str, file: str) -> int:
    value = _number(text)
    if value is None:
        raise InvalidArgumentError(
            f"image {go_quote(image)}'s /etc/{file} has an id {go_quote(text)} that is not one"
        )
    return value


def _find(text: str, name: str, fields: int, image: str, file: str) -> list[str]:
    for line in text.splitlines():
        entry = line.split(":")
        if entry[0] == name and len(entry) > fields + 1:
            return entry
    raise InvalidArgumentError(
        f"image {go_quote(image)} runs as {go_quote(name)}, which its /etc/{file} does not name"
    )


def layer_dirs(mounts: Sequence[Mount], image: str) -> list[str]:
    """The directories of a snapshot's layers, top first, from its mounts."""
    if len(mounts) != 1:
        raise FailedPreconditionError(
            f"image {go_quote(image)}'s snapshot is {len(mounts)} mounts: cannot read its "
            "/etc/passwd to look up its user; give the sandbox a numeric user in its spec"
        )
    (mount,) = mounts
    if mount.type == "bind" or "bind" in mount.options or "rbind" in mount.options:
        return [mount.source]
    if mount.type != "overlay":
        raise FailedPreconditionError(
            f"image {go_quote(image)}'s snapshot is a {mount.type} mount: cannot read its "
            "/etc/passwd to look up its user; give the sandbox a numeric user in its spec"
        )
    options = dict(o.partition("=")[::2] for o in mount.options)
    layers = [options["upperdir"]] if options.get("upperdir") else []
    return layers + [d for d in options.get("lowerdir", "").split(":") if d]


def _read(layers: Sequence[str], name: str, image: str) -> str:
    path = f"/etc/{name}"
    try:
        data = _overlay_read(layers, ("etc", name))
    except _Refused as exc:
        raise InvalidArgumentError(
            f"image {go_quote(image)}'s {path} cannot be read safely: {exc}"
        ) from None
    except OSError as exc:
        raise FailedPreconditionError(
            f"cannot read image {go_quote(image)}'s {path} from its snapshot here "
            f"({exc.strerror or exc}): give the sandbox a numeric user in its spec"
        ) from None
    if data is None:
        raise InvalidArgumentError(f"image {go_quote(image)} has no {path} to look up its user")
    return data.decode("utf-8", "replace")


class _Refused(Exception):
    """The image's files are not what may be read."""


@contextlib.contextmanager
def _opened(path: str | bytes, flags: int, dir_fd: int | None = None) -> Iterator[int]:
    fd = os.open(path, flags, dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def _opaque(fd: int) -> bool:
    for attr in _OPAQUE:
        with contextlib.suppress(OSError):
            if os.getxattr(fd, attr) == b"y":
                return True
    return False


def _overlay_read(layers: Sequence[str], parts: tuple[str, ...]) -> bytes | None:
    """The file at ``parts`` as the overlay of ``layers`` (top first) shows it, or None when
    there is none."""
    for layer in layers:
        found, hidden = _layer_read(layer, parts)
        if found is not None or hidden:
            return found
    return None


def _layer_read(layer: str, parts: tuple[str, ...]) -> tuple[bytes | None, bool]:
    """What one layer has at ``parts``: the file's bytes, or None and whether the layer
    hides the path from the layers below (a whiteout, a non-directory on the way, an opaque
    directory)."""
    with contextlib.ExitStack() as stack:
        fd = stack.enter_context(_opened(layer, _DIR_FLAGS))
        for depth, part in enumerate(parts):
            try:
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return None, _opaque(fd) if depth else False
            if stat.S_ISLNK(st.st_mode):
                raise _Refused(f"/{'/'.join(parts[: depth + 1])} is a symbolic link")
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                return None, True  # a whiteout
            if depth == len(parts) - 1:
                if not stat.S_ISREG(st.st_mode):  # never opened: a device may act on open
                    raise _Refused(f"/{'/'.join(parts)} is not a regular file")
                return _regular(part, fd, parts), True
            if not stat.S_ISDIR(st.st_mode):
                return None, True
            try:
                fd = stack.enter_context(_opened(part, _DIR_FLAGS, dir_fd=fd))
            except OSError as exc:
                if exc.errno == errno.ELOOP:  # replaced by a link since the stat
                    raise _Refused(f"/{'/'.join(parts[: depth + 1])} is a symbolic link") from None
                raise
    return None, False


def _regular(part: str, dir_fd: int, parts: tuple[str, ...]) -> bytes:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        with _opened(part, flags, dir_fd=dir_fd) as fd:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise _Refused(f"/{'/'.join(parts)} is not a regular file")
            data = os.read(fd, MAX_FILE + 1)
            while len(data) <= MAX_FILE:
                more = os.read(fd, MAX_FILE + 1 - len(data))
                if not more:
                    break
                data += more
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _Refused(f"/{'/'.join(parts)} is a symbolic link") from None
        raise
    if len(data) > MAX_FILE:
        raise _Refused(f"/{'/'.join(parts)} is larger than {MAX_FILE} bytes")
    return data
