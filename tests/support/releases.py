"""What differs between the containerd releases the tests run against (the stand-in can
answer as each of them, a real daemon is one of them): expectations are written per
release from these, never from one release's wording."""

from __future__ import annotations

from sandboxclient import ContainerdVersion
from sandboxclient._facts._golang import go_quote
from sandboxclient.testing._releases import RELEASES

__all__ = (
    "LINES",
    "SANDBOX_IMAGES",
    "pulled_blob_ends",
    "start_lookup_refusal",
    "start_refusal",
)

LINES = tuple(f"{major}.{minor}" for major, minor in RELEASES)
"""Every release line the stand-in can answer as, ``"2.0"`` to ``"2.4"``."""


SANDBOX_IMAGES = {
    (2, 0): "registry.k8s.io/pause:3.10",
    (2, 1): "registry.k8s.io/pause:3.10",
    (2, 2): "registry.k8s.io/pause:3.10.1",
    (2, 3): "registry.k8s.io/pause:3.10.2",
    (2, 4): "registry.k8s.io/pause:3.10.2",
}
"""The CRI sandbox (pause) image each line's default config names."""


def start_lookup_refusal(version: ContainerdVersion, sandboxer: str, message: str) -> str:
    """Controller.Start's message when the controller named ``sandboxer`` cannot be had
    (``message``: what every other Controller call answers): wrapped from 2.2 on."""
    if not version.at_least(2, 2):
        return message
    return f"failed to get sandbox controller for {go_quote(sandboxer)}: {message}"


def start_refusal(version: ContainerdVersion, sandbox_id: str, message: str) -> str:
    """Controller.Start's message when the controller refuses with ``message``: wrapped
    from 2.2 on."""
    if not version.at_least(2, 2):
        return message
    return f"failed to start sandbox {go_quote(sandbox_id)}: {message}"


def pulled_blob_ends(version: ContainerdVersion, kind: str) -> frozenset[str]:
    """The events a pull's progress may end a blob of ``kind`` (``layer``, ``config``,
    ``manifest``) with. From 2.2 the Transfer service reports a layer's unpacking
    (``extracting``, ``extracted``), and a layer whose unpacking began before the tracker's
    next look (every 300 ms) never gets its ``complete``; 2.0 and 2.1 end every blob so."""
    if kind == "layer" and version.at_least(2, 2):
        return frozenset({"complete", "extracted"})
    return frozenset({"complete"})
