"""An in-process stand-in for containerd 2.1's sandbox Store, sandbox Controller and
Containers services, answering with the daemon's gRPC codes and messages."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self

from grpclib.const import Handler, Status
from grpclib.exceptions import GRPCError

from .._common import utcnow
from .._errdefs import already_exists, go_quote, invalid_argument, not_found
from .._pb import AnyPb, EmptyPb, SandboxPb, containers_pb, sandbox_pb
from .._server import UnixServer, bind_request, current_namespace
from .._validation import identifier_problem, label_problem
from ..sandboxer import ProcessSandboxer, SandboxController

__all__ = ("FakeContainerd",)

_SANDBOX_REPLACE: Final = ("labels", "extensions", "spec", "runtime")
_CONTAINER_REPLACE: Final = ("labels", "spec", "extensions", "image", "snapshotkey")
_LABEL_KEY_SHOWN: Final = 64


# --- containerd's filter syntax -------------------------------------------------------------
#
# A port of the scanner and parser of containerd's pkg/filters, down to its error messages:
#   filters   := selectors, any of which may match
#   selectors := selector ("," selector)*      all must match
#   selector  := fieldpath [("==" | "!=" | "~=") value]
#   fieldpath := field ("." field)*,  field := quoted | [A-Za-z0-9_-]+

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


@dataclass(frozen=True)
class _Selector:
    fieldpath: tuple[str, ...]
    operator: str  # "", "==", "!=" or "~="
    value: str = ""

    def match(self, adaptor: _Adaptor) -> bool:
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


_Adaptor = Callable[[tuple[str, ...]], tuple[str, bool]]


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

    def selectors(self) -> list[_Selector]:
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

    def selector(self) -> _Selector:
        fieldpath = self.fieldpath()
        if self.scanner.peek() in (",", _SEPARATOR, _EOF):
            return _Selector(fieldpath, "")
        operator = self.operator()
        return _Selector(fieldpath, operator, self.value(operator == "~="))

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


def _parse_filters(filters: Sequence[str]) -> list[list[_Selector]] | None:
    """The alternatives of ``filters``; None matches everything. INVALID_ARGUMENT if bad."""
    if not filters:
        return None
    parsed: list[list[_Selector]] = []
    for text in filters:
        if text == "":
            return None
        try:
            parsed.append(_Parser(text).selectors())
        except _ParseError as exc:
            # ParseAll and the stores each append the errdefs class.
            raise invalid_argument(f"filters: {exc}: invalid argument") from None
    return parsed


def _matches(filters: list[list[_Selector]] | None, adaptor: _Adaptor) -> bool:
    if filters is None:
        return True
    return any(all(s.match(adaptor) for s in selectors) for selectors in filters)


def _check_map(rest: tuple[str, ...], mapping: Mapping[str, str]) -> tuple[str, bool]:
    if not mapping:
        return "", False
    key = ".".join(rest)
    return mapping.get(key, ""), key in mapping


def _sandbox_adaptor(record: SandboxPb) -> _Adaptor:
    def field(path: tuple[str, ...]) -> tuple[str, bool]:
        if not path:
            return "", False
        if path[0] == "id":
            return record.sandbox_id, True
        if path[0] == "labels":
            return _check_map(path[1:], record.labels)
        return "", False

    return field


def _container_adaptor(record: containers_pb.Container) -> _Adaptor:
    def field(path: tuple[str, ...]) -> tuple[str, bool]:
        if not path:
            return "", False
        head = path[0]
        if head == "id":
            return record.id, bool(record.id)
        if head == "runtime":
            if len(path) > 1 and path[1] == "name":
                name = record.runtime.name if record.runtime is not None else ""
                return name, bool(name)
            return "", False
        if head == "image":
            return record.image, bool(record.image)
        if head == "labels":
            return _check_map(path[1:], record.labels)
        return "", False

    return field


# --- records --------------------------------------------------------------------------------


def _copy_sandbox(record: SandboxPb) -> SandboxPb:
    return SandboxPb.parse(bytes(record))


def _copy_container(record: containers_pb.Container) -> containers_pb.Container:
    return containers_pb.Container.parse(bytes(record))


def _write_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """What containerd's bolt store keeps of a label map: empty values are dropped, and a
    non-empty value under an empty key fails the write (UNKNOWN, as bolt's error is
    untyped)."""
    kept: dict[str, str] = {}
    for key, value in labels.items():
        if not value:
            continue
        if not key:
            raise _unknown(f"failed to set label {go_quote(key)}={go_quote(value)}: key required")
        kept[key] = value
    return kept


def _unknown(message: str) -> GRPCError:
    return GRPCError(Status.UNKNOWN, message)


def _prefixed(error: GRPCError, prefix: str) -> GRPCError:
    return GRPCError(error.status, f"{prefix}{error.message}")


@dataclass
class _Namespace:
    # None until the namespace's bucket is first written, as in containerd's bolt store:
    # some not-found messages differ before that.
    sandboxes: dict[str, SandboxPb] | None = None
    containers: dict[str, containers_pb.Container] | None = None


class _Records:
    """The stand-in's metadata store, per namespace."""

    def __init__(self) -> None:
        self.namespaces: dict[str, _Namespace] = {}
        self.crash_requests = 0

    def refuse_crash(self, message: str, status: Status = Status.INVALID_ARGUMENT) -> GRPCError:
        """Count a request that would crash containerd 2.1.9, and the error refusing it."""
        self.crash_requests += 1
        return GRPCError(status, message)

    def ns(self, namespace: str) -> _Namespace:
        return self.namespaces.setdefault(namespace, _Namespace())

    # sandbox store

    def sandbox_create(self, request: sandbox_pb.StoreCreateRequest) -> SandboxPb:
        namespace = current_namespace()
        sandbox = request.sandbox
        # containerd 2.1.9 dereferences these and dies (SIGSEGV): refuse them instead.
        if sandbox is None:
            raise self.refuse_crash("sandbox must be set")
        if sandbox.runtime is None:
            raise self.refuse_crash("sandbox.Runtime must be set")
        record = _copy_sandbox(sandbox)
        record.created_at = record.updated_at = utcnow()
        problem = identifier_problem(record.sandbox_id)
        if problem is not None:
            raise invalid_argument(f"failed to validate sandbox: invalid sandbox ID: {problem}")
        bucket = self.ns(namespace).sandboxes or {}
        if record.sandbox_id in bucket:
            raise already_exists(
                f"write error: sandbox bucket {go_quote(record.sandbox_id)} already exists"
            )
        try:
            record.labels = _write_labels(record.labels)
            if "" in record.extensions:
                raise _unknown("key required")
        except GRPCError as exc:
            raise _prefixed(exc, "write error: ") from None
        bucket[record.sandbox_id] = record
        self.ns(namespace).sandboxes = bucket
        return _copy_sandbox(record)

    def _sandbox_bucket(self, namespace: str) -> dict[str, SandboxPb]:
        bucket = self.ns(namespace).sandboxes
        if bucket is None:
            raise not_found("no sandbox buckets")
        return bucket

    def _sandbox(self, namespace: str, sandbox_id: str) -> SandboxPb:
        record = self._sandbox_bucket(namespace).get(sandbox_id)
        if record is None:
            raise not_found(f"bucket {go_quote(sandbox_id)} not found")
        return record

    def sandbox_get(self, request: sandbox_pb.StoreGetRequest) -> SandboxPb:
        return _copy_sandbox(self._sandbox(current_namespace(), request.sandbox_id))

    def sandbox_list(self, request: sandbox_pb.StoreListRequest) -> list[SandboxPb]:
        namespace = current_namespace()
        filters = _parse_filters(request.filters)
        bucket = self.ns(namespace).sandboxes or {}
        return [
            _copy_sandbox(bucket[k])
            for k in sorted(bucket)
            if _matches(filters, _sandbox_adaptor(bucket[k]))
        ]

    def sandbox_delete(self, request: sandbox_pb.StoreDeleteRequest) -> None:
        bucket = self._sandbox_bucket(current_namespace())
        if bucket.pop(request.sandbox_id, None) is None:
            raise not_found(f"failed to delete sandbox {go_quote(request.sandbox_id)}")

    def sandbox_update(self, request: sandbox_pb.StoreUpdateRequest) -> SandboxPb:
        namespace = current_namespace()
        new = request.sandbox
        if new is None:
            raise self.refuse_crash("sandbox must be set")
        if new.runtime is None:
            raise self.refuse_crash("sandbox.Runtime must be set")
        stored = self._sandbox(namespace, new.sandbox_id)
        updated = _copy_sandbox(stored)
        fields = list(request.fields)
        if not fields:
            fields = list(_SANDBOX_REPLACE)
            current_runtime = stored.runtime.name if stored.runtime is not None else ""
            if current_runtime != new.runtime.name:
                raise invalid_argument("sandbox.Runtime.Name field is immutable")
        for path in fields:
            if path.startswith("labels."):
                key = path.removeprefix("labels.")
                updated.labels[key] = new.labels.get(key, "")
            elif path.startswith("extensions."):
                key = path.removeprefix("extensions.")
                updated.extensions[key] = new.extensions[key] if key in new.extensions else AnyPb()
            elif path == "labels":
                updated.labels = dict(new.labels)
            elif path == "extensions":
                updated.extensions = dict(new.extensions)
            elif path == "runtime":
                updated.runtime = new.runtime
            elif path == "spec":
                updated.spec = new.spec
            else:
                raise invalid_argument(
                    f"cannot update {go_quote(path)} field on sandbox {go_quote(new.sandbox_id)}"
                )
        updated.updated_at = utcnow()
        updated.labels = _write_labels(updated.labels)
        if "" in updated.extensions:
            raise _unknown("key required")
        # The bolt record is rewritten in place: extensions only ever gain keys, and an unset
        # spec or runtime option leaves the stored one. The answer shows what was asked for.
        kept = _copy_sandbox(updated)
        kept.extensions = {**stored.extensions, **updated.extensions}
        if kept.spec is None:
            kept.spec = stored.spec
        if kept.runtime is not None and kept.runtime.options is None and stored.runtime is not None:
            kept.runtime.options = stored.runtime.options
        self._sandbox_bucket(namespace)[new.sandbox_id] = kept
        return updated

    # containers store

    def container_create(
        self, request: containers_pb.CreateContainerRequest
    ) -> containers_pb.Container:
        namespace = current_namespace()
        if request.container is None:
            raise self.refuse_crash("container must be set")
        record = _copy_container(request.container)
        _validate_container(record, "create container failed validation: ")
        bucket = self.ns(namespace).containers or {}
        if record.id in bucket:
            raise already_exists(f"container {go_quote(record.id)}")
        record.created_at = record.updated_at = utcnow()
        try:
            record.labels = _write_labels(record.labels)
        except GRPCError as exc:
            raise _prefixed(exc, f"failed to write container {go_quote(record.id)}: ") from None
        bucket[record.id] = record
        self.ns(namespace).containers = bucket
        return _copy_container(record)

    def container_get(self, request: containers_pb.GetContainerRequest) -> containers_pb.Container:
        namespace = current_namespace()
        record = (self.ns(namespace).containers or {}).get(request.id)
        if record is None:
            raise not_found(f"container {go_quote(request.id)} in namespace {go_quote(namespace)}")
        return _copy_container(record)

    def container_list(
        self, request: containers_pb.ListContainersRequest
    ) -> list[containers_pb.Container]:
        namespace = current_namespace()
        filters = _parse_filters(request.filters)
        bucket = self.ns(namespace).containers or {}
        return [
            _copy_container(bucket[k])
            for k in sorted(bucket)
            if _matches(filters, _container_adaptor(bucket[k]))
        ]

    def container_update(
        self, request: containers_pb.UpdateContainerRequest
    ) -> containers_pb.Container:
        new = request.container
        if new is None:
            raise self.refuse_crash("container must be set")
        if not new.id:
            raise GRPCError(Status.INVALID_ARGUMENT, "Container.ID required")
        namespace = current_namespace()
        bucket = self.ns(namespace).containers
        if bucket is None:
            raise not_found(
                f"cannot update container {go_quote(new.id)} in namespace {go_quote(namespace)}"
            )
        stored = bucket.get(new.id)
        if stored is None:
            raise not_found(f"container {go_quote(new.id)}")
        updated = _copy_container(stored)
        paths = list(request.update_mask.paths) if request.update_mask is not None else []
        if not paths:
            paths = list(_CONTAINER_REPLACE)
            if stored.snapshotter != new.snapshotter:
                raise invalid_argument("container.Snapshotter field is immutable")
            old_name = stored.runtime.name if stored.runtime is not None else ""
            new_name = new.runtime.name if new.runtime is not None else ""
            if old_name != new_name:
                raise invalid_argument("container.Runtime.Name field is immutable")
        for path in paths:
            if path.startswith("labels."):
                key = path.removeprefix("labels.")
                updated.labels[key] = new.labels.get(key, "")
            elif path.startswith("extensions."):
                key = path.removeprefix("extensions.")
                updated.extensions[key] = new.extensions[key] if key in new.extensions else AnyPb()
            elif path == "labels":
                updated.labels = dict(new.labels)
            elif path == "spec":
                updated.spec = new.spec
            elif path == "extensions":
                updated.extensions = dict(new.extensions)
            elif path == "image":
                updated.image = new.image
            elif path == "snapshotkey":
                updated.snapshot_key = new.snapshot_key
            else:
                raise invalid_argument(
                    f"cannot update {go_quote(path)} field on {go_quote(new.id)}"
                )
        _validate_container(updated, "update failed validation: ")
        updated.updated_at = utcnow()
        try:
            updated.labels = _write_labels(updated.labels)
        except GRPCError as exc:
            raise _prefixed(exc, f"failed to write container {go_quote(new.id)}: ") from None
        kept = _copy_container(updated)
        kept.extensions = {**stored.extensions, **updated.extensions}
        if kept.spec is None:
            kept.spec = stored.spec
        bucket[new.id] = kept
        return updated

    def container_delete(self, request: containers_pb.DeleteContainerRequest) -> None:
        namespace = current_namespace()
        bucket = self.ns(namespace).containers
        if bucket is None:
            raise not_found(
                f"cannot delete container {go_quote(request.id)} in namespace {go_quote(namespace)}"
            )
        if bucket.pop(request.id, None) is None:
            raise not_found(f"container {request.id}")


