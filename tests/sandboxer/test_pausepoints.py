"""The test-only pause points: inert unless their variable names them, and once only."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from sandboxclient.sandboxer._pausepoints import ENDING_KILLED, PAUSE_ENV, pause_point


def test_a_pause_point_stops_once_and_only_where_it_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, signum: sent.append((pid, signum)))
    told = tmp_path / "told"  # a file here: a FIFO would wait for its reader
    monkeypatch.delenv(PAUSE_ENV, raising=False)
    pause_point(ENDING_KILLED)
    monkeypatch.setenv(PAUSE_ENV, f"elsewhere={told}")
    pause_point(ENDING_KILLED)
    assert sent == []
    assert not told.exists()
    monkeypatch.setenv(PAUSE_ENV, f"{ENDING_KILLED}={told}")
    pause_point(ENDING_KILLED)
    pause_point(ENDING_KILLED)
    assert sent == [(os.getpid(), signal.SIGSTOP)]
    assert told.read_text() == f"{ENDING_KILLED}\n"
    assert PAUSE_ENV not in os.environ  # what the sandboxer starts does not inherit it
