"""The isolating sandboxer's spec, and what either sandboxer refuses of a request, without
containerd: the merge over the defaults, and each refusal naming its field."""

from __future__ import annotations

from typing import Any

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from sandboxclient import oci
from sandboxclient._members._root import MEMBERS_ROOT_ANNOTATION
from sandboxclient._members._spec import MEMBERS_CGROUP_ANNOTATION
from sandboxclient._models import Mount
from sandboxclient._wire._pb import AnyPb, SandboxPb, SandboxRuntimePb, sandbox_pb
from sandboxclient.sandboxer._extras import check_create, check_sandbox
from sandboxclient.sandboxer._podspec import build_spec, check_spec, is_host_root_bind
from tests.support.constants import RUNTIME

DEFAULTS = oci.generate_spec()


def built(spec: dict[str, Any], **kw: Any) -> dict[str, Any]:
    kw.setdefault("has_rootfs_mounts", False)
    kw.setdefault("default_root", "/srv/default-root")
    return build_spec(spec, namespace="ns", sandbox_id="sb1", **kw)


def refused(call: Any, field: str) -> str:
    """Run ``call()``; it must raise INVALID_ARGUMENT whose message names ``field``."""
    with pytest.raises(GRPCError) as info:
        call()
    assert info.value.status is Status.INVALID_ARGUMENT, info.value
    message = str(info.value.message)
    assert field in message, message
    return message


# --- null is a key left out ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ({"process": {"noNewPrivileges": None}}, ("process", "noNewPrivileges")),
        ({"process": {"capabilities": None}}, ("process", "capabilities")),
        ({"linux": {"maskedPaths": None}}, ("linux", "maskedPaths")),
        ({"linux": {"readonlyPaths": None}}, ("linux", "readonlyPaths")),
        ({"linux": {"resources": None}}, ("linux", "resources")),
        ({"linux": None}, ("linux", "maskedPaths")),
        ({"process": None}, ("process", "noNewPrivileges")),
    ],
    ids=lambda v: ".".join(v) if isinstance(v, tuple) else None,
)
def test_a_null_in_the_spec_leaves_the_default(spec: dict[str, Any], path: tuple[str, str]) -> None:
    top, key = path
    assert DEFAULTS[top][key]  # something to lose
    assert built(spec)[top][key] == built({})[top][key]


def test_a_null_under_a_key_the_defaults_lack_is_left_out() -> None:
    spec = built({"linux": {"sysctl": None}, "annotations": None, "process": {"args": ["x"]}})
    assert "sysctl" not in spec["linux"]
    own = {MEMBERS_CGROUP_ANNOTATION, MEMBERS_ROOT_ANNOTATION}  # the sandboxer's
    assert set(spec.get("annotations") or {}) <= own
    assert spec["process"]["args"] == ["x"]


def test_a_value_still_replaces_the_default() -> None:
    spec = built({"process": {"noNewPrivileges": False}, "linux": {"maskedPaths": []}})
    assert spec["process"]["noNewPrivileges"] is False
    assert spec["linux"]["maskedPaths"] == []


# --- root.path --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/proc/1/root", "/srv/a\0b"], ids=["proc-root", "nul"])
def test_a_root_path_that_cannot_be_resolved_is_invalid_argument(path: str) -> None:
    # /proc/1/root may not be resolvable by the sandboxer (PermissionError); where it is,
    # it is the host's / and refused as such: either way root.path is named.
    refused(lambda: check_spec({"root": {"path": path}}, has_rootfs_mounts=False), "root.path")


def test_root_path_with_rootfs_mounts_is_the_bundles_or_nothing() -> None:
    for path in ("", "rootfs", None):
        check_spec({"root": {"path": path}}, has_rootfs_mounts=True)
    assert built({"root": {"path": "rootfs", "readonly": True}}, has_rootfs_mounts=True)[
        "root"
    ] == {"path": "rootfs", "readonly": True}
    for path in ("/srv/root", "elsewhere"):
        message = refused(
            lambda p=path: check_spec({"root": {"path": p}}, has_rootfs_mounts=True),
            "root.path",
        )
        assert "rootfs mounts" in message


# --- the host's / is never bound whole ---------------------------------------------------------


@pytest.mark.parametrize(
    "mount",
    [
        {"destination": "/host", "type": "bind", "source": "/"},
        {"destination": "/host", "type": "none", "source": "/", "options": ["rbind", "ro"]},
        {"destination": "/host", "type": "bind", "source": "/usr/.."},
        {"destination": "/host", "type": "bind", "source": "../../../../../../../../.."},
        {"destination": "/host", "type": "none", "source": "etc", "options": ["rbind"]},
    ],
    ids=["bind", "rbind-option", "dotdot", "relative-climb", "relative"],
)
def test_a_bind_mount_of_the_hosts_root_is_refused(mount: dict[str, Any]) -> None:
    spec = {"mounts": [{"destination": "/data", "type": "tmpfs", "source": "tmpfs"}, mount]}
    refused(lambda: check_spec(spec, has_rootfs_mounts=False), "mounts[1].source")


