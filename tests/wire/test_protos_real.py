"""The protos of ``protos/`` against a real containerd.

Two kinds of check. First, the descriptors compiled into the containerd, ctr and runc shim
binaries (Go keeps every ``.proto`` it was built from as a serialized ``FileDescriptorProto``)
must equal ours, message by message and field by field, but for the fields added after 2.1
that we declare on purpose. Second, calls through the generated grpclib stubs on the
daemon's socket, whose every answer is decoded twice, by betterproto2 and by the project's
strict decoder (``sandboxclient._wire._codec``), so that a wrong field number or wire type shows up
as a wrong value or a decode error.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import betterproto2
import pytest
from betterproto2_compiler.lib.google.protobuf import (
    DescriptorProto,
    FieldDescriptorProtoLabel,
    FileDescriptorProto,
    FileDescriptorSet,
)
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.encoding.proto import ProtoCodec
from grpclib.exceptions import GRPCError

from sandboxclient import ContainerdVersion
from sandboxclient._wire import _codec
from sandboxclient._wire._pb import (
    AnyPb,
    DescriptorPb,
    EmptyPb,
    EnvelopePb,
    FieldMaskPb,
    RuntimeInfoPb,
    RuntimeRequestPb,
    cgroups_v1_pb,
    cgroups_v2_pb,
    content_pb,
    event_payloads_pb,
    events_pb,
    images_pb,
    introspection_pb,
    leases_pb,
    message_type,
    namespaces_pb,
    runc_options_pb,
    snapshots_pb,
    task_types_pb,
    tasks_pb,
    version_pb,
)
from sandboxclient.testing import ContainerdDaemon
from sandboxclient.testing._daemon import require_or_skip_reason
from sandboxclient.testing._images import build_pause_archive
from sandboxclient.testing._locate import containerd_version, find_containerd_bin_dir
from tests.support.backends import RealContainerd, new_namespace
from tests.support.constants import REPO_ROOT as ROOT
from tests.support.constants import RUNTIME

pytestmark = [pytest.mark.anyio, pytest.mark.real]

NAMESPACE_HEADER = "containerd-namespace"
LEASE_HEADER = "containerd-lease"
SNAPSHOTTER = "overlayfs"
PROCESS_SPEC_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
SIGKILL = 9
_M = TypeVar("_M", bound=betterproto2.Message)
_S = TypeVar("_S")

V = ContainerdVersion

# Fields (message full name, number) that ours declare and older releases do not know, with
# the first release that does (read in each tag's protos and vendored cgroups module).
FIELDS_SINCE = {
    (".containerd.types.transfer.RegistryResolver", 5): V(2, 1, 0),  # http_debug
    (".containerd.types.transfer.RegistryResolver", 6): V(2, 1, 0),  # logs_stream
    (".containerd.services.tasks.v1.CreateTaskRequest", 11): V(2, 3, 1),  # task_api_address
    (".containerd.services.tasks.v1.CreateTaskRequest", 12): V(2, 3, 1),  # task_api_version
    (".containerd.services.sandbox.v1.ControllerStartResponse", 7): V(2, 3, 0),  # spec
    (".containerd.types.Platform", 5): V(2, 3, 0),  # os_features
    (".containerd.events.ContentCreate", 3): V(2, 4, 0, "beta.0"),  # mediaType
    (".containerd.runc.v1.CheckpointOptions", 10): V(2, 4, 0, "beta.0"),  # parent_path
    (".containerd.services.snapshots.v1.CommitSnapshotRequest", 5): V(2, 2, 0),  # parent
    (".io.containerd.cgroups.v2.Metrics", 9): V(2, 2, 0),  # network
    (".io.containerd.cgroups.v2.CPUStat", 8): V(2, 2, 0),  # nr_bursts
    (".io.containerd.cgroups.v2.CPUStat", 9): V(2, 2, 0),  # burst_usec
    (".io.containerd.cgroups.v2.HugeTlbStat", 4): V(2, 2, 0),  # failcnt
    (".io.containerd.cgroups.v2.MemoryEvents", 6): V(2, 3, 0),  # oom_group_kill
}
MESSAGES_SINCE = {  # and enums
    ".containerd.events.ContentCreate": V(2, 1, 0),
    ".containerd.types.transfer.HTTPDebug": V(2, 1, 0),
    ".io.containerd.cgroups.v2.NetworkStat": V(2, 2, 0),
}


# -- descriptors ----------------------------------------------------------------------------

_FILE_FIELDS = {1: 2, 2: 2, 3: 2, 4: 2, 5: 2, 6: 2, 7: 2, 8: 2, 9: 2, 10: 0, 11: 0, 12: 2, 14: 0}
"""FileDescriptorProto's field numbers and wire types, to find where one ends."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _file_end(data: bytes, start: int) -> int:
    """Where the serialized FileDescriptorProto at ``start`` ends: at the first byte that
    cannot continue it (a second ``name`` starts the next file)."""
    pos = start
    while pos < len(data):
        try:
            tag, after = _varint(data, pos)
            number, wire = tag >> 3, tag & 7
            if _FILE_FIELDS.get(number) != wire or (number == 1 and pos != start):
                break
            if wire == 0:
                _, after = _varint(data, after)
            else:
                size, after = _varint(data, after)
                after += size
        except IndexError:
            break
        if after > len(data):
            break
        pos = after
    return pos


