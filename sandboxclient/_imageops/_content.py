"""An image's content, read from containerd's content store through the Content service:
its index, manifest and config (Go's ``images.Platforms``, ``Image.Size`` and
``Image.Config``).

Everything read is checked before use, as content a registry or an archive put there: a blob
is read only up to its descriptor's size (and at most :data:`MAX_BLOB`), must match its
digest, and must be the JSON its media type says; an index nests at most :data:`MAX_DEPTH`
deep. What fails a check is an InvalidArgumentError or a DataLossError naming the image and
the blob; content the store lacks (a platform that was not pulled) a NotFoundError.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Protocol

from .._facts._golang import go_quote
from .._image_models import Descriptor, Image, ImageConfig
from .._models import Platform
from .._plumbing._connection import Connection, Timeout
from .._wire._pb import content_pb
from ..errors import DataLossError, InvalidArgumentError, NotFoundError
from ._platforms import host_platform, platform_matches, platform_text

__all__ = ("MAX_BLOB", "MAX_DEPTH", "BlobSource", "ContentStore")

MAX_BLOB: Final = 4 * 1024 * 1024
"""The largest index, manifest or config read (a registry's manifest limit)."""
MAX_DEPTH: Final = 4
"""How deep indexes may nest in one image."""
_MAX_SIZE: Final = 2**63 - 1

INDEX_TYPES: Final = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)
MANIFEST_TYPES: Final = frozenset(
    {
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    }
)


@dataclass(frozen=True, slots=True)
class _Entry:
    """A descriptor found in an index or manifest, with the platform the index gives it."""

    descriptor: Descriptor
    platform: Platform | None = None


class BlobSource(Protocol):
    """Where blobs are read from: the Content service, or the stand-in's own store."""

    async def read_blob(self, digest: str, size: int) -> bytes:
        """Blob ``digest``: at most ``size`` + 1 bytes of it (more is refused by the
        caller); NotFoundError when there is none."""
        ...


class _ContentService:
    """Blobs read through containerd's Content service on one connection."""

    def __init__(self, connection: Connection, timeout: Timeout) -> None:
        self._connection = connection
        self._timeout = timeout

    async def read_blob(self, digest: str, size: int) -> bytes:
        stub = self._connection.stub(content_pb.ContentStub)
        request = content_pb.ReadContentRequest(digest=digest)
        data = bytearray()
        async for chunk in self._connection.stream(stub.read, request, self._timeout):
            data += chunk.data
            if len(data) > size:
                break
        return bytes(data)


