"""The default Linux spec, as containerd 2.x's ``oci.GenerateSpec`` makes it."""

from __future__ import annotations

from typing import Any, Final

from ._check import SpecOpt
from ._versions import ContainerdRelease, oci_version_of, spec_release

__all__ = (
    "DEFAULT_CAPABILITIES",
    "DEFAULT_MASKED_PATHS",
    "DEFAULT_PATH_ENV",
    "DEFAULT_READONLY_PATHS",
    "NAMESPACE_KINDS",
    "OCI_VERSION",
    "generate_spec",
)

OCI_VERSION: Final = oci_version_of(spec_release(None))
"""The runtime-spec version of a generated spec by default (``1.3.0``, containerd 2.3's)."""

DEFAULT_PATH_ENV: Final = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""The PATH containerd gives a process whose image sets none."""

DEFAULT_CAPABILITIES: Final = (
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
)
"""The bounding, permitted and effective set of a generated spec, in containerd 2.1's order."""

DEFAULT_MASKED_PATHS: Final = (
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
)
"""Paths a generated spec hides from the container (``linux.maskedPaths``)."""

DEFAULT_READONLY_PATHS: Final = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)
"""Paths a generated spec makes read-only in the container (``linux.readonlyPaths``)."""

NAMESPACE_KINDS: Final = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
"""The namespace types of the runtime spec."""

_DEFAULT_NAMESPACES: Final = ("pid", "ipc", "uts", "mount", "network")

_NOSUID_NOEXEC_NODEV: Final = ("nosuid", "noexec", "nodev")
_TMPFS_DIR: Final = ("nosuid", "strictatime", "mode=755", "size=65536k")

_DEFAULT_MOUNTS: Final = (
    ("/proc", "proc", "proc", _NOSUID_NOEXEC_NODEV),
    ("/dev", "tmpfs", "tmpfs", _TMPFS_DIR),
    (
        "/dev/pts",
        "devpts",
        "devpts",
        ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"),
    ),
    ("/dev/shm", "tmpfs", "shm", (*_NOSUID_NOEXEC_NODEV, "mode=1777", "size=65536k")),
    ("/dev/mqueue", "mqueue", "mqueue", _NOSUID_NOEXEC_NODEV),
    ("/sys", "sysfs", "sysfs", (*_NOSUID_NOEXEC_NODEV, "ro")),
    ("/run", "tmpfs", "tmpfs", _TMPFS_DIR),
)


def generate_spec(*opts: SpecOpt, containerd: ContainerdRelease | None = None) -> dict[str, Any]:
    """A new OCI runtime spec for a Linux container, with ``opts`` applied in order.

    The defaults are those of containerd release ``containerd``: a line (``"2.1"``), a
    version (``"v2.2.4"``, a ``ContainerdVersion``) or the daemon's answer
    (``containerd=await client.version()``); by default 2.3's, the newest release line.
    Releases 2.0 to 2.4 differ only in ``ociVersion``: ``1.2.0`` (2.0), ``1.2.1`` (2.1 and
    2.2.0), ``1.3.0`` (2.2.1 on); a release newer than these gets the newest's.

    Mirrors Go's ``oci.GenerateSpec`` (its ``populateDefaultUnixSpec``): root ``rootfs``,
    cwd ``/`` as uid 0 gid 0, :data:`DEFAULT_CAPABILITIES` in the bounding, permitted and
    effective sets, ``noNewPrivileges``, ``RLIMIT_NOFILE`` 1024, the proc, dev, devpts, shm,
    mqueue, sysfs and ``/run`` mounts, the masked and read-only paths, new pid, ipc, uts,
    mount and network namespaces, and a device cgroup rule denying every device.

    It differs from Go's in three ways: the process gets :data:`DEFAULT_PATH_ENV` (Go adds it
    only with an image's config), ``root.readonly`` is written out as false, and there is no
    ``linux.cgroupsPath`` (Go derives ``/<namespace>/<container id>``, which a spec built
    without a container does not have: see ``with_cgroup``).

    The spec is a plain JSON-ready dict, new on each call, for the caller to keep or change.

    Raises:
        TypeError: an option is not callable, or ``containerd`` is of another type.
        ValueError: ``containerd`` is not a release line or version, or is older than 2.0.
    """
    oci_version = oci_version_of(spec_release(containerd))
    for index, opt in enumerate(opts):
        if not callable(opt):
            raise TypeError(
                f"generate_spec: option {index} must be a callable, got {type(opt).__name__}"
            )
    spec = _default_spec(oci_version)
    for opt in opts:
        opt(spec)
    return spec


def _default_spec(oci_version: str) -> dict[str, Any]:
    # Built from literals each time, so no two specs share a list.
    return {
        "ociVersion": oci_version,
        "process": {
            "user": {"uid": 0, "gid": 0},
            "env": [DEFAULT_PATH_ENV],
            "cwd": "/",
            "capabilities": {
                "bounding": list(DEFAULT_CAPABILITIES),
                "effective": list(DEFAULT_CAPABILITIES),
                "permitted": list(DEFAULT_CAPABILITIES),
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": False},
        "mounts": [
            {"destination": dest, "type": kind, "source": source, "options": list(options)}
            for dest, kind, source, options in _DEFAULT_MOUNTS
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": kind} for kind in _DEFAULT_NAMESPACES],
            "maskedPaths": list(DEFAULT_MASKED_PATHS),
            "readonlyPaths": list(DEFAULT_READONLY_PATHS),
        },
    }
