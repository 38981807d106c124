"""``sandboxctl images``: the image store on both backends, archives on the real daemon."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandboxclient.testing import PLUGIN_NAME, FakeContainerd
from sandboxclient.testing._images import build_pause_archive
from tests.support.backends import Backend, RealContainerd, new_namespace
from tests.support.cli import Cli, table
from tests.support.images import DIGEST, seed

pytestmark = pytest.mark.anyio


@pytest.fixture
def fake_cli(fake: FakeContainerd) -> Cli:
    return Cli(Backend("fake", fake.address, "shim", new_namespace(), fake=fake))


@pytest.fixture
def real_backend(real: RealContainerd) -> Backend:
    return Backend("real", real.daemon.address, PLUGIN_NAME, new_namespace(), real.daemon)


async def test_images_ls_tag_and_rm(backend: Backend, cli: Cli) -> None:
    await seed(backend, "example.test/cli:1", {"k": "v"})
    listed = (await cli.ok("images", "ls", "--json")).json()
    assert [(i["name"], i["target"]["digest"], i["labels"]) for i in listed] == [
        ("example.test/cli:1", DIGEST, {"k": "v"})
    ]
    rows = table((await cli.ok("images", "ls")).out)
    assert rows[0] == ["NAME", "DIGEST", "SIZE", "CREATED", "LABELS"]
    assert rows[1][:3] == ["example.test/cli:1", DIGEST[:19], "123"]
    assert (await cli.ok("images", "tag", "example.test/cli:1", "example.test/cli:2")).out == (
        "example.test/cli:2\n"
    )
    done = await cli("images", "rm", "example.test/cli:1", "example.test/nope:1")
    assert done.code == 1
    assert done.out == "example.test/cli:1\n"
    done.assert_one_error_line('example.test/nope:1: image "example.test/nope:1": not found')
    names = [i["name"] for i in (await cli.ok("images", "ls", "--json")).json()]
    assert names == ["example.test/cli:2"]


async def test_a_password_is_never_an_argument(fake_cli: Cli) -> None:
    done = await fake_cli("images", "pull", "--user", "u", "example.test/a:1")
    assert done.code != 0
    done.assert_one_error_line("--user needs --password-stdin")


@pytest.mark.real
async def test_images_import_and_export_with_progress_as_json(
    real_backend: Backend, tmp_path: Path
) -> None:
    cli = Cli(real_backend)
    archive = tmp_path / "in.tar"
    archive.write_bytes(build_pause_archive("example.test/cli/busybox:1"))
    done = await cli("--json", "images", "import", str(archive))
    assert done.code == 0, done
    assert [i["name"] for i in json.loads(done.out)] == ["example.test/cli/busybox:1"]
    events = [json.loads(line)["event"] for line in done.err.splitlines()]
    assert events == ["Importing", "saved", "Completed import"]
    out = tmp_path / "out.tar"
    done = await cli.ok("images", "export", str(out), "example.test/cli/busybox:1")
    assert done.out == f"{out} {out.stat().st_size}\n"
    assert out.stat().st_size > 1_000_000
