"""``plugged_containerd`` shutting down, as it ends, the sandboxes its sandboxer still holds:
each is tried whatever befell the others, and a failure there does not hide the test's own.
Tried with stand-ins for the daemon, the sandboxer and the client."""

from __future__ import annotations

import logging
from pathlib import Path
from types import TracebackType

import pytest

from sandboxclient.errors import NotFoundError, UnavailableError
from sandboxclient.testing import _plugged
from sandboxclient.testing._plugged import HeldSandboxesError, plugged_containerd

HELD = ["a/bad-1", "a/ok-1", "b/bad-2", "b/gone", "b/ok-2"]


class _Sandboxes:
    """What the stand-in client was asked to shut down."""

    def __init__(self) -> None:
        self.tried: list[str] = []


class _Sandbox:
    def __init__(self, name: str, seen: _Sandboxes) -> None:
        self.name, self.seen = name, seen

    async def shutdown(self) -> None:
        self.seen.tried.append(self.name)
        if "bad" in self.name:
            raise UnavailableError(f"{self.name}: controller gone")


def _client(seen: _Sandboxes) -> type:
    class Client:
        def __init__(self, address: str, *, namespace: str, sandboxer: str) -> None:
            self.namespace = namespace

        async def __aenter__(self) -> Client:
            return self

        async def __aexit__(
            self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
        ) -> None:
            return None

        async def load_sandbox(self, sandbox_id: str) -> _Sandbox:
            if sandbox_id == "gone":
                raise NotFoundError(f"sandbox {sandbox_id} not found")
            return _Sandbox(f"{self.namespace}/{sandbox_id}", seen)

    return Client


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> _Sandboxes:
    """Stand-ins for the sandboxer (holding ``HELD``), the daemon and the client."""
    state_dir = tmp_path / "sandboxer-state"
    for name in HELD:
        (state_dir / "sandboxes" / name).mkdir(parents=True)
        (state_dir / "sandboxes" / name / "sandbox.json").write_text("{}")

    class Daemon:
        def __init__(self, **_: object) -> None:
            self.address = str(tmp_path / "c.sock")

        def start(self, *_: float) -> None: ...
        def alive(self) -> bool:
            return True

        def cleanup(self) -> None: ...

    class Sandboxer:
        def __init__(self, *_: object, **__: object) -> None:
            self.state_dir = str(state_dir)

        def start(self, *_: float) -> None: ...
        def alive(self) -> bool:
            return True

        def stop(self) -> None: ...

    found = _Sandboxes()
    monkeypatch.setattr(_plugged, "require_or_skip_reason", lambda: None)
    monkeypatch.setattr(_plugged, "ContainerdDaemon", Daemon)
    monkeypatch.setattr(_plugged, "SandboxerProcess", Sandboxer)
    monkeypatch.setattr(_plugged, "umount_under", lambda _: None)
    monkeypatch.setattr(_plugged, "Client", _client(found))
    return found


def test_every_held_sandbox_is_tried_and_the_failures_are_raised_together(
    seen: _Sandboxes,
) -> None:
    with pytest.raises(HeldSandboxesError) as raised, plugged_containerd():
        pass
    assert seen.tried == ["a/bad-1", "a/ok-1", "b/bad-2", "b/ok-2"]
    assert sorted(raised.value.failures) == ["a/bad-1", "b/bad-2"]
    assert all(isinstance(e, UnavailableError) for e in raised.value.failures.values())
    assert "2 held sandbox(es) not shut down" in str(raised.value)


def test_a_failure_on_its_way_out_is_not_hidden(
    seen: _Sandboxes, caplog: pytest.LogCaptureFixture
) -> None:
    class TestsOwn(Exception):
        pass

    with pytest.raises(TestsOwn), plugged_containerd():
        raise TestsOwn("the test failed")
    assert seen.tried == ["a/bad-1", "a/ok-1", "b/bad-2", "b/ok-2"]
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "a/bad-1" in record.getMessage()
    assert "the test failed" in record.getMessage()
