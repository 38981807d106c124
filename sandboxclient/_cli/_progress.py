"""How ``sandboxctl`` shows a transfer's progress on stderr.

On a terminal, with rich installed (the ``cli`` extra), a live table: a line per blob or
image the daemon reports (``layer-sha256:...``, ``config-...``, the image's name), its last
step, a bar and the bytes done, redrawn in place. Otherwise a plain line a step (``EVENT
NAME DONE/TOTAL``), or a JSON object a step under ``--json``. rich is imported here only,
when a terminal asks for it, so ``import sandboxclient`` never pays for it.
"""

from __future__ import annotations

import json
import time
from types import TracebackType
from typing import IO, Any

from .._image_models import PullProgress
from ._render import printable

__all__ = ("ProgressDisplay", "live_available")

_REDRAW_EVERY = 0.1  # seconds: a pull reports far more often than a terminal needs


def live_available() -> bool:
    """Whether the live display can be made here (rich is installed)."""
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class ProgressDisplay:
    """The ``progress`` callback of a transfer, shown on ``stream``: live on a terminal
    (``terminal``: the stream's ``isatty()`` by default), plain lines otherwise, JSON lines
    with ``as_json``. Use it as a context manager: leaving it draws the last state."""

    def __init__(self, stream: IO[str], *, as_json: bool, terminal: bool | None = None) -> None:
        self._stream = stream
        self._as_json = as_json
        tty = stream.isatty() if terminal is None else terminal
        self.live = tty and not as_json and live_available()
        """Whether steps are drawn as a live table (else printed one a line)."""
        self._rows: dict[str, PullProgress] = {}
        self._live: Any = None
        self._drawn = 0.0

    def __enter__(self) -> ProgressDisplay:
        if self.live:
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self._stream, force_terminal=True)
            self._live = Live(self._table(), console=console, auto_refresh=False)
            self._live.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.update(self._table(), refresh=True)
            self._live.stop()
            self._live = None

    async def __call__(self, step: PullProgress) -> None:
        """Show one step."""
        if self._as_json:
            record = {
                "event": step.event,
                "name": step.name,
                "parents": list(step.parents),
                "progress": step.progress,
                "total": step.total,
            }
            print(json.dumps(record), file=self._stream, flush=True)
        elif self._live is None:
            amount = f" {step.progress}/{step.total}" if step.total else ""
            name = f" {printable(step.name)}" if step.name else ""
            print(f"{printable(step.event)}{name}{amount}", file=self._stream, flush=True)
        else:
            self._rows[step.name] = step
            now = time.monotonic()
            if now - self._drawn >= _REDRAW_EVERY:
                self._drawn = now
                self._live.update(self._table(), refresh=True)

    def _table(self) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        table = Table.grid(padding=(0, 1))
        for name, step in self._rows.items():
            done = step.total > 0 and step.progress >= step.total
            bar: Any = Text("")
            amount = ""
            if step.total:
                bar = ProgressBar(total=step.total, completed=step.progress, width=24)
                amount = f"{_size(step.progress)}/{_size(step.total)}"
            table.add_row(
                Text(printable(name) or "-", overflow="ellipsis", no_wrap=True),
                Text(printable(step.event), style="green" if done else ""),
                bar,
                Text(amount),
            )
        return table