def embedded_descriptors(binary: Path) -> dict[str, FileDescriptorProto]:
    """Every ``.proto`` file descriptor compiled into a Go binary, by file name."""
    data = binary.read_bytes()
    found: dict[str, tuple[int, FileDescriptorProto]] = {}
    # A descriptor starts with its name: tag 0x0a, a length, then "<path>.proto". The
    # lookahead lets one candidate start inside another that turned out not to be one.
    for match in re.finditer(
        rb"(?=\x0a(?:[\x01-\x7f]|[\x80-\xff][\x01-\x7f])[\w./-]+\.proto)", data
    ):
        start = match.start()
        size, name_at = _varint(data, start + 1)
        name = data[name_at : name_at + size]
        if not name.endswith(b".proto"):
            continue
        end = _file_end(data, start)
        try:
            fd = FileDescriptorProto.parse(data[start:end])
        except Exception:
            continue
        if fd.name != name.decode(errors="replace"):
            continue
        if not (fd.message_type or fd.service or fd.enum_type):
            continue  # a string that merely looks like a file name
        if fd.name not in found or found[fd.name][0] < end - start:
            found[fd.name] = (end - start, fd)
    return {name: fd for name, (_, fd) in found.items()}


FieldKey = tuple[str, int, int, str, bool]


@dataclass
class Shapes:
    """The wire shapes of a set of descriptors, by full name."""

    messages: dict[str, dict[int, FieldKey]] = field(default_factory=dict)
    enums: dict[str, dict[int, str]] = field(default_factory=dict)
    services: dict[str, dict[str, tuple[str, str, bool, bool]]] = field(default_factory=dict)

    def add(self, fd: FileDescriptorProto) -> None:
        prefix = "." + fd.package
        for m in fd.message_type:
            self._message(prefix, m)
        for e in fd.enum_type:
            self.enums[f"{prefix}.{e.name}"] = {v.number: v.name for v in e.value}
        for s in fd.service:
            self.services[f"{prefix}.{s.name}"] = {
                m.name: (m.input_type, m.output_type, m.client_streaming, m.server_streaming)
                for m in s.method
            }

    def _message(self, prefix: str, m: DescriptorProto) -> None:
        name = f"{prefix}.{m.name}"
        self.messages[name] = {
            f.number: (
                f.name,
                int(f.type),
                int(f.label or FieldDescriptorProtoLabel.OPTIONAL),
                f.type_name,
                bool(f.proto3_optional),
            )
            for f in m.field
        }
        for nested in m.nested_type:
            self._message(name, nested)
        for e in m.enum_type:
            self.enums[f"{name}.{e.name}"] = {v.number: v.name for v in e.value}


def compiled_protos(out: Path) -> list[FileDescriptorProto]:
    protos = ROOT / "protos"
    files = sorted(str(p.relative_to(protos)) for p in protos.rglob("*.proto"))
    target = out / "protos.pb"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{protos}",
            f"--descriptor_set_out={target}",
            *files,
        ],
        check=True,
        cwd=protos,
    )
    return list(FileDescriptorSet.parse(target.read_bytes()).file)


@pytest.fixture(scope="module")
def bin_dir() -> Path:
    reason = require_or_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    return find_containerd_bin_dir()


def test_every_message_matches_the_daemon_binaries(bin_dir: Path, tmp_path: Path) -> None:
    theirs = Shapes()
    for binary in ("containerd", "containerd-shim-runc-v2", "ctr"):
        path = bin_dir / binary
        if binary == "containerd-shim-runc-v2" and not path.exists():
            path = Path(shutil.which(binary) or path)
        for fd in embedded_descriptors(path.resolve()).values():
            theirs.add(fd)
    ours = Shapes()
    for fd in compiled_protos(tmp_path):
        ours.add(fd)
    mismatched: list[tuple[str, str, object, object, object]] = []
    unknown: set[str] = set()
    added: set[tuple[str, object]] = set()
    for kind in ("messages", "enums", "services"):
        mine, upstream = getattr(ours, kind), getattr(theirs, kind)
        for name, shape in mine.items():
            if name not in upstream:
                unknown.add(name)
                continue
            for key in set(shape) | set(upstream[name]):
                if shape.get(key) == upstream[name].get(key):
                    continue
                if kind == "messages" and key not in upstream[name]:
                    added.add((name, key))
                else:
                    mismatched.append((kind, name, key, shape.get(key), upstream[name].get(key)))
    assert mismatched == []
    version = containerd_version(bin_dir / "containerd")
    unknown_since = {name for name, since in MESSAGES_SINCE.items() if version < since}
    assert unknown == unknown_since
    # The fields of a message the daemon does not know are not compared.
    assert added == {
        key
        for key, since in FIELDS_SINCE.items()
        if version < since and key[0] not in unknown_since
    }
    # The comparison covered every package we declare, the cgroup metrics included.
    packages = {name.rsplit(".", 1)[0] for name in ours.messages if name in theirs.messages}
    assert {
        ".containerd.services.tasks.v1",
        ".containerd.events",
        ".containerd.v1.types",
        ".containerd.runc.v1",
        ".io.containerd.cgroups.v1",
        ".io.containerd.cgroups.v2",
        ".google.rpc",
    } <= packages
    assert len(ours.messages) - len(unknown) >= 240


