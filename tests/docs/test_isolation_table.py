"""The README's "What it isolates" table cannot drift from the suite: every row names a fact
that a test checks on a real containerd (mapped here to the test's node id, which must
exist), every mapped fact is a row, and the defaults it quotes are the code's own.

The checker is shown catching a made-up table (``test_the_check_catches_*``), so that a
check that quietly stopped seeing rows would fail.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from sandboxclient.sandboxer._harden import (
    DEFAULT_CPUS,
    DEFAULT_MEMORY,
    DEFAULT_PIDS,
    TMPFS_INODES,
)
from sandboxclient.sandboxer._podlog import DEFAULT_LOG_LIMIT
from tests.support.constants import REPO_ROOT

HARDENING = "tests/sandboxer/test_hardening.py"
ISOLATION = "tests/sandboxer/test_isolation.py"
USERNS = "tests/sandboxer/test_userns.py"
BUDGETS = "tests/sandboxer/test_budgets.py"
NETWORK = "tests/sandboxer/test_network.py"

CHECKED_BY = {
    "network": f"{NETWORK}::test_a_sandbox_without_a_network_has_only_lo",
    "egress of a bridge sandbox": (
        f"{NETWORK}::test_egress_between_sandboxes_test_hosts_and_the_host"
    ),
    "published ports": f"{NETWORK}::test_a_published_port_reaches_a_server_inside_from_loopback",
    "own pid, mount, network, IPC, UTS namespaces": (
        f"{ISOLATION}::test_without_a_spec_it_is_still_a_container"
    ),
    "nothing of the host's files inside": f"{ISOLATION}::test_nothing_of_the_host_is_inside",
    "seccomp filter (`Seccomp: 2`)": (
        f"{HARDENING}::test_a_default_sandbox_its_exec_and_process_are_filtered"
    ),
    "`unshare`, `mount`, `keyctl`, `add_key`, `bpf` refused": (
        f"{HARDENING}::test_a_default_sandbox_its_exec_and_process_are_filtered"
    ),
    "32-bit system call entry points (`int 0x80`, x32)": (
        f"{HARDENING}::test_a_default_sandbox_its_exec_and_process_are_filtered"
    ),
    "no new privileges": f"{ISOLATION}::test_without_a_spec_it_is_still_a_container",
    "capabilities": f"{ISOLATION}::test_without_a_spec_it_is_still_a_container",
    "runs as a non-root user": (
        f"{USERNS}::test_a_default_sandbox_runs_as_an_unprivileged_block_of_host_ids"
    ),
    "user namespace": f"{USERNS}::test_a_default_sandbox_runs_as_an_unprivileged_block_of_host_ids",
    "memory limit": f"{HARDENING}::test_a_memory_hog_is_killed_at_the_default_limit",
    "tasks (pids) limit": f"{HARDENING}::test_a_default_sandbox_has_memory_pids_and_cpu_limits",
    "CPU limit": f"{HARDENING}::test_a_default_sandbox_has_memory_pids_and_cpu_limits",
    "members and execs count against the sandbox's limits": (
        f"{HARDENING}::test_a_fork_bomb_in_a_member_stops_at_the_sandbox_pids_limit"
    ),
    "output log bounded": f"{HARDENING}::test_a_log_flood_stops_at_the_cap_and_the_drop_is_counted",
    "tmpfs size and inodes (`/tmp`, `/dev`, `/dev/shm`, `/run`)": (
        f"{HARDENING}::test_every_tmpfs_has_an_inode_bound_and_empty_files_stop_at_it"
    ),
    "kernel keyring": f"{USERNS}::test_the_host_roots_keyring_is_invisible_inside",
    "per-uid kernel budgets (inotify, POSIX mqueue)": (
        f"{BUDGETS}::test_exhausting_a_budget_inside_leaves_the_host_root_and_a_neighbour_theirs"
    ),
    "another tenant unreachable (processes, log, controller)": (
        f"{ISOLATION}::test_one_tenant_cannot_reach_another"
    ),
}
"""Each row's fact, as the table's first column writes it, and the test that checks it."""

GVISOR = "tests/sandboxer/test_gvisor.py::test_a_gvisor_sandbox_from_inside_and_from_the_host"
GVISOR_TABLE = "tests/sandboxer/test_gvisor_table.py::test_a_default_gvisor_sandbox_row_by_row"
GVISOR_NETWORK = "tests/sandboxer/test_gvisor_network.py::test_a_gvisor_sandbox_on_the_bridge"
GVISOR_NETWORK_USERNS = (
    "tests/sandboxer/test_gvisor_network.py::test_a_networked_gvisor_sandbox_in_its_user_namespace"
)
GVISOR_MEMBERS = (
    "tests/sandboxer/test_gvisor_members.py::test_members_run_in_the_gvisor_sandboxs_kernel"
)

GVISOR_CHECKED_BY: dict[str, tuple[str, ...]] = {
    "own pid, mount, network, IPC, UTS namespaces": (GVISOR_TABLE,),
    "nothing of the host's files inside": (GVISOR,),
    "seccomp filter (`Seccomp: 2`)": (GVISOR, GVISOR_TABLE, GVISOR_MEMBERS),
    "`unshare`, `mount`, `keyctl`, `add_key`, `bpf` refused": (GVISOR_TABLE,),
    "32-bit system call entry points (`int 0x80`, x32)": (GVISOR_TABLE,),
    "no new privileges": (GVISOR,),
    "capabilities": (GVISOR_TABLE,),
    "runs as a non-root user": (GVISOR,),
    "user namespace": (GVISOR, GVISOR_NETWORK_USERNS),
    "memory limit": (GVISOR_TABLE, GVISOR),
    "tasks (pids) limit": (GVISOR_TABLE, GVISOR),
    "CPU limit": (GVISOR_TABLE,),
    "members and execs count against the sandbox's limits": (GVISOR, GVISOR_MEMBERS),
    "output log bounded": (GVISOR_TABLE,),
    "tmpfs size and inodes (`/tmp`, `/dev`, `/dev/shm`, `/run`)": (GVISOR_TABLE,),
    "kernel keyring": (GVISOR_TABLE,),
    "per-uid kernel budgets (inotify, POSIX mqueue)": (GVISOR_TABLE,),
    "another tenant unreachable (processes, log, controller)": (GVISOR_TABLE,),
    "network": (GVISOR_NETWORK, GVISOR_NETWORK_USERNS),
    "egress of a bridge sandbox": (GVISOR_NETWORK,),
    "published ports": (GVISOR_NETWORK,),
}
"""Each row's fact and the gVisor tests that check its gVisor cell (what a cell calls
**refused** is checked by the tests of the refusals beside them)."""

QUOTED = {
    "memory limit": f"{DEFAULT_MEMORY // 2**20} MiB",
    "tasks (pids) limit": str(DEFAULT_PIDS),
    "CPU limit": f"{DEFAULT_CPUS:g} CPU",
    "output log bounded": f"{DEFAULT_LOG_LIMIT // 2**20} MiB kept",
    "tmpfs size and inodes (`/tmp`, `/dev`, `/dev/shm`, `/run`)": f"nr_inodes={TMPFS_INODES}",
}
"""What this project's column must say of a default, from the code's constant."""

COLUMNS = [
    "fact",
    "this project (runc, default)",
    "gVisor",
    "Docker default",
    "Kubernetes Restricted",
]


def table_rows(markdown: str) -> dict[str, list[str]]:
    """The rows of the table under ``## What it isolates``, by their first cell (the header
    row under ``fact``)."""
    section = markdown.split("## What it isolates", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        if not line.startswith("|") or re.fullmatch(r"\|(\s*-+\s*\|)+", line):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells
    return rows


def defined_tests(path: Path) -> set[str]:
    """The names of the test functions defined at the top of the module at ``path``."""
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    }


def problems(rows: dict[str, list[str]], checked_by: dict[str, str]) -> list[str]:
    """What is wrong between the table's rows and the map of the tests that check them."""
    found = []
    header = rows.pop("fact", None)
    if header != COLUMNS:
        found.append(f"the header is {header}, not {COLUMNS}")
    for fact, cells in rows.items():
        if len(cells) != len(COLUMNS):
            found.append(f"row {fact!r} has {len(cells)} cells")
        if fact not in checked_by:
            found.append(f"row {fact!r} names no test that checks it")
        quoted = QUOTED.get(fact)
        if quoted is not None and len(cells) > 1 and quoted not in cells[1]:
            found.append(f"row {fact!r} does not say {quoted!r}, the code's default")
    for fact, node in checked_by.items():
        if fact not in rows:
            found.append(f"{fact!r} is checked by {node} but no row says it")
        path, _, name = node.partition("::")
        file = REPO_ROOT / path
        if not file.is_file() or name not in defined_tests(file):
            found.append(f"{node}, which checks {fact!r}, does not exist")
    return found


