"""Hostile sandboxes: a download takes nothing from a sandbox's archive that would escape,
and leaves nothing behind when it refuses.

The archives are built here with :mod:`tarfile`, pushed into the sandbox with
``files.write``, and sent back by a ``tar`` of the sandbox's replaced with a script that
cats them, on both backends. The sandbox is rooted on an image whose ``/bin/sh`` is dash
(:mod:`tests.support.dash_image`), which finds that script along ``PATH``: busybox's shell
would run its own ``tar`` applet whatever ``PATH`` says. One sandbox serves every case; the
script notes each run, so a case that did not run it fails. On both backends too, a
sandbox's own busybox ``tar`` sends a tree holding a link out of it and a FIFO, which are
refused as well.
"""

from __future__ import annotations

import gzip
import io
import re
import tarfile
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from sandboxclient import (
    Client,
    Sandbox,
)
from sandboxclient.errors import (
    ResourceExhaustedError,
    UnsafeArchiveError,
)
from sandboxclient.testing._locate import containerd_required
from tests.support.constants import RUNTIME
from tests.support.dash_image import dash_archive, dash_problem
from tests.support.fifos import fifo_dirs
from tests.support.helpers import cleanups_finish

pytestmark = pytest.mark.anyio

TOP = "out"
ESCAPED = "escaped-by-the-archive"


