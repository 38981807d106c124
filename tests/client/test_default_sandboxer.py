"""The sandbox controller of new sandboxes: the Client's, else the namespace's label (as
containerd 2.2's Go client picks it), else ``shim``; on the stand-in and a real daemon."""

from __future__ import annotations

import pytest

from sandboxclient import Client
from tests.support.backends import Backend
from tests.support.constants import RUNTIME
from tests.support.namespaces import set_default_sandboxer

pytestmark = pytest.mark.anyio


async def test_the_namespace_label_names_the_default_sandboxer(backend: Backend) -> None:
    async with backend.client(sandboxer=None) as client:
        assert client.sandboxer is None
        assert await client.default_sandboxer() == "shim"  # a namespace without the label
    await set_default_sandboxer(backend, backend.sandboxer)
    async with backend.client(sandboxer=None) as client:
        assert await client.default_sandboxer() == backend.sandboxer
        sandbox = await client.new_sandbox("dflt1", runtime=RUNTIME)
        assert sandbox.sandboxer == backend.sandboxer
        assert (await client.get_sandbox("dflt1")).sandboxer == backend.sandboxer
        assert client.controller().name == backend.sandboxer
        # Read once, as Go's client does: a later change is not seen by this Client.
        await set_default_sandboxer(backend, "")
        assert await client.default_sandboxer() == backend.sandboxer
        await sandbox.shutdown()
    # The Client's own sandboxer comes first.
    async with backend.client(sandboxer="elsewhere") as client:
        assert await client.default_sandboxer() == "elsewhere"
    async with backend.client(sandboxer=None) as client:
        assert await client.default_sandboxer() == "shim"


def test_an_empty_sandboxer_is_refused() -> None:
    with pytest.raises(ValueError, match="sandboxer must be a non-empty string, or None"):
        Client("/nowhere.sock", sandboxer="")
