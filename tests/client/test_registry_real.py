"""Pull and push through a real containerd and a real registry on 127.0.0.1 (Debian's
docker-registry): plain HTTP, htpasswd basic auth, the failures a user meets."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import re
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sandboxclient import (
    Client,
    Credentials,
    DeadlineExceededError,
    NotFoundError,
    Platform,
    PullProgress,
    UnauthenticatedError,
    UnavailableError,
)
from sandboxclient._facts._golang import go_arch
from sandboxclient._imageops._platforms import host_platform
from sandboxclient.testing._images import build_pause_archive
from tests.support.backends import RealContainerd, new_namespace
from tests.support.cli import sandboxctl
from tests.support.ctr import ctr_ids
from tests.support.helpers import until
from tests.support.images import multi_platform_archive
from tests.support.registry import LocalRegistry, registry_problem
from tests.support.releases import pulled_blob_ends

pytestmark = [pytest.mark.anyio, pytest.mark.real]

LOCAL = "example.test/registry/busybox:1"
USER, SECRET = "alice", "s3cret-Pa55-do-not-log"


@pytest.fixture(scope="module")
def registries() -> Iterator[tuple[LocalRegistry, LocalRegistry]]:
    """An open registry and one behind htpasswd basic auth, both plain HTTP."""
    reason = registry_problem()
    if reason is not None:
        pytest.skip(reason)
    open_registry = LocalRegistry()
    try:
        authed = LocalRegistry(user=USER, password=SECRET)
        try:
            yield open_registry, authed
        finally:
            authed.close()
    finally:
        open_registry.close()


@pytest.fixture
async def client(
    real: RealContainerd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Client]:
    # No Docker config of the machine's answers for these tests.
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    async with Client(real.daemon.address, namespace=new_namespace(), timeout=30) as c:
        (await c.import_image(io.BytesIO(build_pause_archive(LOCAL)), unpack=False))
        yield c


def leases(real: RealContainerd, client: Client) -> list[str]:
    return ctr_ids(real, client.namespace, "leases")


async def test_push_then_pull_by_tag_and_digest_with_progress(
    real: RealContainerd, client: Client, registries: tuple[LocalRegistry, LocalRegistry]
) -> None:
    registry, _ = registries
    ref = f"{registry.host}/test/busybox:1"
    pushed: list[PullProgress] = []

    async def on_push(step: PullProgress) -> None:
        pushed.append(step)

    await client.push(ref, source=LOCAL, plain_http=True, progress=on_push)
    assert any(s.event == f"Completed push to OCI Registry ({ref})" for s in pushed)
    local = await client.get_image(LOCAL)
    await client.delete_image(LOCAL, sync=True)
    assert await client.list_images() == []

    steps: list[PullProgress] = []

    async def on_pull(step: PullProgress) -> None:
        steps.append(step)

    image = await client.pull(ref, plain_http=True, progress=on_pull)
    assert (image.name, image.target.digest) == (ref, local.target.digest)
    # Every blob (manifest, config, layer) is reported to its completion.
    blobs = {s.name for s in steps if s.name.startswith(("layer-", "config-", "manifest-"))}
    assert {b.split("-", 1)[0] for b in blobs} == {"layer", "config", "manifest"}
    for name in blobs:
        last = [s for s in steps if s.name == name][-1]
        assert last.event in pulled_blob_ends(real.daemon.version, name.split("-", 1)[0])
        assert last.progress == last.total > 0
    assert any(s.event == "saved" and s.name == ref for s in steps)

    container = await client.new_container("pulled", image=ref)
    try:
        task = await container.new_task()
        await task.start()
        done = await task.run("sh", "-c", "echo pulled")
        assert (done.returncode, done.stdout) == (0, b"pulled\n")
    finally:
        await container.delete(force=True)

    by_digest = f"{registry.host}/test/busybox@{local.target.digest}"
    events = [step async for step in client.pull_events(by_digest, plain_http=True)]
    assert (await client.get_image(by_digest)).target == image.target
    assert any(e.event == "saved" and e.name == by_digest for e in events)
    assert leases(real, client) == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_pull_failures_are_typed_and_leave_nothing(
    real: RealContainerd, client: Client, registries: tuple[LocalRegistry, LocalRegistry]
) -> None:
    registry, _ = registries
    await client.delete_image(LOCAL)
    for ref in (f"{registry.host}/test/busybox:nope", f"{registry.host}/test/absent:1"):
        with pytest.raises(NotFoundError, match="not found"):
            await client.pull(ref, plain_http=True)
    unreachable = f"127.0.0.1:{_closed_port()}/test/busybox:1"
    with pytest.raises(UnavailableError, match=r"registry of 127\.0\.0\.1:\d+/test/busybox:1"):
        await client.pull(unreachable, plain_http=True, timeout=20)
    assert await client.list_images() == []
    assert leases(real, client) == []


async def test_credentials_as_a_pair_a_callback_or_the_docker_config(
    client: Client,
    registries: tuple[LocalRegistry, LocalRegistry],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    _, registry = registries
    ref = f"{registry.host}/test/busybox:1"
    with pytest.raises(UnauthenticatedError, match="401 Unauthorized"):
        await client.push(ref, source=LOCAL, plain_http=True)
    await client.push(ref, source=LOCAL, plain_http=True, credentials=(USER, SECRET))

    wrong = "not-the-" + SECRET
    with pytest.raises(UnauthenticatedError) as refused:
        await client.pull(ref, plain_http=True, credentials=(USER, wrong))
    assert refused.value.message.startswith(f"registry refused the credentials for {ref}")
    shown = [str(refused.value), repr(refused.value), repr(refused.value.__cause__)]
    assert not any(wrong in text or SECRET in text for text in shown)

    asked: list[str] = []

    async def answer(host: str) -> Credentials | None:
        asked.append(host)
        return Credentials(USER, SECRET)

    image = await client.pull(ref, plain_http=True, credentials=answer)
    assert image.name == ref
    assert asked == [registry.host]
    await client.delete_image(ref)

    config = tmp_path / "docker"
    config.mkdir()
    token = base64.b64encode(f"{USER}:{SECRET}".encode()).decode()
    (config / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": token}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    assert (await client.pull(ref, plain_http=True)).name == ref

    assert SECRET not in repr(Credentials(USER, SECRET))
    assert SECRET not in caplog.text
    assert wrong not in caplog.text


async def test_a_stalled_registry_fails_within_the_deadline_and_a_cancelled_pull_ends(
    real: RealContainerd, client: Client
) -> None:
    """A registry that accepts connections and never answers: the pull's deadline holds,
    the transfer is cancelled on the daemon, and a cancelled pull ends the same way."""
    stalled: list[asyncio.StreamWriter] = []
    arrived = asyncio.Event()

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stalled.append(writer)
        arrived.set()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ref = f"127.0.0.1:{port}/test/busybox:1"
    before = asyncio.all_tasks()
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(DeadlineExceededError, match="did not finish within 2"):
            await client.pull(ref, plain_http=True, timeout=2)
        assert asyncio.get_running_loop().time() - started < 5
        arrived.clear()
        pending = asyncio.ensure_future(client.pull(ref, plain_http=True, timeout=None))
        await arrived.wait()  # the daemon is waiting on the registry
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
    finally:
        server.close()
        for writer in stalled:
            writer.close()
        await server.wait_closed()
    assert [t for t in asyncio.all_tasks() - before if not t.done()] == []
    await until(lambda: leases(real, client) == [], 10)
    assert [i.name for i in await client.list_images()] == [LOCAL]


async def test_a_multi_platform_index_gives_the_hosts_platform_unless_told(
    real: RealContainerd, client: Client, registries: tuple[LocalRegistry, LocalRegistry]
) -> None:
    registry, _ = registries
    host, other = (
        host_platform(),
        Platform("linux", "arm64" if go_arch()[0] != "arm64" else "amd64"),
    )
    name = "example.test/registry/multi:1"
    (index,) = await client.import_image(
        io.BytesIO(multi_platform_archive(name, [host.architecture, other.architecture])),
        unpack=False,
    )
    assert index.target.media_type == "application/vnd.oci.image.index.v1+json"
    ref = f"{registry.host}/test/multi:1"
    await client.push(ref, source=name, plain_http=True)
    await client.delete_image(name, sync=True)

    pulled = await client.pull(ref, plain_http=True)
    assert pulled.target.digest == index.target.digest
    container = await client.new_container("multi", image=ref)
    try:
        task = await container.new_task()
        await task.start()
        assert (await task.run("sh", "-c", "echo host")).stdout == b"host\n"
    finally:
        await container.delete(force=True)

    # The other platform's content was not fetched: an export of it fails, then a pull of
    # that platform alone (no unpack: it cannot run here) brings it.
    with pytest.raises(NotFoundError):
        await client.export_image(ref, io.BytesIO(), platforms=[other])
    await client.pull(ref, plain_http=True, platforms=[other], unpack=False)
    assert await client.export_image(ref, io.BytesIO(), platforms=[other]) > 0

    # containerd 2.1.9 answers a pull of a platform the index lacks with success, saving
    # the index alone: the client checks, names what the index has, and leaves nothing.
    missing = Platform("linux", "s390x")
    names = rf"{host.os}/{host.architecture}, {other.os}/{other.architecture}"
    fresh = f"{registry.host}/test/multi@{index.target.digest}"
    for name in (fresh, ref):
        with pytest.raises(
            NotFoundError, match=rf"no manifest for linux/s390x: its index has {names}$"
        ):
            await client.pull(name, plain_http=True, platforms=[missing], unpack=False)
    assert {i.name for i in await client.list_images()} == {LOCAL, ref}
    assert (await client.get_image(ref)).target == pulled.target
    assert leases(real, client) == []


async def _under_a_pty(*args: str) -> tuple[int, str]:
    """Run ``sandboxctl ARGS`` with stderr on a pseudo-terminal; its code and what it drew."""
    primary, secondary = os.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sandboxclient", *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=secondary,
        )  # fmt: skip
    finally:
        os.close(secondary)
    drawn = bytearray()
    loop = asyncio.get_running_loop()
    while True:
        try:
            chunk = await loop.run_in_executor(None, os.read, primary, 65536)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    os.close(primary)
    await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, drawn.decode(errors="replace")


async def test_cli_pull_draws_live_progress_on_a_terminal_and_lines_without(
    real: RealContainerd, client: Client, registries: tuple[LocalRegistry, LocalRegistry]
) -> None:
    registry, _ = registries
    ref = f"{registry.host}/test/cli:1"
    await client.push(ref, source=LOCAL, plain_http=True)
    await client.delete_image(LOCAL, sync=True)  # so that every blob is fetched
    flags = ("--address", real.daemon.address, "--namespace", client.namespace)
    code, drawn = await _under_a_pty(*flags, "images", "pull", "--plain-http", ref)
    assert code == 0, drawn
    # Redrawn in place: the cursor goes up and lines are erased.
    assert "\x1b[2K" in drawn
    assert "\x1b[1A" in drawn
    final = [line for line in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn).splitlines() if line]
    rows = {line.split()[0]: line for line in final if line.split()}
    blobs = [name for name in rows if name.startswith(("layer-", "config-", "manifest-"))]
    assert {b.split("-", 1)[0] for b in blobs} == {"layer", "config", "manifest"}
    for blob in blobs:
        ends = pulled_blob_ends(real.daemon.version, blob.split("-", 1)[0])
        assert rows[blob].split()[1] in ends, final

    await client.delete_image(ref, sync=True)
    done = await sandboxctl(*flags, "images", "pull", "--plain-http", ref)
    assert done.code == 0, done
    assert "\x1b" not in done.err
    lines = tuple(f"{e} layer-sha256:" for e in pulled_blob_ends(real.daemon.version, "layer"))
    assert any(line.startswith(lines) for line in done.err.splitlines()), done.err
    assert leases(real, client) == []
