"""``sb.files``: files in and out of a sandbox, over execs into its own task.

Each test runs on the stand-in (whose processes run on this host, so its paths are the host's)
and on a real containerd with the isolating sandboxer's busybox root (a read-only root with a
private tmpfs on ``/tmp``): both answer the same paths under ``/tmp``. A test's sandbox is
shared by its asserts; every one leaves no exec, FIFO folder or task of the library behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import stat
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sandboxclient import (
    Client,
    FileInfo,
    FileType,
    Sandbox,
)
from sandboxclient.errors import (
    DeadlineExceededError,
    IsADirectoryPathError,
    MissingToolError,
    NotADirectoryPathError,
    NotFoundError,
    PathExistsError,
    PathNotFoundError,
    PathPermissionError,
    ResourceExhaustedError,
)
from tests.support.backends import Backend
from tests.support.constants import NOBODY, RUNTIME
from tests.support.containers import container, in_container
from tests.support.fifos import fifo_dirs
from tests.support.helpers import cleanups_finish

pytestmark = pytest.mark.anyio

MIB = 2**20
BIG = 64 * MIB
MEMORY_BOUND = 8 * MIB
"""The most the client may hold (tracemalloc's peak) while 64 MiB go through it."""

# /tmp as a tmpfs big enough for the 64 MiB file; the stand-in runs no mounts.
BIG_TMP = {
    "mounts": [
        {
            "destination": "/tmp",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "nodev", "mode=1777", "size=160m"],
        }
    ]
}


@pytest.fixture
async def sandbox(client: Client, fifo_home: Path) -> AsyncIterator[Sandbox]:
    """A started sandbox (with a /tmp room for 64 MiB), shut down after the test, which fails
    if a FIFO folder of the client's is left."""
    async with client.sandbox(f"fl{uuid.uuid4().hex[:8]}", runtime=RUNTIME, spec=BIG_TMP) as sb:
        yield sb
        await cleanups_finish()
    assert fifo_dirs() == set()


@pytest.fixture
async def base(sandbox: Sandbox) -> AsyncIterator[str]:
    """A directory of the test's own under /tmp in the sandbox, removed after."""
    path = f"/tmp/files-{uuid.uuid4().hex[:8]}"
    await sandbox.files.make_dir(path)
    yield path
    await sandbox.files.remove(path, recursive=True)


