"""The ``cli`` fixture: ``sandboxctl`` pointed at the test's backend."""

from __future__ import annotations

import pytest

from tests.support.backends import Backend
from tests.support.cli import Cli


@pytest.fixture
def cli(backend: Backend) -> Cli:
    """``sandboxctl`` with the global options of ``backend``."""
    return Cli(backend)
