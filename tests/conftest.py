"""Shared fixtures: where the reference data lives, synthetic audio, temp project roots."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_ENV = "RVC_REFERENCE_DIR"


def reference_dir() -> Path | None:
    """`$RVC_REFERENCE_DIR` when set, else `../shared/reference` beside the checkout; None when absent."""
    env = os.environ.get(REFERENCE_ENV)
    candidate = Path(env) if env else REPO_ROOT.parent / "shared" / "reference"
    return candidate if candidate.is_dir() else None


def missing_reference(reason: str) -> None:
    """Skip a test whose reference data is absent; under CI (`CI=true`) fail it: CI always has the data."""
    if _under_ci():
        pytest.fail(f"{reason} (CI must have {REPO_ROOT.parent / 'shared' / 'reference'})", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def reference() -> Path:
    """The reference data folder; skips the test with the reason when it is absent (fails under CI)."""
    found = reference_dir()
    if found is None:
        missing_reference(
            f"reference data not found: set {REFERENCE_ENV} or place it at {REPO_ROOT.parent / 'shared' / 'reference'}"
        )
    assert found is not None
    return found


def _under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def ffmpeg_binary() -> str:
    """The `ffmpeg` command (Debian's package; `make test-deps` installs it). Skips without it; fails under CI."""
    found = shutil.which("ffmpeg")
    if found is None:
        if _under_ci():
            pytest.fail("the ffmpeg binary is absent (CI installs it with `make test-deps`)", pytrace=False)
        pytest.skip("the ffmpeg binary is absent; `make test-deps` installs Debian's ffmpeg")
    return found


def reference_file(reference: Path, name: str) -> Path:
    path = reference / name
    if not path.exists():
        missing_reference(f"reference file {path} is absent")
    return path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use the reference data carry the `reference` marker (`pytest -m reference` selects them)."""
    for item in items:
        if "reference" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.reference)


def synthetic_voice(duration_s: float, sample_rate: int, f0_hz: float = 160.0, seed: int = 0) -> np.ndarray:
    """A harmonic tone with vibrato, syllable-like amplitude and short pauses (float32, -1..1)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration_s * sample_rate)) / sample_rate
    f0 = f0_hz * (1.0 + 0.03 * np.sin(2 * np.pi * 5.0 * t)) * (1.0 + 0.15 * np.sin(2 * np.pi * 0.3 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 9))
    envelope = np.clip(np.sin(2 * np.pi * 1.5 * t), 0.0, None) ** 0.5
    noise = 0.01 * rng.standard_normal(t.size)
    return (0.3 * voice * envelope + noise).astype(np.float32)


@pytest.fixture
def project_root(tmp_path: Path) -> Path:
    """An empty project folder (logs/, weights/ live below it)."""
    root = tmp_path / "project"
    root.mkdir()
    return root


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium, one per test module (skips without Playwright)."""
    from helpers_app import chromium_browser

    with chromium_browser() as chromium:
        yield chromium


@pytest.fixture
def page(request: pytest.FixtureRequest, browser: Any, served: tuple[str, Any, Path]) -> Iterator[Any]:
    """The app (the module's `served` fixture) in a fresh browser context; the module's TIMEOUT_MS applies."""
    from helpers_app import app_page

    with app_page(browser, served[0], getattr(request.module, "TIMEOUT_MS", 60_000)) as opened:
        yield opened