class ContentStore:
    """Reads images' content on one connection (an :class:`~.ImageContent`), or from
    ``source`` (the stand-in reads its own store through it)."""

    def __init__(
        self,
        connection: Connection | None = None,
        *,
        timeout: Timeout = 30.0,
        source: BlobSource | None = None,
    ) -> None:
        if source is None:
            if connection is None:
                raise TypeError("ContentStore needs a connection or a source")
            source = _ContentService(connection, timeout)
        self._source = source

    async def read(self, name: str, descriptor: Descriptor) -> bytes:
        """The blob ``descriptor`` names, checked against its size and digest."""
        what = f"image {go_quote(name)}: {descriptor.media_type or 'blob'} {descriptor.digest}"
        if not 0 <= descriptor.size <= MAX_BLOB:
            raise InvalidArgumentError(
                f"{what}: size {descriptor.size} is outside 0..{MAX_BLOB}, refused"
            )
        algorithm, _, expected = descriptor.digest.partition(":")
        if algorithm != "sha256" or len(expected) != 64:
            raise InvalidArgumentError(f"{what}: not a sha256 digest")
        try:
            data = await self._source.read_blob(descriptor.digest, descriptor.size)
        except NotFoundError as exc:
            raise NotFoundError(
                f"{what}: not in the content store (not pulled for this platform?)",
                status=exc.status,
            ) from exc
        if len(data) > descriptor.size:
            raise DataLossError(f"{what}: longer than its {descriptor.size} bytes")
        if len(data) != descriptor.size or hashlib.sha256(data).hexdigest() != expected:
            raise DataLossError(f"{what}: content does not match its descriptor")
        return data

    async def read_json(self, name: str, descriptor: Descriptor) -> dict[str, Any]:
        """The blob ``descriptor`` names, checked, as a JSON object."""
        return await self._json(name, descriptor)

    async def manifest_for(
        self, name: str, target: Descriptor, want: Platform | None
    ) -> tuple[list[Descriptor], Descriptor]:
        """The indexes walked down to the manifest for ``want`` (this host's platform if
        None) and that manifest; NotFoundError naming the platforms there are."""
        return await self._manifest_for(name, target, want)

    async def children(
        self, name: str, index: Descriptor
    ) -> list[tuple[Descriptor, Platform | None]]:
        """The descriptors an index lists, each with the platform it names (or None)."""
        return [(entry.descriptor, entry.platform) for entry in await self._children(name, index)]

    async def parts(
        self, name: str, manifest: Descriptor
    ) -> tuple[Descriptor, list[Descriptor], list[str]]:
        """A manifest's config and layers, and its config's ``rootfs.diff_ids`` (one per
        layer)."""
        raw = await self._json(name, manifest)
        config, layers = raw.get("config"), raw.get("layers", [])
        if not isinstance(config, Mapping) or not isinstance(layers, list):
            raise InvalidArgumentError(
                f"image {go_quote(name)}: manifest {manifest.digest} has no config or its "
                "layers are not a list"
            )
        config_desc = _entry(name, config).descriptor
        layer_descs = [_entry(name, d).descriptor for d in layers]
        rootfs = (await self._json(name, config_desc)).get("rootfs")
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, Mapping) else None
        if (
            not isinstance(diff_ids, list)
            or not all(isinstance(d, str) for d in diff_ids)
            or len(diff_ids) != len(layer_descs)
        ):
            raise InvalidArgumentError(
                f"image {go_quote(name)}: config {config_desc.digest} has no rootfs.diff_ids "
                "matching its manifest's layers"
            )
        return config_desc, layer_descs, list(diff_ids)

    async def _json(self, name: str, descriptor: Descriptor) -> dict[str, Any]:
        blob = await self.read(name, descriptor)
        try:
            value = json.loads(blob)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise InvalidArgumentError(
                f"image {go_quote(name)}: {descriptor.digest} is not a JSON object"
            )
        return value

    async def _children(self, name: str, index: Descriptor) -> list[_Entry]:
        raw = (await self._json(name, index)).get("manifests")
        if not isinstance(raw, list):
            raise InvalidArgumentError(
                f"image {go_quote(name)}: index {index.digest} has no manifests list"
            )
        return [_entry(name, item) for item in raw]

    async def platforms(self, image: Image) -> tuple[Platform, ...]:
        """The platforms of ``image``, as Go's ``images.Platforms`` lists them."""
        return await self.platforms_of(image.name, image.target)

    async def platforms_of(self, name: str, target: Descriptor) -> tuple[Platform, ...]:
        """The platforms of content ``target`` (of image ``name``)."""
        found: list[Platform] = []
        await self._platforms(name, target, found, 0)
        return tuple(dict.fromkeys(found))

    async def _platforms(
        self, name: str, target: Descriptor, found: list[Platform], depth: int
    ) -> None:
        if target.media_type in INDEX_TYPES:
            _check_depth(name, depth)
            for child in await self._children(name, target):
                if child.platform is None:
                    await self._platforms(name, child.descriptor, found, depth + 1)
                elif "unknown" not in (child.platform.os, child.platform.architecture):
                    found.append(child.platform)
        elif target.media_type in MANIFEST_TYPES:
            config = await self._config_blob(name, target)
            found.append(_config_platform(name, config))
        else:
            raise _unsupported(name, target)

    async def _manifest(
        self, name: str, target: Descriptor, want: Platform, depth: int = 0
    ) -> tuple[list[Descriptor], Descriptor] | None:
        """The descriptors walked down to ``want``'s manifest and that manifest, as Go's
        ``images.Manifest`` finds it: entries naming a matching platform first, then those
        naming none (a manifest among those only if its config's platform matches)."""
        if target.media_type in MANIFEST_TYPES:
            if depth == 0 or await self._config_matches(name, target, want):
                return [], target
            return None
        if target.media_type not in INDEX_TYPES:
            raise _unsupported(name, target)
        _check_depth(name, depth)
        children = await self._children(name, target)
        candidates = [c for c in children if c.platform and platform_matches(c.platform, want)]
        candidates += [c for c in children if c.platform is None]
        for child in candidates:
            found = await self._manifest(name, child.descriptor, want, depth + 1)
            if found is not None:
                return [target, *found[0]], found[1]
        return None

    async def _manifest_for(
        self, name: str, target: Descriptor, want: Platform | None
    ) -> tuple[list[Descriptor], Descriptor]:
        want = want or host_platform()
        found = await self._manifest(name, target, want)
        if found is None:
            listed = [platform_text(p) for p in await self.platforms_of(name, target)]
            raise NotFoundError(
                f"image {go_quote(name)} has no manifest for {platform_text(want)}: "
                f"its index has {', '.join(listed) or 'none'}"
            )
        return found

    async def require(self, image: Image, platforms: list[Platform]) -> None:
        """NotFoundError naming the first of ``platforms`` that ``image`` (an index) has no
        manifest for, and the platforms it has; an image that is one manifest passes."""
        if image.target.media_type not in INDEX_TYPES:
            return
        for platform in platforms:
            await self._manifest_for(image.name, image.target, platform)

    async def _config_matches(self, name: str, manifest: Descriptor, want: Platform) -> bool:
        config = await self._config_blob(name, manifest)
        return platform_matches(_config_platform(name, config), want)

    async def _config_blob(self, name: str, manifest: Descriptor) -> dict[str, Any]:
        raw = (await self._json(name, manifest)).get("config")
        if not isinstance(raw, Mapping):
            raise InvalidArgumentError(
                f"image {go_quote(name)}: manifest {manifest.digest} has no config"
            )
        return await self._json(name, _entry(name, raw).descriptor)

    async def size(self, image: Image, platform: Platform | None) -> int:
        """Go's ``Image.Size``: the index(es), the platform's manifest, config and layers."""
        walked, manifest_desc = await self._manifest_for(image.name, image.target, platform)
        manifest = await self._json(image.name, manifest_desc)
        parts = [*walked, manifest_desc]
        config, layers = manifest.get("config"), manifest.get("layers", [])
        if not isinstance(config, Mapping) or not isinstance(layers, list):
            raise InvalidArgumentError(
                f"image {go_quote(image.name)}: manifest {manifest_desc.digest} has no "
                "config or its layers are not a list"
            )
        parts += [_entry(image.name, d).descriptor for d in (config, *layers)]
        total = sum(d.size for d in parts)
        if total > _MAX_SIZE:
            raise InvalidArgumentError(f"image {go_quote(image.name)}: sizes add up past int64")
        return total

    async def config(self, image: Image, platform: Platform | None) -> ImageConfig:
        """The config of ``image``'s manifest for ``platform``."""
        _, manifest = await self._manifest_for(image.name, image.target, platform)
        config = await self._config_blob(image.name, manifest)
        return _image_config(image.name, config)


