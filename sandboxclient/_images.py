"""A Client's images: the image store's records and the Transfer service's pull, push,
import and export (what ``Client`` offers as ``list_images``, ``pull`` and the rest)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence

from ._image_models import Image, PullProgress
from ._imageops._archive import ArchiveSource, ExportDestination
from ._imageops._credentials import CredentialsLike, checked_credentials
from ._imageops._imported import SavedNames, names_own_index
from ._imageops._platforms import host_platform
from ._imageops._store import ImageStore, checked_name
from ._imageops._transfer import ProgressCallback, Transfers, import_prefix
from ._models import Platform
from ._plumbing._connection import USE_CLIENT_DEFAULT, Connection, Timeout
from ._plumbing._server_info import daemon_version
from .errors import ContainerdError, NotFoundError

__all__ = ("ImageMethods",)

_EVENTS_BUFFER = 256


def _labels(labels: Mapping[str, str] | None) -> dict[str, str] | None:
    if labels is None:
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise TypeError("image labels must map strings to strings")
    return dict(labels)


def _platforms(platforms: Sequence[Platform] | None) -> list[Platform] | None:
    if platforms is None:
        return None
    if isinstance(platforms, Platform) or not all(isinstance(p, Platform) for p in platforms):
        raise TypeError("platforms must be a sequence of Platform")
    return list(platforms)


class ImageMethods:
    """The image methods of :class:`~sandboxclient.Client`."""

    def __init__(self, connection: Connection) -> None:
        self._images_connection = connection
        self._image_store = ImageStore(connection)
        self._transfers = Transfers(connection)

    async def list_images(
        self, *filters: str, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> list[Image]:
        """The images of the namespace matching any of ``filters`` (containerd's syntax,
        e.g. ``name==docker.io/library/busybox:latest``, ``labels.k==v``), or all."""
        return await self._image_store.list(*filters, timeout=timeout)

    async def get_image(self, name: str, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> Image:
        """Image ``name``'s record; NotFoundError if there is none."""
        return await self._image_store.get(name, timeout=timeout)

    async def delete_image(
        self, name: str, *, sync: bool = False, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> None:
        """Delete image ``name`` (NotFoundError if there is none). Its content and
        snapshots go with containerd's garbage collection, before the answer with ``sync``."""
        await self._image_store.delete(name, sync=sync, timeout=timeout)

    async def tag_image(
        self, name: str, new_name: str, *, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> Image:
        """Give image ``name``'s target a second name; AlreadyExistsError if it is taken."""
        return await self._image_store.tag(name, new_name, timeout=timeout)

    async def import_image(
        self,
        source: ArchiveSource,
        *,
        name: str | None = None,
        unpack: bool = True,
        snapshotter: str | None = None,
        platforms: Sequence[Platform] | None = None,
        labels: Mapping[str, str] | None = None,
        progress: ProgressCallback | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> list[Image]:
        """Import an OCI or Docker archive (gzip-compressed or not) and return its images.

        ``source`` is a path, a binary file object or an async iterable of bytes, streamed
        within the windows the daemon grants (never read whole). An image the archive names
        in full keeps its name; one it names by tag only becomes ``name:tag``, one it does
        not name ``name@<digest>`` (``name`` defaults to ``import-<date>``, as ctr's).
        With ``unpack`` the images are unpacked for ``platforms`` (default: this host's)
        into ``snapshotter`` (default: the daemon's), so containers can run from them. A
        corrupt archive is refused and leaves no image.
        """
        prefix = import_prefix(name)
        chosen, given = _platforms(platforms), _labels(labels)
        version = await daemon_version(self._images_connection, timeout=timeout)
        saved = SavedNames(prefix, index_named=names_own_index(version))
        try:
            names = await self._transfers.import_archive(
                source,
                name=prefix,
                unpack=unpack,
                snapshotter=snapshotter,
                platforms=chosen,
                labels=given,
                progress=progress,
                saved=saved,
                timeout=timeout,
            )
        except BaseException:
            if saved.index:  # containerd 2.3's record of the archive's index: no image of it
                with contextlib.suppress(ContainerdError):
                    await self._image_store.delete(saved.index, timeout=timeout)
            raise
        if saved.index:
            with contextlib.suppress(NotFoundError):
                await self._image_store.delete(saved.index, timeout=timeout)
        return [await self._image_store.get(n, timeout=timeout) for n in names]

    async def export_image(
        self,
        refs: str | Sequence[str],
        dest: ExportDestination,
        *,
        platforms: Sequence[Platform] | None = None,
        all_platforms: bool = False,
        progress: ProgressCallback | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> int:
        """Write images ``refs`` as one OCI archive (with Docker's ``manifest.json``) to
        ``dest`` and return its size in bytes.

        A path is written whole or not at all (a private temporary file renamed into
        place); a binary file object is written as the data comes. Only this host's
        platform goes in unless ``platforms`` or ``all_platforms`` say otherwise.
        """
        names = [refs] if isinstance(refs, str) else list(refs)
        return await self._transfers.export_archive(
            names,
            dest,
            platforms=_platforms(platforms),
            all_platforms=all_platforms,
            progress=progress,
            timeout=timeout,
        )

    async def pull(
        self,
        ref: str,
        *,
        platforms: Sequence[Platform] | None = None,
        unpack: bool = True,
        snapshotter: str | None = None,
        credentials: CredentialsLike | None = None,
        hosts_dir: str | None = None,
        plain_http: bool = False,
        labels: Mapping[str, str] | None = None,
        progress: ProgressCallback | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> Image:
        """Pull ``ref`` from its registry (the daemon fetches it) and return its record.

        ``credentials`` is a ``(username, secret)`` pair, a ``Credentials``, or an async
        callable ``(host) -> Credentials | None`` the daemon's requests are answered with;
        by default the Docker config's ``auths`` answer. ``hosts_dir`` is a directory of
        ``<host>/hosts.toml`` files (a private CA, mirrors); ``plain_http`` reaches the
        registry without TLS. ``progress`` receives each step the daemon reports. A
        multi-platform index gives this host's platform unless ``platforms`` says.
        """
        checked_name(ref, "reference")
        chosen = _platforms(platforms)
        before = await self._image_store.find(ref, timeout=timeout)
        await self._transfers.pull(
            ref,
            platforms=chosen,
            unpack=unpack,
            snapshotter=snapshotter,
            credentials=checked_credentials(credentials),
            hosts_dir=hosts_dir,
            plain_http=plain_http,
            labels=_labels(labels),
            progress=progress,
            timeout=timeout,
        )
        image = await self._image_store.get(ref, timeout=timeout)
        try:
            # containerd (2.1 at least) pulls a platform its index lacks without a word,
            # saving the index alone.
            await self._image_store.content.require(image, chosen or [host_platform()])
        except NotFoundError:
            await self._image_store.restore(ref, before)
            raise
        return image

    async def pull_events(
        self,
        ref: str,
        *,
        platforms: Sequence[Platform] | None = None,
        unpack: bool = True,
        snapshotter: str | None = None,
        credentials: CredentialsLike | None = None,
        hosts_dir: str | None = None,
        plain_http: bool = False,
        labels: Mapping[str, str] | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> AsyncIterator[PullProgress]:
        """:meth:`pull` as an async iterator of its progress; the pull's failure is raised
        from the iteration. Leaving the loop early cancels the pull."""
        queue: asyncio.Queue[PullProgress | None] = asyncio.Queue(_EVENTS_BUFFER)

        async def put(record: PullProgress) -> None:
            await queue.put(record)

        async def run() -> None:
            try:
                await self.pull(
                    ref,
                    platforms=platforms,
                    unpack=unpack,
                    snapshotter=snapshotter,
                    credentials=credentials,
                    hosts_dir=hosts_dir,
                    plain_http=plain_http,
                    labels=labels,
                    progress=put,
                    timeout=timeout,
                )
            finally:
                await queue.put(None)

        task = asyncio.ensure_future(run())
        try:
            while (record := await queue.get()) is not None:
                yield record
            await task
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def push(
        self,
        ref: str,
        *,
        source: str | None = None,
        platforms: Sequence[Platform] | None = None,
        credentials: CredentialsLike | None = None,
        hosts_dir: str | None = None,
        plain_http: bool = False,
        progress: ProgressCallback | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> None:
        """Push image ``source`` (default: the image named ``ref``) to registry reference
        ``ref``; credentials, hosts and progress as :meth:`pull`'s."""
        checked_name(ref, "reference")
        await self._transfers.push(
            ref,
            source=checked_name(source if source is not None else ref, "source"),
            platforms=_platforms(platforms),
            credentials=checked_credentials(credentials),
            hosts_dir=hosts_dir,
            plain_http=plain_http,
            progress=progress,
            timeout=timeout,
        )
