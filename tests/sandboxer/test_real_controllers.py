"""containerd's own sandbox controllers, driven through the public client."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxclient import Client, UnimplementedError
from sandboxclient.testing._hostpaths import SHIM_SOCKET_DIR
from tests.support.backends import RealContainerd
from tests.support.constants import RUNTIME
from tests.support.cri import CRI_METADATA_URL, cri_metadata

pytestmark = [pytest.mark.anyio, pytest.mark.real]


@pytest.fixture
def pod_ready(real_containerd: RealContainerd) -> Iterator[RealContainerd]:
    real_containerd.ensure_running()
    real_containerd.daemon.ensure_pause_image("k8s.io")
    yield real_containerd
    real_containerd.ensure_running()


async def test_podsandbox_full_lifecycle(pod_ready: RealContainerd) -> None:
    daemon = pod_ready.daemon
    sandbox_id = f"pod{uuid.uuid4().hex[:10]}"
    async with Client(daemon.address, namespace="k8s.io", sandboxer="podsandbox") as client:
        sb = await client.new_sandbox(
            sandbox_id,
            runtime=RUNTIME,
            extensions={"metadata": (CRI_METADATA_URL, cri_metadata(sandbox_id, "web"))},
            labels={"io.kubernetes.pod.name": "web"},
        )
        try:
            started = await sb.start()
            assert started.pid > 0
            assert (await sb.status()).state == "SANDBOX_READY"
            channel = await sb.wait()
            await sb.stop(grace=1)
            status = await asyncio.wait_for(channel.get(), 30)
            assert status.error is None
            assert status.returncode == 137  # the pause process is killed
            assert (await sb.status()).state == "SANDBOX_NOTREADY"
        finally:
            await sb.shutdown()
            await sb.shutdown()
        assert [s.id for s in await client.list_sandboxes(f"id=={sandbox_id}")] == []


async def test_shim_controller_is_unimplemented_and_leaves_nothing(
    real_containerd: RealContainerd,
) -> None:
    real_containerd.ensure_running()
    daemon = real_containerd.daemon
    shims_before = set(daemon.shim_pids())
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    async with Client(daemon.address, namespace=namespace) as client:
        assert client.sandboxer is None
        assert await client.default_sandboxer() == "shim"  # the namespace has no label
        with pytest.raises(UnimplementedError) as refused:
            await client.new_sandbox(
                "shim1",
                runtime=RUNTIME,
                # The shim needs a bundle spec before it gets as far as the missing service.
                spec={"ociVersion": "1.2.0", "process": {"args": ["sleep", "1"]}},
            )
        # The error says what to do, and where the shim containerd leaves behind is.
        assert "Client.sandboxers()" in str(refused.value)
        assert "'-id shim1'" in str(refused.value)
        assert isinstance(refused.value.__cause__, UnimplementedError)
        leaked = [
            pid
            for pid in set(daemon.shim_pids()) - shims_before
            if b"shim1" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")  # noqa: ASYNC240
        ]
        assert leaked, "containerd 2.1 no longer leaks the shim: the error's advice is stale"
        assert await client.list_sandboxes() == []
    # containerd itself leaves the shim it started running (the Controller has no sandbox
    # to shut down), so the test reaps it and checks that nothing else survives.
    # Its socket, named by no bundle now (containerd removed it), goes with it.
    key = f"{daemon.address}/{namespace}/shim1".encode()
    shim_socket = SHIM_SOCKET_DIR / hashlib.sha256(key).hexdigest()
    assert shim_socket.is_socket()
    daemon.kill_shims(set(daemon.shim_pids()) - shims_before)
    assert set(daemon.shim_pids()) - shims_before == set()
    assert not shim_socket.exists()
