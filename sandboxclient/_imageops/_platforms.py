"""Platforms as containerd names and matches them (Go's ``platforms`` package, as far as
images need it)."""

from __future__ import annotations

from .._facts._golang import go_arch
from .._models import Platform

__all__ = ("host_platform", "platform_matches", "platform_text")

# The variant a platform has when it names none (Go's platforms.Normalize).
_DEFAULT_VARIANTS = {"arm64": "v8", "arm": "v7"}


def host_platform() -> Platform:
    """This machine's platform as containerd names it."""
    arch, variant = go_arch()
    return Platform("linux", arch, variant)


def _variant(platform: Platform) -> str:
    return platform.variant or _DEFAULT_VARIANTS.get(platform.architecture, "")


def platform_matches(have: Platform, want: Platform) -> bool:
    """Whether ``have`` is platform ``want`` (os and architecture equal, variants equal
    once normalised, or ``want`` names none)."""
    if (have.os, have.architecture) != (want.os, want.architecture):
        return False
    return not want.variant or _variant(have) == _variant(want)


def platform_text(platform: Platform | None) -> str:
    """``os/architecture[/variant]``, as containerd prints a platform."""
    if platform is None:
        return "?"
    parts = [platform.os, platform.architecture] + ([platform.variant] if platform.variant else [])
    return "/".join(parts)
