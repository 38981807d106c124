"""The stand-in's snapshotter and Snapshots service: a directory per snapshot.

One snapshotter, served under the name clients ask for by default, ``overlayfs``
(:data:`SNAPSHOTTER`), but working as containerd's ``native`` one does: each snapshot is a
directory of the stand-in's own, an active snapshot or view a full copy of its parent's
tree, and its mounts are one ``bind`` mount of that directory (``rbind`` and ``rw`` or
``ro``), which the stand-in's Tasks and sandbox controller take as the root they resolve
programs and working directories under (nothing is mounted). Snapshots are per namespace;
Prepare, View, Mounts, Commit, Remove, Stat, Update, List, Usage and Cleanup answer with
containerd 2.1.9's codes and messages; a snapshot made under a ``containerd-lease`` header
is added to that lease. Any other snapshotter name is refused as containerd refuses one it
has not loaded.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import datetime
from typing import Final

from grpclib.const import Handler, Status
from grpclib.exceptions import GRPCError

from .._facts._clock import utcnow
from .._facts._golang import go_quote
from .._serve._refusals import already_exists, failed_precondition, invalid_argument, not_found
from .._serve._server import current_namespace
from .._wire._pb import EmptyPb, MountPb, snapshots_pb
from ._filters import Adaptor, map_field, matches, parse_filters
from ._leases import LeaseTable
from ._services import Binder
from ._workers import Stopped, Workers

__all__ = ("SNAPSHOTTER", "SnapshotTable", "SnapshotsService")

SNAPSHOTTER: Final = "overlayfs"
"""The name the stand-in's snapshotter answers to (containerd's default on Linux)."""
_MAX_SNAPSHOTS: Final = 10_000
_MAX_KEY: Final = 4096
Kind = snapshots_pb.Kind


@dataclasses.dataclass
class _Snapshot:
    key: str
    kind: snapshots_pb.Kind
    parent: str
    path: str
    created_at: datetime
    updated_at: datetime
    labels: dict[str, str]
    internal: str = ""
    """The key containerd's snapshotter knows it by (``<namespace>/<sequence>/<key>``),
    which some of its messages name."""

    def info(self) -> snapshots_pb.Info:
        return snapshots_pb.Info(
            name=self.key,
            parent=self.parent,
            kind=self.kind,
            created_at=self.created_at,
            updated_at=self.updated_at,
            labels=dict(self.labels),
        )


def check_snapshotter(name: str) -> None:
    """INVALID_ARGUMENT unless ``name`` is the stand-in's snapshotter, as containerd's."""
    if not name:
        raise invalid_argument("snapshotter argument missing")
    if name != SNAPSHOTTER:
        raise invalid_argument(f"snapshotter not loaded: {name}")


class SnapshotTable:
    """The snapshots of every namespace, each a directory under ``root``."""

    def __init__(self, root: str, leases: LeaseTable, workers: Workers | None = None) -> None:
        self.workers = workers if workers is not None else Workers()
        """The threads copies and fills run in (the stand-in waits for them on close)."""
        self._root = os.path.join(root, "snapshots")
        os.makedirs(self._root, mode=0o700, exist_ok=True)
        self._leases = leases
        self._by_namespace: dict[str, dict[str, _Snapshot]] = {}
        self._sequence: dict[str, int] = {}

    def _internal(self, namespace: str, key: str) -> str:
        """The next backend key, numbered per namespace as containerd's metadata store."""
        self._sequence[namespace] = number = self._sequence.get(namespace, 0) + 1
        return f"{namespace}/{number}/{key}"

    def _of(self, namespace: str) -> dict[str, _Snapshot]:
        return self._by_namespace.setdefault(namespace, {})

    def namespaces(self) -> set[str]:
        """The namespaces that hold one or more."""
        return {ns for ns, held in self._by_namespace.items() if held}

    def keys(self, namespace: str) -> list[str]:
        """The keys and names of ``namespace``'s snapshots, sorted."""
        return sorted(self._by_namespace.get(namespace, {}))

    def get(self, namespace: str, key: str) -> _Snapshot:
        """Snapshot ``key``; NOT_FOUND as containerd words it."""
        found = self._by_namespace.get(namespace, {}).get(key)
        if found is None:
            raise not_found(f"snapshot {key} does not exist")
        return found

    def owns(self, path: str) -> bool:
        """Whether ``path`` is the directory of one of the stand-in's snapshots."""
        return os.path.dirname(os.path.dirname(os.path.abspath(path))) == self._root

    def root_of(self, mounts: list[MountPb]) -> str | None:
        """The directory a task's rootfs ``mounts`` make its root, when they are the one bind
        mount of one of the stand-in's snapshots; None for any other mounts."""
        if len(mounts) != 1 or mounts[0].type != "bind" or not self.owns(mounts[0].source):
            return None
        return mounts[0].source if os.path.isdir(mounts[0].source) else None

    def _check_new(self, namespace: str, key: str, parent: str) -> _Snapshot | None:
        if not key:
            raise invalid_argument("key must not be empty")
        if len(key) > _MAX_KEY or "\0" in key:
            raise invalid_argument(f"snapshot key of {len(key)} characters is refused")
        snapshots = self._of(namespace)
        if key in snapshots:
            raise already_exists(f"snapshot {go_quote(key)}")
        if len(snapshots) >= _MAX_SNAPSHOTS:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED, f"the stand-in keeps at most {_MAX_SNAPSHOTS} snapshots"
            )
        if not parent:
            return None
        found = snapshots.get(parent)
        if found is None:
            raise not_found(f"parent snapshot {parent} does not exist")
        if found.kind is not Kind.COMMITTED:
            raise invalid_argument(f"parent {go_quote(parent)} is not committed snapshot")
        return found

    async def create(
        self,
        namespace: str,
        key: str,
        parent: str,
        labels: dict[str, str],
        kind: snapshots_pb.Kind,
        fill: Callable[[str, threading.Event], None] | None = None,
    ) -> _Snapshot:
        """A new active snapshot or view ``key`` on ``parent`` (a copy of its tree), filled
        by ``fill(directory, stop)`` if given; the copy and the fill run in a thread, waited
        for (and told to stop) if the call is cancelled, before the directory is removed."""
        above = self._check_new(namespace, key, parent)
        self._leases.check_header(namespace)
        home = tempfile.mkdtemp(prefix="s-", dir=self._root)
        path = os.path.join(home, "fs")
        try:
            lower = above.path if above else None
            await self.workers.run(lambda stop: _populate(path, lower, fill, stop))
            self._check_new(namespace, key, parent)  # taken meanwhile?
        except BaseException:
            await self.remove_files(home)
            raise
        now = utcnow()
        made = _Snapshot(
            key, kind, parent, path, now, now, dict(labels), self._internal(namespace, key)
        )
        self._of(namespace)[key] = made
        self._leases.add_from_header(namespace, f"snapshots/{SNAPSHOTTER}", key)
        return made

    def commit(self, namespace: str, name: str, key: str, labels: dict[str, str]) -> None:
        """Active snapshot ``key`` becomes committed snapshot ``name``."""
        snapshots = self._of(namespace)
        # In containerd's order: the new name's bucket, the key, then the backend's check.
        if not name:
            raise GRPCError(Status.UNKNOWN, "bucket name required")
        if name in snapshots:
            raise already_exists(f"snapshot {go_quote(name)}")
        active = self.get(namespace, key)
        if active.kind is not Kind.ACTIVE:
            internal = active.internal
            raise failed_precondition(
                f"failed to commit snapshot {internal}: snapshot {go_quote(internal)} is not active"
            )
        del snapshots[key]
        now = utcnow()
        snapshots[name] = dataclasses.replace(
            active,
            key=name,
            kind=Kind.COMMITTED,
            created_at=now,
            updated_at=now,
            labels=dict(labels) or active.labels,
            internal=self._internal(namespace, name),
        )
        self._leases.forget(namespace, f"snapshots/{SNAPSHOTTER}", key)
        self._leases.add_from_header(namespace, f"snapshots/{SNAPSHOTTER}", name)

    def remove(self, namespace: str, key: str) -> str:
        """Remove snapshot ``key`` (FAILED_PRECONDITION with children); the directory of its
        files, for :meth:`remove_files` (the table changes at once, on the event loop)."""
        found = self.get(namespace, key)
        snapshots = self._of(namespace)
        if any(s.parent == key for s in snapshots.values()):
            raise failed_precondition("cannot remove snapshot with child")
        del snapshots[key]
        self._leases.forget(namespace, f"snapshots/{SNAPSHOTTER}", key)
        return os.path.dirname(found.path)

    async def remove_files(self, *directories: str) -> None:
        """Remove ``directories`` (of snapshots removed) in a thread, off the event loop,
        and return once they are gone (also when the caller is cancelled meanwhile)."""
        if directories:
            await self.workers.run(lambda stop: _remove_trees(directories))


