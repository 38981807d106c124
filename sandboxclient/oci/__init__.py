"""Build OCI runtime specs as containerd's Go client does with ``pkg/oci``.

:func:`generate_spec` returns the default Linux spec of Go's ``oci.GenerateSpec`` as a plain,
JSON-ready dict, with options applied in order::

    from sandboxclient import oci

    spec = oci.generate_spec(
        oci.with_process_args("/bin/sh", "-c", "id"),
        oci.with_hostname("web"),
        oci.with_uidgid(1000, 1000),
        oci.with_memory_limit(256 * 2**20),
    )

Each option is a :data:`SpecOpt`, a callable that edits a spec in place, named after Go's
``oci.With...`` in snake case; the spec goes to ``client.new_sandbox(id, spec=...)`` or
``new_container(id, spec=...)``. An option checks its arguments when it is
made, not when it is applied: a bad one raises ``TypeError`` or ``ValueError`` at once, the
message starting with the option's name, and never showing an environment value or a
command's arguments. Applying creates any missing section (``process``, ``linux``, ...).

Capability names are Linux's (:data:`KNOWN_CAPABILITIES`): the ``CAP_`` prefix is optional
and case does not matter; specs always get the upper-case ``CAP_`` spelling.
"""

from ._caps import (
    KNOWN_CAPABILITIES,
    with_added_capabilities,
    with_all_known_capabilities,
    with_ambient_capabilities,
    with_capabilities,
    with_dropped_capabilities,
)
from ._check import SpecOpt
from ._defaults import (
    DEFAULT_CAPABILITIES,
    DEFAULT_MASKED_PATHS,
    DEFAULT_PATH_ENV,
    DEFAULT_READONLY_PATHS,
    NAMESPACE_KINDS,
    OCI_VERSION,
    generate_spec,
)
from ._fs import (
    Mount,
    with_annotations,
    with_hostname,
    with_mounts,
    with_rootfs_path,
    with_rootfs_readonly,
    without_mounts,
)
from ._handler import RUNTIME_HANDLER_ANNOTATION, with_runtime_handler
from ._ids import IDMapping
from ._linux import (
    HOST_USERS_ANNOTATION,
    SECCOMP_ACTIONS,
    SECCOMP_ANNOTATION,
    SECCOMP_UNCONFINED,
    HasPid,
    with_cgroup,
    with_default_seccomp,
    with_host_users,
    with_linux_namespace,
    with_masked_paths,
    with_readonly_paths,
    with_sandbox_namespaces,
    with_seccomp,
    with_seccomp_unconfined,
    with_user_namespace,
    without_namespace,
)
from ._process import (
    RLIMIT_TYPES,
    with_additional_gids,
    with_apparmor_profile,
    with_env,
    with_new_privileges,
    with_no_new_privileges,
    with_process_args,
    with_process_cwd,
    with_rlimit,
    with_selinux_label,
    with_tty,
    with_uidgid,
    with_umask,
    with_user,
)
from ._resources import (
    CFS_PERIOD,
    with_cpu_cfs,
    with_cpu_shares,
    with_cpus,
    with_cpuset_cpus,
    with_cpuset_mems,
    with_default_unix_devices,
    with_memory_limit,
    with_pids_limit,
)
from ._seccomp import ALLOWED_SYSCALLS, CAPABILITY_SYSCALLS, default_seccomp_profile

__all__ = (
    "ALLOWED_SYSCALLS",
    "CAPABILITY_SYSCALLS",
    "CFS_PERIOD",
    "DEFAULT_CAPABILITIES",
    "DEFAULT_MASKED_PATHS",
    "DEFAULT_PATH_ENV",
    "DEFAULT_READONLY_PATHS",
    "HOST_USERS_ANNOTATION",
    "KNOWN_CAPABILITIES",
    "NAMESPACE_KINDS",
    "OCI_VERSION",
    "RLIMIT_TYPES",
    "RUNTIME_HANDLER_ANNOTATION",
    "SECCOMP_ACTIONS",
    "SECCOMP_ANNOTATION",
    "SECCOMP_UNCONFINED",
    "HasPid",
    "IDMapping",
    "Mount",
    "SpecOpt",
    "default_seccomp_profile",
    "generate_spec",
    "with_added_capabilities",
    "with_additional_gids",
    "with_all_known_capabilities",
    "with_ambient_capabilities",
    "with_annotations",
    "with_apparmor_profile",
    "with_capabilities",
    "with_cgroup",
    "with_cpu_cfs",
    "with_cpu_shares",
    "with_cpus",
    "with_cpuset_cpus",
    "with_cpuset_mems",
    "with_default_seccomp",
    "with_default_unix_devices",
    "with_dropped_capabilities",
    "with_env",
    "with_host_users",
    "with_hostname",
    "with_linux_namespace",
    "with_masked_paths",
    "with_memory_limit",
    "with_mounts",
    "with_new_privileges",
    "with_no_new_privileges",
    "with_pids_limit",
    "with_process_args",
    "with_process_cwd",
    "with_readonly_paths",
    "with_rlimit",
    "with_rootfs_path",
    "with_rootfs_readonly",
    "with_runtime_handler",
    "with_sandbox_namespaces",
    "with_seccomp",
    "with_seccomp_unconfined",
    "with_selinux_label",
    "with_tty",
    "with_uidgid",
    "with_umask",
    "with_user",
    "with_user_namespace",
    "without_mounts",
    "without_namespace",
)
