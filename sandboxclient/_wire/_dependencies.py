"""Every touch of grpclib's, h2's and betterproto2's private members, and why: the one list.

The wire builds on these libraries' internals where their public API cannot do what it
needs (bounded answers, the keepalive, the checks on an answer's shape, the strict codec).
Each touch below names the project's module, the touch as ``tests/test_layout.py`` finds it,
the member of the dependency it touches, and why. The test fails on a touch that is not
listed here, on a listed one that is no longer made, and when an installed dependency is
outside :data:`VERSIONS`.

:data:`RELIANCES` lists what the guard cannot see in the syntax: behaviour of a
dependency's internals the code relies on. Upgrading a dependency means reading each entry
of both lists against the new version's source, then widening its :class:`Verified`.

At run time, the hooks on grpclib (:data:`._grpcframe.HOOKED`) and the codec's plans on
betterproto2 (:data:`._codec.FAST`) are used only when the installed version is in its
``series`` (:func:`in_series`); otherwise the libraries' plain paths run.
"""

from __future__ import annotations

import dataclasses

__all__ = ("RELIANCES", "TOUCHES", "VERSIONS", "Touch", "Verified", "in_series")


@dataclasses.dataclass(frozen=True)
class Verified:
    """The versions of ``package`` the touches were written for: every version starting
    with ``series`` is accepted; ``verified`` are those the tests have passed on."""

    package: str
    series: str
    verified: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Touch:
    """One touch: the project's ``module``, the ``touch`` as the guard says it, the
    dependency's ``member`` it touches, and ``why``."""

    module: str
    touch: str
    member: str
    why: str


VERSIONS = (
    Verified("grpclib", "0.4.", ("0.4.9",)),
    Verified("h2", "4.", ("4.4.1",)),
    Verified("betterproto2", "0.10.", ("0.10.0",)),
)
"""The version range each dependency's touches were verified on."""


def in_series(package: str, version: str) -> bool:
    """Whether ``version`` of ``package`` is in the series its touches were written for."""
    return any(v.package == package and version.startswith(v.series) for v in VERSIONS)


_T = "sandboxclient._wire._transport"
_STREAM = "grpclib.client.Stream"
_CONFIG = "grpclib.config.Configuration"
_PING_CONFIG = (
    "grpclib's keepalive settings are underscored (experimental); the plain path uses "
    "grpclib's own PINGs, set as the project's keepalive is (see _keepalive)"
)
_END = (
    "a unary answer is one message then the status, a stream ends with trailers: "
    "_CallStream.recv_message checks the shape grpclib leaves unchecked"
)

