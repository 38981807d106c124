"""The Client: a connection to containerd in one namespace, and the sandboxes it reaches."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any, TypedDict

from typing_extensions import Unpack

from . import _server_info
from ._connection import USE_CLIENT_DEFAULT, ClientState, Connection, Timeout
from ._container import Container
from ._containers import ContainerStore
from ._controller import Controller
from ._create import ROLLBACK_TIMEOUT, create_sandbox
from ._events import DEFAULT_EVENT_BUFFER, EventStream, scoped_filters
from ._models import ContainerInfo, SandboxInfo
from ._newcontainer import DEFAULT_RUNTIME, ContainerRequest, Containers
from ._options import (
    NewSandboxOpt,
    SandboxDraft,
    with_sandbox_extension,
    with_sandbox_labels,
    with_sandbox_runtime,
    with_sandbox_spec,
    with_sandboxer,
)
from ._sandbox import Sandbox
from ._server_info import SandboxerInfo, ServerVersion
from ._store import SandboxStore
from ._validation import checked_identifier
from ._wait import WaitRegistry
from ._wire._convert import AnyLike, to_any_value
from ._wire._transport import (
    DEFAULT_KEEPALIVE_TIME,
    DEFAULT_KEEPALIVE_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    WireOptions,
)
from .errors import ContainerdError, InvalidArgumentError, NotFoundError, UnimplementedError

__all__ = (
    "DEFAULT_ADDRESS",
    "DEFAULT_KEEPALIVE_TIME",
    "DEFAULT_KEEPALIVE_TIMEOUT",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_TIMEOUT",
    "Client",
    "NewSandboxKeywords",
)

DEFAULT_ADDRESS = "/run/containerd/containerd.sock"
DEFAULT_TIMEOUT = 30.0

_log = logging.getLogger("sandboxclient")


class NewSandboxKeywords(TypedDict, total=False):
    """The keyword forms of ``new_sandbox``'s options (applied after the positional ones)."""

    labels: Mapping[str, str]
    runtime: str
    runtime_options: AnyLike
    spec: Mapping[str, Any]
    extensions: Mapping[str, AnyLike]
    sandboxer: str
    timeout: Timeout


