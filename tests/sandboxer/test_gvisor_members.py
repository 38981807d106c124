"""Members of a gVisor sandbox: runsc subcontainers in the sandbox's gVisor kernel, joined by
CRI's annotations, run through containerd's runc shim with the sandboxer's runsc wrapper.
Checked from inside (the kernel, the shared network, their own pids, their exit status and
streams) and from the host (no runsc, keeper or shim process left); what runsc would drop is
refused by name.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from sandboxclient import PIPE, Client, FailedPreconditionError, oci
from sandboxclient._members._gvisor import (
    CONTAINER_TYPE_ANNOTATION,
    SANDBOX_ID_ANNOTATION,
    annotated_sandbox,
)
from sandboxclient._models import RuntimeInfo
from tests.support.backends import RealContainerd
from tests.support.cgroups import limit_file, process_cgroup, read_limit
from tests.support.constants import RUNTIME
from tests.support.ctr import shims_of
from tests.support.host import busybox_root, processes

from .test_gvisor import _need_runsc, _runsc_processes

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def member_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return busybox_root(tmp_path_factory.mktemp("gvisor-member-root"))


def _processes_naming(*words: str) -> list[str]:
    """The command lines of host processes that name any of ``words`` (runsc's processes,
    the wrapper's keepers)."""
    return [
        b" ".join(argv).decode(errors="replace")
        for _, argv in processes()
        if any(w.encode() in a for a in argv for w in words)
    ]


# -- the client's side, anywhere ------------------------------------------------------------


def _gvisor_sandbox_spec() -> dict[str, object]:
    spec = oci.generate_spec()
    spec["annotations"] = {CONTAINER_TYPE_ANNOTATION: "sandbox", SANDBOX_ID_ANNOTATION: "+s1+"}
    spec["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    spec["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    return spec


def test_a_member_gets_the_joining_annotations_and_the_sandboxs_mappings() -> None:
    joined = annotated_sandbox("s1", _gvisor_sandbox_spec(), RuntimeInfo(RUNTIME), "gvisor")
    assert joined is not None
    assert joined.users is not None
    spec = oci.generate_spec()
    assert joined.users.join(spec)
    joined.apply(spec)
    assert spec["annotations"][CONTAINER_TYPE_ANNOTATION] == "container"
    assert spec["annotations"][SANDBOX_ID_ANNOTATION] == "+s1+"  # the runtime's id
    assert {"type": "user", "path": ""} in spec["linux"]["namespaces"]
    assert spec["linux"]["uidMappings"][0]["hostID"] == 200000
    # A runc sandbox's spec says nothing of the kind.
    assert annotated_sandbox("s1", oci.generate_spec(), RuntimeInfo(RUNTIME), "gvisor") is None


@pytest.mark.parametrize(
    ("opt", "words"),
    [
        (oci.with_memory_limit(64 * 2**20), "linux.resources.memory"),
        (oci.with_default_seccomp(), "linux.seccomp"),
        (
            lambda s: s["linux"]["namespaces"].append({"type": "network", "path": "/x"}),
            "linux.namespaces network path",
        ),
        (
            lambda s: s.setdefault("annotations", {}).update({SANDBOX_ID_ANNOTATION: "other"}),
            SANDBOX_ID_ANNOTATION,
        ),
    ],
)
def test_what_runsc_would_drop_is_refused_by_name(opt: oci.SpecOpt, words: str) -> None:
    joined = annotated_sandbox("s1", _gvisor_sandbox_spec(), RuntimeInfo(RUNTIME), "gvisor")
    assert joined is not None
    spec = oci.generate_spec(opt)
    with pytest.raises(FailedPreconditionError, match=words) as caught:
        joined.apply(spec)
    assert '"gvisor"' in str(caught.value)


def test_a_member_cannot_leave_the_sandboxs_namespaces_or_runtime() -> None:
    joined = annotated_sandbox("s1", _gvisor_sandbox_spec(), RuntimeInfo(RUNTIME), "gvisor")
    assert joined is not None
    with pytest.raises(FailedPreconditionError, match="join_namespaces=False"):
        joined.runtime_for(None, None, join_namespaces=False)
    with pytest.raises(FailedPreconditionError, match="runtime_options"):
        joined.runtime_for(None, ("x", b""), join_namespaces=True)
    with pytest.raises(FailedPreconditionError, match=r'runtime "io\.containerd\.runc\.v1"'):
        joined.runtime_for("io.containerd.runc.v1", None, join_namespaces=True)
    assert joined.runtime_for(None, None, join_namespaces=True) == RuntimeInfo(RUNTIME)


# -- through containerd ---------------------------------------------------------------------


@pytest.mark.real
@pytest.mark.cgroup2
async def test_members_run_in_the_gvisor_sandboxs_kernel(
    real: RealContainerd, tenant: Client, member_root: Path
) -> None:
    _need_runsc()
    sandbox_id = f"gvm-{uuid.uuid4().hex[:8]}"
    server_id, failing_id = f"{sandbox_id}-srv", f"{sandbox_id}-exit"
    parent = f"/{tenant.namespace}/{sandbox_id}"
    async with tenant.sandbox(
        sandbox_id, runtime=RUNTIME, runtime_handler="gvisor", memory="256Mi", pids=512
    ) as sb:
        sandbox_kernel = (await sb.run("sh", "-c", "uname -r; dmesg | head -n 1")).stdout
        # A member whose own process serves one line on the loopback, its output streamed.
        # busybox's nc says nothing when it listens: the shell says so once the kernel's
        # socket table shows the listener (port 7070 is 1B9E, state 0A).
        serve = (
            "echo member-up; echo hello | nc -l -p 7070 & "
            "until cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -q ':1B9E .* 0A '; "
            "do sleep 0.01; done; echo listening; wait; echo done"
        )
        server = await sb.new_container(
            server_id,
            rootfs=member_root,
            spec=oci.generate_spec(oci.with_process_args("sh", "-c", serve)),
        )
        task = await server.new_task(stdout=PIPE)
        await task.start()
        assert task.stdout is not None
        assert await task.stdout.readline() == b"member-up\n"
        assert await task.stdout.readline() == b"listening\n"
        # The sandbox reaches it on the loopback: one gVisor network stack for both.
        fetched = await sb.run("nc", "127.0.0.1", "7070", timeout=30)
        assert fetched.stdout == b"hello\n"
        # Its output ends with its process, and its exit status comes back.
        rest = await task.stdout.read()
        assert rest.endswith(b"done\n")
        assert (await task.wait_exit(timeout=30)).returncode == 0
        await task.delete()
        await server.delete()
        # Inside a member: gVisor's kernel (the sandbox's: same release and boot line),
        # root, the default seccomp profile, pids of its own.
        sleeper = await sb.new_container(
            f"{sandbox_id}-m2",
            rootfs=member_root,
            spec=oci.generate_spec(oci.with_process_args("sleep", "600")),
        )
        task = await sleeper.new_task()
        await task.start()
        seen = await task.run(
            "sh",
            "-c",
            "uname -r; dmesg | head -n 1; id -u; grep Seccomp: /proc/1/status; ps -o pid,comm",
        )
        lines = seen.stdout.decode().splitlines()
        # From the host: the member's processes (its file server) are gVisor's, in the
        # sandbox's cgroup (v2: below the parent the sandboxer made), under its limits.
        gofers = _runsc_processes(f"{sandbox_id}-m2")
        assert gofers
        for pid in gofers:
            where = process_cgroup(pid)
            assert where == parent or where.startswith(f"{parent}/"), (pid, where)
        assert read_limit(parent, "pids.max") == 512
        assert "\n".join(lines[:2]).encode() + b"\n" == sandbox_kernel
        assert "Starting gVisor" in lines[1]
        assert lines[2] == "0"
        assert lines[3].split() == ["Seccomp:", "2"]
        # Its own pid namespace: its sleep as pid 1 and this exec (the shell became ps),
        # none of the sandbox's processes.
        assert sorted(line.split() for line in lines[5:])[0] == ["1", "sleep"]
        assert sorted(line.split()[1] for line in lines[5:]) == ["ps", "sleep"]
        # A signal reaches its process, and the status says which.
        await task.kill()
        assert (await task.wait_exit(timeout=30)).returncode == 137
        # A member whose process fails reports its own code, the sandbox going on.
        failing = await sb.new_container(
            failing_id,
            rootfs=member_root,
            spec=oci.generate_spec(oci.with_process_args("sh", "-c", "exit 7")),
        )
        task = await failing.new_task()
        await task.start()
        assert (await task.wait_exit(timeout=30)).returncode == 7
        assert (await sb.status()).ready
        # A member with a terminal: runsc gets the pty at create, as runc's members do.
        tty = await sb.new_container(
            f"{sandbox_id}-tty",
            rootfs=member_root,
            spec=oci.generate_spec(
                oci.with_tty(),
                oci.with_process_args("sh", "-c", "test -t 0 && echo tty; read go; echo $go"),
            ),
        )
        task = await tty.new_task(terminal=True, stdin=PIPE, stdout=PIPE)
        await task.start()
        assert task.stdout is not None
        assert task.stdin is not None
        assert await task.stdout.readline() == b"tty\r\n"  # a pty writes CR LF
        task.stdin.write(b"went\n")
        await task.stdin.drain()
        assert b"went" in await task.stdout.read()
        assert (await task.wait_exit(timeout=30)).returncode == 0
        await task.delete()
        await tty.delete()
        assert not _processes_naming(server_id)  # deleted: its keeper and gofer gone
        # What runsc would drop is refused, and nothing is made.
        with pytest.raises(FailedPreconditionError, match=r"linux\.resources\.memory"):
            await sb.new_container(
                f"{sandbox_id}-lim",
                rootfs=member_root,
                spec=oci.generate_spec(oci.with_memory_limit(64 * 2**20)),
            )
        with pytest.raises(FailedPreconditionError, match="join_namespaces=False"):
            await sb.new_container(f"{sandbox_id}-own", rootfs=member_root, join_namespaces=False)
        assert {c.id for c in await sb.list_containers()} == {f"{sandbox_id}-m2", failing_id}
    # Shut down with its members: no runsc, keeper or shim process left, no cgroup.
    assert _processes_naming(sandbox_id) == []
    assert shims_of(real, tenant.namespace) == []
    assert not limit_file(parent, "pids.max").parent.exists()


@pytest.mark.real
async def test_a_member_of_a_gvisor_sandbox_not_started_is_refused(
    tenant: Client, member_root: Path
) -> None:
    _need_runsc()
    sb = await tenant.new_sandbox("gvm-cold", runtime=RUNTIME, runtime_handler="gvisor")
    try:
        with pytest.raises(FailedPreconditionError, match="is not started"):
            await sb.new_container("gvm-cold-m", rootfs=member_root, join_namespaces=False)
        assert await sb.list_containers() == []
    finally:
        await sb.shutdown()
