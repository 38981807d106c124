"""The isolating sandboxer under a real containerd, checked from inside as an attacker would.

Every property is looked at from within the sandbox (an exec into its task, ``Sandbox.run``)
or a member container, and compared with what the host has: namespaces, root filesystem,
user, capabilities, seccomp, limits, and what one tenant can reach of another.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.const import Status

from sandboxclient import (
    Client,
    FailedPreconditionError,
    InvalidArgumentError,
    oci,
)
from sandboxclient._facts._wirenames import NAMESPACE_HEADER, RUNTIME_SPEC_TYPE_URL
from sandboxclient._proto.containerd.runc import v1 as runc_v1
from sandboxclient._wire._pb import AnyPb, MountPb, SandboxPb, SandboxRuntimePb, sandbox_pb
from tests.support.backends import PLUGIN_NAME, RealContainerd, new_namespace
from tests.support.constants import MKDIR_DENIED, NOBODY, RUNTIME
from tests.support.ctr import ctr_ids, nothing_left, shims_of
from tests.support.helpers import (
    expect_error,
    pid_gone,
    pid_namespace_members,
    until,
    wait_pid_gone,
)
from tests.support.host import as_nobody, busybox_root

pytestmark = [pytest.mark.anyio, pytest.mark.real]

NAMESPACES = ("pid", "mnt", "uts", "ipc", "net")
SHOW = (
    "for n in pid mnt uts ipc net; do readlink /proc/self/ns/$n; done; hostname; id -u; id -g; "
    "grep -E '^(NoNewPrivs|CapEff|CapBnd|Seccomp):' /proc/self/status"
)


@pytest.fixture(scope="module")
def member_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return busybox_root(tmp_path_factory.mktemp("member-root"))


def names(directory: Path) -> list[str]:
    """The sorted names in ``directory`` (a sync helper: the event loop need not care)."""
    return sorted(p.name for p in directory.iterdir())


def mount_points() -> list[str]:
    """Every mount point in this mount namespace (mountinfo's fifth field, unescaped)."""
    with open("/proc/self/mountinfo") as f:
        fields = [line.split(" ")[4] for line in f]
    return [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), p) for p in fields]


def exists(path: Path) -> bool:
    return path.exists()


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def host_ns() -> dict[str, str]:
    return {kind: os.readlink(f"/proc/self/ns/{kind}") for kind in NAMESPACES}


def shown(stdout: bytes) -> tuple[dict[str, str], list[str], dict[str, str]]:
    """What SHOW printed: the namespaces, hostname/uid/gid, and the status lines."""
    lines = stdout.decode().splitlines()
    namespaces = dict(zip(NAMESPACES, lines[:5], strict=True))
    status = dict(line.split(":\t", 1) for line in lines[8:])
    return namespaces, lines[5:8], {k: v.strip() for k, v in status.items()}


def cap_mask(*names: str) -> str:
    return f"{sum(1 << oci.KNOWN_CAPABILITIES.index(n) for n in names):016x}"


