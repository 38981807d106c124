"""containerd alone at scale: ``ctr run -d`` with 1 against N ``ctr`` containers live, on
the daemon the sandboxes' figure used, for the part of the growth that is containerd's and
runc's (no sandboxer, no user namespace, no idmapped root: less than a sandbox asks of them).
Shown beside ``bench._scale``'s figures by ``python -m bench --scale N``."""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sandboxclient.testing import busybox_rootfs

__all__ = ("CtrScale", "ctr_scale")

_CONCURRENCY = 4


@dataclass(frozen=True)
class CtrScale:
    """Medians of ``ctr run -d`` (a Create+Start, and ctr's own start) at 1 and N live."""

    live: int
    at_1_s: float
    at_n_s: float
    with_mounts_s: float
    """At 1 live, with ``2 * live`` more mounts in the host's table (what ``live`` sandboxes
    leave there: each its root's overlay and its user namespace's pin)."""

    @property
    def ratio(self) -> float:
        """At N over at 1."""
        return self.at_n_s / self.at_1_s

    def line(self) -> str:
        """The figure as one line of the report."""
        return (
            f"containerd alone: ctr run -d {self.at_1_s * 1e3:.1f} ms at 1 live, "
            f"{self.at_n_s * 1e3:.1f} ms at {self.live} live: {self.ratio:.2f}x; "
            f"at 1 with {2 * self.live} more host mounts {self.with_mounts_s * 1e3:.1f} ms: "
            f"{self.with_mounts_s / self.at_1_s:.2f}x"
        )


def ctr_scale(ctr: str, address: str, *, live: int, probes: int = 10) -> CtrScale:
    """Measure (see the module's docstring); every container it made is gone after."""
    namespace = "bench-scale-ctr"

    def ctr_do(*args: str, check: bool = True) -> None:
        subprocess.run(
            [ctr, "--address", address, "--namespace", namespace, *args],
            check=check,
            capture_output=True,
        )

    with tempfile.TemporaryDirectory(prefix="bench-ctr-") as tmp:
        root = busybox_rootfs(Path(tmp) / "root")

        def run(name: str) -> float:
            began = time.perf_counter()
            ctr_do("run", "-d", "--rootfs", str(root), name, "/bin/sleep", "100000")
            return time.perf_counter() - began

        def remove(name: str) -> None:
            ctr_do("task", "kill", "--signal", "SIGKILL", name, check=False)
            ctr_do("task", "delete", "--force", name, check=False)
            ctr_do("container", "delete", name, check=False)

        def probe(tag: str) -> list[float]:
            took = []
            for i in range(probes):
                took.append(run(f"{tag}-{i}"))
                remove(f"{tag}-{i}")
            return took

        names = [f"live-{i}" for i in range(1, live)]
        try:
            run("live-0")
            probe("warm")
            at_1 = probe("p1")
            with ThreadPoolExecutor(_CONCURRENCY) as pool:
                list(pool.map(run, names))
            at_n = probe("pn")
            with ThreadPoolExecutor(_CONCURRENCY) as pool:
                list(pool.map(remove, names))
            at_1 += probe("p1b")
            with _mounts(Path(tmp) / "mounts", 2 * live):
                with_mounts = probe("pm")
        finally:
            with ThreadPoolExecutor(_CONCURRENCY) as pool:
                list(pool.map(remove, ["live-0", *names]))
    return CtrScale(
        live=live,
        at_1_s=statistics.median(at_1),
        at_n_s=statistics.median(at_n),
        with_mounts_s=statistics.median(with_mounts),
    )


@contextlib.contextmanager
def _mounts(under: Path, count: int) -> Iterator[None]:
    """``count`` small tmpfs mounts in the host's table, for as long as the block runs."""
    made: list[Path] = []
    try:
        for i in range(count):
            point = under / str(i)
            point.mkdir(parents=True)
            mount = ["mount", "-t", "tmpfs", "-o", "size=64k", "bench", str(point)]
            subprocess.run(mount, check=True)
            made.append(point)
        yield
    finally:
        for point in reversed(made):
            subprocess.run(["umount", str(point)], check=False)
