"""What a Create+Start and a Shutdown of the isolating sandboxer do must not grow with the
number of live sandboxes (issue 20's 300-live target): the same containerd calls, and no
more listings of folders or reads of ``/proc`` of its own, with one sandbox live as with many.

The sandboxer runs over the stand-in containerd (its tasks are host processes), which counts
the calls it gets; the sandboxer's own folder listings and ``/proc`` reads are counted by
where they are made from (the stand-in, in the same process, makes its own).
"""

from __future__ import annotations

import builtins
import io
import os
import sys
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from sandboxclient._facts._wirenames import NAMESPACE_HEADER
from sandboxclient._serve._server import request_scope
from sandboxclient._wire._pb import sandbox_pb
from sandboxclient.sandboxer import ContainerSandboxer
from sandboxclient.testing import FakeContainerd
from tests.sandboxer.test_cgroup2 import create_request
from tests.support.constants import NS

pytestmark = pytest.mark.anyio

LIVE = 12
"""Sandboxes live for the second count (the first is taken with one)."""
METHODS = tuple(
    f"{service}/{verb}"
    for service, verbs in {
        "Containers": ("Create", "Get", "List", "ListStream", "Update", "Delete"),
        "Tasks": ("Create", "Start", "Get", "List", "Wait", "Kill", "Delete", "Exec"),
        "Snapshots": ("List", "Stat", "Mounts", "Prepare", "Remove"),
        "Store": ("Get", "List"),
    }.items()
    for verb in verbs
)
"""The containerd calls counted: every one that reads or changes containers, tasks,
snapshots or sandbox records."""
_SANDBOXER = os.path.dirname(sys.modules[ContainerSandboxer.__module__].__file__ or "")
_STAND_IN = os.path.dirname(sys.modules[FakeContainerd.__module__].__file__ or "")


class _Scans:
    """Counts, by the function of the sandboxer's that made them, its folder listings (the
    entries each gave) and its opens of files (``/proc``'s and its own), also through the
    package's shared helpers and in its threads: work that a loop over the live sandboxes
    would multiply. A call is the sandboxer's when one of its modules' frames is on the
    stack and no frame of the stand-in's is nearer."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()  # the sandboxer's threads count too
        for name in ("listdir", "scandir", "open"):
            monkeypatch.setattr(os, name, self._counted(name, getattr(os, name)))
        monkeypatch.setattr(builtins, "open", self._counted("open", builtins.open))
        # pathlib's read_text and read_bytes open through io.open
        monkeypatch.setattr(io, "open", self._counted("open", io.open))

    def snapshot(self) -> Counter[str]:
        """The counts so far."""
        with self._lock:
            return Counter(self.counts)

    def _add(self, key: str, count: int) -> None:
        with self._lock:
            self.counts[key] += count

    def _counted(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            result = real(*args, **kwargs)
            where = _sandboxer_caller()
            if where is None:
                return result
            key = f"{name} in {where}"
            if name == "scandir":
                return _CountedScan(result, lambda: self._add(key, 1))
            self._add(key, len(result) if name == "listdir" else 1)
            return result

        return counted


class _CountedScan:
    """An ``os.scandir`` iterator that counts each entry it gives."""

    def __init__(self, scan: Any, count: Callable[[], None]) -> None:
        self._scan = scan
        self._count = count

    def __iter__(self) -> _CountedScan:
        return self

    def __next__(self) -> os.DirEntry[str]:
        entry: os.DirEntry[str] = next(self._scan)
        self._count()
        return entry

    def __enter__(self) -> _CountedScan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._scan.close()


def _sandboxer_caller() -> str | None:
    """The sandboxer's function nearest on the stack, unless a function of the stand-in's
    (in the same process) is nearer; frames of the package's shared helpers in between are
    walked past."""
    frame = sys._getframe(2)
    while frame is not None:
        folder = os.path.dirname(frame.f_code.co_filename)
        if folder == _SANDBOXER:
            return frame.f_code.co_name
        if folder == _STAND_IN or folder.startswith(_STAND_IN + os.sep):
            return None
        frame = frame.f_back  # type: ignore[assignment]
    return None


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> _Scans:
    """The sandboxer's listings and opens, counted from now on."""
    return _Scans(monkeypatch)


async def test_a_start_and_a_shutdown_do_the_same_work_with_many_sandboxes_live(
    workdir: str, scans: _Scans
) -> None:
    state = os.path.join(workdir, "state")
    async with FakeContainerd() as fake:
        with request_scope({NAMESPACE_HEADER: NS}):
            sandboxer = ContainerSandboxer(state, containerd=fake.address, timeout=20)

            spec = {"root": {"path": workdir}, "process": {"args": ["sleep", "600"]}}

            async def start(sandbox_id: str) -> None:
                await sandboxer.create(create_request(sandbox_id, spec))
                await sandboxer.start(sandbox_pb.ControllerStartRequest(sandbox_id=sandbox_id))

            async def shutdown(sandbox_id: str) -> None:
                await sandboxer.shutdown(
                    sandbox_pb.ControllerShutdownRequest(sandbox_id=sandbox_id)
                )

            spare = sandboxer._users.wait_for_spare

            async def work(call: Callable[[str], Any], sandbox_id: str) -> Counter[str]:
                # The namespace a Start makes ahead for the next one is its own work: the
                # count begins with none under way and ends once the next one is made.
                await spare()
                calls = {method: fake.call_count(method) for method in METHODS}
                scanned = scans.snapshot()
                await call(sandbox_id)
                await spare()
                done = Counter({m: fake.call_count(m) - n for m, n in calls.items()})
                return done + (scans.snapshot() - scanned)  # what is zero is left out

            try:
                await start("live0")
                at_1 = await work(start, "probe0"), await work(shutdown, "probe0")
                for i in range(1, LIVE):
                    await start(f"live{i}")
                assert len(sandboxer.sandbox_ids(NS)) == LIVE
                at_n = await work(start, "probe1"), await work(shutdown, "probe1")
            finally:
                await sandboxer.aclose()
            assert at_1[0]["Containers/Create"] == at_1[0]["Tasks/Start"] == 1  # it counted
            assert at_1[1]["Tasks/Delete"] == 1
            assert at_n == at_1
            assert at_1[0]["Containers/List"] == 0  # a Start reads no other sandbox's record
