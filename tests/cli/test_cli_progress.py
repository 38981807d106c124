"""How ``sandboxctl`` shows a transfer's progress: a live table on a terminal, redrawn in
place with a line per blob, plain lines otherwise, JSON lines under ``--json``."""

from __future__ import annotations

import io
import json
import re

import pytest

from sandboxclient import PullProgress
from sandboxclient._cli._progress import ProgressDisplay, live_available

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
LAYERS = ("layer-sha256:aaaa", "layer-sha256:bbbb")
ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def steps() -> list[PullProgress]:
    """Two layers downloaded in four rounds each, then the image saved."""
    out: list[PullProgress] = []
    for done in (0, MiB // 2, MiB, MiB):
        for name in LAYERS:
            event = "complete" if done == MiB and out and out[-1].progress == MiB else "downloading"
            out.append(PullProgress(event, name, progress=done, total=MiB))
    out.append(PullProgress("saved", "example.test/app:1"))
    return out


async def show(display: ProgressDisplay) -> None:
    with display:
        for step in steps():
            await display(step)


@pytest.mark.skipif(not live_available(), reason="rich (the cli extra) is not installed")
async def test_a_terminal_gets_a_live_line_per_blob_redrawn_in_place() -> None:
    out = io.StringIO()
    display = ProgressDisplay(out, as_json=False, terminal=True)
    assert display.live
    await show(display)
    text = out.getvalue()
    # Redrawn: the cursor goes back up over the table and the lines are erased.
    assert "\x1b[2K" in text
    assert re.search(r"\x1b\[1A", text)
    # The last frame: one line per blob and one for the image, each at its last step.
    final = [line for line in ESCAPE.sub("", text).splitlines() if line.strip()][-3:]
    assert [line.split()[0] for line in final] == [*LAYERS, "example.test/app:1"]
    for line in final[:2]:
        assert "complete" in line
        assert "1.0 MiB/1.0 MiB" in line
    assert "saved" in final[2]


async def test_plain_lines_when_not_a_terminal_or_asked_for_json() -> None:
    out = io.StringIO()
    display = ProgressDisplay(out, as_json=False, terminal=False)
    assert not display.live
    await show(display)
    lines = out.getvalue().splitlines()
    assert len(lines) == len(steps())
    assert lines[0] == f"downloading {LAYERS[0]} 0/{MiB}"
    assert lines[-1] == "saved example.test/app:1"
    assert "\x1b" not in out.getvalue()

    out = io.StringIO()
    await show(ProgressDisplay(out, as_json=True, terminal=True))
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["name"] for r in records] == [s.name for s in steps()]
    assert records[-1] == {
        "event": "saved",
        "name": "example.test/app:1",
        "parents": [],
        "progress": 0,
        "total": 0,
    }


@pytest.mark.skipif(not live_available(), reason="rich (the cli extra) is not installed")
async def test_names_from_the_daemon_cannot_drive_the_terminal() -> None:
    out = io.StringIO()
    with ProgressDisplay(out, as_json=False, terminal=True) as display:
        await display(PullProgress("downloading", "evil\x1b[2J[bold]x[/bold]", progress=1, total=2))
    assert "\x1b[2J" not in out.getvalue()
    assert "[bold]x[/bold]" in ESCAPE.sub("", out.getvalue())
