"""Chromium shows the Train tab's loss-curve panel of an experiment: the validation curve, the best epoch
marked in the plot and named in words, and the overtraining sentence (Debian's /usr/bin/chromium)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers_app import CHROMIUM, app_in_thread, make_project

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (Debian: apt-get install chromium)"),
]
TIMEOUT_MS = 60_000
BEST_RGB = (0x94, 0x67, 0xBD)  # matplotlib's tab:purple: the best-epoch line and star


def _records() -> list[dict[str, Any]]:
    """Six epochs of 10 steps: validation best at epoch 3, then worse while training still falls."""
    records: list[dict[str, Any]] = []
    for epoch, (val, mel) in enumerate(zip([30, 25, 24, 26, 27, 29], [30, 26, 23, 21, 19, 18]), start=1):
        for step in (10 * epoch - 5, 10 * epoch):
            records.append({"format_version": 1, "step": step, "epoch": epoch, "loss_mel": mel, "loss_kl": 2.0,
                            "loss_fm": 4.0, "loss_gen": 3.0, "loss_d": 2.5, "loss_g": 40.0})
        records.append({"format_version": 1, "kind": "validation", "step": 10 * epoch, "epoch": epoch,
                        "epoch_end": True, "val_loss_mel": val, "val_stft": 2.0, "val_f0_cents": 40.0})
    return records


@pytest.fixture(scope="module")
def served(reference: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any, Path]]:
    root = make_project(tmp_path_factory.mktemp("curves") / "project", reference, None)
    experiment = root / "logs" / "curves"
    experiment.mkdir(parents=True)
    (experiment / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _records()))
    with app_in_thread(root) as (url, ctx):
        yield url, ctx, root


def _purple_pixels(png: bytes) -> int:
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)  # [H, W, 3]
    return int((np.abs(pixels - np.array(BEST_RGB)).sum(axis=-1) < 30).sum())


def test_the_panel_marks_the_best_epoch_and_says_overtraining(page: Any, tmp_path: Path) -> None:
    page.get_by_role("tab", name="Train").click()
    name = page.locator("#train-experiment textarea, #train-experiment input").first
    name.fill("curves")
    name.blur()
    note = page.locator("#train-loss-note")
    note.get_by_text("Best validation: epoch 3").wait_for()
    assert "step 30, validation mel 24.00" in note.inner_text()
    assert "likely overtraining since epoch 3" in note.inner_text()
    image = page.locator("#train-loss img").first
    image.wait_for()
    source = str(image.get_attribute("src"))
    png = base64.b64decode(source.split(",", 1)[1]) if source.startswith("data:") else page.request.get(source).body()
    page.screenshot(path=str(tmp_path / "train-loss.png"), full_page=True)
    # the best epoch's line and star are drawn (nothing else in the panel uses that colour)
    assert _purple_pixels(png) > 200
    # an experiment without validation records shows no marker and no words
    name.fill("other")
    name.blur()
    note.get_by_text("Best validation").wait_for(state="detached")