class Client:
    """A connection to containerd in one namespace.

    Use it as ``async with Client(address) as client:`` or call ``aclose()`` when done. The
    channel connects on the first call. Every call carries the namespace and a deadline: the
    call's ``timeout`` if it gives one (None for none), else the Client's ``timeout``. Waits
    have no deadline unless asked. Closing the Client cancels every wait it started; their
    channels then yield a status whose error is a ``ClientClosedError``.

    An answer over ``max_message_size`` bytes (16 MiB, containerd's own limit) fails with
    ``ResourceExhaustedError`` before it is read. While a call is in flight and the daemon
    has sent nothing for ``keepalive_time`` seconds, the connection sends it a PING, and
    closes when nothing comes back within ``keepalive_timeout``: its calls, even those with
    no deadline, then fail with ``UnavailableError`` (waits retry). ``keepalive_time=None``
    sends no PINGs.
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        namespace: str = "default",
        sandboxer: str = "shim",
        timeout: float | None = DEFAULT_TIMEOUT,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        keepalive_time: float | None = DEFAULT_KEEPALIVE_TIME,
        keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT,
    ) -> None:
        if not isinstance(address, str) or not address:
            raise ValueError("address must be a non-empty socket path")
        try:
            checked_identifier(namespace, "namespace")
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"namespace validation: {exc}") from None
        if not isinstance(sandboxer, str) or not sandboxer:
            raise ValueError("sandboxer must be a non-empty string")
        if timeout is not None and not timeout > 0:
            raise ValueError("timeout must be a positive number of seconds, or None")
        wire = WireOptions(max_message_size, keepalive_time, keepalive_timeout)
        self._connection = Connection(address, namespace=namespace, timeout=timeout, wire=wire)
        self._sandboxer = sandboxer
        self._waits = WaitRegistry(self._connection)
        self._store = SandboxStore(self._connection)
        self._containers = Containers(self._connection, self._waits)
        self._controllers: dict[str, Controller] = {}

    def __repr__(self) -> str:
        return (
            f"<Client {self.address!r} namespace={self.namespace!r} "
            f"sandboxer={self._sandboxer!r} {self.state.value}>"
        )

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The daemon's socket path."""
        return self._connection.address

    @property
    def namespace(self) -> str:
        """The containerd namespace every call is made in."""
        return self._connection.namespace

    @property
    def sandboxer(self) -> str:
        """The default sandbox controller for new sandboxes."""
        return self._sandboxer

    @property
    def timeout(self) -> float | None:
        """The default deadline of a call, in seconds (None: no deadline)."""
        return self._connection.timeout

    @property
    def state(self) -> ClientState:
        """UNOPENED until the first call or ``async with``, then OPENED, then CLOSED."""
        return self._connection.state

    async def __aenter__(self) -> Client:
        self._connection.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel every outstanding wait, finish any clean-up under way, close the connection.

        Safe to call twice or at once from several tasks; a cancelled ``aclose()`` still
        closes (the cancellation is raised once it has).
        """
        await self._connection.aclose()

    # -- services ----------------------------------------------------------------------------

    def controller(self, name: str | None = None) -> Controller:
        """The handle of sandbox controller ``name`` (by default the Client's sandboxer)."""
        name = self._sandboxer if name is None else name
        if not isinstance(name, str) or not name:
            raise ValueError("sandboxer must be a non-empty string")
        return self._controller_named(name)

    def _controller_named(self, name: str) -> Controller:
        # Unchecked: a stored record may name no sandboxer (containerd's store allows it);
        # its handle's controller calls then get containerd's own refusal.
        found = self._controllers.get(name)
        if found is None:
            found = self._controllers[name] = Controller(self._connection, self._waits, name)
        return found

    @property
    def sandbox_store(self) -> SandboxStore:
        """The sandbox records of the Client's namespace."""
        return self._store

    @property
    def container_store(self) -> ContainerStore:
        """The container records of the Client's namespace (records only, no tasks)."""
        return self._containers.store

    def sandbox_handle(self, info: SandboxInfo, *, pid: int | None = None) -> Sandbox:
        """A handle for a record this Client did not load (from a listing, say), asking the
        daemon nothing; its calls go through this Client, in its namespace."""
        return Sandbox(
            info,
            store=self._store,
            controller=self._controller_named(info.sandboxer),
            containers=self._containers,
            pid=pid,
        )

    # -- sandboxes ---------------------------------------------------------------------------

    async def new_sandbox(
        self, sandbox_id: str, *opts: NewSandboxOpt, **options: Unpack[NewSandboxKeywords]
    ) -> Sandbox:
        """Create a sandbox in the store and with its controller, and return its handle.

        Options apply in order, then the keyword forms (see :class:`NewSandboxKeywords`). If
        the controller refuses the sandbox, or the call is cancelled or times out midway,
        what was made is undone before the error is raised, so nothing is left behind.
        """
        if not sandbox_id:
            raise ValueError("sandbox ID must be specified")
        checked_identifier(sandbox_id, "sandbox ID")
        draft = SandboxDraft(sandbox_id)
        for opt in (*opts, *_keyword_opts(options, "new_sandbox")):
            opt(draft)
        controller = self.controller(draft.sandboxer)
        timeout = options.get("timeout", USE_CLIENT_DEFAULT)
        info = await create_sandbox(self._connection, self._store, controller, draft, timeout)
        return self.sandbox_handle(info)

    @contextlib.asynccontextmanager
    async def sandbox(
        self, sandbox_id: str, *opts: NewSandboxOpt, **options: Unpack[NewSandboxKeywords]
    ) -> AsyncIterator[Sandbox]:
        """Create and start a sandbox for the ``async with`` block, and shut it down after.

        Takes the arguments of ``new_sandbox``. The shutdown runs on normal exit, on error and
        on cancellation, to its end even if cancelled again. If the block raised or was
        cancelled, that is what propagates, and a failed shutdown is logged; otherwise the
        shutdown's own error is raised.
        """
        _check_keywords(options, "sandbox")
        sb = await self.new_sandbox(sandbox_id, *opts, **options)
        timeout = options.get("timeout", USE_CLIENT_DEFAULT)
        bound = self._connection.deadline(timeout) or ROLLBACK_TIMEOUT
        try:
            await sb.start(timeout=timeout)
            yield sb
        except BaseException:
            try:
                await self._connection.run_shielded(sb.shutdown(timeout=bound))
            except ContainerdError as exc:
                _log.warning("shutting down sandbox %s after an error: %s", sandbox_id, exc)
            raise
        await self._connection.run_shielded(sb.shutdown(timeout=bound))

    async def load_sandbox(
        self, sandbox_id: str, *, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> Sandbox:
        """The handle of an existing sandbox, with its pid when its controller knows it."""
        info = await self._store.get(sandbox_id, timeout=timeout)
        pid: int | None = None
        try:
            if info.sandboxer:  # else no controller to ask
                status = await self.controller(info.sandboxer).status(sandbox_id, timeout=timeout)
                pid = status.pid or None
        except (NotFoundError, UnimplementedError):
            # The record is still worth a handle: it is how the caller can shut it down.
            pass
        return self.sandbox_handle(info, pid=pid)

    async def get_sandbox(
        self, sandbox_id: str, *, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> SandboxInfo:
        """The store record of a sandbox."""
        return await self._store.get(sandbox_id, timeout=timeout)

    async def list_sandboxes(
        self, *filters: str, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> list[SandboxInfo]:
        """The store records matching any of ``filters`` (containerd filter syntax), or all."""
        return await self._store.list(*filters, timeout=timeout)

    async def delete_sandbox(
        self, sandbox_id: str, *, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> None:
        """Remove a sandbox's store record only; ``Sandbox.shutdown`` also tells its controller."""
        await self._store.delete(sandbox_id, timeout=timeout)

    # -- containers --------------------------------------------------------------------------

    async def new_container(
        self,
        container_id: str,
        *,
        spec: Mapping[str, Any] | None = None,
        rootfs: str | os.PathLike[str] | None = None,
        image: str | None = None,
        sandbox: str | Sandbox | None = None,
        labels: Mapping[str, str] | None = None,
        runtime: str = DEFAULT_RUNTIME,
        runtime_options: AnyLike | None = None,
        snapshotter: str | None = None,
        extensions: Mapping[str, AnyLike] | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> Container:
        """Create a container and return its handle (start it with ``new_task``).

        ``spec`` is an OCI runtime spec (see ``sandboxclient.oci``; by default
        ``oci.generate_spec()``'s). The root filesystem is a host directory (``rootfs``) or
        a snapshot of an image already in containerd's image store (``image``, unpacked in
        ``snapshotter``, by default overlayfs), which is removed with the container; with an
        image and no spec the image's command, env, working directory and user are used.
        ``sandbox`` (an id or a handle) makes the container a member of that sandbox: its
        task runs in the sandbox's shim. A failed or cancelled create leaves nothing.
        """
        sandbox_id = sandbox.id if isinstance(sandbox, Sandbox) else (sandbox or "")
        request = ContainerRequest(
            container_id,
            spec=spec,
            rootfs=rootfs,
            image=image,
            sandbox_id=sandbox_id,
            labels=labels,
            runtime=runtime,
            runtime_options=runtime_options,
            snapshotter=snapshotter,
            extensions=extensions,
        )
        return await self._containers.create(request, timeout=timeout)

    async def load_container(
        self, container_id: str, *, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> Container:
        """The handle of an existing container; ``await container.task()`` for its task."""
        return await self._containers.load(container_id, timeout=timeout)

    def container_handle(self, info: ContainerInfo) -> Container:
        """The handle of a container record you hold already, asking the daemon nothing."""
        return self._containers.handle(info)

    async def list_containers(
        self, *filters: str, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> list[ContainerInfo]:
        """The container records matching any of ``filters`` (containerd filter syntax on
        ``id``, ``image``, ``runtime.name`` and ``labels.<key>``), or all."""
        return await self._containers.store.list(*filters, timeout=timeout)

    # -- the daemon itself -------------------------------------------------------------------

    def events(
        self,
        *filters: str,
        all_namespaces: bool = False,
        buffer: int = DEFAULT_EVENT_BUFFER,
    ) -> EventStream:
        """Subscribe to containerd's events: ``async for event in client.events(): ...``.

        ``filters`` use containerd's syntax (``topic=="/tasks/exit"``,
        ``event.container_id==c1``); any may match. Events are those of the Client's
        namespace unless ``all_namespaces``. At most ``buffer`` events wait for a consumer;
        one that falls behind gets an ``EventsLagged`` where events were dropped, and after
        a daemon restart an ``EventsReconnected`` where some may be missing.
        """
        scope = None if all_namespaces else self.namespace
        return EventStream(self._connection, scoped_filters(filters, scope), buffer)

    async def version(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> ServerVersion:
        """The daemon's version and revision."""
        return await _server_info.version(self._connection, timeout=timeout)

    async def sandboxers(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> list[SandboxerInfo]:
        """The sandbox controllers the daemon has, and whether each loaded."""
        return await _server_info.sandboxers(self._connection, timeout=timeout)


def _check_keywords(options: NewSandboxKeywords, method: str) -> None:
    """TypeError naming every keyword ``method`` does not take, as Python's own is.

    ``**options`` would otherwise swallow a misspelled keyword, and its option be lost.
    """
    unknown = sorted(set(options) - NewSandboxKeywords.__optional_keys__)
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        plural = "s" if len(unknown) > 1 else ""
        raise TypeError(f"{method}() got unexpected keyword argument{plural} {names}")


def _keyword_opts(options: NewSandboxKeywords, method: str) -> list[NewSandboxOpt]:
    """The keyword forms as the options they stand for, in a fixed order."""
    _check_keywords(options, method)
    opts: list[NewSandboxOpt] = []
    if "runtime" in options:
        opts.append(with_sandbox_runtime(options["runtime"], options.get("runtime_options")))
    elif "runtime_options" in options:
        opts.append(_with_runtime_options(options["runtime_options"]))
    if "labels" in options:
        opts.append(with_sandbox_labels(options["labels"]))
    if "spec" in options:
        opts.append(with_sandbox_spec(options["spec"]))
    for key, value in options.get("extensions", {}).items():
        opts.append(with_sandbox_extension(key, value))
    if "sandboxer" in options:
        opts.append(with_sandboxer(options["sandboxer"]))
    return opts


def _with_runtime_options(options: AnyLike) -> NewSandboxOpt:
    """Set the runtime's options and keep the name an earlier option chose."""
    packed = to_any_value(options, what="runtime options")

    def apply(draft: SandboxDraft) -> None:
        draft.runtime_options = packed

    return apply
