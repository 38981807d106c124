"""containerd's filter language, as the stand-in's List calls read it.

A port of the scanner and parser of containerd's ``pkg/filters``, down to its error messages:

- filters   := selectors, any of which may match
- selectors := selector ("," selector)*      all must match
- selector  := fieldpath [("==" | "!=" | "~=") value]
- fieldpath := field ("." field)*,  field := quoted | [A-Za-z0-9_-]+

A record type takes part through an :data:`Adaptor`, which answers a field path with the
record's value there and whether the field is present.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from .._facts._golang import go_quote
from .._serve._refusals import invalid_argument

__all__ = ("Adaptor", "Filters", "Selector", "map_field", "matches", "parse_filters")

_EOF: Final = -1
_QUOTED: Final = -2
_VALUE: Final = -3
_FIELD: Final = -4
_SEPARATOR: Final = -5
_OPERATOR: Final = -6
_ILLEGAL: Final = -7

_Rune = str | int


class _ParseError(Exception):
    pass


def _is_field_rune(ch: _Rune) -> bool:
    return isinstance(ch, str) and (ch in "-_" or (ch.isascii() and ch.isalnum()))


def _is_value_rune(ch: _Rune) -> bool:
    return (
        isinstance(ch, str)
        and ch != ","
        and not ch.isspace()
        and (ch.isprintable() or ch.isalnum())
    )


def _digit_value(ch: _Rune) -> int:
    if isinstance(ch, str) and ch.isascii() and ch in "0123456789abcdefABCDEF":
        return int(ch, 16)
    return 16


class _Scanner:
    def __init__(self, text: str) -> None:
        self.input = text
        self.pos = 0
        self.ppos = 0
        self.value = False
        self.err = ""

    def error(self, message: str) -> None:
        if not self.err:
            self.err = message

    def next(self) -> _Rune:
        if self.pos >= len(self.input):
            return _EOF
        self.pos = self.ppos
        if self.ppos >= len(self.input):
            return _EOF
        ch = self.input[self.ppos]
        self.ppos += 1
        if ch == "\0":
            self.error("unexpected null")
            return _ILLEGAL
        return ch

    def peek(self) -> _Rune:
        pos, ppos = self.pos, self.ppos
        ch = self.next()
        self.pos, self.ppos = pos, ppos
        return ch

    def scan(self) -> tuple[int, _Rune, str]:
        ch = self.next()
        pos = self.pos
        while isinstance(ch, str):
            if ch in '/|"':
                ok = self._scan_quoted(ch)
                return pos, (_QUOTED if ok else _ILLEGAL), self.input[pos : self.ppos]
            if ch in ",.":
                self.value = False
                return pos, _SEPARATOR, self.input[pos : self.ppos]
            if ch in "=!~":
                while self.peek() in ("=", "!", "~"):
                    self.next()
                self.value = True
                return pos, _OPERATOR, self.input[pos : self.ppos]
            if ch.isspace():
                ch = self.next()
                pos = self.pos
                continue
            if self.value:
                while _is_value_rune(self.peek()):
                    self.next()
                self.value = False
                return pos, _VALUE, self.input[pos : self.ppos]
            if _is_field_rune(ch):
                while _is_field_rune(self.peek()):
                    self.next()
                return pos, _FIELD, self.input[pos : self.ppos]
            break
        return self.pos, ch, ""

    def _scan_quoted(self, quote: str) -> bool:
        illegal = False
        ch = self.next()
        while ch != quote:
            if ch == "\n" or isinstance(ch, int):
                self.error("quoted literal not terminated")
                return False
            if ch == "\\":
                ch, legal = self._scan_escape(quote)
                illegal = illegal or not legal
            else:
                ch = self.next()
        return not illegal

    def _scan_escape(self, quote: str) -> tuple[_Rune, bool]:
        ch = self.next()
        if isinstance(ch, str) and (ch in "abfnrtv\\" or ch == quote):
            return self.next(), True
        if isinstance(ch, str) and ch in "01234567":
            return self._scan_digits(ch, 8, 3)
        widths = {"x": 2, "u": 4, "U": 8}
        if isinstance(ch, str) and ch in widths:
            return self._scan_digits(self.next(), 16, widths[ch])
        self.error("illegal escape sequence")
        return ch, False

    def _scan_digits(self, ch: _Rune, base: int, count: int) -> tuple[_Rune, bool]:
        while count > 0 and _digit_value(ch) < base:
            ch = self.next()
            count -= 1
        if count > 0:
            self.error("illegal numeric escape sequence")
            return ch, False
        return ch, True


def _go_unquote(text: str) -> str:
    """Go's strconv.Unquote, plus containerd's ``/`` and ``|`` quotes (kept escapes)."""
    if len(text) < 2 or text[0] != text[-1] or text[0] not in "\"'/|":
        raise ValueError("invalid syntax")
    quote, body = text[0], text[1:-1]
    if "\n" in body:
        raise ValueError("invalid syntax")
    if quote in "/|":
        return body.replace("\\" + quote, quote)
    out: list[str] = []
    i = 0
    simple = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
    while i < len(body):
        ch = body[i]
        if ch == quote:
            raise ValueError("invalid syntax")
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        if i + 1 >= len(body):
            raise ValueError("invalid syntax")
        esc = body[i + 1]
        i += 2
        if esc in simple:
            out.append(simple[esc])
        elif esc in ("\\", quote):
            out.append(esc)
        elif esc in "01234567":
            digits = body[i - 1 : i + 2]
            if len(digits) < 3 or any(d not in "01234567" for d in digits):
                raise ValueError("invalid syntax")
            code = int(digits, 8)
            if code > 255:
                raise ValueError("invalid syntax")
            out.append(chr(code))
            i += 2
        elif esc in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[esc]
            digits = body[i : i + width]
            if len(digits) < width or any(_digit_value(d) >= 16 for d in digits):
                raise ValueError("invalid syntax")
            code = int(digits, 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise ValueError("invalid syntax")
            out.append(chr(code))
            i += width
        else:
            raise ValueError("invalid syntax")
    return "".join(out)


Adaptor = Callable[[tuple[str, ...]], tuple[str, bool]]
"""A record seen by field path: the value at ``path`` and whether the field is present."""


@dataclass(frozen=True)
class Selector:
    """One ``fieldpath [operator value]`` term; ``operator`` is "", "==", "!=" or "~="."""

    fieldpath: tuple[str, ...]
    operator: str
    value: str = ""

    def match(self, adaptor: Adaptor) -> bool:
        """Whether the record behind ``adaptor`` satisfies this term."""
        value, present = adaptor(self.fieldpath)
        if self.operator == "":
            return present
        if self.operator == "==":
            return present and value == self.value
        if self.operator == "!=":
            return value != self.value
        try:
            return re.search(self.value, value) is not None
        except re.error:
            return False


Filters = list[list[Selector]] | None
"""Parsed filters: alternatives of terms that must all match; None matches everything."""


class _Parser:
    def __init__(self, text: str) -> None:
        self.input = text
        self.scanner = _Scanner(text)

    def error(self, pos: int, message: str) -> _ParseError:
        text = self.input
        if pos < len(text):
            where = f"[{text[:pos]} >|{text[pos : pos + 1]}|< {text[pos + 1 :]}]"
        else:
            where = f"[{text}]"
        return _ParseError(f"parse error: {where}: {message}")

    def selectors(self) -> list[Selector]:
        found = [self.selector()]
        while True:
            ch = self.scanner.peek()
            if ch == ",":
                pos, tok, _ = self.scanner.scan()
                if tok != _SEPARATOR:
                    raise self.error(pos, "expected a separator")
                found.append(self.selector())
            elif ch == _EOF:
                return found
            else:
                shown = ch if isinstance(ch, str) else "\ufffd"
                raise self.error(self.scanner.ppos, f"unexpected input: {shown}")

    def selector(self) -> Selector:
        fieldpath = self.fieldpath()
        if self.scanner.peek() in (",", _SEPARATOR, _EOF):
            return Selector(fieldpath, "")
        operator = self.operator()
        return Selector(fieldpath, operator, self.value(operator == "~="))

    def fieldpath(self) -> tuple[str, ...]:
        fields = [self.field()]
        while self.scanner.peek() == ".":
            pos, tok, _ = self.scanner.scan()
            if tok != _SEPARATOR:
                raise self.error(pos, "expected a field separator (`.`)")
            fields.append(self.field())
        return tuple(fields)

    def field(self) -> str:
        pos, tok, text = self.scanner.scan()
        if tok == _FIELD:
            return text
        if tok == _QUOTED:
            return self.unquote(pos, text, alternatives=False)
        if tok == _ILLEGAL:
            raise self.error(pos, self.scanner.err)
        raise self.error(pos, "expected field or quoted")

    def operator(self) -> str:
        pos, tok, text = self.scanner.scan()
        if tok == _OPERATOR:
            if text in ("==", "!=", "~="):
                return text
            raise self.error(pos, f"unsupported operator {go_quote(text)}")
        if tok == _ILLEGAL:
            raise self.error(pos, self.scanner.err)
        raise self.error(pos, 'expected an operator ("=="|"!="|"~=")')

    def value(self, alternatives: bool) -> str:
        pos, tok, text = self.scanner.scan()
        if tok in (_VALUE, _FIELD):
            return text
        if tok == _QUOTED:
            return self.unquote(pos, text, alternatives=alternatives)
        if tok == _ILLEGAL:
            raise self.error(pos, self.scanner.err)
        raise self.error(pos, "expected value or quoted")

    def unquote(self, pos: int, text: str, *, alternatives: bool) -> str:
        if not alternatives and text[0] not in "'\"":
            raise self.error(pos, "invalid quote encountered")
        try:
            return _go_unquote(text)
        except ValueError as exc:
            raise self.error(pos, f"unquoting failed: {exc}") from None


def parse_filters(filters: Sequence[str]) -> Filters:
    """The alternatives of ``filters``; None matches everything. INVALID_ARGUMENT if bad."""
    if not filters:
        return None
    parsed: list[list[Selector]] = []
    for text in filters:
        if text == "":
            return None
        try:
            parsed.append(_Parser(text).selectors())
        except _ParseError as exc:
            # ParseAll and the stores each append the errdefs class.
            raise invalid_argument(f"filters: {exc}: invalid argument") from None
    return parsed


def matches(filters: Filters, adaptor: Adaptor) -> bool:
    """Whether the record behind ``adaptor`` passes ``filters``."""
    if filters is None:
        return True
    return any(all(s.match(adaptor) for s in selectors) for selectors in filters)


def map_field(rest: tuple[str, ...], mapping: Mapping[str, str]) -> tuple[str, bool]:
    """An adaptor's answer for a map field (labels), ``rest`` being the path below it."""
    if not mapping:
        return "", False
    key = ".".join(rest)
    return mapping.get(key, ""), key in mapping
