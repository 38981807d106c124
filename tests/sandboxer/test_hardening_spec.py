"""What the isolating sandboxer adds to a spec by default, and the opt-out it refuses,
without containerd."""

from __future__ import annotations

from typing import Any

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from sandboxclient import SandboxMetrics, oci
from sandboxclient._facts._sizes import parse_size
from sandboxclient._members._spec import MEMBERS_CGROUP_ANNOTATION
from sandboxclient._plumbing._limits import checked_memory
from sandboxclient._wire._metrics import decode_metrics
from sandboxclient.sandboxer import ContainerSandboxer
from sandboxclient.sandboxer import __main__ as sandboxer_main
from sandboxclient.sandboxer._harden import (
    DEFAULT_MEMORY,
    DEFAULT_PIDS,
    TMPFS_INODES,
    DefaultLimits,
    InForce,
    harden,
    in_force,
)
from sandboxclient.sandboxer._podlog import DEFAULT_LOG_LIMIT
from sandboxclient.sandboxer._podspec import build_spec
from tests.support.constants import MKDIR_DENIED


def built(spec: dict[str, Any] | None, **kw: Any) -> dict[str, Any]:
    return build_spec(
        spec,
        namespace="ns",
        sandbox_id="sb1",
        has_rootfs_mounts=False,
        default_root="/srv/default-root",
        **kw,
    )


def test_a_bare_spec_gets_the_profile_the_limits_and_inode_bounds() -> None:
    spec = built(None)
    assert spec["linux"]["seccomp"] == oci.default_seccomp_profile(oci.DEFAULT_CAPABILITIES)
    resources = spec["linux"]["resources"]
    assert resources["memory"] == {"limit": DEFAULT_MEMORY, "swap": DEFAULT_MEMORY}
    assert resources["pids"] == {"limit": DEFAULT_PIDS}
    assert resources["cpu"] == {"quota": 100_000, "period": 100_000}
    tmpfs = [m for m in spec["mounts"] if m["type"] == "tmpfs"]
    assert {m["destination"] for m in tmpfs} == {"/dev", "/run", "/dev/shm", "/tmp"}
    for mount in tmpfs:
        assert f"nr_inodes={TMPFS_INODES}" in mount["options"]


def test_what_the_spec_gives_is_used_as_given() -> None:
    mine = {"defaultAction": "SCMP_ACT_ALLOW"}
    given = oci.generate_spec(
        oci.with_seccomp(mine),
        oci.with_memory_limit(64 << 20),
        oci.with_pids_limit(7),
        oci.with_cpus(0.5),
        oci.with_mounts([{"destination": "/x", "type": "tmpfs", "options": ["nr_inodes=5"]}]),
    )
    spec = built(given)
    assert spec["linux"]["seccomp"] == mine
    resources = spec["linux"]["resources"]
    assert resources["memory"] == {"limit": 64 << 20, "swap": 64 << 20}
    assert resources["pids"] == {"limit": 7}
    assert resources["cpu"]["quota"] / resources["cpu"]["period"] == 0.5
    (x,) = [m for m in spec["mounts"] if m["destination"] == "/x"]
    assert x["options"] == ["nr_inodes=5"]


def test_the_opt_out_is_honoured_and_other_values_refused() -> None:
    spec = built(oci.generate_spec(oci.with_seccomp_unconfined()))
    assert "seccomp" not in spec["linux"]
    for given in (
        oci.generate_spec(oci.with_annotations({oci.SECCOMP_ANNOTATION: "none"})),
        {
            "annotations": {oci.SECCOMP_ANNOTATION: oci.SECCOMP_UNCONFINED},
            "linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW"}},
        },
    ):
        with pytest.raises(GRPCError) as info:
            built(given)
        assert info.value.status is Status.INVALID_ARGUMENT
        assert oci.SECCOMP_ANNOTATION in str(info.value.message)
    # The opt-out may come as the Create request's annotation too.
    spec = built(None, annotations={oci.SECCOMP_ANNOTATION: oci.SECCOMP_UNCONFINED})
    assert "seccomp" not in spec["linux"]


