"""Images through the Transfer service, against ``ctr`` (Transfer-based too), side by side:

- pull of a ~100 MiB image of 4 layers from a local registry (Debian's docker-registry on
  127.0.0.1, plain HTTP), unpacked, the image and its content removed between rounds:
  ``client.pull`` against ``ctr images pull``;
- import of a 256 MiB archive (4 layers, not unpacked): ``client.import_image`` of the path
  against ``ctr images import --no-unpack``, and the client's peak allocation (tracemalloc,
  in a round of its own) during one import.

Rounds alternate, each round's first contender rotating; each figure is the median of the
per-round ratios.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import tarfile
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from sandboxclient import Client
from sandboxclient._imageops._platforms import host_platform

from ._env import RealDaemon
from ._report import Figure

__all__ = ("ImagesResult", "image_figures", "images_section", "registry_binary")

MiB = 1024 * 1024
_REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ImagesResult:
    """What the images section measured."""

    pull_s: float
    ctr_pull_s: float
    pull_ratio: float
    """The median of the rounds' library-over-ctr pull times (below 1: the library is faster)."""
    import_mb_s: float
    ctr_import_mb_s: float
    import_ratio: float
    """The median of the rounds' ctr-over-library import times (a throughput ratio)."""
    import_peak_bytes: int
    pull_bytes: int
    import_bytes: int


def registry_binary() -> Path | None:
    """The docker-registry to run: ``$SANDBOXCLIENT_REGISTRY_BIN``, the cache, PATH."""
    given = os.environ.get("SANDBOXCLIENT_REGISTRY_BIN")
    cached = _REPO / ".cache" / "registry" / "root" / "usr" / "bin" / "docker-registry"
    found = Path(given) if given else cached if cached.is_file() else None
    if found is None and (on_path := shutil.which("docker-registry")):
        found = Path(on_path)
    return found


@contextmanager
def _registry(binary: Path, directory: Path) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        host = f"127.0.0.1:{s.getsockname()[1]}"
    config = directory / "config.yml"
    config.write_text(
        f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {directory / 'data'}\nhttp:\n  addr: {host}\n  secret: bench\n"
    )
    proc = subprocess.Popen(
        [str(binary), "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 20
        while True:  # listening has no signal of its own: try to connect
            try:
                socket.create_connection(("127.0.0.1", int(host.rsplit(":", 1)[1])), 0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("docker-registry did not start") from None
                time.sleep(0.02)
        yield host
    finally:
        proc.terminate()
        proc.wait(10)


def _entry(media_type: str, digest: str, size: int) -> dict[str, object]:
    return {"mediaType": media_type, "digest": digest, "size": size}


def build_archive(path: Path, name: str, layers: int, layer_bytes: int) -> int:
    """Write an OCI archive of image ``name``: ``layers`` uncompressed layers of random
    bytes (one file each), built through a temporary directory, never whole in memory."""
    work = Path(tempfile.mkdtemp(prefix="bench-layers-", dir=path.parent))
    try:
        blobs: list[tuple[str, Path]] = []
        diff_ids = []
        for i in range(layers):
            layer = work / f"layer{i}.tar"
            data = work / f"data{i}"
            with data.open("wb") as f:
                for _ in range(layer_bytes // MiB):
                    f.write(os.urandom(MiB))
            with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
                tar.add(data, arcname=f"bench/data{i}")
            data.unlink()
            digest = hashlib.file_digest(layer.open("rb"), "sha256").hexdigest()
            blobs.append((digest, layer))
            diff_ids.append(f"sha256:{digest}")
        platform = host_platform()
        config = json.dumps(
            {
                "architecture": platform.architecture,
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
                "config": {"Cmd": ["/bin/sh"]},
            }
        ).encode()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": _entry(
                    "application/vnd.oci.image.config.v1+json",
                    "sha256:" + hashlib.sha256(config).hexdigest(),
                    len(config),
                ),
                "layers": [
                    _entry(
                        "application/vnd.oci.image.layer.v1.tar", f"sha256:{d}", p.stat().st_size
                    )
                    for d, p in blobs
                ],
            }
        ).encode()
        index = json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        **_entry(
                            "application/vnd.oci.image.manifest.v1+json",
                            "sha256:" + hashlib.sha256(manifest).hexdigest(),
                            len(manifest),
                        ),
                        "annotations": {"org.opencontainers.image.ref.name": name},
                    }
                ],
            }
        ).encode()
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
            small = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)]
            small += [
                (f"blobs/sha256/{hashlib.sha256(b).hexdigest()}", b) for b in (config, manifest)
            ]
            for arcname, blob in small:
                info = tarfile.TarInfo(arcname)
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
            for digest, layer in blobs:
                tar.add(layer, arcname=f"blobs/sha256/{digest}")
        return path.stat().st_size
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def _ctr(ctr: str, address: str, namespace: str, *args: str) -> float:
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        ctr, "--address", address, "--namespace", namespace, *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"ctr {' '.join(args)}: {err.decode()[-500:]}")
    return took


