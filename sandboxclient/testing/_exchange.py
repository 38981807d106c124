"""The stand-in's event exchange: what its services publish, and the subscriptions to it.

As containerd's exchange (``core/events/exchange``), an envelope goes to every subscription
whose filters it passes, whatever its namespace, and nothing is kept for later subscribers.
The filters see an envelope as containerd's ``Envelope.Field`` does: ``topic``,
``namespace``, and ``event.<field>`` into a payload of a type containerd declares (the
fields its generated ``Field`` methods answer: strings, present when not empty; booleans;
``labels.<key>``; nested messages; never numbers, times, lists or ``Any`` values).

Where containerd differs, on purpose: it queues envelopes for a subscriber that does not
read without any bound (go-events' queue), so a stuck client grows the daemon's memory
forever. A stand-in subscription holds at most ``backlog`` envelopes; one more and the
subscription is dropped, its envelopes let go, and its Subscribe call ends with UNAVAILABLE
(the client subscribes again and marks the gap, as after a daemon restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any, cast

import betterproto2
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from .._facts._clock import utcnow
from .._facts._golang import go_quote
from .._facts._validation import identifier_problem
from .._models import AnyValue
from .._serve._server import current_namespace
from .._wire._codec import decode
from .._wire._convert import message_type_url, mount_to_pb
from .._wire._pb import AnyPb, EnvelopePb, event_payloads_pb, message_type
from .._wire._protowire import DecodeError
from ..events import EVENT_TYPES, EventPayload, TaskIO, pb_field_name
from ._filters import Adaptor, Filters, map_field, matches

__all__ = (
    "DEFAULT_EVENT_BACKLOG",
    "Exchange",
    "Subscription",
    "envelope_adaptor",
    "payload_to_any",
    "topic_problem",
)

DEFAULT_EVENT_BACKLOG = 4096
"""How many envelopes a subscription may hold for its reader before it is dropped."""

_URLS: dict[type[EventPayload], str] = {cls: url for url, cls in EVENT_TYPES.items()}


def topic_problem(topic: str) -> str | None:
    """What containerd's exchange says is wrong with ``topic``, or None if it is valid."""
    if not topic:
        return "must not be empty"
    if not topic.startswith("/"):
        return "must start with '/'"
    if topic == "/":
        return "must have at least one component"
    for component in topic[1:].split("/"):
        problem = identifier_problem(component)
        if problem is not None:
            return f"failed validation on component {go_quote(component)}: {problem}"
    return None


def _message_field(message: Any, path: tuple[str, ...]) -> tuple[str, bool]:
    """A payload's field as containerd's generated ``Field`` methods answer it."""
    if not path or not isinstance(message, betterproto2.Message) or isinstance(message, AnyPb):
        return "", False
    if path[0] not in {f.name for f in dataclasses.fields(cast(Any, message))}:
        return "", False
    value = getattr(message, path[0])
    if isinstance(value, bool):
        return ("true" if value else "false"), True
    if isinstance(value, str):
        return value, bool(value)
    if isinstance(value, dict):
        return map_field(path[1:], value) if path[0] == "labels" else ("", False)
    return _message_field(value, path[1:])


def envelope_adaptor(envelope: EnvelopePb) -> Adaptor:
    """``envelope`` as containerd's filters see it; the payload is decoded once, if asked."""
    decoded: list[Any] = []

    def payload() -> Any:
        if not decoded:
            event = envelope.event
            pb_type = None
            if event is not None and event.type_url in EVENT_TYPES:
                pb_type = message_type(event.type_url)
            message = None
            if event is not None and pb_type is not None:
                with contextlib.suppress(DecodeError):
                    message = decode(pb_type, bytes(event.value))
            decoded.append(message)
        return decoded[0]

    def field(path: tuple[str, ...]) -> tuple[str, bool]:
        if not path:
            return "", False
        if path[0] == "topic":
            return envelope.topic, bool(envelope.topic)
        if path[0] == "namespace":
            return envelope.namespace, bool(envelope.namespace)
        if path[0] == "event":
            return _message_field(payload(), path[1:])
        return "", False

    return field


