"""A wait that outlives a containerd crash.

Starts a private containerd (``make containerd`` fetches one; needs root) with the Python
sandboxer plugged in as proxy plugin ``pysandbox``, starts a sandbox that exits with 5 after
two seconds, kills containerd with SIGKILL while waiting, starts it again, and still gets 5.

    python examples/wait_across_restart.py
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path

from sandboxclient import Client
from sandboxclient.testing import ContainerdDaemon


async def main(daemon: ContainerdDaemon) -> int:
    async with Client(daemon.address, namespace="example", sandboxer="pysandbox") as client:
        spec = {"process": {"args": ["sh", "-c", "sleep 2; exit 5"]}}
        async with client.sandbox("survivor", spec=spec, runtime="io.containerd.runc.v2") as sb:
            channel = await sb.wait()
            print(f"sandbox {sb.id} running as pid {sb.pid}; waiting")
            daemon.kill()
            print("containerd killed")
            await asyncio.sleep(0.5)
            daemon.restart()
            print("containerd restarted")
            status = await channel
            print(f"exit code {status.code} (error: {status.error})")
            return 0 if status.code == 5 and status.error is None else 1


def run() -> int:
    with tempfile.TemporaryDirectory(prefix="sbx-example-") as tmp:
        socket = str(Path(tmp) / "pysandbox.sock")
        sandboxer = subprocess.Popen(
            [sys.executable, "-m", "sandboxclient.sandboxer", "--socket", socket],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert sandboxer.stdout is not None
            print(sandboxer.stdout.readline().strip())
            with ContainerdDaemon(proxy_plugins={"pysandbox": socket}) as daemon:
                daemon.start()
                print(f"containerd {daemon.version} at {daemon.address}")
                return asyncio.run(main(daemon))
        finally:
            sandboxer.terminate()
            sandboxer.wait(10)


if __name__ == "__main__":
    sys.exit(run())