async def test_a_sandbox_and_its_member_are_in_namespaces_of_their_own(
    tenant: Client, member_root: Path
) -> None:
    spec = oci.generate_spec(
        oci.with_hostname("tenant-a"),
        oci.with_uidgid(NOBODY, NOBODY),
        oci.with_capabilities(["CAP_NET_BIND_SERVICE"]),
        oci.with_ambient_capabilities(["CAP_NET_BIND_SERVICE"]),  # kept by a non-root user
        oci.with_seccomp(MKDIR_DENIED),
    )
    async with tenant.sandbox("ns1", spec=spec) as sb:
        done = await sb.run("sh", "-c", SHOW)
        assert done.returncode == 0, done
        inside, (hostname, uid, gid), status = shown(done.stdout)
        host = host_ns()
        for kind in NAMESPACES:
            assert inside[kind] != host[kind], kind
        assert (hostname, uid, gid) == ("tenant-a", str(NOBODY), str(NOBODY))
        assert status["NoNewPrivs"] == "1"
        assert status["CapEff"] == cap_mask("CAP_NET_BIND_SERVICE")
        assert status["CapBnd"] == cap_mask("CAP_NET_BIND_SERVICE")
        assert status["Seccomp"] == "2"
        denied = await sb.run("mkdir", "/tmp/nope")
        assert denied.returncode != 0
        assert b"Operation not permitted" in denied.stderr

        member = await sb.new_container(
            "ns1-m1",
            rootfs=member_root,
            spec=oci.generate_spec(oci.with_process_args("sleep", "600")),
        )
        task = await member.new_task()
        await task.start()
        done = await task.run("sh", "-c", SHOW)
        theirs, (hostname, uid, _), status = shown(done.stdout)
        # Its own spec's defaults: root, containerd's capabilities, and the default seccomp
        # profile the client gives a member whose spec has none (not the sandbox's profile).
        assert uid == "0"
        assert status["NoNewPrivs"] == "1"
        assert status["CapEff"] == cap_mask(*oci.DEFAULT_CAPABILITIES)
        assert status["Seccomp"] == "2"
        assert (await task.run("mkdir", "/tmp/allowed")).returncode == 0
        for kind in NAMESPACES:
            assert theirs[kind] != host[kind], kind
        # A pod: the sandbox's network, IPC and UTS; a PID and mount namespace of its own.
        for kind in ("net", "ipc", "uts"):
            assert theirs[kind] == inside[kind], kind
        for kind in ("pid", "mnt"):
            assert theirs[kind] != inside[kind], kind
        assert hostname == "tenant-a"


async def test_without_a_spec_it_is_still_a_container(tenant: Client) -> None:
    async with tenant.sandbox("bare1") as sb:
        done = await sb.run("sh", "-c", SHOW)
        inside, (hostname, uid, _), status = shown(done.stdout)
        host = host_ns()
        assert all(inside[kind] != host[kind] for kind in NAMESPACES)
        assert (hostname, uid) == ("bare1", "0")  # root inside: containerd's defaults
        assert status["CapEff"] == cap_mask(*oci.DEFAULT_CAPABILITIES)
        assert status["CapBnd"] == cap_mask(*oci.DEFAULT_CAPABILITIES)
        assert status["NoNewPrivs"] == "1"
        assert status["Seccomp"] == "2"  # the sandboxer's default profile
        # The default root is read-only and shared; /tmp is the sandbox's own.
        assert (await sb.run("touch", "/planted")).returncode != 0
        assert (await sb.run("touch", "/tmp/mine")).returncode == 0


async def test_nothing_of_the_host_is_inside(tenant: Client, tmp_path: Path) -> None:
    secret = tmp_path / f"secret-{uuid.uuid4().hex}"
    secret.write_text("host secret\n")
    in_tmp = Path("/tmp") / secret.name
    in_tmp.write_text("host secret\n")
    try:
        assert os.stat("/etc/shadow")
        async with tenant.sandbox("host1") as sb:
            for path in (secret, in_tmp, Path("/etc/shadow"), tmp_path):
                done = await sb.run("sh", "-c", f"test -e {path} || echo absent")
                assert done.stdout == b"absent\n", path
            done = await sb.run("cat", str(in_tmp))
            assert done.returncode != 0
            assert b"host secret" not in done.stdout
    finally:
        in_tmp.unlink()


