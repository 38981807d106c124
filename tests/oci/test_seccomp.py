"""The default seccomp profile as data, and the options that set or refuse a filter."""

from __future__ import annotations

from typing import Any

from sandboxclient import oci


def rules_for(profile: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [rule for rule in profile["syscalls"] if name in rule["names"]]


def allowed(profile: dict[str, Any]) -> set[str]:
    """The calls allowed whatever their arguments."""
    return {
        name
        for rule in profile["syscalls"]
        if rule["action"] == "SCMP_ACT_ALLOW" and not rule.get("args")
        for name in rule["names"]
    }


def test_the_default_refuses_what_it_does_not_name_with_eperm() -> None:
    profile = oci.default_seccomp_profile(oci.DEFAULT_CAPABILITIES, machine="x86_64")
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert profile["defaultErrnoRet"] == 1
    # The native ABI only: the 32-bit compat entry points stay out of reach.
    assert profile["architectures"] == ["SCMP_ARCH_X86_64"]
    calls = allowed(profile)
    assert {"read", "write", "execve", "openat", "futex", "exit_group"} <= calls
    dangerous = {
        "unshare", "setns", "mount", "umount2", "pivot_root", "bpf", "keyctl", "add_key",
        "request_key", "ptrace", "userfaultfd", "io_uring_setup", "init_module", "kexec_load",
        "open_by_handle_at", "reboot", "perf_event_open", "clone", "clone3",
    }  # fmt: skip
    assert not calls & dangerous


def test_clone_without_new_namespaces_and_clone3_enosys() -> None:
    profile = oci.default_seccomp_profile(oci.DEFAULT_CAPABILITIES)
    (clone,) = rules_for(profile, "clone")
    (arg,) = clone["args"]
    assert (arg["op"], arg["index"], arg["valueTwo"]) == ("SCMP_CMP_MASKED_EQ", 0, 0)
    for flag in (0x20000, 0x2000000, 0x4000000, 0x8000000, 0x10000000, 0x20000000, 0x40000000):
        assert arg["value"] & flag, hex(flag)
    assert not arg["value"] & 0x00010000  # CLONE_THREAD stays allowed
    (clone3,) = rules_for(profile, "clone3")
    assert (clone3["action"], clone3["errnoRet"]) == ("SCMP_ACT_ERRNO", 38)
    assert {rule["args"][0]["value"] for rule in rules_for(profile, "personality")} == {
        0,
        8,
        0x20000,
        0x20008,
        0xFFFFFFFF,
    }


def test_each_granted_capability_opens_its_calls() -> None:
    admin = oci.default_seccomp_profile([*oci.DEFAULT_CAPABILITIES, "cap_sys_admin"])
    calls = allowed(admin)
    assert {"mount", "unshare", "setns", "clone", "clone3", "bpf"} <= calls
    assert not rules_for(admin, "clone3")[0].get("errnoRet")
    assert "chroot" in allowed(oci.default_seccomp_profile(["CAP_SYS_CHROOT"]))
    assert "ptrace" in allowed(oci.default_seccomp_profile(["CAP_SYS_PTRACE"]))
    assert "ptrace" not in allowed(oci.default_seccomp_profile([]))


def test_with_default_seccomp_follows_the_bounding_set_and_replaces_the_opt_out() -> None:
    spec = oci.generate_spec(
        oci.with_seccomp_unconfined(),
        oci.with_added_capabilities(["CAP_SYS_ADMIN"]),
        oci.with_default_seccomp(),
    )
    assert "annotations" not in spec
    assert "mount" in allowed(spec["linux"]["seccomp"])
    plain = oci.generate_spec(oci.with_default_seccomp())
    assert "mount" not in allowed(plain["linux"]["seccomp"])


def test_unconfined_says_so_and_a_profile_takes_its_place() -> None:
    spec = oci.generate_spec(oci.with_default_seccomp(), oci.with_seccomp_unconfined())
    assert "seccomp" not in spec["linux"]
    assert spec["annotations"] == {oci.SECCOMP_ANNOTATION: oci.SECCOMP_UNCONFINED}
    profile = {"defaultAction": "SCMP_ACT_ALLOW"}
    spec = oci.generate_spec(
        oci.with_annotations({"keep": "me"}),
        oci.with_seccomp_unconfined(),
        oci.with_seccomp(profile),
    )
    assert spec["linux"]["seccomp"] == profile
    assert spec["annotations"] == {"keep": "me"}
