"""A subscription to containerd's events, as an async iterator with a bounded buffer.

A task the Client owns reads containerd's Events.Subscribe stream into a buffer of at most
``buffer`` items. A consumer that falls behind loses events rather than memory: at the
place of the gap it gets an :class:`EventsLagged` with the number dropped. containerd keeps
no replay, so when the stream is lost (a daemon restart) the task subscribes again, with
backoff, and puts an :class:`EventsReconnected` where events may be missing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
from collections.abc import Sequence
from typing import Any, Self

from ._facts._clock import utcnow
from ._models import AnyValue
from ._plumbing._connection import Connection
from ._wire._codec import decode
from ._wire._pb import AnyPb, EnvelopePb, events_pb, message_type
from ._wire._protowire import DecodeError
from .errors import ContainerdError, UnavailableError
from .events import EVENT_TYPES, Event, EventsLagged, EventsReconnected, payload_from_pb

__all__ = ("DEFAULT_EVENT_BUFFER", "PROBE_TOPIC", "EventStream", "scoped_filters")

DEFAULT_EVENT_BUFFER = 1024
"""How many events a subscription holds for a consumer, by default."""

_SUBSCRIBE = "/containerd.services.events.v1.Events/Subscribe"
PROBE_TOPIC = "/sandboxclient/subscribed"
"""The topic of the probe a subscription publishes to learn it is in place."""
_PROBE_FILTER = f'topic=="{PROBE_TOPIC}"'
_PROBE_TYPE_URL = "sandboxclient.SubscriptionProbe"
_RETRY_FIRST = 0.128
_RETRY_MAX = 4.096
_log = logging.getLogger("sandboxclient")

Item = Event | EventsLagged | EventsReconnected


def scoped_filters(filters: Sequence[str], namespace: str | None) -> list[str]:
    """``filters`` (any may match) each narrowed to ``namespace``, unless it is None.

    An empty filter is containerd's "everything": narrowed, it is the namespace alone.
    """
    for text in filters:
        if not isinstance(text, str):
            raise TypeError(f"filters must be str, got {type(text).__name__}")
    if namespace is None:
        return list(filters)
    scope = f"namespace=={namespace}"
    return [f"{scope},{text}" if text else scope for text in filters] if filters else [scope]


def decode_envelope(envelope: Any) -> Event:
    """The public event of a decoded Envelope; a payload it cannot type stays raw."""
    raw = envelope.event
    payload: Any = AnyValue("", b"") if raw is None else AnyValue(raw.type_url, bytes(raw.value))
    cls = EVENT_TYPES.get(payload.type_url)
    pb_type = message_type(payload.type_url) if cls is not None else None
    if cls is not None and pb_type is not None:
        # A payload that does not decode is kept as it came: the envelope itself was fine.
        with contextlib.suppress(DecodeError):
            payload = payload_from_pb(cls, decode(pb_type, payload.value))
    when = envelope.timestamp
    return Event(envelope.topic, envelope.namespace, None if when is None else when, payload)


class EventStream:
    """The events of a subscription: ``async for event in stream`` (or ``async with``).

    Items are :class:`Event`, :class:`EventsLagged` and :class:`EventsReconnected`. The
    subscription starts on entering (or on the first ``__anext__``) and ends on
    :meth:`aclose` or when the Client closes; iteration then stops.
    """

    def __init__(self, connection: Connection, filters: list[str], buffer: int) -> None:
        if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
            raise ValueError(f"buffer must be a positive int, got {buffer!r}")
        self._connection = connection
        self._filters = filters
        self._token = secrets.token_bytes(16)
        self._subscribed = asyncio.Event()
        self._limit = buffer
        self._items: collections.deque[Item] = collections.deque()
        self._dropped = 0
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ended = False
        self._error: ContainerdError | None = None

    @property
    def filters(self) -> list[str]:
        """The filters sent to containerd."""
        return list(self._filters)

    @property
    def held(self) -> int:
        """How many items wait for the consumer now (at most the ``buffer``)."""
        return len(self._items)

    @property
    def dropped(self) -> int:
        """How many events were dropped since the consumer was last told so by an
        :class:`EventsLagged`: what the next one will count."""
        return self._dropped

    def start(self) -> None:
        """Subscribe now (the iterator does it on first use)."""
        if self._task is None and not self._ended:
            self._task = self._connection.spawn(self._run(), "sandboxclient-events")
            self._task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._ended = True
        if not task.cancelled() and isinstance(task.exception(), ContainerdError):
            self._error = task.exception()  # type: ignore[assignment]
        self._ready.set()

    def _put(self, item: Item) -> None:
        # The marker of a gap takes a place of its own, before the item that follows it.
        needed = 2 if self._dropped else 1
        if len(self._items) + needed > self._limit:
            self._dropped += 1
        else:
            if self._dropped:
                self._items.append(EventsLagged(self._dropped))
                self._dropped = 0
            self._items.append(item)
        self._ready.set()

    async def _run(self) -> None:
        delay = _RETRY_FIRST
        first = True
        # Our own probe, published once the request is out, comes back once containerd has
        # the subscription in place: only then is "subscribed" true. containerd may get a
        # probe before it has registered the subscription, so it is sent until one returns.
        # No filter is every event; the probe's alone would narrow that to the probes.
        wanted = self._filters or [""]
        request = events_pb.SubscribeRequest(filters=[*wanted, _PROBE_FILTER])
        while True:
            probing: asyncio.Task[None] | None = None
            try:
                async with self._connection.server_stream(
                    _SUBSCRIBE, request, EnvelopePb
                ) as envelopes:
                    arrived = asyncio.Event()
                    probing = asyncio.ensure_future(self._probe(arrived))
                    async for envelope in envelopes:
                        if envelope.topic != PROBE_TOPIC:
                            self._put(decode_envelope(envelope))
                            continue
                        if envelope.event is None or envelope.event.value != self._token:
                            continue  # another subscriber's probe
                        if arrived.is_set():
                            continue
                        arrived.set()
                        if not first:
                            self._put(EventsReconnected(utcnow()))
                        first = False
                        delay = _RETRY_FIRST
                        self._subscribed.set()
            except UnavailableError as exc:
                _log.info("event subscription: %s; subscribing again in %.3f s", exc, delay)
            else:
                _log.info("event subscription ended; subscribing again in %.3f s", delay)
            finally:
                if probing is not None:
                    probing.cancel()
                    await asyncio.gather(probing, return_exceptions=True)
            first = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)

    async def _probe(self, arrived: asyncio.Event) -> None:
        """Publish the probe until one has come back (``arrived``), backing off."""
        request = events_pb.PublishRequest(
            topic=PROBE_TOPIC, event=AnyPb(type_url=_PROBE_TYPE_URL, value=self._token)
        )
        publish = self._connection.stub(events_pb.EventsStub).publish
        pause = 0.01
        while not arrived.is_set():
            with contextlib.suppress(UnavailableError):
                await self._connection.call(publish, request)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await arrived.wait()
            pause = min(pause * 2, 1.0)

    async def subscribed(self) -> None:
        """Return once containerd has the subscription in place (events from then on are
        delivered); raise what ended it if it failed first."""
        self.start()
        waiting = asyncio.ensure_future(self._subscribed.wait())
        try:
            assert self._task is not None
            await asyncio.wait([waiting, self._task], return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
        if not self._subscribed.is_set():
            if self._error is not None:
                raise self._error
            raise UnavailableError("the event subscription ended before it was in place")

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Item:
        self.start()
        while not self._items:
            if self._dropped:
                # The consumer caught up with the gap: tell it now, not with the next event,
                # which may never come (or, with a buffer of one, never find room).
                lagged, self._dropped = EventsLagged(self._dropped), 0
                return lagged
            if self._ended:
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    async def __aenter__(self) -> Self:
        """Subscribe, and return once the subscription is in place (see :meth:`subscribed`),
        within the Client's default deadline (``UnavailableError`` past it)."""
        bound = self._connection.timeout
        try:
            async with asyncio.timeout(bound):
                await self.subscribed()
        except TimeoutError:
            await self.aclose()
            raise UnavailableError(
                f"could not subscribe to containerd's events within {bound} s"
            ) from None
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """End the subscription; iteration stops once the items held are read. Idempotent."""
        self._ended = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait([self._task])
        self._ready.set()