def _validate_container(record: containers_pb.Container, prefix: str) -> None:
    problem = identifier_problem(record.id)
    if problem is not None:
        raise invalid_argument(f"{prefix}container.ID: {problem}")
    if "" in record.extensions:
        raise invalid_argument(f"{prefix}container.Extension keys must not be zero-length")
    for key, value in record.labels.items():
        problem = label_problem(key, value)
        if problem is not None:
            shown = key.encode()[:_LABEL_KEY_SHOWN].decode(errors="replace")
            raise invalid_argument(f"{prefix}containers.Labels: {problem}, key: {shown}")
    if record.runtime is None or not record.runtime.name:
        raise invalid_argument(f"{prefix}container.Runtime.Name must be set")
    # containerd also checks for a spec, but its conversion from the request hands the
    # store a typed nil that passes the check: a container without a spec is accepted.
    if record.snapshot_key and not record.snapshotter:
        raise invalid_argument(
            f"{prefix}container.Snapshotter must be set if container.SnapshotKey is set"
        )


# --- services -------------------------------------------------------------------------------


class _StoreService(sandbox_pb.StoreBase):
    def __init__(self, fake: FakeContainerd) -> None:
        self._fake = fake

    def __mapping__(self) -> dict[str, Handler]:
        return self._fake._bind(super().__mapping__())

    async def create(
        self, message: sandbox_pb.StoreCreateRequest
    ) -> sandbox_pb.StoreCreateResponse:
        return sandbox_pb.StoreCreateResponse(sandbox=self._fake._records.sandbox_create(message))

    async def update(
        self, message: sandbox_pb.StoreUpdateRequest
    ) -> sandbox_pb.StoreUpdateResponse:
        return sandbox_pb.StoreUpdateResponse(sandbox=self._fake._records.sandbox_update(message))

    async def delete(
        self, message: sandbox_pb.StoreDeleteRequest
    ) -> sandbox_pb.StoreDeleteResponse:
        self._fake._records.sandbox_delete(message)
        return sandbox_pb.StoreDeleteResponse()

    async def list(self, message: sandbox_pb.StoreListRequest) -> sandbox_pb.StoreListResponse:
        return sandbox_pb.StoreListResponse(list=self._fake._records.sandbox_list(message))

    async def get(self, message: sandbox_pb.StoreGetRequest) -> sandbox_pb.StoreGetResponse:
        return sandbox_pb.StoreGetResponse(sandbox=self._fake._records.sandbox_get(message))


