"""The default seccomp profile, as data: the family of containerd's and Docker's default.

:func:`default_seccomp_profile` builds the spec's ``linux.seccomp`` object for a process
whose bounding capabilities are given: every system call not named here answers ``EPERM``
(``SCMP_ACT_ERRNO``); :data:`ALLOWED_SYSCALLS` are allowed to everyone; the calls of
:data:`CAPABILITY_SYSCALLS` only when the capability is granted. Without ``CAP_SYS_ADMIN``,
``clone`` is allowed only when its flags carry no ``CLONE_NEW*`` bit, and ``clone3`` (whose
flags seccomp cannot read) answers ``ENOSYS``, so that libc falls back to ``clone``.
``personality`` takes only the few personas a program may ask for.

So, among others, ``unshare``, ``setns``, ``mount``, ``umount2``, ``pivot_root``, ``bpf``,
``perf_event_open``, ``keyctl``, ``add_key``, ``request_key``, ``ptrace``, ``userfaultfd``,
the ``io_uring_*`` calls, ``init_module``, ``kexec_load``, ``open_by_handle_at`` and
``reboot`` are refused. Names the host's libseccomp does not know are skipped by runc.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from typing import Any, Final

__all__ = (
    "ALLOWED_SYSCALLS",
    "CAPABILITY_SYSCALLS",
    "CLONE_NEW_FLAGS",
    "default_seccomp_profile",
)

EPERM: Final = 1
ENOSYS: Final = 38

CLONE_NEW_FLAGS: Final = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)
"""The ``clone`` flags that make new namespaces; a process without CAP_SYS_ADMIN may not
pass any of them."""

_PERSONAS: Final = (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)
"""PER_LINUX, with UNAME26, PER_LINUX32, both, and the query (0xffffffff)."""

_ALLOWED: Final = """
_newselect accept accept4 access adjtimex alarm arch_prctl bind brk cacheflush capget
capset chdir chmod chown chown32 clock_adjtime clock_adjtime64 clock_getres
clock_getres_time64 clock_gettime clock_gettime64 clock_nanosleep clock_nanosleep_time64
close close_range connect copy_file_range creat dup dup2 dup3 epoll_create epoll_create1
epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd
eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64 fadvise64_64
fallocate fchdir fchmod fchmodat fchmodat2 fchown fchown32 fchownat fcntl fcntl64
fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstat64 fstatat64
fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_requeue futex_time64 futex_wait
futex_waitv futex_wake futimesat get_robust_list get_thread_area getcpu getcwd getdents
getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups getgroups32
getitimer getpeername getpgid getpgrp getpid getppid getpriority getrandom getresgid
getresgid32 getresuid getresuid32 getrlimit getrusage getsid getsockname getsockopt gettid
gettimeofday getuid getuid32 getxattr inotify_add_watch inotify_init inotify_init1
inotify_rm_watch io_cancel io_destroy io_getevents io_pgetevents io_pgetevents_time64
io_setup io_submit ioctl ioprio_get ioprio_set ipc kill landlock_add_rule
landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr link linkat
listen listxattr llistxattr lremovexattr lseek lsetxattr lstat lstat64 madvise
map_shadow_stack membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat
mlock mlock2 mlockall mmap mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive
mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink mremap msgctl msgget
msgrcv msgsnd msync munlock munlockall munmap name_to_handle_at nanosleep newfstatat open
openat openat2 pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free
pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv preadv2 prlimit64
process_mrelease pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read readahead
readlink readlinkat readv recv recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages
removexattr rename renameat renameat2 restart_syscall riscv_flush_icache rmdir rseq
rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend
rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_get_priority_max
sched_get_priority_min sched_getaffinity sched_getattr sched_getparam sched_getscheduler
sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity sched_setattr
sched_setparam sched_setscheduler sched_yield seccomp select semctl semget semop
semtimedop semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto
set_robust_list set_thread_area set_tid_address setfsgid setfsgid32 setfsuid setfsuid32
setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority setregid setregid32
setresgid setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit setsid
setsockopt setuid setuid32 setxattr shmat shmctl shmdt shmget shutdown sigaltstack
signalfd signalfd4 sigprocmask sigreturn socket socketcall socketpair splice stat stat64
statfs statfs64 statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill
time timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64
timer_settime timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64
timerfd_settime timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname
unlink unlinkat utime utimensat utimensat_time64 utimes vfork wait4 waitid waitpid write
writev
"""

ALLOWED_SYSCALLS: Final = tuple(sorted(_ALLOWED.split()))
"""System calls every process may make. ``name_to_handle_at`` is harmless alone: its
dangerous half, ``open_by_handle_at``, needs CAP_DAC_READ_SEARCH."""

CAPABILITY_SYSCALLS: Final = {
    "CAP_DAC_READ_SEARCH": ("open_by_handle_at",),
    "CAP_SYS_ADMIN": (
        "bpf",
        "clone",
        "clone3",
        "fanotify_init",
        "fsconfig",
        "fsmount",
        "fsopen",
        "fspick",
        "lookup_dcookie",
        "mount",
        "mount_setattr",
        "move_mount",
        "open_tree",
        "perf_event_open",
        "quotactl",
        "quotactl_fd",
        "setdomainname",
        "sethostname",
        "setns",
        "syslog",
        "umount",
        "umount2",
        "unshare",
    ),
    "CAP_SYS_BOOT": ("reboot",),
    "CAP_SYS_CHROOT": ("chroot",),
    "CAP_SYS_MODULE": ("delete_module", "init_module", "finit_module"),
    "CAP_SYS_PACCT": ("acct",),
    "CAP_SYS_PTRACE": (
        "kcmp",
        "pidfd_getfd",
        "process_madvise",
        "process_vm_readv",
        "process_vm_writev",
        "ptrace",
    ),
    "CAP_SYS_RAWIO": ("iopl", "ioperm"),
    "CAP_SYS_TIME": ("settimeofday", "stime", "clock_settime", "clock_settime64"),
    "CAP_SYS_TTY_CONFIG": ("vhangup",),
    "CAP_SYS_NICE": ("get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"),
    "CAP_SYSLOG": ("syslog",),
    "CAP_BPF": ("bpf",),
    "CAP_PERFMON": ("perf_event_open",),
}
"""System calls allowed only to a process whose bounding set holds the capability (which
the kernel checks too: the filter keeps the kernel code behind them out of reach)."""

_ARCHITECTURES: Final = {
    "x86_64": ("SCMP_ARCH_X86_64",),
    "amd64": ("SCMP_ARCH_X86_64",),
    "aarch64": ("SCMP_ARCH_AARCH64",),
    "arm64": ("SCMP_ARCH_AARCH64",),
    "riscv64": ("SCMP_ARCH_RISCV64",),
    "ppc64le": ("SCMP_ARCH_PPC64LE",),
}
"""The native system call ABI only. Docker's profile also admits the 32-bit ones (x86 and
x32 on x86_64, arm on aarch64); their compat entry points are a kernel attack surface of
their own that sandboxed code rarely needs, and each added one costs runc several ms of
filter building at every start. A sandbox that runs 32-bit programs is given a profile of
its own (``oci.with_seccomp``)."""


def _allow(names: Iterable[str]) -> dict[str, Any]:
    return {"names": sorted(names), "action": "SCMP_ACT_ALLOW"}


def default_seccomp_profile(
    capabilities: Iterable[str] = (), *, machine: str | None = None
) -> dict[str, Any]:
    """The default profile (a new dict, the spec's ``linux.seccomp``) for a process whose
    bounding set is ``capabilities`` (``CAP_`` names), on ``machine`` (this host's by
    default: ``platform.machine()``; an unknown one gets the native architecture only)."""
    granted = {str(c).upper() for c in capabilities}
    extra: set[str] = set()
    for capability, names in CAPABILITY_SYSCALLS.items():
        if capability in granted:
            extra.update(names)
    rules: list[dict[str, Any]] = [_allow(set(ALLOWED_SYSCALLS) | extra)]
    for persona in _PERSONAS:
        rules.append(
            {
                "names": ["personality"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": persona, "op": "SCMP_CMP_EQ"}],
            }
        )
    if "CAP_SYS_ADMIN" not in granted:
        rules.append(
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ALLOW",
                "args": [
                    {
                        "index": 0,
                        "value": CLONE_NEW_FLAGS,
                        "valueTwo": 0,
                        "op": "SCMP_CMP_MASKED_EQ",
                    }
                ],
            }
        )
        rules.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS})
    arch = _ARCHITECTURES.get(machine or platform.machine(), ())
    profile: dict[str, Any] = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "syscalls": rules,
    }
    if arch:
        profile["architectures"] = list(arch)
    return profile
