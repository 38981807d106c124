"""The user namespaces the isolating sandboxer gives its sandboxes, and the pool of host id
ranges they map to.

A sandbox gets a user namespace of its own (root inside is a block of unprivileged host ids)
unless it asks for the host's users (:data:`oci.HOST_USERS_ANNOTATION` ``"true"``, what
``oci.with_host_users()`` and ``new_sandbox(host_users=True)`` set) or its spec brings a user
namespace or mappings of its own, which are used as given.

A pool is ``START:SIZExCOUNT`` (e.g. ``100000000:65536x1000``): ``COUNT`` blocks of ``SIZE``
ids from host id ``START``. Each live sandbox holds one block, so no two live sandboxes share
a host id. A block is claimed by creating ``<dir>/<index>`` exclusively (the file names the
sandbox), so claims survive a sandboxer restart and two claims never race into one block;
releasing a sandbox's block removes its file.

The sandbox's user namespace is made by the sandboxer, owned by the block's first host id,
and pinned at ``<dir>/<index>.userns`` (see :mod:`._userns_owner`): the kernel's per-user
budgets of what runs inside are then charged to the block, not to the host's root. Making
one costs ~5 ms (a fork and two execs), so after each Start that claimed a block the
sandboxer makes the next free block's ahead (a *spare*): a Start that claims that block
finds its namespace ready. A claimed block's pin is otherwise always made anew (a namespace
left by an earlier holder is never reused).

The pin is there for runc, which joins the namespace by path when it creates the sandbox's
task; once the Start is done the sandbox's process holds the namespace, and the pin is
unmounted (:meth:`SandboxUsers.drop_pin`), as the root is (:mod:`._rootdetach`): it would
be one more mount in the host's table per live sandbox, which every new container's mount
namespace copies (containerd's Tasks.Create grows with it). Nothing reads the path after:
execs join the namespace through runc's ``/proc/<pid>/ns/user`` of the sandbox's process,
members through the client's (``_members._userns``), Status's ``userns_owner`` is noted in
the spec (:func:`._userns_owner.note_owner`), and a restarted sandboxer reads only the claim files.
The namespace then lives as long as a process in it (or a network namespace it owns). A
restarted sandboxer drops the pins of the started sandboxes it takes back; a Start cut
short keeps its pin until its claim goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

from .. import oci
from .._facts._golang import go_quote
from .._models import Mount
from .._serve._refusals import failed_precondition, invalid_argument
from ._podstate import PodRecord
from ._spec import decode_spec
from ._stages import mark
from ._threadwork import in_thread
from ._unpinning import LaterUnpins, PinGenerations
from ._userns_owner import (
    OwnedNamespaceError,
    make_pinned,
    rlimits_settable,
    unpin,
    userns_problem,
)

__all__ = (
    "DEFAULT_POOL",
    "IdBlock",
    "IdPool",
    "PoolConfig",
    "PoolExhaustedError",
    "SandboxUsers",
    "has_own_user_namespace",
    "host_users_asked",
    "idmap_options",
    "idmapped_mounts",
    "idmapped_root",
    "own_layers",
    "parse_pool",
    "userns_problem",
    "wants_private_users",
    "with_block",
)

DEFAULT_POOL = "100000000:65536x1000"
"""The pool a sandboxer uses unless told otherwise: 1000 blocks of 65,536 ids from 10^8."""

_log = logging.getLogger("sandboxclient.sandboxer")
_POOL = re.compile(r"^(\d+):(\d+)x(\d+)$")
_MAX_ID = 2**32 - 1


class PoolExhaustedError(RuntimeError):
    """Every block of the pool is held by a live sandbox."""


@dataclass(frozen=True, slots=True)
class IdBlock:
    """A range of host ids: host ``start`` .. ``start + size - 1`` is id 0.. inside."""

    start: int
    size: int


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """A parsed ``START:SIZExCOUNT``."""

    start: int
    size: int
    count: int


def parse_pool(text: str) -> PoolConfig:
    """Parse ``START:SIZExCOUNT``; a malformed or out-of-range pool raises ValueError naming it."""
    m = _POOL.match(text.strip())
    if m is None:
        raise ValueError(f"id pool {text!r} is not START:SIZExCOUNT (e.g. {DEFAULT_POOL})")
    start, size, count = (int(g) for g in m.groups())
    if start == 0:
        raise ValueError(f"id pool {text!r} starts at host id 0 (root)")
    if size < 1 or count < 1:
        raise ValueError(f"id pool {text!r} has an empty block size or count")
    if start + size * count - 1 > _MAX_ID:
        raise ValueError(f"id pool {text!r} ends past host id {_MAX_ID}")
    return PoolConfig(start, size, count)


class IdPool:
    """Blocks of a :class:`PoolConfig`, claimed by sandbox id in files under ``directory``.

    The claims are read from the files once, then kept in memory as well: a claim or a
    release costs the same with one live sandbox as with a thousand (the files are what a
    restart reads, and an exclusive create still guards each claim)."""

    def __init__(self, config: PoolConfig, directory: Path) -> None:
        self._config = config
        self._dir = directory
        self.spares: set[int] = set()
        """Indices of unclaimed blocks whose namespace this process made ahead, unused."""
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.making: int | None = None
        """The index whose namespace is being made ahead, taken by a claim only when no
        other block is free (it would be unpinned while being made)."""
        self.generations = PinGenerations()
        """Bumped at every pin made and every unpin of a block (see :mod:`._unpinning`)."""
        self._held: dict[str, int] = {}
        self._taken: set[int] = set()
        self._next = 0
        """No block below this index is free."""
        for entry in self._dir.iterdir():
            if entry.name.isdigit():
                self._note(entry.read_text(), int(entry.name))

    def _note(self, holder: str, index: int) -> None:
        self._held[holder] = index
        self._taken.add(index)

    def _block(self, index: int) -> IdBlock:
        return IdBlock(self._config.start + index * self._config.size, self._config.size)

    def pin_path(self, block: IdBlock) -> Path:
        """Where the user namespace of ``block`` is pinned."""
        return self._dir / f"{self.index_of(block)}.userns"

    def _claims(self) -> dict[str, int]:
        return dict(self._held)

    def held(self, sandbox_id: str) -> IdBlock | None:
        """The block ``sandbox_id`` holds, if any (claims are on disk: they survive a
        restart)."""
        index = self._held.get(sandbox_id)
        return None if index is None else self._block(index)

    def _free_indices(self) -> Iterator[int]:
        for index in range(self._next, self._config.count):
            if index not in self._taken:
                yield index

    def acquire(self, sandbox_id: str) -> IdBlock:
        """The block ``sandbox_id`` holds, else a free one, claimed for it: a spare's (its
        namespace is ready), else the lowest."""
        held = self.held(sandbox_id)
        if held is not None:
            return held
        spares = sorted(self.spares)
        free = (i for i in self._free_indices() if i not in self.spares and i != self.making)
        last = [] if self.making is None or self.making in self._taken else [self.making]
        for index in itertools.chain(spares, free, last):
            path = self._dir / str(index)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # claimed behind this process's back: note it, go on
                with contextlib.suppress(OSError):
                    self._note(path.read_text(), index)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(sandbox_id)
            self._note(sandbox_id, index)
            if index == self._next:
                self._next += 1
            block = self._block(index)
            if index in self.spares:
                self.spares.discard(index)
            else:
                self.unpin(index)  # never a namespace an earlier holder left
            return block
        raise PoolExhaustedError(f"all {self._config.count} id blocks are held by live sandboxes")

    def release(self, sandbox_id: str) -> None:
        """Free ``sandbox_id``'s block; idempotent."""
        index = self._held.get(sandbox_id)
        if index is not None:
            self._free(index, sandbox_id)

    def unpin(self, index: int) -> None:
        """Let go of the namespace pinned for the block at ``index``, if any."""
        self.generations.bump(index)
        unpin(self._dir / f"{index}.userns")

    def _free(self, index: int, holder: str) -> None:
        self.spares.discard(index)
        self.unpin(index)  # first: a claim left over frees it later
        (self._dir / str(index)).unlink(missing_ok=True)
        self._taken.discard(index)
        self._held.pop(holder, None)
        self._next = min(self._next, index)

    def next_free(self) -> IdBlock | None:
        """The block the next claim takes (see :meth:`acquire`), or None."""
        spare = next((i for i in sorted(self.spares) if i not in self._taken), None)
        index = spare if spare is not None else next(self._free_indices(), None)
        return None if index is None else self._block(index)

    def index_of(self, block: IdBlock) -> int:
        """The block's index in the pool."""
        return (block.start - self._config.start) // self._config.size

    def drop_spares(self) -> None:
        """Unpin every namespace of an unclaimed block (spares made ahead, and any a
        sandboxer killed between a pin and its claim left)."""
        taken = {str(i) for i in self._claims().values()}
        for pin in self._dir.glob("*.userns"):
            if pin.name.split(".")[0] not in taken:
                self.unpin(int(pin.name.split(".")[0]))
        self.spares.clear()

    def retain(self, keys: set[str]) -> None:
        """Free every block whose holder is not in ``keys`` (claims a sandboxer killed midway
        through a Create or Shutdown left for sandboxes it no longer holds)."""
        for holder, index in self._claims().items():
            if holder not in keys:
                self._free(index, holder)


