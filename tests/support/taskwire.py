"""Raw Tasks requests for tests, with the set-up they need and a clean-up that leaves no
task, shim or container behind on either backend."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from grpclib.client import Channel
from grpclib.exceptions import GRPCError

from sandboxclient import oci
from sandboxclient._facts._wirenames import NAMESPACE_HEADER, RUNTIME_SPEC_TYPE_URL
from sandboxclient._wire._pb import AnyPb, SandboxPb, SandboxRuntimePb
from sandboxclient._wire._pb import containers_pb as cpb
from sandboxclient._wire._pb import sandbox_pb as spb
from sandboxclient._wire._pb import tasks_pb as tpb
from tests.support.constants import RUNTIME
from tests.support.host import busybox_root

NULL = "/dev/null"
PROCESS_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"


def process_spec(*args: str, **fields: Any) -> AnyPb:
    """An exec's process spec, as JSON in an Any."""
    body: dict[str, Any] = {"args": list(args), "cwd": "/", "env": ["PATH=/bin:/usr/bin"]}
    body.update(fields)
    return AnyPb(type_url=PROCESS_TYPE_URL, value=json.dumps(body).encode())


@dataclass
class TaskWire:
    """Stubs to one backend in one namespace, and a busybox root for its containers."""

    channel: Channel
    namespace: str
    root: Path

    def _md(self) -> dict[str, str]:
        return {NAMESPACE_HEADER: self.namespace}

    @property
    def tasks(self) -> tpb.TasksStub:
        """The Tasks service."""
        return tpb.TasksStub(self.channel, metadata=self._md(), timeout=20)

    @property
    def containers(self) -> cpb.ContainersStub:
        """The Containers service."""
        return cpb.ContainersStub(self.channel, metadata=self._md(), timeout=20)

    @property
    def store(self) -> spb.StoreStub:
        """The sandbox store."""
        return spb.StoreStub(self.channel, metadata=self._md(), timeout=20)

    async def container(
        self, cid: str, *args: str, sandbox: str = "", tty: bool = False, no_args: bool = False
    ) -> None:
        """A container record on the busybox root running ``args``."""
        spec = oci.generate_spec(oci.with_process_args(*(args or ("sleep", "60"))))
        spec["root"] = {"path": str(self.root)}
        if no_args:
            del spec["process"]["args"]
        if tty:
            spec["process"]["terminal"] = True
        record = cpb.Container(
            id=cid,
            runtime=cpb.ContainerRuntime(name=RUNTIME),
            spec=AnyPb(type_url=RUNTIME_SPEC_TYPE_URL, value=json.dumps(spec).encode()),
            sandbox=sandbox,
        )
        await self.containers.create(cpb.CreateContainerRequest(container=record))

    async def task(self, cid: str, *args: str, start: bool = True) -> int:
        """A container and its task (started unless told not to); the pid."""
        await self.container(cid, *args)
        created = await self.tasks.create(
            tpb.CreateTaskRequest(container_id=cid, stdout=NULL, stderr=NULL)
        )
        if start:
            await self.tasks.start(tpb.StartRequest(container_id=cid))
        return created.pid

    async def exited(self, cid: str) -> None:
        """A task whose process has run and exited (code 3), not deleted."""
        await self.task(cid, "sh", "-c", "exit 3")
        await self.tasks.wait(tpb.WaitRequest(container_id=cid))

    async def exec(self, cid: str, eid: str, *args: str, start: bool = True, **kw: Any) -> None:
        """Exec ``args`` (``sleep 60`` by default) into ``cid``'s task."""
        kw.setdefault("stdout", NULL)
        kw.setdefault("stderr", NULL)
        await self.tasks.exec(
            tpb.ExecProcessRequest(
                container_id=cid, exec_id=eid, spec=process_spec(*(args or ("sleep", "60"))), **kw
            )
        )
        if start:
            await self.tasks.start(tpb.StartRequest(container_id=cid, exec_id=eid))

    async def sandbox_record(self, sandbox_id: str, sandboxer: str) -> None:
        """A sandbox store record (no controller involved)."""
        now = datetime.now(UTC)
        record = SandboxPb(
            sandbox_id=sandbox_id,
            runtime=SandboxRuntimePb(name=RUNTIME),
            created_at=now,
            updated_at=now,
            sandboxer=sandboxer,
        )
        await self.store.create(spb.StoreCreateRequest(sandbox=record))

    async def clean(self) -> None:
        """Kill and delete every task, then delete every container and sandbox record."""
        with contextlib.suppress(GRPCError):
            for task in (await self.tasks.list(tpb.ListTasksRequest())).tasks:
                await _end_task(self.tasks, task.id)
        with contextlib.suppress(GRPCError):
            for c in (await self.containers.list(cpb.ListContainersRequest())).containers:
                await self.containers.delete(cpb.DeleteContainerRequest(id=c.id))
        with contextlib.suppress(GRPCError):
            for record in (await self.store.list(spb.StoreListRequest())).list:
                await self.store.delete(spb.StoreDeleteRequest(sandbox_id=record.sandbox_id))


async def _end_task(tasks: tpb.TasksStub, cid: str) -> None:
    with contextlib.suppress(GRPCError):
        await tasks.resume(tpb.ResumeTaskRequest(container_id=cid))
    with contextlib.suppress(GRPCError):
        await tasks.kill(tpb.KillRequest(container_id=cid, signal=9, all=True))
    with contextlib.suppress(GRPCError, TimeoutError):
        await asyncio.wait_for(tasks.wait(tpb.WaitRequest(container_id=cid)), 10)
    with contextlib.suppress(GRPCError):
        await tasks.delete(tpb.DeleteTaskRequest(container_id=cid))


@contextlib.asynccontextmanager
async def task_wire(address: str, namespace: str, root: Path) -> AsyncIterator[TaskWire]:
    """A :class:`TaskWire`; what it made is removed afterwards."""
    async with Channel(path=address) as channel:
        wire = TaskWire(channel, namespace, root)
        try:
            yield wire
        finally:
            await wire.clean()


def make_root(path: Path) -> Path:
    """A busybox root filesystem in ``path``."""
    return busybox_root(path)
