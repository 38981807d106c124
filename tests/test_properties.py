"""Property tests: what goes into the store comes back unchanged, and bad input is typed."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandboxclient import AnyValue, Client, InvalidArgumentError
from sandboxclient._validation import identifier_problem

pytestmark = pytest.mark.anyio

_counter = itertools.count()
_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

label_keys = st.text(min_size=1, max_size=40)
label_values = st.text(max_size=200)
labels = st.dictionaries(label_keys, label_values, max_size=8)
type_urls = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=60
)
extensions = st.dictionaries(
    st.text(min_size=1, max_size=30),
    st.builds(AnyValue, type_urls, st.binary(max_size=200)),
    max_size=4,
)


def _next_id() -> str:
    return f"prop{next(_counter)}"


@_SETTINGS
@given(labels=labels, extensions=extensions)
async def test_labels_and_extensions_round_trip(
    client: Client, labels: dict[str, str], extensions: dict[str, AnyValue]
) -> None:
    sb = await client.new_sandbox(
        _next_id(), labels=labels, extensions=extensions, runtime="io.containerd.runc.v2"
    )
    # containerd drops labels whose value is empty; so does the stand-in.
    kept = {k: v for k, v in labels.items() if v}
    try:
        assert sb.metadata.labels == kept
        assert dict(sb.metadata.extensions) == extensions
        assert await sb.labels() == kept
        loaded = await client.get_sandbox(sb.id)
        assert dict(loaded.extensions) == extensions
    finally:
        await sb.shutdown()


@_SETTINGS
@given(
    sandbox_id=st.one_of(
        st.text(max_size=90), st.from_regex(r"\A[A-Za-z0-9]+([._-][A-Za-z0-9]+)*\Z")
    )
)
async def test_any_id_is_created_or_refused_with_a_typed_error(
    client: Client, sandbox_id: str
) -> None:
    if not sandbox_id:
        with pytest.raises(ValueError, match="must be specified"):
            await client.new_sandbox(sandbox_id)
        return
    if identifier_problem(sandbox_id) is not None:
        with pytest.raises(InvalidArgumentError, match="identifier"):
            await client.new_sandbox(sandbox_id, runtime="io.containerd.runc.v2")
    else:
        # Whatever the client lets through, the server must accept.
        sb = await client.new_sandbox(sandbox_id, runtime="io.containerd.runc.v2")
        assert sb.id == sandbox_id
        await sb.shutdown()
    assert await client.list_sandboxes() == []
