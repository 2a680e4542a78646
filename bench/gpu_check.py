"""The GPU check (`make gpu-check`): CUDA tests, then the quick benchmarks on CUDA, one report.

    python -m bench.gpu_check [--out bench/results/gpu_check.json] [--tests-timeout 150] [--bench-timeout 300]

Steps, under 8 minutes together on one GPU:
  1. `pytest -m cuda tests/test_cuda.py` (reference numbers on CUDA in fp32/fp16, the conversion pipeline,
     RMVPE and HuBERT, one AMP epoch per precision, DDP on nccl with 2 GPUs); the measured differences
     are collected through $RVC_GPU_FIGURES;
  2. `python -m bench --device cuda --quick` (every benchmark area on the GPU).
The report holds the device, torch/CUDA versions, the test outcome and figures and every benchmark row;
its path is printed at the end. Exit status: 0 when the tests passed, 1 when they failed, 2 without CUDA.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "gpu_check.json"


def device_summary() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"cuda": False, "torch": torch.__version__}
    props = torch.cuda.get_device_properties(0)
    return {
        "cuda": True,
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "device_count": torch.cuda.device_count(),
        "device": props.name,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "bf16": torch.cuda.is_bf16_supported(),
    }


def _run(command: list[str], timeout_s: float, env: dict[str, str]) -> tuple[int, float, str]:
    """(exit status, seconds, last 4000 characters of output); 124 when it ran out of time."""
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
        status, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        status = 124
        output = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    seconds = time.perf_counter() - started
    print(output[-4000:])
    return status, seconds, output[-4000:]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--tests-timeout", type=float, default=150.0, help="seconds for the CUDA tests")
    parser.add_argument("--bench-timeout", type=float, default=300.0, help="seconds for the quick benchmarks")
    args = parser.parse_args(argv)

    device = device_summary()
    report: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "device": device}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not device["cuda"]:
        report["error"] = "torch sees no CUDA device; run this on a machine with an NVIDIA GPU and a CUDA build of torch"
        args.out.write_text(json.dumps(report, indent=2))
        print(report["error"], file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as scratch:
        figures_path = Path(scratch) / "figures.json"
        bench_json = Path(scratch) / "bench.json"
        env = dict(os.environ, RVC_GPU_FIGURES=str(figures_path))
        status, seconds, tail = _run(
            [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests/test_cuda.py",
             f"--timeout={int(args.tests_timeout)}"],
            args.tests_timeout + 30, env,
        )  # fmt: skip
        report["tests"] = {"status": status, "seconds": round(seconds, 1), "output_tail": tail.splitlines()[-15:]}
        report["figures"] = json.loads(figures_path.read_text()) if figures_path.is_file() else {}
        bench_status, bench_seconds, _ = _run(
            [sys.executable, "-m", "bench", "--quick", "--device", "cuda", "--json", str(bench_json)],
            args.bench_timeout, env,
        )  # fmt: skip
        report["bench"] = {
            "status": bench_status,
            "seconds": round(bench_seconds, 1),
            "rows": json.loads(bench_json.read_text()) if bench_json.is_file() else None,
        }
    args.out.write_text(json.dumps(report, indent=2))
    print(f"gpu check: tests exit {status}, benchmarks exit {bench_status}; report {args.out}")
    return 0 if status == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
