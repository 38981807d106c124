"""Which process a member joins: its sandbox's, not a later one given the same pid.

A member joins its sandbox's namespaces by the paths ``/proc/<pid>/ns/...`` in its spec,
which runc opens at the member's Tasks.Create, maybe long after the member was made. Should
the sandbox's process have exited by then and its pid gone to another process (another
sandbox's, or the host's), the member would join that one's namespaces: at worst the host's
user namespace, as the host's root. So the process is named by its pid and its start time
(``/proc/PID/stat``, which no later holder of the pid shares), written in the member's spec
(the annotation :data:`JOIN_PROCESS_ANNOTATION`) so that any client that makes its task
finds it:

- at ``Sandbox.new_container``, the start time is read once the pid is known and the user
  namespace's maps are read (:func:`sandbox_process`), from a process that has not exited (not
  a zombie, which holds its pid but no longer its namespaces). A handle that started the
  sandbox noted its process's start time as Start answered: a pid that no longer names that
  process is refused (FailedPreconditionError) whatever the controller says, so a Status that
  still says ready with the old pid after the process exited and the pid went to another is
  not believed. Once the member's record is made, the
  sandbox's Status is asked (``_members._ending``), and the member is refused (deleted,
  FailedPreconditionError) unless that Status says the sandbox is ready with the same pid (or
  none) and the pid still names the process whose start time was read
  (:func:`confirm_member`). The process then held the pid from before the Status until after
  it, so it is the one the Status names. (A pid learned at the sandbox's Start, perhaps long
  ago, is so checked too: a sandbox whose process has exited is not ready.) A handle from
  ``load_sandbox`` notes the start time of the pid a ready Status named as it loads, as
  ``start()`` does; only one made from a record alone (``sandbox_handle``), or loaded while
  not ready, has no start time of its own to check the controller's pid against;
- at ``Container.new_task``, the pid must name that process before the Tasks.Create and
  after it (:meth:`JoinedProcess.held`). runc opens the paths during the Create, and the
  member's own code waits for its Start: a process that held the pid before and after held it
  throughout, so the paths were its. Otherwise the task and the member are deleted and
  FailedPreconditionError names the sandbox's process as gone.

A member of a gVisor sandbox joins the sandbox's kernel, not host namespaces by pid
(``_members._gvisor``): it carries no annotation, and nothing is checked. A spec that names
namespace paths of its own, without the annotation, is used as given, as any spec is; a
spec given to ``new_container`` that carries the annotation is refused (:func:`refuse_reserved`):
only this library writes it, and a forged one would get the container deleted at its
``new_task``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from .._facts._golang import go_quote
from .._facts._pidstart import running_start_time
from .._models import SandboxStatus
from ..errors import ContainerdError, FailedPreconditionError
from ._ending import refuse_if_ending

__all__ = (
    "JOIN_PROCESS_ANNOTATION",
    "JoinedProcess",
    "confirm_member",
    "joined_process",
    "refuse_reserved",
    "refuse_unjoined",
    "sandbox_process",
)

JOIN_PROCESS_ANNOTATION: Final = "io.sandboxclient.join-process"
"""The annotation on a member's spec naming the sandbox process whose namespaces it joins,
as ``<pid>:<start time in clock ticks after boot>``."""

_log = logging.getLogger("sandboxclient")


@dataclass(frozen=True, slots=True)
class JoinedProcess:
    """The sandbox process whose namespaces a member joins: its pid and start time."""

    pid: int
    started: int
    """Its start time, in clock ticks after boot (field 22 of ``/proc/PID/stat``)."""

    def held(self) -> bool:
        """Whether the pid still names this process, which has not exited (not a later
        process, nor a zombie, nor none)."""
        return running_start_time(self.pid) == self.started

    def mark(self, spec: dict[str, Any]) -> None:
        """Name the process in ``spec`` (changed in place), by :data:`JOIN_PROCESS_ANNOTATION`."""
        annotations = spec.get("annotations")
        if not isinstance(annotations, dict):
            annotations = spec["annotations"] = {}
        annotations[JOIN_PROCESS_ANNOTATION] = f"{self.pid}:{self.started}"

    def gone(self, sandbox_id: str, container_id: str) -> FailedPreconditionError:
        """The error for a member whose sandbox's process no longer holds its pid."""
        return FailedPreconditionError(
            f"sandbox {go_quote(sandbox_id)} is not running: its process {self.pid}, whose "
            f"namespaces container {go_quote(container_id)} joins, has exited (the pid no "
            "longer names it); the container was deleted"
        )


