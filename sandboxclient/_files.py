"""Files in and out of a sandbox: ``sb.files`` and ``container.files``.

Every operation is an exec into the sandbox's own task (or the container's), as ``kubectl
cp`` works: it needs nothing on the node, works on every snapshotter, and runs as the task's
user unless ``user=`` says otherwise. What runs there is ``sh -c`` with a fixed script and the
paths as its arguments (never spliced into the script), and the tools it names (``cat``,
``stat``, ``find``, ``tar``...): a sandbox without ``sh`` or one of those gets
:class:`MissingToolError` naming it.

Each call holds a deadline, ``timeout`` seconds (:data:`DEFAULT_TIMEOUT` unless given; None
for none) for the whole operation, whatever the sandbox does: past it the exec is killed
and deleted by clean-up the Client owns and :class:`DeadlineExceededError` is raised; a
cancellation is raised at once with the same clean-up. Data streams through in chunks, so a
``write`` from a file or an async iterator and a ``stream`` hold one chunk at a time.

Everything the sandbox sends back is hostile input: listings are parsed strictly (see
:mod:`._file_info`) and a download's archive is checked whole before anything of it is
kept (see :mod:`._tartree`).
"""

from __future__ import annotations

import asyncio
import os
import tarfile
import tempfile
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable
from pathlib import Path
from typing import Any

from ._file_info import FileInfo, parse_entries
from ._fileops._scripts import (
    LIST,
    MAKE_DIR,
    READ,
    REMOVE,
    RENAME,
    STAT,
    TAR_IN,
    TAR_OUT,
    WRITE,
    checked_path,
    raise_for_exit,
)
from ._fileops._tartree import extract_checked, tar_chunks
from ._fileops._transfer import (
    CHUNK,
    Exec,
    Spawn,
    WriteData,
    checked_data,
    chunks_of,
    early_end,
    feed,
    from_sync,
    read_out,
)
from ._plumbing._stream_args import PIPE
from .errors import (
    ContainerdError,
    DeadlineExceededError,
    MissingToolError,
    NotFoundError,
    PathNotFoundError,
    ResourceExhaustedError,
)

__all__ = (
    "DEFAULT_MAX_DOWNLOAD",
    "DEFAULT_MAX_ENTRIES",
    "DEFAULT_MAX_READ",
    "DEFAULT_TIMEOUT",
    "Files",
    "WriteData",
)

DEFAULT_TIMEOUT = 120.0
"""A files call's deadline by default, in seconds: the whole operation, data and all."""
DEFAULT_MAX_READ = 256 * 2**20
"""The most ``read()`` returns by default, in bytes."""
DEFAULT_MAX_DOWNLOAD = 2**30
"""The most file data a ``download()`` takes by default, in bytes."""
DEFAULT_MAX_ENTRIES = 100_000
"""The most entries a ``list()`` or ``download()`` takes by default."""

_ERR_KEPT = 4096
_MAX_LISTING = 64 * 2**20  # bytes of listing a list() takes at most


