"""What a member container (``Sandbox.new_container``) gets where its spec says nothing: the
default seccomp profile and a cgroup nested under the one its sandbox names, checked on the
spec alone and through the stand-in (the real daemon's side is in
tests/sandboxer/test_hardening.py)."""

from __future__ import annotations

from typing import Any

import pytest

from sandboxclient import Client, FailedPreconditionError, oci
from sandboxclient._members._spec import MEMBERS_CGROUP_ANNOTATION, MemberDefaults, members_cgroup
from sandboxclient.testing import FakeContainerd
from tests.support.constants import MKDIR_DENIED

pytestmark = pytest.mark.anyio

RUNTIME = "io.containerd.runc.v2"
PROFILE = oci.default_seccomp_profile(oci.DEFAULT_CAPABILITIES)


def applied(spec: dict[str, Any], parent: str | None = "/ns/sb1") -> dict[str, Any]:
    MemberDefaults(parent).apply(spec, "m1")
    return spec


def test_a_bare_member_spec_gets_the_profile_and_a_nested_cgroup() -> None:
    spec = applied(oci.generate_spec())
    assert spec["linux"]["seccomp"] == PROFILE
    assert spec["linux"]["cgroupsPath"] == "/ns/sb1/m1"


def test_the_profile_follows_the_member_s_capabilities() -> None:
    admin = oci.with_capabilities([*oci.DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"])
    spec = applied(oci.generate_spec(admin))
    names = {n for rule in spec["linux"]["seccomp"]["syscalls"] for n in rule["names"]}
    assert {"mount", "unshare", "setns"} <= names
    assert "mount" not in {n for rule in PROFILE["syscalls"] for n in rule["names"]}


def test_what_the_member_s_spec_gives_is_used_as_given() -> None:
    own = oci.generate_spec(oci.with_seccomp(MKDIR_DENIED), oci.with_cgroup("/elsewhere/m1"))
    spec = applied(own)
    assert spec["linux"]["seccomp"] == MKDIR_DENIED
    assert spec["linux"]["cgroupsPath"] == "/elsewhere/m1"


def test_without_a_parent_the_cgroup_is_containerd_s() -> None:
    spec = applied(oci.generate_spec(), parent=None)
    assert "cgroupsPath" not in spec["linux"]
    assert spec["linux"]["seccomp"] == PROFILE


def test_the_opt_out_is_honoured_and_other_values_refused() -> None:
    spec = applied(oci.generate_spec(oci.with_seccomp_unconfined()))
    assert spec["linux"].get("seccomp") is None
    odd = oci.generate_spec(oci.with_annotations({oci.SECCOMP_ANNOTATION: "off"}))
    with pytest.raises(ValueError, match=oci.SECCOMP_ANNOTATION):
        applied(odd)
    both = oci.generate_spec(oci.with_seccomp(MKDIR_DENIED))
    both["annotations"] = {oci.SECCOMP_ANNOTATION: oci.SECCOMP_UNCONFINED}
    with pytest.raises(ValueError, match="give one of them"):
        applied(both)


@pytest.mark.parametrize(
    ("annotations", "parent"),
    [
        ({MEMBERS_CGROUP_ANNOTATION: "/ns/sb1"}, "/ns/sb1"),
        ({MEMBERS_CGROUP_ANNOTATION: "/ns/sb1/"}, "/ns/sb1"),
        ({MEMBERS_CGROUP_ANNOTATION: "ns/sb1"}, None),  # not absolute
        ({MEMBERS_CGROUP_ANNOTATION: "system.slice:ns:sb1"}, None),  # systemd's form
        ({MEMBERS_CGROUP_ANNOTATION: "/"}, None),
        ({MEMBERS_CGROUP_ANNOTATION: 3}, None),
        ({}, None),
        (None, None),
    ],
)
def test_the_parent_is_read_from_the_sandbox_s_own_spec(
    annotations: dict[str, Any] | None, parent: str | None
) -> None:
    assert members_cgroup({"annotations": annotations}) == parent
    assert members_cgroup(None) is None


async def test_a_member_through_the_client_gets_the_defaults(fake: FakeContainerd) -> None:
    async with Client(fake.address, namespace="members") as client:
        sb = await client.new_sandbox("sb1", runtime=RUNTIME)
        # Before the sandbox has a container of its own, only the profile.
        early = await sb.new_container("m0", join_namespaces=False)
        early_spec = await early.spec()
        assert early_spec is not None
        assert early_spec["linux"]["seccomp"] == PROFILE
        assert "cgroupsPath" not in early_spec["linux"]
        # The sandbox's own container, as the isolating sandboxer makes it, names the parent.
        own = oci.generate_spec(oci.with_annotations({MEMBERS_CGROUP_ANNOTATION: "/members/sb1"}))
        await client.new_container("sb1", spec=own)
        member = await sb.new_container("m1", join_namespaces=False)
        spec = await member.spec()
        assert spec is not None
        assert spec["linux"]["cgroupsPath"] == "/members/sb1/m1"
        assert spec["linux"]["seccomp"] == PROFILE
        free = await sb.new_container(
            "m2", spec=oci.generate_spec(oci.with_seccomp_unconfined()), join_namespaces=False
        )
        free_spec = await free.spec()
        assert free_spec is not None
        assert free_spec["linux"].get("seccomp") is None
        assert free_spec["linux"]["cgroupsPath"] == "/members/sb1/m2"
        odd = oci.generate_spec(oci.with_annotations({oci.SECCOMP_ANNOTATION: "off"}))
        with pytest.raises(ValueError, match=oci.SECCOMP_ANNOTATION):
            await sb.new_container("m3", spec=odd, join_namespaces=False)
        assert {c.id for c in await sb.list_containers()} == {"m0", "m1", "m2"}
        # A container made by the Client directly is no member: no defaults.
        plain = await client.new_container("c1")
        plain_spec = await plain.spec()
        assert plain_spec is not None
        assert "seccomp" not in plain_spec["linux"]


def test_a_member_joining_a_namespace_runc_cannot_set_rlimits_in_leaves_the_default_out() -> None:
    unsettable = MemberDefaults("/ns/sb1", rlimits_unsettable=True)
    spec = oci.generate_spec()
    unsettable.apply(spec, "m1", joined_users=True)
    assert "rlimits" not in spec["process"]
    # Not joining the sandbox's users, or where runc can set them: kept as given.
    for defaults, joined in ((unsettable, False), (MemberDefaults("/ns/sb1"), True)):
        kept = oci.generate_spec()
        defaults.apply(kept, "m1", joined_users=joined)
        assert kept["process"]["rlimits"] == oci.generate_spec()["process"]["rlimits"]
    # Rlimits of the member's own cannot be honoured there: refused, naming the way out.
    own = oci.generate_spec(oci.with_rlimit("NOFILE", 64, 64))
    with pytest.raises(FailedPreconditionError, match=r"rlimits.*host_users=True"):
        unsettable.apply(own, "m1", joined_users=True)