class _ControllerRouter(sandbox_pb.ControllerBase):
    """containerd's controller service: pick the controller by name, then forward."""

    def __init__(self, fake: FakeContainerd) -> None:
        self._fake = fake

    def __mapping__(self) -> dict[str, Handler]:
        return self._fake._bind(super().__mapping__())

    def _pick(self, sandboxer: str) -> SandboxController:
        if not sandboxer:
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                "invalid argument: sandbox controller name can not be empty",
            )
        if sandboxer not in self._fake._sandboxers:
            raise GRPCError(
                Status.NOT_FOUND, f"not found: failed to get sandbox controller by {sandboxer}"
            )
        return self._fake._controller

    def _route(self, sandboxer: str) -> SandboxController:
        controller = self._pick(sandboxer)
        # The controller behind the name checks the namespace, as containerd's own do.
        current_namespace()
        return controller

    async def create(
        self, message: sandbox_pb.ControllerCreateRequest
    ) -> sandbox_pb.ControllerCreateResponse:
        controller = self._pick(message.sandboxer)
        # containerd 2.1.9 dies on these (SIGSEGV): refuse them instead.
        if message.sandbox is None:
            raise self._fake._records.refuse_crash("sandbox must be set")
        if message.sandbox.runtime is None:
            raise self._fake._records.refuse_crash("sandbox.Runtime must be set")
        current_namespace()
        return await controller.create(message)

    async def start(
        self, message: sandbox_pb.ControllerStartRequest
    ) -> sandbox_pb.ControllerStartResponse:
        return await self._route(message.sandboxer).start(message)

    async def platform(
        self, message: sandbox_pb.ControllerPlatformRequest
    ) -> sandbox_pb.ControllerPlatformResponse:
        # containerd 2.1's controller service has no Platform method at all.
        raise GRPCError(Status.UNIMPLEMENTED, "method Platform not implemented")

    async def stop(
        self, message: sandbox_pb.ControllerStopRequest
    ) -> sandbox_pb.ControllerStopResponse:
        return await self._route(message.sandboxer).stop(message)

    async def wait(
        self, message: sandbox_pb.ControllerWaitRequest
    ) -> sandbox_pb.ControllerWaitResponse:
        return await self._route(message.sandboxer).wait(message)

    async def status(
        self, message: sandbox_pb.ControllerStatusRequest
    ) -> sandbox_pb.ControllerStatusResponse:
        return await self._route(message.sandboxer).status(message)

    async def shutdown(
        self, message: sandbox_pb.ControllerShutdownRequest
    ) -> sandbox_pb.ControllerShutdownResponse:
        return await self._route(message.sandboxer).shutdown(message)

    async def metrics(
        self, message: sandbox_pb.ControllerMetricsRequest
    ) -> sandbox_pb.ControllerMetricsResponse:
        return await self._route(message.sandboxer).metrics(message)

    async def update(
        self, message: sandbox_pb.ControllerUpdateRequest
    ) -> sandbox_pb.ControllerUpdateResponse:
        # containerd looks the controller up by the request's sandboxer as for every other
        # call (it only leaves the name out when it forwards Update to a proxy plugin), so an
        # Update without one is refused here too.
        controller = self._pick(message.sandboxer)
        if message.sandbox is None:
            raise GRPCError(Status.UNKNOWN, "sandbox can not be nil")
        if message.sandbox.runtime is None:
            # containerd 2.1.9 dereferences it and dies: refuse it instead.
            raise self._fake._records.refuse_crash("sandbox.Runtime must be set")
        current_namespace()
        return await controller.update(message)


