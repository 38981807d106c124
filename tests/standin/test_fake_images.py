"""The stand-in's image store as hostile clients see it: an archive whose layer reaches out
of its snapshot, or that is no OCI archive, is refused with nothing kept, and what it keeps
goes when the stand-in closes."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest
from grpclib.client import Channel

from sandboxclient import Client, InvalidArgumentError, ResourceExhaustedError
from sandboxclient._facts._wirenames import NAMESPACE_HEADER
from sandboxclient._wire._pb import snapshots_pb
from sandboxclient.testing import FakeContainerd, _archives
from sandboxclient.testing._contentstore import READ_CHUNK, BlobStore
from sandboxclient.testing._images import oci_archive
from tests.support.archives import tar_of

pytestmark = pytest.mark.anyio

NS = "images"


def exists(path: str | Path) -> bool:
    return os.path.exists(path)


def read(path: Path) -> str:
    return path.read_text()


async def test_an_archive_that_reaches_out_is_refused_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    async with FakeContainerd() as fake, Client(fake.address, namespace=NS, timeout=10) as c:
        escaping = tar_of(
            ("out", tarfile.SYMTYPE, b"", str(outside)),
            ("out/planted", tarfile.REGTYPE, b"x", ""),
        )
        with pytest.raises(InvalidArgumentError, match="failed to extract layer"):
            await c.import_image(io.BytesIO(oci_archive("example.test/b:1", escaping, {})))
        assert os.listdir(outside) == []

        docker_only = tar_of(("manifest.json", tarfile.REGTYPE, b"[]", ""))
        with pytest.raises(InvalidArgumentError, match="OCI image-layout archives only"):
            await c.import_image(io.BytesIO(docker_only))

        assert await c.list_images() == []
        assert fake.snapshot_keys(NS) == []
        assert fake.content_digests(NS) == []
        assert fake.lease_ids(NS) == []


async def test_what_the_stand_in_keeps_goes_when_it_closes() -> None:
    async with FakeContainerd() as fake, Client(fake.address, namespace=NS, timeout=10) as c:
        layer = tar_of(("etc", tarfile.DIRTYPE, b"", ""), ("etc/hi", tarfile.REGTYPE, b"hi", ""))
        await c.import_image(io.BytesIO(oci_archive("example.test/c:1", layer, {})))
        (top,) = fake.snapshot_keys(NS)
        channel = Channel(path=fake.address)
        try:
            stub = snapshots_pb.SnapshotsStub(channel, metadata={NAMESPACE_HEADER: NS})
            made = await stub.prepare(
                snapshots_pb.PrepareSnapshotRequest(snapshotter="overlayfs", key="kept", parent=top)
            )
        finally:
            channel.close()
        (mount,) = made.mounts
        assert (mount.type, mount.options) == ("bind", ["rbind", "rw"])
        assert read(Path(mount.source, "etc", "hi")) == "hi"
    assert not exists(mount.source)
    assert not exists(Path(mount.source).parents[2])  # the stand-in's directory


def _blob_archive(data: bytes, declared: int | None = None) -> bytes:
    """An OCI archive of one blob (named by its digest) and an index naming nothing."""
    name = f"blobs/sha256/{hashlib.sha256(data).hexdigest()}"
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        index = b'{"schemaVersion":2,"manifests":[]}'
        for member, content in ((name, data), ("index.json", index)):
            info = tarfile.TarInfo(member)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def _leftovers(fake: FakeContainerd) -> list[str]:
    state = fake._state_dir  # the stand-in's own directory: nothing half-written stays
    assert state is not None
    return [n for _, _, names in os.walk(state) for n in names if "part" in n]


async def test_an_archive_past_the_bound_uncompressed_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_archives, "MAX_ARCHIVE", 1024 * 1024)
    bomb = gzip.compress(_blob_archive(bytes(2 * 1024 * 1024)))  # 2 MiB of zeros: ~2 KiB
    assert len(bomb) < 64 * 1024
    async with FakeContainerd() as fake, Client(fake.address, namespace=NS, timeout=10) as c:
        with pytest.raises(ResourceExhaustedError, match="uncompressed"):
            await c.import_image(io.BytesIO(bomb))
        assert fake.content_digests(NS) == []
        assert _leftovers(fake) == []


def test_a_blob_whose_source_breaks_midway_leaves_no_partial_file(tmp_path: Path) -> None:
    class Breaking(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            if self.tell():
                raise OSError("the archive broke")
            return super().read(size)

    store = BlobStore(str(tmp_path))
    data = bytes(3 * READ_CHUNK)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with pytest.raises(OSError, match="broke"):
        store.put(NS, digest, Breaking(data), len(data))
    assert [n for _, _, names in os.walk(tmp_path) for n in names] == []
    assert not store.has(NS, digest)
