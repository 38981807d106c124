"""Image records and Transfer service messages, to and from the wire.

The Transfer service takes its source and destination as Any values whose type URLs are the
bare names of ``containerd.types.transfer`` messages; what a transfer streams (an archive,
progress, credential requests) travels on Streaming streams as Any values too, named the
same way. Every Any the daemon sends is checked here before anything reads it. The
transfer modules load on first use (``_pb``), not with the client.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

import betterproto2

from .._facts._clock import to_utc
from .._image_models import Descriptor, Image, PullProgress
from .._models import Platform
from ..errors import DataLossError
from . import _pb
from ._pb import AnyPb, DescriptorPb, PlatformPb

if TYPE_CHECKING:
    from ._pb import images_pb

__all__ = (
    "DATA_TYPE_URL",
    "WINDOW_TYPE_URL",
    "auth_answer",
    "auth_request_from_any",
    "data_any",
    "data_message_header",
    "export_stream_any",
    "image_from_pb",
    "image_store_any",
    "image_to_pb",
    "import_stream_any",
    "progress_from_any",
    "registry_any",
    "stream_init_any",
    "unpack_payload",
    "window_any",
)

_PREFIX: Final = "containerd.types.transfer."
DATA_TYPE_URL: Final = _PREFIX + "Data"
WINDOW_TYPE_URL: Final = _PREFIX + "WindowUpdate"
PROGRESS_TYPE_URL: Final = _PREFIX + "Progress"
AUTH_REQUEST_TYPE_URL: Final = _PREFIX + "AuthRequest"
STREAM_INIT_TYPE_URL: Final = "containerd.services.streaming.v1.StreamInit"
_GOOGLE_PREFIX: Final = "type.googleapis.com/"
_EMPTY: Mapping[str, str] = MappingProxyType({})
# Go's zero time, which a record that never had a time carries.
_GO_ZERO_YEAR: Final = 1


def _any(type_url: str, message: betterproto2.Message) -> AnyPb:
    return AnyPb(type_url=type_url, value=bytes(message))


def _time(value: datetime | None) -> datetime | None:
    if value is None or value.year == _GO_ZERO_YEAR:
        return None
    return to_utc(value)


def descriptor_from_pb(pb: DescriptorPb | None) -> Descriptor | None:
    """The public view of a descriptor (None when absent)."""
    if pb is None:
        return None
    annotations = MappingProxyType(dict(pb.annotations)) if pb.annotations else _EMPTY
    return Descriptor(pb.media_type, pb.digest, pb.size, annotations)


def image_from_pb(pb: images_pb.Image) -> Image:
    """The public view of an image record."""
    target = descriptor_from_pb(pb.target) or Descriptor("", "", 0)
    labels = MappingProxyType(dict(pb.labels)) if pb.labels else _EMPTY
    return Image(pb.name, target, labels, _time(pb.created_at), _time(pb.updated_at))


def image_to_pb(name: str, target: Descriptor, labels: Mapping[str, str]) -> images_pb.Image:
    """An image record to create: the daemon sets its times."""
    return _pb.images_pb.Image(
        name=name,
        labels=dict(labels),
        target=DescriptorPb(
            media_type=target.media_type,
            digest=target.digest,
            size=target.size,
            annotations=dict(target.annotations),
        ),
    )


def _platform_pb(platform: Platform) -> PlatformPb:
    return PlatformPb(
        os=platform.os,
        architecture=platform.architecture,
        variant=platform.variant,
        os_version=platform.os_version,
    )


def stream_init_any(stream_id: str) -> AnyPb:
    """The first message of a Streaming stream: its id."""
    return _any(STREAM_INIT_TYPE_URL, _pb.streaming_pb.StreamInit(id=stream_id))


def data_any(chunk: bytes) -> AnyPb:
    """A chunk of a byte stream."""
    return _any(DATA_TYPE_URL, _pb.transfer_types_pb.Data(data=chunk))


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_DATA_URL_FIELD: Final = b"\x0a" + _varint(len(DATA_TYPE_URL)) + DATA_TYPE_URL.encode()


@functools.lru_cache(maxsize=8)
def data_message_header(size: int) -> bytes:
    """What goes on the wire before a ``Data`` chunk of ``size`` bytes (1 or more) to make it
    a whole gRPC message: the length prefix, then the ``Any`` and ``Data`` fields up to the
    chunk's bytes, encoded by hand as betterproto2 would (``bytes(data_any(chunk))``), so
    that a chunk is copied once on its way out and not encoded three times."""
    if size < 1:
        raise ValueError(f"a Data chunk has 1 byte or more, not {size}")
    data = b"\x0a" + _varint(size)
    value = b"\x12" + _varint(len(data) + size) + data
    body = len(_DATA_URL_FIELD) + len(value) + size
    return b"\x00" + body.to_bytes(4, "big") + _DATA_URL_FIELD + value


def window_any(update: int) -> AnyPb:
    """A grant of ``update`` more bytes to a byte stream's sender."""
    return _any(WINDOW_TYPE_URL, _pb.transfer_types_pb.WindowUpdate(update=update))


