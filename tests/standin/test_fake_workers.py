"""The stand-in's blocking work (an import's unpack above all) is stopped and waited for
before what it writes in is removed: when the stand-in closes, and when a call is
cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import tarfile
import threading
import time
from typing import IO

import pytest

from sandboxclient import Client
from sandboxclient.testing import FakeContainerd, _transferservice
from sandboxclient.testing._images import oci_archive
from sandboxclient.testing._layers import LayerError
from sandboxclient.testing._workers import Workers
from tests.support.archives import tar_of

pytestmark = pytest.mark.anyio


class SlowUnpack:
    """An unpack that runs until it is told to stop (or released), then records whether
    the directory it wrote in was still there."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.ended: list[bool] = []

    def __call__(self, root: str, layer: IO[bytes], stop: threading.Event | None = None) -> str:
        self.started.set()
        deadline = time.monotonic() + 10
        while not self.release.wait(0.005):
            if (stop is not None and stop.is_set()) or time.monotonic() > deadline:
                break
        self.ended.append(os.path.isdir(root))
        raise LayerError("stopped")


async def test_closing_waits_for_an_unpack_in_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    slow = SlowUnpack()
    monkeypatch.setattr(_transferservice, "apply_layer", slow)
    layer = tar_of(("file", tarfile.REGTYPE, b"x", ""))
    archive = oci_archive("example.test/slow:1", layer, {})
    fake = await FakeContainerd().start()
    try:
        async with Client(fake.address, namespace="ns", timeout=30) as client:
            importing = asyncio.create_task(client.import_image(io.BytesIO(archive)))
            assert await asyncio.to_thread(slow.started.wait, 10)
            await fake.aclose()
            # The unpack thread ended while its directory was still there: it was stopped
            # and waited for before the stand-in removed its state.
            assert slow.ended == [True]
            with contextlib.suppress(Exception):
                await importing
    finally:
        slow.release.set()
        await fake.aclose()


async def test_a_cancelled_run_stops_its_thread_and_waits_for_it() -> None:
    workers = Workers()
    seen: list[str] = []
    started = threading.Event()

    def work(stop: threading.Event) -> None:
        started.set()
        stop.wait(10)
        time.sleep(0.05)  # still busy a moment after being told
        seen.append("ended")

    task = asyncio.create_task(workers.run(work))
    assert await asyncio.to_thread(started.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["ended"]
    await workers.aclose()