def members_parent(spec: dict[str, Any], *, unified: bool) -> str | None:
    """The members' cgroup the hardened ``spec`` names, on a v1 or v2 host."""
    harden(spec, DefaultLimits(), unified=unified)
    return (spec.get("annotations") or {}).get(MEMBERS_CGROUP_ANNOTATION)


def test_on_cgroup_v1_members_nest_under_the_sandbox_s_cgroup() -> None:
    assert members_parent(built(None), unified=False) == "/ns/sb1"
    own = built({"linux": {"cgroupsPath": "/mine/sb1"}})
    assert members_parent(own, unified=False) == "/mine/sb1"
    # The spec cannot point members elsewhere: the annotation is the sandboxer's word.
    lying = built({"annotations": {MEMBERS_CGROUP_ANNOTATION: "/host"}})
    assert members_parent(lying, unified=False) == "/ns/sb1"
    systemd = built({"linux": {"cgroupsPath": "system.slice:ns:sb1"}})
    assert members_parent(systemd, unified=False) is None


def test_on_cgroup_v2_members_nest_beside_the_sandbox_s_leaf_under_its_parent() -> None:
    # The sandbox's process in a leaf, the parent named for members (see test_cgroup2).
    spec = built({"annotations": {MEMBERS_CGROUP_ANNOTATION: "/host"}}, unified=True)
    assert spec["annotations"][MEMBERS_CGROUP_ANNOTATION] == "/ns/sb1"
    assert spec["linux"]["cgroupsPath"] == "/ns/sb1/sb1"
    # Hardened with no word of the sandboxer's default cgroup: no parent, so none named.
    assert members_parent(spec, unified=True) is None


def test_what_is_in_force_is_read_from_the_hardened_spec() -> None:
    assert in_force(built(None)) == InForce("default", DEFAULT_MEMORY, DEFAULT_PIDS, 1.0)
    own = built(
        oci.generate_spec(
            oci.with_seccomp(MKDIR_DENIED), oci.with_cpus(0.25), oci.with_pids_limit(40)
        )
    )
    assert in_force(own) == InForce("spec", DEFAULT_MEMORY, 40, 0.25)
    free = built(
        oci.generate_spec(oci.with_seccomp_unconfined()),
        limits=DefaultLimits(memory=None, pids=None, cpus=None),
    )
    found = in_force(free)
    assert found == InForce("unconfined", None, None, None)
    assert found.info() == {
        "seccomp": "unconfined",
        "memory_limit_bytes": "unlimited",
        "pids_limit": "unlimited",
        "cpu_limit": "unlimited",
        "userns": "host",
    }
    assert InForce("default", 512 << 20, 512, 1.5).info() == {
        "seccomp": "default",
        "memory_limit_bytes": str(512 << 20),
        "pids_limit": "512",
        "cpu_limit": "1.5",
        "userns": "host",
    }
    shown = InForce("default", None, None, None, "100000000-100065535", "100000000").info()
    assert (shown["userns"], shown["userns_owner"]) == ("100000000-100065535", "100000000")
    # The default profile made for other capabilities is the spec's own, not the default.
    admin = built(oci.generate_spec(oci.with_added_capabilities(["CAP_SYS_ADMIN"])))
    assert in_force(admin).seccomp == "default"
    admin["process"]["capabilities"]["bounding"].remove("CAP_SYS_ADMIN")
    assert in_force(admin).seccomp == "spec"


