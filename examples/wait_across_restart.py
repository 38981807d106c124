"""A wait that outlives a containerd crash.

Starts a private containerd with the Python sandboxer plugged in as proxy plugin
``pysandbox``, starts a sandbox that exits with 5 after two seconds, kills containerd with
SIGKILL while waiting, starts it again, and still gets 5. Needs root and a containerd >= 2.0
(with containerd-shim-runc-v2, ctr and runc) in ``$CONTAINERD_BIN`` or on ``PATH``; in this
repository ``make containerd`` fetches one into ``.cache/containerd/bin``:

    CONTAINERD_BIN=.cache/containerd/bin python examples/wait_across_restart.py
"""

from __future__ import annotations

import asyncio
import sys

from sandboxclient import Client
from sandboxclient.testing import ContainerdDaemon, plugged_containerd


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
            print(f"exit code {status.returncode} (error: {status.error})")
            return 0 if status.returncode == 5 and status.error is None else 1


def run() -> int:
    with plugged_containerd("pysandbox") as plugged:
        print(f"containerd {plugged.daemon.version} at {plugged.address}")
        return asyncio.run(main(plugged.daemon))


if __name__ == "__main__":
    sys.exit(run())
