"""sandboxctl's commands for running code and watching the daemon, and its global behaviour."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from sandboxclient import oci
from sandboxclient._cli import ADDRESS_ENV, NAMESPACE_ENV
from sandboxclient._cli._base import SANDBOXER_ENV
from sandboxclient.testing import busybox_rootfs

from .test_cli import Cli, _table, cli, sandboxctl

pytestmark = pytest.mark.anyio

__all__ = ("cli",)


async def test_exec_streams_the_output_and_exits_with_the_code(cli: Cli) -> None:
    await cli.ok("run", "ex1", "--", "sleep", "600")
    done = await cli("exec", "ex1", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (done.code, done.out, done.err) == (3, "out\n", "err\n")
    done = await cli("exec", "ex1", "--json", "--", "true")
    assert done.code == 0
    assert done.json() == {"id": "ex1", "exit_code": 0}
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
    import sys

    return [sys.executable, "-m", "sandboxclient"]


async def test_run_wait_shows_the_command_output_and_exits_with_its_code(cli: Cli) -> None:
    done = await cli("run", "rw1", "--wait", "--", "sh", "-c", "echo out; echo err >&2; exit 4")
    assert (done.code, done.out, done.err) == (4, "out\n", "err\n")
    # The sandbox was stopped once the command was done.
    assert (await cli.ok("status", "rw1", "--json")).json()["state"] != "SANDBOX_READY"
    done = await cli("--json", "run", "rw2", "--wait", "--", "true")
    assert done.code == 0, done
    doc = done.json()
    assert (doc["id"], doc["exit_code"]) == ("rw2", 0)
    assert doc["pid"] > 0
    await cli.ok("rm", "rw1", "rw2")


async def test_containers_ls_and_rm(cli: Cli, tmp_path: Path) -> None:
    root = busybox_rootfs(tmp_path / "root")
    async with cli.backend.client() as client:
        spec = oci.generate_spec(oci.with_process_args("sleep", "600"))
        running = await client.new_container("cls1", rootfs=root, spec=spec, labels={"a": "b"})
        task = await running.new_task()
        await task.start()
        await client.new_container("cls2", rootfs=root, spec=spec)
    rows = _table((await cli.ok("containers", "ls")).out)
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
    assert _table((await cli.ok("sandboxers")).out)[0] == ["NAME", "TYPE", "STATUS", "ERROR"]


async def test_events_json_lines(cli: Cli, tmp_path: Path) -> None:
    root = busybox_rootfs(tmp_path / "root")
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
