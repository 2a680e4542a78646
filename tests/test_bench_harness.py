"""The benchmark entry point on a fake package of bench_*.py modules."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from bench import __main__ as harness
from bench.common import BenchRow

FAKE_MODULES = {
    "bench_alpha.py": """
        from bench.common import BenchRow

        def run(quick, device):
            return [
                BenchRow("alpha", "sum 1e3", "s", 0.5, baseline=1.0, notes=f"quick={quick} device={device}"),
                BenchRow("alpha", "recall", "recall@8", 0.9, baseline=0.9, lower_is_better=False),
            ]
    """,
    "bench_broken.py": """
        def run(quick, device):
            raise RuntimeError("deliberate failure in broken")
    """,
    "bench_crash.py": """
        import os

        def run(quick, device):
            os._exit(7)
    """,
    "bench_zeta.py": """
        from bench.common import BenchRow

        def run(quick, device):
            return [BenchRow("zeta", "speed", "x realtime", 40.0, baseline=20.0, lower_is_better=False)]
    """,
    "helper.py": "VALUE = 1\n",
}


@pytest.fixture
def fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    package = tmp_path / "fakebench_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name, source in FAKE_MODULES.items():
        (package / name).write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "fakebench_pkg"


def test_discovery_finds_only_bench_modules(fake_package: str) -> None:
    assert harness.discover(fake_package) == ["alpha", "broken", "crash", "zeta"]


def test_harness_tolerates_failures_and_writes_table_and_json(
    fake_package: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results" / "run.json"
    code = harness.main(["--quick", "--package", fake_package, "--json", str(out)])
    assert code == 1  # two areas failed, the others still ran
    printed = capsys.readouterr()
    table = printed.out
    header = table.splitlines()[0].split()
    assert header == ["area", "measurement", "ours", "baseline", "ratio", "unit", "notes"]
    assert "quick=True device=cpu" in table
    assert "deliberate failure in broken" in table and "[FAILED]" in table
    assert "the process ended with status 7" in table + printed.err
    zeta = next(line for line in table.splitlines() if line.startswith("zeta"))
    assert "2 (better)" in zeta and "x realtime" in zeta
    alpha = next(line for line in table.splitlines() if "sum 1e3" in line)
    assert "0.5 (better)" in alpha

    data = json.loads(out.read_text())
    assert data["quick"] is True and data["device"] == "cpu"
    assert {k: v["status"] for k, v in data["areas"].items()} == {
        "alpha": "ok", "broken": "failed", "crash": "failed", "zeta": "ok"
    }
    rows = [BenchRow(**{k: v for k, v in r.items() if k != "ratio"}) for r in data["rows"]]
    assert [(r.area, r.name, r.ours, r.baseline) for r in rows] == [
        ("alpha", "sum 1e3", 0.5, 1.0), ("alpha", "recall", 0.9, 0.9), ("zeta", "speed", 40.0, 20.0)
    ]
    assert data["rows"][0]["ratio"] == pytest.approx(0.5)
    assert "Traceback" in data["areas"]["broken"]["details"]


def test_only_selects_areas_and_rejects_unknown(fake_package: str, tmp_path: Path) -> None:
    out = tmp_path / "only.json"
    assert harness.main(["--only", "zeta", "--package", fake_package, "--json", str(out), "--in-process"]) == 0
    assert list(json.loads(out.read_text())["areas"]) == ["zeta"]
    assert harness.main(["--only", "nope", "--package", fake_package, "--json", str(out)]) == 2


def test_an_area_over_its_time_limit_is_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "slowbench_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "bench_slow.py").write_text("import time\n\ndef run(quick, device):\n    time.sleep(60)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = harness.run_area("slowbench_pkg", "slow", True, "cpu", timeout_s=1.5)
    assert result.status == "timeout" and result.seconds < 20


def test_real_bench_package_areas_expose_run() -> None:
    """Every bench/bench_*.py in the repository has the run(quick, device) entry the harness calls."""
    import importlib
    import inspect

    for area in harness.discover("bench"):
        module = importlib.import_module(f"bench.bench_{area}")
        assert list(inspect.signature(module.run).parameters)[:2] == ["quick", "device"], area


def test_time_budget_lets_an_area_use_what_others_leave_but_keeps_a_reserve() -> None:
    assert harness.area_limit(290.0, 4) == pytest.approx(200.0)  # 3 x 30 s kept for the others
    assert harness.area_limit(100.0, 4) == pytest.approx(25.0)  # reserve impossible: even share
    assert harness.area_limit(50.0, 1) == pytest.approx(50.0)
    assert harness.area_limit(0.0, 2) == 1.0
