"""Images in and out of containerd through its Transfer service (Go's ``client.Transfer``).

The daemon does the work: the client names a source and a destination and serves the
Streaming streams the request refers to (the archive it sends or receives, the progress the
daemon reports, the credentials it asks for). Every stream is open before the request goes
out and closed after it; a failed, timed-out or cancelled transfer cancels the call (the
daemon then abandons the transfer) and leaves no stream or task behind.

As Go's ``client.Transfer``, the streams and the call are made under a lease of the
client's (expiring after a day, deleted once the transfer ends). containerd's collector
keeps an unleased stream only in a namespace it has records in: in a fresh namespace a
collection run between a stream's opening and the Transfer call would take the stream, and
the call would answer NOT_FOUND. Under a lease it is kept, and so is what the transfer
writes, until the lease goes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import (
    Awaitable,
    Callable,
    Iterator,
    Sequence,
)
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from .._facts._clock import utcnow
from .._facts._wirenames import LEASE_HEADER
from .._image_models import PullProgress
from .._models import Platform
from .._plumbing._connection import USE_CLIENT_DEFAULT, Connection, Timeout
from .._wire import _pb
from .._wire._images import (
    auth_answer,
    auth_request_from_any,
    export_stream_any,
    image_store_any,
    import_stream_any,
    progress_from_any,
    registry_any,
)
from .._wire._pb import AnyPb
from ..errors import (
    ContainerdError,
    DataLossError,
    DeadlineExceededError,
    InvalidArgumentError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    UnknownError,
)
from ._archive import ArchiveSource, ExportDestination, Output, archive_chunks
from ._credentials import CredentialsLike, has_docker_config, resolve_credentials
from ._imported import SavedNames
from ._leases import delete_lease, expiring_lease
from ._platforms import host_platform
from ._store import checked_name
from ._streaming import Stream, StreamFactory
from ._tarend import TarEnd

__all__ = (
    "ProgressCallback",
    "TransferRequest",
    "Transfers",
    "import_prefix",
)

ProgressCallback = Callable[[PullProgress], Awaitable[None]]
"""``async (PullProgress) -> None``, called for each step the daemon reports."""


@dataclass
class TransferRequest:
    """One transfer: the source and destination, and the work on its streams."""

    source: AnyPb
    destination: AnyPb
    progress_stream: str = ""


Worker = Callable[[Stream], Awaitable[None]]

_LEASE_EXPIRY: Final = timedelta(hours=24)
"""A transfer's lease expires (if the client could not delete it) as Go's default one."""


class Transfers:
    """The Transfer service's image operations, on one connection."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._streams = StreamFactory(connection)

    async def run(
        self,
        build: Callable[[dict[str, str]], TransferRequest],
        workers: Sequence[tuple[str, Worker, bool]],
        *,
        timeout: Timeout,
    ) -> None:
        """Open a stream per worker (``prefix``, ``work``, ``drains``), make the request
        ``build`` returns given the stream ids by prefix, and run the workers beside it.

        After the daemon answers, workers that ``drain`` (progress, an export) read their
        stream to its end; the others are cancelled. A failing worker cancels the call
        and raises its error; a failing call cancels the workers and raises its own.
        """
        seconds = self._connection.deadline(timeout)
        try:
            async with asyncio.timeout(seconds):
                await self._run(build, workers)
        except UnimplementedError as exc:
            if "unknown service" not in exc.message:
                raise  # the service is there and says why it cannot
            raise UnimplementedError(
                "this daemon has no Transfer and Streaming services (containerd 2.0 and "
                f"later have them): {exc.message}",
                status=exc.status,
            ) from exc
        except TimeoutError:
            raise DeadlineExceededError(
                f"the transfer did not finish within {seconds} s: cancelled"
            ) from None

    async def _run(
        self,
        build: Callable[[dict[str, str]], TransferRequest],
        workers: Sequence[tuple[str, Worker, bool]],
    ) -> None:
        lease = await expiring_lease(self._connection, "transfer", _LEASE_EXPIRY, None)
        try:
            await self._leased(build, workers, {LEASE_HEADER: lease})
        finally:
            await self._release(lease)

    async def _release(self, lease: str) -> None:
        """Delete the transfer's lease, as clean-up work the connection owns: also when the
        transfer was cancelled or the Client closed meanwhile (a lease that cannot be
        deleted expires)."""
        await self._connection.run_shielded(delete_lease(self._connection, lease))

    async def _leased(
        self,
        build: Callable[[dict[str, str]], TransferRequest],
        workers: Sequence[tuple[str, Worker, bool]],
        lease: dict[str, str],
    ) -> None:
        async with contextlib.AsyncExitStack() as stack:
            streams = [
                await stack.enter_async_context(self._streams.open(p, metadata=lease))
                for p, _, _ in workers
            ]
            request = build({p: s.id for (p, _, _), s in zip(workers, streams, strict=True)})
            tasks = [
                asyncio.ensure_future(work(stream))
                for (_, work, _), stream in zip(workers, streams, strict=True)
            ]
            call = asyncio.ensure_future(self._call(request, lease))
            try:
                pending: set[asyncio.Future[None]] = {call, *tasks}
                while not call.done():
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        if task is not call and task.exception() is not None:
                            raise task.exception()  # type: ignore[misc]
                call.result()
                for (_, _, drains), task in zip(workers, tasks, strict=True):
                    if not drains:
                        task.cancel()
                if tasks:
                    await asyncio.wait(tasks)
                for task in tasks:
                    if not task.cancelled() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
            finally:
                for task in (call, *tasks):
                    task.cancel()
                await asyncio.gather(call, *tasks, return_exceptions=True)

    async def _call(self, request: TransferRequest, lease: dict[str, str]) -> None:
        stub = self._connection.stub(_pb.transfer_pb.TransferStub)
        options = _pb.transfer_pb.TransferOptions(progress_stream=request.progress_stream)
        await self._connection.call(
            stub.transfer,
            _pb.transfer_pb.TransferRequest(
                source=request.source, destination=request.destination, options=options
            ),
            None,
            metadata=lease,
        )

    # -- import and export -------------------------------------------------------------

    async def import_archive(
        self,
        source: ArchiveSource,
        *,
        name: str | None,
        unpack: bool,
        snapshotter: str | None,
        platforms: Sequence[Platform] | None,
        labels: dict[str, str] | None,
        progress: ProgressCallback | None,
        saved: SavedNames,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> list[str]:
        """Import an archive; returns the names the daemon saved, in its order, but for
        its record of the archive's own index (``saved.index``: the caller's to delete)."""
        prefix = import_prefix(name)
        chosen = list(platforms) if platforms else [host_platform()]

        async def send(stream: Stream) -> None:
            await stream.send_bytes(archive_chunks(source))

        async def report(stream: Stream) -> None:
            await _progress(stream, progress, saved)

        def build(ids: dict[str, str]) -> TransferRequest:
            return TransferRequest(
                import_stream_any(ids["import"]),
                image_store_any(
                    labels=labels,
                    platforms=platforms or (),
                    prefix=prefix,
                    unpack=[(p, snapshotter or "") for p in chosen] if unpack else (),
                ),
                ids["progress"],
            )

        try:
            await self.run(
                build, [("import", send, False), ("progress", report, True)], timeout=timeout
            )
        except UnknownError as exc:
            # containerd answers UNKNOWN for an archive its tar reader refuses.
            if "archive/tar" in exc.message or "unexpected EOF" in exc.message:
                raise InvalidArgumentError(
                    f"the archive is not a valid tar: {exc.message}"
                ) from exc
            raise
        return list(saved.names)

    async def export_archive(
        self,
        refs: Sequence[str],
        dest: ExportDestination,
        *,
        platforms: Sequence[Platform] | None,
        all_platforms: bool,
        progress: ProgressCallback | None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> int:
        """Export images ``refs`` as one OCI archive to ``dest``; returns its size."""
        names = [checked_name(r, "reference") for r in refs]
        if not names:
            raise ValueError("export needs at least one image name")
        chosen = list(platforms) if platforms else ([] if all_platforms else [host_platform()])
        with Output(dest) as out:
            size = 0

            end = TarEnd()

            async def write(chunk: bytes) -> None:
                try:
                    end.feed(chunk)
                except ValueError as exc:
                    raise DataLossError(f"the daemon's export is {exc}") from None
                await out.write(chunk)

            async def receive(stream: Stream) -> None:
                nonlocal size
                size = await stream.receive_bytes(write, complete=lambda: end.done)
                if not end.done:
                    raise DataLossError(f"the daemon's export ended short, after {size} bytes")

            async def report(stream: Stream) -> None:
                await _progress(stream, progress, None)

            def build(ids: dict[str, str]) -> TransferRequest:
                return TransferRequest(
                    image_store_any(name=names[0], extra_names=names[1:]),
                    export_stream_any(ids["export"], platforms=chosen, all_platforms=all_platforms),
                    ids["progress"] if progress is not None else "",
                )

            workers: list[tuple[str, Worker, bool]] = [("export", receive, True)]
            if progress is not None:
                workers.append(("progress", report, True))
            await self.run(build, workers, timeout=timeout)
            out.commit()
            return size

    # -- registries ----------------------------------------------------------------------

    async def pull(
        self,
        ref: str,
        *,
        platforms: Sequence[Platform] | None,
        unpack: bool,
        snapshotter: str | None,
        credentials: CredentialsLike | None,
        hosts_dir: str | None,
        plain_http: bool,
        labels: dict[str, str] | None,
        progress: ProgressCallback | None,
        timeout: Timeout,
    ) -> None:
        """Pull ``ref`` from its registry into the image store (named ``ref``)."""
        chosen = list(platforms) if platforms else [host_platform()]
        workers = _registry_workers(progress, credentials)

        def build(ids: dict[str, str]) -> TransferRequest:
            return TransferRequest(
                registry_any(
                    ref,
                    auth_stream=ids.get("auth", ""),
                    hosts_dir=hosts_dir or "",
                    plain_http=plain_http,
                ),
                image_store_any(
                    name=ref,
                    labels=labels,
                    platforms=chosen,
                    unpack=[(p, snapshotter or "") for p in chosen] if unpack else (),
                ),
                ids.get("progress", ""),
            )

        with _registry_errors(ref):
            await self.run(build, workers, timeout=timeout)

    async def push(
        self,
        ref: str,
        *,
        source: str,
        platforms: Sequence[Platform] | None,
        credentials: CredentialsLike | None,
        hosts_dir: str | None,
        plain_http: bool,
        progress: ProgressCallback | None,
        timeout: Timeout,
    ) -> None:
        """Push image ``source`` of the store to registry reference ``ref``."""
        workers = _registry_workers(progress, credentials)

        def build(ids: dict[str, str]) -> TransferRequest:
            return TransferRequest(
                image_store_any(name=source, platforms=platforms or ()),
                registry_any(
                    ref,
                    auth_stream=ids.get("auth", ""),
                    hosts_dir=hosts_dir or "",
                    plain_http=plain_http,
                ),
                ids.get("progress", ""),
            )

        with _registry_errors(ref):
            await self.run(build, workers, timeout=timeout)


_UNREACHABLE: Final = (
    "connection refused",
    "no such host",
    "i/o timeout",
    "network is unreachable",
    "connection reset",
    "failed to do request",
)


_UNTRUSTED: Final = ("x509: ", "tls: failed to verify certificate")


@contextlib.contextmanager
def _registry_errors(ref: str) -> Iterator[None]:
    """containerd answers UNKNOWN for what went wrong with a registry: name it and type it.

    A 401 is UnauthenticatedError; a registry that cannot be reached, or whose TLS
    certificate is not trusted, is UnavailableError;
    the daemon's message follows (it never holds a secret: credentials travel on the auth
    stream, and registries do not echo them).
    """
    try:
        yield
    except UnknownError as exc:
        message = exc.message
        if "401 Unauthorized" in message:
            raise UnauthenticatedError(
                f"registry refused the credentials for {ref}: {message}"
            ) from exc
        if any(marker in message for marker in _UNTRUSTED):
            raise UnavailableError(
                f"registry of {ref} not trusted: its TLS certificate was refused (a private "
                f"CA is trusted through a hosts_dir's hosts.toml): {message}"
            ) from exc
        if any(marker in message for marker in _UNREACHABLE):
            raise UnavailableError(f"registry of {ref} unreachable: {message}") from exc
        raise


def import_prefix(name: str | None = None) -> str:
    """The name prefix of an import: ``name`` (checked), else ``import-<date>`` as ctr's."""
    if name is not None:
        return checked_name(name, "name prefix")

    return f"import-{utcnow():%Y-%m-%d}"


async def _progress(
    stream: Stream, callback: ProgressCallback | None, saved: SavedNames | None
) -> None:
    # The client sends nothing on a progress stream: ending its side now lets the daemon
    # end the call cleanly (without it, the daemon resets the stream with NO_ERROR after
    # its last message, which grpclib's own protocol takes for a failure).
    await stream.end()
    while (value := await stream.recv()) is not None:
        record = progress_from_any(value)
        if record is None:
            continue
        if saved is not None and not saved.take(record):
            continue
        if callback is not None:
            await callback(record)


async def _answer_auth(stream: Stream, credentials: CredentialsLike | None) -> None:
    while True:
        try:
            value = await stream.recv()
        except ContainerdError:
            # The daemon ends this stream as the transfer ends, possibly with a reset:
            # nothing is lost, and the transfer's own answer says how it went.
            return
        if value is None:
            return
        asked = auth_request_from_any(value)
        if asked is None:
            continue
        host, _ = asked
        found = await resolve_credentials(credentials, host)
        if found is None:
            await stream.send(auth_answer(None, None))
        else:
            await stream.send(auth_answer(found.username, found.secret))


def _registry_workers(
    progress: ProgressCallback | None, credentials: CredentialsLike | None
) -> list[tuple[str, Worker, bool]]:
    """A registry transfer's side streams: its progress (if asked for) and the answers to the
    daemon's credential requests (if there are credentials to give)."""
    workers: list[tuple[str, Worker, bool]] = []
    if progress is not None:
        workers.append(("progress", lambda s: _progress(s, progress, None), True))
    if credentials is not None or has_docker_config():
        workers.append(("auth", lambda s: _answer_auth(s, credentials), False))
    return workers
