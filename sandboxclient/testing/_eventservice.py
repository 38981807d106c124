"""The stand-in's Events service: containerd's ``containerd.services.events.v1.Events``.

Publish, Forward and Subscribe over an :class:`~._exchange.Exchange`, validated and refused
with containerd 2.1.9's codes and messages: Publish needs the request's namespace and a
topic of ``/``-separated identifiers; Forward takes the envelope's own namespace and topic
(an unset time becomes the Unix epoch, as containerd's conversion makes it; Go's zero time is
refused); Subscribe needs no namespace, sees every namespace its filters let through, and
answers a bad filter with containerd's untyped (UNKNOWN) error. Forward without an envelope
crashes that daemon: it is refused and counted with the other crash requests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

from grpclib.const import Handler, Status
from grpclib.exceptions import GRPCError

from .._facts._golang import GO_ZERO_TIME, go_quote
from .._facts._validation import identifier_problem
from .._facts._wirenames import NAMESPACE_HEADER
from .._serve._refusals import invalid_argument
from .._serve._server import current_metadata, namespace_error
from .._wire._pb import EmptyPb, EnvelopePb, events_pb
from ._exchange import Exchange, topic_problem
from ._filters import parse_filters
from ._records import Records
from ._services import Binder

__all__ = ("EventsService",)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _checked_topic(topic: str) -> None:
    problem = topic_problem(topic)
    if problem is not None:
        raise invalid_argument(f"envelope topic {go_quote(topic)}: {problem}")


class EventsService(events_pb.EventsBase):
    """containerd's Events service over ``exchange``; ``records`` counts crash requests."""

    def __init__(self, exchange: Exchange, records: Records, bind: Binder) -> None:
        self._exchange = exchange
        self._records = records
        self._bind = bind

    def __mapping__(self) -> dict[str, Handler]:
        return self._bind(super().__mapping__())

    async def publish(self, message: events_pb.PublishRequest) -> EmptyPb:
        """Publish: an event in the request's namespace, timed now."""
        namespace = current_metadata().get(NAMESPACE_HEADER)
        error = namespace_error(namespace)
        if error is not None:
            raise GRPCError(error.status, f"failed publishing event: {error.message}")
        _checked_topic(message.topic)
        assert namespace is not None
        self._exchange.publish(message.topic, message.event, namespace)
        return EmptyPb()

    async def forward(self, message: events_pb.ForwardRequest) -> EmptyPb:
        """Forward: an envelope as it came, for its own namespace."""
        envelope = message.envelope
        if envelope is None:
            raise self._records.crash("envelope")  # containerd 2.1.9 dies on it
        problem = identifier_problem(envelope.namespace)
        if problem is not None:
            raise invalid_argument(f"event envelope has invalid namespace: {problem}")
        _checked_topic(envelope.topic)
        if envelope.timestamp == GO_ZERO_TIME:
            raise invalid_argument("timestamp must be set on forwarded event")
        self._exchange.forward(
            EnvelopePb(
                timestamp=_EPOCH if envelope.timestamp is None else envelope.timestamp,
                namespace=envelope.namespace,
                topic=envelope.topic,
                event=envelope.event,
            )
        )
        return EmptyPb()

    async def subscribe(self, message: events_pb.SubscribeRequest) -> AsyncIterator[EnvelopePb]:
        """Subscribe: every envelope published from now on that passes the filters."""
        try:
            filters = parse_filters(message.filters)
        except GRPCError as exc:
            text = (exc.message or "").removesuffix(": invalid argument")
            raise GRPCError(
                Status.UNKNOWN,
                f"subscription error: failed parsing subscription filters: {text}",
            ) from None
        with self._exchange.subscribe(filters) as subscription:
            while True:
                yield await subscription.next()