def _payload_value(name: str, value: Any) -> Any:
    if name == "rootfs":
        return [mount_to_pb(m) for m in value]
    if name == "io":
        if not isinstance(value, TaskIO):
            return None
        return event_payloads_pb.TaskIo(
            stdin=value.stdin, stdout=value.stdout, stderr=value.stderr, terminal=value.terminal
        )
    if name == "runtime" and isinstance(value, str):
        return event_payloads_pb.ContainerCreateRuntime(name=value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


def payload_to_any(event: EventPayload | AnyValue) -> AnyPb:
    """The Any containerd would publish for an event record (or the Any given as is)."""
    if isinstance(event, AnyValue):
        return AnyPb(type_url=event.type_url, value=event.value)
    url = _URLS.get(type(event))
    pb_type = message_type(url) if url is not None else None
    if url is None or pb_type is None:
        raise TypeError(f"not an event payload: {type(event).__name__}")
    values = {
        pb_field_name(f.name): _payload_value(f.name, getattr(event, f.name))
        for f in dataclasses.fields(event)
    }
    return AnyPb(type_url=url, value=bytes(pb_type(**values)))


class Subscription:
    """One subscriber's envelopes, at most ``backlog`` of them held at a time."""

    def __init__(self, filters: Filters, backlog: int) -> None:
        self.filters = filters
        self._backlog = backlog
        self._items: deque[EnvelopePb] = deque()
        self._ready = asyncio.Event()
        self.dropped = False
        """Set once the subscriber fell ``backlog`` envelopes behind and was let go."""

    def offer(self, envelope: EnvelopePb) -> bool:
        """Hold ``envelope`` for the reader; False (and dropped) if it is too far behind."""
        if self.dropped:
            return False
        if len(self._items) >= self._backlog:
            self.dropped = True
            self._items.clear()
            self._ready.set()
            return False
        self._items.append(envelope)
        self._ready.set()
        return True

    async def next(self) -> EnvelopePb:
        """The next envelope; UNAVAILABLE once the subscription was dropped."""
        while not self._items:
            if self.dropped:
                raise GRPCError(
                    Status.UNAVAILABLE,
                    f"event subscriber fell {self._backlog} events behind and was dropped; "
                    "subscribe again (events were lost)",
                )
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()


class Exchange:
    """Every subscription of the stand-in, and the envelopes published to them."""

    def __init__(self, backlog: int = DEFAULT_EVENT_BACKLOG) -> None:
        if isinstance(backlog, bool) or not isinstance(backlog, int) or backlog < 1:
            raise ValueError(f"backlog must be a positive int, got {backlog!r}")
        self._backlog = backlog
        self._subscriptions: dict[Subscription, None] = {}
        self._changed = asyncio.Event()

    @property
    def subscribers(self) -> int:
        """How many subscriptions are in place."""
        return len(self._subscriptions)

    def _change(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for_subscribers(self, count: int) -> None:
        """Return once exactly ``count`` subscriptions are in place."""
        while len(self._subscriptions) != count:
            await self._changed.wait()

    def forward(self, envelope: EnvelopePb) -> None:
        """Hand ``envelope`` to every subscription whose filters it passes."""
        adaptor = envelope_adaptor(envelope)
        for subscription in list(self._subscriptions):
            if matches(subscription.filters, adaptor) and not subscription.offer(envelope):
                del self._subscriptions[subscription]
                self._change()

    def publish(
        self,
        topic: str,
        event: betterproto2.Message | AnyPb | None,
        namespace: str | None = None,
    ) -> None:
        """Publish ``event`` now, in ``namespace`` (by default the request's)."""
        if event is not None and not isinstance(event, AnyPb):
            event = AnyPb(type_url=message_type_url(event), value=bytes(event))
        self.forward(
            EnvelopePb(
                timestamp=utcnow(),
                namespace=current_namespace() if namespace is None else namespace,
                topic=topic,
                event=event,
            )
        )

    @contextlib.contextmanager
    def subscribe(self, filters: Filters) -> Iterator[Subscription]:
        """A subscription in place for the body's length."""
        subscription = Subscription(filters, self._backlog)
        self._subscriptions[subscription] = None
        self._change()
        try:
            yield subscription
        finally:
            if subscription in self._subscriptions:
                del self._subscriptions[subscription]
                self._change()
