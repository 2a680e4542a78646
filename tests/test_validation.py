"""Held-out validation in the training loop (tiny model, CPU): repeatable figures, the best epoch kept,
resume keeping the history, early stop, and the overtraining sentence."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train_fixtures import prepare_experiment, tiny_networks, tiny_setup

from infer_pack.progress import CancelToken
from train.experiment import Experiment
from train.holdout import HeldOutSet, write_held_out
from train.metrics import ValidationHistory, overtraining_note
from train.trainer import Trainer, TrainingOptions, TrainingResult
from train.validation import cents_error, read_best, stft_distance

STEPS_PER_EPOCH = 3  # 4 training clips + 2 mute lines, batch 2
# A learning rate high enough that the held-out loss falls for two epochs, then rises (the run overfits
# and drifts); measured: best at epoch 2.
RISING_LR = 0.05


def held_out_experiment(logs: Path, learning_rate: float = RISING_LR) -> Experiment:
    """Six clips; the last two held out (as step 2a would record them)."""
    experiment = prepare_experiment(logs, items=6, learning_rate=learning_rate)
    write_held_out(experiment, HeldOutSet(3.0, 10.0, ("0_4", "0_5"), seconds=3.0))
    experiment.write_filelist("v2", True, 0, seed=0)
    return experiment


def train(experiment: Experiment, weights: Path, cancel: CancelToken | None = None, progress=None,  # type: ignore[no-untyped-def]
          **options) -> tuple[Trainer, TrainingResult]:
    settings = {"epochs": 3, "batch_size": 2, "save_every_epochs": 1, "log_interval": 1, "weights_dir": weights}
    settings.update(options)
    torch.manual_seed(0)
    trainer = Trainer(tiny_setup(experiment), TrainingOptions(**settings), networks=tiny_networks(experiment),
                      cancel=cancel, progress=progress)  # type: ignore[arg-type]
    return trainer, trainer.run()


def validation_records(experiment: Experiment) -> list[dict]:
    records = [json.loads(line) for line in experiment.metrics_path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "val_time_s"} for r in records if r.get("kind") == "validation"]


def test_figures_repeat_best_is_the_argmin_and_resume_keeps_the_history(tmp_path: Path) -> None:
    from infer_pack.checkpoint import load_training_checkpoint, load_voice

    whole = held_out_experiment(tmp_path / "a" / "logs")
    trainer, result = train(whole, tmp_path / "a" / "weights")
    logged = validation_records(whole)
    assert [(r["epoch"], r["step"], r["epoch_end"]) for r in logged] == [(1, 3, True), (2, 6, True), (3, 9, True)]
    for r in logged:
        assert r["val_seconds"] == pytest.approx(3.0, abs=0.02) and np.isfinite(r["val_stft"]) and r["val_stft"] > 0
        assert r["val_f0_cents"] is None or r["val_f0_cents"] >= 0
    # held-out clips never trained on: no training step read them
    assert not any("0_4" in str(e.gt_wav) or "0_5" in str(e.gt_wav) for e in whole.read_filelist(True))

    # the best pair is the argmin of the logged validation loss, equal to that step's checkpoint
    losses = [r["val_loss_mel"] for r in logged]
    best = logged[int(np.argmin(losses))]
    assert best["epoch"] == 2 and losses[2] > losses[1]  # this run's shape: better, then worse
    assert (result.best_epoch, result.best_step) == (best["epoch"], best["step"])
    best_g = load_training_checkpoint(whole.best_checkpoint_path("G"))
    same_step = load_training_checkpoint(whole.g_checkpoint_path(best["step"]))
    assert best_g.global_step == best["step"] and best_g.iteration == best["epoch"]
    for name, value in same_step.model.items():
        torch.testing.assert_close(best_g.model[name], value, rtol=0, atol=0, msg=name)
    assert load_training_checkpoint(whole.best_checkpoint_path("D")).global_step == best["step"]
    voice = load_voice(tmp_path / "a" / "weights" / "tiny_best.pth")
    assert voice.info.startswith(f"{best['epoch']}epoch, best validation (mel {best['val_loss_mel']:.3f})")
    torch.testing.assert_close(voice.weights["dec.conv_post.weight"],  # the small model is fp16
                               same_step.model["dec.conv_post.weight"].to(voice.weights["dec.conv_post.weight"].dtype))
    stored = read_best(whole)
    assert stored is not None and stored["step"] == best["step"] and stored["voice"].endswith("tiny_best.pth")
    assert "validation at epoch 2 step 6" in whole.train_log_path.read_text()

    # Another run, stopped twice and resumed: the same figures (repeatable, and validation draws nothing
    # from the run's random sequence, so the resumed run is still exact), the same best, the same weights.
    parts = held_out_experiment(tmp_path / "b" / "logs")
    for stop_at in (4, 7, None):
        cancel = CancelToken()

        def progress(done: int, total: int, message: str, stop_at: int | None = stop_at,
                     cancel: CancelToken = cancel) -> None:
            if done == stop_at:
                cancel.cancel()

        resumed, again = train(parts, tmp_path / "b" / "weights", cancel=cancel, progress=progress)
    assert validation_records(parts) == logged
    assert (again.best_epoch, again.best_step) == (result.best_epoch, result.best_step)
    for name, value in trainer.state.net_g.state_dict().items():
        torch.testing.assert_close(resumed.state.net_g.state_dict()[name], value, rtol=0, atol=1e-6, msg=name)
    assert load_training_checkpoint(parts.best_checkpoint_path("G")).global_step == best["step"]


def test_early_stop_when_validation_rises(tmp_path: Path) -> None:
    experiment = held_out_experiment(tmp_path / "logs")
    _, result = train(experiment, tmp_path / "weights", epochs=8, early_stop_epochs=2)
    logged = validation_records(experiment)
    # best at epoch 2, epochs 3 and 4 no better: stopped after epoch 4 of 8
    assert result.stopped_early and result.epochs_done == 4 and result.global_step == 4 * STEPS_PER_EPOCH
    assert result.best_epoch == 2 and [r["epoch"] for r in logged] == [1, 2, 3, 4]
    assert min(r["val_loss_mel"] for r in logged[2:]) > logged[1]["val_loss_mel"]
    assert result.checkpoint_g == experiment.g_checkpoint_path(4 * STEPS_PER_EPOCH)
    assert "early stop after epoch 4" in experiment.train_log_path.read_text()


def test_without_held_out_clips_training_goes_on_and_says_so_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    experiment = prepare_experiment(tmp_path / "logs")  # made before held-out sets existed: no holdout.json
    caplog.set_level(logging.INFO, logger="train")
    _, result = train(experiment, tmp_path / "weights", epochs=2, early_stop_epochs=1)
    said = [r.getMessage() for r in caplog.records if "validation off" in r.getMessage()]
    assert len(said) == 1 and "no held-out clips" in said[0]
    assert result.epochs_done == 2 and not result.stopped_early and result.best_epoch is None
    assert validation_records(experiment) == [] and not experiment.best_checkpoint_path("G").exists()


def test_figures_of_known_signals() -> None:
    t = torch.arange(16000) / 16000.0
    wave = torch.sin(2 * torch.pi * 220.0 * t)
    assert stft_distance(wave, wave) == pytest.approx(0.0, abs=1e-6)
    assert stft_distance(0.5 * wave, wave) > stft_distance(0.9 * wave, wave) > 0
    # an octave above on voiced frames is 1200 cents; unvoiced frames on either side are not counted
    out = np.array([440.0, 0.0, 220.0 * 2 ** (50 / 1200), 300.0])
    ref = np.array([220.0, 200.0, 220.0, 0.0])
    cents, frames = cents_error(out, ref)
    assert frames == 2 and cents == pytest.approx((1200 + 50) / 2)


def _records(val: list[float], train_mel: list[float]) -> list[dict]:
    records: list[dict] = []
    for epoch, (v, m) in enumerate(zip(val, train_mel), start=1):
        records.append({"step": 10 * epoch - 5, "epoch": epoch, "loss_mel": m + 1.0})
        records.append({"step": 10 * epoch, "epoch": epoch, "loss_mel": m})
        records.append({"kind": "validation", "step": 10 * epoch, "epoch": epoch, "epoch_end": True, "val_loss_mel": v})
    return records


def test_overtraining_sentence_and_history() -> None:
    rising = _records([30, 25, 24, 26, 27, 29], [30, 26, 23, 21, 19, 18])
    note = overtraining_note(rising)
    assert note is not None and "likely overtraining since epoch 3" in note and "(3 epochs)" in note
    history = ValidationHistory.from_records(rising)
    assert history.best is not None and history.best["epoch"] == 3 and history.epochs_without_improvement() == 3
    assert history.should_stop(3) and not history.should_stop(4) and not history.should_stop(0)
    assert overtraining_note(rising[: 3 * 5]) is None  # two epochs since the best: not yet
    flat_training = _records([30, 25, 24, 26, 27, 29], [30, 26, 23, 23, 24, 25])
    assert overtraining_note(flat_training) is None  # training loss not falling: no claim of overtraining
    assert overtraining_note(_records([30, 25, 24, 23, 22, 21], [30, 26, 23, 21, 19, 18])) is None
