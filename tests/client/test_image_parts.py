"""The parts of image transfers that need no daemon: tar ends, archive chunks, byte streams
under flow control, credentials, and the wire's checks of what the daemon streams."""

from __future__ import annotations

import base64
import gzip
import io
import json
import struct
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sandboxclient import Credentials, DataLossError, InvalidArgumentError, UnavailableError
from sandboxclient._imageops._archive import Output, archive_chunks
from sandboxclient._imageops._credentials import checked_credentials, docker_config_credentials
from sandboxclient._imageops._streaming import MAX_CHUNK, WINDOW, Stream
from sandboxclient._imageops._tarend import TarEnd
from sandboxclient._wire._images import (
    DATA_TYPE_URL,
    PROGRESS_TYPE_URL,
    WINDOW_TYPE_URL,
    data_any,
    data_message_header,
    progress_from_any,
    unpack_payload,
    window_any,
)
from sandboxclient._wire._pb import AnyPb, transfer_types_pb

pytestmark = pytest.mark.anyio


def tar_of(*files: tuple[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


# -- the end of a tar stream ----------------------------------------------------------------


@pytest.mark.parametrize("step", [1, 511, 512, 4096, 1 << 20])
def test_a_tar_ends_where_its_two_zero_blocks_end(step: int) -> None:
    archive = tar_of(("a", b"x" * 1000), ("é/b", bytes(512)), ("c", b""))
    end = TarEnd()
    for at in range(0, len(archive), step):
        end.feed(archive[at : at + step])
    assert end.done
    # tarfile pads the archive to its record size: the rest is trailing zeros.
    assert end.trailing == len(archive) - _end_offset(archive)


def _end_offset(archive: bytes) -> int:
    end = TarEnd()
    for at in range(len(archive)):
        end.feed(archive[at : at + 1])
        if end.done:
            return at + 1
    raise AssertionError("no end")


def test_a_truncated_tar_has_not_ended_and_garbage_is_refused() -> None:
    archive = tar_of(("a", b"x" * 5000))
    end = TarEnd()
    end.feed(archive[: _end_offset(archive) - 1])
    assert not end.done
    header = bytearray(tar_of(("a", b""))[:512])
    header[124:136] = b"not-octal!!\0"
    with pytest.raises(ValueError, match="size is no number"):
        TarEnd().feed(bytes(header))


# -- archives in chunks ---------------------------------------------------------------------


async def collect(chunks: AsyncIterator[bytes]) -> list[bytes]:
    return [chunk async for chunk in chunks]


async def test_a_gzip_archive_is_inflated_in_bounded_chunks(tmp_path: Path) -> None:
    plain = tar_of(("big", bytes(300_000)))  # compresses to almost nothing
    path = tmp_path / "a.tar.gz"
    path.write_bytes(gzip.compress(plain))
    chunks = await collect(archive_chunks(path))
    assert b"".join(chunks) == plain
    assert max(len(c) for c in chunks) <= MAX_CHUNK
    assert b"".join(await collect(archive_chunks(io.BytesIO(plain)))) == plain


async def test_corrupt_or_truncated_gzip_and_wrong_sources_are_refused() -> None:
    packed = gzip.compress(tar_of(("a", b"x" * 100_000)))
    with pytest.raises(InvalidArgumentError, match="truncated"):
        await collect(archive_chunks(io.BytesIO(packed[:-50])))
    with pytest.raises(InvalidArgumentError, match="not valid gzip"):
        await collect(archive_chunks(io.BytesIO(packed[:20] + b"\xff" * 200)))
    with pytest.raises(TypeError, match="binary mode"):
        await collect(archive_chunks(io.StringIO("text")))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="an archive is"):
        await collect(archive_chunks(42))  # type: ignore[arg-type]


def test_an_export_to_a_path_is_written_whole_or_not_at_all(tmp_path: Path) -> None:
    dest = tmp_path / "out.tar"
    with Output(dest):
        pass  # failed before commit
    assert list(tmp_path.iterdir()) == []
    with Output(dest) as out:
        out.commit()
    assert [p.name for p in tmp_path.iterdir()] == ["out.tar"]


# -- byte streams under flow control --------------------------------------------------------


class FakeRaw:
    """A Streaming call as ``Stream`` sees it: what the daemon sends is scripted."""

    def __init__(self, incoming: list[AnyPb | None]) -> None:
        self.incoming = incoming
        self.sent: list[AnyPb] = []
        self.ended = False

    async def send_message(self, value: AnyPb) -> None:
        self.sent.append(value)

    async def recv_message(self) -> AnyPb | None:
        return self.incoming.pop(0) if self.incoming else None

    async def end(self) -> None:
        self.ended = True

    async def cancel(self) -> None:
        pass


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


async def test_a_sender_sends_only_what_was_granted_in_chunks_of_32_kib() -> None:
    raw = FakeRaw([window_any(WINDOW), window_any(WINDOW)])
    data = bytes(range(256)) * 512  # 128 KiB: exactly the two windows
    sent = await Stream("s", raw).send_bytes(chunks_of(data, 50_000))
    assert sent == len(data)
    assert raw.ended
    pieces = [unpack_payload(v) for v in raw.sent]
    assert all(isinstance(p, bytes) and len(p) <= MAX_CHUNK for p in pieces)
    assert b"".join(p for p in pieces if isinstance(p, bytes)) == data


class FramedRaw(FakeRaw):
    """The client's own call, which takes ``Data`` messages encoded by hand, several a write."""

    def __init__(self, incoming: list[AnyPb | None]) -> None:
        super().__init__(incoming)
        self.writes: list[int] = []

    async def send_framed(self, data: bytes) -> None:
        self.writes.append(len(data))
        at = 0
        while at < len(data):
            flag, size = struct.unpack_from(">BI", data, at)
            assert flag == 0
            self.sent.append(AnyPb.parse(data[at + 5 : at + 5 + size]))
            at += 5 + size


@pytest.mark.parametrize("size", [1, 127, 128, 16_383, 16_384, MAX_CHUNK, 2_100_000])
def test_a_data_message_encoded_by_hand_is_what_the_codec_makes(size: int) -> None:
    chunk = bytes([size % 251]) * size
    encoded = bytes(data_any(chunk))
    assert data_message_header(size) + chunk == struct.pack(">BI", 0, len(encoded)) + encoded
    with pytest.raises(ValueError, match="1 byte or more"):
        data_message_header(0)


async def test_a_framed_sender_writes_what_a_window_allows_at_once_in_32_kib_messages() -> None:
    raw = FramedRaw([window_any(WINDOW), window_any(WINDOW), window_any(1000)])
    data = bytes(range(256)) * 516  # the two windows and 1,024 bytes more than the third
    with pytest.raises(UnavailableError, match=f"after {2 * WINDOW + 1000} bytes"):
        await Stream("s", raw).send_bytes(chunks_of(data, 300_000))
    pieces = [unpack_payload(v) for v in raw.sent]
    assert [len(p) for p in pieces if isinstance(p, bytes)] == [MAX_CHUNK] * 4 + [1000]
    assert b"".join(p for p in pieces if isinstance(p, bytes)) == data[: 2 * WINDOW + 1000]
    assert len(raw.writes) < len(pieces)  # messages go out several at a time
    assert not raw.ended


async def test_a_sender_whose_receiver_stops_granting_is_told_so() -> None:
    raw = FakeRaw([window_any(WINDOW), None])
    with pytest.raises(UnavailableError, match="ended stream s after 65536 bytes"):
        await Stream("s", raw).send_bytes(chunks_of(bytes(200_000), 65_536))


async def test_a_receiver_refuses_more_than_it_granted() -> None:
    raw = FakeRaw([data_any(bytes(WINDOW)), data_any(bytes(WINDOW + 1))])
    received: list[bytes] = []

    async def sink(chunk: bytes) -> None:
        received.append(chunk)

    with pytest.raises(DataLossError, match="65537 bytes on stream r"):
        await Stream("r", raw).receive_bytes(sink)
    assert [len(c) for c in received] == [WINDOW]
    assert [unpack_payload(v) for v in raw.sent] == [WINDOW, WINDOW]


@pytest.mark.parametrize("grant", [0, 1, 127, 128, WINDOW, 2**31 - 1, -1, -(2**31)])
def test_a_grant_reads_as_the_codec_reads_it(grant: int) -> None:
    value = window_any(grant)
    assert unpack_payload(value) == grant
    assert unpack_payload(AnyPb(type_url=WINDOW_TYPE_URL, value=value.value + b"\x08\x05")) == 5


def test_what_the_daemon_streams_is_checked_as_it_is_decoded() -> None:
    with pytest.raises(DataLossError, match="undecodable"):
        unpack_payload(AnyPb(type_url=DATA_TYPE_URL, value=b"\x0a\xff"))
    assert unpack_payload(AnyPb(type_url="x.Unknown", value=b"")) is None
    assert unpack_payload(AnyPb(type_url="type.googleapis.com/" + WINDOW_TYPE_URL)) == 0
    negative = transfer_types_pb.Progress(event="e", progress=-5, total=-1)
    step = progress_from_any(AnyPb(type_url=PROGRESS_TYPE_URL, value=bytes(negative)))
    assert step is not None
    assert (step.progress, step.total, step.descriptor) == (0, 0, None)


# -- credentials ----------------------------------------------------------------------------


def _config(tmp_path: Path, auths: dict[str, Any]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": auths}))
    return path


def test_the_docker_config_answers_by_host(tmp_path: Path) -> None:
    token = base64.b64encode(b"bob:pa:ss").decode()
    path = _config(
        tmp_path,
        {
            "https://index.docker.io/v1/": {"auth": token},
            "127.0.0.1:5000": {"username": "u", "password": "p"},
            "broken.test": {"auth": "%%%"},
        },
    )
    assert docker_config_credentials("registry-1.docker.io", path) == Credentials("bob", "pa:ss")
    assert docker_config_credentials("127.0.0.1:5000", path) == Credentials("u", "p")
    assert docker_config_credentials("broken.test", path) is None
    assert docker_config_credentials("other.test", path) is None
    assert docker_config_credentials("x", tmp_path / "missing.json") is None
    (tmp_path / "bad.json").write_text("{not json")
    assert docker_config_credentials("x", tmp_path / "bad.json") is None


def test_a_secret_is_never_shown() -> None:
    secret = "hunter2-secret"
    assert secret not in repr(Credentials("u", secret))
    with pytest.raises(TypeError) as refused:
        checked_credentials(("u", secret, "extra"))
    assert secret not in str(refused.value)
    with pytest.raises(TypeError):
        Credentials("u", 1)  # type: ignore[arg-type]