# -- calls on the socket ---------------------------------------------------------------------


class _RecordingCodec(ProtoCodec):
    """betterproto2 both ways, keeping every reply's bytes for a second, strict decoding."""

    def __init__(self) -> None:
        self.replies: list[tuple[type[betterproto2.Message], bytes]] = []

    def encode(self, message: Any, message_type: Any) -> bytes:
        assert isinstance(message, message_type)
        return bytes(message)

    def decode(self, data: bytes, message_type: Any) -> Any:
        self.replies.append((message_type, data))
        return message_type.parse(data)


def both(message_cls: type[_M], data: bytes) -> _M:
    """``data`` decoded by the strict decoder, which must agree with betterproto2."""
    strict = _codec.decode(message_cls, data)
    assert strict == message_cls.parse(data), message_cls.__name__
    return strict


def unpack(value: AnyPb | None, expected: type[_M]) -> _M:
    """The payload of an ``Any`` that containerd filled, found by its bare type URL."""
    assert value is not None
    assert message_type(value.type_url) is expected, value.type_url
    return both(expected, value.value)


def recent(when: datetime.datetime | None, slack: float = 120.0) -> bool:
    now = datetime.datetime.now(datetime.UTC)
    return when is not None and abs((now - when).total_seconds()) < slack


@dataclass
class Wire:
    """A grpclib channel on the daemon's socket, in one fresh namespace."""

    daemon: ContainerdDaemon
    namespace: str
    channel: Channel
    codec: _RecordingCodec

    def stub(self, factory: Callable[..., _S]) -> _S:
        return factory(self.channel, metadata={NAMESPACE_HEADER: self.namespace}, timeout=30)

    def check_replies(self) -> int:
        """Decode every reply received so far strictly too; return how many there were."""
        count = len(self.codec.replies)
        for message_cls, data in self.codec.replies:
            both(message_cls, data)
        self.codec.replies.clear()
        return count

    def ctr(self, *args: str) -> str:
        return self.daemon.ctr(*args, namespace=self.namespace).stdout


@pytest.fixture
async def wire(real_containerd: RealContainerd) -> AsyncIterator[Wire]:
    real_containerd.ensure_running()
    codec = _RecordingCodec()
    channel = Channel(path=real_containerd.daemon.address, codec=codec)
    w = Wire(real_containerd.daemon, new_namespace(), channel, codec)
    try:
        yield w
        assert w.check_replies() > 0
        # Only an empty namespace can be deleted: this proves the test left nothing behind.
        stub = w.stub(namespaces_pb.NamespacesStub)
        try:
            await stub.delete(namespaces_pb.DeleteNamespaceRequest(name=w.namespace))
        except GRPCError as exc:  # NOT_FOUND: the test never wrote to it
            if exc.status is not Status.NOT_FOUND:
                pytest.fail(f"namespace {w.namespace} left behind: {exc.message}")
    finally:
        channel.close()


class Events:
    """A running Events.Subscribe, its envelopes queued as they arrive."""

    def __init__(self, wire: Wire, filters: list[str]) -> None:
        self.wire = wire
        self.queue: asyncio.Queue[EnvelopePb] = asyncio.Queue()
        self.ready = asyncio.Event()
        self.probe = f"/probe/{uuid.uuid4().hex[:8]}"
        # The probe, published in the test's namespace, tells when the stream is live.
        self.filters = [*filters, f'topic=="{self.probe}"']
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        # No deadline: the stream lasts as long as the test.
        stub = events_pb.EventsStub(
            self.wire.channel, metadata={NAMESPACE_HEADER: self.wire.namespace}
        )
        async for envelope in stub.subscribe(events_pb.SubscribeRequest(filters=self.filters)):
            if envelope.topic == self.probe:
                self.ready.set()
            else:
                self.queue.put_nowait(envelope)

    async def start(self) -> None:
        stub = self.wire.stub(events_pb.EventsStub)
        probe = AnyPb(
            type_url="containerd.events.ContentDelete",
            value=bytes(event_payloads_pb.ContentDelete(digest="probe")),
        )
        async with asyncio.timeout(20):
            while not self.ready.is_set():
                await stub.publish(events_pb.PublishRequest(topic=self.probe, event=probe))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.ready.wait(), 0.5)

    async def next(self, topic: str, bound: float = 20.0) -> EnvelopePb:
        """The next envelope of ``topic`` within ``bound`` seconds; those of other topics
        before it are dropped."""
        async with asyncio.timeout(bound):
            while True:
                envelope = await self.queue.get()
                if envelope.topic == topic:
                    return envelope

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
async def events(wire: Wire) -> AsyncIterator[Callable[[list[str]], Events]]:
    running: list[Events] = []

    def subscribe(filters: list[str]) -> Events:
        running.append(Events(wire, filters))
        return running[-1]

    yield subscribe
    for sub in running:
        await sub.stop()


