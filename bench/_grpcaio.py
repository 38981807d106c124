"""grpc.aio stubs made by protoc from the repository's own ``protos/``, at bench time.

Nothing generated here is committed: :func:`generate` writes the ``*_pb2.py`` and
``*_pb2_grpc.py`` modules into a temporary folder and puts it first on ``sys.path``.
"""

from __future__ import annotations

import atexit
import importlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

__all__ = ("GrpcModules", "generate")

PROTOS = Path(__file__).resolve().parent.parent / "protos"


class GrpcModules:
    """The generated modules the benchmark uses."""

    def __init__(self, sandbox_pb2: ModuleType, sandbox_pb2_grpc: ModuleType) -> None:
        self.sandbox_pb2 = sandbox_pb2
        self.sandbox_pb2_grpc = sandbox_pb2_grpc


_cache: list[GrpcModules] = []


def generate() -> GrpcModules:
    """Run protoc with the grpc plugin over ``protos/`` once per process and import the result."""
    if _cache:
        return _cache[0]
    out = Path(tempfile.mkdtemp(prefix="sbx-grpcaio-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)  # imported until the process ends
    protos = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            *protos,
        ],
        check=True,
        cwd=PROTOS,
    )
    sys.path.insert(0, str(out))
    importlib.invalidate_caches()
    modules = GrpcModules(
        importlib.import_module("containerd.services.sandbox.v1.sandbox_pb2"),
        importlib.import_module("containerd.services.sandbox.v1.sandbox_pb2_grpc"),
    )
    _cache.append(modules)
    return modules
