"""A sandbox rooted on an image (``new_sandbox(image=...)``, imported or pulled from a local
registry) under a real containerd and
the isolating sandboxer: the image's process, user, env and working directory; every
secure default kept (its own user namespace with the image's root idmapped, seccomp, a
read-only root with a private ``/tmp``); ``run`` and ``files`` in the image; and no
snapshot, lease or record left after shutdown or after a step that failed."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sandboxclient import Client
from sandboxclient._creation._sandbox_image import IMAGE_LABEL, IMAGE_LEASE_LABEL
from sandboxclient._plumbing._rootfs import RootFS
from sandboxclient.errors import (
    ContainerdError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
)
from sandboxclient.testing._userland import APP_UID, STAFF_GID, userland_archive
from tests.support.backends import PLUGIN_NAME, RealContainerd, new_namespace
from tests.support.ctr import ctr_ids
from tests.support.host import loaded_argv
from tests.support.registry import LocalRegistry, registry_problem

pytestmark = [pytest.mark.anyio, pytest.mark.real]

IMAGE = "example.test/userland:1"
PACKED = "example.test/userland:packed"
CONFIG = {
    "Entrypoint": ["/bin/sh", "-c"],
    "Cmd": ["echo up > /tmp/up; exec sleep 2147483647"],
    "Env": ["PATH=/bin", "GREETING=hello"],
    "WorkingDir": "/home/app",
    "User": "app:staff",
}
INSIDE = (
    "id -u; id -g; pwd; echo $GREETING; cat /tmp/up; grep Seccomp: /proc/self/status; "
    "stat -c %u:%g /bin/busybox /home/app; cat /proc/self/uid_map; "
    "touch /bin/x 2>&1 || echo read-only"
)


@pytest.fixture
async def client(real: RealContainerd) -> AsyncIterator[Client]:
    namespace = new_namespace()
    async with Client(
        real.daemon.address, namespace=namespace, sandboxer=PLUGIN_NAME, timeout=30
    ) as c:
        archive = userland_archive(IMAGE, CONFIG)
        await c.import_image(io.BytesIO(archive))
        await c.import_image(io.BytesIO(userland_archive(PACKED, CONFIG)), unpack=False)
        yield c


def left(real: RealContainerd, client: Client) -> dict[str, list[str]]:
    """What the namespace holds that a sandbox on an image could leave."""
    return {
        what: ctr_ids(real, client.namespace, what)
        for what in ("snapshots", "leases", "containers", "tasks")
    }


def host_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


async def test_a_sandbox_runs_its_image_with_every_default(
    real: RealContainerd, client: Client
) -> None:
    before = left(real, client)
    async with client.sandbox("img1", image=IMAGE) as sb:
        assert sb.metadata.labels[IMAGE_LABEL] == IMAGE
        assert "img1" in ctr_ids(real, client.namespace, "snapshots")
        pid = (await sb.status()).pid
        # the image's process, as the image's user (a block's id on the host)
        argv = loaded_argv(pid, lambda argv: argv[:2] == [b"sleep", b"2147483647"])
        assert argv[:2] == [b"sleep", b"2147483647"], argv
        done = await sb.run("sh", "-c", INSIDE)
        assert done.returncode == 0, done
        lines = done.stdout.decode().splitlines()
        assert lines[:5] == [str(APP_UID), str(STAFF_GID), "/home/app", "hello", "up"], lines
        assert lines[5].split() == ["Seccomp:", "2"]
        assert lines[6:8] == ["0:0", f"{APP_UID}:1000"], lines  # idmapped: owned as in the image
        inside, start, size = (int(x) for x in lines[8].split())
        assert (inside, size) == (0, 65536), lines
        assert start > 0, lines
        assert host_uid(pid) == start + APP_UID
        assert "Read-only file system" in lines[9], lines
        assert lines[-1] == "read-only", lines
        # files work in the image, in its private /tmp
        await sb.files.write("/tmp/data.txt", b"from the client")
        assert await sb.files.read("/tmp/data.txt") == b"from the client"
        assert (await sb.files.stat("/tmp/data.txt")).size == 15
    assert left(real, client) == before
    assert await client.list_sandboxes() == []


async def test_failures_at_each_step_leave_nothing(real: RealContainerd, client: Client) -> None:
    before = left(real, client)
    with pytest.raises(NotFoundError, match=r"example\.test/missing"):
        await client.new_sandbox("img2", image="example.test/missing:1")
    with pytest.raises(FailedPreconditionError, match="not unpacked"):
        await client.new_sandbox("img2", image=PACKED)
    # Create refused by the sandboxer (OCI hooks run on the host: never taken)
    hooks = {"hooks": {"prestart": [{"path": "/bin/true"}]}}
    with pytest.raises(InvalidArgumentError, match="hooks"):
        await client.new_sandbox("img2", image=IMAGE, spec=hooks)
    # Start fails: the process cannot be run
    with pytest.raises(ContainerdError, match="no-such-program"):
        async with client.sandbox(
            "img2", image=IMAGE, spec={"process": {"args": ["/no-such-program"]}}
        ):
            pass
    assert left(real, client) == before
    assert await client.list_sandboxes() == []


async def test_a_sandbox_whose_root_cannot_be_kept_is_undone(
    real: RealContainerd, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = left(real, client)
    kept: list[str] = []

    async def refused(self: RootFS, lease: str, *args: object, **kwargs: object) -> None:
        kept.append(lease)
        raise ResourceExhaustedError("no more leases")

    monkeypatch.setattr(RootFS, "keep", refused)
    with pytest.raises(ResourceExhaustedError, match="no more leases"):
        await client.new_sandbox("img5", image=IMAGE)
    assert len(kept) == 1  # the sandbox existed, with its record, when it failed
    assert left(real, client) == before
    assert await client.list_sandboxes() == []


async def test_an_explicit_writable_root_and_numeric_user(
    real: RealContainerd, client: Client
) -> None:
    before = left(real, client)
    spec = {"root": {"readonly": False}, "process": {"user": {"uid": 0, "gid": 0}}}
    sb = await client.new_sandbox("img3", image=IMAGE, spec=spec)
    await sb.start()
    done = await sb.run("sh", "-c", "id -u; touch /etc/new && stat -c %u:%g /etc/new; pwd")
    assert done.stdout.decode().split() == ["0", "0:0", "/home/app"], done
    # one lease keeps the root, without expiry (the one it was prepared under is gone)
    lease = sb.metadata.labels[IMAGE_LEASE_LABEL]
    assert ctr_ids(real, client.namespace, "leases") == [lease]
    listed = real.daemon.ctr("leases", "ls", namespace=client.namespace).stdout
    assert "io.sandboxclient.sandbox=img3" in listed, listed
    assert "gc.expire" not in listed, listed
    # another client that loads the sandbox removes its root as well
    async with Client(real.daemon.address, namespace=client.namespace, timeout=30) as other:
        await (await other.load_sandbox("img3")).shutdown()
    assert left(real, client) == before


async def test_a_sandbox_on_a_pulled_image(
    real: RealContainerd, client: Client, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    reason = registry_problem()
    if reason is not None:
        pytest.skip(reason)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    registry = LocalRegistry()
    try:
        ref = f"{registry.host}/test/userland:1"
        await client.push(ref, source=IMAGE, plain_http=True)
        await client.pull(ref, plain_http=True)
        before = left(real, client)
        async with client.sandbox("img4", image=ref) as sb:
            pid = (await sb.status()).pid
            argv = loaded_argv(pid, lambda argv: argv[:2] == [b"sleep", b"2147483647"])
            assert argv[:2] == [b"sleep", b"2147483647"], argv
            done = await sb.run("sh", "-c", "id -u; cat /etc/image")
            assert done.stdout.decode().split() == [str(APP_UID), IMAGE], done
        assert left(real, client) == before
    finally:
        registry.close()
