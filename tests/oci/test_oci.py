"""sandboxclient.oci: Go's default spec, every option's effect and every refusal, and specs
that a real containerd runs."""

from __future__ import annotations

import copy
import inspect
import json
import os
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import FrozenInstanceError, dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sandboxclient
from sandboxclient import Client, ContainerdVersion, ServerVersion, oci
from sandboxclient._wire._convert import spec_to_any
from sandboxclient.oci import IDMapping, Mount
from sandboxclient.testing import ContainerdUnavailable, FakeContainerd
from sandboxclient.testing._locate import (
    containerd_required,
    containerd_version,
    find_containerd_bin_dir,
)
from tests.support.backends import RealContainerd, new_namespace
from tests.support.constants import RUNTIME

# Go's populateDefaultUnixSpec as containerd 2.1.9 runs it, written out rather than imported,
# so a change to the module's constants shows here.
GO_CAPS = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]
GO_MASKED = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/scsi",
]
GO_READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
_NNN = ["nosuid", "noexec", "nodev"]
_TMPFS = ["nosuid", "strictatime", "mode=755", "size=65536k"]
GO_MOUNTS = [
    {"destination": "/proc", "type": "proc", "source": "proc", "options": _NNN},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": _TMPFS},
    {
        "destination": "/dev/pts",
        "type": "devpts",
        "source": "devpts",
        "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
    },
    {
        "destination": "/dev/shm",
        "type": "tmpfs",
        "source": "shm",
        "options": [*_NNN, "mode=1777", "size=65536k"],
    },
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": _NNN},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": [*_NNN, "ro"]},
    {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": _TMPFS},
]
GO_NAMESPACES = [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")]
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _any(value: object) -> Any:
    """``value`` with its type hidden, to hand an option what its signature forbids."""
    return value


@dataclass
class _Pid:
    """Stands for a Sandbox handle: all with_sandbox_namespaces reads is ``pid`` (and ``id``)."""

    pid: Any
    id: str = "sb1"


# --- defaults ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("containerd", "oci_version"),
    [
        ("2.0", "1.2.0"),
        ("v2.0.11", "1.2.0"),
        ("2.1", "1.2.1"),
        ("2.1.9+unknown", "1.2.1"),
        ("2.2.0", "1.2.1"),  # built with runtime-spec 1.2.1 still
        ("2.2.1", "1.3.0"),
        ("2.2", "1.3.0"),
        ("2.3", "1.3.0"),
        (ContainerdVersion(2, 4, 0, "beta.0"), "1.3.0"),
        (ServerVersion("v2.3.4", "abc"), "1.3.0"),
        ("2.9.0", "1.3.0"),  # newer than known: the newest known's
    ],
)
def test_the_defaults_follow_the_release_asked_for(
    containerd: str | ContainerdVersion | ServerVersion, oci_version: str
) -> None:
    spec = oci.generate_spec(oci.with_hostname("h"), containerd=containerd)
    assert spec["ociVersion"] == oci_version
    # Only the ociVersion differs between releases.
    assert {**spec, "ociVersion": ""} == {
        **oci.generate_spec(oci.with_hostname("h")),
        "ociVersion": "",
    }


def test_a_release_that_is_none_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"containerd '1\.7' is not a release line \(known: 2\.0"):
        oci.generate_spec(containerd="1.7")
    with pytest.raises(ValueError, match=r"containerd 1\.7\.24 is older than 2\.0"):
        oci.generate_spec(containerd="1.7.24")
    with pytest.raises(ValueError, match="not a containerd version: 'newest'"):
        oci.generate_spec(containerd="newest")
    with pytest.raises(TypeError, match=r"containerd must be a release line, .* got int"):
        oci.generate_spec(containerd=23)  # type: ignore[arg-type]


