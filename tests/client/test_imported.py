"""An import's saved names, the same on every release: containerd 2.3 and later also save
the archive's own index as ``prefix@<index digest>``, which the client sets aside."""

from __future__ import annotations

import pytest

from sandboxclient import ContainerdVersion
from sandboxclient._image_models import Descriptor, PullProgress
from sandboxclient._imageops._imported import SavedNames, names_own_index

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


def saved(name: str, media_type: str, digest: str) -> PullProgress:
    return PullProgress("saved", name, descriptor=Descriptor(media_type, digest, 100))


@pytest.mark.parametrize(
    ("version", "named"),
    [
        ("2.0.11", False),
        ("2.1.9+unknown", False),
        ("v2.2.7", False),
        ("2.3.0-rc.1", False),
        ("v2.3.0", True),
        ("v2.3.4", True),
        ("v2.4.0-beta.0", True),
    ],
)
def test_from_2_3_the_daemon_names_the_archives_own_index(version: str, named: bool) -> None:
    assert names_own_index(ContainerdVersion.parse(version)) is named


def test_an_unknown_version_sets_nothing_aside() -> None:
    assert names_own_index(None) is False


def test_the_own_index_is_set_aside_and_the_images_kept_in_order() -> None:
    names = SavedNames("import-x", index_named=True)
    assert names.take(PullProgress("Importing")) is True
    assert names.take(saved(f"import-x@{D1}", INDEX, D1)) is False
    assert names.take(saved("example.test/a:1", MANIFEST, D2)) is True
    assert names.take(saved(f"import-x@{D2}", MANIFEST, D2)) is True
    assert names.take(saved("example.test/a:1", MANIFEST, D2)) is True  # once in the names
    assert names.index == f"import-x@{D1}"
    assert names.names == ["example.test/a:1", f"import-x@{D2}"]


def test_before_2_3_an_unnamed_index_saved_first_is_an_image() -> None:
    # An archive whose one image is an unnamed multi-platform index: 2.2 saves it alone.
    names = SavedNames("import-x", index_named=False)
    assert names.take(saved(f"import-x@{D1}", INDEX, D1)) is True
    assert (names.index, names.names) == ("", [f"import-x@{D1}"])


@pytest.mark.parametrize(
    "first",
    [
        saved(f"other@{D1}", INDEX, D1),  # not the prefix's
        saved(f"import-x@{D2}", INDEX, D1),  # not its own digest
        saved(f"import-x@{D1}", MANIFEST, D1),  # not an index
        PullProgress("saved", f"import-x@{D1}"),  # no descriptor said
    ],
)
def test_only_the_first_step_naming_its_own_index_is_set_aside(first: PullProgress) -> None:
    names = SavedNames("import-x", index_named=True)
    assert names.take(first) is True
    # Only the first saved step can be the index's.
    assert names.take(saved(f"import-x@{D3}", INDEX, D3)) is True
    assert names.index == ""
    assert names.names == [first.name, f"import-x@{D3}"]


def test_a_lone_index_record_is_the_archives_image() -> None:
    # Were a 2.3 release to save no record of its own for the archive's index, an archive
    # whose one image is an unnamed index would save that image alone: it is kept.
    names = SavedNames("import-x", index_named=True)
    assert names.take(saved(f"import-x@{D1}", INDEX, D1)) is False
    assert names.take(PullProgress("Completed import")) is True
    assert (names.index, names.names) == ("", [f"import-x@{D1}"])
