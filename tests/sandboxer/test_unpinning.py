"""A command sandbox's user namespace is unpinned just after its Start, not on its path:
owned (drained at close), never unmounting a pin of the same block made after it (told by
the block's generation, not by the pin's inode, which the kernel reuses), and a sandbox whose
process is the sandboxer's own is unpinned at once as before."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sandboxclient._facts._wirenames import RUNTIME_SPEC_TYPE_URL
from sandboxclient._wire._pb import AnyPb, SandboxPb
from sandboxclient.sandboxer import _userns
from sandboxclient.sandboxer._podstate import PodRecord
from sandboxclient.sandboxer._userns import SandboxUsers, userns_problem
from sandboxclient.sandboxer._userns_owner import pinned

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(userns_problem() is not None, reason=f"{userns_problem()}"),
]

POOL = "210000000:65536x4"


def shown(path: Path) -> tuple[int, str]:
    """A stand-in pin's inode and text (empty once unpinned)."""
    return path.stat().st_ino, path.read_text()


def record(sandbox_id: str, args: list[str] | None) -> PodRecord:
    spec = AnyPb(
        type_url=RUNTIME_SPEC_TYPE_URL, value=json.dumps({"process": {"args": args}}).encode()
    )
    sandbox = SandboxPb(sandbox_id=sandbox_id, spec=spec if args else None)
    return PodRecord("ns", sandbox_id, sandbox, datetime.now(UTC))


async def test_a_command_sandbox_is_unpinned_after_its_start_and_at_close(
    tmp_path: Path,
) -> None:
    users = SandboxUsers(POOL, tmp_path, set())
    try:
        with users.claimed(record("cmd", ["echo", "hi"])) as block:
            assert block is not None
            pin = Path(await users.pin(block, None))
        assert pinned(pin)  # still: its unmount waits for the Start's answer to be sent
        assert users.unpins.under_way == 1
        await users.unpins.drain()
        assert not pinned(pin)
        assert users.unpins.under_way == 0
        with users.claimed(record("cmd2", ["true"])) as block:
            assert block is not None
            pin = Path(await users.pin(block, None))
    finally:
        await users.aclose()  # owns what is under way: nothing outlives it
    assert users.unpins.under_way == 0
    assert not pinned(pin)


async def test_a_sandbox_of_the_sandboxer_s_own_process_is_unpinned_at_once(
    tmp_path: Path,
) -> None:
    users = SandboxUsers(POOL, tmp_path, set())
    try:
        with users.claimed(record("default", None)) as block:
            assert block is not None
            pin = Path(await users.pin(block, None))
        assert not pinned(pin)
        assert users.unpins.under_way == 0
    finally:
        await users.aclose()


async def test_a_later_pin_of_the_same_block_is_never_unmounted(tmp_path: Path) -> None:
    users = SandboxUsers(POOL, tmp_path, set())
    try:
        block = users.claim("ns/a", None, {})
        assert block is not None
        first = Path(await users.pin(block, None))
        users.unpins.start(users._making, users.drop_pin, block)  # not run yet
        users.pool.release("ns/a")  # a Shutdown: unpinned now
        again = users.claim("ns/b", None, {})
        assert again == block  # the same block, pinned anew before that unpin runs
        assert Path(await users.pin(again, None)) == first  # another namespace, same path
        await users.unpins.drain()
        assert pinned(first)  # left alone
    finally:
        await users.aclose()
        users.pool.release("ns/b")
    assert not pinned(first)


async def test_a_later_pin_showing_the_same_inode_is_still_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel may give the later namespace the inode of the one let go: here every pin
    of the block shows the same file (written in place), and the unpin still leaves it."""

    def make_pinned(path: Path, start: int, size: int) -> None:
        with open(path, "a") as f:  # the same inode every time
            f.truncate(0)
            f.write(f"namespace {start}:{size}")

    def unpin(path: Path) -> None:
        if path.exists():
            with open(path, "a") as f:
                f.truncate(0)

    monkeypatch.setattr(_userns, "make_pinned", make_pinned)
    monkeypatch.setattr(_userns, "unpin", unpin)
    users = SandboxUsers(POOL, tmp_path, set())
    try:
        block = users.claim("ns/a", None, {})
        assert block is not None
        first = Path(await users.pin(block, None))
        made, _ = shown(first)
        users.unpins.start(users._making, users.drop_pin, block)  # not run yet
        users.pool.release("ns/a")
        assert shown(first) == (made, "")  # unpinned by the Shutdown
        assert users.claim("ns/b", None, {}) == block
        assert Path(await users.pin(block, None)) == first
        assert shown(first)[0] == made  # what an inode check cannot tell apart
        await users.unpins.drain()
        assert shown(first) == (made, f"namespace {block.start}:{block.size}")  # left alone
    finally:
        await users.aclose()
