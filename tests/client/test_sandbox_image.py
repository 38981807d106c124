"""``new_sandbox(image=...)``: the image's user looked up in its own files as hostile input,
the spec filled from its config, the sandboxer's defaults for an image's root, and a
missing image refused with nothing left, on both backends."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from sandboxclient import Client, SandboxPool
from sandboxclient._creation._image_user import MAX_FILE, ImageUser, image_user, layer_dirs
from sandboxclient._creation._sandbox_image import fill_from_image
from sandboxclient._models import Mount
from sandboxclient._plumbing._rootfs import ImageConfig
from sandboxclient.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from sandboxclient.sandboxer._podspec import build_spec
from sandboxclient.testing import FakeContainerd
from tests.support.backends import Backend

PASSWD = "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n"
GROUP = "root:x:0:\nstaff:x:50:app\n"


def layer(base: Path, name: str, files: dict[str, str] | None = None) -> Path:
    root = base / name
    (root / "etc").mkdir(parents=True)
    for path, text in (files or {}).items():
        (root / path).write_text(text)
    return root


def overlay(*layers: Path) -> list[Mount]:
    lower = ":".join(str(p) for p in layers)
    return [Mount("overlay", "overlay", "", (f"lowerdir={lower}",))]


def test_numeric_users_need_no_files() -> None:
    assert image_user("1000", "img", []) == ImageUser(1000, 0)
    assert image_user("1000:50", "img", []) == ImageUser(1000, 50)
    assert ImageUser(7, 8).to_spec() == {"uid": 7, "gid": 8}


def test_names_are_looked_up_in_the_top_layer_that_has_the_file(tmp_path: Path) -> None:
    top = layer(tmp_path, "top", {"etc/passwd": PASSWD, "etc/group": GROUP})
    below = layer(tmp_path, "below", {"etc/passwd": "app:x:5:5::/:/bin/sh\n"})
    mounts = overlay(top, below)
    assert image_user("app", "img", mounts) == ImageUser(1000, 1001)
    assert image_user("app:staff", "img", mounts) == ImageUser(1000, 50)
    assert image_user("7:staff", "img", mounts) == ImageUser(7, 50)
    assert image_user("app:9", "img", mounts) == ImageUser(1000, 9)
    # a bind (a one-layer snapshot) is its source
    assert image_user("app", "img", [Mount("bind", str(top), "", ("rbind",))]).uid == 1000
    with pytest.raises(InvalidArgumentError, match="does not name"):
        image_user("ghost", "img", mounts)


def test_whiteouts_and_opaque_directories_hide_lower_layers(tmp_path: Path) -> None:
    below = layer(tmp_path, "below", {"etc/passwd": PASSWD})
    whiteout = layer(tmp_path, "whiteout")
    os.mknod(whiteout / "etc" / "passwd", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    with pytest.raises(InvalidArgumentError, match="no /etc/passwd"):
        image_user("app", "img", overlay(whiteout, below))
    opaque = layer(tmp_path, "opaque")
    os.setxattr(opaque / "etc", "trusted.overlay.opaque", b"y")
    with pytest.raises(InvalidArgumentError, match="no /etc/passwd"):
        image_user("app", "img", overlay(opaque, below))
    empty = layer(tmp_path, "empty")  # absent, not hidden: the layer below has it
    assert image_user("app", "img", overlay(empty, below)).uid == 1000


@pytest.mark.parametrize("attack", ["etc-link", "file-link", "fifo", "device", "huge"])
def test_hostile_files_are_refused_never_followed(
    tmp_path: Path, attack: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "top"
    root.mkdir()
    secret = tmp_path / "host-passwd"
    secret.write_text("app:x:0:0::/:/bin/sh\n")
    if attack == "etc-link":
        (root / "etc").symlink_to(tmp_path)
    else:
        (root / "etc").mkdir()
        target = root / "etc" / "passwd"
        if attack == "file-link":
            target.symlink_to(secret)
        elif attack == "fifo":
            os.mkfifo(target)  # would block a reader that opened it as a file
        elif attack == "device":
            os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero
        else:
            target.write_bytes(b"x" * (MAX_FILE + 1))
    opened: list[str] = []
    real_open = os.open

    def recording_open(path: Any, *args: Any, **kwargs: Any) -> int:
        opened.append(os.fsdecode(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", recording_open)
    with pytest.raises(InvalidArgumentError, match="cannot be read safely"):
        image_user("app", "img", overlay(root))
    if attack in ("fifo", "device"):  # a device may act on open (a watchdog arms)
        assert "passwd" not in opened


def test_snapshots_that_cannot_be_read_here_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FailedPreconditionError, match="numeric user"):
        image_user("app", "img", [Mount("erofs", "/dev/loop0", "", ())])
    with pytest.raises(FailedPreconditionError, match="numeric user"):
        image_user("app", "img", overlay(tmp_path / "gone"))
    with pytest.raises(InvalidArgumentError, match="malformed"):
        image_user("a:b:c", "img", [])
    upper = tmp_path / "upper"
    options = (f"upperdir={upper}", "lowerdir=/a:/b", "workdir=/w")
    dirs = layer_dirs([Mount("overlay", "overlay", "", options)], "img")
    assert dirs == [str(upper), "/a", "/b"]


def test_the_image_config_fills_what_the_spec_leaves_out() -> None:
    config = ImageConfig(
        env=("PATH=/usr/bin", "LANG=C"),
        entrypoint=("/bin/sh", "-c"),
        cmd=("sleep 9",),
        working_dir="/srv",
        user="app",
    )
    spec: dict[str, object] = {}
    fill_from_image(spec, config, {"uid": 1000, "gid": 50})
    assert spec == {
        "process": {
            "args": ["/bin/sh", "-c", "sleep 9"],
            "env": ["PATH=/usr/bin", "LANG=C"],
            "cwd": "/srv",
            "user": {"uid": 1000, "gid": 50},
        }
    }
    own = {"process": {"args": ["true"], "env": ["LANG=fr"], "cwd": "/", "user": {"uid": 0}}}
    fill_from_image(own, config, {"uid": 1000, "gid": 50})
    assert own == {
        "process": {
            "args": ["true"],
            "env": ["PATH=/usr/bin", "LANG=fr"],
            "cwd": "/",
            "user": {"uid": 0},
        }
    }


def test_an_image_root_is_read_only_with_a_private_tmp_unless_asked() -> None:
    def built(given: dict[str, object] | None) -> dict[str, object]:
        return build_spec(given, namespace="ns", sandbox_id="s", has_rootfs_mounts=True)

    spec = built(None)
    assert spec["root"] == {"path": "rootfs", "readonly": True}
    tmp = [m for m in spec["mounts"] if m["destination"] == "/tmp"]  # type: ignore[attr-defined]
    assert len(tmp) == 1
    assert tmp[0]["type"] == "tmpfs"
    assert "size=65536k" in tmp[0]["options"]
    assert built({"root": {"readonly": True}})["root"]["readonly"] is True  # type: ignore[index]
    assert built({"root": {"readonly": False}})["root"]["readonly"] is False  # type: ignore[index]


@pytest.mark.anyio
async def test_a_missing_image_is_refused_with_nothing_left(backend: Backend) -> None:
    async with backend.client() as client:
        with pytest.raises(NotFoundError, match="not found"):
            await client.new_sandbox("img-missing", image="example.test/missing:1")
        with pytest.raises(ValueError, match="non-empty"):
            await client.new_sandbox("img-missing", image="")
        assert await client.list_sandboxes() == []


@pytest.mark.anyio
async def test_a_pool_template_takes_an_image(fake: FakeContainerd) -> None:
    async with (
        Client(fake.address, namespace="pool-image", sandboxer="shim", timeout=10) as client,
        SandboxPool(client, size=0, template={"image": "example.test/missing:1"}) as pool,
    ):
        with pytest.raises(NotFoundError, match=r"example\.test/missing"):
            async with pool.acquire(timeout=10):
                pass
        assert await client.list_sandboxes() == []
