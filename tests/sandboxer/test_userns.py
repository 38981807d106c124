"""User namespaces by default, under a real containerd: root inside is a block of
unprivileged host ids, checked from inside (an exec, a member) and from the host."""

from __future__ import annotations

import contextlib
import ctypes
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxclient import Client, Sandbox, oci
from sandboxclient.sandboxer._userns import DEFAULT_POOL, SandboxUsers, parse_pool
from sandboxclient.sandboxer._userns_owner import owner_of, pinned
from tests.support.backends import RealContainerd, new_namespace
from tests.support.constants import RUNTIME
from tests.support.ctr import answering, client_for, nothing_left

pytestmark = [pytest.mark.anyio, pytest.mark.real]

POOL = parse_pool(DEFAULT_POOL)
SIZE = 65536


def uid_map(text: bytes) -> list[int]:
    return [int(x) for x in text.split()]


def host_uid(pid: int) -> int:
    """The real uid of ``pid`` as the host sees it."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def pool_claims(real: RealContainerd) -> dict[str, str]:
    directory = Path(str(real.sandboxer.state_dir), "userns")
    return {p.name: p.read_text() for p in directory.iterdir() if p.name.isdigit()}


def pins(real: RealContainerd) -> set[str]:
    """The pool's pinned user namespaces, by block index."""
    directory = Path(str(real.sandboxer.state_dir), "userns")
    return {p.name.split(".")[0] for p in directory.glob("*.userns")}


def mounts_naming(word: str) -> list[str]:
    """The host's mounts whose mount point names ``word``."""
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if word in line.split()[4]]


async def block_of(sb: Sandbox) -> int:
    done = await sb.run("cat", "/proc/self/uid_map")
    inside, start, size = uid_map(done.stdout)
    assert (inside, size) == (0, SIZE)
    return start


async def test_a_default_sandbox_runs_as_an_unprivileged_block_of_host_ids(
    tenant: Client,
) -> None:
    async with tenant.sandbox("uns1") as sb:
        start = await block_of(sb)
        assert start >= POOL.start
        assert (start - POOL.start) % SIZE == 0
        done = await sb.run("sh", "-c", "id -u; id -g; stat -c '%u:%g' / /bin /bin/busybox")
        assert done.stdout.split() == [b"0", b"0", b"0:0", b"0:0", b"0:0"], done
        # root inside owns what it writes, and the host sees the block's first id
        assert (await sb.run("sh", "-c", "touch /tmp/x && stat -c %u /tmp/x")).stdout == b"0\n"
        assert sb.pid is not None
        assert host_uid(sb.pid) == start
        own = os.readlink("/proc/self/ns/user").encode()
        assert (await sb.run("readlink", "/proc/self/ns/user")).stdout.strip() != own


async def test_two_sandboxes_get_disjoint_blocks(tenant: Client) -> None:
    async with tenant.sandbox("uns2a") as a, tenant.sandbox("uns2b") as b:
        first, second = await block_of(a), await block_of(b)
        assert abs(first - second) >= SIZE


async def test_host_users_gives_the_identity_map(tenant: Client) -> None:
    async with tenant.sandbox("uns3", spec=oci.generate_spec(oci.with_host_users())) as sb:
        done = await sb.run("cat", "/proc/self/uid_map")
        assert uid_map(done.stdout) == [0, 0, 2**32 - 1]
        assert sb.pid is not None
        assert host_uid(sb.pid) == 0


async def test_the_block_survives_a_restart_and_shutdown_frees_it(real: RealContainerd) -> None:
    namespace = new_namespace()
    async with client_for(real, namespace) as client:
        sb = await client.new_sandbox("uns4", runtime=RUNTIME)
        await sb.start()
        start = await block_of(sb)
        claims = pool_claims(real)
        assert f"{namespace}/uns4" in claims.values()
        (index,) = (i for i, holder in claims.items() if holder == f"{namespace}/uns4")
        # Pinned for runc to join it by path, unpinned once the sandbox's process holds it.
        assert index not in pins(real)
        owner = {"userns": f"{start}-{start + SIZE - 1}", "userns_owner": str(start)}
        real.sandboxer.kill()
        real.sandboxer.start()
        await answering(sb)
        assert pool_claims(real) == claims
        assert index not in pins(real)
        # Read from containerd's record of its spec, by a sandboxer that never saw the pin.
        info = (await sb.status(verbose=True)).info
        assert {k: info.get(k) for k in owner} == owner
        assert (await sb.run("id", "-u")).stdout == b"0\n"  # an exec still joins it
        other = await client.new_sandbox("uns4b", runtime=RUNTIME)
        await other.start()
        assert abs(await block_of(other) - start) >= SIZE
        assert mounts_naming(namespace) == []  # live: their roots are in their namespaces
        for each in (sb, other):
            await each.shutdown()
        assert f"{namespace}/uns4" not in pool_claims(real).values()
        assert f"{namespace}/uns4b" not in pool_claims(real).values()
        assert index not in pins(real)
        # This sandboxer's pin and this daemon's idmapped layers only: other runs on the
        # host may hold their own.
        assert mounts_naming(f"{real.sandboxer.state_dir}/userns/{index}.userns") == []
    assert mounts_naming(namespace) == []
    ours = f"{real.daemon.base_dir}/"
    assert [m for m in mounts_naming("ovl-idmapped") if ours in m.split()[4]] == []
    nothing_left(real, namespace)


