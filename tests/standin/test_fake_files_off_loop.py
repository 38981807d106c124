"""The stand-in's blocking file work runs in threads, never on the event loop it serves
from: removing a snapshot's or its own directory, and spooling an archive in and out."""

from __future__ import annotations

import io
import shutil
import tempfile
import threading
import types
from collections.abc import Callable
from typing import IO, Any

import pytest

from sandboxclient import Client
from sandboxclient.testing import FakeContainerd, _fake, _snapshots, _transferservice
from sandboxclient.testing._images import build_pause_archive

pytestmark = pytest.mark.anyio

IMAGE = "example.test/images/off-loop:1"


class Spool:
    """A spool file whose reads and writes say which thread made them."""

    def __init__(self, file: IO[bytes], seen: list[int]) -> None:
        self._file = file
        self._seen = seen

    def read(self, size: int = -1) -> bytes:
        self._seen.append(threading.get_ident())
        return self._file.read(size)

    def write(self, data: bytes) -> int:
        self._seen.append(threading.get_ident())
        return self._file.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()


async def test_file_work_runs_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    loop_thread = threading.get_ident()
    removed: list[int] = []
    spooled: list[int] = []

    def rmtree(path: str, *args: Any, **kwargs: Any) -> None:
        removed.append(threading.get_ident())
        shutil.rmtree(path, *args, **kwargs)

    def temporary_file(**kwargs: Any) -> Spool:
        return Spool(tempfile.TemporaryFile(**kwargs), spooled)

    files: Callable[..., object] = types.SimpleNamespace
    for module in (_snapshots, _fake):
        monkeypatch.setattr(module, "shutil", files(rmtree=rmtree, copy2=shutil.copy2,
                                                    copytree=shutil.copytree))  # fmt: skip
    monkeypatch.setattr(
        _transferservice,
        "tempfile",
        files(TemporaryFile=temporary_file, mkstemp=tempfile.mkstemp),
    )
    async with FakeContainerd() as fake, Client(fake.address, namespace="ns") as client:
        await client.import_image(io.BytesIO(build_pause_archive(IMAGE)))
        container = await client.new_container("off-loop", image=IMAGE)
        await container.delete()  # its snapshot's directory removed
        out = io.BytesIO()
        await client.export_image(IMAGE, out)
        assert out.getvalue()
    assert removed  # the container's snapshot's directory, the stand-in's own
    assert spooled  # the import's spool written, the export's read
    assert loop_thread not in removed
    assert loop_thread not in spooled
