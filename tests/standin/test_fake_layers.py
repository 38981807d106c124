"""The stand-in's unpacker takes image layers as hostile input: nothing is written or removed
outside the snapshot's directory, whatever the layer or the layers below it hold."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from sandboxclient.testing._layers import LayerError, apply_layer


def member(
    name: str,
    kind: bytes = tarfile.REGTYPE,
    data: bytes = b"",
    link: str = "",
    mode: int = 0o644,
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def layer(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def apply(root: Path, data: bytes) -> str:
    return apply_layer(str(root), io.BytesIO(data))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "snapshot"
    path.mkdir()
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret").write_text("host")
    return path


def test_a_layer_is_applied_with_its_whiteouts_and_its_diff_id_returned(root: Path) -> None:
    lower = layer(
        member("a", tarfile.DIRTYPE, mode=0o755),
        member("a/old", data=b"old"),
        member("c", data=b"c"),
        member("bin", tarfile.DIRTYPE, mode=0o755),
        member("bin/busybox", data=b"#!", mode=0o4755),
        member("bin/sh", tarfile.SYMTYPE, link="busybox"),
        member("bin/ln", tarfile.LNKTYPE, link="bin/busybox"),
        member("dev", tarfile.DIRTYPE),
        member("dev/null", tarfile.CHRTYPE),
        member("dev/fifo", tarfile.FIFOTYPE),
    )
    assert apply(root, lower) == "sha256:" + hashlib.sha256(lower).hexdigest()
    upper = gzip.compress(
        layer(member(".wh.c"), member("a/.wh..wh..opq"), member("a/new", data=b"new"))
    )
    apply(root, upper)
    assert sorted(os.listdir(root)) == ["a", "bin", "dev"]
    assert os.listdir(root / "a") == ["new"]
    assert os.readlink(root / "bin" / "sh") == "busybox"
    assert (root / "bin" / "ln").stat().st_ino == (root / "bin" / "busybox").stat().st_ino
    assert (root / "bin" / "busybox").stat().st_mode & 0o7777 == 0o755  # no set-id bit
    assert os.listdir(root / "dev") == []  # device nodes and FIFOs are skipped


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ([member("../escape", data=b"x")], "'..'"),
        ([member("/abs", data=b"x")], "absolute"),
        ([member("bad\nname", data=b"x")], "control character"),
    ],
)
def test_names_that_leave_the_tree_are_refused(
    root: Path, members: list[tuple[tarfile.TarInfo, bytes]], why: str
) -> None:
    with pytest.raises(LayerError, match=why):
        apply(root, layer(*members))
    assert not (root.parent / "escape").exists()


def test_no_symbolic_link_is_followed_out_of_the_tree(root: Path, outside: Path) -> None:
    # A link of the layer itself, then a member through it.
    with pytest.raises(LayerError, match="not a directory"):
        apply(root, layer(member("out", tarfile.SYMTYPE, link=str(outside)), member("out/x")))
    # A link a layer below left, written through, or whited out through.
    with pytest.raises(LayerError, match="not a directory"):
        apply(root, layer(member("out/secret", data=b"overwritten")))
    with pytest.raises(LayerError, match="not a directory"):
        apply(root, layer(member("out/.wh.secret")))
    with pytest.raises(LayerError, match="not a directory"):
        apply(root, layer(member("out/.wh..wh..opq")))
    assert (outside / "secret").read_text() == "host"
    assert os.listdir(outside) == ["secret"]
    # Replacing the link itself is fine: the link goes, not what it points to.
    apply(root, layer(member(".wh.out")))
    assert not os.path.lexists(root / "out")
    assert (outside / "secret").exists()


def test_hard_links_only_reach_files_of_the_tree(root: Path, outside: Path) -> None:
    with pytest.raises(LayerError):
        apply(root, layer(member("h", tarfile.LNKTYPE, link="../outside/secret")))
    with pytest.raises(LayerError, match="no file of the tree"):
        apply(root, layer(member("h", tarfile.LNKTYPE, link="missing")))
    apply(root, layer(member("out", tarfile.SYMTYPE, link=str(outside / "secret"))))
    with pytest.raises(LayerError, match="no file of the tree"):
        apply(root, layer(member("h", tarfile.LNKTYPE, link="out")))
    assert (outside / "secret").stat().st_nlink == 1


def test_a_truncated_or_corrupt_layer_is_refused(root: Path) -> None:
    whole = layer(member("f", data=b"x" * 5000))
    with pytest.raises(LayerError, match="not a valid tar"):
        apply(root, whole[:1000])
    with pytest.raises(LayerError, match="not a valid tar"):
        apply(root, gzip.compress(whole)[:-20])


@pytest.mark.parametrize("whiteout", [".wh...", "sub/.wh...", ".wh..", "sub/.wh.."])
def test_a_whiteout_of_dot_or_dot_dot_is_refused(
    tmp_path: Path, root: Path, outside: Path, whiteout: str
) -> None:
    (root / "sub").mkdir()
    (root / "sub" / "kept").write_text("kept")
    (root / "kept").write_text("kept")
    with pytest.raises(LayerError, match="whiteout"):
        apply(root, layer(member(whiteout)))
    assert (outside / "secret").read_text() == "host"
    assert (root / "kept").read_text() == "kept"
    assert (root / "sub" / "kept").read_text() == "kept"
