"""What a live sandbox of the isolating sandboxer leaves in the host's mount table, under a
real containerd: nothing. The pin runc joined its user namespace by, and the root the shim
mounted in the task's bundle, are gone once it is started (every new container's mount namespace
copies the host's table, so each mount a live sandbox leaves there slows the next
Tasks.Create); its process holds the namespace and its copy of the root, which execs,
members and Status still find."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandboxclient import Client, oci
from sandboxclient.sandboxer._userns_owner import owner_of
from tests.support.backends import RealContainerd
from tests.support.containers import started

pytestmark = [pytest.mark.anyio, pytest.mark.real]

LIVE = 3


def our_mounts(real: RealContainerd) -> list[str]:
    """The mount points in the host's table under this daemon's or this sandboxer's
    directories, but for the pins of unclaimed blocks (the namespace made ahead for the
    next Start: one at most, whatever the count of live sandboxes)."""
    userns = Path(str(real.sandboxer.state_dir), "userns")
    claimed = {p.name for p in userns.iterdir() if p.name.isdigit()}
    roots = (f"{real.daemon.base_dir}/", f"{real.sandboxer.state_dir}/")
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = Path(line.split()[4])
            if not str(point).startswith(roots):
                continue
            if point.parent == userns and point.name.split(".")[0] not in claimed:
                continue
            found.append(str(point))
    return found


def claims_and_pins(real: RealContainerd) -> tuple[set[str], set[str]]:
    """The indices of the pool's claimed blocks, and of its pinned namespaces."""
    userns = Path(str(real.sandboxer.state_dir), "userns")
    claimed = {p.name for p in userns.iterdir() if p.name.isdigit()}
    return claimed, {p.name.split(".")[0] for p in userns.glob("*.userns")}


async def test_a_live_sandbox_leaves_no_mount_in_the_hosts_table(
    real: RealContainerd, tenant: Client, rootfs: Path
) -> None:
    before = our_mounts(real)
    sandboxes = []
    for i in range(LIVE):
        sb = await tenant.new_sandbox(f"mnt{i}")
        sandboxes.append(sb)
        await sb.start()
    assert sorted(our_mounts(real)) == sorted(before)  # neither its root nor its pin
    for sb in sandboxes:  # its root is there still, in its own mount namespace
        got = await sb.run("sh", "-c", "echo hi > /tmp/f && cat /tmp/f && ls /bin/busybox")
        assert got.stdout.decode().split() == ["hi", "/bin/busybox"]
    claimed, pinned = claims_and_pins(real)
    assert len(claimed) >= LIVE
    assert claimed & pinned == set()  # no claimed block's pin left
    for sb in sandboxes:
        # Its process holds a namespace of the block, owned by it, as Status says; an exec
        # is in it too.
        assert sb.pid is not None
        ns = os.readlink(f"/proc/{sb.pid}/ns/user")
        start = int((await sb.run("cat", "/proc/self/uid_map")).stdout.split()[1])
        assert owner_of(f"/proc/{sb.pid}/ns/user") == start
        assert (await sb.status(verbose=True)).info["userns_owner"] == str(start)
        assert (await sb.run("readlink", "/proc/self/ns/user")).stdout.decode().strip() == ns
    # A member joins it through the sandbox's process.
    first = sandboxes[0]
    spec = oci.generate_spec(oci.with_process_args("sleep", "600"))
    member = await first.new_container("mnt0-m", rootfs=rootfs, spec=spec)
    async with started(member) as task:
        assert os.readlink(f"/proc/{task.pid}/ns/user") == os.readlink(f"/proc/{first.pid}/ns/user")
    for sb in sandboxes:
        await sb.shutdown()
    assert sorted(our_mounts(real)) == sorted(before)
