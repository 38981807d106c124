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


def plot_throughput(
    curves: Mapping[str, Mapping[str, Mapping[int, float]]],
    out: Path,
    ratios: Mapping[str, Mapping[int, Mapping[str, float]]] | None = None,
) -> None:
    """Calls/s against concurrent callers, ``curves[loop][contender][concurrency]``, and
    beside it, when given, each contender's ratio to grpc.aio in the same rounds,
    ``ratios[loop][concurrency][contender]``."""
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
    fig, axes = plt.subplots(1, 2 if ratios else 1, figsize=(13 if ratios else 8, 5), dpi=100)
    ax = axes[0] if ratios else axes
    all_x = sorted({x for c in curves.values() for p in c.values() for x in p})

    def style(loop: str, name: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "color": colours.get(name, "black"),
            "linestyle": styles.get(loop, ":"),
            "marker": "o" if loop == "asyncio" else "s",
            "markersize": 4,
            "label": f"{name} ({loop})",
        }
        if name == "grpclib bytes":
            kwargs["alpha"] = 0.6
        return kwargs

    for loop, contenders in curves.items():
        for name, points in contenders.items():
            xs = sorted(points)
            ax.plot(xs, [points[x] for x in xs], **style(loop, name))
    ax.set_xscale("log", base=2)
    ax.set_xticks(all_x, [str(x) for x in all_x])
    ax.set_xlabel("concurrent callers")
    ax.set_ylabel("Store.Get calls per second (median of rounds)")
    ax.set_title("Store.Get against containerd 2.1.9 over its unix socket")
    top = max((v for c in curves.values() for p in c.values() for v in p.values()), default=1)
    ax.set_ylim(0, math.ceil(top * 1.15 / 500) * 500)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, ncol=2, loc="upper left")
    if ratios:
        right = axes[1]
        for loop, by_level in ratios.items():
            levels = sorted(by_level)
            names = sorted({n for r in by_level.values() for n in r})
            for name in names:
                right.plot(levels, [by_level[x][name] for x in levels], **style(loop, name))
        right.axhline(0.35, color="tab:red", linewidth=1, linestyle=":", label="target at 64")
        right.set_xscale("log", base=2)
        right.set_xticks(all_x, [str(x) for x in all_x])
        right.set_xlabel("concurrent callers")
        right.set_ylabel("calls/s over grpc.aio's in the same round (median)")
        right.set_title("Ratio to grpc.aio, measured side by side")
        right.set_ylim(0, 1.1)
        right.grid(True, alpha=0.3)
        right.legend(fontsize=8, ncol=2, loc="lower left")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
