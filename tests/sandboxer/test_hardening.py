"""Secure by default: a sandbox asked for with no seccomp profile or limits, checked from
inside (the sandbox's process, an exec, a member) and from the host, on a real containerd.

The probe is a small static program built here that makes one system call and prints the
errno: the busybox root has no keyctl, bpf or clone3 of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sandboxclient import Client, InvalidArgumentError, Sandbox, Task, oci
from sandboxclient.errors import UnknownError
from sandboxclient.sandboxer._harden import (
    DEFAULT_CPUS,
    DEFAULT_MEMORY,
    DEFAULT_PIDS,
    TMPFS_INODES,
)
from sandboxclient.sandboxer._podlog import DEFAULT_LOG_LIMIT
from tests.support.backends import PLUGIN_NAME, Backend, RealContainerd, new_namespace
from tests.support.cgroups import cgroup_v1, limit_file, read_limit, sandbox_process_cgroup
from tests.support.cli import Cli
from tests.support.constants import MKDIR_DENIED, RUNTIME
from tests.support.containers import started
from tests.support.ctr import answering, client_for, nothing_left
from tests.support.helpers import until, wait_pid_gone
from tests.support.host import busybox_root, holders
from tests.support.slowdown import slowed

pytestmark = [pytest.mark.anyio, pytest.mark.real]

PROBE_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long r = -1;
    const char *what = argc > 1 ? argv[1] : "";
    if (!strcmp(what, "add_key")) r = syscall(SYS_add_key, "user", "probe", "x", 1, -3);
    else if (!strcmp(what, "keyctl")) r = syscall(SYS_keyctl, 0, -3, 0);
    else if (!strcmp(what, "bpf")) r = syscall(SYS_bpf, 0, 0, 0);
    else if (!strcmp(what, "unshare")) r = syscall(SYS_unshare, CLONE_NEWUSER);
    else if (!strcmp(what, "clone3")) r = syscall(SYS_clone3, 0, 0);
    else if (!strcmp(what, "getpid")) r = syscall(SYS_getpid);
    else if (!strcmp(what, "int80")) {  /* getpid through the 32-bit compat entry */
        __asm__ volatile("int $0x80" : "=a"(r) : "a"(20L) : "memory");
        if (r < 0) { errno = (int)-r; r = -1; }
    }
    else return 2;
    printf("%s %s\n", what, r < 0 ? strerrorname_np(errno) : "OK");
    return 0;
}
"""
REFUSED = {
    "add_key": "EPERM",
    "keyctl": "EPERM",
    "bpf": "EPERM",
    "unshare": "EPERM",
    "clone3": "ENOSYS",
    "getpid": "OK",
}
PROBE_DIR = "/probe"


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the static probe (needs gcc and a static libc on the host)."""
    if shutil.which("gcc") is None:
        pytest.fail("these tests build a static probe: install gcc and libc6-dev")
    where = tmp_path_factory.mktemp("probe")
    (where / "probe.c").write_text(PROBE_C)
    built = subprocess.run(
        ["gcc", "-static", "-O2", "-o", str(where / "probe"), str(where / "probe.c")],
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:  # gcc is there, a static libc may not be
        pytest.fail(f"cannot build the static probe (install libc6-dev): {built.stderr}")
    where.chmod(0o755)
    return where


@pytest.fixture(scope="module")
def probe_root(tmp_path_factory: pytest.TempPathFactory, probe_dir: Path) -> Path:
    """A busybox root with the probe in /bin, for members."""
    root = busybox_root(tmp_path_factory.mktemp("probe-root"))
    shutil.copy2(probe_dir / "probe", root / "bin" / "probe")
    return root


def with_probe(probe_dir: Path) -> oci.SpecOpt:
    """The probe's directory, bound read-only: the only thing the spec asks for."""
    return oci.with_mounts(
        [
            {
                "destination": PROBE_DIR,
                "type": "bind",
                "source": str(probe_dir),
                "options": ["rbind", "ro"],
            }
        ]
    )


