"""What CNI's CHECK found of a running sandbox's network (:meth:`Sandbox.network` with
``check=True``), as the sandboxer tells it in a verbose Status's
``info[`` :data:`NETWORK_CHECK_KEY` ``]``.

The sandboxer runs CHECK on each plugin of the sandbox's network list in order, against the
cached ADD result, as CNI's spec has a runtime do to verify a container's networking; it
stops at the first plugin that fails. A plugin whose CHECK is known to be wrong in the
version installed is ``skipped`` with the reason (a Debian 12 portmap, for one, fails CHECK
for any sandbox without IPv6); a network list with ``disableCheck`` is not checked at all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ("CHECK_OUTCOMES", "NETWORK_CHECK_KEY", "NetworkCheck", "PluginCheck", "parse_check")

NETWORK_CHECK_KEY: Final = "network_check"
"""The Status ``info`` key of the CHECK's outcome (verbose Status of a running sandbox)."""

CHECK_OUTCOMES: Final = ("ok", "failed", "skipped", "not run")
"""A plugin's outcome: passed; failed (``detail`` is its error); not checked for the
reason in ``detail``; not reached, a plugin before it having failed."""


@dataclass(frozen=True, slots=True)
class PluginCheck:
    """One plugin's CHECK."""

    plugin: str
    """The plugin's type (``bridge``, ``portmap``...)."""
    outcome: str
    """One of :data:`CHECK_OUTCOMES`."""
    detail: str = ""
    """The error of a failed plugin, or why it was skipped."""


@dataclass(frozen=True, slots=True)
class NetworkCheck:
    """What CHECK found: each plugin's outcome, in the network list's order."""

    plugins: tuple[PluginCheck, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether no plugin failed (skipped ones do not count against it)."""
        return all(p.outcome in ("ok", "skipped") for p in self.plugins)

    def to_json(self) -> dict[str, Any]:
        """The outcome as Status ``info[NETWORK_CHECK_KEY]`` carries it."""
        return {"plugins": [[p.plugin, p.outcome, p.detail] for p in self.plugins]}


def parse_check(text: str) -> NetworkCheck:
    """Read a sandboxer's ``info[NETWORK_CHECK_KEY]``: hostile input, checked whole
    (ValueError naming what is wrong)."""
    where = f"info[{NETWORK_CHECK_KEY!r}]"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where} is not JSON: {exc}") from None
    plugins = data.get("plugins") if isinstance(data, Mapping) else None
    if not isinstance(plugins, list):
        raise ValueError(f"{where} must be an object with a plugins list")
    found = []
    for index, item in enumerate(plugins):
        if (
            not isinstance(item, list)
            or len(item) != 3
            or not all(isinstance(part, str) for part in item)
            or item[1] not in CHECK_OUTCOMES
        ):
            raise ValueError(f"{where}.plugins[{index}] must be [plugin, outcome, detail]")
        found.append(PluginCheck(item[0], item[1], item[2]))
    return NetworkCheck(tuple(found))
