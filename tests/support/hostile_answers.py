"""What a hostile server answers: named cases and hypothesis strategies of raw answers."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from sandboxclient._facts._wirenames import RUNTIME_SPEC_TYPE_URL
from sandboxclient._wire._grpcframe import HOOKED
from sandboxclient._wire._pb import (
    AnyPb,
    SandboxPb,
    containers_pb,
    sandbox_pb,
    task_types_pb,
    tasks_pb,
)
from tests.support.mutations import mutated
from tests.support.rawh2 import GRPC_HEADERS, Answer, frame

hooked = pytest.mark.skipif(
    not HOOKED,
    reason="the plain path (no grpclib hooks) reads with grpclib's own reader, checks the "
    "limit after the fact and pings with grpclib's keepalive: its own test covers it",
)
"""For the tests of what the hooked wire does and the plain path does not."""


def fuzz_settings(default_examples: int) -> settings:
    """Hypothesis settings for a fuzzing test; ``HOSTILE_EXAMPLES`` raises the count."""
    return settings(
        max_examples=int(os.environ.get("HOSTILE_EXAMPLES", str(default_examples))),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def varint(value: int) -> bytes:
    """``value`` as a protobuf varint."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    """A protobuf field key."""
    return varint(number << 3 | wire)


STATUS_READY = bytes(
    sandbox_pb.ControllerStatusResponse(sandbox_id="s1", pid=42, state="SANDBOX_READY")
)
WAIT_EXIT_7 = bytes(sandbox_pb.ControllerWaitResponse(exit_status=7))
TASK_RUNNING = bytes(
    tasks_pb.GetResponse(
        process=task_types_pb.Process(
            container_id="c1", pid=42, status=task_types_pb.Status.RUNNING
        )
    )
)
SEEDS = [
    STATUS_READY,
    WAIT_EXIT_7,
    TASK_RUNNING,
    bytes(
        sandbox_pb.StoreGetResponse(
            sandbox=SandboxPb(sandbox_id="s1", labels={"a": "b"}, sandboxer="shim")
        )
    ),
    bytes(
        containers_pb.GetContainerResponse(
            container=containers_pb.Container(id="c1", labels={"k": "v"}, image="busybox")
        )
    ),
]

# Every hostile case by name, with what the client must make of it (grpc-go's mapping).
NAMED: dict[str, Answer] = {
    "random bytes": Answer(data=b"\x8f\x13garbage\x00\xff"),
    "cut-short message": Answer(data=frame(b"\x0a\x05ab", length=40)),
    "cut-short prefix": Answer(data=b"\x00\x00\x01"),
    "wrong wire type": Answer(data=frame(key(1, 0) + varint(5))),
    "length past the end": Answer(data=frame(key(1, 2) + varint(50) + b"ab")),
    "overlong varint": Answer(data=frame(key(3, 0) + b"\xff" * 11)),
    "out-of-range timestamp": Answer(
        data=frame(key(5, 2) + varint(11) + key(1, 0) + varint(2**62) + b"\x10\x01")
    ),
    "invalid UTF-8": Answer(data=frame(key(1, 2) + varint(3) + b"\xc3\x28\xff")),
    "compressed flag": Answer(data=frame(b"", flag=1)),
    "unknown flag": Answer(data=frame(b"", flag=0x80)),
    "trailing garbage": Answer(data=frame(b"") + b"\x00\x00"),
    "a second message": Answer(data=frame(b"") + frame(b"")),
    "length prefix of 4 GiB": Answer(data=frame(b"", length=2**32 - 1)),
    "100 MB claimed": Answer(data=frame(b"", length=100_000_000), fill=1 << 20),
    "no message": Answer(),
    "trailers-only OK": Answer(end="trailers-only"),
    "no trailers": Answer(data=frame(b""), end="data"),
    "reset mid-message": Answer(data=frame(b"abc", length=10), end="reset"),
    "reset CANCEL": Answer(end="reset", reset_code=8),
    "reset REFUSED_STREAM": Answer(end="reset", reset_code=7),
    "closed mid-message": Answer(data=frame(b"abc", length=10), end="close"),
    "closed before headers": Answer(headers=None, end="close"),
    "no :status": Answer(headers=[("content-type", "application/grpc")]),
    "HTTP 503": Answer(headers=[(":status", "503")], end="close"),
    "wrong content-type": Answer(headers=[(":status", "200"), ("content-type", "text/html")]),
    "bad binary metadata": Answer(headers=[*GRPC_HEADERS, ("x-bin", "a")]),
    "non-ASCII header": Answer(headers=[*GRPC_HEADERS, ("x-note", "caf\u00e9")]),
    "bad grpc-status": Answer(trailers=[("grpc-status", "banana")]),
    "unknown grpc-status": Answer(status=99, message="what"),
    "NOT_FOUND": Answer(status=5, message="nope: not found"),
    "empty DATA frames": Answer(data=frame(b""), chunk=2, empty_frames=True),
    "empty message": Answer(data=frame(b"")),
    "a record without a sandboxer": Answer(
        data=frame(bytes(sandbox_pb.StoreGetResponse(sandbox=SandboxPb(sandbox_id="s1"))))
    ),
    "a container with a broken spec": Answer(
        data=frame(
            bytes(
                containers_pb.GetContainerResponse(
                    container=containers_pb.Container(
                        id="c1", spec=AnyPb(type_url=RUNTIME_SPEC_TYPE_URL, value=b"{nope")
                    )
                )
            )
        )
    ),
}

_wire = st.sampled_from([0, 0, 1, 2, 2, 2, 5, 3, 4, 6, 7])


@st.composite
def protobuf(draw: st.DrawFn, depth: int = 2) -> bytes:
    """Protobuf-shaped bytes: fields of any number and wire type, some of them broken."""
    parts: list[bytes] = []
    for _ in range(draw(st.integers(0, 6))):
        number = draw(st.integers(1, 12) | st.integers(13, 2**29 - 1))
        wire = draw(_wire)
        parts.append(key(number, wire))
        if wire == 0:
            value = draw(st.integers(0, 2**64 - 1) | st.sampled_from([2**32, 2**31, 2**63]))
            parts.append(
                varint(value) if draw(st.booleans()) else b"\xff" * draw(st.integers(1, 11))
            )
        elif wire == 1:
            parts.append(draw(st.binary(min_size=0, max_size=8)))
        elif wire == 5:
            parts.append(draw(st.binary(min_size=0, max_size=4)))
        elif wire == 2:
            body = draw(
                st.binary(max_size=24)
                | st.text(max_size=12).map(str.encode)
                | st.just(b"\xc3\x28")
                | (protobuf(depth - 1) if depth > 0 else st.just(b""))
            )
            length = len(body) + draw(st.sampled_from([0, 0, 0, 1, -1, 1000]))
            parts.append(varint(max(length, 0)) + body)
        else:
            parts.append(draw(st.binary(max_size=4)))
    return b"".join(parts)


_header_names = st.sampled_from([":status", "content-type", "grpc-status", "grpc-message", "x-bin"])
_header_values = st.sampled_from(
    ["200", "500", "application/grpc", "0", "13", "a", "%zz"]
) | st.text(max_size=8)


answers: st.SearchStrategy[Answer] = st.one_of(
    st.sampled_from(list(NAMED.values())),
    st.builds(lambda body: Answer(data=frame(body)), protobuf()),
    st.builds(lambda body: Answer(data=frame(body)), mutated(SEEDS)),
    st.builds(lambda body: Answer(data=frame(body)), st.binary(max_size=48)),
    st.builds(lambda raw: Answer(data=raw), st.binary(max_size=48)),
    st.builds(
        lambda bodies, end: Answer(data=b"".join(frame(b) for b in bodies), end=end),
        st.lists(protobuf(), max_size=3),
        st.sampled_from(["trailers", "data", "reset", "close"]),
    ),
    st.builds(
        lambda status, message: Answer(status=status, message=message),
        st.integers(0, 20),
        st.text(max_size=20),
    ),
    st.builds(
        lambda extra, body: Answer(headers=[*GRPC_HEADERS, *extra], data=frame(body)),
        st.lists(st.tuples(_header_names, _header_values), max_size=3),
        protobuf(),
    ),
    st.builds(
        lambda flag, length, body: Answer(data=struct.pack(">BI", flag, length) + body),
        st.integers(0, 255),
        st.integers(0, 2**32 - 1),
        st.binary(max_size=16),
    ),
)
"""Any answer a hostile server might send (never one that hangs: deadlines have tests)."""
