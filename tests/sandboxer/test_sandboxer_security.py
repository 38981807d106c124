"""What keeps the sandboxer's socket, its state and its process sandboxes its own, and what
``--isolation none`` refuses: none of this needs containerd."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import stat
import subprocess
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.const import Status

from sandboxclient._facts._wirenames import RUNTIME_SPEC_TYPE_URL
from sandboxclient._serve._server import UnixServer
from sandboxclient._wire._pb import AnyPb, MountPb, SandboxPb, SandboxRuntimePb, sandbox_pb
from sandboxclient.sandboxer import (
    ContainerSandboxer,
    ProcessSandboxer,
    StateDirError,
    serve,
)
from sandboxclient.sandboxer._socket import listen_private
from sandboxclient.sandboxer._spec import UNENFORCED_FIELDS
from sandboxclient.sandboxer._state import SandboxState, StateDir, boot_id
from sandboxclient.sandboxer._supervise import start_ticks
from tests.support.constants import NOBODY, NS, RUNTIME
from tests.support.helpers import (
    SANDBOXER_MODULE,
    expect_error,
    module_env,
    pid_gone,
    wait_pid_gone,
)
from tests.support.host import as_nobody, needs_root

pytestmark = pytest.mark.anyio


def spec_any(body: dict[str, Any]) -> AnyPb:
    return AnyPb(type_url=RUNTIME_SPEC_TYPE_URL, value=json.dumps(body).encode())


def create_request(sandbox_id: str, body: dict[str, Any] | None = None) -> Any:
    return sandbox_pb.ControllerCreateRequest(
        sandbox_id=sandbox_id,
        sandbox=SandboxPb(
            sandbox_id=sandbox_id,
            runtime=SandboxRuntimePb(name=RUNTIME),
            spec=None if body is None else spec_any(body),
        ),
    )


@contextlib.asynccontextmanager
async def controller_stub(
    controller: ProcessSandboxer | ContainerSandboxer, workdir: str
) -> AsyncIterator[sandbox_pb.ControllerStub]:
    path = os.path.join(workdir, "c.sock")
    try:
        async with serve(controller, path), Channel(path=path) as channel:
            yield sandbox_pb.ControllerStub(channel, metadata={"containerd-namespace": NS})
    finally:
        await controller.aclose()


# --- --isolation none refuses what it cannot enforce ------------------------------------------

EXAMPLES: dict[str, object] = {
    "root": {"path": "/srv/root", "readonly": True},
    "mounts": [{"destination": "/data", "type": "bind", "source": "/srv"}],
    "hostname": "tenant-a",
    "domainname": "example.test",
    "hooks": {"prestart": [{"path": "/bin/true"}]},
    "linux": {"namespaces": [{"type": "pid"}]},
    "solaris": {"milestone": "x"},
    "windows": {"layerFolders": ["x"]},
    "vm": {"kernel": {"path": "/k"}},
    "zos": {"namespaces": [{"type": "pid"}]},
    "process.terminal": True,
    "process.consoleSize": {"height": 1, "width": 1},
    "process.user": {"uid": NOBODY, "gid": NOBODY},
    "process.capabilities": {"bounding": []},
    "process.rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1, "soft": 1}],
    "process.noNewPrivileges": True,
    "process.apparmorProfile": "docker-default",
    "process.oomScoreAdj": 500,
    "process.scheduler": {"policy": "SCHED_OTHER"},
    "process.selinuxLabel": "system_u:system_r:container_t:s0",
    "process.ioPriority": {"class": "IOPRIO_CLASS_IDLE"},
    "process.execCPUAffinity": {"initial": "0"},
    "process.commandLine": "cmd.exe",
}
LINUX_FIELDS = {
    "linux.resources": {"memory": {"limit": 1 << 26}},
    "linux.seccomp": {"defaultAction": "SCMP_ACT_ERRNO"},
    "linux.namespaces": [{"type": "network"}],
    "linux.uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
    "linux.maskedPaths": ["/proc/kcore"],
    "linux.readonlyPaths": ["/proc/sys"],
    "linux.cgroupsPath": "/mine",
    "linux.sysctl": {"net.ipv4.ip_forward": "1"},
    "linux.devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}],
}


def _spec_with(field: str, value: object) -> dict[str, Any]:
    top, _, sub = field.partition(".")
    body: dict[str, Any] = {"process": {"args": ["true"]}}
    if top == "process":
        body["process"][sub] = value
    elif sub:
        body[top] = {sub: value}
    else:
        body[top] = value
    return body


def test_every_unenforced_field_has_an_example() -> None:
    assert set(EXAMPLES) == set(UNENFORCED_FIELDS)


@pytest.mark.parametrize(
    ("field", "value"),
    [*EXAMPLES.items(), *LINUX_FIELDS.items()],
    ids=[*EXAMPLES, *LINUX_FIELDS],
)
async def test_isolation_none_refuses_each_field_it_does_not_enforce(
    workdir: str, field: str, value: object
) -> None:
    async with controller_stub(ProcessSandboxer(), workdir) as stub:
        reported = "linux.namespaces" if field == "linux" else field
        message = await expect_error(
            stub.create(create_request("r1", _spec_with(field, value))), Status.INVALID_ARGUMENT
        )
        assert f"spec field {reported} is not enforced with --isolation none" in message
        # Refused on Update too, and nothing was recorded by the Create.
        await stub.create(create_request("r2"))
        await expect_error(
            stub.update(
                sandbox_pb.ControllerUpdateRequest(
                    sandbox_id="r2",
                    sandbox=SandboxPb(spec=spec_any(_spec_with(field, value))),
                    fields=["spec"],
                )
            ),
            Status.INVALID_ARGUMENT,
        )
        await expect_error(
            stub.status(sandbox_pb.ControllerStatusRequest(sandbox_id="r1")), Status.NOT_FOUND
        )


def _with_rootfs(request: Any) -> None:
    request.rootfs = [MountPb(type="bind", source="/srv/root", options=["rbind"])]


def _with_netns(request: Any) -> None:
    request.netns_path = "/run/netns/other"


def _with_options(request: Any) -> None:
    request.options = AnyPb(type_url="containerd.runc.v1.Options", value=b"\x12\x04/bin")


def _with_annotations(request: Any) -> None:
    request.annotations = {"io.example/note": "x"}


def _with_runtime(name: str) -> Callable[[Any], None]:
    def edit(request: Any) -> None:
        request.sandbox.runtime = SandboxRuntimePb(name=name)

    return edit


def _with_runtime_options(request: Any) -> None:
    request.sandbox.runtime.options = AnyPb(
        type_url="containerd.runc.v1.Options", value=b"\x08\x01"
    )


def _with_extension(request: Any) -> None:
    request.sandbox.extensions = {"blob": AnyPb(type_url="example.com/Blob", value=b"b")}


CREATE_FIELDS: dict[str, Callable[[Any], None]] = {
    "rootfs": _with_rootfs,
    "netns_path": _with_netns,
    "options": _with_options,
    "annotations": _with_annotations,
    "runtime.name kata": _with_runtime("io.containerd.kata.v2"),
    "runtime.name runsc": _with_runtime("io.containerd.runsc.v1"),
    "runtime.name made-up": _with_runtime("r"),
    "runtime.options": _with_runtime_options,
}


@pytest.mark.parametrize("field", CREATE_FIELDS)
async def test_isolation_none_refuses_each_create_field_it_does_not_enforce(
    workdir: str, field: str
) -> None:
    async with controller_stub(ProcessSandboxer(), workdir) as stub:
        request = create_request("r1", {"process": {"args": ["true"]}})
        CREATE_FIELDS[field](request)
        message = await expect_error(stub.create(request), Status.INVALID_ARGUMENT)
        assert field.split()[0] in message
        assert "--isolation none" in message
        await expect_error(
            stub.status(sandbox_pb.ControllerStatusRequest(sandbox_id="r1")), Status.NOT_FOUND
        )
        if field.startswith("runtime"):  # a field an Update can set too
            await stub.create(create_request("r2"))
            update = create_request("r2")
            CREATE_FIELDS[field](update)
            await expect_error(
                stub.update(
                    sandbox_pb.ControllerUpdateRequest(
                        sandbox_id="r2", sandbox=update.sandbox, fields=[field.split(".")[0]]
                    )
                ),
                Status.INVALID_ARGUMENT,
            )


@pytest.mark.parametrize("runtime", ["", RUNTIME], ids=["none", "runc"])
async def test_isolation_none_takes_no_runtime_or_runcs(workdir: str, runtime: str) -> None:
    async with controller_stub(ProcessSandboxer(), workdir) as stub:
        request = create_request("ok1", {"process": {"args": ["true"]}})
        request.sandbox.runtime = SandboxRuntimePb(name=runtime)
        request.options = AnyPb(type_url="type.googleapis.com/google.protobuf.Empty")
        await stub.create(request)
        await stub.start(sandbox_pb.ControllerStartRequest(sandbox_id="ok1"))
        done = await stub.wait(sandbox_pb.ControllerWaitRequest(sandbox_id="ok1"), timeout=30)
        assert done.exit_status == 0


@pytest.mark.parametrize(
    "body",
    [
        {"process": {"args": ["true"], "env": ["A=b"], "cwd": "/"}},
        {"ociVersion": "1.2.0", "annotations": {"k": "v"}, "process": {"args": ["true"]}},
        {"process": {"args": ["true"], "terminal": False, "noNewPrivileges": False}},
        {"process": {"args": ["true"]}, "linux": {}, "mounts": [], "hostname": "", "root": None},
        {"process": {"args": ["true"]}, "somethingElse": {"not": "in the runtime spec"}},
    ],
    ids=["args-env-cwd", "metadata", "false-flags", "empty-fields", "unknown-key"],
)
async def test_isolation_none_takes_specs_that_ask_for_nothing_more(
    workdir: str, body: dict[str, Any]
) -> None:
    async with controller_stub(ProcessSandboxer(), workdir) as stub:
        await stub.create(create_request("ok1", body))
        await stub.start(sandbox_pb.ControllerStartRequest(sandbox_id="ok1"))
        done = await stub.wait(sandbox_pb.ControllerWaitRequest(sandbox_id="ok1"), timeout=30)
        assert done.exit_status == 0


# --- --isolation none: the whole tree goes, the output is private -----------------------------


@pytest.mark.parametrize("with_state", [False, True], ids=["memory", "state-dir"])
async def test_stop_and_exit_kill_what_setsid_detached(workdir: str, with_state: bool) -> None:
    state = os.path.join(workdir, "state") if with_state else None
    fifo, ack = os.path.join(workdir, "escaped.fifo"), os.path.join(workdir, "ack.fifo")
    os.mkfifo(fifo)
    os.mkfifo(ack)
    # The detached shell says its own pid (which sleep then keeps) once it is out.
    detach = f"setsid sh -c 'echo $$ > {fifo}; exec sleep 300' </dev/null >/dev/null 2>&1 & "
    async with controller_stub(ProcessSandboxer(state), workdir) as stub:
        await stub.create(create_request("stopped", _sh(detach + "sleep 300")))
        started = await stub.start(sandbox_pb.ControllerStartRequest(sandbox_id="stopped"))
        escaped = await _read_pid(fifo)
        assert not pid_gone(escaped)
        assert _session(escaped) == escaped != _session(started.pid)  # a session of its own
        await stub.stop(sandbox_pb.ControllerStopRequest(sandbox_id="stopped", timeout_secs=5))
        await wait_pid_gone(escaped)
        # And when the sandbox's own process just exits, what it detached goes too.
        await stub.create(create_request("exited", _sh(detach + f"read go < {ack}; exit 0")))
        await stub.start(sandbox_pb.ControllerStartRequest(sandbox_id="exited"))
        escaped = await _read_pid(fifo)
        assert not pid_gone(escaped)
        await asyncio.wait_for(asyncio.to_thread(_write, ack, "go\n"), 20)
        done = await stub.wait(sandbox_pb.ControllerWaitRequest(sandbox_id="exited"), timeout=30)
        assert done.exit_status == 0
        await wait_pid_gone(escaped)


def _sh(script: str) -> dict[str, Any]:
    return {"process": {"args": ["sh", "-c", script]}}


def _read_fifo(path: str) -> int:
    with open(path) as f:  # blocks until the sandbox's shell writes
        return int(f.read())


async def _read_pid(fifo: str) -> int:
    return await asyncio.wait_for(asyncio.to_thread(_read_fifo, fifo), 20)


def _modes(*paths: Path) -> dict[str, int]:
    found = {}
    for path in paths:
        for item in (path, *(path.iterdir() if path.is_dir() else ())):
            found[str(item)] = item.stat().st_mode & 0o777
    return found


def _session(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[3])


async def test_process_output_goes_to_private_files_in_the_state_dir(workdir: str) -> None:
    state = os.path.join(workdir, "state")
    old = os.umask(0)
    try:
        async with controller_stub(ProcessSandboxer(state), workdir) as stub:
            body = {"process": {"args": ["sh", "-c", "echo out; echo err >&2"]}}
            await stub.create(create_request("logs", body))
            await stub.start(sandbox_pb.ControllerStartRequest(sandbox_id="logs"))
            await stub.wait(sandbox_pb.ControllerWaitRequest(sandbox_id="logs"), timeout=30)
            directory = Path(state, "sandboxes", NS, "logs")
            assert (directory / "stdout").read_text() == "out\n"
            assert (directory / "stderr").read_text() == "err\n"
            modes = _modes(Path(state), directory.parent, directory)
            assert {path: m for path, m in modes.items() if m & 0o077} == {}
    finally:
        os.umask(old)


@pytest.mark.parametrize("with_state", [False, True], ids=["memory", "state-dir"])
async def test_a_failed_start_leaves_no_supervisor(workdir: str, with_state: bool) -> None:
    state = os.path.join(workdir, "state") if with_state else None
    before = set(_children())
    controller = ProcessSandboxer(state)
    async with controller_stub(controller, workdir) as stub:
        bodies: list[dict[str, Any]] = [
            {"process": {"args": ["/no/such/program"]}},
            {"process": {"args": ["true"], "cwd": "/no/such/dir"}},
            {"process": {"args": ["no-such-program-on-path"]}},
        ]
        for n, body in enumerate(bodies):
            await stub.create(create_request(f"f{n}", body))
            await expect_error(
                stub.start(sandbox_pb.ControllerStartRequest(sandbox_id=f"f{n}")),
                Status.FAILED_PRECONDITION,
            )
            assert set(_children()) <= before, "a supervisor (or its zombie) was left"
            if state is not None:  # nothing but the record of the sandbox created
                left = _modes(Path(state, "sandboxes", NS, f"f{n}"))
                assert sorted(os.path.basename(p) for p in left) == [f"f{n}", "sandbox.json"]
            else:  # nothing at all
                assert not _exists(controller.sandbox_directory(NS, f"f{n}"))


def _exists(path: str) -> bool:
    return os.path.exists(path)


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _children() -> list[int]:
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{name}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == me:
                    found.append(int(name))
    return found


# --- records are believed only when they are provably the sandboxer's own ------------------


@needs_root
async def test_records_and_exits_written_by_others_are_not_believed(workdir: str) -> None:
    state = os.path.join(workdir, "state")
    store = StateDir(state)
    bystander = await asyncio.create_subprocess_exec("sleep", "300", start_new_session=True)
    try:
        ticks = start_ticks(bystander.pid)
        assert ticks is not None
        # Right boot, right start times, a session leader of this uid: only the command line
        # tells it is no supervisor of the sandboxer's, so nothing the record names is.
        forged = SandboxState(
            namespace=NS,
            sandbox_id="forged",
            sandbox=SandboxPb(sandbox_id="forged", runtime=SandboxRuntimePb(name="r")),
            created_at=datetime.now(UTC),
            pid=bystander.pid,
            pid_start=ticks,
            supervisor_pid=bystander.pid,
            supervisor_start=ticks,
            boot_id=boot_id(),
        )
        store.save(forged)
        # Another record, and an exit file, planted by someone else (uid 65534).
        for sandbox_id in ("planted", "writable"):
            directory = Path(store.private_sandbox_dir(NS, sandbox_id))
            record = dict(forged.to_json(), sandbox_id=sandbox_id)
            (directory / "sandbox.json").write_text(json.dumps(record))
        os.chown(Path(state, "sandboxes", NS, "planted", "sandbox.json"), NOBODY, NOBODY)
        os.chmod(Path(state, "sandboxes", NS, "writable", "sandbox.json"), 0o666)
        exit_path = os.path.join(state, "sandboxes", NS, "forged", f"exit.{bystander.pid}")
        _write(exit_path, json.dumps({"exit_status": 0, "exited_at_ns": 1, "pid": 1}))
        os.chown(exit_path, NOBODY, NOBODY)
        store.close()
        controller = ProcessSandboxer(state)
        assert controller.sandbox_ids(NS) == ["forged"]
        async with controller_stub(controller, workdir) as stub:
            done = await stub.wait(
                sandbox_pb.ControllerWaitRequest(sandbox_id="forged"), timeout=30
            )
            assert done.exit_status == 255  # not the forged 0
            await stub.shutdown(sandbox_pb.ControllerShutdownRequest(sandbox_id="forged"))
        assert bystander.returncode is None
        assert not pid_gone(bystander.pid), "a process named by a record was signalled"
    finally:
        bystander.kill()
        await bystander.wait()


# --- the state directory must be the sandboxer's alone -----------------------------------------


@needs_root
@pytest.mark.parametrize(
    ("mode", "owner", "problem"),
    [
        (0o777, 0, "writable by group or others without the sticky bit (mode 0777)"),
        (0o775, 0, "writable by group or others without the sticky bit (mode 0775)"),
        (0o755, NOBODY, f"owned by uid {NOBODY}"),
        (0o1777, 0, None),  # sticky, as /tmp is: others cannot rename what is not theirs
    ],
    ids=["world-writable-parent", "group-writable-parent", "other-owned-parent", "sticky"],
)
def test_a_state_dir_someone_else_could_replace_is_refused(
    workdir: str, mode: int, owner: int, problem: str | None
) -> None:
    above = os.path.join(workdir, "above")
    os.mkdir(above)
    os.chmod(above, mode)
    os.chown(above, owner, owner)
    state = os.path.join(above, "deeper", "state")
    if problem is None:
        asyncio.run(ProcessSandboxer(state).aclose())
        assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
        return
    with pytest.raises(StateDirError, match=re.escape(problem)):
        ProcessSandboxer(state)
    assert os.listdir(above) == []  # refused before anything was made


@needs_root
def test_a_state_dir_reached_through_a_link_is_checked_and_kept_where_it_led(
    workdir: str,
) -> None:
    # The link's own directory is writable by anyone: the directory is used where the link
    # led when the sandboxer started, wherever the link is pointed afterwards.
    real = os.path.join(workdir, "real")
    os.mkdir(real, 0o700)
    public = os.path.join(workdir, "public")
    os.mkdir(public)
    os.chmod(public, 0o777)
    link = os.path.join(public, "state")
    os.symlink(real, link)
    sandboxer = ProcessSandboxer(link)
    try:
        assert sandboxer.state_dir == real
        assert os.path.exists(os.path.join(real, "isolation"))
        os.unlink(link)
        os.symlink(public, link)
        assert sandboxer.state_dir == real
    finally:
        asyncio.run(sandboxer.aclose())
    assert os.listdir(public) == ["state"]  # nothing was made where the link leads now


@needs_root
@pytest.mark.parametrize("kind", ["process", "container"])
@pytest.mark.parametrize(
    ("setup", "problem"),
    [
        (lambda p: os.chown(p, NOBODY, NOBODY), f"owned by uid {NOBODY}"),
        (lambda p: os.chmod(p, 0o777), "writable by group or others (mode 0777)"),
        (lambda p: os.chmod(p, 0o770), "writable by group or others (mode 0770)"),
    ],
    ids=["other-owner", "world-writable", "group-writable"],
)
def test_a_state_dir_not_the_sandboxers_own_is_refused(
    workdir: str, kind: str, setup: Callable[[str], None], problem: str
) -> None:
    state = os.path.join(workdir, "state")
    os.mkdir(state, 0o700)
    setup(state)
    make = ProcessSandboxer if kind == "process" else ContainerSandboxer
    with pytest.raises(StateDirError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        make(state)
    assert os.listdir(state) == []  # refused before anything was made or read
    done = subprocess.run(
        [
            *SANDBOXER_MODULE,
            "--socket",
            os.path.join(workdir, "s.sock"),
            "--state-dir",
            state,
            "--isolation",
            "none" if kind == "process" else "container",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=module_env(),
        check=False,
    )
    assert done.returncode == 1
    assert problem in done.stderr
    assert not os.path.exists(os.path.join(workdir, "s.sock"))


def test_a_state_dir_of_the_other_isolation_is_refused(workdir: str) -> None:
    state = os.path.join(workdir, "state")
    ProcessSandboxer(state).detach()
    with pytest.raises(StateDirError, match="--isolation none, not container"):
        ContainerSandboxer(state)


# --- the socket is the sandboxer's alone ---------------------------------------------------------


@needs_root
async def test_the_socket_is_0600_whatever_the_umask_and_refuses_others(workdir: str) -> None:
    path = os.path.join(workdir, "sandboxer.sock")
    proc = await asyncio.create_subprocess_exec(
        *SANDBOXER_MODULE,
        "--socket",
        path,
        "--isolation",
        "none",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=module_env(),
        preexec_fn=lambda: os.umask(0),
    )
    try:
        assert proc.stdout is not None
        assert path.encode() in await asyncio.wait_for(proc.stdout.readline(), 30)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert os.stat(path).st_uid == os.geteuid()
        # The same unprivileged user can reach a socket that lets it: the dir is no obstacle.
        control = os.path.join(workdir, "open.sock")
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(control)
        listener.listen()
        os.chmod(control, 0o666)
        try:
            connect = "import socket; socket.socket(socket.AF_UNIX).connect({!r})"
            assert as_nobody(connect.format(control)) == "ok"
            assert as_nobody(connect.format(path)) == "PermissionError"
        finally:
            listener.close()
        assert proc.stderr is not None
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        warning = (await proc.stderr.read()).decode()
        assert "--isolation none" in warning
        assert "nothing is isolated" in warning
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


class _Watched(UnixServer):
    """A server that notes, the moment it has bound, where and how its socket is."""

    seen: list[tuple[str, int, int]]

    async def start_unix(self, path: str) -> None:
        await super().start_unix(path)
        parent = os.stat(os.path.dirname(path)).st_mode
        self.seen.append((path, stat.S_IMODE(parent), stat.S_IMODE(os.stat(path).st_mode)))


async def test_the_socket_is_never_reachable_with_a_wider_mode(workdir: str) -> None:
    path = os.path.join(workdir, "watched.sock")
    server = _Watched([])
    server.seen = []
    old = os.umask(0)
    try:
        await listen_private(server, path, group=os.getegid())
    finally:
        os.umask(old)
    try:
        [(bound, parent_mode, _)] = server.seen
        # Bound away from its path, in a directory only its owner can enter...
        assert bound != path
        assert parent_mode == 0o700
        # ... and moved into place with its mode and group set.
        info = os.stat(path)
        assert stat.S_IMODE(info.st_mode) == 0o660
        assert info.st_gid == os.getegid()
        assert sorted(os.listdir(workdir)) == ["watched.sock"]
    finally:
        await server.shutdown()


def test_help_says_what_is_isolated_and_what_is_not() -> None:
    done = subprocess.run(
        [*SANDBOXER_MODULE, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=module_env(),
        check=True,
    )
    text = " ".join(done.stdout.split())
    for said in (
        "share the host's kernel",
        "Kata",
        "NOTHING IS ISOLATED",
        "mode 0600",
        "runs as root",
        "trusted like a containerd client",
        "join host namespaces by path",
        "bind any host path but / itself",
        "--socket-group",
        "--containerd",
    ):
        assert said in text, said


def _root_bind(request: Any) -> None:
    request.rootfs = [MountPb(type="bind", source="/", options=["rbind", "ro"])]


def _spec_edit(body: dict[str, Any]) -> Callable[[Any], None]:
    def edit(request: Any) -> None:
        request.sandbox.spec = spec_any(body)

    return edit


def _both(*edits: Callable[[Any], None]) -> Callable[[Any], None]:
    def edit(request: Any) -> None:
        for one in edits:
            one(request)

    return edit


_NETNS_B = {"linux": {"namespaces": [{"type": "network", "path": "/run/netns/b"}]}}
ISOLATED_REFUSALS: dict[str, tuple[Callable[[Any], None], str]] = {
    "kata": (_with_runtime("io.containerd.kata.v2"), "runtime.name"),
    "options": (_with_options, "options"),
    "root-path-over-rootfs": (
        _both(_with_rootfs, _spec_edit({"root": {"path": "/srv/other"}})),
        "root.path",
    ),
    "rootfs-binds-host-root": (_root_bind, "rootfs"),
    "mount-binds-host-root": (
        _spec_edit({"mounts": [{"destination": "/h", "type": "bind", "source": "/"}]}),
        "mounts[0].source",
    ),
    "netns-differs": (_both(_with_netns, _spec_edit(_NETNS_B)), "netns_path"),
    "annotation-differs": (
        _both(_with_annotations, _spec_edit({"annotations": {"io.example/note": "y"}})),
        "annotations",
    ),
    "unresolvable-root": (_spec_edit({"root": {"path": "/proc/1/root/x\u0000"}}), "root.path"),
}


@pytest.mark.parametrize("case", ISOLATED_REFUSALS)
async def test_the_isolating_sandboxer_refuses_what_it_would_drop(workdir: str, case: str) -> None:
    edit, field = ISOLATED_REFUSALS[case]
    controller = ContainerSandboxer(containerd=os.path.join(workdir, "no-containerd.sock"))
    async with controller_stub(controller, workdir) as stub:
        request = create_request("c1", {"process": {"args": ["true"]}})
        edit(request)
        message = await expect_error(stub.create(request), Status.INVALID_ARGUMENT)
        assert field in message
        assert controller.sandbox_ids(NS) == []


async def test_the_isolating_sandboxer_takes_what_it_applies(workdir: str) -> None:
    controller = ContainerSandboxer(containerd=os.path.join(workdir, "no-containerd.sock"))
    async with controller_stub(controller, workdir) as stub:
        # What containerd's clients send: a generated spec (root.path "rootfs", the network
        # namespace netns_path names), empty options, rootfs mounts, annotations, runc
        # options, extensions.
        request = create_request(
            "c1", {**_NETNS_B, "annotations": {"a": "1"}, "root": {"path": "rootfs"}}
        )
        _both(_with_rootfs, _with_annotations)(request)
        request.netns_path = "/run/netns/b"
        request.options = AnyPb(type_url="type.googleapis.com/google.protobuf.Empty")
        _with_runtime_options(request)  # its container's runc options
        _with_extension(request)  # the client's metadata, as labels are
        await stub.create(request)
        assert controller.sandbox_ids(NS) == ["c1"]


@pytest.mark.parametrize("key", ["io.containerd.runc.v2.group", "io.kubernetes.cri.sandbox-id"])
async def test_a_shim_group_is_taken_only_as_the_sandbox_s_own_id(workdir: str, key: str) -> None:
    # CRI names a pod sandbox's own id; another id would run it in that sandbox's shim.
    controller = ContainerSandboxer(containerd=os.path.join(workdir, "no-containerd.sock"))
    async with controller_stub(controller, workdir) as stub:
        own = create_request("g1", {"annotations": {key: "g1"}})
        own.annotations = {key: "g1"}
        await stub.create(own)
        for other in (_spec_edit({"annotations": {key: "g1"}}), _with_group(key, "g1")):
            request = create_request("g2", {})
            other(request)
            message = await expect_error(stub.create(request), Status.INVALID_ARGUMENT)
            assert f'annotations["{key}"]' in message
        assert controller.sandbox_ids(NS) == ["g1"]


def _with_group(key: str, value: str) -> Callable[[Any], None]:
    def edit(request: Any) -> None:
        request.annotations = {key: value}

    return edit


async def test_the_isolating_sandboxer_without_containerd_says_so(workdir: str) -> None:
    controller = ContainerSandboxer(containerd=os.path.join(workdir, "no-containerd.sock"))
    async with controller_stub(controller, workdir) as stub:
        await stub.create(create_request("c1"))
        message = await expect_error(
            stub.start(sandbox_pb.ControllerStartRequest(sandbox_id="c1")), Status.UNAVAILABLE
        )
        assert "cannot reach containerd" in message
        assert "no-containerd.sock" in message
        status = await stub.status(sandbox_pb.ControllerStatusRequest(sandbox_id="c1"))
        assert status.state == "SANDBOX_NOTREADY"
    assert not _exists(controller.default_root)  # its private directory went with it
