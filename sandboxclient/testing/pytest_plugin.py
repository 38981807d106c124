"""Fixtures for your own tests, loaded only when asked for.

Add ``pytest_plugins = ["sandboxclient.testing.pytest_plugin"]`` to your ``conftest.py``
(or run ``pytest -p sandboxclient.testing.pytest_plugin``). The fixtures are synchronous,
so they work with whatever runs your async tests (anyio's plugin, pytest-asyncio, ...):

- ``fake_containerd``: a :class:`~sandboxclient.testing.FakeContainerd` serving on a temporary
  socket, from an event loop of its own in a background thread; point a ``Client`` at its
  ``address``. Its plain methods (``sandbox_ids``, ``container_ids``, ``crash_requests``)
  may be called from the test.
- ``containerd``: a private, real containerd (2.0 or newer) with the Python sandboxer plugged
  in as sandboxer ``pysandbox``, for the whole session. Needs Linux, root, containerd with
  ``containerd-shim-runc-v2``, ``ctr`` and ``runc`` (``$CONTAINERD_BIN`` or ``PATH``); where
  that is missing the test is skipped with a reason saying what to install, or fails if
  ``SANDBOXCLIENT_REQUIRE_CONTAINERD=1``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from ._fake import FakeContainerd
from ._locate import ContainerdUnavailable
from ._plugged import PluggedContainerd, plugged_containerd

__all__ = ("ThreadedFake", "containerd", "fake_containerd")

_T = TypeVar("_T")


class ThreadedFake:
    """A FakeContainerd running on its own event loop in a daemon thread."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="sandboxclient-fake-containerd", daemon=True
        )
        self._fake: FakeContainerd | None = None

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout=30)
        except concurrent.futures.TimeoutError as exc:
            raise RuntimeError("the stand-in did not answer in 30 s") from exc

    def start(self) -> FakeContainerd:
        """Start the loop and the stand-in; return it."""
        self._thread.start()

        async def make() -> FakeContainerd:
            return await FakeContainerd().start()

        self._fake = self._run(make())
        return self._fake

    def stop(self) -> None:
        """Close the stand-in (killing what it started) and the loop."""
        try:
            if self._fake is not None:
                self._run(self._fake.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop.close()


@pytest.fixture
def fake_containerd() -> Iterator[FakeContainerd]:
    """A FakeContainerd for one test (see the module's docstring)."""
    runner = ThreadedFake()
    try:
        yield runner.start()
    finally:
        runner.stop()


@pytest.fixture(scope="session")
def containerd() -> Iterator[PluggedContainerd]:
    """A private real containerd with the Python sandboxer, for the session."""
    from ._daemon import require_or_skip_reason

    reason = require_or_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    try:
        with plugged_containerd() as plugged:
            yield plugged
    except ContainerdUnavailable as exc:
        pytest.skip(str(exc))