def _check_depth(name: str, depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise InvalidArgumentError(
            f"image {go_quote(name)}: indexes nest deeper than {MAX_DEPTH}, refused"
        )


def _unsupported(name: str, target: Descriptor) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"image {go_quote(name)}: unsupported media type {go_quote(target.media_type)}"
    )


def _string(name: str, raw: Mapping[str, Any], key: str, where: str) -> str:
    value = raw.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgumentError(f"image {go_quote(name)}: {where}.{key} is not a string")
    return value


def _entry(name: str, raw: object) -> _Entry:
    if not isinstance(raw, Mapping):
        raise InvalidArgumentError(f"image {go_quote(name)}: a descriptor is not an object")
    digest, size = raw.get("digest"), raw.get("size")
    if not isinstance(digest, str) or type(size) is not int or not 0 <= size <= _MAX_SIZE:
        raise InvalidArgumentError(
            f"image {go_quote(name)}: descriptor without a valid digest and size"
        )
    media_type = _string(name, raw, "mediaType", "descriptor")
    platform = raw.get("platform")
    parsed = None
    if platform is not None:
        if not isinstance(platform, Mapping):
            raise InvalidArgumentError(f"image {go_quote(name)}: a platform is not an object")
        parsed = Platform(
            _string(name, platform, "os", "platform"),
            _string(name, platform, "architecture", "platform"),
            _string(name, platform, "variant", "platform"),
            _string(name, platform, "os.version", "platform"),
        )
    return _Entry(Descriptor(media_type, digest, size), parsed)


def _config_platform(name: str, config: Mapping[str, Any]) -> Platform:
    return Platform(
        _string(name, config, "os", "config"),
        _string(name, config, "architecture", "config"),
        _string(name, config, "variant", "config"),
    )


def _strings(name: str, raw: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = raw.get(key)
    if value is None:
        return ()
    if isinstance(value, Mapping):  # ExposedPorts and Volumes are sets as JSON objects
        value = sorted(value)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgumentError(f"image {go_quote(name)}: config.{key} is not a list of strings")
    return tuple(value)


def _image_config(name: str, config: Mapping[str, Any]) -> ImageConfig:
    raw = config.get("config")
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise InvalidArgumentError(f"image {go_quote(name)}: config.config is not an object")
    labels = raw.get("Labels") or {}
    if not isinstance(labels, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise InvalidArgumentError(
            f"image {go_quote(name)}: config.Labels does not map strings to strings"
        )
    return ImageConfig(
        platform=_config_platform(name, config),
        entrypoint=_strings(name, raw, "Entrypoint"),
        cmd=_strings(name, raw, "Cmd"),
        env=_strings(name, raw, "Env"),
        working_dir=_string(name, raw, "WorkingDir", "config"),
        user=_string(name, raw, "User", "config"),
        exposed_ports=_strings(name, raw, "ExposedPorts"),
        volumes=_strings(name, raw, "Volumes"),
        labels=MappingProxyType(dict(labels)),
        stop_signal=_string(name, raw, "StopSignal", "config"),
    )