def host_users_asked(spec: Mapping[str, Any] | None, annotations: Mapping[str, str]) -> bool | None:
    """What the sandbox says of ``hostUsers`` (its annotation :data:`oci.HOST_USERS_ANNOTATION`,
    in the spec or the Create request): True, False, or None when it says nothing.

    INVALID_ARGUMENT naming the annotation for another value."""
    given = ((spec or {}).get("annotations") or {}) if isinstance(spec, Mapping) else {}
    asked = {**annotations, **given}.get(oci.HOST_USERS_ANNOTATION)
    if asked is None:
        return None
    if asked not in ("true", "false"):
        key = f"annotations[{go_quote(oci.HOST_USERS_ANNOTATION)}]"
        raise invalid_argument(f'spec {key} must be "true" or "false", not {go_quote(str(asked))}')
    return bool(asked == "true")


def has_own_user_namespace(spec: Mapping[str, Any] | None) -> bool:
    """Whether the spec names a user namespace (new or joined) or id mappings of its own."""
    linux = (spec or {}).get("linux") or {}
    if linux.get("uidMappings") or linux.get("gidMappings"):
        return True
    return any(
        isinstance(n, dict) and n.get("type") == "user" for n in linux.get("namespaces") or []
    )


def wants_private_users(spec: Mapping[str, Any] | None, annotations: Mapping[str, str]) -> bool:
    """Whether the sandboxer must give the sandbox a user namespace and a block of its own:
    unless it asked for the host's users or its spec brings its own."""
    return host_users_asked(spec, annotations) is not True and not has_own_user_namespace(spec)