def pattern(size: int) -> AsyncIterator[bytes]:
    """``size`` bytes that differ chunk to chunk, made as they are taken."""

    async def gen() -> AsyncIterator[bytes]:
        for i in range(0, size, MIB):
            yield hashlib.sha256(str(i).encode()).digest() * (min(MIB, size - i) // 32)

    return gen()


async def digest_of(chunks: AsyncIterator[bytes]) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    async for chunk in chunks:
        h.update(chunk)
        n += len(chunk)
    return h.hexdigest(), n


async def test_64_mib_write_and_stream_back_with_memory_bounded(
    sandbox: Sandbox, base: str
) -> None:
    path = f"{base}/big.bin"
    expected = await digest_of(pattern(BIG))
    tracemalloc.start()
    try:
        await sandbox.files.write(path, pattern(BIG), mode=0o600)
        _, wrote_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        async with contextlib.aclosing(sandbox.files.stream(path)) as chunks:
            got = await digest_of(chunks)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == expected
    assert wrote_peak < MEMORY_BOUND, wrote_peak
    assert read_peak < MEMORY_BOUND, read_peak
    info = await sandbox.files.stat(path)
    assert (info.type, info.size, info.mode) == (FileType.FILE, BIG, 0o600)
    whole = await sandbox.files.read(path)
    assert hashlib.sha256(whole).hexdigest() == expected[0]


async def test_write_takes_bytes_text_files_and_iterators(sandbox: Sandbox, base: str) -> None:
    files = sandbox.files
    await files.write(f"{base}/b", b"bytes\n")
    await files.write(f"{base}/t", "text é\n")
    await files.write(f"{base}/f", io.BytesIO(b"x" * 200_000))
    await files.write(f"{base}/e", b"")
    assert await files.read(f"{base}/b") == b"bytes\n"
    assert await files.read(f"{base}/t") == "text é\n".encode()
    assert await files.read(f"{base}/f") == b"x" * 200_000
    assert await files.read(f"{base}/e") == b""
    await files.write(f"{base}/b", b"shorter")  # truncates
    assert await files.read(f"{base}/b") == b"shorter"
    with pytest.raises(Exception, match="more than 3 bytes"):
        await files.read(f"{base}/b", max_bytes=3)
    with pytest.raises(TypeError, match="bytes, str, a binary file object"):
        await files.write(f"{base}/x", 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="absolute path"):
        await files.read("relative/path")


async def test_list_stat_exists_rename_remove(sandbox: Sandbox, base: str) -> None:
    files = sandbox.files
    odd = "new\nline \x01 ü"
    await files.make_dir(f"{base}/d1/d2/d3")
    await files.write(f"{base}/d1/{odd}", b"12345", mode=0o640)
    await files.write(f"{base}/d1/d2/deep", b"x")
    await sandbox.run("ln", "-s", "../elsewhere", f"{base}/d1/link", timeout=10)
    top = await files.list(base)
    assert [(e.name, e.type) for e in top] == [("d1", FileType.DIRECTORY)]
    two = {e.path: e for e in await files.list(base, depth=2)}
    assert set(two) == {f"{base}/d1", f"{base}/d1/d2", f"{base}/d1/{odd}", f"{base}/d1/link"}
    entry = two[f"{base}/d1/{odd}"]
    assert isinstance(entry, FileInfo)
    assert (entry.name, entry.type, entry.size, entry.mode) == (odd, FileType.FILE, 5, 0o640)
    assert entry.mtime.tzinfo is not None
    assert abs((datetime.now(UTC) - entry.mtime).total_seconds()) < 120
    link = two[f"{base}/d1/link"]
    assert (link.type, link.link_target) == (FileType.SYMLINK, "../elsewhere")
    assert len(await files.list(base, depth=4)) == 6
    assert (await files.stat(f"{base}/d1/link")).link_target == "../elsewhere"
    assert await files.exists(f"{base}/d1/link")  # dangling, but there
    assert not await files.exists(f"{base}/nothing")

    await files.rename(f"{base}/d1/{odd}", f"{base}/moved")
    assert await files.read(f"{base}/moved") == b"12345"
    assert not await files.exists(f"{base}/d1/{odd}")
    with pytest.raises(IsADirectoryPathError, match="not empty"):
        await files.remove(f"{base}/d1")
    await files.remove(f"{base}/d1/link")
    await files.remove(f"{base}/d1", recursive=True)
    assert [e.name for e in await files.list(base)] == ["moved"]


async def test_each_error_is_typed_and_names_the_path(sandbox: Sandbox, base: str) -> None:
    files = sandbox.files
    await files.write(f"{base}/file", b"x")
    missing = f"{base}/missing"
    with pytest.raises(PathNotFoundError, match="missing") as caught:
        await files.read(missing)
    assert isinstance(caught.value, FileNotFoundError)
    assert caught.value.path == missing
    for call in (
        files.stat(missing),
        files.list(missing),
        files.remove(missing),
        files.rename(missing, f"{base}/other"),
        files.write(f"{base}/no/such/dir/f", b"x"),
        files.make_dir(f"{base}/no/such", parents=False),
    ):
        with pytest.raises(PathNotFoundError):
            await call
    with pytest.raises(IsADirectoryPathError) as is_dir:
        await files.read(base)
    assert isinstance(is_dir.value, IsADirectoryError)
    assert is_dir.value.path == base
    with pytest.raises(IsADirectoryPathError):
        await files.write(base, b"x")
    with pytest.raises(NotADirectoryPathError, match="file"):
        await files.list(f"{base}/file")
    with pytest.raises(NotADirectoryPathError):
        await files.write(f"{base}/file/inside", b"x")
    with pytest.raises(PathExistsError):
        await files.make_dir(f"{base}/file")
    with pytest.raises(PathExistsError):
        await files.make_dir(base, parents=False)
    await files.make_dir(base)  # parents=True: there already is fine


async def test_a_non_root_user_gets_permission_denied(
    backend: Backend, sandbox: Sandbox, base: str
) -> None:
    if backend.kind == "fake":
        pytest.skip("the stand-in runs every process as the test's own user")
    files = sandbox.files
    await files.write(f"{base}/secret", b"s", mode=0o600)
    await files.make_dir(f"{base}/closed", mode=0o700)
    with pytest.raises(PathPermissionError, match="secret") as denied:
        await files.read(f"{base}/secret", user=NOBODY)
    assert isinstance(denied.value, PermissionError)
    with pytest.raises(PathPermissionError):
        await files.write(f"{base}/closed/new", b"x", user=NOBODY)
    with pytest.raises(PathPermissionError):
        await files.list(f"{base}/closed", user=NOBODY)
    with pytest.raises(PathPermissionError):
        await files.remove(f"{base}/secret", user=NOBODY)
    await files.write(f"/tmp/nobody-{uuid.uuid4().hex[:6]}", b"mine", user=NOBODY)


def make_tree(root: Path, count: int) -> dict[str, tuple[int, int]]:
    """``count`` small files in nested folders, with varied modes and old mtimes."""
    made: dict[str, tuple[int, int]] = {}
    for i in range(count):
        rel = f"d{i % 10}/s{i % 7}/f{i}"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"file {i}\n".encode() * (i % 5))
        mode = (0o644, 0o600, 0o755, 0o700)[i % 4]
        path.chmod(mode)
        mtime = 1_600_000_000 + i * 61
        os.utime(path, (mtime, mtime))
        made[rel] = (mode, mtime)
    return made