class _ContainersService(containers_pb.ContainersBase):
    def __init__(self, fake: FakeContainerd) -> None:
        self._fake = fake

    def __mapping__(self) -> dict[str, Handler]:
        return self._fake._bind(super().__mapping__())

    async def get(
        self, message: containers_pb.GetContainerRequest
    ) -> containers_pb.GetContainerResponse:
        return containers_pb.GetContainerResponse(
            container=self._fake._records.container_get(message)
        )

    async def list(
        self, message: containers_pb.ListContainersRequest
    ) -> containers_pb.ListContainersResponse:
        return containers_pb.ListContainersResponse(
            containers=self._fake._records.container_list(message)
        )

    async def list_stream(
        self, message: containers_pb.ListContainersRequest
    ) -> AsyncIterator[containers_pb.ListContainerMessage]:
        for record in self._fake._records.container_list(message):
            yield containers_pb.ListContainerMessage(container=record)

    async def create(
        self, message: containers_pb.CreateContainerRequest
    ) -> containers_pb.CreateContainerResponse:
        return containers_pb.CreateContainerResponse(
            container=self._fake._records.container_create(message)
        )

    async def update(
        self, message: containers_pb.UpdateContainerRequest
    ) -> containers_pb.UpdateContainerResponse:
        return containers_pb.UpdateContainerResponse(
            container=self._fake._records.container_update(message)
        )

    async def delete(self, message: containers_pb.DeleteContainerRequest) -> EmptyPb:
        self._fake._records.container_delete(message)
        return EmptyPb()


