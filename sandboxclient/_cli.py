"""``sandboxctl``: a command line for containerd's sandboxes.

Each command is a small coroutine that takes a :class:`~sandboxclient.Client` and returns an
:class:`Outcome`: the JSON document for ``--json``, the human-readable text otherwise, and the
exit code. :func:`run` parses the command line, builds the Client, runs the command and turns
expected failures into one ``sandboxctl: error: ...`` line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn

from ._client import DEFAULT_ADDRESS, DEFAULT_TIMEOUT, Client
from ._models import AnyValue, SandboxInfo, SandboxStatus, StartResult
from ._sandbox import Sandbox
from .errors import ContainerdError

__all__ = (
    "ADDRESS_ENV",
    "DEFAULT_RUNTIME",
    "NAMESPACE_ENV",
    "PROG",
    "LabelEdit",
    "Outcome",
    "build_parser",
    "cmd_info",
    "cmd_labels",
    "cmd_ls",
    "cmd_rm",
    "cmd_run",
    "cmd_start",
    "cmd_status",
    "cmd_stop",
    "cmd_wait",
    "parse_label",
    "parse_label_edit",
    "run",
    "serve_fake",
)

PROG = "sandboxctl"
ADDRESS_ENV = "CONTAINERD_ADDRESS"
NAMESPACE_ENV = "CONTAINERD_NAMESPACE"
DEFAULT_NAMESPACE = "default"
DEFAULT_SANDBOXER = "shim"
DEFAULT_RUNTIME = "io.containerd.runc.v2"
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

LabelEdit = tuple[str, str | None]
"""One change to a label map: ``(key, value)`` sets it, ``(key, None)`` removes it."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a command produced.

    ``data`` is printed as one JSON document under ``--json``, ``text`` otherwise; each of
    ``errors`` becomes a ``sandboxctl: error:`` line on stderr; ``code`` is the exit status.
    """

    data: Any
    text: str
    code: int = 0
    errors: tuple[str, ...] = field(default=())


# -- argument types ---------------------------------------------------------------------------


def parse_label(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` as a pair; the value may be empty, the key may not."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"invalid label {text!r}: expected KEY=VALUE")
    return key, value


def parse_label_edit(text: str) -> LabelEdit:
    """``KEY=VALUE`` (set) or ``KEY-`` (remove) as a :data:`LabelEdit`."""
    if "=" in text:
        return parse_label(text)
    if text.endswith("-") and len(text) > 1:
        return text[:-1], None
    raise argparse.ArgumentTypeError(
        f"invalid label edit {text!r}: expected KEY=VALUE to set or KEY- to remove"
    )


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _grace(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be zero or more seconds, got {text!r}")
    return value


# -- rendering --------------------------------------------------------------------------------


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


def _when(when: datetime | None) -> str:
    if when is None:
        return "-"
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _any_json(value: AnyValue | None) -> dict[str, str] | None:
    if value is None:
        return None
    return {"type_url": value.type_url, "value": base64.b64encode(value.value).decode()}


def _labels_text(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns padded to their widest cell, separated by three spaces."""
    all_rows = [list(headers), *(list(r) for r in rows)]
    widths = [max(len(row[i]) for row in all_rows) for i in range(len(headers))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in all_rows
    )


def _fields(pairs: Iterable[tuple[str, str]]) -> str:
    """``NAME:  value`` lines with the values aligned."""
    items = list(pairs)
    width = max(len(name) for name, _ in items) + 1
    return "\n".join(f"{name + ':':<{width}}  {value}" for name, value in items)


def _info_json(info: SandboxInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "sandboxer": info.sandboxer,
        "runtime": {"name": info.runtime.name, "options": _any_json(info.runtime.options)},
        "labels": dict(info.labels),
        "created_at": _iso(info.created_at),
        "updated_at": _iso(info.updated_at),
        "spec": None if info.spec is None else json.loads(json.dumps(dict(info.spec))),
        "spec_any": _any_json(info.spec_any) if info.spec is None else None,
        "extensions": {k: _any_json(v) for k, v in info.extensions.items()},
    }