async def test_the_shared_default_root_is_never_written(
    real: RealContainerd, tenant: Client, tmp_path: Path
) -> None:
    shared = Path(real.sandboxer.state_dir, "default-root", "fs")
    (tmp_path / "seen-inside").write_text("mounted\n")
    os.chmod(tmp_path, 0o755)  # the sandbox's root is no one on the host: others must enter
    mount = {"destination": "/brand-new", "type": "bind", "source": str(tmp_path)}
    spec = oci.generate_spec(oci.with_mounts([dict(mount, options=["rbind", "ro"])]))
    async with tenant.sandbox("shared1", spec=spec) as sb:
        assert (await sb.run("cat", "/brand-new/seen-inside")).stdout == b"mounted\n"
        assert (await sb.run("touch", "/bin/planted")).returncode != 0
        assert "brand-new" not in names(shared)  # its mount point is in its own layer
        assert "planted" not in names(shared / "bin")
        # containerd's shim idmaps the root through its parent, from 2.3 with every mount
        # below: none of the state directory's pins and disks may be there.
        assert names(shared.parent) == ["fs"]
        assert not [m for m in mount_points() if m.startswith(f"{shared.parent}/")]
    assert "brand-new" not in names(shared)


async def test_a_memory_hog_is_killed_at_the_limit(tenant: Client) -> None:
    limit = 32 * 2**20
    hog = (
        "echo 1000 > /proc/self/oom_score_adj; "  # the OOM killer's first choice: this one
        "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo ${#x}"
    )
    async with tenant.sandbox("mem1", spec=oci.generate_spec(oci.with_memory_limit(limit))) as sb:
        done = await sb.run("sh", "-c", hog)
        assert done.returncode == 128 + signal.SIGKILL
        assert done.stdout == b""
        usage = await sb.metrics()
        assert usage.memory_limit_bytes == limit
        assert usage.oom_kills is not None
        assert usage.oom_kills >= 1
        assert (await sb.status()).ready
        assert (await sb.run("true")).returncode == 0
    # The sandbox's own process over the limit: its exit is the sandbox's.
    spec = oci.generate_spec(oci.with_memory_limit(limit), oci.with_process_args("sh", "-c", hog))
    async with tenant.sandbox("mem2", spec=spec) as sb:
        status = await asyncio.wait_for((await sb.wait()).get(), 60)
        assert (status.error, status.returncode) == (None, 128 + signal.SIGKILL)


async def test_a_fork_bomb_stops_at_the_pids_limit(tenant: Client) -> None:
    limit = 24
    async with tenant.sandbox("pids1", spec=oci.generate_spec(oci.with_pids_limit(limit))) as sb:
        bomb = asyncio.create_task(
            sb.run("sh", "-c", "for i in $(seq 200); do sleep 3 & done; wait", timeout=60)
        )
        try:
            peak = 0  # the pids cgroup counts the exec's own processes too: at most the limit
            async with asyncio.timeout(30):
                while peak < limit - 1 and not bomb.done():
                    usage = await sb.metrics()
                    assert usage.pids_limit == limit
                    assert usage.pids is not None
                    assert usage.pids <= limit
                    peak = max(peak, usage.pids)
            done = await bomb
        finally:
            bomb.cancel()
        assert peak >= limit - 1, done
        assert done.returncode != 0
        assert b"can't fork" in done.stderr
        # Once its processes are gone the sandbox is as it was.
        assert (await sb.run("true")).returncode == 0
        assert (await sb.status()).ready


def _running(argv: bytes) -> set[int]:
    found = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if Path(f"/proc/{name}/cmdline").read_bytes() == argv and not pid_gone(int(name)):
                    found.add(int(name))
            except OSError:
                continue
    return found


async def test_setsid_and_double_forks_go_with_stop(tenant: Client) -> None:
    async with tenant.sandbox("setsid1") as sb:
        pid = sb.pid
        assert pid is not None
        pid_ns = os.readlink(f"/proc/{pid}/ns/pid")
        quiet = "</dev/null >/dev/null 2>&1"
        detach = f"setsid sleep 7771 {quiet} & ( (sleep 7772 {quiet} &) & ) {quiet}"
        assert (await sb.run("sh", "-c", detach, timeout=30)).returncode == 0

        def escaped_now() -> set[int]:
            return _running(b"sleep\x007771\x00") | _running(b"sleep\x007772\x00")

        # The exec returns once its shell does; the grandchild may not have exec'd sleep yet.
        await until(lambda: len(escaped_now()) == 2)
        escaped = escaped_now()
        assert escaped <= pid_namespace_members(pid_ns)
        channel = await sb.wait()
        await sb.stop(grace=5)
        assert (await channel).returncode == 143
        for leftover in escaped:
            await wait_pid_gone(leftover)
        assert _running(b"sleep\x007771\x00") | _running(b"sleep\x007772\x00") == set()
        assert pid_namespace_members(pid_ns) == set()


