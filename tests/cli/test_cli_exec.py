"""sandboxctl's commands for running code and watching the daemon, and its global behaviour."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import struct
import sys
import termios
from pathlib import Path
from typing import Any

import pytest

from sandboxclient import oci
from sandboxclient._cli import ADDRESS_ENV, NAMESPACE_ENV
from sandboxclient._cli._base import SANDBOXER_ENV
from sandboxclient.events import ContainerUpdate
from sandboxclient.testing import FakeContainerd
from tests.support.backends import Backend, new_namespace
from tests.support.cli import Cli, sandboxctl, table
from tests.support.helpers import wait_readable

pytestmark = pytest.mark.anyio


async def test_exec_streams_the_output_and_exits_with_the_code(cli: Cli) -> None:
    await cli.ok("run", "ex1", "--", "sleep", "600")
    done = await cli("exec", "ex1", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (done.code, done.out, done.err) == (3, "out\n", "err\n")
    done = await cli("exec", "ex1", "--json", "--", "true")
    assert done.code == 0
    assert done.json() == {"id": "ex1", "returncode": 0}
    await cli.ok("rm", "ex1")


async def test_exec_passes_stdin_with_i(cli: Cli) -> None:
    await cli.ok("run", "ex2", "--", "sleep", "600")
    proc = await asyncio.create_subprocess_exec(
        *(await _python_m()),
        *cli.flags,
        "exec",
        "-i",
        "ex2",
        "--",
        "cat",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(b"through stdin\n"), 60)
    assert (proc.returncode, out, err) == (0, b"through stdin\n", b"")
    await cli.ok("rm", "ex2")


async def _python_m() -> list[str]:
    return [sys.executable, "-m", "sandboxclient"]


async def test_run_wait_shows_the_command_output_and_exits_with_its_code(cli: Cli) -> None:
    done = await cli("run", "rw1", "--wait", "--", "sh", "-c", "echo out; echo err >&2; exit 4")
    assert (done.code, done.out, done.err) == (4, "out\n", "err\n")
    # The sandbox was stopped once the command was done.
    assert (await cli.ok("status", "rw1", "--json")).json()["state"] != "SANDBOX_READY"
    done = await cli("--json", "run", "rw2", "--wait", "--", "true")
    assert done.code == 0, done
    doc = done.json()
    assert (doc["id"], doc["returncode"]) == ("rw2", 0)
    assert doc["pid"] > 0
    await cli.ok("rm", "rw1", "rw2")


async def test_containers_ls_and_rm(cli: Cli, root: Path) -> None:
    async with cli.backend.client() as client:
        spec = oci.generate_spec(oci.with_process_args("sleep", "600"))
        running = await client.new_container("cls1", rootfs=root, spec=spec, labels={"a": "b"})
        task = await running.new_task()
        await task.start()
        await client.new_container("cls2", rootfs=root, spec=spec)
    rows = table((await cli.ok("containers", "ls")).out)
    assert rows[0] == ["ID", "SANDBOX", "IMAGE", "RUNTIME", "CREATED", "LABELS"]
    assert [r[0] for r in rows[1:]] == ["cls1", "cls2"]
    listed = (await cli.ok("containers", "ls", "--json", "-f", "labels.a==b")).json()
    assert [c["id"] for c in listed] == ["cls1"]
    # A container with a task is not removed by accident; --force kills the task first.
    done = await cli("containers", "rm", "cls1", "cls2")
    assert done.code == 1
    assert done.out == "cls2\n"
    done.assert_one_error_line("cls1", "has a task")
    assert (await cli.ok("containers", "rm", "--force", "cls1")).out == "cls1\n"
    assert (await cli.ok("containers", "ls", "--json")).json() == []


async def test_version_and_sandboxers(cli: Cli) -> None:
    async with cli.backend.client() as client:
        expected = await client.version()
        sandboxers = {s.name for s in await client.sandboxers()}
    assert (await cli.ok("version", "--json")).json() == {
        "version": expected.version,
        "revision": expected.revision,
    }
    assert (await cli.ok("version")).out.startswith(f"containerd {expected.version}")
    listed = (await cli.ok("sandboxers", "--json")).json()
    assert {s["name"] for s in listed} == sandboxers
    assert cli.backend.sandboxer in sandboxers
    assert table((await cli.ok("sandboxers")).out)[0] == ["NAME", "TYPE", "STATUS", "ERROR"]


async def test_events_json_lines(cli: Cli, root: Path) -> None:
    proc = await cli.spawn("events", "--json", 'topic~="/containers/"')
    assert proc.stderr is not None
    # It says on stderr once its subscription is in place.
    async with asyncio.timeout(30):
        assert b"listening" in await proc.stderr.readline()
    async with cli.backend.client() as client:
        spec = oci.generate_spec(oci.with_process_args("true"))
        container = await client.new_container("evc1", rootfs=root, spec=spec)
        await container.delete()
    assert proc.stdout is not None
    lines: list[dict[str, Any]] = []
    async with asyncio.timeout(30):
        while len(lines) < 2:
            lines.append(json.loads(await proc.stdout.readline()))
    proc.terminate()
    await proc.wait()
    assert [(e["topic"], e["type"], e["event"]["id"]) for e in lines] == [
        ("/containers/create", "ContainerCreate", "evc1"),
        ("/containers/delete", "ContainerDelete", "evc1"),
    ]
    assert all(e["namespace"] == cli.backend.namespace for e in lines)


@pytest.fixture
def fake_cli(fake: FakeContainerd) -> Cli:
    """``sandboxctl`` on the stand-in alone (the test's ``fake``), for what only it can do
    or show."""
    return Cli(Backend("fake", fake.address, "shim", new_namespace(), fake=fake))


async def test_events_text_escapes_what_a_terminal_would_act_on(
    fake_cli: Cli, fake: FakeContainerd
) -> None:
    proc = await fake_cli.spawn("events")
    assert proc.stderr is not None
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        assert b"listening" in await proc.stderr.readline()
    hostile = ContainerUpdate(
        id="c1\x1b]0;owned\x07", image="img\u202eexe.txt", labels={"k": "v\x1b[2J"}
    )
    fake.publish(fake_cli.backend.namespace, "/containers/update", hostile)
    async with asyncio.timeout(30):
        line = await proc.stdout.readline()
    proc.terminate()
    await proc.wait()
    assert line.endswith(b"\n")
    assert all(0x20 <= byte < 0x7F for byte in line[:-1]), line
    _, namespace, topic, *fields = line.decode().split(" ")
    assert (namespace, topic) == (fake_cli.backend.namespace, "/containers/update")
    assert " ".join(fields) == (
        "id=c1\\x1b]0;owned\\x07 image=img\\u202eexe.txt labels={'k': 'v\\x1b[2J'}\n"
    )


async def test_ls_info_labels_and_errors_escape_the_daemons_strings(cli: Cli) -> None:
    hostile = "v\x1b[2J\u202e"
    await cli.ok("run", "esc1", "--label", f"k={hostile}", "--", "sleep", "600")
    shown = "v\\x1b[2J\\u202e"
    for args in (("ls",), ("info", "esc1"), ("labels", "esc1")):
        done = await cli.ok(*args)
        assert all(char == "\n" or 0x20 <= ord(char) < 0x7F for char in done.out), done.out
        assert shown in done.out, done.out
    as_json = await cli.ok("info", "esc1", "--json")
    assert as_json.json()["labels"] == {"k": hostile}  # JSON escapes for itself
    await cli.ok("rm", "esc1")


class _Terminal:
    """A pty whose slave end is a command's stdin, stdout and stderr: what it writes is
    read from the master end, keys are written there."""

    def __init__(self, rows: int, columns: int) -> None:
        self.master, self.slave = os.openpty()
        os.set_blocking(self.master, False)
        self.resize(rows, columns)
        self.seen = b""

    def resize(self, rows: int, columns: int) -> None:
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    async def read_until(self, marker: bytes, timeout: float = 30) -> None:
        """Read what the command writes until ``marker`` has been seen."""
        async with asyncio.timeout(timeout):
            while marker not in self.seen:
                await wait_readable(self.master, timeout)
                self.seen += os.read(self.master, 4096)

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


async def test_exec_with_a_tty_follows_this_terminal_and_restores_it(
    fake_cli: Cli, fake: FakeContainerd
) -> None:
    await fake_cli.ok("run", "pty1", "--", "sleep", "600")
    term = _Terminal(33, 101)
    before = termios.tcgetattr(term.slave)
    try:
        script = 'read a; stty size; read b; stty size; echo "got:$a:$b"; exit 5'
        proc = await asyncio.create_subprocess_exec(
            *(await _python_m()),
            *fake_cli.flags,
            "exec",
            "-i",
            "-t",
            "pty1",
            "--",
            "sh",
            "-c",
            script,
            stdin=term.slave,
            stdout=term.slave,
            stderr=term.slave,
        )
        # The pty has this terminal's size before any key reaches it, and this terminal is
        # raw by then (keys go through as they are, Enter as a carriage return).
        await asyncio.wait_for(fake.wait_for_call("Tasks/ResizePty", 1), 30)
        os.write(term.master, b"one\r")
        await term.read_until(b"33 101")
        # A window change is followed.
        term.resize(40, 120)
        os.kill(proc.pid, signal.SIGWINCH)
        await asyncio.wait_for(fake.wait_for_call("Tasks/ResizePty", 2), 30)
        os.write(term.master, b"two\r")
        await term.read_until(b"got:one:two")
        assert await asyncio.wait_for(proc.wait(), 30) == 5
        assert b"40 120" in term.seen.partition(b"33 101")[2]
        assert termios.tcgetattr(term.slave) == before
    finally:
        term.close()
    await fake_cli.ok("rm", "pty1")


async def test_the_sandboxer_comes_from_the_environment(cli: Cli) -> None:
    env = {
        ADDRESS_ENV: cli.backend.address,
        NAMESPACE_ENV: cli.backend.namespace,
        SANDBOXER_ENV: "nobody-has-this-one",
    }
    done = await sandboxctl("run", "envsb1", "--", "true", env=env)
    assert done.code == 1
    done.assert_one_error_line("nobody-has-this-one")
    env[SANDBOXER_ENV] = cli.backend.sandboxer
    assert (await sandboxctl("run", "envsb2", "--", "sleep", "60", env=env)).code == 0
    await cli.ok("rm", "envsb2")


async def test_version_flag_and_errors_as_json(cli: Cli) -> None:
    from sandboxclient import __version__

    done = await sandboxctl("--version")
    assert (done.code, done.out) == (0, f"sandboxctl {__version__}\n")
    done = await cli("info", "nope1", "--json")
    assert (done.code, done.out) == (1, "")
    error = json.loads(done.err)["error"]
    assert error["type"] == "NotFoundError"
    assert error["status"] == "NOT_FOUND"
    assert error["message"].endswith("not found")


async def test_a_given_timeout_bounds_wait(cli: Cli) -> None:
    await cli.ok("run", "wt1", "--", "sleep", "600")
    done = await cli("--timeout", "0.5", "wait", "wt1")
    assert done.code == 1
    done.assert_one_error_line("did not exit within 0.5 s")
    await cli.ok("rm", "wt1")
