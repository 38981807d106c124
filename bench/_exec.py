"""Running code in a container: stdout throughput, the cost of one exec, many at once.

- Throughput: one exec writes N bytes of zeros to stdout; the library reads it through
  ``process.stdout``, against a plain blocking ``os.read`` loop (in a thread) on a FIFO fed
  by the same exec through the raw Tasks stub. Rounds alternate, each round's first
  contender rotating; the figure is the median of the per-round ratios. The reader's peak
  allocation is measured (tracemalloc) while the library reads.
- One exec: ``Task.run("true")`` against ``ctr task exec`` of the same, containerd's own Go
  client as the peer, alternating the same way.
- Concurrency: 100 ``run()``s at once on one Client: failures, p50 and p99 latency.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import statistics
import subprocess
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from sandboxclient import PIPE, Client, Task, oci
from sandboxclient._plumbing._connection import Connection
from sandboxclient._task import PROCESS_SPEC_TYPE_URL
from sandboxclient._wire._pb import AnyPb, tasks_pb
from sandboxclient.testing import busybox_rootfs

__all__ = ("ExecResult", "exec_figures", "running_task")

_CHUNK = 1 << 16


@dataclass(frozen=True)
class ExecResult:
    """What the exec section measured."""

    library_mb_s: float
    raw_mb_s: float
    throughput_ratio: float
    """The median of the rounds' library-over-plain-loop throughput ratios."""
    reader_peak_bytes: int
    run_true_s: float
    ctr_exec_s: float
    exec_ratio: float
    """The median of the rounds' ``Task.run("true")``-over-``ctr task exec`` time ratios."""
    concurrent: int
    failures: int
    p50_s: float
    p99_s: float


@asynccontextmanager
async def running_task(client: Client, name: str) -> AsyncIterator[Task]:
    """A started task on a busybox root, deleted with its container afterwards."""
    root = Path(tempfile.mkdtemp(prefix="bench-rootfs-"))
    try:
        busybox_rootfs(root)
        spec = oci.generate_spec(oci.with_process_args("sleep", "3600"))
        container = await client.new_container(name, rootfs=root, spec=spec)
        try:
            task = await container.new_task()
            await task.start()
            yield task
        finally:
            await container.delete(force=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def _library_read(task: Task, size: int, *, trace: bool = False) -> tuple[float, int]:
    """MB/s through ``process.stdout``; with ``trace``, the peak allocated while reading
    (tracing slows allocation, so those rounds are not timed)."""
    process = await task.spawn("head", "-c", str(size), "/dev/zero", stdout=PIPE)
    peak = 0
    async with process:
        assert process.stdout is not None
        if trace:
            tracemalloc.start()
        started = time.perf_counter()
        total = 0
        while chunk := await process.stdout.read(_CHUNK):
            total += len(chunk)
        elapsed = time.perf_counter() - started
        if trace:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        await process.wait_exit()
    assert total == size, total
    return size / elapsed / 1e6, peak


async def _raw_read(raw: Connection, container_id: str, size: int) -> float:
    """The same exec through the raw stub, its stdout a FIFO read by a blocking loop."""
    directory = tempfile.mkdtemp(prefix="bench-fifo-")
    fifo = os.path.join(directory, "stdout")
    os.mkfifo(fifo, 0o600)
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    os.set_blocking(fd, True)
    exec_id = f"raw-{secrets.token_hex(4)}"
    stub = raw.stub(tasks_pb.TasksStub)
    spec = b'{"args":["/bin/head","-c","%d","/dev/zero"],"cwd":"/","user":{"uid":0,"gid":0}}' % size
    try:
        await raw.call(
            stub.exec,
            tasks_pb.ExecProcessRequest(
                container_id=container_id,
                exec_id=exec_id,
                stdout=fifo,
                stderr=os.devnull,
                spec=AnyPb(type_url=PROCESS_SPEC_TYPE_URL, value=spec),
            ),
        )
        await raw.call(
            stub.start, tasks_pb.StartRequest(container_id=container_id, exec_id=exec_id)
        )

        def read_all() -> tuple[int, float]:
            started = time.perf_counter()
            total = 0
            while data := os.read(fd, _CHUNK):
                total += len(data)
            return total, time.perf_counter() - started

        total, elapsed = await asyncio.to_thread(read_all)
        await raw.call(stub.wait, tasks_pb.WaitRequest(container_id=container_id, exec_id=exec_id))
        await raw.call(
            stub.delete_process,
            tasks_pb.DeleteProcessRequest(container_id=container_id, exec_id=exec_id),
        )
    finally:
        os.close(fd)
        shutil.rmtree(directory, ignore_errors=True)
    assert total == size, total
    return size / elapsed / 1e6


def _ctr_exec(ctr: str, address: str, namespace: str, container_id: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [ctr, "--address", address, "--namespace", namespace, "task", "exec",
         "--exec-id", f"ctr-{secrets.token_hex(4)}", container_id, "true"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return time.perf_counter() - started


async def exec_figures(
    address: str,
    namespace: str,
    ctr: str,
    *,
    size: int = 256 * 1024 * 1024,
    rounds: int = 5,
    runs: int = 20,
    concurrent: int = 100,
) -> ExecResult:
    """Measure the three figures of the module's docstring against ``address``."""
    async with Client(address, namespace=namespace, timeout=60) as client:
        raw = Connection(address, namespace=namespace, timeout=60)
        try:
            async with running_task(client, "bench-exec") as task:
                library, plain = [], []
                for turn in range(rounds):
                    if turn % 2:
                        plain.append(await _raw_read(raw, task.container_id, size))
                        library.append((await _library_read(task, size))[0])
                    else:
                        library.append((await _library_read(task, size))[0])
                        plain.append(await _raw_read(raw, task.container_id, size))
                _, peak = await _library_read(task, size // 4, trace=True)
                run_times, ctr_times = [], []

                async def run_true() -> None:
                    started = time.perf_counter()
                    await task.run("true")
                    run_times.append(time.perf_counter() - started)

                async def ctr_exec() -> None:
                    ctr_times.append(
                        await asyncio.to_thread(
                            _ctr_exec, ctr, address, namespace, task.container_id
                        )
                    )

                for turn in range(runs):
                    for measure in (run_true, ctr_exec) if turn % 2 == 0 else (ctr_exec, run_true):
                        await measure()
                latencies: list[float] = []
                failures = 0

                async def one() -> None:
                    nonlocal failures
                    started = time.perf_counter()
                    try:
                        done = await task.run("sh", "-c", "echo ok")
                        if done.stdout != b"ok\n" or done.returncode != 0:
                            failures += 1
                    except Exception:
                        failures += 1
                    latencies.append(time.perf_counter() - started)

                await asyncio.gather(*(one() for _ in range(concurrent)))
        finally:
            await raw.aclose()
    latencies.sort()
    return ExecResult(
        library_mb_s=statistics.median(library),
        raw_mb_s=statistics.median(plain),
        throughput_ratio=statistics.median(a / b for a, b in zip(library, plain, strict=True)),
        reader_peak_bytes=peak,
        run_true_s=statistics.median(run_times),
        ctr_exec_s=statistics.median(ctr_times),
        exec_ratio=statistics.median(a / b for a, b in zip(run_times, ctr_times, strict=True)),
        concurrent=concurrent,
        failures=failures,
        p50_s=latencies[len(latencies) // 2],
        p99_s=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    )