def image_store_any(
    *,
    name: str = "",
    labels: Mapping[str, str] | None = None,
    platforms: Iterable[Platform] = (),
    prefix: str = "",
    extra_names: Iterable[str] = (),
    unpack: Iterable[tuple[Platform, str]] = (),
) -> AnyPb:
    """The image store as a source or destination.

    ``name`` is the image to store (a pull) or read (a push, an export); ``extra_names``
    more images to read; ``prefix`` the name an import gives images its archive names by
    tag only (``prefix:tag``) or not at all (``prefix@digest``); ``unpack`` the platforms
    and snapshotters (empty: the platform's default) to unpack for.
    """
    references = [_pb.transfer_types_pb.ImageReference(name=n) for n in extra_names]
    if prefix:
        references.append(
            _pb.transfer_types_pb.ImageReference(
                name=prefix,
                is_prefix=True,
                allow_overwrite=True,
                add_digest=True,
                skip_named_digest=True,
            )
        )
    store = _pb.transfer_types_pb.ImageStore(
        name=name,
        labels=dict(labels or {}),
        platforms=[_platform_pb(p) for p in platforms],
        extra_references=references,
        unpacks=[
            _pb.transfer_types_pb.UnpackConfiguration(platform=_platform_pb(p), snapshotter=s)
            for p, s in unpack
        ],
    )
    return _any(_PREFIX + "ImageStore", store)


def import_stream_any(stream_id: str) -> AnyPb:
    """An archive the client sends on stream ``stream_id``."""
    return _any(
        _PREFIX + "ImageImportStream", _pb.transfer_types_pb.ImageImportStream(stream=stream_id)
    )


def export_stream_any(
    stream_id: str, *, platforms: Iterable[Platform] = (), all_platforms: bool = False
) -> AnyPb:
    """An OCI archive the daemon sends on stream ``stream_id``."""
    message = _pb.transfer_types_pb.ImageExportStream(
        stream=stream_id,
        platforms=[_platform_pb(p) for p in platforms],
        all_platforms=all_platforms,
    )
    return _any(_PREFIX + "ImageExportStream", message)


def registry_any(
    reference: str, *, auth_stream: str = "", hosts_dir: str = "", plain_http: bool = False
) -> AnyPb:
    """A registry repository as a pull's source or a push's destination."""
    resolver = _pb.transfer_types_pb.RegistryResolver(
        auth_stream=auth_stream,
        host_dir=hosts_dir,
        default_scheme="http" if plain_http else "",
    )
    registry = _pb.transfer_types_pb.OciRegistry(reference=reference, resolver=resolver)
    return _any(_PREFIX + "OCIRegistry", registry)


def _type_url(value: AnyPb) -> str:
    return value.type_url.removeprefix(_GOOGLE_PREFIX)


def _window_update(raw: bytes) -> int | None:
    """A ``WindowUpdate``'s grant read by hand when it is the usual single field of a positive
    int32 (what containerd sends, a few thousand times an import); None for anything else,
    which betterproto2 reads."""
    if raw[:1] != b"\x08":
        return None
    value = shift = 0
    for at in range(1, min(len(raw), 6)):
        byte = raw[at]
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value if at == len(raw) - 1 and value < 1 << 31 else None
    return None


def unpack_payload(value: AnyPb) -> bytes | int | None:
    """A byte stream's message: the chunk of a ``Data``, the grant of a ``WindowUpdate``,
    None for anything else (which streams ignore, as containerd's do)."""
    url = _type_url(value)
    try:
        if url == DATA_TYPE_URL:
            return _pb.transfer_types_pb.Data.parse(value.value).data
        if url == WINDOW_TYPE_URL:
            grant = _window_update(value.value)
            if grant is not None:
                return grant
            return _pb.transfer_types_pb.WindowUpdate.parse(value.value).update
    except Exception as exc:
        raise DataLossError(f"undecodable {url} on a transfer stream") from exc
    return None


def progress_from_any(value: AnyPb) -> PullProgress | None:
    """A progress stream's message as a record, None if it is no ``Progress``."""
    if _type_url(value) != PROGRESS_TYPE_URL:
        return None
    try:
        pb = _pb.transfer_types_pb.Progress.parse(value.value)
    except Exception as exc:
        raise DataLossError("undecodable Progress on a transfer's progress stream") from exc
    return PullProgress(
        pb.event,
        pb.name,
        tuple(pb.parents),
        max(pb.progress, 0),
        max(pb.total, 0),
        descriptor_from_pb(pb.desc),
    )


def auth_request_from_any(value: AnyPb) -> tuple[str, str] | None:
    """A credential request's host and reference, None if it is no ``AuthRequest``."""
    if _type_url(value) != AUTH_REQUEST_TYPE_URL:
        return None
    try:
        pb = _pb.transfer_types_pb.AuthRequest.parse(value.value)
    except Exception as exc:
        raise DataLossError("undecodable AuthRequest on a transfer's auth stream") from exc
    return pb.host, pb.reference


def auth_answer(username: str | None, secret: str | None) -> AnyPb:
    """The answer to a credential request: a username and secret, or none."""
    if secret is None:
        response = _pb.transfer_types_pb.AuthResponse(auth_type=_pb.transfer_types_pb.AuthType.NONE)
    else:
        response = _pb.transfer_types_pb.AuthResponse(
            auth_type=_pb.transfer_types_pb.AuthType.CREDENTIALS,
            username=username or "",
            secret=secret,
        )
    return _any(_PREFIX + "AuthResponse", response)
