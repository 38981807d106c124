"""``sandboxctl``, run as a subprocess against the stand-in and against a real containerd."""

from __future__ import annotations

import asyncio
import json
import signal
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from sandboxclient import Client
from sandboxclient._cli import (
    ADDRESS_ENV,
    DEFAULT_RUNTIME,
    NAMESPACE_ENV,
    build_parser,
    parse_label,
    parse_label_edit,
)
from tests.support.backends import PLUGIN_NAME, Backend
from tests.support.cli import Cli, Done, finish, sandboxctl, spawn, table
from tests.support.helpers import args_spec
from tests.support.namespaces import set_default_sandboxer

pytestmark = pytest.mark.anyio

COMMANDS = (
    "ls",
    "info",
    "run",
    "exec",
    "cp",
    "containers",
    "version",
    "sandboxers",
    "events",
    "start",
    "stop",
    "wait",
    "rm",
    "labels",
    "limits",
    "status",
    "serve-fake",
)


# -- the commands --------------------------------------------------------------------------------


async def test_run_info_ls_status_rm(cli: Cli) -> None:
    done = await cli.ok("run", "web1", "-l", "app=web", "--label", "tier=1", "--", "sleep", "60")
    assert done.out.startswith("started web1 (pid ")

    info = (await cli.ok("info", "web1", "--json")).json()
    assert info["id"] == "web1"
    assert info["sandboxer"] == cli.backend.sandboxer
    assert info["labels"] == {"app": "web", "tier": "1"}
    assert info["runtime"]["name"] == DEFAULT_RUNTIME
    assert info["spec"] == {"process": {"args": ["sleep", "60"]}}
    assert datetime.fromisoformat(info["created_at"]).tzinfo is not None

    text = (await cli.ok("info", "web1")).out
    fields = dict(line.split(":", 1) for line in text.splitlines())
    assert fields["ID"].strip() == "web1"
    assert fields["LABELS"].strip() == "app=web,tier=1"
    assert fields["RUNTIME"].strip() == DEFAULT_RUNTIME

    await cli.ok("run", "other1", "--", "sleep", "60")
    rows = table((await cli.ok("ls")).out)
    assert rows[0] == ["ID", "SANDBOXER", "CREATED", "DEADLINE", "IDLE", "LABELS"]
    assert [r[0] for r in rows[1:]] == ["other1", "web1"]
    web = rows[2]
    assert web[1] == cli.backend.sandboxer
    assert datetime.fromisoformat(web[2].replace("Z", "+00:00"))
    assert web[3:] == ["-", "-", "app=web,tier=1"]
    assert rows[1][5] == "-"

    listed = (await cli.ok("--json", "ls", "--filter", "labels.app==web")).json()
    assert [s["id"] for s in listed] == ["web1"]
    both = (await cli.ok("ls", "-f", "id==web1", "-f", "id==other1", "--json")).json()
    assert sorted(s["id"] for s in both) == ["other1", "web1"]

    status = (await cli.ok("status", "web1", "--json")).json()
    assert status["state"] == "SANDBOX_READY"
    assert status["pid"] > 0
    fields = dict(line.split(":", 1) for line in (await cli.ok("status", "web1")).out.splitlines())
    assert fields["STATE"].strip() == "SANDBOX_READY"
    assert int(fields["PID"]) == status["pid"]

    done = await cli.ok("rm", "web1", "other1")
    assert done.out.splitlines() == ["web1", "other1"]
    assert (await cli.ok("ls", "--json")).json() == []
    assert table((await cli.ok("ls")).out) == [
        ["ID", "SANDBOXER", "CREATED", "DEADLINE", "IDLE", "LABELS"]
    ]


