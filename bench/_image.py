"""What an image root costs a sandbox's whole life, measured side by side in alternating rounds.

``new_sandbox(image=...)`` + ``start`` + ``run("true")`` + ``shutdown`` of a sandbox rooted
on an imported image (the offline userland image of ``sandboxclient.testing._userland``:
the host's busybox with every applet, one layer) against the same on the sandboxer's own
busybox root. Both run the same process, which waits (the image's entrypoint is ``sleep``;
the busybox root's is the sandboxer's waiting shell), with every secure default. The
difference is the image's: resolving its manifest and config, the lease, preparing,
reading the mounts of and removing the snapshot, and the overlay of its layers in place of
the busybox root's. Each round runs one of each, the order alternating; each life is timed
alone.
"""

from __future__ import annotations

import io
import statistics
import time
from dataclasses import dataclass

from sandboxclient import Client
from sandboxclient.testing._userland import userland_archive

__all__ = ("ImageResult", "image_cost")

IMAGE = "bench.test/userland:1"
_CONFIG = {"Entrypoint": ["/bin/sleep", "2147483647"], "Env": ["PATH=/bin"], "User": "app"}


@dataclass(frozen=True)
class ImageResult:
    """Median seconds of a sandbox's life, on an image and on the busybox root."""

    rounds: int
    image: float
    busybox: float

    @property
    def ratio(self) -> float:
        """The image's life over the busybox root's, at the median."""
        return self.image / self.busybox


async def image_cost(address: str, *, namespace: str, sandboxer: str, rounds: int) -> ImageResult:
    """Time ``rounds`` lives of each kind (see the module's docstring)."""
    times: dict[str, list[float]] = {"image": [], "busybox": []}
    async with Client(address, namespace=namespace, sandboxer=sandboxer, timeout=60) as client:
        await client.import_image(io.BytesIO(userland_archive(IMAGE, _CONFIG)))

        async def life(kind: str, index: int) -> None:
            image = IMAGE if kind == "image" else None
            began = time.perf_counter()
            sb = await client.new_sandbox(f"root-{kind}-{index + 1}", image=image)
            try:
                await sb.start()
                done = await sb.run("true")
                assert done.returncode == 0, done
            finally:
                await sb.shutdown()
            times[kind].append(time.perf_counter() - began)

        try:
            for kind in ("image", "busybox"):  # warm: the first of each pays for caches
                await life(kind, -1)
            for samples in times.values():
                samples.clear()
            for index in range(rounds):
                pair = ("image", "busybox") if index % 2 == 0 else ("busybox", "image")
                for kind in pair:
                    await life(kind, index)
        finally:
            await client.delete_image(IMAGE)
    return ImageResult(
        rounds, statistics.median(times["image"]), statistics.median(times["busybox"])
    )
