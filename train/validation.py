"""Validation on the held-out clips (`train.holdout`): how well the generator converts audio it never trained on.

At each epoch end (and every N steps if asked) the generator converts each held-out clip as a
conversion would (`Synthesizer.infer`: content features + the clip's pitch -> audio, from the
prior, not the training posterior) with its random draws from its own seeded generator, so the
figures of a run are repeatable and the run's own random sequence is untouched (a resumed run
stays exact). Three figures, averaged over clips weighted by their frames:

* `val_loss_mel`: L1 between log mels of the output and the clip, with the training mel settings,
  times c_mel: the same scale as the training `loss_mel`, so the two curves share an axis;
* `val_stft`: multi-resolution STFT distance (spectral convergence + log-magnitude L1, averaged
  over FFT sizes 512, 1024 and 2048), which also sees the phase-sensitive fine structure;
* `val_f0_cents`: mean |pitch error| of the output against the clip's step-2b pitch, in cents, on
  frames voiced in both (Praat "pm" on the output at 16 kHz); None for models without pitch.

The lowest `val_loss_mel` so far is the best: `ValidationHistory` is rebuilt from the metrics
file, so a resumed run keeps its best-so-far and its history (records past the resumed step are
dropped with the training records, and those steps are validated again).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from configs import Version
from infer_pack.fileio import atomic_write_text
from train.experiment import Experiment, read_versioned_json, versioned
from train.metrics import RECORD_KIND, ValidationHistory

if TYPE_CHECKING:
    from train.data import Sample
    from train.experiment import FilelistEntry
    from train.mel import MelTransform

log = logging.getLogger("train.trainer")

VALIDATION_SEED = 1234
STFT_RESOLUTIONS: tuple[tuple[int, int], ...] = ((512, 128), (1024, 256), (2048, 512))  # (n_fft = window, hop)
TENSORBOARD_TAGS = {"val_loss_mel": "validation/mel", "val_stft": "validation/stft", "val_f0_cents": "validation/f0_cents"}


@dataclass(frozen=True)
class ValidationFigures:
    step: int
    epoch: int  # the epoch that ended (epoch_end) or the one in progress
    epoch_end: bool
    val_loss_mel: float
    val_stft: float
    val_f0_cents: float | None
    val_seconds: float  # audio evaluated
    val_time_s: float  # what it cost
    kind: str = RECORD_KIND

    def to_record(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in data.items()}


# ----------------------------------------------------------------------------------------------
# Figures (pure functions)
# ----------------------------------------------------------------------------------------------
def stft_distance(generated: torch.Tensor, target: torch.Tensor) -> float:
    """Multi-resolution STFT distance of two waves [T] (same length): mean over resolutions of
    spectral convergence ||S_t - S_g||_F / ||S_t||_F plus mean |log S_t - log S_g|."""
    total = 0.0
    for n_fft, hop in STFT_RESOLUTIONS:
        window = torch.hann_window(n_fft, device=generated.device)
        spec = [torch.stft(x.float(), n_fft, hop, window=window, return_complex=True).abs().clamp_min(1e-7)
                for x in (generated, target)]  # [n_fft/2+1, frames]
        convergence = torch.linalg.norm(spec[1] - spec[0]) / torch.linalg.norm(spec[1]).clamp_min(1e-7)
        log_l1 = torch.mean(torch.abs(torch.log(spec[1]) - torch.log(spec[0])))
        total += float(convergence + log_l1)
    return total / len(STFT_RESOLUTIONS)


def cents_error(f0_generated: np.ndarray, f0_target: np.ndarray) -> tuple[float, int]:
    """(mean |1200 log2(generated / target)|, frames counted) over frames voiced in both ([frames] Hz)."""
    n = min(f0_generated.size, f0_target.size)
    out, ref = f0_generated[:n], f0_target[:n]
    voiced = (out > 0) & (ref > 0)
    if not voiced.any():
        return float("nan"), 0
    return float(np.mean(np.abs(1200.0 * np.log2(out[voiced] / ref[voiced])))), int(voiced.sum())


# ----------------------------------------------------------------------------------------------
# Running it
# ----------------------------------------------------------------------------------------------
@dataclass
class ValidationSet:
    """The held-out clips, loaded once (a few dozen seconds of audio)."""

    samples: list[Sample]
    use_f0: bool

    @classmethod
    def load(cls, entries: Sequence[FilelistEntry], mel: MelTransform, use_f0: bool) -> ValidationSet:
        from train.data import TrainingDataset

        dataset = TrainingDataset(entries, mel, use_f0)
        return cls([dataset[i] for i in range(len(dataset))], use_f0)


def evaluate(
    net_g: torch.nn.Module, data: ValidationSet, mel: MelTransform, c_mel: float, device: torch.device, *,
    step: int, epoch: int, epoch_end: bool, seed: int = VALIDATION_SEED,
) -> ValidationFigures:
    """The figures of `net_g` (a training Synthesizer, unwrapped) on the held-out clips; leaves its mode as it was."""
    from infer_pack.f0.pm import estimate_pm
    from train.preprocess import resample_16k

    started = time.perf_counter()
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = net_g.training
    net_g.eval()
    sums = {"mel": 0.0, "stft": 0.0, "cents": 0.0}
    frames_total = cents_frames = samples_total = 0
    try:
        with torch.no_grad():
            for sample in data.samples:
                frames = sample.phone.shape[0]
                pitch = sample.pitch[None].to(device) if sample.pitch is not None else None  # [1, frames]
                pitchf = sample.pitchf[None].to(device) if sample.pitchf is not None else None
                audio, *_ = net_g.infer(  # type: ignore[operator]
                    sample.phone[None].to(device), torch.tensor([frames], device=device), pitch, pitchf,
                    torch.tensor([sample.speaker_id], device=device), generator=generator,
                )  # [1, 1, frames * hop]
                generated = audio[0, 0].float()  # [frames * hop]
                target = sample.wave[0, : generated.shape[0]].to(device)  # [frames * hop]
                generated = generated[: target.shape[0]]
                target_mel = mel.mel_from_spectrogram(sample.spec[None, :, :frames].to(device))  # [1, M, frames]
                generated_mel = mel.mel(generated[None])  # [1, M, frames]
                n = min(target_mel.shape[-1], generated_mel.shape[-1])
                l1 = torch.nn.functional.l1_loss(generated_mel[..., :n], target_mel[..., :n])
                sums["mel"] += float(l1) * c_mel * n
                sums["stft"] += stft_distance(generated, target) * n
                frames_total += n
                samples_total += target.shape[0]
                if data.use_f0 and sample.pitchf is not None:
                    wave = generated.cpu().numpy()
                    f0 = estimate_pm(resample_16k(wave, mel.sample_rate), frames, 50.0, 1100.0)
                    cents, counted = cents_error(f0, sample.pitchf.numpy().astype(np.float64))
                    if counted:
                        sums["cents"] += cents * counted
                        cents_frames += counted
    finally:
        net_g.train(was_training)
    frames_total = max(frames_total, 1)
    return ValidationFigures(
        step=step, epoch=epoch, epoch_end=epoch_end, val_loss_mel=sums["mel"] / frames_total,
        val_stft=sums["stft"] / frames_total,
        val_f0_cents=sums["cents"] / cents_frames if cents_frames else None,
        val_seconds=samples_total / mel.sample_rate, val_time_s=time.perf_counter() - started,
    )


# ----------------------------------------------------------------------------------------------
# One run's validator, and the record of the best so far (`best.json`)
# ----------------------------------------------------------------------------------------------
BEST_FORMAT = 1


@dataclass
class Validator:
    """What the trainer asks: is a validation due, run it, is it the best, should training stop."""

    data: ValidationSet | None  # None: validation off (no held-out set)
    history: ValidationHistory
    mel: MelTransform
    c_mel: float
    device: torch.device
    every_steps: int | None = None
    early_stop_epochs: int = 0

    @classmethod
    def open(
        cls, experiment: Experiment, *, version: Version, use_f0: bool, mel: MelTransform, c_mel: float,
        device: torch.device, every_steps: int | None, early_stop_epochs: int, records: Sequence[dict[str, Any]],
    ) -> Validator:
        """The held-out clips of `experiment` (validation off, said once in the log, when it has none)."""
        speakers = experiment.filelist_speaker_ids(use_f0) or [0]
        entries = experiment.held_out_entries(version, use_f0, speakers[0])
        data = None
        if entries:
            data = ValidationSet.load(entries, mel, use_f0)
            log.info("validation on %d held-out clip(s) (%.1f s) at each epoch end%s", len(entries),
                     sum(s.wave.shape[-1] for s in data.samples) / mel.sample_rate,
                     f" and every {every_steps} steps" if every_steps else "")
        elif experiment.held_out_names():
            log.info("validation off: the held-out clips have no pitch or features yet; run step 2b (extract)")
        else:
            log.info("validation off: this experiment has no held-out clips (prepared before they existed, by RVC, "
                     "or with a held-out share of 0); run step 2a again to set some aside")
        if data is None and early_stop_epochs:
            log.warning("early stop after %d epochs without improvement needs validation; it is off", early_stop_epochs)
        return cls(data, ValidationHistory.from_records(records), mel, c_mel, device, every_steps, early_stop_epochs)

    @property
    def enabled(self) -> bool:
        return self.data is not None

    def due_within_epoch(self, global_step: int, batch: int, steps_per_epoch: int) -> bool:
        """Every N steps if asked (not at an epoch's last step: the epoch end validates then)."""
        every = self.every_steps
        return self.enabled and every is not None and global_step % every == 0 and batch != steps_per_epoch

    def run(self, net_g: torch.nn.Module, *, step: int, epoch: int, epoch_end: bool) -> tuple[ValidationFigures, bool]:
        """Evaluate, add to the history; (figures, whether they are the new best)."""
        assert self.data is not None
        figures = evaluate(net_g, self.data, self.mel, self.c_mel, self.device, step=step, epoch=epoch,
                           epoch_end=epoch_end)
        return figures, self.history.add(figures.to_record())

    def should_stop(self) -> bool:
        return self.enabled and self.history.should_stop(self.early_stop_epochs)


def write_best(experiment: Experiment, figures: ValidationFigures, voice: Path | None) -> None:
    """`best.json`: written after the G/D pair (and voice) it describes, so it never names a half-written pair."""
    payload = versioned({**figures.to_record(), "voice": str(voice) if voice else None,
                         "g": experiment.best_checkpoint_path("G").name,
                         "d": experiment.best_checkpoint_path("D").name}, BEST_FORMAT)
    atomic_write_text(experiment.best_path, json.dumps(payload, indent=1, sort_keys=True) + "\n")


def read_best(experiment: Experiment) -> dict[str, Any] | None:
    return read_versioned_json(experiment.best_path, BEST_FORMAT, "record of the best validation",
                               "delete it (the next better validation writes it again)")