def entry(
    name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **extra: object
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode = 0o644
    for key, value in extra.items():
        setattr(info, key, value)
    return info, data


def archive(*entries: tuple[tarfile.TarInfo, bytes], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def good(name: str = f"{TOP}/fine") -> tuple[tarfile.TarInfo, bytes]:
    return entry(name, data=b"fine\n")


def huge_declared() -> bytes:
    """A member whose header says 100 GiB, followed by a few bytes: a sparse file's shape."""
    info, _ = entry(f"{TOP}/sparse")
    info.size = 100 * 2**30
    return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape") + b"\0" * 4096


def pax_sparse() -> bytes:
    """A PAX 1.0 sparse member: a map of one 4 KiB hole-less region, real size 100 GiB."""
    info, _ = entry(f"{TOP}/sparse")
    info.pax_headers = {
        "GNU.sparse.major": "1",
        "GNU.sparse.minor": "0",
        "GNU.sparse.name": f"{TOP}/sparse",
        "GNU.sparse.realsize": str(100 * 2**30),
    }
    body = b"1\n0\n4096\n".ljust(512, b"\0") + b"x" * 4096
    info.size = len(body)
    return archive((info, body), fmt=tarfile.PAX_FORMAT)


HOSTILE: dict[str, tuple[Callable[[], bytes], type[Exception], str]] = {
    "dot-dot": (
        lambda: archive(good(), entry(f"{TOP}/../../{ESCAPED}", data=b"x")),
        UnsafeArchiveError,
        "'..'",
    ),
    "bare-dot-dot": (
        lambda: archive(entry(f"../{ESCAPED}", data=b"x")),
        UnsafeArchiveError,
        "'..'",
    ),
    "absolute": (
        lambda: archive(good(), entry(f"/tmp/{ESCAPED}", data=b"x")),
        UnsafeArchiveError,
        "absolute",
    ),
    "symlink-out-then-file-through-it": (
        lambda: archive(
            entry(TOP, tarfile.DIRTYPE),
            entry(f"{TOP}/etc", tarfile.SYMTYPE, linkname="/etc"),
            entry(f"{TOP}/etc/cron.d/x", data=b"* * * * * root id\n"),
        ),
        UnsafeArchiveError,
        "symbolic link out",
    ),
    "relative-symlink-out": (
        lambda: archive(
            entry(TOP, tarfile.DIRTYPE),
            entry(f"{TOP}/up", tarfile.SYMTYPE, linkname="../.."),
            entry(f"{TOP}/up/{ESCAPED}", data=b"x"),
        ),
        UnsafeArchiveError,
        "symbolic link out",
    ),
    "file-through-an-inner-symlink": (
        lambda: archive(
            entry(TOP, tarfile.DIRTYPE),
            entry(f"{TOP}/d", tarfile.DIRTYPE),
            entry(f"{TOP}/in", tarfile.SYMTYPE, linkname="d"),
            entry(f"{TOP}/in/x", data=b"x"),
        ),
        UnsafeArchiveError,
        "through a symbolic link",
    ),
    "hard-link-to-a-host-file": (
        lambda: archive(good(), entry(f"{TOP}/passwd", tarfile.LNKTYPE, linkname="/etc/passwd")),
        UnsafeArchiveError,
        "absolute",
    ),
    "hard-link-up": (
        lambda: archive(good(), entry(f"{TOP}/p", tarfile.LNKTYPE, linkname="../etc/passwd")),
        UnsafeArchiveError,
        "'..'",
    ),
    "hard-link-to-nothing-earlier": (
        lambda: archive(good(), entry(f"{TOP}/p", tarfile.LNKTYPE, linkname=f"{TOP}/later")),
        UnsafeArchiveError,
        "no earlier file",
    ),
    "device-node": (
        lambda: archive(good(), entry(f"{TOP}/null", tarfile.CHRTYPE, devmajor=1, devminor=3)),
        UnsafeArchiveError,
        "device node",
    ),
    "fifo": (
        lambda: archive(good(), entry(f"{TOP}/p", tarfile.FIFOTYPE)),
        UnsafeArchiveError,
        "FIFO",
    ),
    "100-gib-declared": (huge_declared, ResourceExhaustedError, "max_bytes"),
    "100-gib-pax-sparse": (pax_sparse, UnsafeArchiveError, "sparse"),
    "newline-in-a-name": (
        lambda: archive(good(), entry(f"{TOP}/new\nline", data=b"x")),
        UnsafeArchiveError,
        "control character",
    ),
    "another-top-name": (
        lambda: archive(good(), entry("other/x", data=b"x")),
        UnsafeArchiveError,
        "outside",
    ),
    "gzip-compressed": (
        lambda: gzip.compress(archive(good())),
        UnsafeArchiveError,
        "not an uncompressed tar",
    ),
    "garbage": (lambda: b"\x7fELF" + b"\xff" * 2000, UnsafeArchiveError, "not an uncompressed tar"),
    "too-many-entries": (
        lambda: archive(entry(TOP, tarfile.DIRTYPE), *(good(f"{TOP}/f{i}") for i in range(20))),
        ResourceExhaustedError,
        "max_entries",
    ),
}


IMAGE = "example.test/dash-shell:1"


@pytest.fixture
async def hostile(client: Client, fifo_home: Path) -> AsyncIterator[tuple[Sandbox, str]]:
    """A sandbox rooted on the dash image (:mod:`tests.support.dash_image`) whose ``PATH``
    finds first a ``tar`` of the test's: a script that notes each run in ``<tools>/ran`` and
    cats ``<tools>/archive.tar``. Yields it and that folder (in the sandbox's ``/tmp``, which
    on the stand-in is the host's)."""
    problem = dash_problem()
    if problem is not None:
        if containerd_required():
            pytest.fail(problem)
        pytest.skip(problem)
    await client.import_image(io.BytesIO(dash_archive(IMAGE, {"Env": ["PATH=/bin"]})))
    tools = f"/tmp/hostile-{uuid.uuid4().hex[:8]}"
    spec = {"process": {"env": [f"PATH={tools}:/usr/bin:/bin"]}}
    async with client.sandbox(
        f"fh{uuid.uuid4().hex[:8]}", runtime=RUNTIME, image=IMAGE, spec=spec
    ) as sb:
        try:
            await sb.files.make_dir(f"{tools}/{TOP}", parents=True)  # what is asked for exists
            script = f"#!/bin/sh\necho ran >> {tools}/ran\nexec cat {tools}/archive.tar\n"
            await sb.files.write(f"{tools}/tar", script, mode=0o755)
            yield sb, tools
        finally:
            await sb.files.remove(tools, recursive=True)
        await cleanups_finish()
    assert fifo_dirs() == set()


def escaped_to_tmp() -> bool:
    return Path(f"/tmp/{ESCAPED}").exists()


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


async def refused_leaving_nothing(sb: Sandbox, tools: str, case: str, root: Path) -> None:
    make, error, words = HOSTILE[case]
    await sb.files.write(f"{tools}/archive.tar", make())
    dest = root / case / "a" / "b" / "dest"
    dest.mkdir(parents=True)
    before = tree(root)
    with pytest.raises(error, match=re.escape(words)):
        await sb.files.download(f"{tools}/{TOP}", dest, max_bytes=2**20, max_entries=10)
    assert list(dest.iterdir()) == []  # no partial file, no staging or spool left
    assert tree(root) == before
    assert not escaped_to_tmp()


async def test_a_hostile_archive_is_refused_and_leaves_nothing(
    hostile: tuple[Sandbox, str], tmp_path: Path
) -> None:
    """Every hostile archive, sent by the replaced tar of one sandbox: refused with its typed
    error, nothing written outside the destination nor in it. The script's notes prove each
    case (and the plain archive first) ran it, not the sandbox's own tar."""
    sb, tools = hostile
    body = archive(
        entry(TOP, tarfile.DIRTYPE),
        good(),
        entry(f"{TOP}/same", tarfile.LNKTYPE, linkname=f"{TOP}/fine"),
        entry(f"{TOP}/rel", tarfile.SYMTYPE, linkname="fine"),
    )
    await sb.files.write(f"{tools}/archive.tar", body)
    (tmp_path / "plain").mkdir()
    local = await sb.files.download(f"{tools}/{TOP}", tmp_path / "plain")
    # The fake tar itself works: a harmless archive it sends is taken whole.
    assert (local / "fine").read_bytes() == b"fine\n"
    assert (local / "same").read_bytes() == b"fine\n"
    assert (local / "rel").readlink() == Path("fine")
    assert await sb.files.read(f"{tools}/ran") == b"ran\n"

    failed: dict[str, str] = {}
    for runs, case in enumerate(sorted(HOSTILE), start=2):
        try:
            await refused_leaving_nothing(sb, tools, case, tmp_path / "cases")
            assert await sb.files.read(f"{tools}/ran") == b"ran\n" * runs, "tar not run"
        except (Exception, pytest.fail.Exception) as exc:  # every case told, not the first
            failed[case] = f"{type(exc).__name__}: {exc}"
    assert failed == {}


async def test_a_real_tar_sending_a_link_out_or_a_fifo_is_refused(
    client: Client, fifo_home: Path, tmp_path: Path
) -> None:
    """On both backends, the sandbox's own tar packs a tree with a link to /etc, or a FIFO:
    refused, nothing kept."""
    async with client.sandbox(f"fr{uuid.uuid4().hex[:8]}", runtime=RUNTIME) as sb:
        base = f"/tmp/hostile-{uuid.uuid4().hex[:8]}"
        try:
            await sb.files.make_dir(f"{base}/linky/sub")
            await sb.run("ln", "-s", "/etc", f"{base}/linky/sub/etc", timeout=10)
            await sb.files.make_dir(f"{base}/fifo")
            await sb.run("mkfifo", f"{base}/fifo/pipe", timeout=10)
            for name, words in (("linky", "symbolic link out"), ("fifo", "FIFO")):
                dest = tmp_path / name
                dest.mkdir()
                with pytest.raises(UnsafeArchiveError, match=words):
                    await sb.files.download(f"{base}/{name}", dest)
                assert list(dest.iterdir()) == []
        finally:
            await sb.files.remove(base, recursive=True)
        await cleanups_finish()
    assert fifo_dirs() == set()
