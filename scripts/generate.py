"""Regenerate the betterproto2 stubs from protos/ into the given folder.

Run through ``make generate``; the test suite calls it into a temporary folder
to check that the committed code is up to date.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OPTIONS = ("client_generation=async", "server_generation=async")
# Every module starts with this import; ruff drops it as unused, except where the module
# defines a class of the same name (containerd.types.Descriptor), where it survives,
# shadowed, and makes importing the package need the protobuf runtime.
_DESCRIPTOR_IMPORT = re.compile(r"^from google\.protobuf\.descriptor import (?P<names>.+)\n", re.M)


def _drop_shadowed_descriptor_import(code: str) -> str:
    """Remove the names of the template's protobuf import that the module defines itself."""
    match = _DESCRIPTOR_IMPORT.search(code)
    if match is None:
        return code
    names = [n.strip() for n in match.group("names").split(",")]
    kept = [n for n in names if not re.search(rf"^class {re.escape(n)}\(", code, re.M)]
    line = f"from google.protobuf.descriptor import {', '.join(kept)}\n" if kept else ""
    return code[: match.start()] + line + code[match.end() :]


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
        for module in Path(tmp).rglob("*.py"):
            code = module.read_text()
            fixed = _drop_shadowed_descriptor_import(code)
            if fixed != code:
                module.write_text(fixed)
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(tmp, out)


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "sandboxclient" / "_proto")
