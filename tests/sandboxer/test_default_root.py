"""The isolating sandboxer's default root filesystem: where it is built, and what is beside it.

containerd's shim idmaps an overlay's lower directories through their parent directory, which
from 2.3 it clones with every mount below it: the root's parent must hold nothing but the
root, never the state directory's namespace pins and disks (see ``sandboxer._rootfs``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandboxclient._serve._busybox import busybox_problem
from sandboxclient.sandboxer._rootfs import DefaultRoot
from sandboxclient.testing._locate import containerd_required

pytestmark = pytest.mark.anyio


@pytest.fixture
def busybox() -> None:
    problem = busybox_problem()
    if problem is not None:
        if containerd_required():
            pytest.fail(problem)
        pytest.skip(problem)


async def test_the_root_is_alone_in_a_directory_of_its_own(tmp_path: Path, busybox: None) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "userns").mkdir()  # where the sandboxer pins namespaces, beside its root
    root = DefaultRoot(str(state))
    assert not root.built()

    path = Path(await root.ensure())
    assert root.built()
    assert path.parent != state
    assert path.parent.parent == state
    # Only the root in its parent, so nothing the state directory holds is idmapped with it.
    assert os.listdir(path.parent) == [path.name]
    assert (path / "bin" / "busybox").is_file()
    assert (path / "etc" / "passwd").read_text().startswith("root:x:0:0:")

    # Found in place, it is used as it is.
    (path / "marker").write_text("kept")
    assert await DefaultRoot(str(state)).ensure() == str(path)
    assert (path / "marker").read_text() == "kept"


async def test_a_failed_build_leaves_no_half_made_root(
    tmp_path: Path, busybox: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_path: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("sandboxclient.sandboxer._rootfs.build_busybox_root", broken)
    root = DefaultRoot(str(tmp_path))
    with pytest.raises(OSError, match="disk full"):
        await root.ensure()
    assert not root.built()
    assert os.listdir(Path(root.path).parent) == []