# --- the stand-in ---------------------------------------------------------------------------


class FakeContainerd:
    """containerd's sandbox Store, sandbox Controller and Containers services, in process.

    Serves them with grpclib on a unix socket (:attr:`address`) in a fresh temporary folder,
    or at ``path``. Records live in memory, per namespace, and are validated and refused with
    the gRPC codes and messages containerd 2.1.9 answers. The requests that crash that
    daemon are refused with INVALID_ARGUMENT instead. Controller calls are forwarded to
    ``controller`` when their ``sandboxer`` is one of ``sandboxers``: by default a
    :class:`~sandboxclient.sandboxer.ProcessSandboxer` that runs each sandbox as a child
    process and is closed with the stand-in. Platform answers UNIMPLEMENTED, as containerd
    2.1's controller service does.

    Use it as an async context manager, or call :meth:`start` and :meth:`aclose`.
    """

    def __init__(
        self,
        *,
        sandboxers: Iterable[str] = ("shim",),
        controller: SandboxController | None = None,
        path: str | None = None,
    ) -> None:
        self._sandboxers = frozenset(sandboxers)
        self._owns_controller = controller is None
        self._controller: SandboxController = (
            controller if controller is not None else ProcessSandboxer()
        )
        self._path = path
        self._tmpdir: str | None = None
        self._records = _Records()
        self._server: UnixServer | None = None
        self._bound = False
        self._closed = False
        self._stalled = False
        self._unstalled = asyncio.Event()
        self._unstalled.set()
        self._arrivals: collections.Counter[str] = collections.Counter()
        self._arrived = asyncio.Condition()

    @property
    def address(self) -> str:
        """The path of the unix socket the stand-in listens on."""
        if self._path is None:
            raise RuntimeError("FakeContainerd is not started")
        return self._path

    @property
    def controller(self) -> SandboxController:
        """The controller Controller calls are forwarded to."""
        return self._controller

    @property
    def sandboxers(self) -> frozenset[str]:
        """The sandboxer names the controller answers to."""
        return self._sandboxers

    @property
    def stall(self) -> bool:
        """While True, every call waits before being handled (to test deadlines).

        Setting it back to False lets the waiting calls through.
        """
        return self._stalled

    @stall.setter
    def stall(self, value: bool) -> None:
        self._stalled = bool(value)
        if self._stalled:
            self._unstalled.clear()
        else:
            self._unstalled.set()

    @property
    def crash_requests(self) -> int:
        """How many requests it refused that would have crashed containerd 2.1.9.

        A client must never send one; tests can assert this stays 0.
        """
        return self._records.crash_requests

    def sandbox_ids(self, namespace: str) -> list[str]:
        """The ids of the sandbox store's records in ``namespace``, sorted."""
        return sorted(self._records.ns(namespace).sandboxes or {})

    def container_ids(self, namespace: str) -> list[str]:
        """The ids of the container records in ``namespace``, sorted."""
        return sorted(self._records.ns(namespace).containers or {})

    def call_count(self, method: str) -> int:
        """How many calls of ``method`` have arrived so far (stalled ones included).

        ``method`` is the route's tail, ``"Controller/Wait"`` or ``"Store/Get"``, or the whole
        route (``"/containerd.services.sandbox.v1.Controller/Wait"``).
        """
        return sum(n for route, n in self._arrivals.items() if _route_matches(route, method))

    async def wait_for_call(self, method: str, count: int = 1) -> None:
        """Return once ``count`` calls of ``method`` (see :meth:`call_count`) have arrived.

        A call has arrived when the server has its request, before it is handled: the
        signal a test needs to act while the call is in flight.
        """
        async with self._arrived:
            await self._arrived.wait_for(lambda: self.call_count(method) >= count)

    async def _arrive(self, route: str) -> None:
        async with self._arrived:
            self._arrivals[route] += 1
            self._arrived.notify_all()
        await self._unstalled.wait()

    def _bind(self, mapping: Mapping[str, Handler]) -> dict[str, Handler]:
        return {
            name: bind_request(
                handler, check_namespace=False, gate=functools.partial(self._arrive, name)
            )
            for name, handler in mapping.items()
        }

    async def start(self) -> Self:
        """Start serving; returns the stand-in itself."""
        if self._closed:
            raise RuntimeError("FakeContainerd is closed")
        if self._server is not None:
            raise RuntimeError("FakeContainerd is already started")
        if self._path is None:
            self._tmpdir = tempfile.mkdtemp(prefix="fake-containerd-")
            self._path = os.path.join(self._tmpdir, "containerd.sock")
        server = UnixServer(
            [_StoreService(self), _ControllerRouter(self), _ContainersService(self)]
        )
        try:
            await server.start_unix(self._path)
        except BaseException:
            await self._cleanup()
            raise
        self._bound = True
        self._server = server
        return self

    async def aclose(self) -> None:
        """Stop serving, cancel the calls in progress and close an owned controller.

        Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        self._unstalled.set()
        server, self._server = self._server, None
        try:
            if server is not None:
                await server.shutdown()
        finally:
            await self._cleanup()

    async def _cleanup(self) -> None:
        try:
            if self._owns_controller:
                await self._controller.aclose()
        finally:
            if self._path is not None and self._bound:
                self._bound = False
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._path)
            if self._tmpdir is not None:
                shutil.rmtree(self._tmpdir, ignore_errors=True)
                self._tmpdir = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _route_matches(route: str, method: str) -> bool:
    return route == method or route.endswith("." + method)
