"""Regenerate the betterproto2 stubs from protos/ into the given folder.

Run through ``make generate``; the test suite calls it into a temporary folder
to check that the committed code is up to date.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OPTIONS = ("client_generation=async", "server_generation=async")


def generate(out: Path) -> None:
    """Write the generated package to ``out``, replacing what is there."""
    protos = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"--python_betterproto2_out={tmp}",
            *(f"--python_betterproto2_opt={opt}" for opt in OPTIONS),
            *protos,
        ]
        subprocess.run(cmd, check=True, cwd=PROTOS, stdout=subprocess.DEVNULL)
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(tmp, out)


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "sandboxclient" / "_proto")