def _remove_trees(directories: Iterable[str]) -> None:
    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)


def _populate(
    path: str,
    parent: str | None,
    fill: Callable[[str, threading.Event], None] | None,
    stop: threading.Event,
) -> None:
    def copy(source: str, target: str) -> object:
        if stop.is_set():
            raise Stopped("the stand-in is closing")
        return shutil.copy2(source, target)

    if parent is not None:
        shutil.copytree(parent, path, symlinks=True, copy_function=copy)
    else:
        os.mkdir(path, 0o755)
    if fill is not None:
        fill(path, stop)


def mounts_of(snapshot: _Snapshot) -> list[MountPb]:
    """A snapshot's mounts, as containerd's native snapshotter gives them."""
    mode = "ro" if snapshot.kind is Kind.VIEW else "rw"
    return [MountPb(type="bind", source=snapshot.path, options=["rbind", mode])]


def _usage(path: str) -> tuple[int, int]:
    size = inodes = 0
    seen: set[tuple[int, int]] = set()
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                st = os.lstat(os.path.join(top, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            inodes += 1
            size += st.st_blocks * 512
    return size, inodes + 1


def _adaptor(info: snapshots_pb.Info) -> Adaptor:
    def field(path: tuple[str, ...]) -> tuple[str, bool]:
        if path == ("name",):
            return info.name, bool(info.name)
        if path == ("parent",):
            return info.parent, bool(info.parent)
        if path == ("kind",):
            return info.kind.name.lower(), True
        if path[:1] == ("labels",):
            return map_field(path[1:], info.labels)
        return "", False

    return field


class SnapshotsService(snapshots_pb.SnapshotsBase):
    """containerd's Snapshots service over a :class:`SnapshotTable`."""

    def __init__(self, table: SnapshotTable, bind: Binder) -> None:
        self._table = table
        self._bind = bind

    def __mapping__(self) -> dict[str, Handler]:
        return self._bind(super().__mapping__())

    async def prepare(
        self, message: snapshots_pb.PrepareSnapshotRequest
    ) -> snapshots_pb.PrepareSnapshotResponse:
        """Prepare: an active snapshot on a committed parent."""
        check_snapshotter(message.snapshotter)
        made = await self._table.create(
            current_namespace(), message.key, message.parent, dict(message.labels), Kind.ACTIVE
        )
        return snapshots_pb.PrepareSnapshotResponse(mounts=mounts_of(made))

    async def view(
        self, message: snapshots_pb.ViewSnapshotRequest
    ) -> snapshots_pb.ViewSnapshotResponse:
        """View: a read-only snapshot of a committed parent."""
        check_snapshotter(message.snapshotter)
        made = await self._table.create(
            current_namespace(), message.key, message.parent, dict(message.labels), Kind.VIEW
        )
        return snapshots_pb.ViewSnapshotResponse(mounts=mounts_of(made))

    async def mounts(self, message: snapshots_pb.MountsRequest) -> snapshots_pb.MountsResponse:
        """Mounts: how to mount an active snapshot or view."""
        check_snapshotter(message.snapshotter)
        found = self._table.get(current_namespace(), message.key)
        if found.kind is Kind.COMMITTED:
            raise failed_precondition(f"snapshot {message.key} is committed: cannot mount it")
        return snapshots_pb.MountsResponse(mounts=mounts_of(found))

    async def commit(self, message: snapshots_pb.CommitSnapshotRequest) -> EmptyPb:
        """Commit: an active snapshot becomes a committed one of another name."""
        check_snapshotter(message.snapshotter)
        self._table.commit(current_namespace(), message.name, message.key, dict(message.labels))
        return EmptyPb()

    async def remove(self, message: snapshots_pb.RemoveSnapshotRequest) -> EmptyPb:
        """Remove: a snapshot without children, and its files."""
        check_snapshotter(message.snapshotter)
        await self._table.remove_files(self._table.remove(current_namespace(), message.key))
        return EmptyPb()

    async def stat(
        self, message: snapshots_pb.StatSnapshotRequest
    ) -> snapshots_pb.StatSnapshotResponse:
        """Stat: one snapshot's record."""
        check_snapshotter(message.snapshotter)
        found = self._table.get(current_namespace(), message.key)
        return snapshots_pb.StatSnapshotResponse(info=found.info())

    async def update(
        self, message: snapshots_pb.UpdateSnapshotRequest
    ) -> snapshots_pb.UpdateSnapshotResponse:
        """Update: a snapshot's labels."""
        check_snapshotter(message.snapshotter)
        if message.info is None:
            raise invalid_argument("info must be set")
        found = self._table.get(current_namespace(), message.info.name)
        paths = list(message.update_mask.paths) if message.update_mask is not None else []
        if not paths or "labels" in paths:
            found.labels = dict(message.info.labels)
        else:
            for path in paths:
                key = path.removeprefix("labels.")
                if key == path:
                    raise invalid_argument(f"cannot update {go_quote(path)} field on snapshot")
                if key in message.info.labels:
                    found.labels[key] = message.info.labels[key]
                else:
                    found.labels.pop(key, None)
        found.updated_at = utcnow()
        return snapshots_pb.UpdateSnapshotResponse(info=found.info())

    async def list(
        self, message: snapshots_pb.ListSnapshotsRequest
    ) -> AsyncIterator[snapshots_pb.ListSnapshotsResponse]:
        """List: the snapshots that pass the filters, in pages of 100."""
        check_snapshotter(message.snapshotter)
        filters = parse_filters(message.filters)
        namespace = current_namespace()
        infos = [self._table.get(namespace, k).info() for k in self._table.keys(namespace)]
        kept = [i for i in infos if matches(filters, _adaptor(i))]
        for at in range(0, len(kept), 100):
            yield snapshots_pb.ListSnapshotsResponse(info=kept[at : at + 100])

    async def usage(self, message: snapshots_pb.UsageRequest) -> snapshots_pb.UsageResponse:
        """Usage: the bytes and inodes a snapshot's directory takes."""
        check_snapshotter(message.snapshotter)
        found = self._table.get(current_namespace(), message.key)
        size, inodes = _usage(found.path)
        return snapshots_pb.UsageResponse(size=size, inodes=inodes)

    async def cleanup(self, message: snapshots_pb.CleanupRequest) -> EmptyPb:
        """Cleanup: nothing to do (no snapshot leaves files behind it)."""
        check_snapshotter(message.snapshotter)
        return EmptyPb()