def sandbox_process(pid: int, sandbox_id: str, noted: int | None = None) -> JoinedProcess:
    """Sandbox ``sandbox_id``'s process ``pid`` as it is now; FailedPreconditionError if
    there is none that has not exited, its start time cannot be read (``/proc`` mounted with
    ``hidepid``), or it is not ``noted``, the start time its handle read at Start."""
    started = running_start_time(pid)
    if started is None:
        raise FailedPreconditionError(
            f"sandbox {go_quote(sandbox_id)} has no running process {pid} whose namespaces a "
            f"container could join (it has exited, or /proc/{pid}/stat cannot be read): "
            "start it, or pass join_namespaces=False"
        )
    if noted is not None and started != noted:
        raise FailedPreconditionError(
            f"sandbox {go_quote(sandbox_id)} is not running: its process {pid} has exited, "
            "whatever its controller says (the pid now names a process started after it); "
            "no container can join its namespaces"
        )
    return JoinedProcess(pid, started)


def refuse_reserved(spec: object) -> None:
    """ValueError naming :data:`JOIN_PROCESS_ANNOTATION` if a caller's ``spec`` carries it:
    only :meth:`JoinedProcess.mark` writes it, for a member that joins its sandbox's
    namespaces, and ``new_task`` deletes a container whose annotation names no such process."""
    annotations = spec.get("annotations") if isinstance(spec, Mapping) else None
    if isinstance(annotations, Mapping) and JOIN_PROCESS_ANNOTATION in annotations:
        raise ValueError(
            f"spec annotation {JOIN_PROCESS_ANNOTATION} is reserved: the client writes it "
            "for a member that joins its sandbox's namespaces (join_namespaces=True)"
        )


def joined_process(spec: Mapping[str, Any], container_id: str) -> JoinedProcess | None:
    """The process a member's ``spec`` names by :data:`JOIN_PROCESS_ANNOTATION`, or None when
    it names none; ValueError naming the container when the annotation is malformed."""
    annotations = spec.get("annotations") or {}
    value = annotations.get(JOIN_PROCESS_ANNOTATION) if isinstance(annotations, Mapping) else None
    if value is None:
        return None
    pid, sep, started = str(value).partition(":")
    if not (sep and pid.isdigit() and started.isdigit() and int(pid) > 0):
        raise ValueError(
            f"container {go_quote(container_id)}: spec annotation {JOIN_PROCESS_ANNOTATION} "
            f"is {go_quote(str(value))}, not <pid>:<start time>"
        )
    return JoinedProcess(int(pid), int(started))


async def confirm_member(
    sandbox_id: str,
    container_id: str,
    status: Callable[[], Awaitable[SandboxStatus]],
    joined: JoinedProcess | None,
) -> None:
    """The check a member's maker runs once its record is made: that the sandbox is not
    shutting down (``_members._ending``) and, for a member that joins ``joined``, that the
    sandbox's Status, asked after the start time was read, says it is ready with that pid (or
    none), and the pid still names that process. FailedPreconditionError otherwise; the
    caller deletes the member on any error."""
    answer = await refuse_if_ending(sandbox_id, container_id, status)
    if joined is None:
        return
    if answer is not None and not answer.ready:  # exited before the start time was read?
        raise FailedPreconditionError(
            f"sandbox {go_quote(sandbox_id)} is not running (its controller says "
            f"{answer.state.value}): container {go_quote(container_id)}, which was to join "
            "its process's namespaces, was deleted"
        )
    if answer is not None and answer.pid and answer.pid != joined.pid:
        raise FailedPreconditionError(
            f"sandbox {go_quote(sandbox_id)}'s process is now {answer.pid}, not {joined.pid} "
            f"whose namespaces container {go_quote(container_id)} was to join; the container "
            "was deleted"
        )
    if not joined.held():
        raise joined.gone(sandbox_id, container_id)


async def refuse_unjoined(
    joined: JoinedProcess | None,
    container_id: str,
    sandbox_id: str,
    delete: Callable[[], Awaitable[None]],
) -> None:
    """At a member's Tasks.Create (before it and after it): return if it joins no process, or
    the pid still names the process it joins; else ``delete`` the member (its task with it)
    and raise FailedPreconditionError. A failed delete is logged, not the error raised (the
    member's own code waits for a Start that nobody is told to make)."""
    if joined is None or joined.held():
        return
    try:
        await delete()
    except ContainerdError as exc:
        _log.warning("container %s (its process gone) was not deleted: %s", container_id, exc)
    raise joined.gone(sandbox_id, container_id)
