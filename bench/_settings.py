"""How long and how much each figure runs, and the namespace the bench works in."""

from __future__ import annotations

NAMESPACE = "bench"


class Settings:
    """How long and how much: the full run, or a quick look."""

    def __init__(self, quick: bool) -> None:
        self.rounds = 3 if quick else 5
        self.duration = 0.3 if quick else 1.0
        self.overhead_rounds = 3 if quick else 7
        self.overhead_duration = 0.3 if quick else 1.0
        self.levels = [1, 64] if quick else [1, 4, 16, 64, 128]
        self.fan_channels = 2_000 if quick else 10_000
        self.fan_sandboxes = 20 if quick else 40
        self.life_count = 12 if quick else 40
        self.life_concurrency = 4
        self.import_rounds = 3 if quick else 9
        self.exec_bytes = (64 if quick else 256) * 1024 * 1024
        self.exec_rounds = 3 if quick else 5
        self.exec_runs = 10 if quick else 30
        self.defaults_rounds = 6 if quick else 20
        self.pool_rounds = 6 if quick else 20
        self.gvisor_rounds = 3 if quick else 8
        self.network_rounds = 6 if quick else 20
        self.image_rounds = 6 if quick else 20