def bare_spec(probe_dir: Path) -> dict[str, object]:
    """A spec with no seccomp profile and no limits: what the sandboxer hardens."""
    spec = oci.generate_spec(with_probe(probe_dir))
    assert "seccomp" not in spec["linux"]
    return spec


async def probes(run: object, binary: str) -> dict[str, str]:
    """Each probe's answer (``run(*argv)`` runs a command where it is looked at from)."""
    found = {}
    for name in REFUSED:
        done = await run(binary, name)  # type: ignore[operator]
        assert done.returncode == 0, done
        call, answer = done.stdout.decode().split()
        found[call] = answer
    return found


def seccomp_mode(status: bytes) -> str:
    return next(
        line.split(b":", 1)[1].strip().decode()
        for line in status.splitlines()
        if line.startswith(b"Seccomp:")
    )


@pytest.fixture
async def neighbour(tenant: Client) -> AsyncIterator[Sandbox]:
    """A sandbox beside the attacks, which must keep answering."""
    async with tenant.sandbox("neighbour") as sb:
        yield sb


async def answers(sb: Sandbox) -> None:
    done = await asyncio.wait_for(sb.run("echo", "here"), slowed(20))
    assert done.stdout == b"here\n"


# --- seccomp -------------------------------------------------------------------------------


async def test_a_default_sandbox_its_exec_and_process_are_filtered(
    tenant: Client, probe_dir: Path
) -> None:
    async with tenant.sandbox("sec1", spec=bare_spec(probe_dir)) as sb:
        assert seccomp_mode((await sb.run("cat", "/proc/1/status")).stdout) == "2"
        assert seccomp_mode((await sb.run("cat", "/proc/self/status")).stdout) == "2"
        assert await probes(sb.run, f"{PROBE_DIR}/probe") == REFUSED
        # The profile names the native ABI only: a call through the 32-bit entry is a bad
        # architecture, which runc's filter answers by killing the caller (SIGSYS).
        compat = await sb.run(f"{PROBE_DIR}/probe", "int80")
        assert compat.returncode == 128 + signal.SIGSYS, compat
        refused = await sb.run("unshare", "-U", "true")
        assert refused.returncode != 0
        assert b"Operation not permitted" in refused.stderr
        mounted = await sb.run("mount", "-t", "tmpfs", "none", "/mnt")
        assert mounted.returncode != 0
        # clone3 refused, libc falls back to clone: threads and forks still work.
        assert (await sb.run("sh", "-c", "(true) & wait")).returncode == 0
    async with tenant.sandbox("sec2") as sb:  # no spec at all
        assert seccomp_mode((await sb.run("cat", "/proc/1/status")).stdout) == "2"


async def test_a_member_gets_the_default_profile_unless_it_opts_out(
    tenant: Client, probe_root: Path
) -> None:
    async with tenant.sandbox("sec3") as sb:
        spec = oci.generate_spec(oci.with_process_args("sleep", "600"))  # no profile
        async with running_member(sb, "sec3-m1", probe_root, spec) as task:
            status = await task.run("cat", "/proc/self/status")
            assert seccomp_mode(status.stdout) == "2"
            assert seccomp_mode((await task.run("cat", "/proc/1/status")).stdout) == "2"
            assert await probes(task.run, "/bin/probe") == REFUSED
        free = oci.generate_spec(
            oci.with_process_args("sleep", "600"), oci.with_seccomp_unconfined()
        )
        async with running_member(sb, "sec3-m2", probe_root, free) as task:
            status = await task.run("cat", "/proc/self/status")
            assert seccomp_mode(status.stdout) == "0"
            assert (await probes(task.run, "/bin/probe"))["unshare"] == "OK"