TOUCHES: tuple[Touch, ...] = (
    Touch(
        "sandboxclient._serve._server",
        "UnixServer: def _protocol_factory",
        "grpclib.server.Server._protocol_factory",
        "the server's protocol hook: the project's hardened protocol replaces grpclib's",
    ),
    Touch(
        "sandboxclient._serve._server",
        "super()._protocol_factory",
        "grpclib.server.Server._protocol_factory",
        "the hook builds on grpclib's protocol (its handler and settings)",
    ),
    Touch(
        "sandboxclient._wire._codec",
        "cls._betterproto",
        "betterproto2.Message._betterproto",
        "the decoding plans are made from betterproto2's field metadata (only in series)",
    ),
    Touch(
        "sandboxclient._wire._grpcframe",
        "Channel._protocol_factory",
        "grpclib.client.Channel._protocol_factory",
        "the version guard itself: grpclib's hook is replaced only if it is still there",
    ),
    Touch(
        _T,
        "WireChannel: def _protocol_factory",
        "grpclib.client.Channel._protocol_factory",
        "the client's protocol hook: framing, keepalive and the hardening (HOOKED only)",
    ),
    Touch(
        _T,
        "super()._protocol_factory",
        "grpclib.client.Channel._protocol_factory",
        "the hook builds on grpclib's protocol (its handler and settings)",
    ),
    Touch(
        _T,
        "_CallStream: def _process_grpc_status",
        f"{_STREAM}._process_grpc_status",
        "a malformed grpc-status is INTERNAL, as grpc-go says, not grpclib's UNKNOWN",
    ),
    Touch(
        _T,
        "super()._process_grpc_status",
        f"{_STREAM}._process_grpc_status",
        "the override checks grpc-status, then hands it to grpclib",
    ),
    Touch(_T, "_CallStream: self._cardinality", f"{_STREAM}._cardinality", _END),
    Touch(_T, "_CallStream: self._wrapper", f"{_STREAM}._wrapper", _END),
    Touch(_T, "_CallStream: self._stream", f"{_STREAM}._stream", _END),
    Touch(_T, "_CallStream: self._trailers_only", f"{_STREAM}._trailers_only", _END),
    Touch(
        _T,
        "_CallStream: self._recv_trailing_metadata_done",
        f"{_STREAM}._recv_trailing_metadata_done",
        _END,
    ),
    Touch(_T, "_CallStream: self._end_done", f"{_STREAM}._end_done", _END),
    Touch(
        _T,
        "_CallStream: self._send_request_done",
        f"{_STREAM}._send_request_done",
        "send_framed sends the request's headers first, as send_message does",
    ),
    Touch(
        _T,
        "stream._h2_connection",
        "grpclib.protocol.Stream._h2_connection",
        "send_framed makes a window's frames at once through h2 (grpclib makes one a turn)",
    ),
    Touch(
        _T,
        "stream._transport",
        "grpclib.protocol.Stream._transport",
        "send_framed writes a window's frames in one write",
    ),
    Touch(_T, "Configuration(_keepalive_time=)", f"{_CONFIG}._keepalive_time", _PING_CONFIG),
    Touch(_T, "Configuration(_keepalive_timeout=)", f"{_CONFIG}._keepalive_timeout", _PING_CONFIG),
    Touch(
        _T,
        "Configuration(_keepalive_permit_without_calls=)",
        f"{_CONFIG}._keepalive_permit_without_calls",
        _PING_CONFIG,
    ),
    Touch(
        _T,
        "Configuration(_http2_max_pings_without_data=)",
        f"{_CONFIG}._http2_max_pings_without_data",
        _PING_CONFIG,
    ),
    Touch(
        _T,
        "Configuration(_http2_min_sent_ping_interval_without_data=)",
        f"{_CONFIG}._http2_min_sent_ping_interval_without_data",
        _PING_CONFIG,
    ),
)
"""Every touch of a dependency's private member (see the module's docstring)."""

RELIANCES: tuple[tuple[str, str], ...] = (
    (
        "sandboxclient._wire._grpcframe",
        "grpclib.protocol.Buffer.read raises AssertionError on a short read (FramedBuffer "
        "turns it into INTERNAL 'unexpected EOF'); grpclib.stream.recv_message asks the "
        "buffer for 5 bytes, then for the length they say (the prefix is checked between)",
    ),
    (
        "sandboxclient._wire._grpcframe",
        "on the plain path, library_wire_error tells grpclib's AssertionError, KeyError, ... "
        "on a malformed answer from a bug by the module of the traceback's last frame",
    ),
    (
        "sandboxclient._wire._h2proto",
        "WireProtocol.connection_made is grpclib.protocol.H2Protocol.connection_made with "
        "the project's initial SETTINGS, EventsProcessor and keepalive; it uses grpclib's "
        "undocumented Connection (feed, flush, ack, streams_failed), EventsProcessor "
        "(register, streams, process_*) and Stream (buffer, wrapper)",
    ),
    (
        "sandboxclient._wire._h2proto",
        "h2: H2Connection.local_settings is replaced before initiate_connection, and "
        "max_inbound_frame_size is read; both are public attributes",
    ),
    (
        _T,
        "_CallStream._send_data is grpclib.protocol.Stream.send_data with the frames a "
        "window allows made in one go: it keeps the stream's and connection's counters and "
        "waits on write_ready and window_updated as grpclib does",
    ),
    (
        _T,
        "WireChannel.request makes grpclib's Stream, then sets its class to _CallStream, "
        "which adds methods and no state",
    ),
)
"""What the wire relies on in a dependency beyond the touches the guard can see."""
