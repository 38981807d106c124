"""One side of the cold-start figure, in a process of its own:
``python _coldworker.py ADDRESS NAMESPACE SANDBOXER``.

It imports ``sandboxclient`` from wherever ``PYTHONPATH`` says (so a tree from before a
change can be measured beside the tree after it, each with its own client code), then for
each line ``ID`` read from stdin runs ``new_sandbox`` + ``start`` + ``run("echo", "hi")`` +
``shutdown`` of a sandbox with that id and answers one JSON line with the seconds of each
call. A line ``run ID`` instead runs the one-shot ``Client.run("echo", "hi")`` (the command
as the sandbox's own process; a tree from before it has no such call) and answers its
seconds as ``total``. An empty line (or the end of stdin) ends it. Only the public API is
used.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any


async def _lifecycle(client: Any, sandbox_id: str) -> dict[str, float]:
    marks = [time.perf_counter()]
    sb = await client.new_sandbox(sandbox_id, runtime="io.containerd.runc.v2")
    marks.append(time.perf_counter())
    await sb.start()
    marks.append(time.perf_counter())
    result = await sb.run("echo", "hi")
    marks.append(time.perf_counter())
    await sb.shutdown()
    marks.append(time.perf_counter())
    names = ("new_sandbox", "start", "run", "shutdown")
    times = {name: marks[i + 1] - marks[i] for i, name in enumerate(names)}
    times["total"] = marks[-1] - marks[0]
    if result.stdout != b"hi\n":
        times["error"] = -1.0
    return times


async def _oneshot(client: Any, sandbox_id: str) -> dict[str, float]:
    began = time.perf_counter()
    result = await client.run("echo", "hi", sandbox_id=sandbox_id, runtime="io.containerd.runc.v2")
    times = {"total": time.perf_counter() - began}
    if result.stdout != b"hi\n" or result.returncode != 0:
        times["error"] = -1.0
    return times


async def _serve(address: str, namespace: str, sandboxer: str) -> None:
    from sandboxclient import Client

    loop = asyncio.get_running_loop()
    async with Client(address, namespace=namespace, sandboxer=sandboxer, timeout=60) as client:
        print(json.dumps({"ready": True}), flush=True)
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if not line:
                return
            if line.startswith("run "):
                print(json.dumps(await _oneshot(client, line[4:])), flush=True)
            else:
                print(json.dumps(await _lifecycle(client, line)), flush=True)


if __name__ == "__main__":
    asyncio.run(_serve(*sys.argv[1:4]))