def _ctr_fields(text: str, section: str) -> dict[str, str]:
    """``Key: value`` lines of one section of ``ctr version``."""
    out: dict[str, str] = {}
    current = ""
    for line in text.splitlines():
        if line and not line.startswith(" "):
            current = line.rstrip(":")
        elif current == section and ":" in line:
            key, _, value = line.strip().partition(":")
            out[key] = value.strip()
    return out


async def test_version_is_what_ctr_reports(wire: Wire) -> None:
    answer = await wire.stub(version_pb.VersionStub).version(EmptyPb())
    server = _ctr_fields(wire.daemon.ctr("version").stdout, "Server")
    assert answer.version == server["Version"]
    assert ContainerdVersion.parse(answer.version) == wire.daemon.version
    assert answer.revision == server["Revision"]
    info = await wire.stub(introspection_pb.IntrospectionStub).server(EmptyPb())
    assert info.uuid == server["UUID"]
    assert info.pid == wire.daemon.pid
    assert info.pidns == os.stat(f"/proc/{wire.daemon.pid}/ns/pid").st_ino


async def test_plugins_are_those_ctr_lists(wire: Wire) -> None:
    answer = await wire.stub(introspection_pb.IntrospectionStub).plugins(
        introspection_pb.PluginsRequest()
    )
    rows = [line.split() for line in wire.daemon.ctr("plugins", "ls").stdout.splitlines()[1:]]
    listed = {(row[0], row[1]): row[-1] for row in rows if row}
    ours = {(p.type, p.id): p for p in answer.plugins}
    assert set(ours) == set(listed)
    for key, status in listed.items():
        plugin = ours[key]
        if status == "ok":
            assert plugin.init_err is None, key
        else:
            assert plugin.init_err is not None, key
            assert plugin.init_err.code != 0, key
            assert plugin.init_err.message, key
    tasks = ours[("io.containerd.runtime.v2", "task")]
    assert tasks.platforms
    assert tasks.platforms[0].os == "linux"
    assert ours[("io.containerd.grpc.v1", "containers")].requires == ["io.containerd.service.v1"]
    content_root = wire.daemon.root / "io.containerd.content.v1.content"
    assert ours[("io.containerd.content.v1", "content")].exports == {"root": str(content_root)}
    assert ours[("io.containerd.snapshotter.v1", "overlayfs")].capabilities
    # PluginInfo of the task plugin: a RuntimeRequest in, a RuntimeInfo out.
    request = RuntimeRequestPb(runtime_path=RUNTIME)
    info = await wire.stub(introspection_pb.IntrospectionStub).plugin_info(
        introspection_pb.PluginInfoRequest(
            type="io.containerd.runtime.v2",
            id="task",
            options=AnyPb(type_url="containerd.types.RuntimeRequest", value=bytes(request)),
        )
    )
    assert info.plugin is not None
    assert info.plugin.id == "task"
    runtime = unpack(info.extra, RuntimeInfoPb)
    assert runtime.name == RUNTIME
    assert runtime.version is not None
    assert ContainerdVersion.parse(runtime.version.version) == wire.daemon.version
    assert runtime.features is not None
    assert "ociVersionMax" in json.loads(runtime.features.value)


async def test_namespaces_and_their_events(
    wire: Wire, events: Callable[[list[str]], Events]
) -> None:
    stub = wire.stub(namespaces_pb.NamespacesStub)
    name = new_namespace()
    sub = events([f'topic~="/namespaces/",namespace=="{name}"'])
    await sub.start()
    created = await stub.create(
        namespaces_pb.CreateNamespaceRequest(
            namespace=namespaces_pb.Namespace(name=name, labels={"probe": "yes"})
        )
    )
    try:
        assert created.namespace == namespaces_pb.Namespace(name=name, labels={"probe": "yes"})
        listed = await stub.list(namespaces_pb.ListNamespacesRequest())
        assert {n.name: n.labels for n in listed.namespaces}[name] == {"probe": "yes"}
        got = await stub.get(namespaces_pb.GetNamespaceRequest(name=name))
        assert got.namespace is not None
        assert got.namespace.labels == {"probe": "yes"}
        await stub.update(
            namespaces_pb.UpdateNamespaceRequest(
                namespace=namespaces_pb.Namespace(name=name, labels={"probe": "again"}),
                update_mask=FieldMaskPb(paths=["labels.probe"]),
            )
        )
        envelope = await sub.next("/namespaces/create")
        assert envelope.namespace == name
        assert recent(envelope.timestamp)
        payload = unpack(envelope.event, event_payloads_pb.NamespaceCreate)
        assert payload == event_payloads_pb.NamespaceCreate(name=name, labels={"probe": "yes"})
        update = unpack(
            (await sub.next("/namespaces/update")).event, event_payloads_pb.NamespaceUpdate
        )
        assert update.name == name
        assert update.labels == {"probe": "again"}
    finally:
        await stub.delete(namespaces_pb.DeleteNamespaceRequest(name=name))
    deleted = unpack(
        (await sub.next("/namespaces/delete")).event, event_payloads_pb.NamespaceDelete
    )
    assert deleted.name == name
    listed = await stub.list(namespaces_pb.ListNamespacesRequest())
    assert name not in [n.name for n in listed.namespaces]


