"""The id-range pool (parsing, disjoint blocks, claims that survive a restart, release) and
what a user namespace does to a sandbox's spec and root mounts."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from sandboxclient import oci
from sandboxclient._models import Mount
from sandboxclient._plumbing._options import sandbox_draft, with_host_users
from sandboxclient.sandboxer import _userns_owner
from sandboxclient.sandboxer._podspec import build_spec, check_spec, root_mounts
from sandboxclient.sandboxer._userns import (
    DEFAULT_POOL,
    IdBlock,
    IdPool,
    PoolExhaustedError,
    SandboxUsers,
    host_users_asked,
    idmap_options,
    idmapped_mounts,
    idmapped_root,
    parse_pool,
    wants_private_users,
)
from sandboxclient.sandboxer._userns_owner import USERNS_OWNER_ANNOTATION, owner_of, userns_in_force


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


def test_a_claim_made_behind_the_pools_back_is_skipped_and_noted(tmp_path: Path) -> None:
    cfg = parse_pool("100000:65536x3")
    pool = IdPool(cfg, tmp_path / "ids")
    (tmp_path / "ids" / "0").write_text("elsewhere")
    assert pool.acquire("a") == IdBlock(165_536, 65_536)
    assert pool.held("elsewhere") == IdBlock(100_000, 65_536)
    pool.release("a")
    assert pool.next_free() == IdBlock(165_536, 65_536)


def test_the_block_being_made_ahead_is_claimed_only_when_no_other_is_free(
    tmp_path: Path,
) -> None:
    pool = IdPool(parse_pool("100000:65536x2"), tmp_path / "ids")
    pool.making = 0
    assert pool.acquire("a") == IdBlock(165_536, 65_536)
    assert pool.acquire("b") == IdBlock(100_000, 65_536)
    with pytest.raises(PoolExhaustedError):
        pool.acquire("c")


def test_claims_of_sandboxes_no_longer_held_are_dropped(tmp_path: Path) -> None:
    pool = IdPool(parse_pool("100000:65536x3"), tmp_path / "ids")
    a, _ = pool.acquire("ns/a"), pool.acquire("ns/b")
    pool.retain({"ns/a"})
    assert pool.held("ns/a") == a
    assert pool.held("ns/b") is None


def test_the_opt_out_is_typed_and_unknown_values_are_refused() -> None:
    assert host_users_asked(None, {}) is None
    assert host_users_asked(oci.generate_spec(oci.with_host_users()), {}) is True
    assert host_users_asked(None, {oci.HOST_USERS_ANNOTATION: "false"}) is False
    with pytest.raises(GRPCError, match=re.escape(oci.HOST_USERS_ANNOTATION)) as refused:
        host_users_asked(None, {oci.HOST_USERS_ANNOTATION: "yes"})
    assert refused.value.status is Status.INVALID_ARGUMENT
    with pytest.raises(GRPCError, match="host-users"):
        check_spec(None, has_rootfs_mounts=False, annotations={oci.HOST_USERS_ANNOTATION: "1"})
    with pytest.raises(TypeError, match="host_users"):
        oci.with_host_users("true")  # type: ignore[arg-type]


def test_who_gets_a_user_namespace() -> None:
    assert wants_private_users(None, {})
    assert not wants_private_users(oci.generate_spec(oci.with_host_users()), {})
    own = oci.generate_spec(oci.with_user_namespace([(0, 5000, 10)], [(0, 5000, 10)]))
    assert not wants_private_users(own, {})
    joined = oci.generate_spec(oci.with_linux_namespace("user", "/proc/1/ns/user"))
    assert not wants_private_users(joined, {})


def test_the_spec_maps_root_to_the_block_and_a_root_path_becomes_an_idmapped_bind() -> None:
    block = IdBlock(100_000, 65_536)
    spec = build_spec(
        {"root": {"path": "/srv/root", "readonly": False}},
        namespace="ns",
        sandbox_id="s",
        has_rootfs_mounts=False,
        userns=block,
    )
    mapping = [{"containerID": 0, "hostID": 100_000, "size": 65_536}]
    assert spec["linux"]["uidMappings"] == mapping
    assert spec["linux"]["gidMappings"] == mapping
    assert {"type": "user"} in spec["linux"]["namespaces"]
    assert spec["root"]["path"] == "rootfs"
    mounts = root_mounts((), None, None, root_path="/srv/root")
    done = idmapped_mounts(spec, mounts, block)
    assert done == (Mount("bind", "/srv/root", "", ("rbind", *idmap_options(block))),)
    assert idmap_options(block) == ("uidmap=0:100000:65536", "gidmap=0:100000:65536")


def test_the_owner_is_noted_while_pinned_and_read_back_once_unpinned(tmp_path: Path) -> None:
    forged = {"annotations": {USERNS_OWNER_ANNOTATION: "4242"}}
    make = functools.partial(
        build_spec, namespace="ns", sandbox_id="s", has_rootfs_mounts=False, default_root="/r"
    )
    plain = make(forged)
    assert USERNS_OWNER_ANNOTATION not in plain["annotations"]  # a spec's own is no reading
    pin = "/proc/self/ns/user"  # a namespace file, as the sandboxer's pin is
    block = IdBlock(100_000, 65_536)
    spec = make(forged, userns=block, userns_path=pin)
    owner = str(owner_of(pin))
    assert spec["annotations"][USERNS_OWNER_ANNOTATION] == owner
    assert userns_in_force(spec) == ("100000-165535", owner)
    # Unpinned (the sandbox runs): the path is no namespace any more, the note is read.
    for entry in spec["linux"]["namespaces"]:
        if entry["type"] == "user":
            entry["path"] = str(tmp_path / "0.userns")
    assert userns_in_force(spec) == ("100000-165535", owner)
    del spec["annotations"][USERNS_OWNER_ANNOTATION]
    assert userns_in_force(spec) == ("100000-165535", "unknown")


def test_a_read_only_bind_is_made_read_only_by_the_spec_and_other_kinds_are_refused() -> None:
    block = IdBlock(100_000, 65_536)
    spec: dict[str, Any] = {"root": {"path": "rootfs", "readonly": False}}
    done = idmapped_mounts(spec, (Mount("bind", "/srv/r", "", ("rbind", "ro")),), block)
    assert done[0].options == ("rbind", *idmap_options(block))
    assert spec["root"]["readonly"] is True
    with pytest.raises(GRPCError, match="ext4") as refused:
        idmapped_root((Mount("ext4", "/dev/vdb", "", ()),), block)
    assert refused.value.status is Status.FAILED_PRECONDITION


def test_host_users_keyword_sets_the_annotation_and_refuses_contradictions() -> None:
    draft = sandbox_draft(
        "s",
        runtime=None,
        runtime_options=None,
        spec=None,
        labels=None,
        extensions=None,
        sandboxer=None,
        host_users=True,
    )
    assert draft.spec is not None
    with pytest.raises(TypeError, match="host_users"):
        with_host_users(None, "yes")  # type: ignore[arg-type]
    given = oci.generate_spec(oci.with_host_users(False))
    with pytest.raises(ValueError, match="host_users"):
        with_host_users(given, True)
    assert with_host_users(given, False) == given


@pytest.mark.anyio
async def test_a_namespace_that_cannot_be_made_refuses_the_start_naming_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_userns_owner, "UNSHARE", "no-such-unshare-tool")
    monkeypatch.setenv("PATH", str(tmp_path))
    users = SandboxUsers("200000000:65536x2", tmp_path / "pool", set())
    try:
        block = users.claim("ns/a", None, {})
        assert block is not None
        with pytest.raises(GRPCError, match=r"no-such-unshare-tool.*host_users=True") as refused:
            await users.pin(block, None)
        assert refused.value.status is Status.FAILED_PRECONDITION
        # A spec with rlimits of its own, where runc could not set them in such a namespace,
        # gets runc's own: no path (and nothing to make).
        asks = {"process": {"rlimits": [{"type": "RLIMIT_NOFILE", "hard": 8, "soft": 8}]}}
        if not _userns_owner.rlimits_settable():
            assert await users.pin(block, asks) == ""
    finally:
        await users.aclose()