def test_defaults_are_gos() -> None:
    spec = oci.generate_spec()
    assert spec["ociVersion"] == "1.3.0"  # containerd 2.3's, the newest release line
    assert spec["root"] == {"path": "rootfs", "readonly": False}
    process = spec["process"]
    assert process["cwd"] == "/"
    assert process["env"] == [PATH_ENV]
    assert process["user"] == {"uid": 0, "gid": 0}
    assert process["capabilities"] == {
        "bounding": GO_CAPS,
        "effective": GO_CAPS,
        "permitted": GO_CAPS,
    }
    assert process["noNewPrivileges"] is True
    assert process["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
    assert "args" not in process
    assert "terminal" not in process
    assert spec["mounts"] == GO_MOUNTS
    linux = spec["linux"]
    assert linux["maskedPaths"] == GO_MASKED
    assert linux["readonlyPaths"] == GO_READONLY
    assert linux["namespaces"] == GO_NAMESPACES
    assert linux["resources"] == {"devices": [{"allow": False, "access": "rwm"}]}
    assert "cgroupsPath" not in linux
    assert "hostname" not in spec
    assert set(spec) == {"ociVersion", "process", "root", "mounts", "linux"}


def test_constants_match_the_defaults() -> None:
    assert list(oci.DEFAULT_CAPABILITIES) == GO_CAPS
    assert list(oci.DEFAULT_MASKED_PATHS) == GO_MASKED
    assert list(oci.DEFAULT_READONLY_PATHS) == GO_READONLY
    assert oci.DEFAULT_PATH_ENV == PATH_ENV
    assert oci.NAMESPACE_KINDS == (
        "pid",
        "network",
        "mount",
        "ipc",
        "uts",
        "user",
        "cgroup",
        "time",
    )


def test_known_capabilities_are_the_kernels_by_number() -> None:
    known = oci.KNOWN_CAPABILITIES
    assert len(known) == len(set(known)) == 41
    # Spot checks against linux/capability.h.
    assert (known[0], known[12], known[21], known[31], known[40]) == (
        "CAP_CHOWN",
        "CAP_NET_ADMIN",
        "CAP_SYS_ADMIN",
        "CAP_SETFCAP",
        "CAP_CHECKPOINT_RESTORE",
    )
    assert set(GO_CAPS) <= set(known)
    last = Path("/proc/sys/kernel/cap_last_cap")
    if last.exists():
        # This kernel knows no capability the list lacks.
        assert int(last.read_text()) <= len(known) - 1


def test_each_call_returns_an_independent_spec() -> None:
    first, second = oci.generate_spec(), oci.generate_spec()
    assert first == second
    first["process"]["capabilities"]["bounding"].append("CAP_SYS_ADMIN")
    first["mounts"][0]["options"].append("ro")
    first["linux"]["namespaces"].clear()
    first["process"]["env"].append("X=1")
    assert oci.generate_spec() == second
    assert second["mounts"] == GO_MOUNTS
    assert second["linux"]["namespaces"] == GO_NAMESPACES
    assert second["process"]["capabilities"]["bounding"] == GO_CAPS


def test_one_option_applied_to_two_specs_shares_nothing() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}],
    }
    opts = (
        oci.with_seccomp(profile),
        oci.with_mounts(
            [{"destination": "/d", "type": "tmpfs", "source": "tmpfs", "options": ["ro"]}]
        ),
        oci.with_process_args("/bin/true"),
        oci.with_user_namespace([(0, 1000, 10)], [(0, 1000, 10)]),
    )
    first, second = oci.generate_spec(*opts), oci.generate_spec(*opts)
    first["linux"]["seccomp"]["syscalls"][0]["names"].append("write")
    first["mounts"][-1]["options"].append("nosuid")
    first["process"]["args"].append("x")
    first["linux"]["uidMappings"][0]["size"] = 1
    first["mounts"][-1]["destination"] = "/elsewhere"
    # Literals, not another generated spec: a leak would show in that one too.
    for spec in (second, oci.generate_spec(*opts)):
        assert spec["linux"]["seccomp"] == profile
        assert spec["mounts"][-1] == {
            "destination": "/d",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["ro"],
        }
        assert spec["process"]["args"] == ["/bin/true"]
        assert spec["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 1000, "size": 10}]
    profile["defaultAction"] = "SCMP_ACT_ALLOW"  # the caller's copy: the option kept its own
    assert oci.generate_spec(*opts)["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"


# --- every option's effect ----------------------------------------------------------------------

_GONE = object()


def _put(spec: dict[str, Any], path: str, value: object) -> None:
    *parents, last = path.split(".")
    node = spec
    for key in parents:
        node = node.setdefault(key, {})
    if value is _GONE:
        del node[last]
    else:
        node[last] = value


def _caps(names: list[str], **extra: list[str]) -> dict[str, list[str]]:
    return {"bounding": names, "effective": names, "permitted": names, **extra}


def _ns(**paths: str) -> list[dict[str, str]]:
    return [
        {"type": n["type"], **({"path": paths[n["type"]]} if n["type"] in paths else {})}
        for n in GO_NAMESPACES
    ]


_UNIX_DEVICES = [
    {
        "allow": True,
        "type": "c",
        "major": major,
        **({"minor": minor} if minor is not None else {}),
        "access": "rwm",
    }
    for major, minor in (
        (1, 3),
        (1, 8),
        (1, 7),
        (5, 0),
        (1, 5),
        (1, 9),
        (5, 1),
        (136, None),
        (5, 2),
    )
]
_PROFILE = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "architectures": ["SCMP_ARCH_X86_64"],
    "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}],
}

EFFECTS: list[tuple[str, Callable[[], oci.SpecOpt], dict[str, object]]] = [
    (
        "with_process_args",
        lambda: oci.with_process_args("/bin/echo", "", "hi"),
        {"process.args": ["/bin/echo", "", "hi"]},
    ),
    ("with_process_cwd", lambda: oci.with_process_cwd("/srv"), {"process.cwd": "/srv"}),
    ("with_env", lambda: oci.with_env(["A=1", "B="]), {"process.env": [PATH_ENV, "A=1", "B="]}),
    (
        "with_env",
        lambda: oci.with_env({"PATH": "/bin", "B": "2"}),
        {"process.env": ["PATH=/bin", "B=2"]},
    ),
    ("with_env", lambda: oci.with_env(["PATH", "NEVER_SET"]), {"process.env": []}),
    ("with_tty", oci.with_tty, {"process.terminal": True, "process.env": [PATH_ENV, "TERM=xterm"]}),
    ("with_tty", lambda: oci.with_tty(False), {"process.terminal": False}),
    (
        "with_uidgid",
        lambda: oci.with_uidgid(1000, 1001),
        {"process.user": {"uid": 1000, "gid": 1001, "additionalGids": [1001]}},
    ),
    (
        "with_user",
        lambda: oci.with_user("7"),
        {"process.user": {"uid": 7, "gid": 0, "additionalGids": [0]}},
    ),
    (
        "with_user",
        lambda: oci.with_user("7:8"),
        {"process.user": {"uid": 7, "gid": 8, "additionalGids": [8]}},
    ),
    (
        "with_additional_gids",
        lambda: oci.with_additional_gids(10, 11, 10),
        {"process.user.additionalGids": [0, 10, 11]},
    ),
    ("with_umask", lambda: oci.with_umask(0o027), {"process.user.umask": 0o027}),
    ("with_no_new_privileges", oci.with_no_new_privileges, {}),
    ("with_new_privileges", oci.with_new_privileges, {"process.noNewPrivileges": False}),
    (
        "with_rlimit",
        lambda: oci.with_rlimit("nofile", 4096, 8192),
        {"process.rlimits": [{"type": "RLIMIT_NOFILE", "hard": 8192, "soft": 4096}]},
    ),
    (
        "with_rlimit",
        lambda: oci.with_rlimit("RLIMIT_NPROC", 100),
        {
            "process.rlimits": [
                {"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024},
                {"type": "RLIMIT_NPROC", "hard": 100, "soft": 100},
            ]
        },
    ),
    (
        "with_selinux_label",
        lambda: oci.with_selinux_label("system_u:system_r:container_t:s0"),
        {"process.selinuxLabel": "system_u:system_r:container_t:s0"},
    ),
    ("with_selinux_label", lambda: oci.with_selinux_label(""), {}),
    (
        "with_apparmor_profile",
        lambda: oci.with_apparmor_profile("docker-default"),
        {"process.apparmorProfile": "docker-default"},
    ),
    (
        "with_capabilities",
        lambda: oci.with_capabilities(["net_admin", "CAP_KILL", "KILL"]),
        {"process.capabilities": _caps(["CAP_NET_ADMIN", "CAP_KILL"])},
    ),
    ("with_capabilities", lambda: oci.with_capabilities([]), {"process.capabilities": _caps([])}),
    (
        "with_added_capabilities",
        lambda: oci.with_added_capabilities(["SYS_ADMIN", "CAP_KILL"]),
        {"process.capabilities": _caps([*GO_CAPS, "CAP_SYS_ADMIN"])},
    ),
    (
        "with_dropped_capabilities",
        lambda: oci.with_dropped_capabilities(["NET_RAW", "cap_mknod", "SYS_ADMIN"]),
        {
            "process.capabilities": _caps(
                [c for c in GO_CAPS if c not in ("CAP_NET_RAW", "CAP_MKNOD")]
            )
        },
    ),
    (
        "with_ambient_capabilities",
        lambda: oci.with_ambient_capabilities(["NET_BIND_SERVICE"]),
        {
            "process.capabilities": _caps(
                GO_CAPS, inheritable=["CAP_NET_BIND_SERVICE"], ambient=["CAP_NET_BIND_SERVICE"]
            )
        },
    ),
    (
        "with_all_known_capabilities",
        oci.with_all_known_capabilities,
        {"process.capabilities": _caps(list(oci.KNOWN_CAPABILITIES))},
    ),
    ("with_rootfs_path", lambda: oci.with_rootfs_path("/srv/rootfs"), {"root.path": "/srv/rootfs"}),
    ("with_rootfs_readonly", oci.with_rootfs_readonly, {"root.readonly": True}),
    (
        "with_mounts",
        lambda: oci.with_mounts(
            [
                Mount("/data", "bind", "/srv/data", ("rbind", "ro")),
                {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs"},
            ]
        ),
        {
            "mounts": [
                *GO_MOUNTS,
                {
                    "destination": "/data",
                    "type": "bind",
                    "source": "/srv/data",
                    "options": ["rbind", "ro"],
                },
                {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": []},
            ]
        },
    ),
    (
        "with_mounts",
        lambda: oci.with_mounts(
            [
                {
                    "destination": "/m",
                    "uidMappings": [(0, 5, 1)],
                    "gidMappings": [{"containerID": 0, "hostID": 6, "size": 2}],
                }
            ]
        ),
        {
            "mounts": [
                *GO_MOUNTS,
                {
                    "destination": "/m",
                    "options": [],
                    "uidMappings": [{"containerID": 0, "hostID": 5, "size": 1}],
                    "gidMappings": [{"containerID": 0, "hostID": 6, "size": 2}],
                },
            ]
        },
    ),
    (
        "without_mounts",
        lambda: oci.without_mounts("/run", "/dev/mqueue/", "/nowhere"),
        {"mounts": [m for m in GO_MOUNTS if m["destination"] not in ("/run", "/dev/mqueue")]},
    ),
    ("with_hostname", lambda: oci.with_hostname("web-1"), {"hostname": "web-1"}),
    (
        "with_annotations",
        lambda: oci.with_annotations({"a": "1", "b": ""}),
        {"annotations": {"a": "1", "b": ""}},
    ),
    (
        "with_linux_namespace",
        lambda: oci.with_linux_namespace("network", "/proc/9/ns/net"),
        {"linux.namespaces": _ns(network="/proc/9/ns/net")},
    ),
    (
        "with_linux_namespace",
        lambda: oci.with_linux_namespace("cgroup"),
        {"linux.namespaces": [*GO_NAMESPACES, {"type": "cgroup"}]},
    ),
    (
        "without_namespace",
        lambda: oci.without_namespace("network"),
        {"linux.namespaces": GO_NAMESPACES[:4]},
    ),
    ("without_namespace", lambda: oci.without_namespace("user"), {}),
    (
        "with_sandbox_namespaces",
        lambda: oci.with_sandbox_namespaces(_Pid(77)),
        {
            "linux.namespaces": _ns(
                ipc="/proc/77/ns/ipc", uts="/proc/77/ns/uts", network="/proc/77/ns/net"
            )
        },
    ),
    (
        "with_sandbox_namespaces",
        lambda: oci.with_sandbox_namespaces(5),
        {
            "linux.namespaces": _ns(
                ipc="/proc/5/ns/ipc", uts="/proc/5/ns/uts", network="/proc/5/ns/net"
            )
        },
    ),
    (
        "with_user_namespace",
        lambda: oci.with_user_namespace([IDMapping(0, 100000, 65536)], [(0, 100000, 65536)]),
        {
            "linux.namespaces": [*GO_NAMESPACES, {"type": "user"}],
            "linux.uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
            "linux.gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        },
    ),
    (
        "with_masked_paths",
        lambda: oci.with_masked_paths(["/proc/kcore"]),
        {"linux.maskedPaths": ["/proc/kcore"]},
    ),
    ("with_readonly_paths", lambda: oci.with_readonly_paths([]), {"linux.readonlyPaths": []}),
    ("with_seccomp", lambda: oci.with_seccomp(_PROFILE), {"linux.seccomp": _PROFILE}),
    (
        "with_host_users",
        oci.with_host_users,
        {"annotations": {oci.HOST_USERS_ANNOTATION: "true"}},
    ),
    (
        "with_runtime_handler",
        lambda: oci.with_runtime_handler("gvisor"),
        {"annotations": {oci.RUNTIME_HANDLER_ANNOTATION: "gvisor"}},
    ),
    (
        "with_seccomp_unconfined",
        oci.with_seccomp_unconfined,
        {"annotations": {oci.SECCOMP_ANNOTATION: oci.SECCOMP_UNCONFINED}},
    ),
    (
        "with_default_seccomp",
        oci.with_default_seccomp,
        {"linux.seccomp": oci.default_seccomp_profile(oci.DEFAULT_CAPABILITIES)},
    ),
    ("with_cgroup", lambda: oci.with_cgroup("/default/c1"), {"linux.cgroupsPath": "/default/c1"}),
    (
        "with_memory_limit",
        lambda: oci.with_memory_limit(1 << 20),
        {"linux.resources.memory": {"limit": 1 << 20}},
    ),
    (
        "with_cpus",
        lambda: oci.with_cpus(1.5),
        {"linux.resources.cpu": {"quota": 150_000, "period": 100_000}},
    ),
    (
        "with_cpus",
        lambda: oci.with_cpus(2, period=50_000),
        {"linux.resources.cpu": {"quota": 100_000, "period": 50_000}},
    ),
    (
        "with_cpu_cfs",
        lambda: oci.with_cpu_cfs(-1, 100_000),
        {"linux.resources.cpu": {"quota": -1, "period": 100_000}},
    ),
    ("with_cpu_shares", lambda: oci.with_cpu_shares(512), {"linux.resources.cpu": {"shares": 512}}),
    (
        "with_cpuset_cpus",
        lambda: oci.with_cpuset_cpus("0-1,3"),
        {"linux.resources.cpu": {"cpus": "0-1,3"}},
    ),
    ("with_cpuset_mems", lambda: oci.with_cpuset_mems("0"), {"linux.resources.cpu": {"mems": "0"}}),
    ("with_pids_limit", lambda: oci.with_pids_limit(64), {"linux.resources.pids": {"limit": 64}}),
    (
        "with_default_unix_devices",
        oci.with_default_unix_devices,
        {"linux.resources.devices": [{"allow": False, "access": "rwm"}, *_UNIX_DEVICES]},
    ),
]


@pytest.mark.parametrize(("name", "make", "changes"), EFFECTS, ids=[e[0] for e in EFFECTS])
def test_option_effect(
    name: str, make: Callable[[], oci.SpecOpt], changes: dict[str, object]
) -> None:
    expected = oci.generate_spec()
    for path, value in changes.items():
        _put(expected, path, copy.deepcopy(value))
    assert oci.generate_spec(make()) == expected


def test_every_option_has_an_effect_case_and_mentions_go() -> None:
    options = {n for n in oci.__all__ if n.startswith(("with_", "without_"))}
    assert options == {e[0] for e in EFFECTS}
    for name in oci.__all__:
        obj = getattr(oci, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert obj.__doc__, f"{name} has no docstring"
    # Only the sandbox join has no Go counterpart in pkg/oci.
    for name in options - {"with_sandbox_namespaces"}:
        assert "Go's" in (getattr(oci, name).__doc__ or ""), name


def test_no_new_privileges_and_unconfined_undo_the_opposite() -> None:
    spec = oci.generate_spec(oci.with_new_privileges(), oci.with_no_new_privileges())
    assert spec["process"]["noNewPrivileges"] is True
    spec = oci.generate_spec(oci.with_seccomp(_PROFILE), oci.with_seccomp_unconfined())
    assert "seccomp" not in spec["linux"]
    spec = oci.generate_spec(oci.with_apparmor_profile("p"), oci.with_apparmor_profile(""))
    assert "apparmorProfile" not in spec["process"]


def test_capability_sets_follow_go() -> None:
    with_ambient = oci.generate_spec(oci.with_ambient_capabilities(["CAP_KILL", "CAP_CHOWN"]))
    narrowed = copy.deepcopy(with_ambient)
    oci.with_capabilities(["KILL"])(narrowed)
    assert narrowed["process"]["capabilities"] == _caps(
        ["CAP_KILL"], inheritable=["CAP_KILL"], ambient=["CAP_KILL"]
    )
    oci.with_capabilities([])(narrowed)
    assert narrowed["process"]["capabilities"] == _caps([])
    oci.with_dropped_capabilities(["CHOWN"])(with_ambient)
    caps = with_ambient["process"]["capabilities"]
    assert caps["inheritable"] == caps["ambient"] == ["CAP_KILL"]
    assert "CAP_CHOWN" not in caps["bounding"]


def test_options_apply_in_order() -> None:
    spec = oci.generate_spec(
        oci.with_env(["A=1", "B=2"]),
        oci.with_env({"A": "3"}),
        oci.with_uidgid(5, 6),
        oci.with_additional_gids(9),
        oci.with_user("1:2"),
        oci.with_capabilities(["KILL"]),
        oci.with_added_capabilities(["CHOWN"]),
        oci.without_namespace("network"),
        oci.with_linux_namespace("network", "/proc/1/ns/net"),
        oci.with_hostname("first"),
        oci.with_hostname("second"),
        oci.with_cpus(1),
        oci.with_cpu_shares(100),
        oci.with_rlimit("NOFILE", 1),
        oci.with_rlimit("nofile", 2),
    )
    assert spec["process"]["env"] == [PATH_ENV, "A=3", "B=2"]
    # with_user came last, so it reset the additional groups with_additional_gids gave.
    assert spec["process"]["user"] == {"uid": 1, "gid": 2, "additionalGids": [2]}
    assert spec["process"]["capabilities"] == _caps(["CAP_KILL", "CAP_CHOWN"])
    assert spec["linux"]["namespaces"][-1] == {"type": "network", "path": "/proc/1/ns/net"}
    assert spec["hostname"] == "second"
    assert spec["linux"]["resources"]["cpu"] == {"quota": 100_000, "period": 100_000, "shares": 100}
    assert spec["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 2, "soft": 2}]
    reverse = oci.generate_spec(oci.with_hostname("second"), oci.with_hostname("first"))
    assert reverse["hostname"] == "first"


def test_options_fill_in_a_bare_spec() -> None:
    spec: dict[str, Any] = {"process": None}
    for opt in (
        oci.with_process_cwd("/w"),
        oci.with_memory_limit(10),
        oci.with_linux_namespace("pid"),
        oci.with_mounts([Mount("/a", "tmpfs", "tmpfs")]),
        oci.with_added_capabilities(["KILL"]),
        oci.with_env(["A=1"]),
        oci.with_rootfs_readonly(),
    ):
        opt(spec)
    assert spec == {
        "process": {"cwd": "/w", "capabilities": _caps(["CAP_KILL"]), "env": ["A=1"]},
        "linux": {"resources": {"memory": {"limit": 10}}, "namespaces": [{"type": "pid"}]},
        "mounts": [{"destination": "/a", "type": "tmpfs", "source": "tmpfs", "options": []}],
        "root": {"readonly": True},
    }


def test_a_spec_section_of_the_wrong_type_is_a_type_error_naming_the_option() -> None:
    with pytest.raises(
        TypeError, match=r"^with_process_cwd: the spec's 'process' must be a JSON object, got str$"
    ):
        oci.with_process_cwd("/a")({"process": "x"})
    with pytest.raises(TypeError, match=r"^with_mounts: the spec's 'mounts' must be a JSON array"):
        oci.with_mounts([])({"mounts": {}})


def test_mount_record() -> None:
    mount = Mount("/data", "bind", "/srv", _any(["rbind"]))
    assert mount.options == ("rbind",)
    assert mount.to_dict() == {
        "destination": "/data",
        "type": "bind",
        "source": "/srv",
        "options": ["rbind"],
    }
    with pytest.raises(FrozenInstanceError):
        mount.destination = "/other"  # type: ignore[misc]
    assert IDMapping(1, 2, 3).to_dict() == {"containerID": 1, "hostID": 2, "size": 3}


# --- refusals ------------------------------------------------------------------------------------

_BIG = 2**31

REFUSALS: list[tuple[str, Callable[[], object], type[Exception], str]] = [
    (
        "with_runtime_handler",
        lambda: oci.with_runtime_handler("Not A Label"),
        ValueError,
        "is not a handler name",
    ),
    (
        "with_host_users",
        lambda: oci.with_host_users(_any("true")),
        TypeError,
        "host_users must be a bool",
    ),
    (
        "generate_spec",
        lambda: oci.generate_spec(_any("nope")),
        TypeError,
        "option 0 must be a callable",
    ),
    (
        "with_memory_limit",
        lambda: oci.with_memory_limit(0),
        ValueError,
        "limit must be a positive number of bytes, got 0",
    ),
    (
        "with_memory_limit",
        lambda: oci.with_memory_limit(True),
        TypeError,
        "limit must be an int, got bool",
    ),
    ("with_memory_limit", lambda: oci.with_memory_limit(_any(1.5)), TypeError, "got float"),
    ("with_hostname", lambda: oci.with_hostname(""), ValueError, "name must not be empty"),
    ("with_hostname", lambda: oci.with_hostname("a" * 65), ValueError, "at most 64 bytes, got 65"),
    ("with_hostname", lambda: oci.with_hostname("a\0b"), ValueError, "NUL"),
    ("with_hostname", lambda: oci.with_hostname(_any(5)), TypeError, "name must be a str, got int"),
    ("with_process_args", oci.with_process_args, ValueError, "at least one argument"),
    (
        "with_process_args",
        lambda: oci.with_process_args(""),
        ValueError,
        "argument 0 must not be empty",
    ),
    (
        "with_process_args",
        lambda: oci.with_process_args("/bin/sh", "a\0b"),
        ValueError,
        "argument 1 must not contain a NUL byte",
    ),
    (
        "with_process_args",
        lambda: oci.with_process_args("/bin/sh", _any(3)),
        TypeError,
        "argument 1 must be a str, got int",
    ),
    (
        "with_process_args",
        lambda: oci.with_process_args(_any(["/bin/sh"])),
        TypeError,
        "argument 0 must be a str, got list",
    ),
    ("with_env", lambda: oci.with_env("A=1"), TypeError, "env must be a list of str, got str"),
    ("with_env", lambda: oci.with_env(["=x"]), ValueError, "env key must not be empty"),
    (
        "with_env",
        lambda: oci.with_env(["A=\0"]),
        ValueError,
        "the value of 'A' must not contain a NUL byte",
    ),
    (
        "with_env",
        lambda: oci.with_env(_any({"A": 1})),
        TypeError,
        "the value of 'A' must be a str, got int",
    ),
    ("with_env", lambda: oci.with_env({"A=B": "x"}), ValueError, "must not contain '='"),
    ("with_env", lambda: oci.with_env(_any({1: "x"})), TypeError, "env key must be a str"),
    ("with_env", lambda: oci.with_env(_any([1])), TypeError, "env entry 0 must be a str, got int"),
    (
        "with_process_cwd",
        lambda: oci.with_process_cwd("srv"),
        ValueError,
        "path must be an absolute path, got 'srv'",
    ),
    ("with_process_cwd", lambda: oci.with_process_cwd("/a\0"), ValueError, "NUL"),
    ("with_tty", lambda: oci.with_tty(_any(1)), TypeError, "enabled must be a bool, got int"),
    (
        "with_uidgid",
        lambda: oci.with_uidgid(-1, 0),
        ValueError,
        "uid must be between 0 and 2147483647, got -1",
    ),
    (
        "with_uidgid",
        lambda: oci.with_uidgid(0, _BIG),
        ValueError,
        f"gid must be between 0 and 2147483647, got {_BIG}",
    ),
    ("with_uidgid", lambda: oci.with_uidgid(True, 0), TypeError, "uid must be an int, got bool"),
    (
        "with_user",
        lambda: oci.with_user("root"),
        ValueError,
        "'uid' or 'uid:gid' in digits, got 'root'",
    ),
    ("with_user", lambda: oci.with_user("1:2:3"), ValueError, "in digits"),
    ("with_user", lambda: oci.with_user("1:"), ValueError, "in digits"),
    ("with_user", lambda: oci.with_user("99999999999"), ValueError, "uid must be between"),
    ("with_user", lambda: oci.with_user(_any(1000)), TypeError, "user must be a str, got int"),
    ("with_additional_gids", oci.with_additional_gids, ValueError, "at least one gid"),
    (
        "with_additional_gids",
        lambda: oci.with_additional_gids(-5),
        ValueError,
        "gid 0 must be between 0 and 2147483647, got -5",
    ),
    (
        "with_umask",
        lambda: oci.with_umask(0o1000),
        ValueError,
        "umask must be between 0 and 0o777, got 512",
    ),
    (
        "with_rlimit",
        lambda: oci.with_rlimit("bogus", 1),
        ValueError,
        "unknown resource limit 'bogus'",
    ),
    (
        "with_rlimit",
        lambda: oci.with_rlimit("nofile", 10, 5),
        ValueError,
        "soft limit 10 is above the hard limit 5",
    ),
    (
        "with_rlimit",
        lambda: oci.with_rlimit("nofile", -1),
        ValueError,
        "soft must be between 0 and 2**64-1, got -1",
    ),
    (
        "with_selinux_label",
        lambda: oci.with_selinux_label(_any(1)),
        TypeError,
        "selinuxLabel must be a str",
    ),
    ("with_apparmor_profile", lambda: oci.with_apparmor_profile("a\0"), ValueError, "NUL"),
    (
        "with_capabilities",
        lambda: oci.with_capabilities("CAP_KILL"),
        TypeError,
        "capabilities must be a list of str, got str",
    ),
    (
        "with_capabilities",
        lambda: oci.with_capabilities(["CAP_FLY"]),
        ValueError,
        "unknown capability 'CAP_FLY'",
    ),
    (
        "with_capabilities",
        lambda: oci.with_capabilities(["CAP_"]),
        ValueError,
        "unknown capability",
    ),
    (
        "with_added_capabilities",
        lambda: oci.with_added_capabilities(["nope"]),
        ValueError,
        "unknown capability 'nope'",
    ),
    (
        "with_dropped_capabilities",
        lambda: oci.with_dropped_capabilities(_any([None])),
        TypeError,
        "capability 0 must be a str",
    ),
    (
        "with_ambient_capabilities",
        lambda: oci.with_ambient_capabilities([""]),
        ValueError,
        "capability 0 must not be empty",
    ),
    ("with_rootfs_path", lambda: oci.with_rootfs_path(""), ValueError, "path must not be empty"),
    (
        "with_rootfs_path",
        lambda: oci.with_rootfs_path(_any(None)),
        TypeError,
        "path must be a str, got NoneType",
    ),
    (
        "with_mounts",
        lambda: oci.with_mounts([{"destination": "data"}]),
        ValueError,
        "mount destination must be an absolute path, got 'data'",
    ),
    (
        "with_mounts",
        lambda: oci.with_mounts([{"type": "tmpfs"}]),
        ValueError,
        "a mount needs a destination",
    ),
    (
        "with_mounts",
        lambda: oci.with_mounts([{"destination": "/d", "bogus": 1}]),
        ValueError,
        "unknown mount field(s) ['bogus']",
    ),
    (
        "with_mounts",
        lambda: oci.with_mounts([{"destination": "/d", "options": "ro"}]),
        TypeError,
        "mount options must be a list of str, got str",
    ),
    (
        "with_mounts",
        lambda: oci.with_mounts([{"destination": "/d", "options": ["a\0"]}]),
        ValueError,
        "mount option 0 of '/d' must not contain a NUL",
    ),
    (
        "with_mounts",
        lambda: oci.with_mounts([{"destination": "/d", "type": ""}]),
        ValueError,
        "mount type of '/d' must not be empty",
    ),
    (
        "with_mounts",
        lambda: oci.with_mounts(_any(Mount("/d", "tmpfs", "tmpfs"))),
        TypeError,
        "got a single mount",
    ),
    (
        "with_mounts",
        lambda: oci.with_mounts(_any([5])),
        TypeError,
        "mount 0 must be a mapping, got int",
    ),
    (
        "with_mounts",
        lambda: oci.with_mounts([{"destination": "/d", "uidMappings": []}]),
        ValueError,
        "uidMappings must hold at least one mapping",
    ),
    (
        "without_mounts",
        lambda: oci.without_mounts("run"),
        ValueError,
        "destination must be an absolute path",
    ),
    (
        "with_annotations",
        lambda: oci.with_annotations({"": "x"}),
        ValueError,
        "an annotation key must not be empty",
    ),
    (
        "with_annotations",
        lambda: oci.with_annotations(_any({"k": 1})),
        TypeError,
        "the value of 'k' must be a str, got int",
    ),
    (
        "with_annotations",
        lambda: oci.with_annotations(_any([("k", "v")])),
        TypeError,
        "annotations must be a mapping, got list",
    ),
    (
        "with_linux_namespace",
        lambda: oci.with_linux_namespace("net"),
        ValueError,
        "unknown namespace kind 'net'",
    ),
    (
        "with_linux_namespace",
        lambda: oci.with_linux_namespace("network", "ns/net"),
        ValueError,
        "path must be an absolute path",
    ),
    (
        "with_linux_namespace",
        lambda: oci.with_linux_namespace(_any(None)),
        TypeError,
        "kind must be a str",
    ),
    (
        "without_namespace",
        lambda: oci.without_namespace("bogus"),
        ValueError,
        "unknown namespace kind 'bogus'",
    ),
    (
        "with_sandbox_namespaces",
        lambda: oci.with_sandbox_namespaces(_Pid(None)),
        ValueError,
        "sandbox 'sb1' has no pid: start it",
    ),
    (
        "with_sandbox_namespaces",
        lambda: oci.with_sandbox_namespaces(_any(object())),
        TypeError,
        "must be a pid or have a pid attribute, got object",
    ),
    (
        "with_sandbox_namespaces",
        lambda: oci.with_sandbox_namespaces(0),
        ValueError,
        "pid must be a positive process id, got 0",
    ),
    ("with_sandbox_namespaces", lambda: oci.with_sandbox_namespaces(True), TypeError, "got bool"),
    (
        "with_sandbox_namespaces",
        lambda: oci.with_sandbox_namespaces(_Pid("12")),
        TypeError,
        "pid must be an int, got str",
    ),
    (
        "with_user_namespace",
        lambda: oci.with_user_namespace([], [(0, 0, 1)]),
        ValueError,
        "uid_map must hold at least one mapping",
    ),
    (
        "with_user_namespace",
        lambda: oci.with_user_namespace([(0, 0, 1)], []),
        ValueError,
        "gid_map must hold at least one mapping",
    ),
    (
        "with_user_namespace",
        lambda: oci.with_user_namespace([(0, 0, 0)], [(0, 0, 1)]),
        ValueError,
        "uid_map[0] size must be between 1 and 2**32-1, got 0",
    ),
    (
        "with_user_namespace",
        lambda: oci.with_user_namespace([(0, 2**32 - 1, 2)], [(0, 0, 1)]),
        ValueError,
        "uid_map[0] runs past the last id",
    ),
    (
        "with_user_namespace",
        lambda: oci.with_user_namespace(_any([(0, 0)]), [(0, 0, 1)]),
        TypeError,
        "uid_map[0] must be an IDMapping",
    ),
    (
        "with_user_namespace",
        lambda: oci.with_user_namespace([{"containerID": 0}], [(0, 0, 1)]),
        ValueError,
        "exactly the keys",
    ),
    (
        "with_user_namespace",
        lambda: oci.with_user_namespace([(0, -1, 1)], [(0, 0, 1)]),
        ValueError,
        "host id must be between 0 and 2**32-1, got -1",
    ),
    (
        "with_masked_paths",
        lambda: oci.with_masked_paths(["proc/kcore"]),
        ValueError,
        "path 0 must be an absolute path",
    ),
    (
        "with_readonly_paths",
        lambda: oci.with_readonly_paths("/proc"),
        TypeError,
        "paths must be a list of str, got str",
    ),
    (
        "with_seccomp",
        lambda: oci.with_seccomp(_any([])),
        TypeError,
        "profile must be a mapping, got list",
    ),
    ("with_seccomp", lambda: oci.with_seccomp({}), ValueError, "profile needs a defaultAction"),
    (
        "with_seccomp",
        lambda: oci.with_seccomp({"defaultAction": "ALLOW"}),
        ValueError,
        "defaultAction 'ALLOW' is not a seccomp action",
    ),
    (
        "with_seccomp",
        lambda: oci.with_seccomp(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}],
            }
        ),
        ValueError,
        "syscalls[0] must name at least one syscall",
    ),
    (
        "with_seccomp",
        lambda: oci.with_seccomp(
            {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "nope"}]}
        ),
        ValueError,
        "syscalls[0].action 'nope' is not a seccomp action",
    ),
    (
        "with_seccomp",
        lambda: oci.with_seccomp({"defaultAction": "SCMP_ACT_ALLOW", "x": object()}),
        TypeError,
        "profile is not JSON-serialisable",
    ),
    (
        "with_seccomp",
        lambda: oci.with_seccomp({"defaultAction": "SCMP_ACT_ALLOW", "x": float("nan")}),
        TypeError,
        "profile is not JSON-serialisable",
    ),
    ("with_cgroup", lambda: oci.with_cgroup(""), ValueError, "path must not be empty"),
    ("with_cpus", lambda: oci.with_cpus(0), ValueError, "cpus must be a positive number, got 0"),
    (
        "with_cpus",
        lambda: oci.with_cpus(float("nan")),
        ValueError,
        "cpus must be a positive number, got nan",
    ),
    ("with_cpus", lambda: oci.with_cpus(True), TypeError, "cpus must be a number, got bool"),
    ("with_cpus", lambda: oci.with_cpus(_any("1")), TypeError, "cpus must be a number, got str"),
    (
        "with_cpus",
        lambda: oci.with_cpus(0.001),
        ValueError,
        "give a quota of 100us, under the kernel's 1000us",
    ),
    (
        "with_cpus",
        lambda: oci.with_cpus(1, period=10),
        ValueError,
        "period must be between 1000 and 1000000, got 10",
    ),
    ("with_cpus", lambda: oci.with_cpus(1e300), ValueError, "too large"),
    (
        "with_cpu_cfs",
        lambda: oci.with_cpu_cfs(500, 100_000),
        ValueError,
        "quota must be -1 (unlimited) or at least 1000, got 500",
    ),
    (
        "with_cpu_cfs",
        lambda: oci.with_cpu_cfs(-2, 100_000),
        ValueError,
        "quota must be -1 (unlimited) or at least 1000, got -2",
    ),
    (
        "with_cpu_cfs",
        lambda: oci.with_cpu_cfs(1000, True),
        TypeError,
        "period must be an int, got bool",
    ),
    (
        "with_cpu_shares",
        lambda: oci.with_cpu_shares(1),
        ValueError,
        "shares must be between 2 and 262144, got 1",
    ),
    (
        "with_cpuset_cpus",
        lambda: oci.with_cpuset_cpus("0-"),
        ValueError,
        "cpus must be a list such as '0-3,5', got '0-'",
    ),
    ("with_cpuset_mems", lambda: oci.with_cpuset_mems(""), ValueError, "mems must not be empty"),
    (
        "with_pids_limit",
        lambda: oci.with_pids_limit(0),
        ValueError,
        "limit must be a positive number of processes, got 0",
    ),
    (
        "with_pids_limit",
        lambda: oci.with_pids_limit(False),
        TypeError,
        "limit must be an int, got bool",
    ),
    (
        "Mount",
        lambda: Mount("rel", "bind", "/x"),
        ValueError,
        "mount destination must be an absolute path",
    ),
    (
        "Mount",
        lambda: Mount("/d", "bind", "/x", _any("ro")),
        TypeError,
        "mount options must be a list of str",
    ),
    (
        "IDMapping",
        lambda: IDMapping(-1, 0, 1),
        ValueError,
        "mapping container id must be between 0 and 2**32-1, got -1",
    ),
]


@pytest.mark.parametrize(
    ("name", "make", "kind", "fragment"),
    REFUSALS,
    ids=[f"{r[0]}-{i}" for i, r in enumerate(REFUSALS)],
)
def test_refusal(
    name: str, make: Callable[[], object], kind: type[Exception], fragment: str
) -> None:
    with pytest.raises(kind) as caught:
        make()
    assert type(caught.value) is kind
    message = str(caught.value)
    assert message.startswith(f"{name}: "), message
    assert fragment in message, message


def test_the_memory_limit_message_reads_in_full() -> None:
    with pytest.raises(
        ValueError, match=r"^with_memory_limit: limit must be a positive number of bytes, got -1$"
    ):
        oci.with_memory_limit(-1)


def test_every_option_refuses_something() -> None:
    refused = {r[0] for r in REFUSALS}
    options = {n for n in oci.__all__ if n.startswith(("with_", "without_"))}
    takes_nothing = {n for n in options if not inspect.signature(getattr(oci, n)).parameters}
    assert options - takes_nothing <= refused, sorted(options - takes_nothing - refused)


def test_messages_name_keys_and_positions_never_secret_values() -> None:
    secret = "hunter2-very-secret"
    cases: list[Callable[[], object]] = [
        lambda: oci.with_env({"API_TOKEN": secret + "\0"}),
        lambda: oci.with_env([f"API_TOKEN={secret}\0"]),
        lambda: oci.with_process_args("/bin/login", f"--password={secret}\0"),
        lambda: oci.with_process_args("/bin/login", f"--password={secret}", _any(7)),
    ]
    for case in cases:
        with pytest.raises((ValueError, TypeError)) as caught:
            case()
        assert secret not in str(caught.value)
    with pytest.raises(ValueError, match="API_TOKEN") as env_caught:
        oci.with_env({"API_TOKEN": secret + "\0"})
    assert "hunter2" not in str(env_caught.value)


def test_long_values_are_shortened_in_messages() -> None:
    with pytest.raises(ValueError, match=r"^with_process_cwd: path must be an absolute") as caught:
        oci.with_process_cwd("x" * 5000)
    assert len(str(caught.value)) < 120


# --- a spec as new_sandbox sends it, and the package surface ----------------------------------


@pytest.mark.anyio
async def test_options_make_the_spec_new_sandbox_sends(fake: FakeContainerd) -> None:
    base = oci.generate_spec(oci.with_process_args("/bin/true"))
    spec = copy.deepcopy(base)
    for opt in (oci.with_hostname("pod"), oci.with_memory_limit(1 << 24), oci.with_env({"A": "1"})):
        opt(spec)
    async with Client(fake.address) as client:
        sb = await client.new_sandbox("sb1", runtime=RUNTIME, spec=spec)
        sent = (await client.get_sandbox("sb1")).spec
        await sb.shutdown()
    expected = copy.deepcopy(base)
    expected["hostname"] = "pod"
    expected["linux"]["resources"]["memory"] = {"limit": 1 << 24}
    expected["process"]["env"] = [PATH_ENV, "A=1"]
    assert sent == expected
    # A bad option fails at the call that makes it, before anything is sent.
    with pytest.raises(ValueError, match=r"^with_hostname: "):
        oci.with_hostname("")


def test_package_surface() -> None:
    assert "oci" in sandboxclient.__all__
    assert sandboxclient.oci is oci
    assert isinstance(oci.__all__, tuple)
    assert oci.__doc__
    for name in oci.__all__:
        assert hasattr(oci, name), name
    for path in Path(oci.__file__).parent.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path.name


# --- any composition of valid options -----------------------------------------------------------

_text = st.text(alphabet=st.characters(exclude_characters="\x00"), max_size=20)
_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_ABC0123", min_size=1, max_size=12)
_abs = st.lists(_word, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts))
_ids = st.integers(0, 2**31 - 1)
_caps_st = st.lists(st.sampled_from(oci.KNOWN_CAPABILITIES), max_size=5)
_mapping = st.tuples(st.integers(0, 2**16), st.integers(0, 2**16), st.integers(1, 2**16))

valid_options = st.one_of(
    st.lists(_text.filter(bool), min_size=1, max_size=4).map(lambda a: oci.with_process_args(*a)),
    _abs.map(oci.with_process_cwd),
    st.dictionaries(_word, _text, max_size=4).map(oci.with_env),
    st.lists(st.tuples(_word, _text).map("=".join), max_size=4).map(oci.with_env),
    st.booleans().map(oci.with_tty),
    st.tuples(_ids, _ids).map(lambda ug: oci.with_uidgid(*ug)),
    st.lists(_ids, min_size=1, max_size=3).map(lambda g: oci.with_additional_gids(*g)),
    st.integers(0, 0o777).map(oci.with_umask),
    st.sampled_from(
        [oci.with_no_new_privileges(), oci.with_new_privileges(), oci.with_rootfs_readonly()]
    ),
    _caps_st.map(oci.with_capabilities),
    _caps_st.map(oci.with_added_capabilities),
    _caps_st.map(oci.with_dropped_capabilities),
    _caps_st.map(oci.with_ambient_capabilities),
    st.tuples(st.sampled_from(oci.RLIMIT_TYPES), st.integers(0, 2**64 - 1)).map(
        lambda r: oci.with_rlimit(*r)
    ),
    _abs.map(oci.with_rootfs_path),
    st.lists(
        st.builds(
            Mount,
            _abs,
            st.sampled_from(["bind", "tmpfs"]),
            _abs,
            st.lists(_word, max_size=3).map(tuple),
        ),
        max_size=3,
    ).map(oci.with_mounts),
    st.lists(_abs, max_size=2).map(lambda d: oci.without_mounts(*d)),
    st.text(alphabet="abcdefghij-0123456789", min_size=1, max_size=64).map(oci.with_hostname),
    st.dictionaries(_word, st.text(max_size=20), max_size=3).map(oci.with_annotations),
    st.tuples(st.sampled_from(oci.NAMESPACE_KINDS), st.none() | _abs).map(
        lambda k: oci.with_linux_namespace(*k)
    ),
    st.sampled_from(oci.NAMESPACE_KINDS).map(oci.without_namespace),
    st.integers(1, 2**22).map(oci.with_sandbox_namespaces),
    st.tuples(
        st.lists(_mapping, min_size=1, max_size=2), st.lists(_mapping, min_size=1, max_size=2)
    ).map(lambda m: oci.with_user_namespace(*m)),
    st.lists(_abs, max_size=3).map(oci.with_masked_paths),
    st.lists(_abs, max_size=3).map(oci.with_readonly_paths),
    st.sampled_from(oci.SECCOMP_ACTIONS).map(
        lambda a: oci.with_seccomp(
            {"defaultAction": a, "syscalls": [{"names": ["read"], "action": a}]}
        )
    ),
    st.just(oci.with_seccomp_unconfined()),
    _abs.map(oci.with_cgroup),
    st.integers(1, 2**63 - 1).map(oci.with_memory_limit),
    st.floats(0.01, 512, allow_nan=False).map(oci.with_cpus),
    st.integers(2, 262_144).map(oci.with_cpu_shares),
    st.sampled_from(["0", "0-1", "0,2-3"]).map(oci.with_cpuset_cpus),
    st.integers(1, 2**40).map(oci.with_pids_limit),
    st.just(oci.with_default_unix_devices()),
    st.sampled_from(["s0", ""]).map(oci.with_selinux_label),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(valid_options, max_size=10))
def test_any_composition_of_valid_options_gives_a_json_spec(opts: list[oci.SpecOpt]) -> None:
    spec = oci.generate_spec(*opts)
    text = json.dumps(spec, allow_nan=False)
    assert json.loads(text) == spec
    assert (
        spec_to_any(spec).value == json.dumps(spec, separators=(",", ":"), allow_nan=False).encode()
    )
    # Options keep no state from one application to the next.
    assert oci.generate_spec(*opts) == spec


# --- against the real containerd ------------------------------------------------------------------


def _ctr_binary() -> Path:
    try:
        return find_containerd_bin_dir() / "ctr"
    except ContainerdUnavailable as exc:
        if containerd_required():
            raise
        pytest.skip(str(exc))


@pytest.mark.real
def test_defaults_equal_ctr_oci_spec_but_for_the_documented_three() -> None:
    # `ctr oci spec` prints oci.GenerateSpec's result for namespace "default" and an empty id.
    done = subprocess.run(
        [str(_ctr_binary()), "--address", "/nonexistent.sock", "oci", "spec"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    go = json.loads(done.stdout)
    # The defaults of the release that ctr is, read from its version.
    ours = oci.generate_spec(containerd=containerd_version(_ctr_binary()))
    assert go["linux"].pop("cgroupsPath") == "/default"
    assert ours["process"].pop("env") == [PATH_ENV]
    assert ours["root"].pop("readonly") is False
    assert ours == go


@pytest.mark.real
def test_generated_spec_runs_under_ctr(
    real_containerd: RealContainerd, root: Path, tmp_path: Path
) -> None:
    daemon = real_containerd.daemon
    spec = oci.generate_spec(
        oci.with_process_args("/bin/sh", "-c", "id -u; hostname; cat /proc/self/status"),
        oci.with_hostname("oci-test"),
        oci.with_uidgid(1000, 1000),
        oci.with_rootfs_path(str(root)),
        oci.with_no_new_privileges(),
    )
    config = tmp_path / "config.json"
    config.write_text(json.dumps(spec))
    namespace, cid = f"oci-{uuid.uuid4().hex[:8]}", "oci-run"
    shims_before = set(daemon.shim_pids())
    try:
        done = daemon.ctr("run", "--rm", "--config", str(config), cid, namespace=namespace)
    finally:
        daemon.ctr("tasks", "kill", "-s", "SIGKILL", cid, namespace=namespace, check=False)
        daemon.ctr("tasks", "rm", "-f", cid, namespace=namespace, check=False)
        daemon.ctr("containers", "rm", cid, namespace=namespace, check=False)
        daemon.kill_shims(set(daemon.shim_pids()) - shims_before)
    lines = done.stdout.splitlines()
    assert lines[0] == "1000", done.stdout
    assert lines[1] == "oci-test", done.stdout
    status = dict(line.split(":\t", 1) for line in lines[2:] if ":\t" in line)
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Uid"].split()[0] == "1000"
    assert status["Gid"].split()[0] == "1000"
    bounding = sum(1 << oci.KNOWN_CAPABILITIES.index(c) for c in GO_CAPS)
    assert int(status["CapBnd"], 16) == bounding
    assert daemon.ctr("containers", "ls", "-q", namespace=namespace).stdout.split() == []
    assert not os.path.exists(root / "proc" / "self")  # nothing left mounted in it


@pytest.mark.anyio
async def test_sandbox_namespaces_of_a_sandbox_handle(fake: FakeContainerd) -> None:
    async with Client(fake.address, namespace=new_namespace(), sandboxer="shim") as client:
        sb = await client.new_sandbox("ns1", runtime=RUNTIME)
        with pytest.raises(ValueError, match=r"^with_sandbox_namespaces: sandbox 'ns1' has no pid"):
            oci.with_sandbox_namespaces(sb)
        started = await sb.start()
        assert sb.pid == started.pid
        spec = oci.generate_spec(oci.with_sandbox_namespaces(sb))
        await sb.shutdown()
    joined = {n["type"]: n.get("path") for n in spec["linux"]["namespaces"]}
    assert joined == {
        "pid": None,
        "ipc": f"/proc/{started.pid}/ns/ipc",
        "uts": f"/proc/{started.pid}/ns/uts",
        "mount": None,
        "network": f"/proc/{started.pid}/ns/net",
    }