async def test_time_limits_at_run_in_ls_and_changed(cli: Cli) -> None:
    done = await cli.ok(
        "run", "lim1", "--lifetime", "600", "--idle-timeout", "300", "--", "sleep", "60"
    )
    assert done.out.startswith("started lim1 (pid ")
    (row,) = table((await cli.ok("ls")).out)[1:]
    deadline = datetime.fromisoformat(row[3].replace("Z", "+00:00"))
    assert 590 < (deadline - datetime.now(UTC)).total_seconds() <= 600
    assert row[4] == "300.0"
    (listed,) = (await cli.ok("ls", "--json")).json()
    assert datetime.fromisoformat(listed["deadline"]).replace(microsecond=0) == deadline
    fields = dict(line.split(":", 1) for line in (await cli.ok("status", "lim1")).out.splitlines())
    assert fields["DEADLINE"].strip() == row[3]
    assert fields["IDLE DEADLINE"].strip() != "-"

    changed = (await cli.ok("limits", "lim1", "--lifetime", "1200", "--json")).json()
    later = datetime.fromisoformat(changed["deadline"])
    assert 1190 < (later - datetime.now(UTC)).total_seconds() <= 1200
    assert changed["idle_timeout"] == "300.0"
    shown = (await cli.ok("limits", "lim1", "--idle-timeout", "60")).out
    fields = dict(line.split(":", 1) for line in shown.splitlines())
    assert fields["IDLE TIMEOUT"].strip() == "60.0"
    assert table((await cli.ok("ls")).out)[1][4] == "60.0"

    refused = await cli("limits", "lim1")
    assert refused.code != 0
    assert "--lifetime, --idle-timeout or both" in refused.err
    refused = await cli("limits", "lim1", "--lifetime", "-1")
    assert refused.code != 0
    assert "lifetime" in refused.err
    before = (await cli.ok("limits", "lim1", "--idle-timeout", "60", "--json")).json()
    refused = await cli("limits", "lim1", "--lifetime", "30", "--idle-timeout", "nan")
    assert refused.code != 0
    assert "idle_timeout" in refused.err
    assert (await cli.ok("limits", "lim1", "--idle-timeout", "60", "--json")).json() == before
    await cli.ok("rm", "lim1")


async def test_start_stop_and_wait(cli: Cli) -> None:
    async with cli.backend.client() as client:
        # As PID 1 of its PID namespace a process ignores SIGTERM unless it handles it.
        stoppable = args_spec("sh", "-c", "trap 'exit 143' TERM; sleep 60 & wait")
        await client.new_sandbox("ssw1", runtime=DEFAULT_RUNTIME, spec=stoppable)
    assert (await cli.ok("status", "ssw1", "--json")).json()["state"] != "SANDBOX_READY"

    started = (await cli.ok("start", "ssw1", "--json")).json()
    assert started["id"] == "ssw1"
    assert started["pid"] > 0
    seen = cli.backend.calls("Controller/Wait")
    waiter = await cli.spawn("wait", "ssw1")
    await cli.backend.wait_for_call("Controller/Wait", seen + 1)
    assert waiter.returncode is None

    done = await cli.ok("stop", "ssw1", "--timeout", "5")
    assert done.out == "stopped ssw1\n"
    waited = await finish(waiter)
    assert (waited.code, waited.out, waited.err) == (143, "143\n", "")  # SIGTERM: 128 + 15
    assert (await cli.ok("status", "ssw1", "--json")).json()["state"] == "SANDBOX_NOTREADY"
    assert (await cli.ok("rm", "ssw1", "--json")).json() == {"removed": ["ssw1"]}


async def test_labels_show_set_and_remove(cli: Cli) -> None:
    await cli.ok("run", "lab1", "-l", "a=1", "-l", "b=2", "--", "sleep", "60")
    assert table((await cli.ok("labels", "lab1")).out) == [
        ["KEY", "VALUE"],
        ["a", "1"],
        ["b", "2"],
    ]
    assert (await cli.ok("labels", "lab1", "--json")).json() == {"a": "1", "b": "2"}

    done = await cli.ok("labels", "lab1", "c=x=y", "a-", "d=4", "--json")
    assert done.json() == {"b": "2", "c": "x=y", "d": "4"}
    info = (await cli.ok("info", "lab1", "--json")).json()
    assert info["labels"] == {"b": "2", "c": "x=y", "d": "4"}

    # containerd drops a label whose value is empty.
    done = await cli.ok("labels", "lab1", "missing-", "b-", "d=")
    assert table(done.out) == [["KEY", "VALUE"], ["c", "x=y"]]
    await cli.ok("rm", "lab1")


async def test_global_options_come_from_the_environment(cli: Cli) -> None:
    env = {ADDRESS_ENV: cli.backend.address, NAMESPACE_ENV: cli.backend.namespace}
    sandboxer = ("--sandboxer", cli.backend.sandboxer)
    done = await sandboxctl(*sandboxer, "run", "env1", "--", "sleep", "60", env=env)
    assert done.code == 0, done
    listed = await sandboxctl("ls", "--json", env=env)
    assert [s["id"] for s in listed.json()] == ["env1"]
    # The flags win over the environment.
    other = await sandboxctl("--namespace", cli.backend.namespace + "-b", "ls", "--json", env=env)
    assert other.json() == []
    elsewhere = await sandboxctl("ls", env={ADDRESS_ENV: "/nonexistent/env.sock"})
    assert elsewhere.code == 1
    elsewhere.assert_one_error_line("/nonexistent/env.sock")
    await cli.ok("rm", "env1")


