"""The client's own FIFOs for a sandbox's process, in place of its log.

A sandbox labelled :data:`~sandboxclient._plumbing._sandbox_io.OUTPUT_LABEL` (``stdout=``
of ``new_sandbox``, and ``Client.run``, set it) names a FIFO its client holds the read end
of: both sandboxers give it to the sandbox's own process as its stdout instead of the
sandbox's log, and as its stderr too unless
:data:`~sandboxclient._plumbing._sandbox_io.ERROR_LABEL` names another for stderr alone.
Each honoured label is acknowledged among the labels of Start's answer
(:data:`~sandboxclient._plumbing._sandbox_io.OUTPUT_ATTACHED_LABEL`,
:data:`~sandboxclient._plumbing._sandbox_io.ERROR_ATTACHED_LABEL`) so that the client
knows. They are checked at Start: an absolute path without symbolic links to a FIFO, or
``/dev/null``, else INVALID_ARGUMENT naming the label (and :data:`ERROR_LABEL` only with
:data:`OUTPUT_LABEL`). What bounds them is the client's reading (it keeps what it was asked
to and drops the rest); a client that stops reading blocks the sandbox's writes, as a full
log pipe would.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from grpclib.exceptions import GRPCError

from .._facts._golang import go_quote
from .._members._ending import ANSWER_ONLY_LABELS
from .._plumbing._sandbox_io import (
    ERROR_ATTACHED_LABEL,
    ERROR_LABEL,
    NULL_STREAM,
    OUTPUT_ATTACHED_LABEL,
    OUTPUT_LABEL,
)
from .._plumbing._stream_args import STDOUT, NamedFifo
from .._serve._refusals import invalid_argument
from ._supervise import NOT_A_STREAM

__all__ = ("ClientStreams", "client_output", "start_labels", "stream_failure", "task_streams")


@dataclass(frozen=True, slots=True)
class ClientStreams:
    """Where the client asked the sandbox's stdout and stderr to go, checked."""

    stdout: str
    stderr: str | None = None
    """None: with stdout, as one stream (the single label of old)."""


def _checked(label: str, path: str) -> str:
    def refused(why: str) -> GRPCError:
        return invalid_argument(f"label {label} ({go_quote(path)}) {why}")

    if path == NULL_STREAM:
        return path
    if "\0" in path or not os.path.isabs(path) or os.path.normpath(path) != path:
        raise refused("must be a normalised absolute path")
    try:
        if os.path.realpath(path) != path:
            raise refused("must not go through a symbolic link")
        found = os.lstat(path)
    except OSError as exc:
        raise refused(f"cannot be used: {exc.strerror}") from None
    if not stat.S_ISFIFO(found.st_mode):
        raise refused(f"must name a FIFO (or be {NULL_STREAM})")
    return path


def client_output(labels: Mapping[str, str]) -> ClientStreams | None:
    """The FIFOs the sandbox's output goes to instead of its log, or None for its log."""
    out, err = labels.get(OUTPUT_LABEL), labels.get(ERROR_LABEL)
    if not out:
        if err:
            raise invalid_argument(
                f"label {ERROR_LABEL} ({go_quote(err)}) needs label {OUTPUT_LABEL}: stderr "
                "goes to the client only with stdout"
            )
        return None
    return ClientStreams(_checked(OUTPUT_LABEL, out), _checked(ERROR_LABEL, err) if err else None)


def stream_failure(
    given: ClientStreams | None, what: str, why: object, code: int
) -> tuple[str, object]:
    """What a failed start names (``what``, and ``why``), by its label when it is one of the
    client's streams (``given``): the supervisor that opens them refuses, with errno
    :data:`NOT_A_STREAM`, what is found once opened to be neither a FIFO nor /dev/null."""
    if given is None:
        return what, why
    labels = {given.stdout: OUTPUT_LABEL}
    if given.stderr is not None:
        labels.setdefault(given.stderr, ERROR_LABEL)
    label = labels.get(what)
    if label is None:
        return what, why
    if code == NOT_A_STREAM:
        why = f"must name a FIFO (or be {NULL_STREAM}): it was replaced since Start checked it"
    return f"label {label} ({go_quote(what)})", why


def start_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """The labels of Start's answer: the sandbox's, but for the words only an answer gives
    (``ANSWER_ONLY_LABELS``: a record written past the client's checks may hold them), and
    the word that its output went to the client's FIFOs when it asked for that (Start checked
    it with :func:`client_output`)."""
    answer = {k: v for k, v in labels.items() if k not in ANSWER_ONLY_LABELS}
    if labels.get(OUTPUT_LABEL):
        answer[OUTPUT_ATTACHED_LABEL] = "true"
        if labels.get(ERROR_LABEL):
            answer[ERROR_ATTACHED_LABEL] = "true"
    return answer


def task_streams(output: ClientStreams | str) -> dict[str, Any]:
    """``stdout=``/``stderr=`` of ``Container.new_task`` for a sandbox's task: the client's
    FIFOs by their plain paths, the same one twice when the streams share it (the shim opens
    each for writing, never creating it: a FIFO gone by then fails the task's creation), or
    one stream to the sandboxer's own log FIFO (``file://``: the shim appends both to it).

    Never ``file://`` for the client's: the shim would make a missing path's folders and the
    file itself, as root, and append to it without bound should the client's folder have
    gone before Tasks.Create."""
    if isinstance(output, ClientStreams):
        err = output.stdout if output.stderr is None else output.stderr
        return {"stdout": NamedFifo(output.stdout), "stderr": NamedFifo(err)}
    return {"stdout": output, "stderr": STDOUT}
