"""The ``sandboxctl`` argument parser."""

from __future__ import annotations

import argparse
import os
from typing import NoReturn

from .. import __version__
from .._client import DEFAULT_ADDRESS, DEFAULT_TIMEOUT
from ._base import (
    ADDRESS_ENV,
    DEFAULT_NAMESPACE,
    DEFAULT_RUNTIME,
    DEFAULT_SANDBOXER,
    EXIT_USAGE,
    NAMESPACE_ENV,
    PROG,
    SANDBOXER_ENV,
    grace_seconds,
    parse_label,
    parse_label_edit,
    positive_seconds,
)
from ._netopts import add_network_options

__all__ = ("build_parser",)


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
        default=default(os.environ.get(SANDBOXER_ENV) or None),
        help=f"sandbox controller for new sandboxes, and the one serve-fake provides "
        f"(env {SANDBOXER_ENV}, else the namespace's containerd.io/defaults/sandboxer label, "
        f"else {DEFAULT_SANDBOXER})",
    )
    if with_timeout:
        group.add_argument(
            "--timeout",
            metavar="S",
            type=positive_seconds,
            default=default(None),
            help=f"deadline of each call in seconds (default {DEFAULT_TIMEOUT:g}); given, it "
            "also bounds how long wait, run --wait and exec wait",
        )
    group.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print one JSON document instead of a table (datetimes in ISO 8601)",
    )


def _add_images(images: _Parser) -> None:
    """``images ls|rm|tag|pull|push|import|export``."""
    under = images.add_subparsers(
        dest="images_command",
        metavar="ls|rm|tag|pull|push|import|export",
        required=True,
        parser_class=_Parser,
    )
    i_ls: _Parser = under.add_parser("ls", help="list images", description="List images.")
    i_ls.add_argument(
        "-f",
        "--filter",
        dest="filters",
        metavar="EXPR",
        action="append",
        default=[],
        help="containerd filter such as 'name==busybox:latest' (repeatable: any matches)",
    )
    i_rm: _Parser = under.add_parser("rm", help="delete images", description="Delete images.")
    i_rm.add_argument("names", metavar="NAME", nargs="+", help="image name")
    i_rm.add_argument(
        "--sync", action="store_true", help="wait for the daemon to collect what they held"
    )
    i_tag: _Parser = under.add_parser("tag", help="name an image again")
    i_tag.add_argument("name", metavar="NAME", help="the image")
    i_tag.add_argument("new_name", metavar="NEW_NAME", help="its new name")
    for verb in ("pull", "push"):
        sub: _Parser = under.add_parser(verb, help=f"{verb} an image, showing its progress")
        sub.add_argument("ref", metavar="REF", help="registry reference (host/repo:tag)")
        if verb == "push":
            sub.add_argument("--source", metavar="NAME", help="local image to push (default REF)")
        sub.add_argument("--user", metavar="USER", help="registry user (with --password-stdin)")
        sub.add_argument(
            "--password-stdin", action="store_true", help="read the password from stdin"
        )
        sub.add_argument("--plain-http", action="store_true", help="reach it without TLS")
        sub.add_argument("--hosts-dir", metavar="DIR", help="directory of <host>/hosts.toml")
    i_import: _Parser = under.add_parser("import", help="import an OCI or Docker archive")
    i_import.add_argument("path", metavar="PATH", help="the archive (gzip or not); - for stdin")
    i_import.add_argument("--name", metavar="PREFIX", help="name for untagged images")
    i_import.add_argument("--no-unpack", action="store_true", help="do not unpack the images")
    i_export: _Parser = under.add_parser("export", help="export images as an OCI archive")
    i_export.add_argument("path", metavar="PATH", help="the archive to write; - for stdout")
    i_export.add_argument("names", metavar="NAME", nargs="+", help="image name")
    for nested in under.choices.values():
        _add_global_options(nested, on_command=True)