async def test_events_publish_and_forward_round_trip(
    wire: Wire, events: Callable[[list[str]], Events]
) -> None:
    sub = events(['topic~="/test/"'])
    await sub.start()
    stub = wire.stub(events_pb.EventsStub)
    payload = event_payloads_pb.TaskOom(container_id="c-oom")
    await stub.publish(
        events_pb.PublishRequest(
            topic="/test/published",
            event=AnyPb(type_url="containerd.events.TaskOOM", value=bytes(payload)),
        )
    )
    published = await sub.next("/test/published")
    assert published.namespace == wire.namespace
    assert recent(published.timestamp)
    assert unpack(published.event, event_payloads_pb.TaskOom) == payload
    # Forward keeps the envelope as given: its own time and namespace.
    when = datetime.datetime(2020, 1, 2, 3, 4, 5, 123456, tzinfo=datetime.UTC)
    exit_payload = event_payloads_pb.TaskExit(
        container_id="c1", id="e1", pid=42, exit_status=3, exited_at=when
    )
    other = new_namespace()
    await stub.forward(
        events_pb.ForwardRequest(
            envelope=EnvelopePb(
                timestamp=when,
                namespace=other,
                topic="/test/forwarded",
                event=AnyPb(type_url="containerd.events.TaskExit", value=bytes(exit_payload)),
            )
        )
    )
    forwarded = await sub.next("/test/forwarded")
    assert (forwarded.timestamp, forwarded.namespace) == (when, other)
    assert unpack(forwarded.event, event_payloads_pb.TaskExit) == exit_payload


@pytest.fixture
def busybox_image(wire: Wire) -> Iterator[str]:
    """The offline busybox image, imported (and unpacked) into the test's namespace."""
    ref = f"example.com/protos/busybox:{uuid.uuid4().hex[:8]}"
    archive = wire.daemon.base_dir / f"protos-{uuid.uuid4().hex[:8]}.tar"
    archive.write_bytes(build_pause_archive(ref))
    try:
        wire.ctr("images", "import", str(archive))
    finally:
        archive.unlink(missing_ok=True)
    yield ref
    wire.daemon.ctr("images", "rm", "--sync", ref, namespace=wire.namespace, check=False)
    for key in wire.ctr("snapshots", "--snapshotter", SNAPSHOTTER, "ls").splitlines()[1:]:
        wire.daemon.ctr("snapshots", "rm", key.split()[0], namespace=wire.namespace, check=False)


async def _read_blob(wire: Wire, digest: str) -> bytes:
    stub = wire.stub(content_pb.ContentStub)
    chunks: list[bytes] = []
    async for part in stub.read(content_pb.ReadContentRequest(digest=digest)):
        assert part.offset == sum(len(c) for c in chunks)
        chunks.append(part.data)
    return b"".join(chunks)


async def test_images_and_content(
    wire: Wire, busybox_image: str, events: Callable[[list[str]], Events]
) -> None:
    images = wire.stub(images_pb.ImagesStub)
    listed = await images.list(images_pb.ListImagesRequest(filters=[f'name=="{busybox_image}"']))
    assert [i.name for i in listed.images] == [busybox_image]
    image = (await images.get(images_pb.GetImageRequest(name=busybox_image))).image
    assert image is not None
    assert image.target is not None
    target = image.target
    row = wire.ctr("images", "ls").splitlines()[1].split()
    assert (row[0], row[1], row[2]) == (image.name, target.media_type, target.digest)
    assert target.media_type == "application/vnd.oci.image.manifest.v1+json"
    assert recent(image.created_at)
    assert recent(image.updated_at)

    content = wire.stub(content_pb.ContentStub)
    info = (await content.info(content_pb.InfoRequest(digest=target.digest))).info
    assert info is not None
    assert (info.digest, info.size) == (target.digest, target.size)
    assert recent(info.created_at)
    manifest = await _read_blob(wire, target.digest)
    assert len(manifest) == target.size
    assert "sha256:" + hashlib.sha256(manifest).hexdigest() == target.digest
    parsed = json.loads(manifest)
    layer = parsed["layers"][0]
    # Reading from an offset, and a part only.
    part = [
        r.data
        async for r in content.read(
            content_pb.ReadContentRequest(digest=target.digest, offset=10, size=20)
        )
    ]
    assert b"".join(part) == manifest[10:30]
    blobs: dict[str, int] = {}
    async for page in content.list(content_pb.ListContentRequest()):
        blobs.update({i.digest: i.size for i in page.info})
    assert blobs[parsed["config"]["digest"]] == parsed["config"]["size"]
    assert blobs[layer["digest"]] == layer["size"]

    # Delete with the wrong target is refused; the optional target field travels.
    sub = events(['topic~="/images/"'])
    await sub.start()
    wrong = DescriptorPb(
        media_type=target.media_type, digest="sha256:" + "0" * 64, size=target.size
    )
    with pytest.raises(GRPCError) as err:
        await images.delete(images_pb.DeleteImageRequest(name=busybox_image, target=wrong))
    assert err.value.status is Status.NOT_FOUND
    await images.delete(images_pb.DeleteImageRequest(name=busybox_image, target=target, sync=True))
    deleted = unpack((await sub.next("/images/delete")).event, images_pb.ImageDelete)
    assert deleted.name == busybox_image
    with pytest.raises(GRPCError) as err:
        await images.get(images_pb.GetImageRequest(name=busybox_image))
    assert err.value.status is Status.NOT_FOUND
    # Re-create the record (content is still there, held by nothing but GC timing).
    created = await images.create(
        images_pb.CreateImageRequest(
            image=images_pb.Image(name=busybox_image, target=target, labels={"k": "v"})
        )
    )
    assert created.image is not None
    assert created.image.labels == {"k": "v"}
    event = unpack((await sub.next("/images/create")).event, images_pb.ImageCreate)
    assert event == images_pb.ImageCreate(name=busybox_image, labels={"k": "v"})


