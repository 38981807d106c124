"""A real OCI registry on 127.0.0.1 for the image tests: Debian's ``docker-registry``
(distribution 2.8), unpacked by ``scripts/fetch-registry.sh``, with htpasswd basic auth when
asked. Found through ``$SANDBOXCLIENT_REGISTRY_BIN``, the repository's cache, then PATH."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

from sandboxclient.testing import ContainerdUnavailable
from sandboxclient.testing._locate import containerd_required
from tests.support.tls import ServerCertificate

__all__ = ("LocalRegistry", "registry_binary", "registry_problem")

_REPO = Path(__file__).resolve().parents[2]
_CACHED = _REPO / ".cache" / "registry" / "root" / "usr" / "bin" / "docker-registry"


def registry_binary() -> Path | None:
    """The docker-registry binary to run, or None."""
    given = os.environ.get("SANDBOXCLIENT_REGISTRY_BIN")
    if given:
        return Path(given)
    if _CACHED.is_file():
        return _CACHED
    found = shutil.which("docker-registry")
    return Path(found) if found else None


def registry_problem() -> str | None:
    """Why no registry can run here (raised instead under the CI's requirement), or None."""
    reason = None
    if registry_binary() is None:
        reason = "no docker-registry: run scripts/fetch-registry.sh (make containerd does)"
    if reason is not None and containerd_required():
        raise ContainerdUnavailable(f"{reason} (the CI requires the real-daemon tests)")
    return reason


def _bcrypt(password: str) -> str:
    """A bcrypt hash as htpasswd writes it (the registry takes no other)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

    # Cost 4 (16 rounds): the registry checks the hash on every request.
    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalRegistry:
    """A registry process on a free loopback port, storing in a private directory; with
    ``tls``, served over HTTPS with that certificate."""

    def __init__(
        self,
        *,
        user: str | None = None,
        password: str | None = None,
        tls: ServerCertificate | None = None,
    ) -> None:
        binary = registry_binary()
        assert binary is not None
        self.dir = Path(tempfile.mkdtemp(prefix="registry-"))
        self.port = _free_port()
        self.host = f"127.0.0.1:{self.port}"
        auth = ""
        if user is not None and password is not None:
            (self.dir / "htpasswd").write_text(f"{user}:{_bcrypt(password)}\n")
            auth = f"auth:\n  htpasswd:\n    realm: tests\n    path: {self.dir / 'htpasswd'}\n"
        served = ""
        if tls is not None:
            served = f"  tls:\n    certificate: {tls.certificate}\n    key: {tls.key}\n"
        config = self.dir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: info\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.dir / 'data'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n  secret: tests\n{served}"
            f"{auth}"
        )
        self.log = self.dir / "registry.log"
        with self.log.open("wb") as log:
            self._proc = subprocess.Popen(
                [str(binary), "serve", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._wait_listening()

    def _wait_listening(self, timeout: float = 20.0) -> None:
        # A process starting to listen has no signal of its own: try to connect.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        self.close()
        raise RuntimeError("docker-registry did not listen within 20 s")

    def close(self) -> None:
        """Stop the process and remove its storage."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
