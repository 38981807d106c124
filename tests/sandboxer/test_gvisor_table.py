"""The README's isolation table, gVisor's column: a gVisor sandbox made with no options
but ``runtime_handler="gvisor"``, checked from inside as an attacker would and from the
host, row by row (``tests/docs/test_isolation_table.py`` maps each row to this test or to
another gVisor test). The probes are copied in through the files API: a default gVisor
sandbox runs its file server in the sandbox's user namespace, so a host directory bound in
would have to be readable by the sandbox's block of ids.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from sandboxclient import PIPE, Client, Sandbox, oci
from sandboxclient.sandboxer._harden import DEFAULT_CPUS, DEFAULT_MEMORY, DEFAULT_PIDS
from sandboxclient.sandboxer._podlog import DEFAULT_LOG_LIMIT
from tests.support.constants import RUNTIME

from .test_budgets import budget_dir, host_limit, host_once
from .test_gvisor import _need_runsc
from .test_hardening import count_reaches, probe_dir
from .test_isolation import cap_mask

pytestmark = [pytest.mark.anyio, pytest.mark.real]

__all__ = ("budget_dir", "probe_dir")  # the fixtures, shared


async def _probe(sb: Sandbox, *calls: str) -> dict[str, str]:
    found = {}
    for call in calls:
        done = await sb.run("/tmp/probe", call)
        assert done.returncode == 0, done
        name, answer = done.stdout.decode().split()
        found[name] = answer
    return found


async def _field(sb: Sandbox, path: str, field: str) -> str:
    status = (await sb.run("cat", path)).stdout.decode()
    return next(
        line.split(":", 1)[1].strip()
        for line in status.splitlines()
        if line.startswith(f"{field}:")
    )


async def test_a_default_gvisor_sandbox_row_by_row(
    tenant: Client, probe_dir: Path, budget_dir: Path
) -> None:
    _need_runsc()
    async with (
        tenant.sandbox("gtab", runtime=RUNTIME, runtime_handler="gvisor") as sb,
        tenant.sandbox("gtab-next", runtime=RUNTIME, runtime_handler="gvisor") as neighbour,
    ):
        for name, source in (("probe", probe_dir), ("budget", budget_dir)):
            await sb.files.write(f"/tmp/{name}", (source / name).read_bytes(), mode=0o755)
        # Namespaces: gVisor's kernel's own: a few processes, its own host name, loopback.
        pids = (await sb.run("sh", "-c", "ls -d /proc/[0-9]* | wc -l")).stdout
        assert int(pids) < 10
        assert (await sb.run("hostname")).stdout.strip() != socket.gethostname().encode()
        # Another tenant's processes are not there: the neighbour's pids are its own.
        theirs = (await neighbour.run("sh", "-c", "ls -d /proc/[0-9]* | wc -l")).stdout
        assert int(theirs) < 10
        # seccomp: the default profile on the sandbox's process, enforced by gVisor's
        # kernel; an exec runs under gVisor's kernel with none of its own.
        assert await _field(sb, "/proc/1/status", "Seccomp") == "2"
        assert await _field(sb, "/proc/self/status", "Seccomp") == "0"
        # What an exec can call: gVisor's kernel answers, never the host's.
        assert await _probe(sb, "add_key", "keyctl", "bpf", "unshare", "clone3", "getpid") == {
            "add_key": "EACCES",  # gVisor's own keyrings: the host's are not reachable
            "keyctl": "EACCES",
            "bpf": "EPERM",
            "unshare": "OK",  # a user namespace of gVisor's kernel, not the host's
            "clone3": "ENOSYS",
            "getpid": "OK",
        }
        mounted = await sb.run("mount", "-t", "tmpfs", "none", "/mnt")
        assert mounted.returncode != 0
        compat = await sb.run("/tmp/probe", "int80")  # handled by gVisor, no SIGSYS
        assert compat.returncode == 0, compat
        # Capabilities: containerd's default 14 but CAP_NET_RAW, which runsc drops (it runs
        # without --net-raw); root inside.
        assert await _field(sb, "/proc/1/status", "CapEff") == cap_mask(
            *(c for c in oci.DEFAULT_CAPABILITIES if c != "CAP_NET_RAW")
        )
        assert (await sb.run("id", "-u")).stdout == b"0\n"
        # tmpfs: the size holds; gVisor's tmpfs takes no inode bound (its files are gVisor's
        # memory, within the sandbox's memory limit): more files than runc's bound fit.
        mounts = (await sb.run("cat", "/proc/mounts")).stdout.decode().splitlines()
        sizes = {line.split()[1]: line.split()[3] for line in mounts if " tmpfs " in line}
        for where in ("/tmp", "/run", "/dev/shm"):
            assert "size=65536k" in sizes[where].split(","), (where, sizes)
            assert "nr_inodes" not in sizes[where]
        fill = "mkdir /tmp/f && cd /tmp/f && seq 1 17000 | xargs touch; ls | wc -l"
        assert int((await sb.run("sh", "-c", fill, timeout=300)).stdout) == 17000
        # Limits: the sandboxer's defaults, on the cgroup of the whole sandbox.
        info = (await sb.status(verbose=True)).info
        assert int(info["memory_limit_bytes"]) == DEFAULT_MEMORY
        assert int(info["pids_limit"]) == DEFAULT_PIDS
        assert float(info["cpu_limit"]) == DEFAULT_CPUS
        # Per-uid budgets: gVisor's kernel keeps its own; a fill inside leaves the host's.
        async with await sb.spawn("/tmp/budget", "inotify", "fill", stdin=PIPE, stdout=PIPE) as hog:
            assert hog.stdout is not None
            line = (await hog.stdout.readline()).decode().split()
            assert line[0] == "inotify"
            # gVisor's own accounting: bounded by the process's open files, not the
            # host's per-user budget, which stays untouched.
            assert line[2] == "EMFILE", line
            assert int(line[1]) > host_limit("max_user_instances")
            assert host_once(budget_dir, "inotify") == "OK"
            assert (await neighbour.run("/bin/true")).returncode == 0
        # The output log: bounded as under runc, the drop counted.
        flood = DEFAULT_LOG_LIMIT + 4_000_000
        done = await sb.run("sh", "-c", f"head -c {flood} /dev/zero > /proc/1/fd/1", timeout=120)
        assert done.returncode == 0, done
        await count_reaches(sb, flood - DEFAULT_LOG_LIMIT, 60)
        assert os.uname().release not in (await sb.run("uname", "-r")).stdout.decode()