async def test_a_spec_profile_is_used_as_given_and_the_opt_out_does_what_it_says(
    tenant: Client, probe_dir: Path
) -> None:
    own = oci.generate_spec(with_probe(probe_dir), oci.with_seccomp(MKDIR_DENIED))
    async with tenant.sandbox("sec4", spec=own) as sb:
        assert seccomp_mode((await sb.run("cat", "/proc/self/status")).stdout) == "2"
        assert (await sb.run("mkdir", "/tmp/nope")).returncode != 0
        found = await probes(sb.run, f"{PROBE_DIR}/probe")
        assert found["unshare"] == "OK"  # its profile allows what it does not name
        assert found["clone3"] != "ENOSYS"
        assert (await sb.status(verbose=True)).info["seccomp"] == "spec"
    free = oci.generate_spec(with_probe(probe_dir), oci.with_seccomp_unconfined())
    async with tenant.sandbox("sec5", spec=free) as sb:
        assert seccomp_mode((await sb.run("cat", "/proc/self/status")).stdout) == "0"
        assert (await probes(sb.run, f"{PROBE_DIR}/probe"))["unshare"] == "OK"
        compat = await sb.run(f"{PROBE_DIR}/probe", "int80")
        assert compat.stdout == b"int80 OK\n"  # no filter: the 32-bit entry answers
        assert (await sb.status(verbose=True)).info["seccomp"] == "unconfined"
    odd = oci.generate_spec(oci.with_annotations({oci.SECCOMP_ANNOTATION: "off"}))
    with pytest.raises(InvalidArgumentError, match=oci.SECCOMP_ANNOTATION):
        async with tenant.sandbox("sec6", spec=odd):
            pass


# --- limits --------------------------------------------------------------------------------


def host_limits(namespace: str, sandbox_id: str) -> tuple[int, float]:
    """The sandbox cgroup's memory-plus-swap limit (v1; v2: memory plus swap.max) and its
    CPU quota in CPUs, read on the host (on v2, of the parent the sandboxer makes)."""
    if cgroup_v1():
        memsw = Path("/sys/fs/cgroup/memory", namespace, sandbox_id, "memory.memsw.limit_in_bytes")
        cpu = Path("/sys/fs/cgroup/cpu", namespace, sandbox_id)
        quota = int((cpu / "cpu.cfs_quota_us").read_text())
        period = int((cpu / "cpu.cfs_period_us").read_text())
        return int(memsw.read_text()), quota / period
    here = Path("/sys/fs/cgroup", namespace, sandbox_id)
    swap = (here / "memory.swap.max").read_text().strip()
    quota_text, period_text = (here / "cpu.max").read_text().split()
    memory = int((here / "memory.max").read_text())
    return memory + (0 if swap == "0" else 1 << 62), int(quota_text) / int(period_text)


@pytest.mark.cgroup2
async def test_a_default_sandbox_has_memory_pids_and_cpu_limits(
    real: RealContainerd, tenant: Client
) -> None:
    async with tenant.sandbox("lim1") as sb:
        usage = await sb.metrics()
        assert usage.memory_limit_bytes == DEFAULT_MEMORY
        assert usage.pids_limit == DEFAULT_PIDS
        assert usage.cpu_limit == DEFAULT_CPUS
        assert host_limits(tenant.namespace, sb.id) == (DEFAULT_MEMORY, DEFAULT_CPUS)
        assert read_limit(f"/{tenant.namespace}/{sb.id}", "pids.max") == DEFAULT_PIDS
        # What is in force shows in Status (verbose) and in sandboxctl status.
        shown = {
            "seccomp": "default",
            "memory_limit_bytes": str(DEFAULT_MEMORY),
            "pids_limit": str(DEFAULT_PIDS),
            "cpu_limit": f"{DEFAULT_CPUS:g}",
            "log_limit_bytes": str(DEFAULT_LOG_LIMIT),
            "log_dropped_bytes": "0",
        }
        info = (await sb.status(verbose=True)).info
        assert {k: info.get(k) for k in shown} == shown
        assert "seccomp" not in (await sb.status()).info  # verbose only
        cli = Cli(Backend("real", real.daemon.address, PLUGIN_NAME, tenant.namespace))
        lines = (await cli.ok("status", sb.id)).out.splitlines()
        for key, value in shown.items():
            assert f"INFO {key}:" in "\n".join(lines), key
            line = next(row for row in lines if row.startswith(f"INFO {key}:"))
            assert line.split(":", 1)[1].strip() == value, line