async def test_ctrl_c_during_wait_exits_130_quietly(cli: Cli) -> None:
    await cli.ok("run", "intr1", "--", "sleep", "60")
    seen = cli.backend.calls("Controller/Wait")
    waiter = await cli.spawn("wait", "intr1")
    await cli.backend.wait_for_call("Controller/Wait", seen + 1)  # well into the Wait call
    assert waiter.returncode is None
    waiter.send_signal(signal.SIGINT)
    done = await finish(waiter, 20)
    assert done.code == 130, done
    assert "Traceback" not in done.err
    assert done.out == ""
    # The sandbox was left alone.
    assert (await cli.ok("status", "intr1", "--json")).json()["state"] == "SANDBOX_READY"
    await cli.ok("rm", "intr1")


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["info", "start", "stop", "wait", "status", "labels"])
async def test_missing_sandbox_is_one_error_line(cli: Cli, command: str) -> None:
    done = await cli(command, "nope")
    assert done.code == 1
    assert done.out == ""
    done.assert_one_error_line("not found")


async def test_rm_goes_on_past_a_missing_sandbox(cli: Cli) -> None:
    await cli.ok("run", "rm1", "--", "sleep", "60")
    done = await cli("rm", "nope", "rm1")
    assert done.code == 1
    assert done.out == "rm1\n"
    done.assert_one_error_line("nope", "not found")
    assert (await cli.ok("ls", "--json")).json() == []


async def test_run_with_an_existing_or_bad_id(cli: Cli) -> None:
    await cli.ok("run", "dup1", "--", "sleep", "60")
    done = await cli("run", "dup1", "--", "sleep", "60")
    assert done.code == 1
    done.assert_one_error_line("already exists")
    done = await cli("run", "bad id/!", "--", "true")
    assert done.code == 1
    done.assert_one_error_line("invalid sandbox ID")
    assert [s["id"] for s in (await cli.ok("ls", "--json")).json()] == ["dup1"]
    await cli.ok("rm", "dup1")


async def test_unknown_sandboxer_leaves_nothing_behind(cli: Cli) -> None:
    done = await cli("--sandboxer", "bogus", "run", "orphan1", "--", "true")
    assert done.code == 1
    done.assert_one_error_line("bogus")
    assert (await cli.ok("ls", "--json")).json() == []


async def test_run_without_a_sandboxer_follows_the_namespace_label(cli: Cli) -> None:
    backend = cli.backend
    await set_default_sandboxer(backend, PLUGIN_NAME)  # not shim, the default without it
    where = ("--address", backend.address, "--namespace", backend.namespace)
    done = await sandboxctl(*where, "run", "lbl1", "--wait", "--", "true")
    assert done.code == 0, done
    info = (await sandboxctl(*where, "info", "lbl1", "--json")).json()
    assert info["sandboxer"] == PLUGIN_NAME
    assert (await sandboxctl(*where, "rm", "lbl1")).code == 0


async def test_bad_label_arguments_are_usage_errors(cli: Cli) -> None:
    await cli.ok("run", "badlab1", "--", "sleep", "60")
    for args in (
        ("labels", "badlab1", "novalue"),
        ("labels", "badlab1", "=v"),
        ("run", "x1", "--label", "novalue", "--", "true"),
    ):
        done = await cli(*args)
        assert done.code == 2, done
        done.assert_one_error_line("KEY=VALUE", "--help")
    # A label the server side refuses is an ordinary error.
    done = await cli("labels", "badlab1", "k=" + "v" * 5000)
    assert done.code == 1
    done.assert_one_error_line("4096")
    assert (await cli.ok("labels", "badlab1", "--json")).json() == {}
    assert [s["id"] for s in (await cli.ok("ls", "--json")).json()] == ["badlab1"]
    await cli.ok("rm", "badlab1")


async def test_bad_filter_is_an_error_line(cli: Cli) -> None:
    done = await cli("ls", "--filter", "labels.==")
    assert done.code == 1
    done.assert_one_error_line()


async def test_unreachable_daemon_names_the_socket(tmp_path: Path) -> None:
    socket = str(tmp_path / "missing.sock")
    for args in (("ls",), ("info", "x"), ("run", "x", "--", "true"), ("rm", "x")):
        done = await sandboxctl("--address", socket, *args)
        assert done.code == 1, done
        done.assert_one_error_line(socket)


async def test_bad_global_options() -> None:
    done = await sandboxctl("--namespace", "Bad_NS!", "ls")
    assert done.code == 1
    done.assert_one_error_line("namespace")
    done = await sandboxctl("--timeout", "0", "ls")
    assert done.code == 2
    done.assert_one_error_line("--timeout")
    done = await sandboxctl("frobnicate")
    assert done.code == 2
    done.assert_one_error_line("frobnicate")
    done = await sandboxctl()
    assert done.code == 2
    done.assert_one_error_line("COMMAND")


