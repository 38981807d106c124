"""An image's platforms, size and config, read from the content store: what the client
makes of an index, manifests and configs, including content that lies about itself."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sandboxclient import (
    Client,
    DataLossError,
    Descriptor,
    Image,
    InvalidArgumentError,
    NotFoundError,
    Platform,
)
from sandboxclient._imageops._content import MAX_BLOB, MAX_DEPTH
from sandboxclient._imageops._platforms import host_platform
from tests.support.content import ContentServer, blob_entry, json_blob

pytestmark = pytest.mark.anyio

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
HOST = host_platform()
OTHER = Platform("linux", "arm64" if HOST.architecture != "arm64" else "amd64")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ContentServer]:
    async with ContentServer(tmp_path) as s:
        yield s


@pytest.fixture
async def client(server: ContentServer) -> AsyncIterator[Client]:
    async with Client(server.address, namespace="default", timeout=10) as c:
        yield c


def manifest_for(
    server: ContentServer, platform: Platform, config: dict[str, Any], layers: list[bytes]
) -> bytes:
    """Store a config and layers for ``platform`` and return their manifest (also stored)."""
    blob = json_blob({"os": platform.os, "architecture": platform.architecture, **config})
    server.add(blob)
    for layer in layers:
        server.add(layer)
    manifest = json_blob(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": blob_entry(CONFIG, blob),
            "layers": [blob_entry(LAYER, layer) for layer in layers],
        }
    )
    server.add(manifest)
    return manifest


def platform_json(p: Platform) -> dict[str, str]:
    return {"os": p.os, "architecture": p.architecture}


def index_of(server: ContentServer, name: str, entries: list[dict[str, Any]]) -> bytes:
    index = json_blob({"schemaVersion": 2, "mediaType": INDEX, "manifests": entries})
    server.name(name, INDEX, server.add(index), len(index))
    return index


FULL_CONFIG = {
    "config": {
        "Entrypoint": ["/bin/app"],
        "Cmd": ["--serve"],
        "Env": ["PATH=/bin", "MODE=prod"],
        "WorkingDir": "/srv",
        "User": "1000:1000",
        "ExposedPorts": {"8080/tcp": {}, "53/udp": {}},
        "Volumes": {"/data": {}},
        "Labels": {"org.example": "yes"},
        "StopSignal": "SIGINT",
    },
    "rootfs": {"type": "layers", "diff_ids": []},
}


async def test_a_multi_platform_image_lists_its_platforms_sizes_and_config(
    server: ContentServer, client: Client
) -> None:
    host_manifest = manifest_for(server, HOST, FULL_CONFIG, [b"layer-1" * 100, b"layer-2"])
    other_manifest = manifest_for(server, OTHER, {}, [b"other" * 7])
    attestation = manifest_for(server, Platform("unknown", "unknown"), {}, [])
    index = index_of(
        server,
        "example.test/app:1",
        [
            blob_entry(MANIFEST, host_manifest, platform=platform_json(HOST)),
            blob_entry(MANIFEST, other_manifest, platform=platform_json(OTHER)),
            blob_entry(
                MANIFEST, attestation, platform={"os": "unknown", "architecture": "unknown"}
            ),
        ],
    )
    image = await client.get_image("example.test/app:1")
    assert await image.platforms() == (HOST, OTHER)

    host_config = json_blob({"os": HOST.os, "architecture": HOST.architecture, **FULL_CONFIG})
    expected = len(index) + len(host_manifest) + len(host_config) + 700 + 7
    assert await image.size() == expected
    other_config = json_blob({"os": OTHER.os, "architecture": OTHER.architecture})
    assert await image.size(OTHER) == len(index) + len(other_manifest) + len(other_config) + 35

    config = await image.config()
    assert config.platform == HOST
    assert (config.entrypoint, config.cmd, config.args) == (
        ("/bin/app",),
        ("--serve",),
        ("/bin/app", "--serve"),
    )
    assert config.env == ("PATH=/bin", "MODE=prod")
    assert (config.working_dir, config.user, config.stop_signal) == ("/srv", "1000:1000", "SIGINT")
    assert config.exposed_ports == ("53/udp", "8080/tcp")
    assert config.volumes == ("/data",)
    assert dict(config.labels) == {"org.example": "yes"}
    assert (await image.config(OTHER)).entrypoint == ()

    # A platform the index lacks is named, with what the index has.
    with pytest.raises(NotFoundError, match=r"no manifest for linux/s390x: its index has ") as e:
        await image.config(Platform("linux", "s390x"))
    assert f"{HOST.os}/{HOST.architecture}" in str(e.value)
    # Equality is the record's: the reader is left out.
    assert image == Image(
        image.name, image.target, image.labels, image.created_at, image.updated_at
    )


async def test_a_single_manifest_image_takes_its_platform_from_its_config(
    server: ContentServer, client: Client
) -> None:
    manifest = manifest_for(server, HOST, FULL_CONFIG, [b"only"])
    server.name("example.test/one:1", MANIFEST, server.add(manifest), len(manifest))
    image = await client.get_image("example.test/one:1")
    assert await image.platforms() == (HOST,)
    assert (await image.config()).exposed_ports == ("53/udp", "8080/tcp")


async def test_content_the_store_lacks_is_not_found(server: ContentServer, client: Client) -> None:
    other_manifest = manifest_for(server, OTHER, {}, [])
    missing = json_blob({"not": "stored"})
    index_of(
        server,
        "example.test/partial:1",
        [
            blob_entry(MANIFEST, other_manifest, platform=platform_json(OTHER)),
            blob_entry(MANIFEST, missing, platform=platform_json(HOST)),
        ],
    )
    image = await client.get_image("example.test/partial:1")
    assert await image.platforms() == (OTHER, HOST)  # listed by the index, not read
    with pytest.raises(NotFoundError, match="not in the content store"):
        await image.config()


def lying(server: ContentServer, name: str, blob: bytes, *, size: int, digest: str) -> None:
    server.name(name, MANIFEST, digest, size)
    server.add(blob, digest=digest)


def digest_of(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()


async def test_hostile_content_gets_typed_errors(server: ContentServer, client: Client) -> None:
    manifest = manifest_for(server, HOST, {}, [])

    # A blob that is not what its digest says, or longer or shorter than its size.
    lying(server, "swapped", b"{}", size=2, digest=digest_of(b"[]"))
    lying(server, "longer", manifest, size=len(manifest) - 1, digest=digest_of(manifest))
    lying(server, "shorter", manifest, size=len(manifest) + 1, digest=digest_of(manifest))
    for name in ("swapped", "longer", "shorter"):
        image = await client.get_image(name)
        with pytest.raises(DataLossError, match=f'image {name!r}|image "{name}"'):
            await image.config()

    # A size past the bound is refused before anything is read.
    lying(server, "huge", b"", size=MAX_BLOB + 1, digest=digest_of(b"x"))
    server.reads.clear()
    with pytest.raises(InvalidArgumentError, match=r"outside 0\.\.4194304"):
        await (await client.get_image("huge")).config()
    assert server.reads == []

    # Not JSON, JSON of the wrong shape, fields of the wrong type.
    cases: dict[str, tuple[bytes, str]] = {
        "not-json": (b"\xff\x00not json", "is not a JSON object"),
        "a-list": (b"[1, 2]", "is not a JSON object"),
        "no-config": (json_blob({"layers": []}), "has no config"),
        "bad-descriptor": (
            json_blob({"config": {"digest": "sha256:" + "0" * 64, "size": -1}}),
            "descriptor without a valid digest and size",
        ),
        "bad-digest": (
            json_blob({"config": {"digest": "md5:abc", "size": 2}}),
            "not a sha256 digest",
        ),
    }
    for name, (blob, message) in cases.items():
        server.name(name, MANIFEST, server.add(blob), len(blob))
        with pytest.raises(InvalidArgumentError, match=message):
            await (await client.get_image(name)).config()

    for field, value, message in [
        ("Entrypoint", "sh -c", "config.Entrypoint is not a list of strings"),
        ("Env", [1], "config.Env is not a list of strings"),
        ("User", 0, "config.User is not a string"),
        ("Labels", {"a": 1}, "config.Labels does not map strings to strings"),
    ]:
        bad = manifest_for(server, HOST, {"config": {field: value}}, [])
        server.name(f"bad-{field}", MANIFEST, server.add(bad), len(bad))
        with pytest.raises(InvalidArgumentError, match=message):
            await (await client.get_image(f"bad-{field}")).config()

    # Indexes nested past the bound, and a media type that is no image.
    inner = index_of(server, "level-0", [blob_entry(MANIFEST, manifest)])
    for level in range(1, MAX_DEPTH + 1):
        inner = index_of(server, f"level-{level}", [blob_entry(INDEX, inner)])
    deepest = await client.get_image(f"level-{MAX_DEPTH - 1}")
    assert await deepest.platforms() == (HOST,)
    assert (await deepest.config()).platform == HOST
    with pytest.raises(InvalidArgumentError, match=f"nest deeper than {MAX_DEPTH}"):
        await (await client.get_image(f"level-{MAX_DEPTH}")).platforms()
    with pytest.raises(InvalidArgumentError, match=f"nest deeper than {MAX_DEPTH}"):
        await (await client.get_image(f"level-{MAX_DEPTH}")).config()
    server.name("layer", LAYER, server.add(b"x"), 1)
    with pytest.raises(InvalidArgumentError, match="unsupported media type"):
        await (await client.get_image("layer")).size()


async def test_a_record_made_by_hand_has_no_content_to_read() -> None:
    image = Image("example.test/x:1", Descriptor(MANIFEST, "sha256:" + "a" * 64, 2))
    with pytest.raises(ValueError, match="has no content reader: get it from a Client"):
        await image.platforms()
    assert "content" not in repr(image)
