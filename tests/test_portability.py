"""The reference comparisons hold on other processors: rerun them with numpy's SIMD kernels switched off.

numpy picks AVX2/AVX-512 kernels at run time, so a float64 sum or 2**x can differ in its last bit
between a Xeon and an AMD EPYC. A test that compares such results bit for bit passes on one and fails on
the other; running the reference tests here a second time on numpy's baseline kernels (x86-64-v2) makes
such a test fail on every machine, before it reaches another processor family.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

# The tests that compare our floats with reference data made elsewhere.
FLOAT_REFERENCE_TESTS = (
    "tests/test_rmvpe.py",
    "tests/test_f0.py",
    "tests/test_mel.py",
    "tests/test_losses.py",
    "tests/test_sampler.py",
    "tests/test_models.py",
)
BASELINE_ONLY = "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"  # numpy >= 2.4 groups its x86 dispatch targets so


@pytest.mark.slow  # about a minute: the reference tests once more
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the dispatch groups named are x86's")
@pytest.mark.skipif(bool(os.environ.get("NPY_DISABLE_CPU_FEATURES")), reason="already running without SIMD kernels")
def test_reference_comparisons_hold_without_simd_kernels() -> None:
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": BASELINE_ONLY}
    check = subprocess.run(
        [sys.executable, "-c", "from numpy._core._multiarray_umath import __cpu_features__ as f, __cpu_dispatch__ as d;"
         "print(','.join(k for k in d if f.get(k)) or 'none')"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert check.returncode == 0, check.stderr[-2000:]
    assert check.stdout.strip().splitlines()[-1] == "none", f"SIMD kernels still active: {check.stdout}"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow and not cuda",
         *FLOAT_REFERENCE_TESTS],
        env=env, cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=900, check=False,
    )
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, f"failed on numpy's baseline kernels:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
    assert " passed" in summary and "failed" not in summary, summary
