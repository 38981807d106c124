"""The client's own output FIFO for a sandbox's process, in place of its log.

A sandbox labelled :data:`~sandboxclient._creation._oneshot.OUTPUT_LABEL` (``Client.run`` does it)
names a FIFO its client holds the read end of: both sandboxers give it to the sandbox's own
process as its stdout and stderr instead of the sandbox's log, and add
:data:`~sandboxclient._creation._oneshot.OUTPUT_ATTACHED_LABEL` to Start's answer so that the client
knows. It is checked at Start: an absolute path without symbolic links to a FIFO, else
INVALID_ARGUMENT naming the label. What bounds it is the client's reading (it keeps what it
was asked to and drops the rest); a client that stops reading blocks the sandbox's writes, as
a full log pipe would.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

from grpclib.exceptions import GRPCError

from .._creation._oneshot import OUTPUT_ATTACHED_LABEL, OUTPUT_LABEL
from .._golang import go_quote
from .._serve._refusals import invalid_argument

__all__ = ("client_output", "start_labels")


def client_output(labels: Mapping[str, str]) -> str | None:
    """The FIFO the sandbox's output goes to instead of its log, or None for its log."""
    path = labels.get(OUTPUT_LABEL)
    if not path:
        return None

    def refused(why: str) -> GRPCError:
        return invalid_argument(f"label {OUTPUT_LABEL} ({go_quote(path)}) {why}")

    if "\0" in path or not os.path.isabs(path) or os.path.normpath(path) != path:
        raise refused("must be a normalised absolute path")
    try:
        if os.path.realpath(path) != path:
            raise refused("must not go through a symbolic link")
        found = os.lstat(path)
    except OSError as exc:
        raise refused(f"cannot be used: {exc.strerror}") from None
    if not stat.S_ISFIFO(found.st_mode):
        raise refused("must name a FIFO")
    return path


def start_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """The labels of Start's answer: the sandbox's, and the word that its output went to
    the client's FIFO when it asked for that (Start checked it with :func:`client_output`)."""
    answer = dict(labels)
    if labels.get(OUTPUT_LABEL):
        answer[OUTPUT_ATTACHED_LABEL] = "true"
    return answer
