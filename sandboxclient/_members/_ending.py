"""A member made while its sandbox shuts down: refused, and its record deleted.

containerd never asks a sandbox's controller before it makes a member (Containers.Create,
then Tasks.Create into the shim of the sandbox's own task), so a controller's Shutdown that
has read the namespace's container records misses a member made after that read. The
isolating sandboxer says in its Status that a Shutdown is under way (``info``'s
:data:`SHUTDOWN_INFO`) from before it reads them. A member's record is made first, its
sandbox's Status asked next: either the Status says nothing of a Shutdown, and then the record
was made before any Shutdown read the records (which deletes it, with any task it gets), or it
says one is under way, or the controller no longer knows the sandbox, and then the member is
refused (FailedPreconditionError naming the sandbox's state) and its record deleted, as it is
when the Status cannot be asked (the error raised is then the Status's).

A controller whose own Shutdown deletes the sandbox's members says so at Start
(:data:`MEMBERS_REMOVED_LABEL` among the labels of its answer); ``Sandbox.shutdown`` then
leaves them to it rather than list the namespace's containers first. The label is the
controller's to give: the client refuses it on a sandbox's record (:func:`refuse_reserved`),
so a controller that echoes the record's labels cannot be taken to say it; so are the
output's acknowledgements (``_sandbox_io``), the other words only Start's answer gives
(:data:`ANSWER_ONLY_LABELS`). This project's sandboxers drop all of them from a record's
labels before they add their own, since a record written by another client (or ``ctr``) is
not checked by this one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from .._facts._golang import go_quote
from .._models import SandboxStatus
from .._plumbing._sandbox_io import ERROR_ATTACHED_LABEL, OUTPUT_ATTACHED_LABEL
from ..errors import FailedPreconditionError, NotFoundError, UnimplementedError

__all__ = (
    "ANSWER_ONLY_LABELS",
    "MEMBERS_REMOVED_LABEL",
    "SHUTDOWN_INFO",
    "SHUTDOWN_UNDER_WAY",
    "members_removed",
    "refuse_if_ending",
    "refuse_reserved",
)

SHUTDOWN_INFO: Final = "shutdown"
"""The key of a sandbox's Status ``info`` that the isolating sandboxer sets, to
:data:`SHUTDOWN_UNDER_WAY`, once a Shutdown of it has begun."""

SHUTDOWN_UNDER_WAY: Final = "under way"
"""The value of :data:`SHUTDOWN_INFO` while a Shutdown runs."""

MEMBERS_REMOVED_LABEL: Final = "io.sandboxclient.members-removed"
"""Set to ``"true"`` among the labels of Start's answer by a controller whose Shutdown
deletes the sandbox's members itself (every container whose record names the sandbox, read
once its Shutdown has begun, before its own task), as the isolating sandboxer's does."""


ANSWER_ONLY_LABELS: Final = frozenset(
    {MEMBERS_REMOVED_LABEL, OUTPUT_ATTACHED_LABEL, ERROR_ATTACHED_LABEL}
)
"""The labels a controller gives among those of Start's answer, never a record's: refused on
a record by the client, dropped from the record's labels by this project's sandboxers."""


def members_removed(start_labels: Mapping[str, str]) -> bool:
    """Whether Start's answer (its ``labels``) says the controller's Shutdown deletes the
    sandbox's members."""
    return start_labels.get(MEMBERS_REMOVED_LABEL) == "true"


def refuse_reserved(labels: Mapping[str, str], sandbox_id: str) -> None:
    """ValueError naming the label when a sandbox's record ``labels`` hold one of
    :data:`ANSWER_ONLY_LABELS`."""
    forged = sorted(ANSWER_ONLY_LABELS.intersection(labels))
    if forged:
        raise ValueError(
            f"label {forged[0]} on sandbox {go_quote(sandbox_id)} is its controller's to say at "
            "Start, not a record's"
        )


async def refuse_if_ending(
    sandbox_id: str, container_id: str, status: Callable[[], Awaitable[SandboxStatus]]
) -> SandboxStatus | None:
    """Return the sandbox's ``status`` (asked once the member's record is made) if it says
    nothing of a Shutdown, or None if its controller has no Status; raise FailedPreconditionError
    naming the sandbox's state if it says one is under way or the controller no longer
    knows the sandbox. The caller deletes the member on any error
    (``ContainerFactory.create``'s ``confirm``)."""
    try:
        answer = await status()
    except UnimplementedError:
        return None  # a controller without a Status tells nothing either way: as before
    except NotFoundError:
        state = "shut down (its controller no longer knows it)"
    else:
        if answer.info.get(SHUTDOWN_INFO) != SHUTDOWN_UNDER_WAY:
            return answer
        state = "shutting down"
    raise FailedPreconditionError(
        f"sandbox {go_quote(sandbox_id)} is {state}: container {go_quote(container_id)} "
        "was deleted, not added to it"
    )
