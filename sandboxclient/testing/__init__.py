"""Test helpers: an embedded stand-in for containerd's sandbox and containers services."""

from __future__ import annotations

from ._fake import FakeContainerd

__all__ = ("FakeContainerd",)
