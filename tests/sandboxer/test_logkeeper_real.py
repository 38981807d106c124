"""The output log keeper killed under a real containerd: the sandboxer replaces it and no
line the sandbox prints meanwhile is lost (see ``docs/security.md``, "The output log")."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest

from tests.support.backends import RealContainerd, new_namespace
from tests.support.constants import RUNTIME
from tests.support.ctr import client_for, nothing_left
from tests.support.helpers import until, wait_pid_gone
from tests.support.host import holders

pytestmark = [pytest.mark.anyio, pytest.mark.real]

PRINTER = "i=0; while :; do echo line $i; i=$((i+1)); sleep 0.02; done"


def keepers_of(fifo: Path) -> list[int]:
    """The pids of the log keepers holding ``fifo`` (the shim and the sandboxer hold it
    too: their command lines do not name ``_logcap``)."""
    return holders(fifo, naming=b"_logcap")


def lines(log: Path) -> list[int]:
    """The numbers of the whole lines ``line N`` in ``log``."""
    return [int(n) for n in re.findall(rb"^line (\d+)\n", log.read_bytes(), re.MULTILINE)]


async def test_a_killed_keeper_is_replaced_and_the_output_goes_on_whole(
    real: RealContainerd,
) -> None:
    namespace = new_namespace()
    async with client_for(real, namespace) as client:
        spec = {"process": {"args": ["sh", "-c", PRINTER]}}
        sb = await client.new_sandbox("logk1", runtime=RUNTIME, spec=spec)
        await sb.start()
        directory = Path(real.sandboxer.state_dir, "sandboxes", namespace, sb.id)
        log, fifo = directory / "output.log", directory / "output.pipe"
        await until(lambda: len(lines(log)) >= 5 and bool(keepers_of(fifo)))
        (keeper,) = keepers_of(fifo)
        os.kill(keeper, signal.SIGKILL)
        await wait_pid_gone(keeper)
        printed = len(lines(log))
        # A new keeper, started by the sandboxer as the old one's socket ended, copies on.
        await until(lambda: keepers_of(fifo) not in ([], [keeper]))
        await until(lambda: len(lines(log)) >= printed + 10)
        numbers = lines(log)
        assert numbers == list(range(len(numbers)))  # no line lost, none twice
        assert (await sb.status()).info["log_dropped_bytes"] == "0"
        assert (await sb.status()).ready  # it never blocked for long
        await sb.shutdown()
    await until(lambda: not keepers_of(fifo))
    nothing_left(real, namespace)
