"""The id-range pool: parsing, disjoint blocks, claims that survive a restart, release."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandboxclient.sandboxer._userns import (
    DEFAULT_POOL,
    IdBlock,
    IdPool,
    PoolExhaustedError,
    parse_pool,
)


def test_default_pool_parses() -> None:
    cfg = parse_pool(DEFAULT_POOL)
    assert (cfg.start, cfg.size, cfg.count) == (100_000_000, 65_536, 1000)


@pytest.mark.parametrize("text", ["", "1:2", "0:65536x1", "1:0x1", "4294967000:65536x1", "a:1x1"])
def test_bad_pool_is_refused_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match="id pool"):
        parse_pool(text)


def test_blocks_are_disjoint_and_survive_a_restart(tmp_path: Path) -> None:
    cfg = parse_pool("100000:65536x3")
    pool = IdPool(cfg, tmp_path / "ids")
    a, b = pool.acquire("a"), pool.acquire("b")
    assert a == IdBlock(100_000, 65_536)
    assert b == IdBlock(165_536, 65_536)
    assert pool.acquire("a") == a
    again = IdPool(cfg, tmp_path / "ids")
    assert again.held("a") == a
    assert again.held("b") == b
    assert again.acquire("c") == IdBlock(231_072, 65_536)
    with pytest.raises(PoolExhaustedError):
        again.acquire("d")
    again.release("a")
    again.release("a")
    assert again.held("a") is None
    assert again.acquire("d") == a
