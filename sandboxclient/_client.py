"""The Client: a connection to containerd in one namespace, and the sandboxes it reaches."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from typing import Any, TypeVar, Unpack

from ._containers import ContainerMethods
from ._controller import Controller
from ._creation._create import ROLLBACK_TIMEOUT, create_sandbox
from ._creation._oneshot import SandboxOptions, run_oneshot, with_command
from ._creation._sandbox_image import create_on_image
from ._daemon import DaemonMethods
from ._facts._network import Bandwidth, EgressPolicy, PortMapping
from ._facts._pidstart import running_start_time
from ._facts._validation import checked_identifier
from ._images import ImageMethods
from ._models import SandboxInfo
from ._plumbing._connection import USE_CLIENT_DEFAULT, ClientState, Connection, Timeout
from ._plumbing._options import sandbox_draft
from ._plumbing._sandbox_io import SandboxOutput, closed_on_error, open_output
from ._plumbing._sandbox_store import SandboxStore
from ._plumbing._stream_args import PIPE, StreamArg
from ._plumbing._wait import WaitRegistry
from ._process_models import CompletedProcess
from ._run import DEFAULT_MAX_OUTPUT
from ._sandbox import Sandbox
from ._wire._convert import AnyLike
from ._wire._transport import (
    DEFAULT_KEEPALIVE_TIME,
    DEFAULT_KEEPALIVE_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    WireOptions,
)
from .errors import ClientClosedError, ContainerdError, NotFoundError, UnimplementedError

__all__ = (
    "DEFAULT_ADDRESS",
    "DEFAULT_KEEPALIVE_TIME",
    "DEFAULT_KEEPALIVE_TIMEOUT",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_TIMEOUT",
    "Client",
)

DEFAULT_ADDRESS = "/run/containerd/containerd.sock"
DEFAULT_TIMEOUT = 30.0

_log = logging.getLogger("sandboxclient")
_T = TypeVar("_T")


class Client(ImageMethods, ContainerMethods, DaemonMethods):
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
        sandboxer: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        keepalive_time: float | None = DEFAULT_KEEPALIVE_TIME,
        keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT,
    ) -> None:
        if not isinstance(address, str) or not address:
            raise ValueError("address must be a non-empty socket path")
        checked_identifier(namespace, "namespace")
        if sandboxer is not None and (not isinstance(sandboxer, str) or not sandboxer):
            raise ValueError("sandboxer must be a non-empty string, or None")
        if timeout is not None and not timeout > 0:
            raise ValueError("timeout must be a positive number of seconds, or None")
        wire = WireOptions(max_message_size, keepalive_time, keepalive_timeout)
        self._connection = Connection(address, namespace=namespace, timeout=timeout, wire=wire)
        self._waits = WaitRegistry(self._connection)
        self._store = SandboxStore(self._connection)
        self._controllers: dict[str, Controller] = {}
        ImageMethods.__init__(self, self._connection)
        ContainerMethods.__init__(self, self._connection, self._waits)
        DaemonMethods.__init__(self, self._connection, sandboxer)

    def __repr__(self) -> str:
        return (
            f"<Client {self.address!r} namespace={self.namespace!r} "
            f"sandboxer={self.sandboxer!r} {self.state.value}>"
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

    def create_task(
        self, work: Coroutine[Any, Any, _T], *, name: str = "sandboxclient-task"
    ) -> asyncio.Task[_T]:
        """Run ``work`` as a background task this Client owns (a pool's, say): ``aclose()``
        cancels it and waits for it, and for the clean-up it starts while unwinding (the
        shutdown ending ``async with client.sandbox(...)``), before closing the connection.
        """
        if self.state is ClientState.CLOSED:
            work.close()
            raise ClientClosedError("the client is closed")
        return self._connection.spawn(work, name)

    # -- services ----------------------------------------------------------------------------

    def controller(self, name: str | None = None) -> Controller:
        """The handle of sandbox controller ``name``; by default the Client's sandboxer, or
        without one the namespace's default once read (:meth:`default_sandboxer`), else
        ``shim``."""
        if name is None:
            name = self._known_sandboxer()
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

    def sandbox_handle(
        self, info: SandboxInfo, *, pid: int | None = None, output: SandboxOutput | None = None
    ) -> Sandbox:
        """A handle for a record this Client did not load (from a listing, say), asking the
        daemon nothing; its calls go through this Client, in its namespace."""
        return self._handle(info, pid=pid, output=output)

    def _handle(
        self,
        info: SandboxInfo,
        *,
        pid: int | None = None,
        pid_started: int | None = None,
        output: SandboxOutput | None = None,
    ) -> Sandbox:
        named = self._controller_named(info.sandboxer)
        return Sandbox(
            info,
            store=self._store,
            controller=named,
            containers=self._containers,
            pid=pid,
            pid_started=pid_started,
            output=output,
        )

    # -- sandboxes ---------------------------------------------------------------------------

    async def new_sandbox(
        self,
        sandbox_id: str,
        *,
        runtime: str | None = None,
        runtime_options: AnyLike | None = None,
        image: str | None = None,
        spec: Mapping[str, Any] | None = None,
        labels: Mapping[str, str] | None = None,
        extensions: Mapping[str, AnyLike] | None = None,
        sandboxer: str | None = None,
        cpu: float | None = None,
        memory: int | str | None = None,
        pids: int | None = None,
        host_users: bool | None = None,
        runtime_handler: str | None = None,
        network: str | None = None,
        ports: Sequence[PortMapping] | None = None,
        egress: EgressPolicy | None = None,
        bandwidth: Bandwidth | None = None,
        lifetime: float | None = None,
        idle_timeout: float | None = None,
        disk: int | str | None = None,
        command: Sequence[str] | None = None,
        stdout: StreamArg = None,
        stderr: StreamArg = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> Sandbox:
        """Create a sandbox in the store and with its controller, and return its handle.

        ``runtime`` names the runtime (``"io.containerd.runc.v2"``) and ``runtime_options``
        its options (a betterproto2 message, a ``(type_url, bytes)`` pair or an
        ``AnyValue``); ``image`` roots the sandbox on an image of the namespace's store
        (pulled or imported, unpacked for the default snapshotter): a snapshot of it,
        removed at shutdown, and the image's command, env, working directory and user where
        the spec gives none (see ``_sandbox_image``; the sandbox lives as long as that
        command: give ``spec={"process": {"args": [...]}}`` for one that waits);
        ``spec`` is an OCI runtime spec (built with :mod:`sandboxclient.oci`);
        ``extensions`` maps names to typed values as ``runtime_options``; ``sandboxer`` is
        the controller to run it, else default_sandboxer()'s. ``cpu`` (CPUs' worth of time,
        ``0.5``), ``memory`` (bytes, or a size such as ``"512Mi"``) and ``pids`` (processes
        and threads at once) limit the sandbox: they become the spec's ``linux.resources``
        (with no ``spec``, a spec of those alone, over the sandboxer's defaults), and one
        the spec contradicts is a ValueError. ``host_users`` is Kubernetes' ``hostUsers``:
        True runs the sandbox with the host's users (no user namespace of its own: root
        inside is the host's root), False asks for a user namespace of its own, which this
        project's isolating sandboxer gives by default (see ``oci.with_host_users``).
        ``runtime_handler`` names the runtime the sandboxer runs it under, as a Kubernetes
        RuntimeClass's handler does (``"gvisor"`` where this project's sandboxer was started
        with ``--runtime-handler gvisor=/usr/bin/runsc``; by default its ``runc``); a
        sandboxer without it refuses the sandbox, naming it.
        ``network`` is ``"none"`` (only ``lo``, the default) or ``"bridge"`` (an address on
        the sandboxer's CNI bridge, NAT out), ``ports`` the sandbox's ports to publish on
        the host (:class:`PortMapping`) and ``egress`` where it may connect to
        (:class:`EgressPolicy`; by default nothing local), ``bandwidth`` its rate limits
        (:class:`Bandwidth`); any of these alone means ``"bridge"``. :meth:`Sandbox.network`
        tells what it got. ``lifetime`` (seconds from now) and ``idle_timeout`` (seconds
        without an exec or file operation) end the sandbox, enforced by its sandboxer (a
        sandboxer that would not is refused, FailedPreconditionError); see
        :meth:`Sandbox.set_lifetime` and ``docs/guide.md``. ``disk`` (bytes, or a size such
        as ``"256Mi"``; with ``image`` only) is the size of the image root's writable layer,
        which the isolating sandboxer keeps on a tmpfs counted in the sandbox's memory (by
        default its ``--default-disk``; see ``docs/security.md``). ``command`` (a sequence of
        strings) is the sandbox's own process, its spec's ``process.args``, as Modal's
        ``Sandbox.create(*args)``: it runs from ``start()`` on, its exit is the sandbox's
        (``wait()``), its output the sandbox's log's, or with ``stdout=PIPE`` (``stderr=PIPE``,
        ``STDOUT``, ``DEVNULL``) the handle's ``stdout`` (see ``_sandbox_io``). If the
        controller refuses the sandbox, or the call is cancelled or times out midway, what
        was made is undone before the error is raised, so nothing is left behind.
        """
        if not sandbox_id:
            raise ValueError("sandbox ID must be specified")
        checked_identifier(sandbox_id, "sandbox ID")
        if disk is not None and image is None:
            raise ValueError("disk= sizes the writable layer of an image root: give image= too")
        draft = sandbox_draft(
            sandbox_id,
            runtime=runtime,
            runtime_options=runtime_options,
            spec=with_command(spec, command),
            labels=labels,
            extensions=extensions,
            sandboxer=sandboxer,
            cpu=cpu,
            memory=memory,
            pids=pids,
            host_users=host_users,
            runtime_handler=runtime_handler,
            network=network,
            ports=ports,
            egress=egress,
            bandwidth=bandwidth,
            lifetime=lifetime,
            idle_timeout=idle_timeout,
            disk=disk,
        )
        output = await open_output(self._connection, stdout, stderr, draft.labels)
        with closed_on_error(output):
            name = draft.sandboxer or await self.default_sandboxer(timeout=timeout)
            controller, conn = self.controller(name), self._connection
            if image is None:
                info = await create_sandbox(conn, self._store, controller, draft, timeout)
            else:
                rootfs = self._containers.rootfs
                info = await create_on_image(
                    conn, self._store, controller, rootfs, draft, image, timeout
                )
        return self.sandbox_handle(info, output=output)

    @contextlib.asynccontextmanager
    async def sandbox(
        self,
        sandbox_id: str,
        *,
        runtime: str | None = None,
        runtime_options: AnyLike | None = None,
        image: str | None = None,
        spec: Mapping[str, Any] | None = None,
        labels: Mapping[str, str] | None = None,
        extensions: Mapping[str, AnyLike] | None = None,
        sandboxer: str | None = None,
        cpu: float | None = None,
        memory: int | str | None = None,
        pids: int | None = None,
        host_users: bool | None = None,
        runtime_handler: str | None = None,
        network: str | None = None,
        ports: Sequence[PortMapping] | None = None,
        egress: EgressPolicy | None = None,
        bandwidth: Bandwidth | None = None,
        lifetime: float | None = None,
        idle_timeout: float | None = None,
        disk: int | str | None = None,
        command: Sequence[str] | None = None,
        stdout: StreamArg = None,
        stderr: StreamArg = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> AsyncIterator[Sandbox]:
        """Create and start a sandbox for the ``async with`` block, and shut it down after.

        Takes the arguments of ``new_sandbox``. The shutdown runs on normal exit, on error and
        on cancellation, to its end even if cancelled again. If the block raised or was
        cancelled, that is what propagates, and a failed shutdown is logged; otherwise the
        shutdown's own error is raised.
        """
        sb = await self.new_sandbox(
            sandbox_id,
            runtime=runtime,
            runtime_options=runtime_options,
            image=image,
            spec=spec,
            labels=labels,
            extensions=extensions,
            sandboxer=sandboxer,
            cpu=cpu,
            memory=memory,
            pids=pids,
            host_users=host_users,
            runtime_handler=runtime_handler,
            network=network,
            ports=ports,
            egress=egress,
            bandwidth=bandwidth,
            lifetime=lifetime,
            idle_timeout=idle_timeout,
            disk=disk,
            command=command,
            stdout=stdout,
            stderr=stderr,
            timeout=timeout,
        )
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

    async def run(
        self,
        *args: str,
        sandbox_id: str | None = None,
        timeout: float | None = None,
        max_output: int = DEFAULT_MAX_OUTPUT,
        stderr: StreamArg = PIPE,
        **options: Unpack[SandboxOptions],
    ) -> CompletedProcess:
        """Run ``args`` as the own process of a sandbox of its own, and return its exit code
        and output: ``new_sandbox(command=args)``, ``start``, its output read as it comes,
        its exit, ``shutdown``. No exec: the command is the sandbox's first process.

        Takes ``new_sandbox``'s options (``image=``, ``cpu=``, ``network=``...);
        ``sandbox_id`` is a fresh ``run-...`` unless given. stdout and stderr come apart, as
        ``Sandbox.run``'s; ``stderr=STDOUT`` makes them one stream (``.stdout``), ``DEVNULL``
        drops stderr. Each keeps ``max_output`` bytes, the rest read and dropped.
        ``timeout`` covers it all: past it, ``CommandTimeoutError``, with the sandbox's
        shutdown going on as clean-up this Client owns. It needs this project's sandboxers
        (the isolating one, the stand-in's), which hand the output over; another is
        refused (FailedPreconditionError) and its sandbox shut down. See ``_oneshot``.
        """
        new, conn = self.new_sandbox, self._connection
        return await run_oneshot(new, conn, args, sandbox_id, timeout, max_output, stderr, options)

    async def load_sandbox(
        self, sandbox_id: str, *, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> Sandbox:
        """The handle of an existing sandbox, with its pid when its controller knows it.

        When the controller says the sandbox is ready, its process is noted as ``start()``
        notes it (pid and start time, read just after): a member made through the handle is
        refused once that process has exited, even while a stale Status still names its pid.
        """
        info = await self._store.get(sandbox_id, timeout=timeout)
        pid = started = None
        try:
            if info.sandboxer:  # else no controller to ask
                status = await self.controller(info.sandboxer).status(sandbox_id, timeout=timeout)
                pid = status.pid or None
                if pid is not None and status.ready:
                    # Noted as start() notes it: a Status that later still says ready with
                    # this pid, once the process exited and the pid went to another, is not
                    # believed when a member joins it (_members._joined).
                    started = running_start_time(pid)
        except (NotFoundError, UnimplementedError):
            # The record is still worth a handle: it is how the caller can shut it down.
            pass
        return self._handle(info, pid=pid, pid_started=started)

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
        """Shut a sandbox down and delete it: ``(await load_sandbox(id)).shutdown()``.

        Its containers are deleted (their tasks killed), its controller shuts it down, and
        its store record goes. Not idempotent, as Go's store ``Delete`` is not: a sandbox
        with no record raises NotFoundError (``Sandbox.shutdown`` on a handle held is the
        idempotent clean-up).
        """
        sb = await self.load_sandbox(sandbox_id, timeout=timeout)
        await sb.shutdown(timeout=timeout)
