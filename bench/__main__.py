"""`python -m bench [--quick] [--device cpu|cuda] [--only AREA ...] [--json PATH]`

Runs every `bench/bench_<area>.py` module (each exposes `run(quick: bool, device: str) -> list[BenchRow]`),
one after another in the same time window, each in a child process of this one so that a crash, a
hang or a memory blow-up in one area costs only that area. Prints one table (area, measurement,
ours, baseline, ratio, unit, notes) and writes the rows as JSON (default bench/results/latest.json).

`--quick` passes quick=True to every area and shares a 5-minute budget between them: an area may use
the time left minus RESERVE_S for each area still to run (and at least its even share), so a slow
area can take what the fast ones leave but cannot starve the ones after it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import BenchRow

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"
QUICK_BUDGET_S = 290.0  # total for --quick, a little under the promised 5 minutes
RESERVE_S = 30.0  # kept back for each area still waiting
FULL_AREA_TIMEOUT_S = 3600.0
PREFIX = "bench_"


@dataclass
class AreaResult:
    area: str
    status: str  # "ok" | "failed" | "timeout"
    seconds: float
    rows: list[BenchRow] = field(default_factory=list)
    error: str = ""
    details: str = ""  # the area's traceback or the last lines it printed


def discover(package: str = "bench") -> list[str]:
    """Area names (the part after `bench_`) of the package's bench_*.py modules, sorted."""
    module = importlib.import_module(package)
    paths = list(getattr(module, "__path__", []))
    return sorted(
        info.name[len(PREFIX) :] for info in pkgutil.iter_modules(paths) if info.name.startswith(PREFIX)
    )


def rows_from_json(items: list[dict[str, Any]]) -> list[BenchRow]:
    fields = set(BenchRow.__dataclass_fields__)
    return [BenchRow(**{k: v for k, v in item.items() if k in fields}) for item in items]


def run_in_process(package: str, area: str, quick: bool, device: str) -> list[BenchRow]:
    """Import `package.bench_<area>` and call its run(); checks what comes back."""
    module = importlib.import_module(f"{package}.{PREFIX}{area}")
    rows = module.run(quick=quick, device=device)
    if not isinstance(rows, list) or not all(isinstance(row, BenchRow) for row in rows):
        raise TypeError(f"{package}.{PREFIX}{area}.run() must return list[BenchRow], got {type(rows).__name__}")
    return rows


def _child_main(package: str, area: str, quick: bool, device: str, out_path: str) -> int:
    """Entry of the child process: run one area, write its rows (or its error) as JSON."""
    try:
        rows = run_in_process(package, area, quick, device)
        payload: dict[str, Any] = {"rows": [row.to_dict() for row in rows]}
        code = 0
    except BaseException as exc:  # noqa: BLE001 (an area's failure of any kind goes to the parent)
        payload = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        code = 1
    Path(out_path).write_text(json.dumps(payload, default=str), encoding="utf-8")
    return code


def area_limit(left_s: float, areas_left: int) -> float:
    """Seconds the next area may run when `left_s` remain for `areas_left` areas (this one included)."""
    even_share = left_s / areas_left
    return max(even_share, left_s - RESERVE_S * (areas_left - 1), 1.0)


