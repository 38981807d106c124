"""``sandboxctl`` run as a subprocess: one run to its end, and a ``Cli`` pointed at a test's
backend through the global options."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sandboxclient._cli import ADDRESS_ENV, NAMESPACE_ENV
from tests.support.backends import Backend

__all__ = ("CALL_TIMEOUT", "Cli", "Done", "finish", "sandboxctl", "spawn", "table")

CALL_TIMEOUT = 60.0
"""How long one ``sandboxctl`` run may take."""


@dataclass(frozen=True)
class Done:
    """A finished ``sandboxctl`` run."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        """stdout, parsed as JSON."""
        return json.loads(self.out)

    def assert_one_error_line(self, *fragments: str) -> str:
        """stderr is exactly one ``sandboxctl: error:`` line containing every fragment."""
        lines = self.err.splitlines()
        assert len(lines) == 1, self.err
        assert lines[0].startswith("sandboxctl: error: "), lines
        for fragment in fragments:
            assert fragment in lines[0], (fragment, lines[0])
        assert "Traceback" not in self.err
        return lines[0]


def _env(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (ADDRESS_ENV, NAMESPACE_ENV)}
    env.update(overrides or {})
    return env


async def spawn(*args: str, env: Mapping[str, str] | None = None) -> asyncio.subprocess.Process:
    """Start ``python -m sandboxclient ARGS`` with its output piped, stdin closed."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sandboxclient",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(env),
    )


async def finish(proc: asyncio.subprocess.Process, timeout: float = CALL_TIMEOUT) -> Done:
    """Wait for ``proc`` to end (killing it past ``timeout``); what it printed and its code."""
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Done(proc.returncode, out.decode(), err.decode())


async def sandboxctl(*args: str, env: Mapping[str, str] | None = None) -> Done:
    """Run ``python -m sandboxclient ARGS`` to the end (the event loop keeps serving)."""
    return await finish(await spawn(*args, env=env))


@dataclass(frozen=True)
class Cli:
    """``sandboxctl`` pointed at one backend through the global options."""

    backend: Backend

    @property
    def flags(self) -> tuple[str, ...]:
        """The global options that point ``sandboxctl`` at the backend."""
        b = self.backend
        return ("--address", b.address, "--namespace", b.namespace, "--sandboxer", b.sandboxer)

    async def __call__(self, *args: str) -> Done:
        """Run ``sandboxctl ARGS`` against the backend to the end."""
        return await sandboxctl(*self.flags, *args)

    async def ok(self, *args: str) -> Done:
        """Run it, and fail unless it exits 0 and says nothing on stderr."""
        done = await self(*args)
        assert done.code == 0, done
        assert done.err == "", done.err
        return done

    async def spawn(self, *args: str) -> asyncio.subprocess.Process:
        """Start it against the backend, for a test that talks to it while it runs."""
        return await spawn(*self.flags, *args)


def table(text: str) -> list[list[str]]:
    """Rows of an aligned table, cells split on runs of 2+ spaces."""
    return [re.split(r"\s{2,}", line.strip()) for line in text.splitlines()]
