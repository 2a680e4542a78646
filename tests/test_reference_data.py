"""Tests that need ../shared/reference skip without it on a developer's machine and fail under CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT

TEST = "tests/test_f0.py::test_coarse_matches_rvc_table_exactly"


def _run(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["RVC_REFERENCE_DIR"] = str(tmp_path / "no-reference-here")
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", TEST],
        cwd=str(REPO_ROOT), env=env, capture_output=True, text=True, timeout=300, check=False,
    )


def test_missing_reference_skips_with_the_reason(tmp_path: Path) -> None:
    done = _run(tmp_path, None)
    assert done.returncode == 0, done.stdout[-2000:]
    assert "1 skipped" in done.stdout and "reference data not found: set RVC_REFERENCE_DIR" in done.stdout


def test_missing_reference_fails_under_ci(tmp_path: Path) -> None:
    done = _run(tmp_path, "true")
    assert done.returncode == 1, done.stdout[-2000:]
    assert "1 error" in done.stdout or "1 failed" in done.stdout, done.stdout[-2000:]
    assert "CI must have" in done.stdout


def test_reference_tests_carry_the_marker() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--collect-only", "-m", "reference", "-p", "no:cacheprovider",
         "tests/test_f0.py"],
        cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=300, check=False,
    )
    assert "test_coarse_matches_rvc_table_exactly" in done.stdout, done.stdout[-2000:]