def with_block(spec: dict[str, Any], block: IdBlock, path: str = "") -> None:
    """Give ``spec`` (a full spec, changed in place) the user namespace pinned at ``path``
    (or, without one, a new one runc makes) in which ids 0..size-1 are the block's host ids.
    The mappings are given either way: runc 1.1 wants them for a namespace it joins too."""
    linux = spec.setdefault("linux", {})
    namespaces = linux.setdefault("namespaces", [])
    namespaces.append({"type": "user", "path": path} if path else {"type": "user"})
    mapping = [{"containerID": 0, "hostID": block.start, "size": block.size}]
    linux["uidMappings"] = [dict(m) for m in mapping]
    linux["gidMappings"] = [dict(m) for m in mapping]


def idmap_options(block: IdBlock) -> tuple[str, str]:
    """The mount options with which containerd's shim idmaps a mount (an overlay's lower
    directories, or a bind) for the block: ``uidmap=`` and ``gidmap=``."""
    text = f"0:{block.start}:{block.size}"
    return f"uidmap={text}", f"gidmap={text}"


def idmapped_root(mounts: tuple[Mount, ...], block: IdBlock) -> tuple[tuple[Mount, ...], bool]:
    """A Create request's (or a ``root.path``'s bind) root mounts, idmapped for the block by
    containerd's shim: an overlay's lower directories, a bind's tree (made read-only by runc
    instead of by the mount: containerd idmaps no read-only bind). Also whether the root must
    be read-only. FAILED_PRECONDITION for a mount the shim cannot idmap."""
    options = idmap_options(block)
    done: list[Mount] = []
    readonly = False
    for mount in mounts:
        if mount.type == "overlay":
            done.append(Mount(mount.type, mount.source, mount.target, (*mount.options, *options)))
        elif mount.type == "bind" or any(o in ("bind", "rbind") for o in mount.options):
            readonly = readonly or "ro" in mount.options
            kept = tuple(o for o in mount.options if o not in ("ro", "rw"))
            done.append(Mount(mount.type, mount.source, mount.target, (*kept, *options)))
        else:
            raise failed_precondition(
                f"the sandbox's rootfs mount of type {go_quote(mount.type)} cannot be idmapped "
                "for its user namespace (only overlay and bind mounts can): give an overlay or "
                "a bind, or ask for the host's users (host_users=True, annotation "
                f"{oci.HOST_USERS_ANNOTATION}=true)"
            )
    return tuple(done), readonly


