"""Run a private, real containerd (>= 2.0) for tests and benchmarks.

Each :class:`ContainerdDaemon` gets its own root, state and sockets in a short temporary
directory, so several can run side by side and none touches the system's containerd.
Binaries come from ``$CONTAINERD_BIN``, else ``PATH`` (see :mod:`._locate`);
:func:`require_or_skip_reason` says what is missing, for tests to skip on.

Synchronous and standard-library only, so pytest fixtures, benchmarks and scripts can all
use it without an event loop.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Final

from ._hostpaths import (
    TASK_BUNDLES,
    listening_sockets,
    release_host_paths,
    remove_runc_state,
    remove_sockets,
    runc_namespaces,
)
from ._images import build_pause_archive, busybox_problem
from ._locate import (
    REQUIRE_ENV,
    ContainerdUnavailable,
    checked_version,
    containerd_required,
    find_containerd_bin_dir,
    find_tool,
    locate_containerd,
)
from ._procs import descendants, kill_and_reap, proc_pids, running, umount_under

__all__ = ("ContainerdDaemon", "require_or_skip_reason")

_BOOTED: Final = "containerd successfully booted"
_SOCKET_MAX: Final = 107  # sun_path is 108 bytes including the terminating NUL
# Levels at which containerd logs the shims it connects to (info): stop() reads those lines.
_LOG_LEVELS: Final = ("trace", "debug", "info")


def require_or_skip_reason(*, pause_image: bool = False) -> str | None:
    """Say why the real-daemon tests cannot run here, or return ``None`` when they can.

    Pytest fixtures call ``pytest.skip(reason)`` on a non-``None`` answer. When
    ``SANDBOXCLIENT_REQUIRE_CONTAINERD=1`` the reason is raised instead, so the run fails.

    Args:
        pause_image: also check what :meth:`ContainerdDaemon.ensure_pause_image` needs.

    Raises:
        ContainerdUnavailable: something is missing and containerd is required.
    """
    reason: str | None = None
    if os.uname().sysname != "Linux":
        reason = "a private containerd needs Linux"
    elif os.geteuid() != 0:
        reason = "a private containerd needs root: run as root"
    else:
        try:
            bin_dir = find_containerd_bin_dir()
        except ContainerdUnavailable as exc:
            reason = str(exc)
        else:
            for name in ("containerd-shim-runc-v2", "ctr", "runc"):
                if find_tool(bin_dir, name) is None:
                    reason = (
                        f"{name} not found in {bin_dir} or on PATH: install it (containerd "
                        "packages ship containerd-shim-runc-v2 and ctr, runc is a package of "
                        "its own) or put it in the directory CONTAINERD_BIN names"
                    )
                    break
            if reason is None and pause_image:
                reason = busybox_problem()
    if reason is not None and containerd_required():
        raise ContainerdUnavailable(f"{reason} (required because {REQUIRE_ENV}=1)")
    return reason


def _toml_str(value: str) -> str:
    # A JSON string is a valid TOML basic string.
    return json.dumps(value)


class ContainerdDaemon:
    """A private containerd process with its own root, state, sockets and config.

    Use as a context manager (``with ContainerdDaemon() as d: d.start() ...``); leaving it
    calls :meth:`cleanup`. Needs root.

    Attributes:
        address: gRPC unix socket path.
        root: containerd's persistent root directory.
        state: containerd's state directory.
        log_path: file that receives the daemon's stdout and stderr.
        config_path: the generated config (version 3).
        pid: daemon process id while it runs, else ``None``.
        left_behind: what the last :meth:`stop` found of this daemon's shims on the
            machine's shared paths and could not remove (shim sockets in
            ``/run/containerd/s``; in ``/run/containerd/runc``, its containers' runc and
            runsc state, its tasks' runsc locks, and the namespace folders it made);
            empty when nothing leaked.
        version: the containerd binary's version (``str()`` gives ``"2.1.9"``).
        bin_dir: directory put first on the daemon's ``PATH``.
    """

    def __init__(
        self,
        *,
        bin_dir: Path | None = None,
        base_dir: Path | None = None,
        proxy_plugins: Mapping[str, str] = {},
        log_level: str = "info",
    ) -> None:
        """Prepare (not start) a daemon.

        Args:
            bin_dir: directory with containerd, its shim and ctr; default
                :func:`find_containerd_bin_dir`.
            base_dir: where root, state, sockets, config and log go; default a new
                ``/tmp/ctrd-*`` directory, removed by :meth:`cleanup`.
            proxy_plugins: sandbox controller name -> unix socket of a gRPC server
                implementing ``containerd.services.sandbox.v1.Controller``.
            log_level: containerd log level: ``info``, ``debug`` (every request too) or
                ``trace``. Not quieter: :meth:`stop` finds the shims whose sockets and state
                to remove from the machine's shared paths in the info-level lines.

        Raises:
            ContainerdUnavailable: no usable containerd (or one older than 2.0).
            ValueError: the socket path would be too long for a unix socket, or
                ``log_level`` is not one of those above.
        """
        if log_level.lower() not in _LOG_LEVELS:  # containerd's own parsing ignores case
            msg = f"log_level {log_level!r} is not one of {', '.join(_LOG_LEVELS)}: stop()"
            raise ValueError(f"{msg} finds the shims to clean up after in info-level lines")
        if bin_dir is None:
            bin_dir, self.version = locate_containerd()
        else:
            self.version = checked_version(bin_dir, str(bin_dir))
        self.bin_dir = bin_dir.resolve()
        self._owns_base = base_dir is None
        # A short /tmp path keeps the sockets (and containerd's ".ttrpc" siblings) < 108 bytes.
        base = Path(tempfile.mkdtemp(prefix="ctrd-", dir="/tmp")) if base_dir is None else base_dir
        self.base_dir = base.resolve()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if self._owns_base:
            # Traversable, not listable, as /run/containerd is: a container in a user
            # namespace must reach its bundle's rootfs below the state directory.
            self.base_dir.chmod(0o711)
        self.root = self.base_dir / "root"
        self.state = self.base_dir / "state"
        self.log_path = self.base_dir / "containerd.log"
        self.config_path = self.base_dir / "config.toml"
        self.address = str(self.base_dir / "c.sock")
        self._ttrpc_address = self.address + ".ttrpc"
        if len(os.fsencode(self._ttrpc_address)) > _SOCKET_MAX:
            if self._owns_base:
                shutil.rmtree(self.base_dir, ignore_errors=True)
            raise ValueError(f"socket path too long for a unix socket: {self._ttrpc_address}")
        self.proxy_plugins = dict(proxy_plugins)
        self.log_level = log_level
        self.pid: int | None = None
        self.left_behind: list[Path] = []
        # runc's namespace folders there at the first start, not ours to remove (stop() before
        # any start: all of them).
        self._runc_before: frozenset[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._cleaned = False
        self._at_exit = False

    # -- lifecycle ---------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(self.bin_dir), env.get("PATH", os.defpath)])
        # A client-side address must not leak into the daemon or its shims.
        env.pop("CONTAINERD_ADDRESS", None)
        env.pop("CONTAINERD_NAMESPACE", None)
        return env

    def _config(self) -> str:
        b = self.base_dir
        lines = [
            "version = 3",
            f"root = {_toml_str(str(self.root))}",
            f"state = {_toml_str(str(self.state))}",
            f"temp = {_toml_str(str(b / 'tmp'))}",
            "",
            "[grpc]",
            f"  address = {_toml_str(self.address)}",
            "",
            "[ttrpc]",
            f"  address = {_toml_str(self._ttrpc_address)}",
            "",
            "[debug]",
            f"  level = {_toml_str(self.log_level)}",
            "",
            "[plugins]",
            # Root here lacks CAP_SYS_RESOURCE: without this runc cannot start a pod sandbox.
            "  [plugins.'io.containerd.cri.v1.runtime']",
            "    restrict_oom_score_adj = true",
            # The defaults below are machine-wide paths shared with any other containerd.
            "  [plugins.'io.containerd.internal.v1.opt']",
            f"    path = {_toml_str(str(b / 'opt'))}",
            "  [plugins.'io.containerd.image-verifier.v1.bindir']",
            f"    bin_dir = {_toml_str(str(b / 'image-verifier'))}",
            "  [plugins.'io.containerd.nri.v1.nri']",
            "    disable = true",
            f"    socket_path = {_toml_str(str(b / 'nri.sock'))}",
        ]
        for name, address in self.proxy_plugins.items():
            lines += [
                "",
                f"[proxy_plugins.{_toml_str(name)}]",
                '  type = "sandbox"',
                f"  address = {_toml_str(address)}",
            ]
        return "\n".join(lines) + "\n"

    def _log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def start(self, timeout: float = 20.0) -> None:
        """Write the config, start containerd and wait until it serves.

        Ready means the socket exists and the log says ``containerd successfully booted``.

        Raises:
            RuntimeError: already running, exited early or not ready in time (with the log
                tail); the process is killed in the latter cases.
        """
        if self.alive():
            raise RuntimeError(f"containerd {self.address} is already running")
        if self._cleaned:
            raise RuntimeError("cleanup() removed this daemon's directories")
        self.config_path.write_text(self._config())
        if self._runc_before is None:
            self._runc_before = runc_namespaces()
        if not self._at_exit:
            # A run that dies before its fixtures finalise must not leave a daemon behind.
            atexit.register(self.cleanup)
            self._at_exit = True
        for sock in (self.address, self._ttrpc_address):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(sock)
        with self.log_path.open("ab") as log:
            offset = log.tell()
            self._proc = subprocess.Popen(
                [str(self.bin_dir / "containerd"), "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env(),
                cwd=self.base_dir,
                # Own session: a terminal's Ctrl-C reaches the test runner, which stops us.
                start_new_session=True,
            )
        self.pid = self._proc.pid
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc, self.pid = None, None
                raise RuntimeError(
                    f"containerd exited with {code} while starting; log tail:\n{self._log_tail()}"
                )
            if os.path.exists(self.address) and self._booted_since(offset):
                return
            if time.monotonic() > deadline:
                self._stop_process(signal.SIGKILL)
                raise RuntimeError(
                    f"containerd not ready after {timeout:.1f}s; log tail:\n{self._log_tail()}"
                )
            time.sleep(0.01)

    def _booted_since(self, offset: int) -> bool:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return _BOOTED.encode() in log.read()

    def _stop_process(self, sig: signal.Signals, grace: float = 10.0) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._proc, self.pid = None, None

    def stop(self) -> None:
        """Stop containerd and everything it started; idempotent.

        SIGTERM (SIGKILL after 10 s); then SIGKILL for this daemon's shims and the container
        processes under them; removal of the shim sockets, runc state and cgroups they leave
        behind; unmounting of what is still mounted below the base directory (sandbox shm,
        task rootfs); and removal, from the machine's shared paths, of every shim socket its
        log names, of runsc's stale locks of the tasks it ran, and of the runc state folders
        of its namespaces once empty, save those that were there when it first started and
        the well-known shared ones (``default``, ``k8s.io``, ``moby``; see
        :mod:`._hostpaths`). What of its own stays there is in :attr:`left_behind`. Root and
        state stay for :meth:`restart`.
        """
        self._stop_process(signal.SIGTERM)
        self.kill_shims()
        umount_under(self.base_dir)
        self.left_behind = release_host_paths(
            self.state, self.log_path, self.address, self._runc_before
        )

    def kill_shims(self, pids: Iterable[int] | None = None) -> None:
        """SIGKILL this daemon's shims (or those of ``pids``), what runs under them, and their
        leftovers; containerd 2.1's ``shim`` controller leaves one behind when Create fails."""
        shims = self.shim_pids() if pids is None else list(pids)
        # Read first: a killed shim's sockets stay, and its bundle may be gone already.
        sockets = listening_sockets(shims)
        # Children first: once a shim dies its children are reparented and lost to us.
        kill_and_reap(descendants(shims))
        kill_and_reap(shims)
        remove_sockets(sockets)
        self._remove_task_leftovers()

    def _remove_task_leftovers(self) -> None:
        """Remove what killed shims could not: their sockets, runc state and cgroups."""
        bundles = self.state / TASK_BUNDLES
        for bootstrap in bundles.glob("*/*/bootstrap.json"):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                address = str(json.loads(bootstrap.read_text())["address"])
                remove_sockets([Path(address.removeprefix("unix://"))])
        cgroups = remove_runc_state(bundles)
        # Empty cgroups only: rmdir fails on any that still has processes or children.
        for d in sorted(cgroups, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()

    def kill(self) -> None:
        """SIGKILL the daemon only; shims, root and state stay, as after a crash."""
        self._stop_process(signal.SIGKILL)

    def restart(self, timeout: float = 20.0) -> None:
        """Start again on the same directories and config (SIGTERM first if still running).

        Running shims are left alone, so containerd reconnects to their sandboxes.
        """
        self._stop_process(signal.SIGTERM)
        self.start(timeout)

    def alive(self) -> bool:
        """Whether the daemon process is running."""
        return self._proc is not None and self._proc.poll() is None

    def shim_pids(self) -> list[int]:
        """Shim processes of this daemon, running or orphaned by a killed daemon.

        A shim is recognised by its command line naming this daemon's socket
        (``-address <socket>``) or by its working directory, the task bundle, lying in this
        daemon's state directory.
        """
        state = str(self.state) + "/"
        address = os.fsencode(self.address)
        found = []
        for pid in proc_pids():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if not os.path.basename(argv[0]).startswith(b"containerd-shim"):
                    continue
                ours = any(a == b"-address" and v == address for a, v in itertools.pairwise(argv))
                if not ours:
                    ours = (os.readlink(f"/proc/{pid}/cwd") + "/").startswith(state)
            except OSError:
                continue
            if ours and running(pid):
                found.append(pid)
        return found

    def cleanup(self) -> None:
        """Stop everything, then remove the base directory if this object created it."""
        self.stop()
        if self._at_exit:
            atexit.unregister(self.cleanup)
            self._at_exit = False
        if self._owns_base and not self._cleaned:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self._cleaned = True

    def __enter__(self) -> ContainerdDaemon:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"<ContainerdDaemon {self.version} {self.address} pid={self.pid}>"

    # -- helpers -----------------------------------------------------------------------------

    def ctr(
        self, *args: str, namespace: str = "default", check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``ctr`` against this daemon in ``namespace`` and capture its output.

        Raises:
            subprocess.CalledProcessError: non-zero exit and ``check`` (stderr in a note).
        """
        cmd = [str(self.bin_dir / "ctr"), "--address", self.address, "--namespace", namespace]
        cmd += args
        result = subprocess.run(
            cmd, capture_output=True, text=True, env=self._env(), timeout=120, check=False
        )
        if check and result.returncode != 0:
            exc = subprocess.CalledProcessError(
                result.returncode, cmd, result.stdout, result.stderr
            )
            exc.add_note(result.stderr.strip())
            raise exc
        return result

    def sandbox_image(self) -> str:
        """The CRI sandbox (pause) image this daemon's podsandbox controller asks for: its
        config's ``pinned_images.sandbox``, as ``containerd config dump`` shows it
        (``registry.k8s.io/pause:3.10`` for 2.0 and 2.1, ``3.10.1`` for 2.2, ``3.10.2``
        for 2.3 unless configured).

        Raises:
            RuntimeError: the config cannot be read, or names no sandbox image.
        """
        cmd = [
            str(self.bin_dir / "containerd"),
            "--config",
            str(self.config_path),
            "config",
            "dump",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, env=self._env(), timeout=60)
        try:
            config = tomllib.loads(result.stdout) if result.returncode == 0 else {}
        except tomllib.TOMLDecodeError as exc:
            raise RuntimeError(f"containerd config dump printed no TOML: {exc}") from exc
        images = config.get("plugins", {}).get("io.containerd.cri.v1.images", {})
        image = images.get("pinned_images", {}).get("sandbox")
        if not isinstance(image, str) or not image:
            detail = result.stderr.strip() or "no pinned_images.sandbox"
            raise RuntimeError(f"cannot read the daemon's CRI sandbox image: {detail}")
        return image

    def ensure_pause_image(self, namespace: str = "k8s.io", ref: str | None = None) -> str:
        """Import an offline stand-in for the CRI pause image unless ``ref`` is present;
        returns ``ref``.

        See :func:`build_pause_archive`. By default ``ref`` is what the daemon asks for
        (:meth:`sandbox_image`).
        """
        if ref is None:
            ref = self.sandbox_image()
        if ref in self.ctr("images", "ls", "-q", namespace=namespace).stdout.split():
            return ref
        archive = self.base_dir / "pause-image.tar"
        archive.write_bytes(build_pause_archive(ref))
        try:
            self.ctr("images", "import", str(archive), namespace=namespace)
        finally:
            archive.unlink(missing_ok=True)
        if ref not in self.ctr("images", "ls", "-q", namespace=namespace).stdout.split():
            raise RuntimeError(f"ctr images import did not create {ref} in {namespace}")
        return ref
