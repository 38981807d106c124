"""A sandbox whose Create names one of the stand-in's snapshots as its rootfs (a client's
``new_sandbox(image=...)``): the snapshot's directory becomes the root its process is found
and run in.

The stand-in's own controller runs host processes and mounts nothing, so the Create it is
forwarded is rewritten: the spec's program is looked up inside the snapshot (as the
host-process module does for a task rooted on one: an absolute path, or the spec's ``PATH``,
taken under the snapshot's directory) and its ``cwd`` is the same path inside it (made if
missing, as runc makes it). A program the image does not have is named by its path inside
the snapshot, so that Start fails as it fails under runc, naming it. The process keeps the
name it was given as its base name (``argv[0]``'s directory becomes the snapshot's). Nothing
else changes: the process runs on the host with the stand-in's privileges, without a chroot
(an absolute path it opens is the host's), and the image's user is not switched to.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .._facts._wirenames import RUNTIME_SPEC_TYPE_URL
from .._wire._pb import AnyPb, sandbox_pb
from ._hostproc import SpecError, resolve

__all__ = ("rooted_create",)


def _spec(message: sandbox_pb.ControllerCreateRequest) -> dict[str, Any] | None:
    sandbox = message.sandbox
    if sandbox is None or sandbox.spec is None or sandbox.spec.type_url != RUNTIME_SPEC_TYPE_URL:
        return None
    try:
        spec = json.loads(sandbox.spec.value)
    except ValueError:
        return None  # the controller refuses it, naming the problem
    return spec if isinstance(spec, dict) else None


def rooted_create(
    message: sandbox_pb.ControllerCreateRequest, root: str
) -> sandbox_pb.ControllerCreateRequest:
    """``message`` with its spec's program and cwd inside ``root`` (see the module)."""
    spec = _spec(message)
    if spec is None:
        return message
    process = spec.get("process")
    if not isinstance(process, dict):
        process = spec["process"] = {}
    cwd = process.get("cwd") or "/"
    args = process.get("args")
    if not isinstance(cwd, str) or not os.path.isabs(cwd):
        return message  # the controller refuses it, naming the problem
    checked = dict(process, cwd=cwd)
    if isinstance(args, list) and args and isinstance(args[0], str):
        try:
            launch = resolve(checked, root=root, own=True, rooted=True)
            process["args"] = [launch.path, *args[1:]]
            process["cwd"] = launch.cwd
        except SpecError:
            process["args"] = [os.path.join(root, args[0].lstrip("/")), *args[1:]]
            process["cwd"] = os.path.join(root, cwd.lstrip("/"))
    else:
        inside = os.path.join(root, cwd.lstrip("/"))
        os.makedirs(inside, mode=0o755, exist_ok=True)
        process["cwd"] = inside
    rewritten = sandbox_pb.ControllerCreateRequest.parse(bytes(message))
    assert rewritten.sandbox is not None
    rewritten.sandbox.spec = AnyPb(type_url=RUNTIME_SPEC_TYPE_URL, value=json.dumps(spec).encode())
    return rewritten
