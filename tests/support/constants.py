"""Values many tests name: the runtime they ask for, the namespace the server-side tests use,
the repository's root, and the daemon's words that more than one test compares with."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

__all__ = (
    "BAD_FILTERS",
    "BAD_NAMESPACE",
    "MKDIR_DENIED",
    "NAMESPACE_PATTERN",
    "NOBODY",
    "NO_NAMESPACE",
    "NS",
    "REPO_ROOT",
    "RUNTIME",
)

RUNTIME: Final = "io.containerd.runc.v2"
"""The runtime every test's sandbox and container asks for: runc's shim."""

NS: Final = "default"
"""The namespace of tests that speak to a server straight, not through a test's own one."""

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
"""The repository's root (the folder holding ``sandboxclient/``)."""

NOBODY: Final = 65534
"""The uid and gid of ``nobody``: a user that owns nothing of the test's."""

NAMESPACE_PATTERN: Final = "^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"
"""The pattern containerd names when it refuses a namespace or an id."""

BAD_NAMESPACE: Final = (
    f'namespace validation: identifier "Bad_NS!" must match {NAMESPACE_PATTERN}: invalid argument'
)
"""containerd's answer to a call in the namespace ``Bad_NS!``."""

NO_NAMESPACE: Final = "namespace is required: failed precondition"
"""containerd's answer to a call that names no namespace."""

MKDIR_DENIED: Final[dict[str, Any]] = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
}
"""A seccomp profile that refuses only mkdir: seen from inside, it shows a profile applies."""

BAD_FILTERS: Final = (
    "labels.a==",
    "id==a,",
    "labels.a=b",
    "labels.a<>b",
    'labels."a',
    "a b",
    "id==a ",
    '"x"y',
    "labels.a~=|x",
)
"""Filters containerd's parser refuses (``filters: parse error: ...``), each a different way."""
