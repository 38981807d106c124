"""``new_sandbox(cpu=, memory=, pids=)``: checked at once, recorded in the sandbox's spec on
both backends, and in force in the sandbox's cgroup on a real containerd."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from sandboxclient import Client, oci
from sandboxclient._plumbing._limits import checked_memory
from sandboxclient.testing import FakeContainerd
from tests.support.backends import PLUGIN_NAME, Backend, RealContainerd, new_namespace
from tests.support.constants import RUNTIME

pytestmark = pytest.mark.anyio

MIB = 2**20


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512Mi", 512 * MIB),
        ("1Gi", 2**30),
        ("1.5Gi", 3 * 2**29),
        ("1G", 10**9),
        ("250M", 250 * 10**6),
        ("64k", 64_000),
        (" 8Mi ", 8 * MIB),
        ("65536", 65536),
        (65536, 65536),
    ],
)
def test_memory_takes_bytes_or_a_size(text: int | str, size: int) -> None:
    assert checked_memory(text) == size


BAD: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"cpu": 0}, ValueError, "cpu="),
    ({"cpu": -1.0}, ValueError, "cpu="),
    ({"cpu": 0.001}, ValueError, "cpu="),
    ({"cpu": float("nan")}, ValueError, "cpu="),
    ({"cpu": float("inf")}, ValueError, "cpu="),
    ({"cpu": True}, TypeError, "cpu="),
    ({"cpu": "2"}, TypeError, "cpu="),
    ({"memory": 0}, ValueError, "memory="),
    ({"memory": -MIB}, ValueError, "memory="),
    ({"memory": "lots"}, ValueError, "memory="),
    ({"memory": "-5Mi"}, ValueError, "memory="),
    ({"memory": "5MiB"}, ValueError, "memory="),
    ({"memory": "0Gi"}, ValueError, "memory="),
    ({"memory": 1.5}, TypeError, "memory="),
    ({"memory": True}, TypeError, "memory="),
    ({"pids": 0}, ValueError, "pids="),
    ({"pids": -3}, ValueError, "pids="),
    ({"pids": 2.0}, TypeError, "pids="),
    ({"pids": "10"}, TypeError, "pids="),
]


@pytest.mark.parametrize(("kwargs", "error", "named"), BAD)
async def test_a_bad_limit_is_refused_naming_its_keyword_with_nothing_sent(
    fake: FakeContainerd, kwargs: dict[str, Any], error: type[Exception], named: str
) -> None:
    async with Client(fake.address, namespace="limits") as client:
        with pytest.raises(error, match=named):
            await client.new_sandbox("bad1", runtime=RUNTIME, **kwargs)
        with pytest.raises(error, match=named):
            async with client.sandbox("bad1", runtime=RUNTIME, **kwargs):
                pass
        assert await client.list_sandboxes() == []
    assert fake.call_count("Store/Create") == 0


async def test_limits_are_recorded_in_the_sandbox_s_spec(client: Client) -> None:
    sb = await client.new_sandbox(
        f"lim{uuid.uuid4().hex[:8]}", runtime=RUNTIME, cpu=0.5, memory="64Mi", pids=64
    )
    try:
        spec = (await client.get_sandbox(sb.id)).spec
        assert spec == {
            "linux": {
                "resources": {
                    "cpu": {"quota": 50_000, "period": 100_000},
                    "memory": {"limit": 64 * MIB},
                    "pids": {"limit": 64},
                }
            }
        }
    finally:
        await sb.shutdown()


async def test_limits_join_a_spec_given_too_and_a_contradiction_is_refused(
    client: Client,
) -> None:
    own = oci.generate_spec(oci.with_hostname("limited"), oci.with_memory_limit(256 * MIB))
    sb = await client.new_sandbox(
        f"lim{uuid.uuid4().hex[:8]}", runtime=RUNTIME, spec=own, memory="256Mi", pids=32
    )
    try:
        spec = (await client.get_sandbox(sb.id)).spec
        assert spec is not None
        assert spec["hostname"] == "limited"
        resources = spec["linux"]["resources"]
        assert (resources["memory"]["limit"], resources["pids"]["limit"]) == (256 * MIB, 32)
        assert resources["devices"] == own["linux"]["resources"]["devices"]
    finally:
        await sb.shutdown()
    with pytest.raises(ValueError, match=r"memory= asks for .* 536870912, but the spec sets"):
        await client.new_sandbox("lim2", runtime=RUNTIME, spec=own, memory="512Mi")
    assert own["linux"]["resources"]["memory"] == {"limit": 256 * MIB}  # not changed


def _cgroup_dirs(pid: int) -> dict[str, Path]:
    """Where each cgroup controller of ``pid`` has its files on the host (v1 or v2)."""
    root = Path("/sys/fs/cgroup")
    found: dict[str, Path] = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if not controllers:  # cgroup v2's unified hierarchy
            found["unified"] = root / path.lstrip("/")
        for name in controllers.split(","):
            if name:
                found[name] = root / name / path.lstrip("/")
    return found


@pytest.mark.real
async def test_limits_hold_in_the_sandbox_s_cgroup(real_containerd: RealContainerd) -> None:
    real_containerd.ensure_running()
    backend = Backend("real", real_containerd.daemon.address, PLUGIN_NAME, new_namespace())
    async with (
        backend.client() as client,
        client.sandbox(f"lim{uuid.uuid4().hex[:8]}", cpu=0.25, memory="48Mi", pids=40) as sb,
    ):
        assert sb.pid is not None
        dirs = _cgroup_dirs(sb.pid)
        if "unified" in dirs and "memory" not in dirs:
            unified = dirs["unified"]
            assert (unified / "memory.max").read_text().strip() == str(48 * MIB)
            assert (unified / "pids.max").read_text().strip() == "40"
            assert (unified / "cpu.max").read_text().split() == ["25000", "100000"]
        else:
            memory = dirs["memory"] / "memory.limit_in_bytes"
            assert memory.read_text().strip() == str(48 * MIB)
            assert (dirs["pids"] / "pids.max").read_text().strip() == "40"
            assert (dirs["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "25000"
            assert (dirs["cpu"] / "cpu.cfs_period_us").read_text().strip() == "100000"
