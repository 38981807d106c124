"""A private certificate authority and a server certificate for 127.0.0.1, made with the
host's ``openssl`` for the TLS registry tests (EC P-256 keys: quick to make)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sandboxclient.testing import ContainerdUnavailable
from sandboxclient.testing._locate import containerd_required

__all__ = ("ServerCertificate", "make_certificates", "openssl_problem")


def openssl_problem() -> str | None:
    """Why no certificate can be made here (raised instead under the CI's requirement)."""
    if shutil.which("openssl") is not None:
        return None
    reason = "no openssl: run scripts/install-openssl.sh (make containerd does)"
    if containerd_required():
        raise ContainerdUnavailable(f"{reason} (the CI requires the real-daemon tests)")
    return reason


@dataclass(frozen=True)
class ServerCertificate:
    """The files of a CA and of a server certificate it signed."""

    ca: Path
    certificate: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(directory: Path) -> ServerCertificate:
    """A CA (``ca.crt``) and a certificate it signed for IP 127.0.0.1 (``server.crt``,
    ``server.key``), in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=sandboxclient test CA", cwd=directory)  # fmt: skip
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=directory)  # fmt: skip
    (directory / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
    )
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "2",
             "-extfile", "server.ext", cwd=directory)  # fmt: skip
    return ServerCertificate(
        directory / "ca.crt", directory / "server.crt", directory / "server.key"
    )
