"""containerd's version numbers, as the daemon and its binaries report them."""

from __future__ import annotations

import itertools

import pytest

from sandboxclient import ContainerdVersion, ServerVersion


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("2.1.9+unknown", (2, 1, 9, "", "unknown")),  # Debian's build, no release flags
        ("v2.3.4", (2, 3, 4, "", "")),  # a release build
        ("2.1.9~ds1", (2, 1, 9, "", "ds1")),  # a packager's mark
        ("2.1.9~ds1-2", (2, 1, 9, "", "ds1-2")),
        ("v2.4.0-beta.0", (2, 4, 0, "beta.0", "")),
        ("2.3.4-rc.1+dirty", (2, 3, 4, "rc.1", "dirty")),
        (" 2.0.11 ", (2, 0, 11, "", "")),
    ],
)
def test_every_way_containerd_writes_its_version_is_read(
    text: str, fields: tuple[int, int, int, str, str]
) -> None:
    version = ContainerdVersion.parse(text)
    got = (version.major, version.minor, version.patch, version.prerelease, version.build)
    assert got == fields
    assert version.release == fields[:2]


@pytest.mark.parametrize(
    "text", ["", "2.3", "2", "latest", "2.3.x", "v", "2.03.1", "2.3.4-", "2.3.4 extra", "a" * 300]
)
def test_what_is_no_version_is_refused_by_name(text: str) -> None:
    with pytest.raises(ValueError, match="not a containerd version") as info:
        ContainerdVersion.parse(text)
    shown = repr(text) if len(text) <= 200 else repr(text[:200] + "...")
    assert shown in str(info.value)


def test_a_non_string_is_refused() -> None:
    with pytest.raises(ValueError, match="a containerd version is a string, not int"):
        ContainerdVersion.parse(239)  # type: ignore[arg-type]


def test_versions_compare_as_releases_whatever_the_prefix_or_build() -> None:
    parse = ContainerdVersion.parse
    assert parse("v2.3.4") == parse("2.3.4+unknown") == parse("2.3.4~ds1")
    ordered = [
        "2.0.11",
        "2.1.9+unknown",
        "v2.2.7",
        "2.3.0-beta.0",
        "2.3.0-beta.2",
        "2.3.0-beta.10",
        "2.3.0-rc.0",
        "2.3.0",
        "v2.3.4",
        "2.4.0-beta.0",
        "2.10.0",
    ]
    parsed = [parse(text) for text in ordered]
    assert sorted(reversed(parsed)) == parsed
    assert all(a < b for a, b in itertools.pairwise(parsed))
    assert parse("2.2.0").at_least(2, 2)
    assert not parse("2.2.0-rc.1").at_least(2, 2)
    assert parse("v2.3.4").at_least(2, 3, 1)
    assert not parse("2.1.9").at_least(2, 2)
    assert str(parse("v2.4.0-beta.0+abc")) == "2.4.0-beta.0"
    assert str(parse("2.1.9~ds1")) == "2.1.9"
    assert len({parse("v2.3.4"), parse("2.3.4+unknown")}) == 1


def test_the_servers_answer_is_parsed_on_demand() -> None:
    assert ServerVersion("v2.3.4", "abc").parsed == ContainerdVersion(2, 3, 4)
    with pytest.raises(ValueError, match="'nonsense'"):
        _ = ServerVersion("nonsense", "").parsed