async def test_a_spec_limit_overrides_the_default(tenant: Client) -> None:
    spec = oci.generate_spec(oci.with_memory_limit(64 * 2**20), oci.with_pids_limit(40))
    async with tenant.sandbox("lim2", spec=spec, cpu=0.5) as sb:
        usage = await sb.metrics()
        assert (usage.memory_limit_bytes, usage.pids_limit) == (64 * 2**20, 40)
        assert usage.cpu_limit == 0.5
        info = (await sb.status(verbose=True)).info
        assert (info["memory_limit_bytes"], info["pids_limit"], info["cpu_limit"]) == (
            str(64 * 2**20),
            "40",
            "0.5",
        )


# A memory hog: a string that doubles till it is 1 GiB, past any limit here within a few
# copies (a byte stream through the shell took minutes in the cgroup v2 pass's emulated VM).
DOUBLING = "awk 'BEGIN { x = \"a\"; while (length(x) < 1073741824) x = x x; print length(x) }'"


@pytest.mark.cgroup2
async def test_a_memory_hog_is_killed_at_the_default_limit(
    tenant: Client, neighbour: Sandbox
) -> None:
    hog = f"echo 1000 > /proc/self/oom_score_adj; exec {DOUBLING}"
    async with tenant.sandbox("hog1") as sb:
        attack = asyncio.create_task(sb.run("sh", "-c", hog, timeout=slowed(120)))
        await answers(neighbour)
        done = await attack
        assert done.returncode == 128 + signal.SIGKILL, done
        usage = await sb.metrics()
        assert usage.oom_kills is not None
        assert usage.oom_kills >= 1
        assert usage.memory_max_usage_bytes is not None
        assert usage.memory_max_usage_bytes <= DEFAULT_MEMORY
        assert (await sb.run("true")).returncode == 0
        await answers(neighbour)