async def test_snapshots(wire: Wire, busybox_image: str) -> None:
    stub = wire.stub(snapshots_pb.SnapshotsStub)
    listed: list[snapshots_pb.Info] = []
    async for page in stub.list(snapshots_pb.ListSnapshotsRequest(snapshotter=SNAPSHOTTER)):
        listed.extend(page.info)
    # The unpacked image is one committed layer.
    assert [(s.kind, s.parent) for s in listed] == [(snapshots_pb.Kind.COMMITTED, "")]
    layer = listed[0].name
    assert layer == wire.ctr("snapshots", "--snapshotter", SNAPSHOTTER, "ls").split()[3]
    stat = await stub.stat(snapshots_pb.StatSnapshotRequest(snapshotter=SNAPSHOTTER, key=layer))
    assert stat.info is not None
    assert stat.info.kind is snapshots_pb.Kind.COMMITTED
    assert recent(stat.info.created_at)

    key = f"protos-{uuid.uuid4().hex[:8]}"
    # Held by a lease, as containerd's clients hold what they prepare: an active snapshot
    # nothing references is the garbage collector's to remove at any moment.
    leases = wire.stub(leases_pb.LeasesStub)
    await leases.create(leases_pb.CreateRequest(id=key))
    stub = snapshots_pb.SnapshotsStub(
        wire.channel,
        metadata={NAMESPACE_HEADER: wire.namespace, LEASE_HEADER: key},
        timeout=30,
    )
    prepared = await stub.prepare(
        snapshots_pb.PrepareSnapshotRequest(
            snapshotter=SNAPSHOTTER, key=key, parent=layer, labels={"probe": "1"}
        )
    )
    try:
        assert len(prepared.mounts) == 1
        mount = prepared.mounts[0]
        assert mount.type == "overlay"
        assert mount.source == "overlay"
        assert any(o.startswith("lowerdir=") for o in mount.options)
        assert any(o.startswith("upperdir=") for o in mount.options)
        mounts = await stub.mounts(snapshots_pb.MountsRequest(snapshotter=SNAPSHOTTER, key=key))
        assert mounts.mounts == prepared.mounts
        active = await stub.stat(snapshots_pb.StatSnapshotRequest(snapshotter=SNAPSHOTTER, key=key))
        assert active.info is not None
        assert (active.info.name, active.info.parent, active.info.kind) == (
            key,
            layer,
            snapshots_pb.Kind.ACTIVE,
        )
        assert active.info.labels == {"probe": "1"}
        updated = await stub.update(
            snapshots_pb.UpdateSnapshotRequest(
                snapshotter=SNAPSHOTTER,
                info=snapshots_pb.Info(name=key, labels={"probe": "2"}),
                update_mask=FieldMaskPb(paths=["labels.probe"]),
            )
        )
        assert updated.info is not None
        assert updated.info.labels == {"probe": "2"}
        usage = await stub.usage(snapshots_pb.UsageRequest(snapshotter=SNAPSHOTTER, key=layer))
        assert usage.size > 1_000_000
        assert usage.inodes >= 5
    finally:
        await stub.remove(snapshots_pb.RemoveSnapshotRequest(snapshotter=SNAPSHOTTER, key=key))
        await leases.delete(leases_pb.DeleteRequest(id=key, sync=True))
    with pytest.raises(GRPCError) as err:
        await stub.stat(snapshots_pb.StatSnapshotRequest(snapshotter=SNAPSHOTTER, key=key))
    assert err.value.status is Status.NOT_FOUND


async def test_leases(wire: Wire) -> None:
    stub = wire.stub(leases_pb.LeasesStub)
    lease_id = f"protos-{uuid.uuid4().hex[:8]}"
    created = await stub.create(leases_pb.CreateRequest(id=lease_id, labels={"owner": "test"}))
    assert created.lease is not None
    assert (created.lease.id, created.lease.labels) == (lease_id, {"owner": "test"})
    assert recent(created.lease.created_at)
    try:
        listed = await stub.list(leases_pb.ListRequest(filters=[f"id=={lease_id}"]))
        assert [(lease.id, lease.labels) for lease in listed.leases] == [
            (lease_id, {"owner": "test"})
        ]
        resource = leases_pb.Resource(id="sha256:" + "1" * 64, type="content")
        await stub.add_resource(leases_pb.AddResourceRequest(id=lease_id, resource=resource))
        held = await stub.list_resources(leases_pb.ListResourcesRequest(id=lease_id))
        assert held.resources == [resource]
        await stub.delete_resource(leases_pb.DeleteResourceRequest(id=lease_id, resource=resource))
        held = await stub.list_resources(leases_pb.ListResourcesRequest(id=lease_id))
        assert held.resources == []
    finally:
        await stub.delete(leases_pb.DeleteRequest(id=lease_id, sync=True))
    listed = await stub.list(leases_pb.ListRequest())
    assert lease_id not in [lease.id for lease in listed.leases]


