"""Archives as transfers take and give them: an import's source read in chunks (a gzip
stream inflated as it goes), an export's destination written whole or not at all."""

from __future__ import annotations

import contextlib
import os
import secrets
import zlib
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from pathlib import Path
from typing import IO, Any, Final

from ..errors import InvalidArgumentError
from ._streaming import MAX_CHUNK

__all__ = ("READ_SIZE", "ArchiveSource", "ExportDestination", "Output", "archive_chunks")

ArchiveSource = str | os.PathLike[str] | IO[bytes] | AsyncIterable[bytes]
"""An archive to import: a path, a binary file object, or an async iterable of bytes."""

ExportDestination = str | os.PathLike[str] | IO[bytes]
"""Where an export goes: a path (written whole or not at all) or a binary file object."""

_GZIP_MAGIC: Final = b"\x1f\x8b"
READ_SIZE: Final = 8 * MAX_CHUNK
"""How much of an archive is read at a time: a stream sends it on in ``MAX_CHUNK`` messages."""


async def _file_chunks(f: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := f.read(READ_SIZE):
        if not isinstance(chunk, bytes | bytearray):
            raise TypeError("the archive's file object must be opened in binary mode")
        yield bytes(chunk)


async def _raw_chunks(source: ArchiveSource) -> AsyncGenerator[bytes, None]:
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:  # noqa: ASYNC230 - local reads of 256 KiB
            async for chunk in _file_chunks(f):
                yield chunk
    elif hasattr(source, "read"):
        async for chunk in _file_chunks(source):  # type: ignore[arg-type]
            yield chunk
    elif isinstance(source, AsyncIterable):
        async for chunk in source:
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise TypeError("an archive's async iterable must yield bytes")
            yield bytes(chunk)
    else:
        raise TypeError("an archive is a path, a binary file object or an async iterable of bytes")


async def archive_chunks(source: ArchiveSource) -> AsyncIterator[bytes]:
    """The archive's bytes in chunks of at most ``READ_SIZE``, a gzip-compressed one
    decompressed as it goes (never more than ``MAX_CHUNK`` at a time); a corrupt gzip stream
    is InvalidArgumentError."""
    chunks = _raw_chunks(source)
    inflate: Any = None
    try:
        async for chunk in chunks:
            if inflate is None:
                inflate = (
                    zlib.decompressobj(16 + zlib.MAX_WBITS) if chunk[:2] == _GZIP_MAGIC else False
                )
            if not inflate:
                yield chunk
                continue
            data = chunk
            try:
                while data:
                    out = inflate.decompress(data, MAX_CHUNK)
                    data = inflate.unconsumed_tail
                    if out:
                        yield out
                    if inflate.eof:
                        break
            except zlib.error as exc:
                raise InvalidArgumentError(f"the archive is not valid gzip: {exc}") from None
        if inflate and not inflate.eof:
            raise InvalidArgumentError("the archive's gzip stream is truncated")
    finally:
        await chunks.aclose()


class Output:
    """An export's destination: a file object written as data comes, or a path written
    to a private temporary file renamed into place once the export is complete."""

    def __init__(self, dest: ExportDestination) -> None:
        self._file: IO[bytes]
        self._temp: Path | None = None
        self._path: Path | None = None
        if isinstance(dest, str | os.PathLike):
            self._path = Path(dest)
            self._temp = self._path.with_name(f".{self._path.name}.{secrets.token_hex(6)}.part")
            self._file = open(self._temp, "xb")  # noqa: SIM115 - closed by __exit__
        elif hasattr(dest, "write"):
            self._file = dest
        else:
            raise TypeError("an export's destination is a path or a binary file object")
        self._committed = False

    def __enter__(self) -> Output:
        return self

    async def write(self, chunk: bytes) -> None:
        """Write the next chunk."""
        self._file.write(chunk)

    def commit(self) -> None:
        """The export is whole: rename a path's temporary file into place."""
        if self._temp is not None and self._path is not None:
            self._file.close()
            os.replace(self._temp, self._path)
        self._committed = True

    def __exit__(self, *exc_info: object) -> None:
        if self._temp is not None:
            self._file.close()
            if not self._committed:
                with contextlib.suppress(FileNotFoundError):
                    self._temp.unlink()
