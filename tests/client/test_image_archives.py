"""Images in and out through the Transfer service, on a real containerd and on the stand-in:
archives built here from the host's busybox are imported, unpacked, run, exported and read
back as hostile input."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sandboxclient import (
    Client,
    DeadlineExceededError,
    InvalidArgumentError,
    NotFoundError,
    Platform,
    PullProgress,
)
from sandboxclient._imageops._platforms import host_platform
from sandboxclient._imageops._transfer import Transfers
from sandboxclient.testing._images import build_pause_archive
from tests.support.archives import rewritten, top_digest
from tests.support.backends import Backend, RealContainerd, new_namespace
from tests.support.helpers import tasks_since, until
from tests.support.images import multi_platform_archive

pytestmark = pytest.mark.anyio

IMAGE = "example.test/images/busybox:1"
MAX_EXPORT = 16 * 1024 * 1024  # a busybox image is about 1 MiB: more is an attack


def read_archive(data: bytes) -> dict[str, bytes]:
    """An exported archive's regular files, read as hostile input: bounded, every name
    relative and inside, no links or devices."""
    assert len(data) <= MAX_EXPORT
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar:
            name = member.name
            assert not name.startswith("/"), name
            assert ".." not in Path(name).parts, name
            assert member.isdir() or member.isfile(), (name, member.type)
            if member.isfile():
                assert member.size <= MAX_EXPORT
                extracted = tar.extractfile(member)
                assert extracted is not None
                files[name] = extracted.read()
    return files


def blob(files: dict[str, bytes], digest: str) -> bytes:
    algorithm, _, hexdigest = digest.partition(":")
    assert algorithm == "sha256"
    data = files[f"blobs/sha256/{hexdigest}"]
    assert hashlib.sha256(data).hexdigest() == hexdigest
    return data


async def test_an_imported_archive_is_unpacked_runs_and_exports_back(
    backend: Backend, client: Client, tmp_path: Path
) -> None:
    original = build_pause_archive(IMAGE)
    archive = tmp_path / "busybox.tar"
    archive.write_bytes(original)
    steps: list[PullProgress] = []

    async def progress(step: PullProgress) -> None:
        steps.append(step)

    (image,) = await client.import_image(archive, progress=progress)
    assert image.name == IMAGE
    assert image.target.media_type == "application/vnd.oci.image.manifest.v1+json"
    assert [i.name for i in await client.list_images()] == [IMAGE]
    assert [s.event for s in steps] == ["Importing", "saved", "Completed import"]
    assert steps[1].name == IMAGE
    assert steps[1].descriptor is not None
    assert steps[1].descriptor.digest == image.target.digest
    assert backend.leases() == []

    # Unpacked: a container runs from it.
    container = await client.new_container("from-import", image=IMAGE)
    try:
        task = await container.new_task()
        await task.start()
        done = await task.run("sh", "-c", "echo imported")
        assert (done.returncode, done.stdout) == (0, b"imported\n")
    finally:
        await container.delete(force=True)

    # Exported to a path: the manifest and every blob byte for byte as imported.
    dest = tmp_path / "out" / "export.tar"
    dest.parent.mkdir()
    size = await client.export_image(IMAGE, dest)
    exported = dest.read_bytes()
    assert size == len(exported)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["export.tar"]
    files = read_archive(exported)
    ours = read_archive(original)
    index = json.loads(files["index.json"])
    (entry,) = index["manifests"]
    assert entry["digest"] == image.target.digest
    manifest = blob(files, entry["digest"])
    assert manifest == blob(ours, entry["digest"])
    for layer in json.loads(manifest)["layers"]:
        assert blob(files, layer["digest"]) == blob(ours, layer["digest"])
    assert json.loads(files["manifest.json"])[0]["RepoTags"] == [IMAGE]

    # ... and to a file object, the same archive.
    out = io.BytesIO()
    assert await client.export_image([IMAGE], out) == size
    assert read_archive(out.getvalue()).keys() == files.keys()
    assert backend.leases() == []


async def test_gzip_archives_from_a_file_object_or_an_async_iterator(
    client: Client,
) -> None:
    """Compressed archives stream in pieces; a tag-only name gets the prefix."""
    compressed = gzip.compress(build_pause_archive("v1"))

    async def pieces() -> AsyncIterator[bytes]:
        for at in range(0, len(compressed), 10_000):  # sizes unaligned with any window
            yield compressed[at : at + 10_000]

    (first,) = await client.import_image(io.BytesIO(compressed), name="example.test/gz")
    assert first.name == "example.test/gz:v1"
    (second,) = await client.import_image(pieces(), name="example.test/stream", unpack=False)
    assert second.name == "example.test/stream:v1"
    assert second.target == first.target


async def test_a_corrupt_or_truncated_archive_is_refused_and_leaves_nothing(
    backend: Backend, client: Client
) -> None:
    with pytest.raises(InvalidArgumentError, match="not a valid tar"):
        await client.import_image(io.BytesIO(b"garbage" * 4096))
    whole = build_pause_archive(IMAGE)
    with pytest.raises(InvalidArgumentError):
        await client.import_image(io.BytesIO(whole[: len(whole) // 2]))
    with pytest.raises(InvalidArgumentError, match="gzip"):
        await client.import_image(io.BytesIO(gzip.compress(whole)[:-100]))
    assert await client.list_images() == []
    assert backend.leases() == []


@pytest.mark.real
async def test_a_collection_between_a_transfer_s_streams_and_its_call_takes_nothing(
    real: RealContainerd, monkeypatch: pytest.MonkeyPatch
) -> None:
    # containerd's collector keeps an unleased stream only in a namespace it has records
    # in: a transfer in a fresh one lost its streams to a collection run between their
    # opening and its call, and answered NOT_FOUND.
    call = Transfers._call
    daemon, elsewhere = real.daemon, new_namespace()

    async def after_a_collection(self: Transfers, *args: Any) -> None:
        daemon.ctr("leases", "create", "--id", "collect", namespace=elsewhere)
        # Deleted with --sync: the call returns once a collection has run.
        await asyncio.to_thread(
            daemon.ctr, "leases", "delete", "--sync", "collect", namespace=elsewhere
        )
        await call(self, *args)

    monkeypatch.setattr(Transfers, "_call", after_a_collection)
    namespace = new_namespace()
    try:
        async with Client(daemon.address, namespace=namespace) as client:
            with pytest.raises(InvalidArgumentError, match="not a valid tar"):
                await client.import_image(io.BytesIO(b"garbage" * 4096))
            assert await client.list_images() == []
        assert daemon.ctr("leases", "ls", "-q", namespace=namespace).stdout.split() == []
    finally:
        for name in (namespace, elsewhere):
            daemon.ctr("namespaces", "remove", name, check=False)


async def test_a_blob_that_is_not_what_its_name_says_is_not_imported(
    backend: Backend, client: Client
) -> None:
    good = build_pause_archive(IMAGE)
    manifest = top_digest(good)
    lying = rewritten(good, {f"blobs/sha256/{manifest.removeprefix('sha256:')}": b"{}"})
    with pytest.raises(NotFoundError) as refused:
        await client.import_image(io.BytesIO(lying))
    assert refused.value.message == f"content digest {manifest}: not found"
    assert await client.list_images() == []
    assert backend.leases() == []


async def test_a_missing_image_exports_nothing(client: Client, tmp_path: Path) -> None:
    dest = tmp_path / "never.tar"
    with pytest.raises(NotFoundError):
        await client.export_image("example.test/missing:1", dest)
    assert os.listdir(tmp_path) == []


async def test_a_cancelled_or_timed_out_import_leaves_no_lease_or_task(
    backend: Backend, client: Client
) -> None:
    whole = build_pause_archive(IMAGE)
    asked_again = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield whole[:100_000]
        asked_again.set()
        await asyncio.Event().wait()  # never more
        yield b""

    before = asyncio.all_tasks()
    pending = asyncio.ensure_future(client.import_image(stalls()))
    await asked_again.wait()
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    with pytest.raises(DeadlineExceededError, match=r"did not finish within 0\.5 s"):
        await client.import_image(stalls(), timeout=0.5)
    assert tasks_since(before) == set()
    # The daemon drops the transfer's lease as its context ends.
    await until(lambda: backend.leases() == [], 10)
    assert await client.list_images() == []


async def test_an_images_platforms_size_and_config_come_from_its_content(
    client: Client,
) -> None:
    host = host_platform()
    other = Platform("linux", "arm64" if host.architecture != "arm64" else "amd64")
    name = "example.test/images/multi:1"
    archive = multi_platform_archive(name, [host.architecture, other.architecture])
    (image,) = await client.import_image(io.BytesIO(archive), unpack=False)
    assert await image.platforms() == (host, other)

    # The size is the index's, the platform's manifest's, config's and layer's, as stored.
    files = read_archive(archive)
    (top,) = json.loads(files["index.json"])["manifests"]
    index = blob(files, top["digest"])
    for platform in (host, other):
        (entry,) = [
            m
            for m in json.loads(index)["manifests"]
            if m["platform"]["architecture"] == platform.architecture
        ]
        manifest = json.loads(blob(files, entry["digest"]))
        parts = [manifest["config"], *manifest["layers"]]
        assert await image.size(platform) == len(index) + entry["size"] + sum(
            len(blob(files, p["digest"])) for p in parts
        )
        config = await image.config(platform)
        assert config.platform == Platform("linux", platform.architecture)
        assert config.args == ("/bin/sleep", "infinity")
        assert config.env == ("PATH=/bin",)
    with pytest.raises(NotFoundError, match=r"no manifest for linux/s390x: its index has linux/"):
        await image.config(Platform("linux", "s390x"))

    # An export holds the index, and of its manifests only the host's unless asked for all.
    entries = {m["platform"]["architecture"]: m["digest"] for m in json.loads(index)["manifests"]}
    for all_platforms, expected in ((False, [host]), (True, [host, other])):
        out = io.BytesIO()
        await client.export_image(name, out, all_platforms=all_platforms)
        exported = read_archive(out.getvalue())
        assert blob(exported, top["digest"]) == index
        held = [
            p for p in (host, other) if f"blobs/sha256/{entries[p.architecture][7:]}" in exported
        ]
        assert held == expected


async def test_an_unpack_into_an_unknown_snapshotter_is_refused_as_by_containerd(
    backend: Backend, client: Client
) -> None:
    archive = io.BytesIO(build_pause_archive(IMAGE))
    with pytest.raises(InvalidArgumentError) as refused:
        await client.import_image(archive, snapshotter="nope")
    assert refused.value.message == (
        "unable to initialize unpacker: no unpack platforms defined: invalid argument"
    )
    assert await client.list_images() == []
    assert backend.leases() == []
