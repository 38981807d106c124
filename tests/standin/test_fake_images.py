"""The stand-in's image store as hostile clients see it: an archive that lies about its blobs
or carries a layer that reaches out of its snapshot is refused with nothing kept, and what
it keeps goes when the stand-in closes."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from grpclib.client import Channel

from sandboxclient import Client, InvalidArgumentError
from sandboxclient._wire._pb import snapshots_pb
from sandboxclient._wirenames import NAMESPACE_HEADER
from sandboxclient.errors import ContainerdError
from sandboxclient.testing import FakeContainerd
from sandboxclient.testing._images import oci_archive

pytestmark = pytest.mark.anyio

NS = "images"


def tar_of(*members: tuple[str, bytes, bytes, str]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data, link in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mode = kind, link, 0o755
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return out.getvalue()


def rewritten(archive: bytes, edit: dict[str, bytes]) -> bytes:
    """``archive`` with the files ``edit`` names given other contents (same names)."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(archive)) as source,
        tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for member in source:
            data = source.extractfile(member).read() if member.isreg() else b""  # type: ignore[union-attr]
            data = edit.get(member.name, data)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data) if member.isreg() else None)
    return out.getvalue()


def top_digest(archive: bytes) -> str:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        index = tar.extractfile("index.json")
        assert index is not None
        return str(json.loads(index.read())["manifests"][0]["digest"])


def exists(path: str | Path) -> bool:
    return os.path.exists(path)


def read(path: Path) -> str:
    return path.read_text()


async def test_an_archive_that_lies_or_reaches_out_is_refused_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    async with FakeContainerd() as fake, Client(fake.address, namespace=NS, timeout=10) as c:
        good = oci_archive("example.test/a:1", tar_of(("bin", tarfile.DIRTYPE, b"", "")), {})
        manifest = top_digest(good).removeprefix("sha256:")
        with pytest.raises(ContainerdError, match="unexpected commit digest"):
            await c.import_image(io.BytesIO(rewritten(good, {f"blobs/sha256/{manifest}": b"{}"})))

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