def _start_json(sandbox_id: str, started: StartResult) -> dict[str, Any]:
    return {
        "id": sandbox_id,
        "pid": started.pid,
        "address": started.address,
        "version": started.version,
        "created_at": _iso(started.created_at),
        "labels": dict(started.labels),
    }


def _status_json(status: SandboxStatus) -> dict[str, Any]:
    return {
        "id": status.id,
        "state": status.state,
        "pid": status.pid,
        "created_at": _iso(status.created_at),
        "exited_at": _iso(status.exited_at),
        "address": status.address,
        "version": status.version,
        "info": dict(status.info),
        "extra": _any_json(status.extra),
    }


def _exit_code(code: int) -> int:
    """A sandbox's exit code as a process exit status (0-255)."""
    return code if 0 <= code <= 255 else 255


# -- commands ---------------------------------------------------------------------------------


async def cmd_ls(client: Client, filters: Sequence[str] = ()) -> Outcome:
    """List the sandboxes matching any of ``filters`` (containerd filter syntax), or all."""
    infos = sorted(await client.list_sandboxes(*filters), key=lambda i: i.id)
    rows = [(i.id, i.sandboxer, _when(i.created_at), _labels_text(i.labels)) for i in infos]
    return Outcome(
        [_info_json(i) for i in infos],
        _table(("ID", "SANDBOXER", "CREATED", "LABELS"), rows),
    )


async def cmd_info(client: Client, sandbox_id: str) -> Outcome:
    """Show a sandbox's store record."""
    info = await client.get_sandbox(sandbox_id)
    spec = "-" if info.spec is None else json.dumps(dict(info.spec), separators=(",", ":"))
    if info.spec is None and info.spec_any is not None:
        spec = f"{info.spec_any.type_url} ({len(info.spec_any.value)} bytes)"
    extensions = ", ".join(
        f"{k} ({v.type_url}, {len(v.value)} bytes)" for k, v in sorted(info.extensions.items())
    )
    text = _fields(
        [
            ("ID", info.id),
            ("SANDBOXER", info.sandboxer),
            ("RUNTIME", info.runtime.name or "-"),
            ("CREATED", _when(info.created_at)),
            ("UPDATED", _when(info.updated_at)),
            ("LABELS", _labels_text(info.labels)),
            ("SPEC", spec),
            ("EXTENSIONS", extensions or "-"),
        ]
    )
    return Outcome(_info_json(info), text)


async def cmd_run(
    client: Client,
    sandbox_id: str,
    command: Sequence[str],
    *,
    labels: Mapping[str, str] | None = None,
    runtime: str = DEFAULT_RUNTIME,
    wait: bool = False,
) -> Outcome:
    """Create a sandbox that runs ``command`` and start it; with ``wait``, wait for its exit.

    If the sandbox cannot be started it is shut down again, so the id can be reused.
    """
    if not command:
        raise ValueError("a command to run is required")
    sb = await client.new_sandbox(
        sandbox_id,
        labels=dict(labels or {}),
        runtime=runtime,
        spec={"process": {"args": list(command)}},
    )
    try:
        started = await sb.start()
    except ContainerdError:
        with contextlib.suppress(ContainerdError):
            await sb.shutdown()
        raise
    data = _start_json(sb.id, started)
    if not wait:
        return Outcome(data, f"started {sb.id} (pid {started.pid})")
    waited = await _wait_exit(sb)
    data.update(waited.data)
    return Outcome(data, waited.text, waited.code)


async def cmd_start(client: Client, sandbox_id: str) -> Outcome:
    """Start a created sandbox."""
    sb = await client.load_sandbox(sandbox_id)
    started = await sb.start()
    return Outcome(_start_json(sb.id, started), f"started {sb.id} (pid {started.pid})")


async def cmd_stop(client: Client, sandbox_id: str, grace: float | None = None) -> Outcome:
    """Stop a sandbox; ``grace`` is how long its controller waits before killing it."""
    sb = await client.load_sandbox(sandbox_id)
    await sb.stop(timeout=grace)
    return Outcome({"id": sb.id, "stopped": True}, f"stopped {sb.id}")