async def test_one_tenant_cannot_reach_another(real: RealContainerd, tenant: Client) -> None:
    secret = f"s3cret-{uuid.uuid4().hex}"
    spec = {"process": {"args": ["sleep", "600"], "env": [f"TENANT_SECRET={secret}"]}}
    async with (
        tenant.sandbox("victim", spec=spec) as victim,
        Client(real.daemon.address, namespace=new_namespace(), sandboxer=PLUGIN_NAME) as other,
        other.sandbox("attacker") as attacker,
    ):
        assert victim.pid is not None
        # Not through /proc: the attacker sees its own processes, no one's environment.
        done = await attacker.run(
            "sh", "-c", "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'; ls /proc"
        )
        assert secret.encode() not in done.stdout
        pids = [int(p) for p in done.stdout.split() if p.isdigit()]
        # Its own few: its PID 1, and the shell and cat of this exec, in its own numbering.
        assert 1 in pids
        assert len(pids) <= 4, pids
        # Not through the sandboxer's state: nothing there is readable but by its owner.
        state = Path(real.sandboxer.state_dir)
        victim_dir = state / "sandboxes" / tenant.namespace / "victim"
        for path in (state, victim_dir, victim_dir / "sandbox.json", victim_dir / "output.log"):
            assert path.stat().st_uid == 0
            assert path.stat().st_mode & 0o077 == 0, path
        for path in (victim_dir / "sandbox.json", victim_dir / "output.log"):
            assert as_nobody(f"open({str(path)!r}, 'rb').read()") == "PermissionError"
        # Not through the sandboxer's socket: a made-up namespace finds nothing to stop.
        async with Channel(path=real.sandboxer.socket_path) as channel:
            for namespace in (other.namespace, "made-up"):
                stub = sandbox_pb.ControllerStub(channel, metadata={NAMESPACE_HEADER: namespace})
                for call in (
                    stub.stop(sandbox_pb.ControllerStopRequest(sandbox_id="victim")),
                    stub.shutdown(sandbox_pb.ControllerShutdownRequest(sandbox_id="victim")),
                    stub.status(sandbox_pb.ControllerStatusRequest(sandbox_id="victim")),
                ):
                    await expect_error(call, Status.NOT_FOUND)
        assert (await victim.status()).ready
        assert (await victim.run("true")).returncode == 0


async def test_the_sandbox_output_goes_to_a_private_log(
    real: RealContainerd, tenant: Client
) -> None:
    # stderr first: containerd 2.1's shim may drop what stderr says after stdout's last word.
    script = "echo to-stderr >&2; sleep 0.1; echo to-the-log; exit 3"
    spec = {"process": {"args": ["sh", "-c", script]}}
    async with tenant.sandbox("log1", spec=spec) as sb:
        assert (await (await sb.wait()).get()).returncode == 3
        log = Path(real.sandboxer.state_dir, "sandboxes", tenant.namespace, "log1", "output.log")
        assert mode(log) == 0o600
        # The log's keeper copies what the shim passes on: it may land a moment after the exit.
        await until(lambda: set(lines(log)) == {"to-the-log", "to-stderr"})
    assert not exists(log)


async def test_a_failed_start_leaves_nothing_behind(real: RealContainerd, tenant: Client) -> None:
    sb = await tenant.new_sandbox("broken1", spec={"process": {"args": ["/no/such/program"]}})
    shims = set(real.daemon.shim_pids())
    with pytest.raises(FailedPreconditionError, match="no/such/program"):
        await sb.start()
    assert ctr_ids(real, tenant.namespace, "containers") == []
    assert ctr_ids(real, tenant.namespace, "tasks") == []
    assert shims_of(real, tenant.namespace) == []
    assert set(real.daemon.shim_pids()) <= shims
    directory = Path(real.sandboxer.state_dir, "sandboxes", tenant.namespace, "broken1")
    assert names(directory) == ["sandbox.json"]
    assert not (await sb.status()).ready
    await sb.shutdown()