async def test_help() -> None:
    done = await sandboxctl("--help")
    assert done.code == 0
    assert done.out.startswith("usage: sandboxctl ")
    for command in COMMANDS:
        assert command in done.out
    for command in COMMANDS:
        sub = await sandboxctl(command, "--help")
        assert sub.code == 0, sub
        assert sub.out.startswith(f"usage: sandboxctl {command} ")
        assert "--json" in sub.out


# -- serve-fake ----------------------------------------------------------------------------------


async def _serve(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await spawn("serve-fake", *args)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert line, "serve-fake printed nothing"
    return proc, line.decode().strip()


async def _stop_server(proc: asyncio.subprocess.Process, signum: int) -> Done:
    proc.send_signal(signum)
    done = await finish(proc, 20)
    assert done.code == 0, done
    assert "Traceback" not in done.err
    return done


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_serve_fake_works_with_the_defaults(tmp_path: Path, signum: int) -> None:
    socket = str(tmp_path / "fake.sock")
    proc, address = await _serve("--socket", socket)
    try:
        assert address == socket
        assert await anyio.Path(socket).is_socket()
        env = {ADDRESS_ENV: address}
        done = await sandboxctl(
            "run", "sf1", "--wait", "--", "sh", "-c", "echo hi; exit 5", env=env
        )
        assert (done.code, done.out, done.err) == (5, "hi\n", "")
        listed = (await sandboxctl("ls", "--json", env=env)).json()
        assert [(s["id"], s["sandboxer"]) for s in listed] == [("sf1", "shim")]
        assert (await sandboxctl("rm", "sf1", env=env)).code == 0
    finally:
        if proc.returncode is None:
            await _stop_server(proc, signum)


async def test_serve_fake_follows_the_sandboxer_option() -> None:
    proc, address = await _serve("--sandboxer", "mybox", "--json")
    try:
        doc = json.loads(address)
        assert doc["sandboxers"] == ["mybox"]
        env = {ADDRESS_ENV: doc["address"]}
        done = await sandboxctl(
            "--sandboxer", "mybox", "run", "m1", "--wait", "--", "true", env=env
        )
        assert done.code == 0, done
        done = await sandboxctl("run", "m2", "--", "true", env=env)  # shim is not served
        assert done.code == 1
        done.assert_one_error_line("shim")
    finally:
        await _stop_server(proc, signal.SIGTERM)


# -- argument parsing ----------------------------------------------------------------------------


def test_label_parsing() -> None:
    assert parse_label("a=b") == ("a", "b")
    assert parse_label("a=") == ("a", "")
    assert parse_label("a=b=c") == ("a", "b=c")
    assert parse_label_edit("a-") == ("a", None)
    assert parse_label_edit("a-=x") == ("a-", "x")
    for bad in ("a", "=b", "", "-"):
        with pytest.raises(Exception, match="invalid label"):
            parse_label_edit(bad)


def test_global_options_before_or_after_the_command() -> None:
    parser = build_parser()
    before = parser.parse_args(["--json", "--namespace", "ns1", "ls"])
    after = parser.parse_args(["ls", "--json", "-n", "ns1"])
    assert (before.json, before.namespace) == (after.json, after.namespace) == (True, "ns1")
    stop = parser.parse_args(["--timeout", "7", "stop", "x", "--timeout", "3"])
    assert (stop.timeout, stop.grace) == (7.0, 3.0)
    run = parser.parse_args(["run", "x", "-l", "a=b", "--", "sh", "-c", "exit 4", "--wait"])
    assert run.cmd == ["sh", "-c", "exit 4", "--wait"]
    assert run.labels == [("a", "b")]
    assert not run.wait


async def test_command_functions_take_a_client(backend: Backend) -> None:
    from sandboxclient import _cli

    async with backend.client() as client:
        assert isinstance(client, Client)
        outcome = await _cli.cmd_run(client, "fn1", ["sleep", "600"])
        assert outcome.code == 0
        assert outcome.data["pid"] > 0
        assert outcome.text == f"started fn1 (pid {outcome.data['pid']})"
        listed = await _cli.cmd_ls(client)
        assert [s["id"] for s in listed.data] == ["fn1"]
        removed = await _cli.cmd_rm(client, ["fn1", "gone"])
        assert removed.data == {"removed": ["fn1"]}
        assert removed.code == 1
        assert len(removed.errors) == 1
