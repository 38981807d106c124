"""The version guard on the wire's fast paths: with a betterproto2 or grpclib the project was
not written against, or with ``SANDBOXCLIENT_PLAIN_WIRE=1``, the fast codec and the hooked
protocol stay off, and the client still works end to end on the libraries' own paths.

Each case runs in a fresh interpreter, since the flags are decided when sandboxclient is
first imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

_SCRIPT = """\
import asyncio, json, sys

import betterproto2, grpclib

for name in sys.argv[1:]:
    {"betterproto2": betterproto2, "grpclib": grpclib}[name].__version__ = "99.0.0"

from sandboxclient import Client, NotFoundError
from sandboxclient._wire import _codec
from sandboxclient._wire import _grpcframe
from sandboxclient._wire import _transport
from sandboxclient.testing import FakeContainerd


async def main():
    out = {"fast": _codec.FAST, "hooked": _grpcframe.HOOKED, "batching": _transport.BATCHING}
    async with FakeContainerd() as fake, Client(
        fake.address, namespace="guard", sandboxer="shim"
    ) as client:
        spec = {"process": {"args": ["sleep", "60"]}}
        sb = await client.new_sandbox(
            "g1", labels={"k": "v"}, runtime="io.containerd.runc.v2", spec=spec
        )
        await sb.start()
        done = await sb.run("sh", "-c", "cat; echo err >&2; exit 3", input=b"fed")
        out["run"] = [done.returncode, done.stdout.decode(), done.stderr.decode()]
        out["labels"] = await (await client.load_sandbox("g1")).labels()
        out["listed"] = [info.id for info in await client.list_sandboxes("labels.k==v")]
        try:
            await client.load_sandbox("nope")
        except NotFoundError as exc:
            out["missing"] = exc.message
        await sb.shutdown()
        out["left"] = [info.id for info in await client.list_sandboxes()]
        out["left"] += fake.container_ids("guard") + fake.task_ids("guard")
    print(json.dumps(out))


asyncio.run(main())
"""


def _run(*unknown: str, plain: bool = False) -> dict[str, object]:
    env = dict(os.environ)
    env.pop("SANDBOXCLIENT_PLAIN_WIRE", None)
    if plain:
        env["SANDBOXCLIENT_PLAIN_WIRE"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, *unknown],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def _works(result: dict[str, object]) -> None:
    assert result["run"] == [3, "fed", "err\n"]
    assert result["labels"] == {"k": "v"}
    assert result["listed"] == ["g1"]
    assert result["missing"] == 'bucket "nope" not found: not found'
    assert result["left"] == []


@pytest.mark.parametrize(
    ("unknown", "fast", "hooked"),
    [
        pytest.param((), True, True, id="known-versions"),
        pytest.param(("betterproto2",), False, True, id="unknown-betterproto2"),
        pytest.param(("grpclib",), True, False, id="unknown-grpclib"),
        pytest.param(("betterproto2", "grpclib"), False, False, id="both-unknown"),
    ],
)
def test_an_unknown_library_version_turns_its_fast_path_off(
    unknown: tuple[str, ...], fast: bool, hooked: bool
) -> None:
    result = _run(*unknown)
    assert (result["fast"], result["hooked"], result["batching"]) == (fast, hooked, hooked)
    _works(result)


def test_the_plain_switch_turns_every_fast_path_off() -> None:
    result = _run(plain=True)
    assert (result["fast"], result["hooked"], result["batching"]) == (False, False, False)
    _works(result)
