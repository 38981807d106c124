"""Test helpers for code that uses sandboxclient.

- ``FakeContainerd``: an embedded stand-in for containerd's sandbox, containers, tasks,
  events, images (import and export, no registry), content, leases, snapshots, version and
  introspection services, served in-process on a temporary unix socket; no daemon, no root.
  Tasks run as host processes, without isolation. Its Version service answers
  ``FAKE_VERSION``.
- ``ContainerdDaemon``: a private, real containerd (2.0 or newer) started on its own sockets
  and directories, for integration tests. It is found through ``$CONTAINERD_BIN`` (the
  directory holding containerd, containerd-shim-runc-v2 and ctr), else ``PATH``; runc must
  be there or on ``PATH``. ``require_or_skip_reason()`` says what is missing, if anything.
- ``busybox_rootfs(dir)``: a minimal root filesystem from the host's static busybox, for
  containers that need no image; ``userland_archive(ref, config)``: an OCI archive of an
  image built from it, for ``Client.import_image`` (on the stand-in or a daemon).
- ``plugged_containerd()``: such a containerd with the Python sandboxer (``SandboxerProcess``)
  plugged in as proxy sandbox controller ``pysandbox``, so sandboxes really start.
"""

from __future__ import annotations

from ._daemon import ContainerdDaemon, require_or_skip_reason
from ._fake import FakeContainerd
from ._images import busybox_rootfs
from ._introspection import FAKE_VERSION
from ._locate import ContainerdUnavailable
from ._plugged import (
    GVISOR_RUNSC,
    PLUGIN_NAME,
    HeldSandboxesError,
    PluggedContainerd,
    SandboxerProcess,
    plugged_containerd,
)
from ._userland import userland_archive

__all__ = (
    "FAKE_VERSION",
    "GVISOR_RUNSC",
    "PLUGIN_NAME",
    "ContainerdDaemon",
    "ContainerdUnavailable",
    "FakeContainerd",
    "HeldSandboxesError",
    "PluggedContainerd",
    "SandboxerProcess",
    "busybox_rootfs",
    "plugged_containerd",
    "require_or_skip_reason",
    "userland_archive",
)