def test_other_mounts_of_root_are_no_bind() -> None:
    # A tmpfs or proc "source" is a name, not a path of the host.
    spec = {"mounts": [{"destination": "/x", "type": "tmpfs", "source": "/"}]}
    check_spec(spec, has_rootfs_mounts=False)
    check_spec(
        {"mounts": [{"destination": "/d", "type": "bind", "source": "/tmp"}]},
        has_rootfs_mounts=False,
    )


def test_a_rootfs_bind_of_the_hosts_root_is_seen() -> None:
    assert is_host_root_bind(Mount("bind", "/", "", ("rbind", "ro")))
    assert is_host_root_bind(Mount("none", "/", "", ("bind",)))
    assert not is_host_root_bind(Mount("bind", "/srv/root", "", ("rbind",)))
    assert not is_host_root_bind(Mount("overlay", "overlay", "", ("lowerdir=/",)))
    # runc would take a relative source from the bundle's directory, and ".." climbs out.
    refused(lambda: is_host_root_bind(Mount("bind", "../../../..", "", ("rbind",))), "rootfs")


# --- a Create's netns path and annotations ------------------------------------------------------


def test_netns_path_joins_unless_the_spec_names_another() -> None:
    same = {"linux": {"namespaces": [{"type": "network", "path": "/run/netns/a"}]}}
    spec = built(same, netns_path="/run/netns/a")
    assert {"type": "network", "path": "/run/netns/a"} in spec["linux"]["namespaces"]
    spec = built({"linux": {"namespaces": [{"type": "network"}]}}, netns_path="/run/netns/a")
    assert {"type": "network", "path": "/run/netns/a"} in spec["linux"]["namespaces"]
    other = {"linux": {"namespaces": [{"type": "network", "path": "/run/netns/b"}]}}
    refused(lambda: built(other, netns_path="/run/netns/a"), "netns_path")


def test_create_annotations_join_the_specs() -> None:
    spec = built({"annotations": {"a": "1"}}, annotations={"b": "2", "a": "1"})
    spec["annotations"].pop(MEMBERS_CGROUP_ANNOTATION, None)  # the sandboxer's own
    spec["annotations"].pop(MEMBERS_ROOT_ANNOTATION)
    assert spec["annotations"] == {"a": "1", "b": "2"}
    refused(
        lambda: check_spec(
            {"annotations": {"a": "1"}}, has_rootfs_mounts=False, annotations={"a": "2"}
        ),
        'annotations["a"]',
    )


# --- what a Create carries besides the spec ---------------------------------------------------


def _sandbox(**kw: Any) -> SandboxPb:
    runtime = SandboxRuntimePb(name=kw.pop("runtime", RUNTIME), options=kw.pop("options", None))
    return SandboxPb(sandbox_id="sb1", runtime=runtime, **kw)


EMPTY = AnyPb(type_url="type.googleapis.com/google.protobuf.Empty", value=b"")
SOMETHING = AnyPb(type_url="containerd.runc.v1.Options", value=b"\x12\x04/bin")


@pytest.mark.parametrize("isolation", ["container", "none"])
def test_a_sandbox_asking_for_nothing_more_is_taken(isolation: str) -> None:
    for sandbox in (
        _sandbox(),
        _sandbox(runtime=""),
        _sandbox(options=EMPTY),
        _sandbox(extensions={"e": SOMETHING}),  # the client's metadata, as labels are
    ):
        check_sandbox(sandbox, isolation)
    check_create(sandbox_pb.ControllerCreateRequest(sandbox_id="sb1", options=EMPTY), isolation)


@pytest.mark.parametrize("isolation", ["container", "none"])
@pytest.mark.parametrize(
    ("runtime", "field"),
    [("io.containerd.kata.v2", "runtime.name"), ("r", "runtime.name")],
    ids=["kata", "made-up"],
)
def test_a_runtime_other_than_runcs_is_refused(isolation: str, runtime: str, field: str) -> None:
    message = refused(lambda: check_sandbox(_sandbox(runtime=runtime), isolation), field)
    assert f"--isolation {isolation}" in message


def test_runtime_options_are_the_isolating_sandboxers_alone() -> None:
    check_sandbox(_sandbox(options=SOMETHING), "container")  # its container's runc options
    refused(lambda: check_sandbox(_sandbox(options=SOMETHING), "none"), "runtime.options")


def test_create_options_are_refused_by_both() -> None:
    request = sandbox_pb.ControllerCreateRequest(sandbox_id="sb1", options=SOMETHING)
    for isolation in ("container", "none"):
        refused(lambda i=isolation: check_create(request, i), "options")
