"""The figures table and the throughput plot."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ("Figure", "plot_throughput", "table")


@dataclass(frozen=True)
class Figure:
    """One line of the report: what was measured, under which loop, against which target."""

    name: str
    loop: str
    value: float
    shown: str
    target: str
    met: bool | None
    note: str = ""


def table(figures: Sequence[Figure]) -> str:
    """A Markdown table of ``figures``."""
    lines = [
        "| figure | loop | measured | target | met |",
        "| --- | --- | --- | --- | --- |",
    ]
    for f in figures:
        met = "n/a" if f.met is None else ("yes" if f.met else "**no**")
        shown = f.shown + (f" ({f.note})" if f.note else "")
        lines.append(f"| {f.name} | {f.loop} | {shown} | {f.target} | {met} |")
    return "\n".join(lines)


def plot_throughput(curves: Mapping[str, Mapping[str, Mapping[int, float]]], out: Path) -> None:
    """Calls/s against concurrent callers: ``curves[loop][contender][concurrency]``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {
        "grpc.aio": "tab:blue",
        "grpclib bytes": "tab:gray",
        "raw stub": "tab:orange",
        "library": "tab:green",
    }
    styles = {"asyncio": "-", "uvloop": "--"}
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for loop, contenders in curves.items():
        for name, points in contenders.items():
            xs = sorted(points)
            kwargs: dict[str, Any] = {
                "color": colours.get(name, "black"),
                "linestyle": styles.get(loop, ":"),
                "marker": "o" if loop == "asyncio" else "s",
                "markersize": 4,
                "label": f"{name} ({loop})",
            }
            if name == "grpclib bytes":
                kwargs["alpha"] = 0.6
            ax.plot(xs, [points[x] for x in xs], **kwargs)
    ax.set_xscale("log", base=2)
    all_x = sorted({x for c in curves.values() for p in c.values() for x in p})
    ax.set_xticks(all_x, [str(x) for x in all_x])
    ax.set_xlabel("concurrent callers")
    ax.set_ylabel("Store.Get calls per second (median of rounds)")
    ax.set_title("Store.Get against containerd 2.1.9 over its unix socket")
    top = max((v for c in curves.values() for p in c.values() for v in p.values()), default=1)
    ax.set_ylim(0, math.ceil(top * 1.1 / 500) * 500)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, ncol=2, loc="upper left")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
