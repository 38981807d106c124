"""Valid messages made invalid: the one hypothesis mutator the hostile-peer tests of both
directions (answers to the client, requests to the servers) draw from."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

__all__ = ("mutated",)


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[bytes]) -> bytes:
    """One of ``seeds`` with one to three runs of bytes flipped, cut off or inserted."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
    return bytes(data)