def readme_rows() -> dict[str, list[str]]:
    return table_rows((REPO_ROOT / "README.md").read_text())


def test_every_row_is_checked_by_a_test_that_exists() -> None:
    rows = readme_rows()
    assert len(rows) == len(CHECKED_BY) + 1  # the header
    assert problems(rows, CHECKED_BY) == []


def test_every_gvisor_cell_is_filled_and_checked_by_a_test_that_exists() -> None:
    rows = readme_rows()
    del rows["fact"]
    assert set(rows) == set(GVISOR_CHECKED_BY)
    assert all(cell for cells in rows.values() for cell in cells)
    assert "planned" not in {cells[2] for cells in rows.values()}
    for fact, nodes in GVISOR_CHECKED_BY.items():
        for node in nodes:
            path, _, name = node.partition("::")
            assert name in defined_tests(REPO_ROOT / path), (fact, node)


def test_the_check_catches_a_row_no_test_checks() -> None:
    rows = readme_rows()
    rows["a made-up fact"] = ["a made-up fact", "yes", "planned", "no", "no"]
    assert problems(rows, CHECKED_BY) == ["row 'a made-up fact' names no test that checks it"]


def test_the_check_catches_a_test_that_does_not_exist_and_a_row_gone() -> None:
    rows = readme_rows()
    del rows["CPU limit"]
    checked_by = dict(CHECKED_BY, **{"no new privileges": f"{ISOLATION}::test_made_up"})
    assert set(problems(rows, checked_by)) == {
        f"'CPU limit' is checked by {CHECKED_BY['CPU limit']} but no row says it",
        f"{ISOLATION}::test_made_up, which checks 'no new privileges', does not exist",
    }


def test_the_check_catches_a_default_the_code_does_not_have() -> None:
    rows = readme_rows()
    rows["tasks (pids) limit"] = ["tasks (pids) limit", "4096", "planned", "none", "none"]
    assert problems(rows, CHECKED_BY) == [
        f"row 'tasks (pids) limit' does not say '{DEFAULT_PIDS}', the code's default"
    ]
