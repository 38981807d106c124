"""A minimal root filesystem built from the host's statically linked busybox.

The sandboxer's default root filesystem and the test helpers'
``busybox_rootfs`` are both made here: the static busybox (Debian's ``busybox-static``), a
link for each of its applets in ``/bin``, the directories a runtime mounts over, and an
``/etc/passwd`` and ``/etc/group`` naming only root and nobody. Nothing else of the host goes
in.
"""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path
from typing import Final

__all__ = ("BUSYBOX", "build_busybox_root", "busybox_problem", "is_static_elf")

BUSYBOX: Final = Path("/bin/busybox")
"""Where the host's busybox is looked for."""

_ROOT_DIRS: Final = ("bin", "dev", "etc", "proc", "sys", "tmp", "run", "root", "home", "var")
_PT_INTERP: Final = 3


def is_static_elf(path: Path) -> bool:
    """True for a 64-bit ELF executable without a program interpreter (PT_INTERP)."""
    with path.open("rb") as f:
        head = f.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2:
            return False  # not a 64-bit ELF: be strict rather than guess
        order = "<" if head[5] == 1 else ">"
        phoff, phentsize, phnum = (
            struct.unpack_from(order + "Q", head, 32)[0],
            struct.unpack_from(order + "H", head, 54)[0],
            struct.unpack_from(order + "H", head, 56)[0],
        )
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(
        struct.unpack_from(order + "I", table, i * phentsize)[0] != _PT_INTERP for i in range(phnum)
    )


def busybox_problem() -> str | None:
    """Why no busybox root filesystem can be built here, or None when it can."""
    if not BUSYBOX.is_file():
        return f"{BUSYBOX} missing: install busybox-static (a statically linked busybox)"
    if not is_static_elf(BUSYBOX.resolve()):
        return f"{BUSYBOX} is not statically linked: install busybox-static"
    return None


def build_busybox_root(path: str | os.PathLike[str]) -> Path:
    """Fill directory ``path`` (made if missing) with the minimal root filesystem.

    Raises :class:`RuntimeError` saying what to install when the host has no static busybox.
    Files are world-readable (a container's user, whoever it is, must run the shell) and
    writable by their owner only.
    """
    problem = busybox_problem()
    if problem is not None:
        raise RuntimeError(problem)
    root = Path(path)
    for name in _ROOT_DIRS:
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name).chmod(0o755)
    root.chmod(0o755)
    (root / "tmp").chmod(0o1777)
    target = root / "bin" / "busybox"
    target.write_bytes(BUSYBOX.resolve().read_bytes())
    target.chmod(0o755)
    listed = subprocess.run(
        [str(BUSYBOX), "--list"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()
    for applet in listed:
        link = root / "bin" / applet
        if applet != "busybox" and not link.is_symlink() and not link.exists():
            link.symlink_to("busybox")
    for name, text in (
        ("passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"),
        ("group", "root:x:0:\nnogroup:x:65534:\n"),
    ):
        (root / "etc" / name).write_text(text)
        (root / "etc" / name).chmod(0o644)
    return root