async def test_a_user_namespace_maps_root_inside_to_nobody_outside(tenant: Client) -> None:
    spec = oci.generate_spec(oci.with_user_namespace([(0, 100000, 65536)], [(0, 100000, 65536)]))
    async with tenant.sandbox("userns1", spec=spec) as sb:
        done = await sb.run("sh", "-c", "id -u; cat /proc/self/uid_map")
        assert done.stdout.split()[:4] == [b"0", b"0", b"100000", b"65536"]
        assert sb.pid is not None
        assert os.stat(f"/proc/{sb.pid}").st_uid == 100000
        assert (await sb.run("sh", "-c", "readlink /proc/self/ns/user")).stdout.strip() != (
            os.readlink("/proc/self/ns/user").encode()
        )


async def test_a_root_from_create_mounts_or_the_spec(
    real: RealContainerd, tenant: Client, tmp_path: Path
) -> None:
    root = busybox_root(tmp_path / "root")
    (root / "marker").write_text("the given root\n")
    # Straight on the sandboxer's socket, as containerd forwards a Create with rootfs mounts.
    async with Channel(path=real.sandboxer.socket_path) as channel:
        stub = sandbox_pb.ControllerStub(channel, metadata={NAMESPACE_HEADER: tenant.namespace})
        await stub.create(
            sandbox_pb.ControllerCreateRequest(
                sandbox_id="mounted1",
                sandbox=SandboxPb(sandbox_id="mounted1", runtime=SandboxRuntimePb(name=RUNTIME)),
                rootfs=[MountPb(type="bind", source=str(root), options=["rbind", "ro"])],
                annotations={"io.example/tenant": "a"},
            )
        )
        await stub.start(sandbox_pb.ControllerStartRequest(sandbox_id="mounted1"))
        try:
            container = await tenant.load_container("mounted1")
            applied = await container.spec()
            assert applied is not None
            assert applied["annotations"]["io.example/tenant"] == "a"
            task = await container.task()
            assert (await task.run("cat", "/marker")).stdout == b"the given root\n"
        finally:
            await stub.shutdown(sandbox_pb.ControllerShutdownRequest(sandbox_id="mounted1"))
    spec = oci.generate_spec(oci.with_rootfs_path(str(root)))
    async with tenant.sandbox("pathroot1", spec=spec) as sb:
        assert (await sb.run("cat", "/marker")).stdout == b"the given root\n"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"hooks": {"prestart": [{"path": "/bin/true"}]}}, "hooks"),
        ({"process": {"terminal": True}}, "process.terminal"),
        ({"root": {"path": "/"}}, "root.path"),
        ({"root": {"path": "elsewhere"}}, "root.path"),
        ({"root": {"path": "/proc/1/root"}}, "root.path"),
        ({"mounts": [{"destination": "/h", "type": "bind", "source": "/"}]}, "mounts[0].source"),
        (
            {"annotations": {"io.containerd.runc.v2.group": "another"}},
            'annotations["io.containerd.runc.v2.group"]',
        ),
        (
            {"annotations": {"io.kubernetes.cri.sandbox-id": "another"}},
            'annotations["io.kubernetes.cri.sandbox-id"]',
        ),
    ],
)
async def test_what_cannot_be_given_is_refused_at_create(
    tenant: Client, spec: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=re.escape(field)):
        await tenant.new_sandbox("refused1", spec=spec)
    assert await tenant.list_sandboxes() == []