async def _timed(work: object) -> float:
    start = time.perf_counter()
    await work  # type: ignore[misc]
    return time.perf_counter() - start


async def image_figures(
    address: str, namespace: str, ctr: str, *, rounds: int, registry: Path, work_dir: Path
) -> ImagesResult:
    """Measure pull and import, each against ctr, in alternating rounds."""
    pull_archive, import_archive = work_dir / "pull.tar", work_dir / "import.tar"
    local = "bench.example/images/pull:1"
    pull_bytes = await asyncio.to_thread(build_archive, pull_archive, local, 4, 25 * MiB)
    import_bytes = await asyncio.to_thread(
        build_archive, import_archive, "bench.example/images/import:1", 4, 64 * MiB
    )
    async with Client(address, namespace=namespace, timeout=600) as client:
        with _registry(registry, work_dir) as host:
            ref = f"{host}/bench/pull:1"
            await client.import_image(pull_archive, unpack=False)
            await client.push(ref, source=local, plain_http=True)
            await client.delete_image(local, sync=True)
            ours: list[float] = []
            theirs: list[float] = []
            for i in range(rounds):
                order = ("lib", "ctr") if i % 2 == 0 else ("ctr", "lib")
                for who in order:
                    if who == "lib":
                        ours.append(await _timed(client.pull(ref, plain_http=True)))
                    else:
                        theirs.append(
                            await _ctr(
                                ctr, address, namespace, "images", "pull", "--plain-http", ref
                            )
                        )
                    await client.delete_image(ref, sync=True)
            pull_ratios = [a / b for a, b in zip(ours, theirs, strict=True)]

        imported: list[float] = []
        ctr_imported: list[float] = []
        for i in range(rounds):
            order = ("lib", "ctr") if i % 2 == 0 else ("ctr", "lib")
            for who in order:
                if who == "lib":
                    imported.append(await _timed(client.import_image(import_archive, unpack=False)))
                else:
                    ctr_imported.append(
                        await _ctr(
                            ctr,
                            address,
                            namespace,
                            "images",
                            "import",
                            "--no-unpack",
                            str(import_archive),
                        )
                    )
                await client.delete_image("bench.example/images/import:1", sync=True)
        import_ratios = [c / lib for lib, c in zip(imported, ctr_imported, strict=True)]
        tracemalloc.start()
        try:
            await client.import_image(import_archive, unpack=False)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        await client.delete_image("bench.example/images/import:1", sync=True)
    mb = import_bytes / 1e6
    return ImagesResult(
        pull_s=statistics.median(ours),
        ctr_pull_s=statistics.median(theirs),
        pull_ratio=statistics.median(pull_ratios),
        import_mb_s=mb / statistics.median(imported),
        ctr_import_mb_s=mb / statistics.median(ctr_imported),
        import_ratio=statistics.median(import_ratios),
        import_peak_bytes=peak,
        pull_bytes=pull_bytes,
        import_bytes=import_bytes,
    )


class _Rounds(Protocol):
    rounds: int


async def images_section(
    env: RealDaemon, loop: str, s: _Rounds, results: dict[str, Any], figures: list[Figure]
) -> None:
    """Figures 15 and 16: pull and import against ctr."""
    registry = registry_binary()
    if registry is None:
        reason = "no docker-registry: run scripts/fetch-registry.sh"
        figures.append(Figure("15. pull 100 MiB vs ctr", loop, 0.0, "-", "<= 1.05x", None, reason))
        return
    work = Path(tempfile.mkdtemp(prefix="bench-images-"))
    try:
        got = await image_figures(
            env.address,
            f"bench-images-{loop}",
            str(env.daemon.bin_dir / "ctr"),
            rounds=s.rounds,
            registry=registry,
            work_dir=work,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["images"] = asdict(got)
    peak = got.import_peak_bytes
    figures += [
        Figure("15. pull 100 MiB (4 layers) vs ctr images pull", loop, got.pull_ratio,
               f"{got.pull_ratio:.2f}x", "<= 1.05x", got.pull_ratio <= 1.05,
               f"{got.pull_s:.2f} vs {got.ctr_pull_s:.2f} s, unpacked, content removed "
               f"between rounds; {got.pull_bytes / MiB:.0f} MiB"),
        Figure("16. import 256 MiB archive vs ctr images import", loop, got.import_ratio,
               f"{got.import_ratio:.2f}x", ">= 0.8x, < 8 MiB",
               got.import_ratio >= 0.8 and peak < 8 * MiB,
               f"{got.import_mb_s:.0f} vs {got.ctr_import_mb_s:.0f} MB/s, no unpack; the "
               f"client peaked at {peak / 1024:.0f} KiB"),
    ]  # fmt: skip
