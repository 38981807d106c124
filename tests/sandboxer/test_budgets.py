"""The kernel's per-user budgets are a default sandbox's own, not the host root's: its user
namespace is owned by its block of host ids, so what it holds inside (inotify instances,
POSIX message queue bytes) is charged to the block, on a real containerd.

The probe is a small static program built here: ``budget inotify|mqueue fill`` opens
instances (queues) until the kernel refuses, prints how many and why, and holds them until
its stdin closes; ``budget inotify|mqueue once`` opens one and says whether it could.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from sandboxclient import PIPE, Client, Sandbox
from sandboxclient.sandboxer._userns_owner import owner_of, rlimits_settable
from tests.support.backends import PLUGIN_NAME, Backend, RealContainerd
from tests.support.cli import Cli

pytestmark = [pytest.mark.anyio, pytest.mark.real]

BUDGET_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>
static int one(const char *what, int i) {
    if (!strcmp(what, "inotify")) return inotify_init1(IN_CLOEXEC);
    char name[64];
    snprintf(name, sizeof name, "/budget-%d-%d", (int)getpid(), i);
    int q = mq_open(name, O_CREAT | O_EXCL | O_RDWR, 0600, NULL);
    if (q >= 0) mq_unlink(name);  /* still charged while open, gone with the process */
    return q;
}
int main(int argc, char **argv) {
    if (argc != 3) return 2;
    if (!strcmp(argv[2], "once")) {
        int fd = one(argv[1], 0);
        printf("%s %s\n", argv[1], fd < 0 ? strerrorname_np(errno) : "OK");
        return 0;
    }
    int n = 0;
    while (n < 100000 && one(argv[1], n) >= 0) n++;
    printf("%s %d %s\n", argv[1], n, strerrorname_np(errno));
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {}
    return 0;
}
"""
PROBE_DIR = "/budget"


@pytest.fixture(scope="module")
def budget_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the static probe (needs gcc and a static libc on the host)."""
    if shutil.which("gcc") is None:
        pytest.fail("these tests build a static probe: install gcc and libc6-dev")
    where = tmp_path_factory.mktemp("budget")
    (where / "budget.c").write_text(BUDGET_C)
    built = subprocess.run(
        ["gcc", "-static", "-O2", "-o", str(where / "budget"), str(where / "budget.c")],
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        pytest.fail(f"cannot build the static probe (install libc6-dev): {built.stderr}")
    where.chmod(0o755)  # a user namespace's root is no one on the host: it must enter
    return where


def probe_spec(where: Path) -> dict[str, object]:
    """A spec that only binds the probe in (no rlimits: see _userns_owner)."""
    mount = {"destination": PROBE_DIR, "type": "bind", "source": str(where)}
    return {"mounts": [dict(mount, options=["rbind", "ro"])]}


def host_once(where: Path, what: str) -> str:
    """The probe's answer run on the host, as its root."""
    done = subprocess.run(
        [str(where / "budget"), what, "once"], capture_output=True, text=True, check=True
    )
    return done.stdout.split()[1]


async def inside_once(sb: Sandbox, what: str) -> str:
    done = await sb.run(f"{PROBE_DIR}/budget", what, "once")
    assert done.returncode == 0, done
    return done.stdout.decode().split()[1]


async def block_start(sb: Sandbox) -> int:
    inside, start, _ = (await sb.run("cat", "/proc/self/uid_map")).stdout.split()
    assert inside == b"0"
    return int(start)


def host_limit(name: str) -> int:
    return int(Path("/proc/sys/fs/inotify", name).read_text())


async def test_the_user_namespace_is_owned_by_the_block(
    real: RealContainerd, tenant: Client, budget_dir: Path
) -> None:
    async with tenant.sandbox("own1") as sb:
        assert sb.pid is not None
        start = await block_start(sb)
        assert owner_of(f"/proc/{sb.pid}/ns/user") == start
        # Status (verbose) and sandboxctl status show the block and the owner.
        shown = {"userns": f"{start}-{start + 65535}", "userns_owner": str(start)}
        info = (await sb.status(verbose=True)).info
        assert {k: info.get(k) for k in shown} == shown
        cli = Cli(Backend("real", real.daemon.address, PLUGIN_NAME, tenant.namespace))
        lines = (await cli.ok("status", sb.id)).out.splitlines()
        for key, value in shown.items():
            assert f"INFO {key}: {value}" in [" ".join(line.split()) for line in lines], key
        # An exec is in the same namespace, charged to the same owner.
        async with await sb.spawn("sleep", "600", stdout=PIPE) as proc:
            assert owner_of(f"/proc/{proc.pid}/ns/user") == start
    # A spec with rlimits of its own gets runc's namespace where runc could not set them in
    # one the block owns (this host's root may lack CAP_SYS_RESOURCE).
    spec = {"process": {"rlimits": [{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 512}]}}
    async with tenant.sandbox("own2", spec=spec) as sb:
        assert sb.pid is not None
        expected = await block_start(sb) if rlimits_settable() else 0
        assert owner_of(f"/proc/{sb.pid}/ns/user") == expected
        assert (await sb.status(verbose=True)).info["userns_owner"] == str(expected)
        assert (await sb.run("sh", "-c", "ulimit -n")).stdout == b"512\n"


@pytest.mark.parametrize("what", ["inotify", "mqueue"])
async def test_exhausting_a_budget_inside_leaves_the_host_root_and_a_neighbour_theirs(
    real: RealContainerd, tenant: Client, budget_dir: Path, what: str
) -> None:
    spec = probe_spec(budget_dir)
    async with (
        tenant.sandbox(f"fill-{what}", spec=spec) as sb,
        tenant.sandbox(f"next-{what}", spec=spec) as neighbour,
    ):
        assert host_once(budget_dir, what) == "OK"
        async with await sb.spawn(
            f"{PROBE_DIR}/budget", what, "fill", stdin=PIPE, stdout=PIPE
        ) as hog:
            assert hog.stdout is not None
            line = (await hog.stdout.readline()).decode().split()
            assert line[0] == what
            held, why = int(line[1]), line[2]
            assert why == "EMFILE", line
            if what == "inotify":  # the block's whole budget, none of it used before
                assert held == host_limit("max_user_instances")
            else:
                assert held >= 1
            assert await inside_once(sb, what) == "EMFILE"  # the budget is spent inside
            assert host_once(budget_dir, what) == "OK"
            assert await inside_once(neighbour, what) == "OK"
        # Once the holder is gone the sandbox has its budget back.
        assert await inside_once(sb, what) == "OK"