async def test_a_tree_of_1000_files_goes_up_and_comes_back(
    sandbox: Sandbox, base: str, tmp_path: Path
) -> None:
    src = tmp_path / "src" / "tree"
    made = make_tree(src, 1000)
    remote = await sandbox.files.upload(src, base)
    assert remote == f"{base}/tree"
    assert len(await sandbox.files.list(remote, depth=3)) == 1000 + 10 + 70
    out = tmp_path / "out"
    out.mkdir()
    local = await sandbox.files.download(remote, out)
    assert local == out / "tree"
    for rel, (mode, mtime) in made.items():
        st = (local / rel).stat()
        assert (stat.S_IMODE(st.st_mode), int(st.st_mtime)) == (mode, mtime), rel
        assert (local / rel).read_bytes() == (src / rel).read_bytes()
    assert sum(1 for p in local.rglob("*") if p.is_file()) == 1000
    with pytest.raises(PathExistsError):
        await sandbox.files.download(remote, out)
    # A single file too.
    await sandbox.files.write(f"{base}/one", b"one")
    assert (await sandbox.files.download(f"{base}/one", out)).read_bytes() == b"one"


async def test_a_sandbox_without_the_tools_is_told_so(
    backend: Backend, client: Client, fifo_home: Path
) -> None:
    """No ``sh`` along the sandbox's PATH, then only ``sh`` and ``cat``. (busybox's shell runs
    its own applets whatever PATH says: in the real sandbox, with ``sh``, nothing is missing.)
    """
    tools = f"/tmp/tools-{uuid.uuid4().hex[:8]}"
    spec = {"process": {"env": [f"PATH={tools}"]}}
    async with client.sandbox(f"ft{uuid.uuid4().hex[:8]}", runtime=RUNTIME, spec=spec) as sb:
        with pytest.raises(MissingToolError, match="'sh'") as no_shell:
            await sb.files.read("/etc/passwd")
        assert no_shell.value.tool == "sh"
        assert no_shell.value.__cause__ is not None
        await sb.run("/bin/mkdir", tools, timeout=10)
        for tool in ("sh", "cat"):
            await sb.run("/bin/ln", "-s", f"/bin/{tool}", f"{tools}/{tool}", timeout=10)
        try:
            assert await sb.files.read(f"{tools}/sh", max_bytes=2**30)  # cat is there
            if backend.kind == "fake":
                with pytest.raises(MissingToolError, match="tar") as no_tar:
                    await sb.files.upload(fifo_home, "/tmp")
                assert no_tar.value.tool == "tar"
                with pytest.raises(MissingToolError, match="find"):
                    await sb.files.list("/tmp")
        finally:
            await sb.run("/bin/rm", "-rf", tools, timeout=10)
        await cleanups_finish()
    assert fifo_dirs() == set()


async def test_a_call_ends_within_its_timeout_whatever_the_sandbox_does(
    sandbox: Sandbox, base: str
) -> None:
    fifo = f"{base}/never"
    await sandbox.run("mkfifo", fifo, timeout=10)  # a read of it blocks for ever
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(DeadlineExceededError, match="never"):
        await sandbox.files.read(fifo, timeout=1)
    assert loop.time() - start < 1.5
    await sandbox.files.remove(fifo)  # and the sandbox goes on answering
    start = loop.time()
    with pytest.raises(ResourceExhaustedError, match="more than 1048576 bytes"):
        await sandbox.files.read("/dev/zero", max_bytes=2**20, timeout=30)  # endless
    assert loop.time() - start < 10  # cut at the bound, not read to its deadline


async def test_a_containers_files_go_through_its_running_task(
    backend: Backend, client: Client, root: Path, fifo_home: Path
) -> None:
    async with container(client, root, f"fc{uuid.uuid4().hex[:8]}", "sleep", "600") as member:
        with pytest.raises(NotFoundError, match="no task"):
            await member.files.read(in_container(backend, root, "/etc/passwd"))
        task = await member.new_task()
        await task.start()
        path = in_container(backend, root, "/tmp/hello")
        await member.files.write(path, b"from the host", mode=0o640)
        assert await member.files.read(path) == b"from the host"
        assert host_bytes(root / "tmp" / "hello") == b"from the host"  # in the container's root
        assert (await member.files.stat(path)).mode == 0o640
        await cleanups_finish()
    assert fifo_dirs() == set()


def host_bytes(path: Path) -> bytes:
    return path.read_bytes()
