"""``sandboxctl``: a command line for containerd's sandboxes.

Each command is a small coroutine that takes a :class:`~sandboxclient.Client` and returns an
:class:`Outcome`: the JSON document for ``--json``, the human-readable text otherwise, and the
exit code. :func:`run` parses the command line, builds the Client, runs the command and turns
expected failures into one ``sandboxctl: error: ...`` line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Sequence

from .._client import DEFAULT_TIMEOUT, Client
from ..errors import ContainerdError
from ._base import (
    ADDRESS_ENV,
    DEFAULT_RUNTIME,
    DEFAULT_SANDBOXER,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    NAMESPACE_ENV,
    PROG,
    LabelEdit,
    Outcome,
    parse_label,
    parse_label_edit,
)
from ._containers import cmd_containers_ls, cmd_containers_rm
from ._cp import cmd_cp
from ._daemon import cmd_events, cmd_handlers, cmd_sandboxers, cmd_version
from ._exec import cmd_exec
from ._images import (
    cmd_images_export,
    cmd_images_import,
    cmd_images_ls,
    cmd_images_pull,
    cmd_images_push,
    cmd_images_rm,
    cmd_images_tag,
    read_password,
)
from ._netopts import network_options
from ._parser import build_parser
from ._render import printable
from ._sandboxes import (
    cmd_info,
    cmd_labels,
    cmd_limits,
    cmd_ls,
    cmd_rm,
    cmd_run,
    cmd_start,
    cmd_status,
    cmd_stop,
    cmd_wait,
)
from ._serve import serve_fake

__all__ = (
    "ADDRESS_ENV",
    "DEFAULT_RUNTIME",
    "NAMESPACE_ENV",
    "PROG",
    "LabelEdit",
    "Outcome",
    "build_parser",
    "cmd_containers_ls",
    "cmd_containers_rm",
    "cmd_cp",
    "cmd_events",
    "cmd_exec",
    "cmd_handlers",
    "cmd_images_export",
    "cmd_images_import",
    "cmd_images_ls",
    "cmd_images_pull",
    "cmd_images_push",
    "cmd_images_rm",
    "cmd_images_tag",
    "cmd_info",
    "cmd_labels",
    "cmd_limits",
    "cmd_ls",
    "cmd_rm",
    "cmd_run",
    "cmd_sandboxers",
    "cmd_start",
    "cmd_status",
    "cmd_stop",
    "cmd_version",
    "cmd_wait",
    "parse_label",
    "parse_label_edit",
    "run",
    "serve_fake",
)


async def _dispatch(args: argparse.Namespace) -> Outcome:
    client = Client(
        args.address,
        namespace=args.namespace,
        sandboxer=args.sandboxer,
        timeout=DEFAULT_TIMEOUT if args.timeout is None else args.timeout,
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
                    network=network_options(args),
                    lifetime=args.lifetime,
                    idle_timeout=args.idle_timeout,
                )
            case "limits":
                return await cmd_limits(
                    client, args.id, lifetime=args.lifetime, idle_timeout=args.idle_timeout
                )
            case "start":
                return await cmd_start(client, args.id)
            case "stop":
                return await cmd_stop(client, args.id, args.grace)
            case "wait":
                return await cmd_wait(client, args.id, timeout=args.timeout)
            case "rm":
                return await cmd_rm(client, args.ids)
            case "labels":
                return await cmd_labels(client, args.id, args.edits)
            case "status":
                return await cmd_status(client, args.id)
            case "version":
                return await cmd_version(client)
            case "sandboxers":
                return await cmd_sandboxers(client)
            case "handlers":
                return await cmd_handlers(client)
            case "events":
                return await cmd_events(
                    client, args.filters, as_json=args.json, all_namespaces=args.all_namespaces
                )
            case "exec":
                return await cmd_exec(
                    client, args.id, args.cmd, interactive=args.interactive, terminal=args.tty
                )
            case "images":
                return await _images(client, args)
            case "cp":
                return await cmd_cp(client, args.src, args.dst)
            case "containers" if args.containers_command == "ls":
                return await cmd_containers_ls(client, args.filters)
            case "containers":
                return await cmd_containers_rm(client, args.ids, force=args.force)
            case _:  # pragma: no cover - argparse only lets the commands above through
                raise ValueError(f"unknown command {args.command!r}")


async def _images(client: Client, args: argparse.Namespace) -> Outcome:
    match args.images_command:
        case "ls":
            return await cmd_images_ls(client, args.filters)
        case "rm":
            return await cmd_images_rm(client, args.names, sync=args.sync)
        case "tag":
            return await cmd_images_tag(client, args.name, args.new_name)
        case "pull" | "push":
            credentials = read_password(args.user, args.password_stdin)
            options = {
                "credentials": credentials,
                "plain_http": args.plain_http,
                "hosts_dir": args.hosts_dir,
                "as_json": args.json,
                "timeout": args.timeout,
            }
            if args.images_command == "pull":
                return await cmd_images_pull(client, args.ref, **options)
            return await cmd_images_push(client, args.ref, source=args.source, **options)
        case "import":
            return await cmd_images_import(
                client,
                args.path,
                name=args.name,
                unpack=not args.no_unpack,
                as_json=args.json,
                timeout=args.timeout,
            )
        case _:
            return await cmd_images_export(client, args.names, args.path, timeout=args.timeout)


def _error(message: object, *, as_json: bool = False) -> None:
    text = " ".join(str(message).split()) or "unknown error"
    if as_json:
        kind = type(message).__name__ if isinstance(message, BaseException) else "Error"
        status = getattr(message, "status", None)
        document = {"error": {"type": kind, "message": text}}
        if status is not None:
            document["error"]["status"] = status.name
        print(json.dumps(document, sort_keys=True), file=sys.stderr)
        return
    print(f"{PROG}: error: {printable(text)}", file=sys.stderr)


def _emit(outcome: Outcome, as_json: bool) -> None:
    if as_json:
        print(json.dumps(outcome.data, indent=2, sort_keys=True))
    elif outcome.text:
        print(outcome.text)
    sys.stdout.flush()
    for message in outcome.errors:
        _error(message, as_json=as_json)


def run(argv: Sequence[str] | None = None) -> int:
    """Run ``sandboxctl`` with ``argv`` (default ``sys.argv[1:]``) and return its exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve-fake":
            return asyncio.run(
                serve_fake(args.socket, (args.sandboxer or DEFAULT_SANDBOXER,), as_json=args.json)
            )
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
        _error(exc, as_json=args.json)
        return EXIT_ERROR