async def _wait_exit(sb: Sandbox) -> Outcome:
    channel = await sb.wait()
    try:
        status = await channel
    finally:
        channel.close()
    if status.error is not None:
        raise status.error
    data = {"id": sb.id, "exit_code": status.code, "exited_at": _iso(status.exited_at)}
    return Outcome(data, str(status.code), _exit_code(status.code))


async def cmd_wait(client: Client, sandbox_id: str) -> Outcome:
    """Wait for a sandbox to exit; the outcome's code is the sandbox's exit code."""
    return await _wait_exit(await client.load_sandbox(sandbox_id))


async def cmd_rm(client: Client, sandbox_ids: Sequence[str]) -> Outcome:
    """Shut down and delete each sandbox; those that fail are reported and the rest go on."""
    removed: list[str] = []
    errors: list[str] = []
    for sandbox_id in sandbox_ids:
        try:
            sb = await client.load_sandbox(sandbox_id)
            await sb.shutdown()
        except ContainerdError as exc:
            errors.append(f"{sandbox_id}: {exc}")
        else:
            removed.append(sandbox_id)
    return Outcome(
        {"removed": removed}, "\n".join(removed), EXIT_ERROR if errors else 0, tuple(errors)
    )


async def cmd_labels(client: Client, sandbox_id: str, edits: Sequence[LabelEdit] = ()) -> Outcome:
    """Show a sandbox's labels; with ``edits``, apply them first (in order)."""
    info = await client.get_sandbox(sandbox_id)
    labels = dict(info.labels)
    if edits:
        for key, value in edits:
            if value is None:
                labels.pop(key, None)
            else:
                labels[key] = value
        info = await Sandbox(client, info).update(labels=labels)
        labels = dict(info.labels)
    return Outcome(labels, _table(("KEY", "VALUE"), sorted(labels.items())))


async def cmd_status(client: Client, sandbox_id: str) -> Outcome:
    """Show a sandbox's runtime state as its controller reports it."""
    sb = await client.load_sandbox(sandbox_id)
    status = await sb.status()
    pairs = [
        ("ID", status.id or sb.id),
        ("STATE", status.state or "-"),
        ("PID", str(status.pid) if status.pid else "-"),
        ("CREATED", _when(status.created_at)),
        ("EXITED", _when(status.exited_at)),
    ]
    if status.address:
        pairs.append(("ADDRESS", status.address))
    pairs.extend((f"INFO {k}", v) for k, v in sorted(status.info.items()))
    return Outcome(_status_json(status), _fields(pairs))


async def serve_fake(
    socket_path: str | None = None,
    sandboxers: Sequence[str] = (DEFAULT_SANDBOXER,),
    *,
    as_json: bool = False,
    stop: asyncio.Event | None = None,
) -> int:
    """Serve the embedded stand-in until SIGINT or SIGTERM (or ``stop`` is set).

    The socket path goes to stdout first (alone, or as ``{"address": ...}`` with ``as_json``),
    so a script can read it and point ``CONTAINERD_ADDRESS`` at it.
    """
    from .testing import FakeContainerd

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    async with FakeContainerd(sandboxers=tuple(sandboxers), path=socket_path) as fake:
        for signum in signals:
            loop.add_signal_handler(signum, stop.set)
        try:
            if as_json:
                print(json.dumps({"address": fake.address, "sandboxers": list(sandboxers)}))
            else:
                print(fake.address)
                print(
                    f"{PROG}: serving the stand-in containerd (sandboxers: "
                    f"{', '.join(sandboxers)}); Ctrl-C to stop",
                    file=sys.stderr,
                )
            sys.stdout.flush()
            await stop.wait()
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
    return 0