async def test_task_lifecycle(
    wire: Wire, events: Callable[[list[str]], Events], root: Path
) -> None:
    tasks = wire.stub(tasks_pb.TasksStub)
    assert (await tasks.list(tasks_pb.ListTasksRequest())).tasks == []
    sub = events([f'namespace=="{wire.namespace}"'])
    await sub.start()
    shims_before = set(wire.daemon.shim_pids())
    # containerd 2.1.9 sometimes drops the shim's /tasks/delete (ctr events misses it too):
    # the scenario is tried again with a new id, never more than three times.
    for _ in range(3):
        cid = f"protos-{uuid.uuid4().hex[:8]}"
        lost = False
        wire.ctr(
            "containers",
            "create",
            "--rootfs",
            str(root),
            cid,
            "/bin/sleep",
            "60",
        )
        try:
            create_event = unpack(
                (await sub.next("/containers/create")).event, event_payloads_pb.ContainerCreate
            )
            assert create_event.id == cid
            assert create_event.runtime is not None
            assert create_event.runtime.name == RUNTIME
            try:
                await _run_task(wire, tasks, sub, cid)
            except _DeleteEventLost:
                lost = True
        finally:
            with_task = wire.daemon.ctr("tasks", "ls", namespace=wire.namespace).stdout
            if cid in with_task:
                wire.daemon.ctr(
                    "tasks", "kill", "-s", "SIGKILL", cid, namespace=wire.namespace, check=False
                )
                wire.daemon.ctr("tasks", "rm", "-f", cid, namespace=wire.namespace, check=False)
            wire.daemon.ctr("containers", "rm", cid, namespace=wire.namespace, check=False)
            leftover = set(wire.daemon.shim_pids()) - shims_before
            if leftover:
                wire.daemon.kill_shims(leftover)
        deleted = unpack(
            (await sub.next("/containers/delete")).event, event_payloads_pb.ContainerDelete
        )
        assert deleted.id == cid
        if not lost:
            return
    pytest.fail("containerd dropped /tasks/delete three times in a row")


# The shim publishes /tasks/delete as it shuts down, within a second when it does at all: past
# this bound it is taken for lost and the scenario tried again (the event tests wait 10 s).
DELETE_BOUND = 5.0


class _DeleteEventLost(Exception):
    """The daemon never delivered a task's /tasks/delete."""