def cgroup_of(pid: int, controller: str) -> str:
    """The path of ``pid``'s cgroup in ``controller``'s hierarchy (v1), or the unified one."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(",") or (not controllers and controller == ""):
            return path
    raise AssertionError(f"no {controller or 'unified'} cgroup for {pid}")


@contextlib.asynccontextmanager
async def running_member(
    sb: Sandbox, member_id: str, root: Path, spec: dict[str, object]
) -> AsyncIterator[Task]:
    """A started member of ``sb``, killed and deleted afterwards."""
    member = await sb.new_container(member_id, rootfs=root, spec=spec)
    async with started(member) as task:
        yield task


@pytest.mark.cgroup2
async def test_a_member_s_cgroup_is_nested_under_its_sandbox_s(
    tenant: Client, probe_root: Path
) -> None:
    async with tenant.sandbox("nest1") as sb:
        parent = f"/{tenant.namespace}/{sb.id}"  # v2: the parent the sandboxer made
        spec = oci.generate_spec(oci.with_process_args("sleep", "600"))
        async with running_member(sb, "nest1-m1", probe_root, spec) as task:
            assert task.pid is not None
            assert sb.pid is not None
            v1 = cgroup_v1()
            controllers = ("pids", "memory", "cpu") if v1 else ("",)
            for controller in controllers:  # v2: the sandbox's process in a leaf of its own
                own = cgroup_of(sb.pid, controller)
                assert own == sandbox_process_cgroup(tenant.namespace, sb.id), controller
                assert cgroup_of(task.pid, controller) == f"{parent}/nest1-m1", controller
            # An exec in the member joins the member's cgroup.
            done = await task.run("cat", "/proc/self/cgroup")
            assert f"{parent}/nest1-m1".encode() in done.stdout
            # A member whose spec names its own cgroup keeps it.
            own_spec = oci.generate_spec(
                oci.with_process_args("sleep", "600"),
                oci.with_cgroup(f"/{tenant.namespace}/elsewhere-nest1-m2"),
            )
            async with running_member(sb, "nest1-m2", probe_root, own_spec) as other:
                assert other.pid is not None
                assert cgroup_of(other.pid, "pids" if v1 else "") == (
                    f"/{tenant.namespace}/elsewhere-nest1-m2"
                )
    # Shut down, the sandbox leaves no cgroup behind (on v2, the parent is removed too).
    assert not limit_file(parent, "pids.max").parent.exists()


@pytest.mark.cgroup2
async def test_a_fork_bomb_in_a_member_stops_at_the_sandbox_pids_limit(
    tenant: Client, neighbour: Sandbox, probe_root: Path
) -> None:
    limit = 64
    # The shell ends at its first failed fork; its sleeps, their output elsewhere, do not hold
    # the exec's open but live on through the checks below.
    bomb = f"for i in $(seq {limit + 100}); do sleep 30 >/dev/null 2>&1 & done; wait"
    async with tenant.sandbox("bomb1", pids=limit) as sb:
        # A member whose spec sets no pids limit of its own: the sandbox's holds.
        spec = oci.generate_spec(oci.with_process_args("sleep", "600"))
        async with running_member(sb, "bomb1-m1", probe_root, spec) as task:
            done = await task.run("sh", "-c", bomb, timeout=120)
            assert done.returncode != 0
            assert b"can't fork" in done.stderr
            await answers(neighbour)
            usage = await sb.metrics()
            assert usage.pids is not None
            assert usage.pids <= limit
            # The whole sandbox's count: its shell and sleep, and at least the member's own.
            assert usage.pids >= 3
            assert read_limit(f"/{tenant.namespace}/{sb.id}", "pids.max") == limit
            # The sandbox itself is at its limit while the member's sleeps live: the shell
            # cannot fork, or runc's own set-up of the exec cannot (which one depends on
            # how many of the sleeps are still there)
            try:
                refused = (await sb.run("sh", "-c", "true & wait")).returncode != 0
            except UnknownError as exc:
                refused = "unable to start container process" in str(exc)
            assert refused


@pytest.mark.cgroup2
async def test_a_memory_hog_in_a_member_is_killed_at_the_sandbox_s_limit(
    tenant: Client, neighbour: Sandbox, probe_root: Path
) -> None:
    hog = f"echo 1000 > /proc/self/oom_score_adj; exec {DOUBLING}"  # as the one above
    async with tenant.sandbox("hog2", memory="48Mi") as sb:
        spec = oci.generate_spec(oci.with_process_args("sleep", "600"))  # no limit of its own
        async with running_member(sb, "hog2-m1", probe_root, spec) as task:
            done = await task.run("sh", "-c", hog, timeout=120)
            assert done.returncode == 128 + signal.SIGKILL, done
            assert done.stdout == b""
            await answers(neighbour)
            assert (await sb.run("true")).returncode == 0


# --- the output log ------------------------------------------------------------------------


async def dropped_so_far(sb: Sandbox) -> int:
    return int((await sb.status()).info["log_dropped_bytes"])


async def count_reaches(sb: Sandbox, expected: int, timeout: float) -> None:
    """Poll Status until the dropped count is ``expected`` (never past it): the keeper
    writes its count to a file every 0.1 s, which nothing announces."""
    async with asyncio.timeout(timeout):
        while (found := await dropped_so_far(sb)) != expected:
            assert found < expected
            await asyncio.sleep(0.05)


def keepers_of(fifo: Path) -> list[int]:
    """The pids of the log keepers (one per sandboxer, shared by its sandboxes) that hold
    ``fifo`` open (the sandbox's shim holds it too, for writing)."""
    return holders(fifo, naming=b"_logcap")


def size(path: Path) -> int:
    return path.stat().st_size


async def test_a_log_flood_stops_at_the_cap_and_the_drop_is_counted(
    real: RealContainerd, tenant: Client, neighbour: Sandbox
) -> None:
    flood = 50_000_000
    # With a user namespace the sandbox's root may not reopen its log through
    # /proc/1/fd/1 (the pipe is the host root's): the host's users keep that route open.
    async with tenant.sandbox("flood1", host_users=True) as sb:
        assert await dropped_so_far(sb) == 0
        done = await sb.run("sh", "-c", f"head -c {flood} /dev/zero > /proc/1/fd/1", timeout=120)
        assert done.returncode == 0, done
        await answers(neighbour)
        expected = flood - DEFAULT_LOG_LIMIT
        await count_reaches(sb, expected, 30)
        directory = Path(real.sandboxer.state_dir, "sandboxes", tenant.namespace, sb.id)
        assert size(directory / "output.log") == DEFAULT_LOG_LIMIT
        fifo = directory / "output.pipe"
        assert len(keepers_of(fifo)) == 1
        # The sandbox's output still flows (and is dropped) rather than blocking it.
        assert (await sb.run("sh", "-c", "echo more > /proc/1/fd/1")).returncode == 0
        await count_reaches(sb, expected + len("more\n"), 10)
    await until(lambda: not keepers_of(fifo))  # the keeper lets go with the sandbox's task


async def test_the_log_stays_bounded_through_a_sandboxer_restart(real: RealContainerd) -> None:
    namespace = new_namespace()
    flood = 20_000_000
    async with client_for(real, namespace) as client:
        sb = await client.new_sandbox("logr1", runtime=RUNTIME, host_users=True)
        await sb.start()
        directory = Path(real.sandboxer.state_dir, "sandboxes", namespace, sb.id)
        await until(lambda: bool(keepers_of(directory / "output.pipe")))  # sent, received
        (keeper,) = keepers_of(directory / "output.pipe")
        real.sandboxer.kill()  # its keeper goes on keeping its logs, until the next takes over
        try:  # the exec goes through containerd's tasks, not the sandboxer
            done = await sb.run("sh", "-c", f"head -c {flood} /dev/zero > /proc/1/fd/1")
            assert done.returncode == 0, done
        finally:
            real.sandboxer.start()
        await answering(sb)
        # The restarted sandboxer ends the old keeper (which writes its count first) and
        # hands the log to its own: the count is exact across the handover.
        await wait_pid_gone(keeper)
        await count_reaches(sb, flood - DEFAULT_LOG_LIMIT, 30)
        assert size(directory / "output.log") == DEFAULT_LOG_LIMIT
        await until(lambda: keepers_of(directory / "output.pipe") not in ([], [keeper]))
        await sb.shutdown()
    # Its keeper lets go of the log with the task.
    await until(lambda: not keepers_of(directory / "output.pipe"))
    nothing_left(real, namespace)


# --- tmpfs inodes --------------------------------------------------------------------------


async def test_every_tmpfs_has_an_inode_bound_and_empty_files_stop_at_it(
    tenant: Client, neighbour: Sandbox
) -> None:
    async with tenant.sandbox("inodes1") as sb:
        mounts = (await sb.run("cat", "/proc/mounts")).stdout.decode().splitlines()
        tmpfs = {line.split()[1]: line.split()[3] for line in mounts if line.split()[2] == "tmpfs"}
        assert {"/tmp", "/dev", "/dev/shm", "/run"} <= set(tmpfs)
        for where, options in tmpfs.items():
            bounded = f"nr_inodes={TMPFS_INODES}" in options.split(",")
            if where in ("/tmp", "/dev", "/dev/shm", "/run"):
                assert bounded, (where, options)
            else:  # runc's masks over /proc: read-only, or /dev/null bound from /dev
                assert bounded or "ro" in options.split(","), (where, options)
        fill = "cd /tmp && seq 1 1000000 | xargs touch 2>/dev/null; ls | wc -l"
        done = await sb.run("sh", "-c", fill, timeout=300)
        made = int(done.stdout)
        assert TMPFS_INODES - 16 <= made < TMPFS_INODES
        await answers(neighbour)
        assert (await sb.run("touch", "/tmp/one-more")).returncode != 0