# -- parsing ----------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def _add_global_options(
    parser: argparse.ArgumentParser, *, on_command: bool, with_timeout: bool = True
) -> None:
    """The options every command takes.

    On the top-level parser they carry the defaults; on a command they default to SUPPRESS,
    so ``sandboxctl ls --json`` and ``sandboxctl --json ls`` mean the same thing.
    """

    def default(value: object) -> object:
        return argparse.SUPPRESS if on_command else value

    group = parser.add_argument_group("global options")
    group.add_argument(
        "--address",
        metavar="PATH",
        default=default(os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS),
        help=f"containerd's socket (env {ADDRESS_ENV}, else {DEFAULT_ADDRESS})",
    )
    group.add_argument(
        "-n",
        "--namespace",
        metavar="NAME",
        default=default(os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE),
        help=f"containerd namespace (env {NAMESPACE_ENV}, else {DEFAULT_NAMESPACE})",
    )
    group.add_argument(
        "--sandboxer",
        metavar="NAME",
        default=default(DEFAULT_SANDBOXER),
        help=f"sandbox controller for new sandboxes, and the one serve-fake provides "
        f"(default {DEFAULT_SANDBOXER})",
    )
    if with_timeout:
        group.add_argument(
            "--timeout",
            metavar="S",
            type=_positive_float,
            default=default(DEFAULT_TIMEOUT),
            help=f"deadline of each call in seconds (default {DEFAULT_TIMEOUT:g})",
        )
    group.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print one JSON document instead of a table (datetimes in ISO 8601)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``sandboxctl`` argument parser."""
    parser = _Parser(
        prog=PROG,
        description="Create, run, inspect and remove containerd sandboxes.",
        epilog=(
            f"Run '{PROG} COMMAND --help' for a command's options. Global options go before "
            f"or after the command. Try it without a daemon: '{PROG} serve-fake' in one shell, "
            f"then {ADDRESS_ENV}=<the path it prints> '{PROG} run sb1 -- sh -c \"exit 3\"'."
        ),
    )
    _add_global_options(parser, on_command=False)
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )

    def command(
        name: str, summary: str, description: str | None = None, usage: str | None = None
    ) -> _Parser:
        sub: _Parser = commands.add_parser(
            name, help=summary, description=description or summary, usage=usage
        )
        return sub

    ls = command("ls", "list sandboxes", "List sandboxes: ID, SANDBOXER, CREATED, LABELS.")
    ls.add_argument(
        "-f",
        "--filter",
        dest="filters",
        metavar="EXPR",
        action="append",
        default=[],
        help="containerd filter such as 'labels.app==web' or 'id==sb1'; "
        "repeat to list sandboxes matching any of them",
    )

    info = command("info", "show a sandbox's store record")
    info.add_argument("id", metavar="ID", help="sandbox id")

    run_ = command(
        "run",
        "create a sandbox that runs a command and start it",
        "Create a sandbox whose process is CMD [ARG...] and start it. Put '--' before the "
        "command so its own options are not read as sandboxctl's.",
        usage=(
            "%(prog)s [-h] [-l KEY=VALUE]... [--runtime NAME] [--wait] [global options]"
            " ID -- CMD [ARG...]"
        ),
    )
    run_.add_argument("id", metavar="ID", help="sandbox id")
    run_.add_argument(
        "-l",
        "--label",
        dest="labels",
        metavar="KEY=VALUE",
        type=parse_label,
        action="append",
        default=[],
        help="label to set on the sandbox (repeatable)",
    )
    run_.add_argument(
        "--runtime",
        metavar="NAME",
        default=DEFAULT_RUNTIME,
        help=f"runtime to run the sandbox under (default {DEFAULT_RUNTIME})",
    )
    run_.add_argument(
        "--wait",
        action="store_true",
        help="wait for the sandbox to exit, print its exit code and exit with it "
        "(Ctrl-C stops waiting with status 130 and leaves the sandbox running)",
    )
    run_.add_argument(
        "cmd", metavar="CMD", nargs="+", help="the command to run, then its arguments"
    )

    start = command("start", "start a created sandbox")
    start.add_argument("id", metavar="ID", help="sandbox id")

    stop = command(
        "stop",
        "stop a running sandbox",
        "Stop a running sandbox: its controller sends SIGTERM, then SIGKILL after the grace "
        "period. Here --timeout is that grace; a call deadline goes before the command.",
    )
    stop.add_argument("id", metavar="ID", help="sandbox id")
    stop.add_argument(
        "-t",
        "--timeout",
        dest="grace",
        metavar="S",
        type=_grace,
        default=None,
        help="seconds to wait after SIGTERM before SIGKILL (default: the controller's)",
    )

    wait = command(
        "wait",
        "wait for a sandbox to exit and exit with its code",
        "Wait for a sandbox to exit, print its exit code and exit with it. Ctrl-C stops "
        "waiting (exit status 130) and leaves the sandbox alone.",
    )
    wait.add_argument("id", metavar="ID", help="sandbox id")

    rm = command(
        "rm",
        "shut down and delete sandboxes",
        "Shut each sandbox down with its controller and delete it from the store.",
    )
    rm.add_argument("ids", metavar="ID", nargs="+", help="sandbox id")

    labels = command(
        "labels",
        "show or change a sandbox's labels",
        "Show a sandbox's labels, or change them: KEY=VALUE sets a label, KEY- removes one "
        "(as does an empty VALUE: containerd keeps no empty labels). The labels as stored "
        "afterwards are shown.",
    )
    labels.add_argument("id", metavar="ID", help="sandbox id")
    labels.add_argument(
        "edits",
        metavar="KEY=VALUE|KEY-",
        nargs="*",
        type=parse_label_edit,
        help="label to set (KEY=VALUE) or remove (KEY-)",
    )

    status = command("status", "show a sandbox's state as its controller reports it")
    status.add_argument("id", metavar="ID", help="sandbox id")

    serve = command(
        "serve-fake",
        "serve the embedded stand-in containerd in the foreground",
        "Serve the embedded stand-in containerd until SIGINT or SIGTERM. Its socket path is "
        "printed first on stdout; it runs sandboxes for the --sandboxer given (default "
        f"{DEFAULT_SANDBOXER}), so the other commands work against it as they are.",
    )
    serve.add_argument(
        "--socket",
        metavar="PATH",
        default=None,
        help="unix socket to listen on (default: a new one in a temporary directory)",
    )

    for name, sub in commands.choices.items():
        # stop's own --timeout is the grace period.
        _add_global_options(sub, on_command=True, with_timeout=name != "stop")
    return parser


async def _dispatch(args: argparse.Namespace) -> Outcome:
    client = Client(
        args.address, namespace=args.namespace, sandboxer=args.sandboxer, timeout=args.timeout
    )
    async with client:
        match args.command:
            case "ls":
                return await cmd_ls(client, args.filters)
            case "info":
                return await cmd_info(client, args.id)
            case "run":
                return await cmd_run(
                    client,
                    args.id,
                    args.cmd,
                    labels=dict(args.labels),
                    runtime=args.runtime,
                    wait=args.wait,
                )
            case "start":
                return await cmd_start(client, args.id)
            case "stop":
                return await cmd_stop(client, args.id, args.grace)
            case "wait":
                return await cmd_wait(client, args.id)
            case "rm":
                return await cmd_rm(client, args.ids)
            case "labels":
                return await cmd_labels(client, args.id, args.edits)
            case "status":
                return await cmd_status(client, args.id)
            case _:  # pragma: no cover - argparse only lets the commands above through
                raise ValueError(f"unknown command {args.command!r}")


def _error(message: object) -> None:
    text = " ".join(str(message).split()) or "unknown error"
    print(f"{PROG}: error: {text}", file=sys.stderr)


def _emit(outcome: Outcome, as_json: bool) -> None:
    if as_json:
        print(json.dumps(outcome.data, indent=2, sort_keys=True))
    elif outcome.text:
        print(outcome.text)
    sys.stdout.flush()
    for message in outcome.errors:
        _error(message)


def run(argv: Sequence[str] | None = None) -> int:
    """Run ``sandboxctl`` with ``argv`` (default ``sys.argv[1:]``) and return its exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve-fake":
            return asyncio.run(serve_fake(args.socket, (args.sandboxer,), as_json=args.json))
        outcome = asyncio.run(_dispatch(args))
        _emit(outcome, args.json)
        return outcome.code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (ContainerdError, ValueError, OSError) as exc:
        if isinstance(exc, BrokenPipeError):
            # The reader went away (``sandboxctl ls | head``): say nothing more.
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_ERROR
        _error(exc)
        return EXIT_ERROR


def main() -> NoReturn:
    """The ``sandboxctl`` entry point: run and exit with the command's status."""
    sys.exit(run())