_KEY_SPEC_USER_KEYRING = -4
_KEYCTL_INVALIDATE = 21
_SYS_ADD_KEY = 248
_SYS_KEYCTL = 250


@contextlib.contextmanager
def host_root_key(name: str) -> Iterator[int]:
    """A key in the host root's user keyring for the block, invalidated after."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    serial = libc.syscall(
        _SYS_ADD_KEY, b"user", name.encode(), b"secret", 6, _KEY_SPEC_USER_KEYRING
    )
    assert serial > 0, os.strerror(ctypes.get_errno())
    try:
        yield serial
    finally:
        libc.syscall(_SYS_KEYCTL, _KEYCTL_INVALIDATE, serial)


def listed_keys() -> str:
    with open("/proc/keys") as f:
        return f.read()


async def test_the_host_roots_keyring_is_invisible_inside(tenant: Client) -> None:
    name = f"sbx-{uuid.uuid4().hex[:12]}"
    # /proc/keys is masked by default; unmasked here to look at what the kernel shows.
    unmasked = oci.with_masked_paths([p for p in oci.DEFAULT_MASKED_PATHS if p != "/proc/keys"])
    with host_root_key(name):
        assert name in listed_keys()
        async with tenant.sandbox("uns6", spec=oci.generate_spec(unmasked)) as sb:
            done = await sb.run("cat", "/proc/keys")
            assert done.returncode == 0, done
            assert name.encode() not in done.stdout
        spec = oci.generate_spec(unmasked, oci.with_host_users())
        async with tenant.sandbox("uns7", spec=spec) as sb:  # the contrast: the host's root
            assert name.encode() in (await sb.run("cat", "/proc/keys")).stdout
        assert name in listed_keys()


async def test_the_sandboxs_root_cannot_reopen_its_log(tenant: Client) -> None:
    async with tenant.sandbox("uns8") as sb:
        done = await sb.run("sh", "-c", "echo flood > /proc/1/fd/1")
        assert done.returncode != 0
        assert b"denied" in done.stderr


def pin_names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.userns"))


async def test_the_next_block_s_namespace_is_made_ahead_and_used_once(tmp_path: Path) -> None:
    users = SandboxUsers("200000000:65536x4", tmp_path, set())
    try:
        first = users.claim("ns/a", None, {})
        assert first is not None
        path = Path(await users.pin(first, None))
        assert owner_of(path) == first.start
        users.prepare_next()  # what a Start does once it is done
        await users.wait_for_spare()
        second_pin = tmp_path / "1.userns"
        assert pinned(second_pin)  # made ahead, before any Start asked for it
        made_ahead = second_pin.stat().st_ino
        second = users.claim("ns/b", None, {})
        assert second is not None
        assert Path(await users.pin(second, None)) == second_pin
        assert second_pin.stat().st_ino == made_ahead  # used, not made again
        assert owner_of(second_pin) == second.start
        users.prepare_next()
        await users.wait_for_spare()
        assert pin_names(tmp_path) == ["0.userns", "1.userns", "2.userns"]
        users.pool.release("ns/a")
        assert not pinned(path)
        # A spare is claimed before a lower free block: a start-stop cycle keeps using them.
        third = users.claim("ns/c", None, {})
        assert third is not None
        assert users.pool.index_of(third) == 2
        users.prepare_next()
        await users.wait_for_spare()
        assert pin_names(tmp_path) == ["0.userns", "1.userns", "2.userns"]
    finally:
        await users.aclose()
    # Closing unpins the spare (block 0's, unclaimed) and keeps the claimed ones'.
    assert pin_names(tmp_path) == ["1.userns", "2.userns"]
    users.pool.release("ns/b")
    users.pool.release("ns/c")
    assert pin_names(tmp_path) == []


async def test_a_restarted_sandboxer_drops_the_pins_of_started_sandboxes_only(
    tmp_path: Path,
) -> None:
    """Pins an earlier sandboxer kept for its started sandboxes (or one killed between a
    Start and its unpin left) go when the next takes them back; a Start cut short keeps its
    own, which a Start again joins."""
    users = SandboxUsers("200000000:65536x4", tmp_path, set())
    try:
        for key in ("ns/ran", "ns/cut"):
            block = users.claim(key, None, {})
            assert block is not None
            await users.pin(block, None)
    finally:
        await users.aclose()
    assert pin_names(tmp_path) == ["0.userns", "1.userns"]
    again = SandboxUsers("200000000:65536x4", tmp_path, {"ns/ran", "ns/cut"}, {"ns/ran"})
    try:
        assert pin_names(tmp_path) == ["1.userns"]
        assert pinned(tmp_path / "1.userns")
    finally:
        await again.aclose()
        again.pool.release("ns/ran")
        again.pool.release("ns/cut")
    assert pin_names(tmp_path) == []