def test_the_cpu_limit_travels_in_the_metrics() -> None:
    sample = SandboxMetrics(memory_usage_bytes=1, cpu_limit=0.5, pids_limit=8)
    data = sample.to_any()
    assert decode_metrics(data.type_url, data.value) == sample
    bad = SandboxMetrics(memory_usage_bytes=1).to_any()
    odd = type(bad)(bad.type_url, bad.value.replace(b'"cpu_limit": null', b'"cpu_limit": "1"'))
    with pytest.raises(ValueError, match="cpu_limit"):
        decode_metrics(odd.type_url, odd.value)


def test_limits_left_unlimited_by_the_sandboxer_are_left_out() -> None:
    spec = built(None, limits=DefaultLimits(memory=None, pids=None, cpus=None))
    assert set(spec["linux"]["resources"]) == {"devices"}


SIZES = [
    ("512Mi", 512 << 20),
    ("1G", 10**9),
    ("1.5G", 1_500_000_000),
    ("1.5Gi", 3 << 29),
    ("64k", 64_000),
    ("65536", 65536),
    ("2Ki", 2048),
    ("3T", 3 * 10**12),
    (" 8Mi ", 8 << 20),
    ("0.5", 1),  # a fraction of a byte is rounded up
]
BAD_SIZES = ["", "0", "0Gi", "-1", "-5Mi", "12Q", "5MiB", "1e3", "Mi", "1.", "lots"]


@pytest.mark.parametrize(("text", "value"), SIZES)
def test_the_sandboxer_and_the_client_read_sizes_alike(text: str, value: int) -> None:
    assert parse_size(text) == value
    flags = sandboxer_main.parser().parse_args(["--socket", "/s", "--default-memory", text])
    assert flags.default_memory == value
    assert checked_memory(text) == value


@pytest.mark.parametrize("text", BAD_SIZES)
def test_bad_sizes_are_refused_by_both(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)
    with pytest.raises(ValueError, match="memory="):
        checked_memory(text)


@pytest.mark.parametrize(
    "kw", [{"memory": 1024}, {"pids": 0}, {"cpus": 0.0}, {"cpus": float("nan")}, {"pids": True}]
)
def test_bad_default_limits_are_refused(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="default"):
        DefaultLimits(**kw)


# --- the command line ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_flags_reach_the_isolating_sandboxer() -> None:
    flags = "--socket /s --default-memory 1Gi --default-pids 64 --default-cpus 0.5 --log-limit 1Mi"
    args = sandboxer_main.parser().parse_args(flags.split())
    limits = DefaultLimits(args.default_memory, args.default_pids, args.default_cpus)
    controller = sandboxer_main.make_controller(
        "container", None, "/c.sock", limits, args.log_limit
    )
    try:
        assert isinstance(controller, ContainerSandboxer)
        assert controller.limits == DefaultLimits(1 << 30, 64, 0.5)
        assert controller.log_limit == 1 << 20
    finally:
        await controller.aclose()
    defaults = sandboxer_main.parser().parse_args(["--socket", "/s"])
    assert (defaults.default_memory, defaults.default_pids, defaults.default_cpus) == (
        DEFAULT_MEMORY,
        DEFAULT_PIDS,
        1.0,
    )
    assert defaults.log_limit == DEFAULT_LOG_LIMIT
    free = sandboxer_main.parser().parse_args(
        ["--socket", "/s", "--default-memory", "unlimited", "--default-pids", "unlimited"]
    )
    assert (free.default_memory, free.default_pids) == (None, None)


@pytest.mark.parametrize(
    "flags",
    [
        ["--default-memory", "lots"],
        ["--default-pids", "-3"],
        ["--default-cpus", "fast"],
        ["--log-limit", "unlimited"],
    ],
)
def test_bad_flags_are_refused_naming_the_value(
    flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        sandboxer_main.parser().parse_args(["--socket", "/s", *flags])
    assert flags[1] in capsys.readouterr().err


def test_a_limit_below_the_floor_stops_the_sandboxer(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="default memory"):
        sandboxer_main.main(["--socket", "/s", "--default-memory", "1Ki"])
