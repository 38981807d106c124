"""The keywords a container is made with, one definition for ``Client.new_container`` and
``Sandbox.new_container``: a keyword neither names is refused as Python refuses one, before
anything is asked of containerd, even one that names another field of the request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sandboxclient import Client

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("name", ["bogus", "sandbox_id", "join_pid", "member", "users"])
async def test_an_unknown_keyword_is_refused_by_both(
    client: Client, tmp_path: Path, name: str
) -> None:
    extra: dict[str, Any] = {name: 1}
    message = f"new_container\\(\\) got an unexpected keyword argument '{name}'"
    with pytest.raises(TypeError, match=message):
        await client.new_container("opt1", rootfs=tmp_path, **extra)
    sb = await client.new_sandbox("opt-sb")
    try:
        with pytest.raises(TypeError, match=message):
            await sb.new_container("opt2", rootfs=tmp_path, join_namespaces=False, **extra)
    finally:
        await sb.shutdown()
    assert await client.list_containers() == []