async def test_a_member_runs_with_the_user_and_limits_of_its_own_spec(
    tenant: Client, member_root: Path
) -> None:
    async with tenant.sandbox("mspec1") as sb:
        spec = oci.generate_spec(
            oci.with_process_args("sleep", "600"),
            oci.with_uidgid(NOBODY, NOBODY),
            oci.with_capabilities(["CAP_NET_BIND_SERVICE"]),
            oci.with_ambient_capabilities(["CAP_NET_BIND_SERVICE"]),
            oci.with_seccomp(MKDIR_DENIED),
        )
        member = await sb.new_container("mspec1-m1", rootfs=member_root, spec=spec)
        task = await member.new_task()
        await task.start()
        done = await task.run("sh", "-c", SHOW)
        assert done.returncode == 0, done
        _, (_, uid, gid), status = shown(done.stdout)
        assert (uid, gid) == (str(NOBODY), str(NOBODY))
        assert status["NoNewPrivs"] == "1"
        assert status["CapEff"] == cap_mask("CAP_NET_BIND_SERVICE")
        assert status["Seccomp"] == "2"
        denied = await task.run("mkdir", "/tmp/nope")
        assert b"Operation not permitted" in denied.stderr


async def test_a_controller_shutdown_takes_the_live_members_with_it(
    real: RealContainerd, tenant: Client, member_root: Path
) -> None:
    sb = await tenant.new_sandbox("direct1")
    await sb.start()
    member = await sb.new_container(
        "direct1-m1",
        rootfs=member_root,
        spec=oci.generate_spec(oci.with_process_args("sleep", "600")),
    )
    task = await member.new_task()
    await task.start()
    assert task.pid is not None
    member_pid = task.pid
    # The controller's own Shutdown, not Sandbox.shutdown (which deletes members first).
    async with Channel(path=real.sandboxer.socket_path) as channel:
        stub = sandbox_pb.ControllerStub(channel, metadata={NAMESPACE_HEADER: tenant.namespace})
        await stub.shutdown(sandbox_pb.ControllerShutdownRequest(sandbox_id="direct1"))
    await wait_pid_gone(member_pid)
    nothing_left(real, tenant.namespace)
    await sb.shutdown()  # the store record; the controller has forgotten it


async def test_runc_options_are_applied_and_a_started_sandbox_keeps_its_spec(
    real: RealContainerd, tenant: Client, tmp_path: Path
) -> None:
    # runc's own root directory, an option whose effect shows on the host: its state.
    runc_root = tmp_path / "runc"
    options = runc_v1.Options(root=str(runc_root))
    async with tenant.sandbox("upd1", runtime=RUNTIME, runtime_options=options) as sb:
        container = await tenant.load_container("upd1")
        applied = container.metadata.runtime.options
        assert applied is not None
        assert runc_v1.Options.parse(applied.value) == options
        assert (runc_root / tenant.namespace / "upd1" / "state.json").is_file()
        async with Channel(path=real.sandboxer.socket_path) as channel:
            stub = sandbox_pb.ControllerStub(channel, metadata={NAMESPACE_HEADER: tenant.namespace})
            body = json.dumps({"process": {"args": ["sleep", "1"]}}).encode()
            update = sandbox_pb.ControllerUpdateRequest(
                sandbox_id="upd1",
                sandbox=SandboxPb(spec=AnyPb(type_url=RUNTIME_SPEC_TYPE_URL, value=body)),
                fields=["spec"],
            )
            message = await expect_error(stub.update(update), Status.FAILED_PRECONDITION)
            assert "spec" in message
            runtime = sandbox_pb.ControllerUpdateRequest(
                sandbox_id="upd1",
                sandbox=SandboxPb(runtime=SandboxRuntimePb(name=RUNTIME)),
                fields=["runtime"],
            )
            message = await expect_error(stub.update(runtime), Status.FAILED_PRECONDITION)
            assert "runtime" in message
            labels = sandbox_pb.ControllerUpdateRequest(
                sandbox_id="upd1", sandbox=SandboxPb(labels={"a": "b"}), fields=["labels"]
            )
            await stub.update(labels)
        assert (await sb.status()).ready