class Files:
    """Files of one sandbox (``sb.files``) or container (``container.files``).

    Paths are absolute paths in the sandbox (str, or bytes for names that are no UTF-8).
    Errors are typed and name the path: :class:`PathNotFoundError`,
    :class:`IsADirectoryPathError`, :class:`NotADirectoryPathError`,
    :class:`PathPermissionError`, :class:`PathExistsError` (each also the ``OSError``
    subclass Python would raise), :class:`MissingToolError`, :class:`FileOperationError` for
    anything else; see the module's docstring for deadlines.
    """

    __slots__ = ("_spawn", "_what")

    def __init__(self, spawn: Spawn, what: str) -> None:
        self._spawn = spawn
        self._what = what

    def __repr__(self) -> str:
        return f"<Files of {self._what}>"

    # -- the machinery ----------------------------------------------------------------------

    async def _start(self, script: str, args: Iterable[str], *, stdin: bool, user: Any) -> Exec:
        try:
            process = await self._spawn(
                "sh",
                "-c",
                script,
                "sh",
                *args,
                stdin=PIPE if stdin else None,
                stdout=PIPE,
                stderr=PIPE,
                user=user,
            )
        except ContainerdError as exc:
            # How runc (and the stand-in) refuse a program not found: "exec: \"sh\":
            # executable file not found in $PATH", or ENOENT for a path.
            text = str(exc).lower()
            if not isinstance(exc, NotFoundError) and (
                "executable file not found" in text or "no such file" in text
            ):
                raise MissingToolError(
                    f"{self._what} cannot run 'sh' (a POSIX shell), which file operations "
                    f"need: {exc}",
                    tool="sh",
                ) from exc
            raise
        return Exec(process)

    async def _call(
        self,
        op: str,
        path: str,
        script: str,
        args: Iterable[str],
        *,
        user: Any = None,
        timeout: float | None,
        data: AsyncIterable[bytes] | None = None,
        sink: Callable[[bytes], object] | None = None,
        limit: int = _ERR_KEPT,
    ) -> bytes:
        """Run ``script``, feed it ``data``, collect stdout (up to ``limit`` bytes unless a ``sink``
        takes it), check its exit; all under ``timeout``."""
        out = bytearray()
        ex: Exec | None = None
        tasks: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(timeout):
                ex = await self._start(script, args, stdin=data is not None, user=user)
                reading = asyncio.ensure_future(read_out(ex.process, out, sink, limit))
                tasks.append(reading)
                if data is not None:
                    feeding = asyncio.ensure_future(feed(ex.process, data))
                    tasks.append(feeding)
                    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                    if feeding.done():
                        feeding.result()  # the caller's data failed: stop here
                # stdout ends when the script does, having taken all it will take.
                if await reading:
                    raise ResourceExhaustedError(
                        f"files.{op} of {path!r}: the sandbox sent more than {limit} bytes"
                    )
                code, err = await ex.finish()
            raise_for_exit(op, path, code, err)
            if len(tasks) > 1 and not tasks[1].done():
                raise early_end(op, path)
        except TimeoutError:
            if ex is not None:
                await ex.abort()
            raise DeadlineExceededError(
                f"files.{op} of {path!r} did not end within {timeout} s (its timeout)"
            ) from None
        except BaseException:
            if ex is not None:
                await ex.abort()
            raise
        finally:
            for task in tasks:
                task.cancel()
        return bytes(out)

    # -- single files ------------------------------------------------------------------------

    async def write(
        self,
        path: str | bytes,
        data: WriteData,
        *,
        mode: int = 0o644,
        user: str | int | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        """Write ``data`` to the file ``path`` (created, or truncated), then give it ``mode``.

        The directory must exist. An interrupted write leaves the file as far as it got.
        """
        if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
            raise ValueError(f"mode must be an int from 0 to 0o7777, got {mode!r}")
        p = checked_path(path)
        checked_data(data)
        await self._call(
            "write", p, WRITE, [p, f"{mode:o}"], user=user, timeout=timeout, data=chunks_of(data)
        )

    async def read(
        self,
        path: str | bytes,
        *,
        max_bytes: int = DEFAULT_MAX_READ,
        user: str | int | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> bytes:
        """The whole file ``path``; past ``max_bytes`` a ResourceExhaustedError."""
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes must be an int >= 0, got {max_bytes!r}")
        p = checked_path(path)
        return await self._call("read", p, READ, [p], user=user, timeout=timeout, limit=max_bytes)

    async def stream(
        self,
        path: str | bytes,
        *,
        user: str | int | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> AsyncGenerator[bytes, None]:
        """The file ``path`` in chunks, as they come; an error (a missing file, say) is
        raised once the chunks are done. Leaving early (``break``) should be through
        ``contextlib.aclosing`` so that the exec is killed at once."""
        p = checked_path(path)
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        ex: Exec | None = None
        try:
            async with asyncio.timeout_at(deadline):
                ex = await self._start(READ, [p], stdin=False, user=user)
            stdout = ex.process.stdout
            assert stdout is not None
            while True:
                async with asyncio.timeout_at(deadline):
                    chunk = await stdout.read(CHUNK)
                if not chunk:
                    break
                yield chunk
            async with asyncio.timeout_at(deadline):
                code, err = await ex.finish()
            raise_for_exit("stream", p, code, err)
        except TimeoutError:
            if ex is not None:
                await ex.abort()
            raise DeadlineExceededError(
                f"files.stream of {p!r} did not end within {timeout} s (its timeout)"
            ) from None
        except BaseException:
            if ex is not None:
                await ex.abort()
            raise

    # -- metadata ----------------------------------------------------------------------------

    async def list(
        self,
        path: str | bytes,
        *,
        depth: int = 1,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        user: str | int | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> list[FileInfo]:
        """The entries under the directory ``path``, ``depth`` levels down (1: its own), in
        the order the sandbox's ``find`` gives them. Entries of subdirectories the user may
        not read are not listed."""
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be an int >= 1, got {depth!r}")
        p = checked_path(path)
        # A line of numbers, a path and a link target: at most about 8 KiB an entry.
        bound = min(max_entries * 8448, _MAX_LISTING)
        out = await self._call(
            "list", p, LIST, [p, str(depth), _EMIT], user=user, timeout=timeout, limit=bound
        )
        return parse_entries(out, under=p, limit=max_entries)

    async def stat(
        self,
        path: str | bytes,
        *,
        user: str | int | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> FileInfo:
        """What ``path`` is (a symbolic link itself, not what it points to)."""
        p = checked_path(path)
        out = await self._call("stat", p, STAT, [p, _EMIT], user=user, timeout=timeout, limit=16384)
        entries = parse_entries(out, under=None, limit=1)
        if len(entries) != 1 or entries[0].path != p:
            raise PathNotFoundError(f"files.stat: {p!r} vanished while it was read", path=p)
        return entries[0]

    async def exists(
        self,
        path: str | bytes,
        *,
        user: str | int | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> bool:
        """Whether ``path`` exists (a dangling symbolic link does)."""
        try:
            await self.stat(path, user=user, timeout=timeout)
        except PathNotFoundError:
            return False
        return True

    # -- changes -----------------------------------------------------------------------------

    async def make_dir(
        self,
        path: str | bytes,
        *,
        parents: bool = True,
        mode: int = 0o755,
        user: str | int | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        """Make the directory ``path`` (with ``parents``, any missing parent too, and a
        directory there already is fine; without, its parent must exist and it must not)."""
        if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
            raise ValueError(f"mode must be an int from 0 to 0o7777, got {mode!r}")
        p = checked_path(path)
        flag = "p" if parents else "-"
        await self._call(
            "make_dir", p, MAKE_DIR, [p, flag, f"{mode:o}"], user=user, timeout=timeout
        )

    async def remove(
        self,
        path: str | bytes,
        *,
        recursive: bool = False,
        user: str | int | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        """Remove ``path``: a file, a link, an empty directory, or with ``recursive`` a
        whole tree (a link is removed, never followed)."""
        p = checked_path(path)
        flag = "r" if recursive else "-"
        await self._call("remove", p, REMOVE, [p, flag], user=user, timeout=timeout)

    async def rename(
        self,
        src: str | bytes,
        dst: str | bytes,
        *,
        user: str | int | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        """Rename ``src`` to ``dst`` (replacing a file there; an existing directory at
        ``dst`` is refused, never moved into)."""
        s, d = checked_path(src), checked_path(dst, "dst")
        await self._call("rename", s, RENAME, [s, d], user=user, timeout=timeout)

    # -- trees -------------------------------------------------------------------------------

    async def upload(
        self,
        local_path: str | os.PathLike[str],
        remote_dir: str | bytes,
        *,
        user: str | int | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> str:
        """Copy the local file or tree ``local_path`` into the existing directory
        ``remote_dir`` (as ``docker cp``/``kubectl cp`` do), keeping modes and mtimes; returns
        the path it has in the sandbox. Needs ``tar`` in the sandbox."""
        local = Path(local_path)
        if not await asyncio.to_thread(os.path.lexists, local):
            raise FileNotFoundError(f"nothing to upload at {str(local)!r}")
        d = checked_path(remote_dir, "remote_dir")
        await self._call(
            "upload",
            d,
            TAR_IN,
            [d],
            user=user,
            timeout=timeout,
            data=from_sync(tar_chunks(local)),
        )
        return d.rstrip("/") + "/" + local.name

    async def download(
        self,
        remote_path: str | bytes,
        local_dir: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_DOWNLOAD,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        user: str | int | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> Path:
        """Copy the file or tree ``remote_path`` into the existing local directory
        ``local_dir``, under its own name (which must not exist there yet); returns its
        local path. The archive the sandbox sends is checked whole before anything is kept
        (see :mod:`._tartree`): a hostile one is an UnsafeArchiveError or, past ``max_bytes``
        of file data or ``max_entries`` entries, a ResourceExhaustedError, and leaves
        nothing. Modes lose setuid/setgid and group/other write (tarfile's ``data``
        filter). Needs ``tar`` in the sandbox."""
        for name, value in (("max_bytes", max_bytes), ("max_entries", max_entries)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        dest = Path(local_dir)
        if not await asyncio.to_thread(dest.is_dir):
            raise NotADirectoryError(f"local_dir {str(dest)!r} is no directory")
        p = checked_path(remote_path, "remote_path")
        if p == "/":
            raise ValueError("remote_path must name something under '/', not the root")
        top = p.rsplit("/", 1)[1]
        # Headers and padding: at most about 3 blocks per entry beyond the data, and the end.
        spool_bound = max_bytes + 3 * tarfile.BLOCKSIZE * max_entries + 20 * tarfile.BLOCKSIZE
        with tempfile.TemporaryFile(dir=dest, prefix=".sandboxclient-spool-") as spool:
            await self._call(
                "download",
                p,
                TAR_OUT,
                [p.rsplit("/", 1)[0] or "/", top],
                user=user,
                timeout=timeout,
                sink=spool.write,
                limit=spool_bound,
            )
            return await asyncio.to_thread(
                extract_checked,
                spool,
                dest,
                top,
                max_bytes=max_bytes,
                max_entries=max_entries,
            )


# The listing of each path given: "<hex mode> <size> <mtime>\n<path>\0[<target>\0]".
_EMIT = (
    'for f; do stat -c "%f %s %Y" -- "$f" 2>/dev/null || continue; printf "%s\\0" "$f"; '
    'if [ -L "$f" ]; then printf "%s\\0" "$(readlink -- "$f")"; fi; done'
)
