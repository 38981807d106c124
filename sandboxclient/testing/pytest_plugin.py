"""Fixtures for your own tests, loaded only when asked for.

Add ``pytest_plugins = ["sandboxclient.testing.pytest_plugin"]`` to your ``conftest.py``
(or run ``pytest -p sandboxclient.testing.pytest_plugin``). The fixtures are synchronous,
so they work with whatever runs your async tests (anyio's plugin, pytest-asyncio, ...):

- ``fake_containerd``: a :class:`~sandboxclient.testing.FakeContainerd` serving on a temporary
  socket, from an event loop of its own in a background thread; point a ``Client`` at its
  ``address``. Its plain methods (``sandbox_ids``, ``container_ids``, ``crash_requests``)
  may be called from the test. It answers as the newest containerd release line unless the
  test asks for another, with the marker ``@pytest.mark.fake_containerd_release("2.1")`` or
  as an indirect parameter (``@pytest.mark.parametrize("fake_containerd", ["2.0", "2.3"],
  indirect=True)``, which runs the test once per release); a release it cannot answer as is
  a ``ValueError`` naming the lines it knows.
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

from .._plumbing._version import ContainerdVersion
from ._fake import FakeContainerd
from ._locate import ContainerdUnavailable
from ._plugged import PluggedContainerd, plugged_containerd
from ._releases import DEFAULT_RELEASE, emulated_release

__all__ = ("RELEASE_MARKER", "ThreadedFake", "containerd", "fake_containerd")

RELEASE_MARKER = "fake_containerd_release"
"""The marker naming the release the ``fake_containerd`` fixture answers as."""


def pytest_configure(config: pytest.Config) -> None:
    """Register the release marker, so that ``--strict-markers`` runs accept it."""
    config.addinivalue_line(
        "markers",
        f"{RELEASE_MARKER}(version): the containerd release the fake_containerd fixture "
        'answers as (a line such as "2.1", or a version such as "v2.2.4")',
    )


_T = TypeVar("_T")


class ThreadedFake:
    """A FakeContainerd answering as release ``version``, running on its own event loop in
    a daemon thread."""

    def __init__(self, version: str | ContainerdVersion = DEFAULT_RELEASE) -> None:
        emulated_release(version)  # refuses an unknown release before any thread starts
        self._version = version
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
            return await FakeContainerd(version=self._version).start()

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


def _asked_release(request: pytest.FixtureRequest) -> str | ContainerdVersion:
    param = getattr(request, "param", None)
    if param is not None:
        return param  # type: ignore[no-any-return]
    marker = request.node.get_closest_marker(RELEASE_MARKER)
    if marker is None:
        return DEFAULT_RELEASE
    if len(marker.args) != 1 or marker.kwargs:
        raise TypeError(f'@pytest.mark.{RELEASE_MARKER} takes one release, such as "2.1"')
    return marker.args[0]  # type: ignore[no-any-return]


@pytest.fixture
def fake_containerd(request: pytest.FixtureRequest) -> Iterator[FakeContainerd]:
    """A FakeContainerd for one test, answering as the release the test asks for (see the
    module's docstring)."""
    runner = ThreadedFake(_asked_release(request))
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
