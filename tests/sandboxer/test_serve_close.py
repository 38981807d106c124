"""On SIGTERM the sandboxer binary closes its controller first, while the server still
serves (so a Start in flight gets its grace and its answer), and only then stops the server,
which would cancel every call in progress."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sandboxclient.sandboxer import SandboxController
from sandboxclient.sandboxer import __main__ as binary
from sandboxclient.sandboxer._base import serve

pytestmark = pytest.mark.anyio


class Recorded(SandboxController):
    """A controller noting whether the server was still serving at each close."""

    def __init__(self) -> None:
        self.serving = False
        self.closes: list[bool] = []

    async def aclose(self) -> None:
        self.closes.append(self.serving)


async def test_sigterm_closes_the_controller_before_the_server(
    workdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    controller = Recorded()
    listening = asyncio.Event()

    @contextlib.asynccontextmanager
    async def noted(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async with serve(*args, **kwargs) as server:
            controller.serving = True
            listening.set()
            yield server
        controller.serving = False

    monkeypatch.setattr(binary, "serve", noted)
    path = os.path.join(workdir, "s.sock")
    serving = asyncio.ensure_future(binary._serve(controller, path, None, None))
    await asyncio.wait_for(listening.wait(), 20)
    os.kill(os.getpid(), signal.SIGTERM)  # the binary's handler, not the default
    assert await asyncio.wait_for(serving, 20) == 0
    assert controller.closes[0] is True  # closed while the server still served
    assert controller.serving is False  # and the server stopped after
