"""Where a tar stream ends, found as its bytes go by.

containerd 2.1 does not end an export's stream once the archive is written: the client knows
the archive is whole when the tar's end (two zero blocks after the last member) has come.
"""

from __future__ import annotations

from typing import Final

__all__ = ("TarEnd",)

_BLOCK: Final = 512
_ZERO: Final = bytes(_BLOCK)


def _member_size(header: bytes) -> int:
    """The size field of a tar header: octal, or base-256 when its first byte says so."""
    field = header[124:136]
    if field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    digits = field.split(b"\0", 1)[0].strip()
    try:
        return int(digits, 8) if digits else 0
    except ValueError:
        raise ValueError("not a tar stream: a header's size is no number") from None


class TarEnd:
    """Feed a tar stream's bytes in order; :attr:`done` once its end marker has passed.

    ``ValueError`` for bytes that cannot be a tar stream (a header whose size field is no
    number). Bytes after the end are counted in :attr:`trailing`.
    """

    def __init__(self) -> None:
        self._partial = bytearray()  # an incomplete header block
        self._skip = 0  # member data (rounded up to blocks) still to pass
        self._zeros = 0
        self.done = False
        self.trailing = 0

    def feed(self, data: bytes) -> None:
        """Account for the next bytes of the stream."""
        view = memoryview(data)
        while view:
            if self.done:
                self.trailing += len(view)
                return
            if self._skip:
                step = min(self._skip, len(view))
                self._skip -= step
                view = view[step:]
                continue
            need = _BLOCK - len(self._partial)
            self._partial += view[:need]
            view = view[need:]
            if len(self._partial) < _BLOCK:
                return
            header, self._partial = bytes(self._partial), bytearray()
            if header == _ZERO:
                self._zeros += 1
                self.done = self._zeros >= 2
                continue
            self._zeros = 0
            size = _member_size(header)
            self._skip = -(-size // _BLOCK) * _BLOCK