async def _run_task(wire: Wire, tasks: tasks_pb.TasksStub, sub: Events, cid: str) -> None:
    # Options must be the runc shim's, whatever the runtime: an empty one is accepted.
    options = AnyPb(type_url="containerd.runc.v1.Options", value=bytes(runc_options_pb.Options()))
    created = await tasks.create(tasks_pb.CreateTaskRequest(container_id=cid, options=options))
    assert created.container_id == cid
    assert created.pid > 0
    pid = created.pid
    task_create = unpack((await sub.next("/tasks/create")).event, event_payloads_pb.TaskCreate)
    assert (task_create.container_id, task_create.pid) == (cid, pid)
    assert task_create.bundle.endswith(f"/{wire.namespace}/{cid}")
    assert task_create.io == event_payloads_pb.TaskIo()  # no stdio connected

    got = (await tasks.get(tasks_pb.GetRequest(container_id=cid))).process
    assert got is not None
    assert (got.id, got.pid, got.status) == (cid, pid, task_types_pb.Status.CREATED)
    started = await tasks.start(tasks_pb.StartRequest(container_id=cid))
    assert started.pid == pid
    start_event = unpack((await sub.next("/tasks/start")).event, event_payloads_pb.TaskStart)
    assert (start_event.container_id, start_event.pid) == (cid, pid)
    listed = (await tasks.list(tasks_pb.ListTasksRequest())).tasks
    assert [(t.id, t.pid, t.status) for t in listed] == [(cid, pid, task_types_pb.Status.RUNNING)]

    # An exec: its spec is a runtime-spec Process, as JSON.
    spec = {
        "args": ["/bin/sleep", "30"],
        "cwd": "/",
        "env": ["PATH=/bin"],
        "user": {"uid": 0, "gid": 0},
    }
    await tasks.exec(
        tasks_pb.ExecProcessRequest(
            container_id=cid,
            exec_id="e1",
            spec=AnyPb(type_url=PROCESS_SPEC_URL, value=json.dumps(spec).encode()),
        )
    )
    exec_pid = (await tasks.start(tasks_pb.StartRequest(container_id=cid, exec_id="e1"))).pid
    assert exec_pid > 0
    assert exec_pid != pid
    added = unpack((await sub.next("/tasks/exec-added")).event, event_payloads_pb.TaskExecAdded)
    assert added == event_payloads_pb.TaskExecAdded(container_id=cid, exec_id="e1")
    exec_started = unpack(
        (await sub.next("/tasks/exec-started")).event, event_payloads_pb.TaskExecStarted
    )
    assert exec_started == event_payloads_pb.TaskExecStarted(
        container_id=cid, exec_id="e1", pid=exec_pid
    )
    pids = (await tasks.list_pids(tasks_pb.ListPidsRequest(container_id=cid))).processes
    assert sorted(p.pid for p in pids) == sorted([pid, exec_pid])
    exec_info = next(p for p in pids if p.pid == exec_pid)
    details = unpack(exec_info.info, runc_options_pb.ProcessDetails)
    assert details.exec_id == "e1"

    # runc exec's setup process can still be in the cgroup as the exec's start is reported:
    # the count settles at the task's process and the exec's (bounded wait)
    for _ in range(100):
        metrics = (await tasks.metrics(tasks_pb.MetricsRequest(filters=[f"id=={cid}"]))).metrics
        assert [m.id for m in metrics] == [cid]
        assert recent(metrics[0].timestamp)
        data = metrics[0].data
        assert data is not None
        if data.type_url != "io.containerd.cgroups.v1.Metrics":
            break
        v1 = unpack(data, cgroups_v1_pb.Metrics)
        assert v1.pids is not None
        if v1.pids.current == 2:
            break
        await asyncio.sleep(0.05)
    assert data is not None
    if data.type_url == "io.containerd.cgroups.v1.Metrics":
        v1 = unpack(data, cgroups_v1_pb.Metrics)
        assert v1.pids is not None
        assert v1.pids.current == 2
        assert v1.memory is not None
        assert v1.memory.usage is not None
        assert v1.memory.usage.usage > 0
        assert v1.cpu is not None
        assert v1.cpu.usage is not None
        assert v1.cpu.usage.total > 0
    else:
        v2 = unpack(data, cgroups_v2_pb.Metrics)
        assert v2.pids is not None
        assert v2.pids.current == 2
        assert v2.memory is not None
        assert v2.memory.usage > 0
        assert v2.cpu is not None
        assert v2.cpu.usage_usec > 0

    await tasks.pause(tasks_pb.PauseTaskRequest(container_id=cid))
    paused = (await tasks.get(tasks_pb.GetRequest(container_id=cid))).process
    assert paused is not None
    assert paused.status is task_types_pb.Status.PAUSED
    assert (
        unpack((await sub.next("/tasks/paused")).event, event_payloads_pb.TaskPaused).container_id
        == cid
    )
    await tasks.resume(tasks_pb.ResumeTaskRequest(container_id=cid))
    assert (
        unpack((await sub.next("/tasks/resumed")).event, event_payloads_pb.TaskResumed).container_id
        == cid
    )

    await tasks.kill(tasks_pb.KillRequest(container_id=cid, exec_id="e1", signal=SIGKILL))
    exec_exit = await tasks.wait(tasks_pb.WaitRequest(container_id=cid, exec_id="e1"))
    assert exec_exit.exit_status == 128 + SIGKILL
    assert recent(exec_exit.exited_at)
    exec_gone = await tasks.delete_process(
        tasks_pb.DeleteProcessRequest(container_id=cid, exec_id="e1")
    )
    assert (exec_gone.id, exec_gone.pid, exec_gone.exit_status, exec_gone.exited_at) == (
        "e1",
        exec_pid,
        128 + SIGKILL,
        exec_exit.exited_at,
    )
    exit_event = unpack((await sub.next("/tasks/exit")).event, event_payloads_pb.TaskExit)
    assert exit_event == event_payloads_pb.TaskExit(
        container_id=cid,
        id="e1",
        pid=exec_pid,
        exit_status=128 + SIGKILL,
        exited_at=exec_exit.exited_at,
    )

    await tasks.kill(tasks_pb.KillRequest(container_id=cid, signal=SIGKILL))
    waited = await tasks.wait(tasks_pb.WaitRequest(container_id=cid))
    assert waited.exit_status == 128 + SIGKILL
    assert recent(waited.exited_at)
    stopped = (await tasks.get(tasks_pb.GetRequest(container_id=cid))).process
    assert stopped is not None
    assert (stopped.status, stopped.exit_status, stopped.exited_at) == (
        task_types_pb.Status.STOPPED,
        128 + SIGKILL,
        waited.exited_at,
    )
    gone = await tasks.delete(tasks_pb.DeleteTaskRequest(container_id=cid))
    assert (gone.pid, gone.exit_status, gone.exited_at) == (pid, 128 + SIGKILL, waited.exited_at)
    init_exit = unpack((await sub.next("/tasks/exit")).event, event_payloads_pb.TaskExit)
    assert (init_exit.id, init_exit.pid, init_exit.exit_status) == (cid, pid, 128 + SIGKILL)
    try:
        envelope = await sub.next("/tasks/delete", DELETE_BOUND)
    except TimeoutError as exc:
        raise _DeleteEventLost(cid) from exc
    task_delete = unpack(envelope.event, event_payloads_pb.TaskDelete)
    assert (task_delete.container_id, task_delete.pid, task_delete.exit_status) == (
        cid,
        pid,
        128 + SIGKILL,
    )
    assert task_delete.exited_at == waited.exited_at
    assert (await tasks.list(tasks_pb.ListTasksRequest())).tasks == []