def own_layers(mounts: tuple[Mount, ...], block: IdBlock) -> None:
    """Make each overlay's upper and work directory (their top, if root's) the block root's,
    so the sandbox's root owns its ``/`` as containerd's snapshotter does for idmapped
    snapshots."""
    for mount in mounts:
        if mount.type != "overlay":
            continue
        for option in mount.options:
            key, _, path = option.partition("=")
            if key in ("upperdir", "workdir") and os.stat(path).st_uid == 0:
                os.chown(path, block.start, block.start)


def idmapped_mounts(
    spec: dict[str, Any], mounts: tuple[Mount, ...], block: IdBlock
) -> tuple[Mount, ...]:
    """The root mounts idmapped for ``block`` (see :func:`idmapped_root`), their overlay
    layers the block root's, and ``spec``'s root read-only where a bind asked for it."""
    mounts, readonly = idmapped_root(mounts, block)
    spec["root"]["readonly"] = bool(spec["root"].get("readonly")) or readonly
    own_layers(mounts, block)
    mark("root mounts, idmap options, layer owners")
    return mounts


class SandboxUsers:
    """Which sandboxes get a user namespace, and their blocks of the pool (``pool``, a
    :class:`PoolConfig` or its ``START:SIZExCOUNT`` text) claimed under ``directory``; claims
    of sandboxes not in ``held`` are dropped, and the pins of those in ``started`` (pins an
    earlier sandboxer kept, or one killed between a Start and its unpin, left)."""

    def __init__(
        self, pool: PoolConfig | str, directory: Path, held: set[str], started: Collection[str] = ()
    ) -> None:
        self.pool = IdPool(pool if isinstance(pool, PoolConfig) else parse_pool(pool), directory)
        self.pool.retain(held)
        self.pool.drop_spares()
        for key in started:
            block = self.pool.held(key)
            if block is not None:
                self.drop_pin(block)
        self._making = asyncio.Lock()
        self.unpins: LaterUnpins[IdBlock] = LaterUnpins(self.generation)
        self._spare: asyncio.Task[None] | None = None

    def generation(self, block: IdBlock) -> int:
        """The generation of ``block``'s pin (see :class:`._unpinning.PinGenerations`)."""
        return self.pool.generations.of(self.pool.index_of(block))

    @contextlib.contextmanager
    def claimed(self, record: PodRecord) -> Iterator[IdBlock | None]:
        """The sandbox's block (see :meth:`claim`) for a Start, given back if the Start
        fails and nothing it made may still exist (the record is no longer ``starting``, its
        process never ran: one cut after keeps it until the sandbox is shut down)."""
        block = self.claim(record.key, spec := decode_spec(record.sandbox.spec), record.annotations)
        try:
            yield block
        except BaseException:
            if not record.starting and not record.pid:
                self.pool.release(record.key)
            raise
        if block is not None:  # a command's namespace may end with the unpin: after the answer
            self.unpins.drop(spec, self._making, self.drop_pin, block)
            self.prepare_next()  # after the Start, not during it: it competes for the CPU

    def drop_pin(self, block: IdBlock) -> None:
        """Unpin ``block``'s namespace once its sandbox's Start is done (its process holds it,
        or, under gVisor or with rlimits, it is a spare the Start did not join); a failure
        only leaves the pin until the block is given back."""
        try:
            self.pool.unpin(self.pool.index_of(block))
        except OSError as exc:
            _log.warning("cannot unpin a started sandbox's user namespace: %s", exc)
        mark("user namespace unpinned")

    def prepare_next(self) -> None:
        """Start making the next free block's namespace ahead (unless one is on its way)."""
        if self._spare is None or self._spare.done():
            self._spare = asyncio.create_task(self._make_spare())

    def claim(
        self, key: str, spec: Mapping[str, Any] | None, annotations: Mapping[str, str]
    ) -> IdBlock | None:
        """The block for the sandbox ``key`` when it gets a user namespace of its own, else
        None. FAILED_PRECONDITION naming why when the host cannot give it one or the pool is
        used up: never silently the host's users."""
        if not wants_private_users(spec, annotations):
            return None
        problem = userns_problem()
        if problem is not None:
            raise failed_precondition(
                f"the sandbox needs a user namespace of its own but {problem}; ask for the "
                f"host's users (host_users=True) to run it as the host's root"
            )
        try:
            block = self.pool.acquire(key)
        except PoolExhaustedError as exc:
            raise failed_precondition(f"no user namespace for the sandbox: {exc}") from None
        except OSError as exc:
            raise failed_precondition(f"cannot claim an id block for the sandbox: {exc}") from None
        mark("id block claim")
        return block

    async def pin(self, block: IdBlock, spec: Mapping[str, Any] | None) -> str:
        """The path of ``block``'s user namespace, owned by its first host id, made and
        pinned if need be; "" (runc makes the namespace) where the sandbox's ``spec`` asks
        for rlimits runc could not set in it (see :mod:`._userns_owner`).
        FAILED_PRECONDITION naming why it cannot be made."""
        process = (spec or {}).get("process") or {}
        if process.get("rlimits") and not rlimits_settable():
            return ""
        path = self.pool.pin_path(block)
        try:
            async with self._making:  # one at a time: a spare of this block may be on its way
                self.pool.generations.bump(self.pool.index_of(block))
                # Cancelled, the Start waits for the thread: what it pins, the Start's undo
                # (the block given back) then unpins, rather than the pin coming after it.
                await in_thread(make_pinned, path, block.start, block.size)
        except OwnedNamespaceError as exc:
            raise failed_precondition(
                f"cannot make the sandbox's user namespace: {exc}; ask for the host's users "
                "(host_users=True) to run it as the host's root"
            ) from None
        mark("user namespace")
        return str(path)

    async def _make_spare(self) -> None:
        """Make the next free block's namespace ahead (see the module's docstring); a
        failure only means the next Start makes its own."""
        async with self._making:
            try:
                block = self.pool.next_free()
            except OSError as exc:
                _log.warning("cannot read the id pool's claims: %s", exc)
                return
            if block is None:
                return
            index = self.pool.index_of(block)
            if index in self.pool.spares:
                return
            self.pool.making = index
            self.pool.generations.bump(index)
            try:
                await asyncio.to_thread(make_pinned, self.pool.pin_path(block), *astuple(block))
            except (OwnedNamespaceError, OSError) as exc:
                _log.warning("cannot make a user namespace ahead: %s", exc)
                return
            finally:
                self.pool.making = None
            if self.pool.next_free() == block:  # not claimed meanwhile
                self.pool.spares.add(index)

    async def wait_for_spare(self) -> None:
        """Wait until the spare being made (if any) is ready."""
        if self._spare is not None:
            await asyncio.shield(self._spare)

    async def aclose(self) -> None:
        """Let the spare being made be done (cancelled, its thread would pin it after the
        spares are dropped), and unpin the spares: only claimed blocks keep theirs."""
        if self._spare is not None:
            await self._spare
        await self.unpins.drain()
        async with self._making:
            self.pool.drop_spares()
