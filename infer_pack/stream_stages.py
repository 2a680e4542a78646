"""Per-stage timing of one stream block: wall time and process CPU time (all threads) per stage.

CPU time is the figure to compare on a shared machine: other people's load stretches wall time but
not the CPU seconds this process spends. Torch's worker threads count in process CPU time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

# Stage names in the order a block goes through them (both engines use these names).
STAGES: tuple[str, ...] = (
    "gate", "resample_in", "content", "index", "f0", "prior", "decoder", "resample_out", "envelope", "sola",
)


@dataclass
class BlockTimes:
    """Seconds spent on the latest block: per stage (wall and CPU) and in total."""

    wall: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    total: float = 0.0  # wall seconds of the whole block
    total_cpu: float = 0.0

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - wall
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu

    @property
    def features(self) -> float:
        """Content encoder + index blend (wall)."""
        return self.wall.get("content", 0.0) + self.wall.get("index", 0.0)

    @property
    def f0(self) -> float:
        return self.wall.get("f0", 0.0)

    @property
    def synthesis(self) -> float:
        """Everything after the features and the pitch (wall)."""
        return sum(self.wall.get(name, 0.0) for name in ("prior", "decoder", "resample_out", "envelope"))


@contextmanager
def timed_block(times: BlockTimes) -> Iterator[BlockTimes]:
    """Fills `times.total` / `times.total_cpu` around a block."""
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield times
    finally:
        times.total = time.perf_counter() - wall
        times.total_cpu = time.process_time() - cpu
