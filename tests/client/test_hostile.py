"""Hostile input through the public API: typed refusals, never a hurt daemon, no leaks
across namespaces."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandboxclient import (
    Client,
    NotFoundError,
)
from sandboxclient._facts._validation import identifier_problem, labels_problem
from tests.support.backends import Backend
from tests.support.constants import RUNTIME

pytestmark = pytest.mark.anyio

_ids = itertools.count()
_SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)
hostile_labels = st.one_of(
    st.dictionaries(st.text(max_size=30), st.text(max_size=60), max_size=6),
    st.builds(lambda n: {"k": "v" * n}, st.integers(4000, 5000)),
    st.builds(lambda n: {f"key{i}": str(i) for i in range(n)}, st.integers(1000, 3000)),
)


def _pid_of(backend: Backend) -> int | None:
    return backend.daemon.pid if backend.daemon is not None else None


@_SETTINGS
@given(
    labels=hostile_labels,
    spec=st.dictionaries(st.text(max_size=12), json_values, max_size=5),
    ext_key=st.text(max_size=12),
    ext_value=st.binary(max_size=64),
)
async def test_hostile_sandboxes_are_stored_or_refused_by_field(
    backend: Backend,
    client: Client,
    labels: dict[str, str],
    spec: dict[str, Any],
    ext_key: str,
    ext_value: bytes,
) -> None:
    pid = _pid_of(backend)
    sandbox_id = f"h{next(_ids)}"
    create = client.new_sandbox(
        sandbox_id,
        labels=labels,
        spec=spec,
        extensions={ext_key: ("example.com/X", ext_value)},
        runtime=RUNTIME,
    )
    if not ext_key:
        create.close()
        with pytest.raises(ValueError, match="extension key must not be empty"):
            await client.new_sandbox(sandbox_id, extensions={ext_key: ("example.com/X", ext_value)})
    elif labels_problem(labels) is not None:
        with pytest.raises(ValueError, match="invalid labels"):
            await create
    else:
        sb = await create
        try:
            stored = await client.get_sandbox(sandbox_id)
            assert stored.labels == {k: v for k, v in labels.items() if v}
            assert stored.spec == spec
        finally:
            await sb.shutdown()
    assert await client.list_sandboxes() == []
    assert _pid_of(backend) == pid, "the daemon restarted"


@_SETTINGS
@given(namespace=st.text(max_size=90))
async def test_any_namespace_is_used_or_refused_up_front(backend: Backend, namespace: str) -> None:
    pid = _pid_of(backend)
    if identifier_problem(namespace) is not None:
        with pytest.raises(ValueError, match="namespace"):
            backend.client(namespace=namespace)
        return
    async with backend.client(namespace=namespace) as client:
        assert isinstance(await client.list_sandboxes(), list)
    assert _pid_of(backend) == pid


async def test_a_sandbox_in_one_namespace_is_invisible_from_another(backend: Backend) -> None:
    async with backend.client() as a, backend.client(namespace=backend.namespace + "-other") as b:
        sb = await a.new_sandbox("priv1", labels={"owner": "a"}, runtime=RUNTIME)
        await sb.start()
        # A handle carrying the other namespace's client: every call must miss.
        intruder = b.sandbox_handle(sb.metadata)
        with pytest.raises(NotFoundError):
            await b.get_sandbox("priv1")
        with pytest.raises(NotFoundError):
            await intruder.status()
        with pytest.raises(NotFoundError):
            await intruder.stop(grace=1)
        with pytest.raises(NotFoundError):
            await intruder.update(labels={"owner": "b"})
        with pytest.raises(NotFoundError):
            await b.delete_sandbox("priv1")
        status = await (await intruder.wait()).get()
        assert isinstance(status.error, NotFoundError)
        await intruder.shutdown()  # idempotent: nothing of b's to remove
        assert [s.id for s in await b.list_sandboxes()] == []
        # Untouched on a's side.
        assert await sb.labels() == {"owner": "a"}
        assert (await sb.status()).ready
        await sb.shutdown()
