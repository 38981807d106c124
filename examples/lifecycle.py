"""A sandbox's whole life: create, start, run a command in it, stop, wait, shut down.

Runs against the embedded stand-in, or against a real containerd when given its socket and the
name of a sandbox controller it can drive:

    python examples/lifecycle.py
    python examples/lifecycle.py /run/containerd/containerd.sock --sandboxer NAME
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator

from sandboxclient import Client
from sandboxclient.testing import FakeContainerd


@contextlib.asynccontextmanager
async def containerd(address: str | None) -> AsyncIterator[str]:
    if address:
        yield address
        return
    async with FakeContainerd() as fake:
        print(f"stand-in containerd at {fake.address}")
        yield fake.address


async def main(address: str | None, sandboxer: str, namespace: str) -> int:
    async with (
        containerd(address) as socket,
        Client(socket, namespace=namespace, sandboxer=sandboxer) as client,
    ):
        sb = await client.new_sandbox(
            "demo1",
            labels={"app": "demo"},
            runtime="io.containerd.runc.v2",
            # The sandbox's own process; commands run next to it (an exec into its task).
            spec={"process": {"args": ["sleep", "600"]}},
        )
        print(f"created  {sb.id} (sandboxer {sb.sandboxer}, labels {await sb.labels()})")
        started = await sb.start()
        print(f"started  pid {started.pid}")
        done = await sb.run("sh", "-c", "echo hello; echo oops >&2; exit 7", timeout=30)
        print(
            f"ran      exit code {done.returncode}, stdout {done.stdout!r}, stderr {done.stderr!r}"
        )
        channel = await sb.wait()
        await sb.stop(grace=5)
        print("stopped")
        status = await channel
        print(f"exited   code {status.returncode} at {status.exited_at:%H:%M:%S}")
        await sb.shutdown()
        print(f"shut down; sandboxes left: {len(await client.list_sandboxes())}")
        return done.returncode


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", nargs="?", help="containerd socket (default: the stand-in)")
    parser.add_argument("--sandboxer", default="shim")
    parser.add_argument("--namespace", default="default")
    args = parser.parse_args()
    code = asyncio.run(main(args.address, args.sandboxer, args.namespace))
    print(f"exit code {code}")
