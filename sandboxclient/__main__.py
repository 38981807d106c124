"""``python -m sandboxclient`` and the ``sandboxctl`` script: a command line for sandboxes."""

from __future__ import annotations

import sys

from ._cli import run

__all__ = ("main",)


def main() -> None:
    """Run ``sandboxctl`` on ``sys.argv`` and exit with its status."""
    sys.exit(run())


if __name__ == "__main__":
    main()
