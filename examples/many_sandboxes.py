"""Run many sandboxes at once and collect every exit code.

Each sandbox exits with its own number; the program checks that every code came back.

    python examples/many_sandboxes.py [COUNT]
"""

from __future__ import annotations

import asyncio
import sys

from sandboxclient import Client
from sandboxclient.testing import FakeContainerd


async def run_one(client: Client, n: int, gate: asyncio.Semaphore) -> int:
    async with gate:
        spec = {"process": {"args": ["sh", "-c", f"exit {n % 100}"]}}
        async with client.sandbox(f"job{n}", spec=spec, runtime="io.containerd.runc.v2") as sb:
            status = await (await sb.wait())
            return status.returncode


async def main(count: int) -> int:
    gate = asyncio.Semaphore(16)  # at most 16 sandboxes alive at a time
    async with FakeContainerd() as fake, Client(fake.address) as client:
        codes = await asyncio.gather(*(run_one(client, n, gate) for n in range(count)))
        left = await client.list_sandboxes()
    wrong = [n for n, code in enumerate(codes) if code != n % 100]
    print(f"{count} sandboxes ran; {len(wrong)} wrong exit codes; {len(left)} left behind")
    return 1 if wrong or left else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)))