def add_time_limits(parser: argparse.ArgumentParser, what: str) -> None:
    """``--lifetime`` and ``--idle-timeout``, in seconds (checked by the client)."""
    parser.add_argument(
        "--lifetime",
        metavar="SECONDS",
        type=float,
        help=f"{what} SECONDS from now (its sandboxer enforces it; exit status 124)",
    )
    parser.add_argument(
        "--idle-timeout",
        metavar="SECONDS",
        type=float,
        help=f"{what} once no exec has run in it for SECONDS (exit status 125)",
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
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {__version__}", help="show the version"
    )
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

    ls = command(
        "ls",
        "list sandboxes",
        "List sandboxes: ID, SANDBOXER, CREATED, DEADLINE and IDLE (the time limits their "
        "labels ask for: the deadline, the idle timeout in seconds), LABELS.",
    )
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
        "Create a sandbox whose process is CMD [ARG...] and start it; with --wait, create "
        "and start it with its controller's own process, run CMD in it with its output "
        "shown here, stop the sandbox and exit with CMD's code. Put '--' before the "
        "command so its own options are not read as sandboxctl's.",
        usage=(
            "%(prog)s [-h] [-l KEY=VALUE]... [--runtime NAME] [--wait] [--lifetime SECONDS]"
            " [--idle-timeout SECONDS] [network options] [global options] ID -- CMD [ARG...]"
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
        help="run CMD in the started sandbox, show its output, stop the sandbox and exit "
        "with CMD's code (Ctrl-C kills CMD and exits with status 130)",
    )
    add_time_limits(run_, "end the sandbox")
    run_.add_argument(
        "cmd", metavar="CMD", nargs="+", help="the command to run, then its arguments"
    )
    add_network_options(run_)

    limits = command(
        "limits",
        "change a sandbox's time limits",
        "Give a sandbox a new lifetime (its deadline SECONDS from now, sooner or later) or "
        "idle timeout, or both, through its sandboxer (which must enforce them) and then its "
        "record's labels; show the limits in force.",
    )
    limits.add_argument("id", metavar="ID", help="sandbox id")
    add_time_limits(limits, "end it")

    exec_ = command(
        "exec",
        "run a command in a sandbox and show its output",
        "Run CMD [ARG...] in a started sandbox (an exec into its own task), with its "
        "stdout and stderr shown here, and exit with its code. Ctrl-C kills it.",
        usage="%(prog)s [-h] [-i] [-t] [global options] ID -- CMD [ARG...]",
    )
    exec_.add_argument("id", metavar="ID", help="sandbox id")
    exec_.add_argument(
        "-i", "--interactive", action="store_true", help="pass this stdin to the command"
    )
    exec_.add_argument("-t", "--tty", action="store_true", help="give the command a pty")
    exec_.add_argument(
        "cmd", metavar="CMD", nargs="+", help="the command to run, then its arguments"
    )

    cp = command(
        "cp",
        "copy a file or tree into or out of a sandbox",
        "Copy SRC to DST, one of them ID:PATH (an absolute path in a started sandbox), as "
        "docker cp: from a sandbox into an existing local directory, or from here into an "
        "existing directory of the sandbox. Modes and mtimes are kept; what a sandbox sends "
        "is checked before anything is written here. Needs sh and tar in the sandbox.",
    )
    cp.add_argument("src", metavar="SRC", help="ID:PATH or a local path")
    cp.add_argument("dst", metavar="DST", help="a local directory or ID:DIR")

    containers = command(
        "containers",
        "list or remove containers",
        "List container records (ls), or delete containers with their snapshots (rm).",
    )
    under = containers.add_subparsers(
        dest="containers_command", metavar="ls|rm", required=True, parser_class=_Parser
    )
    c_ls: _Parser = under.add_parser("ls", help="list containers", description="List containers.")
    c_ls.add_argument(
        "-f",
        "--filter",
        dest="filters",
        metavar="EXPR",
        action="append",
        default=[],
        help="containerd filter such as 'image==busybox:latest' (repeatable: any matches)",
    )
    c_rm: _Parser = under.add_parser(
        "rm", help="delete containers", description="Delete containers with their snapshots."
    )
    c_rm.add_argument("ids", metavar="ID", nargs="+", help="container id")
    c_rm.add_argument(
        "-f", "--force", action="store_true", help="kill and delete a container's task first"
    )
    for nested in under.choices.values():
        _add_global_options(nested, on_command=True)

    _add_images(command("images", "pull, push, list, tag, remove, import, export images"))

    command("version", "show the daemon's version")
    command("sandboxers", "list the daemon's sandbox controllers")
    command(
        "handlers",
        "list the runtime handlers the sandboxer offers",
        "List the runtime handlers (runtime_handler=NAME) the sandboxer (--sandboxer, else "
        "the namespace's default) offers, asked of the sandboxer itself at the socket "
        "containerd names for it: this project's isolating sandboxer, on this host.",
    )
    events = command(
        "events",
        "print the daemon's events as they come",
        "Print containerd's events until Ctrl-C: one line each, or with --json one JSON "
        "object per line. Events are this namespace's unless --all-namespaces.",
    )
    events.add_argument(
        "filters",
        metavar="FILTER",
        nargs="*",
        help="containerd filter such as 'topic==\"/tasks/exit\"' (any may match)",
    )
    events.add_argument(
        "-A", "--all-namespaces", action="store_true", help="events of every namespace"
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
        type=grace_seconds,
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

    status = command(
        "status",
        "show a sandbox's state as its controller reports it (verbose: with the isolating "
        "sandboxer, its limits, seccomp profile, log bytes dropped and network, CHECKed)",
    )
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