def run_area(package: str, area: str, quick: bool, device: str, timeout_s: float) -> AreaResult:
    """Run one area in a child process with a wall-clock limit; never raises for the area's own faults."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        out_path = Path(tmp) / "rows.json"
        command = [
            sys.executable, "-m", "bench", "--child", area, "--package", package,
            "--device", device, "--child-out", str(out_path),
        ] + (["--quick"] if quick else [])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in [*sys.path, env.get("PYTHONPATH", "")] if p)
        # A session of its own, so a timeout also stops the area's worker processes.
        child = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        try:
            _, stderr = child.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(child)
            _, stderr = child.communicate()
            return AreaResult(
                area, "timeout", time.perf_counter() - start, error=f"stopped after {timeout_s:.0f} s{_tail(stderr)}"
            )
        except BaseException:  # Ctrl-C in the parent: do not leave the area running
            _kill_group(child)
            raise
        seconds = time.perf_counter() - start
        if out_path.is_file():
            payload = json.loads(out_path.read_text(encoding="utf-8"))
            if "error" in payload:
                return AreaResult(
                    area, "failed", seconds, error=payload["error"] + _tail(payload.get("traceback"), 3),
                    details=payload.get("traceback", ""),
                )
            return AreaResult(area, "ok", seconds, rows=rows_from_json(payload["rows"]))
        return AreaResult(
            area, "failed", seconds, error=f"the process ended with status {child.returncode}{_tail(stderr)}",
            details=_tail(stderr, 40),
        )


def _kill_group(child: subprocess.Popen[str]) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _tail(text: str | bytes | None, lines: int = 6) -> str:
    if not text:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    kept = text.strip().splitlines()[-lines:]
    return "\n    " + "\n    ".join(kept) if kept else ""


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0 or 0.01 <= abs(value) < 100_000:
        return f"{value:.3g}" if abs(value) < 10 else f"{value:,.1f}"
    return f"{value:.3e}"


def format_table(results: Sequence[AreaResult]) -> str:
    header = ("area", "measurement", "ours", "baseline", "ratio", "unit", "notes")
    lines: list[tuple[str, ...]] = []
    for result in results:
        for row in result.rows:
            ratio = row.ratio
            better = ""
            if ratio is not None:
                better = " (better)" if (ratio < 1) == row.lower_is_better and ratio != 1 else ""
            lines.append(
                (row.area, row.name, _fmt(row.ours), _fmt(row.baseline), _fmt(ratio) + better, row.unit, row.notes)
            )
        if result.status != "ok":
            first = result.error.strip().splitlines()[0] if result.error.strip() else result.status
            lines.append((result.area, f"[{result.status.upper()}]", "-", "-", "-", "-", first))
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
    widths[-1] = min(widths[-1], 70)

    def render(cells: tuple[str, ...]) -> str:
        return "  ".join(str(c)[:w].ljust(w) for c, w in zip(cells, widths)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([render(header), rule, *(render(cells) for cells in lines)])


def environment(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "device": device,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if device == "cuda" and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        info["torch"] = None
    return info


def write_json(path: Path, results: Sequence[AreaResult], args: argparse.Namespace, started: datetime) -> None:
    payload = {
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "device": args.device,
        "environment": environment(args.device),
        "areas": {
            r.area: {
                "status": r.status, "seconds": round(r.seconds, 3), "error": r.error, "details": r.details,
                "rows": len(r.rows),
            }
            for r in results
        },
        "rows": [row.to_dict() for r in results for row in r.rows],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1])
    parser.add_argument("--quick", action="store_true", help="small inputs; all areas within 5 minutes")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--only", nargs="+", metavar="AREA", help="run only these areas (e.g. f0 hubert)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"result file (default {DEFAULT_JSON})")
    parser.add_argument("--list", action="store_true", help="list the areas and exit")
    parser.add_argument(
        "--in-process", action="store_true", help="run areas in this process (debugging; no time limit per area)"
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds per area (default: shared budget)")
    parser.add_argument("--package", default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child:
        return _child_main(args.package, args.child, args.quick, args.device, args.child_out)

    areas = discover(args.package)
    if args.list:
        print("\n".join(areas))
        return 0
    if args.only:
        unknown = sorted(set(args.only) - set(areas))
        if unknown:
            print(f"unknown area(s) {', '.join(unknown)}; available: {', '.join(areas) or 'none'}", file=sys.stderr)
            return 2
        areas = [a for a in areas if a in set(args.only)]
    if not areas:
        print(f"no {PREFIX}*.py modules found in package {args.package!r}", file=sys.stderr)
        return 2
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("--device cuda: no CUDA device is available to torch here; use --device cpu", file=sys.stderr)
            return 2

    started = datetime.now(UTC)
    deadline = time.perf_counter() + (QUICK_BUDGET_S if args.quick else FULL_AREA_TIMEOUT_S * len(areas))
    results: list[AreaResult] = []
    for index, area in enumerate(areas):
        left = deadline - time.perf_counter()
        share = args.timeout or area_limit(left, len(areas) - index)
        print(f"[{index + 1}/{len(areas)}] {area} (limit {share:.0f} s) ...", file=sys.stderr, flush=True)
        if args.in_process:
            start = time.perf_counter()
            try:
                rows = run_in_process(args.package, area, args.quick, args.device)
                result = AreaResult(area, "ok", time.perf_counter() - start, rows=rows)
            except Exception as exc:  # noqa: BLE001 (one area failing must not stop the others)
                result = AreaResult(area, "failed", time.perf_counter() - start, error=f"{type(exc).__name__}: {exc}")
        else:
            result = run_area(args.package, area, args.quick, args.device, share)
        if result.status != "ok":
            print(f"    {area} {result.status}: {result.error}", file=sys.stderr, flush=True)
        else:
            print(f"    {area}: {len(result.rows)} rows in {result.seconds:.1f} s", file=sys.stderr, flush=True)
        results.append(result)

    print(format_table(results))
    write_json(args.json, results, args, started)
    failed = [r.area for r in results if r.status != "ok"]
    total_s = sum(r.seconds for r in results)
    print(f"\n{len(results) - len(failed)}/{len(results)} areas ok in {total_s:.0f} s; rows written to {args.json}")
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
