"""containerd's identifier and label rules, and Go's quoting, as the daemon applies them.

The expected strings are what containerd 2.1.9 answered for these values (see
``test_error_table`` and ``test_properties``, which compare with the daemon itself).
"""

from __future__ import annotations

import pytest

from sandboxclient._facts._golang import go_quote
from sandboxclient._facts._validation import identifier_problem, label_problem, label_size_problem
from tests.support.constants import NAMESPACE_PATTERN


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("plain", '"plain"'),
        ('a"b', '"a\\"b"'),
        ("a\\b", '"a\\\\b"'),
        ("a\x00b\x7f", '"a\\x00b\\x7f"'),
        ("a\nb\tc\a\b\f\r\v", '"a\\nb\\tc\\a\\b\\f\\r\\v"'),
        ("a\u0085\u200b\u00a0", '"a\\u0085\\u200b\\u00a0"'),
        ("é! 😀", '"é! 😀"'),
        ("a\U000e0001", '"a\\U000e0001"'),
    ],
)
def test_go_quote_escapes_as_go_does(value: str, quoted: str) -> None:
    assert go_quote(value) == quoted


def test_identifiers() -> None:
    assert identifier_problem("a.b-c_d9") is None
    assert identifier_problem("a" * 76) is None
    assert identifier_problem("") == "identifier must not be empty"
    # Go's "$" does not match before a final newline, Python's does unless told otherwise.
    assert identifier_problem("abc\n") == f'identifier "abc\\n" must match {NAMESPACE_PATTERN}'
    assert identifier_problem('a"b') == f'identifier "a\\"b" must match {NAMESPACE_PATTERN}'
    # The length is counted in bytes, as Go's len() counts.
    assert identifier_problem("a" * 77) == (
        f'identifier "{"a" * 77}" greater than maximum length (76 characters)'
    )
    assert identifier_problem("é" * 39) == (
        f'identifier "{"é" * 39}" greater than maximum length (76 characters)'
    )


def test_labels() -> None:
    assert label_size_problem("k", "v" * 4095) is None
    assert label_size_problem("k", "v" * 4096) == (
        "label key and value length (4097 bytes) greater than maximum size (4096 bytes)"
    )
    assert label_size_problem("", "v") is None  # the daemon fails that one at the write
    assert label_problem("", "v") == "label key must not be empty"  # the client refuses it
