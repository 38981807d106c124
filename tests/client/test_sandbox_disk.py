"""``new_sandbox(disk=)``: the size of an image root's writable layer, checked at once and
carried in the spec's annotation (what the sandboxer does with it is in
``tests/sandboxer/test_root_disk*.py``)."""

from __future__ import annotations

from typing import Any

import pytest

from sandboxclient import Client
from sandboxclient._facts._disk import DISK_ANNOTATION, checked_disk, with_disk
from sandboxclient.testing import FakeContainerd

pytestmark = pytest.mark.anyio

MiB = 2**20


@pytest.mark.parametrize(("given", "size"), [("256Mi", 256 * MiB), (MiB, MiB), ("1G", 10**9)])
def test_disk_takes_bytes_or_a_size(given: int | str, size: int) -> None:
    assert checked_disk(given) == size
    assert with_disk(None, given) == {"annotations": {DISK_ANNOTATION: str(size)}}


@pytest.mark.parametrize(
    ("disk", "error"),
    [
        (0, ValueError),
        (MiB - 1, ValueError),
        ("lots", ValueError),
        ("5MiB", ValueError),
        (1.5, TypeError),
        (True, TypeError),
    ],
)
def test_a_bad_disk_is_refused_naming_it(disk: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="disk="):
        checked_disk(disk)


def test_a_disk_too_large_is_refused_as_too_large() -> None:
    with pytest.raises(
        ValueError, match=r"disk= must be at most \d+ bytes, got 9223372036854775808"
    ):
        checked_disk(2**63)


def test_disk_joins_a_spec_and_a_contradiction_is_refused() -> None:
    spec = {"hostname": "h", "annotations": {"a": "b"}}
    assert with_disk(spec, "2Mi") == {
        "hostname": "h",
        "annotations": {"a": "b", DISK_ANNOTATION: str(2 * MiB)},
    }
    assert spec == {"hostname": "h", "annotations": {"a": "b"}}  # not changed
    assert with_disk(spec, None) is spec
    with pytest.raises(ValueError, match=f"disk='4Mi' but the spec's annotation {DISK_ANNOTATION}"):
        with_disk({"annotations": {DISK_ANNOTATION: str(2 * MiB)}}, "4Mi")


async def test_disk_needs_an_image_and_a_bad_one_sends_nothing(fake: FakeContainerd) -> None:
    async with Client(fake.address, namespace="disk") as client:
        with pytest.raises(ValueError, match="give image= too"):
            await client.new_sandbox("d1", disk="64Mi")
        with pytest.raises(ValueError, match="disk="):
            async with client.sandbox("d1", image="example.test/x:1", disk="lots"):
                pass
    assert fake.call_count("Store/Create") == 0
