"""Shared benchmark vocabulary: one row per measurement, ours vs the baseline, in one run."""

from __future__ import annotations

import gc
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class BenchRow:
    area: str  # e.g. "f0", "hubert", "convert", "index", "train", "preprocess"
    name: str  # e.g. "pm 10 s"
    unit: str  # e.g. "s", "x realtime", "recall@8"
    ours: float
    baseline: float | None = None
    lower_is_better: bool = True
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """ours / baseline (below 1 is better when lower_is_better)."""
        if self.baseline is None or self.baseline == 0:
            return None
        return self.ours / self.baseline

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        return data


def interleaved(
    ours: Callable[[], Any], baseline: Callable[[], Any] | None, repeats: int = 3, warmup: bool = True
) -> tuple[float, float | None]:
    """Median wall time of `ours` and `baseline`, run A B A B ... in one window."""
    if warmup:
        ours()
        if baseline is not None:
            baseline()
    times_a: list[float] = []
    times_b: list[float] = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        ours()
        times_a.append(time.perf_counter() - start)
        if baseline is not None:
            gc.collect()
            start = time.perf_counter()
            baseline()
            times_b.append(time.perf_counter() - start)
    median_a = sorted(times_a)[len(times_a) // 2]
    median_b = sorted(times_b)[len(times_b) // 2] if times_b else None
    return median_a, median_b


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB).

    Linux: VmHWM of /proc/self/status, which starts afresh in a spawned process (ru_maxrss does not:
    the kernel carries the parent's peak across fork and exec, so every child would report at least
    the parent's peak). Elsewhere: ru_maxrss.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _fresh_process_child(target: Callable[..., Any], args: tuple[Any, ...], results: Any) -> None:
    results.put(target(*args))


def in_fresh_process(target: Callable[..., Any], *args: Any) -> Any:
    """`target(*args)` in a new (spawned) process; its return value. For peak memory of one variant.

    `target` must be a module-level function. A child that dies (e.g. out of memory) raises here
    instead of leaving the caller waiting.
    """
    import multiprocessing
    import queue as queue_module

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_fresh_process_child, args=(target, args, results))
    process.start()
    while True:
        try:
            result = results.get(timeout=5)
            break
        except queue_module.Empty:
            if not process.is_alive():
                raise RuntimeError(
                    f"{getattr(target, '__name__', target)} died in its own process with exit code {process.exitcode}"
                ) from None
    process.join()
    return result


def area_main(run: Callable[[bool, str], list[BenchRow]], description: str | None) -> None:
    """The command line of one benchmark area: `--quick`, `--device`; one JSON row a line."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    for row in run(args.quick, args.device):
        print(json.dumps(row.to_dict()))
