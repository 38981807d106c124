"""The listing a sandbox sends for ``files.list`` and ``files.stat`` is parsed strictly: any
byte of a name comes through whole, anything off the format is an InternalError."""

from __future__ import annotations

import pytest

from sandboxclient import FileType, InternalError
from sandboxclient._file_info import parse_entries


def test_names_with_newlines_and_other_bytes_come_through_whole() -> None:
    data = (
        b"81a4 5 1700000000\n/d/new\nline \xff\x01\0"
        b"a1ff 3 1700000001\n/d/link\0../x\ny\0"
        b"41ed 4096 0\n/d/sub\0"
    )
    entries = parse_entries(data, under="/d", limit=10)
    assert [e.name for e in entries] == ["new\nline \udcff\x01", "link", "sub"]
    assert [e.type for e in entries] == [FileType.FILE, FileType.SYMLINK, FileType.DIRECTORY]
    assert (entries[0].size, entries[0].mode) == (5, 0o644)
    assert entries[0].mtime.timestamp() == 1700000000
    assert entries[1].link_target == "../x\ny"
    assert entries[2].mode == 0o755


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"zz 5 1\n/d/a\0", "expected"),
        (b"81a4 5 1\n/d/a", "no NUL"),
        (b"81a4 5 1\n/elsewhere/a\0", "not under"),
        (b"81a4 5 1\n/d/..\0", "ends in"),
        (b"81a4 5 999999999999\n/d/a\0", "out of range"),
        (b"1a4 5 1\n/d/a\0", "no file type"),
        (b"81a4 -5 1\n/d/a\0", "expected"),
        (b"a1ff 1 1\n/d/l\0", "no NUL"),  # a link without its target
        (b"81a4 5 1\n\0", "empty path"),
        (b"81a4 5 1\n/d/a\0" * 3, "more than 2 entries"),
    ],
)
def test_a_malformed_listing_is_an_internal_error(data: bytes, words: str) -> None:
    with pytest.raises(InternalError, match=words):
        parse_entries(data, under="/d", limit=2)
