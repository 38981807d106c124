"""The pool of host id ranges the isolating sandboxer gives sandboxes' user namespaces.

A pool is ``START:SIZExCOUNT`` (e.g. ``100000000:65536x1000``): ``COUNT`` blocks of ``SIZE``
ids from host id ``START``. Each live sandbox holds one block, so no two live sandboxes share
a host id. A block is claimed by creating ``<dir>/<index>`` exclusively (the file names the
sandbox), so claims survive a sandboxer restart and two claims never race into one block;
releasing a sandbox's block removes its file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ("DEFAULT_POOL", "IdBlock", "IdPool", "PoolConfig", "PoolExhaustedError", "parse_pool")

DEFAULT_POOL = "100000000:65536x1000"
"""The pool a sandboxer uses unless told otherwise: 1000 blocks of 65,536 ids from 10^8."""

_POOL = re.compile(r"^(\d+):(\d+)x(\d+)$")
_MAX_ID = 2**32 - 1


class PoolExhaustedError(RuntimeError):
    """Every block of the pool is held by a live sandbox."""


@dataclass(frozen=True, slots=True)
class IdBlock:
    """A range of host ids: host ``start`` .. ``start + size - 1`` is id 0.. inside."""

    start: int
    size: int


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """A parsed ``START:SIZExCOUNT``."""

    start: int
    size: int
    count: int


def parse_pool(text: str) -> PoolConfig:
    """Parse ``START:SIZExCOUNT``; a malformed or out-of-range pool raises ValueError naming it."""
    m = _POOL.match(text.strip())
    if m is None:
        raise ValueError(f"id pool {text!r} is not START:SIZExCOUNT (e.g. {DEFAULT_POOL})")
    start, size, count = (int(g) for g in m.groups())
    if start == 0:
        raise ValueError(f"id pool {text!r} starts at host id 0 (root)")
    if size < 1 or count < 1:
        raise ValueError(f"id pool {text!r} has an empty block size or count")
    if start + size * count - 1 > _MAX_ID:
        raise ValueError(f"id pool {text!r} ends past host id {_MAX_ID}")
    return PoolConfig(start, size, count)


class IdPool:
    """Blocks of a :class:`PoolConfig`, claimed by sandbox id in files under ``directory``."""

    def __init__(self, config: PoolConfig, directory: Path) -> None:
        self._config = config
        self._dir = directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _block(self, index: int) -> IdBlock:
        return IdBlock(self._config.start + index * self._config.size, self._config.size)

    def _claims(self) -> dict[str, int]:
        claims: dict[str, int] = {}
        for entry in self._dir.iterdir():
            if entry.name.isdigit():
                claims[entry.read_text()] = int(entry.name)
        return claims

    def held(self, sandbox_id: str) -> IdBlock | None:
        """The block ``sandbox_id`` holds, if any (read from disk: survives a restart)."""
        index = self._claims().get(sandbox_id)
        return None if index is None else self._block(index)

    def acquire(self, sandbox_id: str) -> IdBlock:
        """The block ``sandbox_id`` holds, else the lowest free one, claimed for it."""
        held = self.held(sandbox_id)
        if held is not None:
            return held
        for index in range(self._config.count):
            path = self._dir / str(index)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w") as f:
                f.write(sandbox_id)
            return self._block(index)
        raise PoolExhaustedError(f"all {self._config.count} id blocks are held by live sandboxes")

    def release(self, sandbox_id: str) -> None:
        """Free ``sandbox_id``'s block; idempotent."""
        index = self._claims().get(sandbox_id)
        if index is not None:
            (self._dir / str(index)).unlink(missing_ok=True)
