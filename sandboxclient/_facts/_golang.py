"""How Go, containerd's language, writes the things its messages and records carry: ``%q``
quoting, the machine's architecture as ``GOARCH`` names it, the zero ``time.Time``.

The client's own refusals, the sandboxer's and the stand-in's answers all quote and name
things this way, so that they read like containerd's and compare with them word for word.
"""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from typing import Final

__all__ = ("GO_ZERO_TIME", "go_arch", "go_quote")

GO_ZERO_TIME: Final = datetime(1, 1, 1, tzinfo=UTC)
"""Go's zero ``time.Time``: what containerd's controllers send as the exit time of a sandbox
that has not exited (an unset one becomes the Unix epoch on its way through containerd)."""

# uname's machine names and Go's GOARCH (with GOARM as the variant) for them.
_GOARCH: Final = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", ""),
    "arm64": ("arm64", ""),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i386": ("386", ""),
    "i686": ("386", ""),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
}


def go_arch(machine: str | None = None) -> tuple[str, str]:
    """This machine's (or ``machine``'s) architecture and variant as containerd names them."""
    name = (platform.machine() if machine is None else machine).lower()
    return _GOARCH.get(name, (name, ""))


_GO_ESCAPES: Final = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    '"': '\\"',
    "\\": "\\\\",
}


def go_quote(value: str) -> str:
    """``value`` in double quotes, as Go's ``%q`` writes it in containerd's messages.

    Printable characters stay as they are (Go's ``unicode.IsPrint`` and Python's
    ``str.isprintable`` draw the same line); the others are escaped as Go escapes them.
    """
    out = ['"']
    for ch in value:
        escaped = _GO_ESCAPES.get(ch)
        if escaped is not None:
            out.append(escaped)
        elif ch.isprintable():
            out.append(ch)
        elif ch < " " or ch == "\x7f":
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)
