"""One training step of the real-size v2 40k f0 model (batch 4, segment 12800 samples).

Ours: `train.trainer.Trainer.train_step`. Baseline: RVC's step (`train_and_evaluate`) written out
here on the same network classes and weights: the target mel computed inside autocast, the
generator's backward also filling the discriminator's weight gradients, and the gradient norms
summed parameter by parameter with `.item()` (`commons.clip_grad_value_(params, None)`).
Both run interleaved in one process; peak memory is measured per variant in a fresh process.
On a GPU both use the trainer's mixed precision (bf16 where supported, else fp16 + GradScaler).

    python -m bench.bench_train [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import BenchRow, in_fresh_process, interleaved, peak_rss_mb

VERSION = "v2"
TAG = "40k"
BATCH = 4
ITEM_SECONDS = (
    3.5,
    3.0,
    2.5,
    2.0,
)  # slice lengths as preprocessing makes them (<= 3.7 s)


def _batch(config: Any, mel: Any, batch_size: int = BATCH) -> Any:
    import torch

    from train.data import Sample, collate

    rng = np.random.default_rng(0)
    samples = []
    for i, seconds in enumerate(ITEM_SECONDS[:batch_size]):
        n = int(seconds * config.sample_rate) // config.data.hop_length * config.data.hop_length
        t = np.arange(n) / config.sample_rate
        wave = (0.3 * np.sin(2 * np.pi * (150 + 20 * i) * t) + 0.01 * rng.standard_normal(n)).astype(np.float32)
        wave_t = torch.from_numpy(wave).unsqueeze(0)  # [1, T]
        spec = mel.spectrogram(wave_t).squeeze(0)  # [F, frames]
        frames = spec.shape[1]
        samples.append(
            Sample(
                spec=spec,
                wave=wave_t,
                phone=torch.from_numpy(rng.standard_normal((frames, config.content_dim)).astype(np.float32)),
                pitch=torch.from_numpy(rng.integers(1, 256, frames)),
                pitchf=torch.from_numpy((150 + 20 * i + rng.standard_normal(frames)).astype(np.float32)),
                speaker_id=0,
            )
        )
    return collate(samples)


def _make_trainer(device: str, workdir: Path) -> Any:
    """A Trainer set up as `run()` would, without data loading."""
    import torch

    from configs import load_config
    from train.experiment import Experiment
    from train.trainer import Trainer, TrainingOptions, TrainingSetup, build_networks

    experiment = Experiment(workdir / "logs" / "bench")
    config = load_config(VERSION, TAG)
    setup = TrainingSetup(experiment, VERSION, TAG, True, config)
    trainer = Trainer(setup, TrainingOptions(batch_size=BATCH, device=device))
    torch.manual_seed(1234)
    trainer.state = trainer.new_state(*build_networks(setup))
    return trainer


def _rvc_clip_grad_value(parameters: Any) -> float:
    """RVC's `commons.clip_grad_value_(params, None)`: a Python sum of per-tensor norms."""
    total = 0.0
    for p in parameters:
        if p.grad is not None:
            total += p.grad.data.norm(2).item() ** 2
    return total**0.5


def rvc_step(trainer: Any, batch: Any) -> float:
    """RVC's `train_and_evaluate` body for one batch (same networks, optimisers and scaler)."""
    import torch

    from infer_pack.commons import slice_segments
    from train.losses import discriminator_loss, feature_loss, generator_loss, kl_loss

    b = batch.to(trainer.device)
    cfg = trainer.config
    autocast = torch.autocast(
        trainer.device.type,
        dtype=trainer.amp_dtype,
        enabled=trainer.amp_dtype != torch.float32,
    )
    with autocast:
        y_hat, ids_slice, _x, z_mask, (_z, z_p, m_p, logs_p, _m_q, logs_q) = trainer.state.net_g(
            b.phone,
            b.phone_lengths,
            b.pitch,
            b.pitchf,
            b.spec,
            b.spec_lengths,
            b.speaker_id,
        )
        mel = trainer.mel.mel_from_spectrogram(b.spec)
        y_mel = slice_segments(mel, ids_slice, cfg.segment_frames)
        with torch.autocast(trainer.device.type, enabled=False):
            y_hat_mel = trainer.mel.mel(y_hat.float().squeeze(1))
        if trainer.amp_dtype != torch.float32:
            y_hat_mel = y_hat_mel.to(trainer.amp_dtype)
        wave = slice_segments(b.wave, ids_slice * cfg.data.hop_length, cfg.train.segment_size)
        y_d_hat_r, y_d_hat_g, _, _ = trainer.state.net_d(wave, y_hat.detach())
        with torch.autocast(trainer.device.type, enabled=False):
            loss_disc, _, _ = discriminator_loss(y_d_hat_r, y_d_hat_g)
    trainer.state.optim_d.zero_grad()
    trainer.state.scaler.scale(loss_disc).backward()
    trainer.state.scaler.unscale_(trainer.state.optim_d)
    _rvc_clip_grad_value(trainer.state.net_d.parameters())
    trainer.state.scaler.step(trainer.state.optim_d)
    with autocast:
        y_d_hat_r, y_d_hat_g, fmap_r, fmap_g = trainer.state.net_d(wave, y_hat)
        with torch.autocast(trainer.device.type, enabled=False):
            loss_mel = torch.nn.functional.l1_loss(y_mel, y_hat_mel) * cfg.train.c_mel
            loss_kl = kl_loss(z_p, logs_q, m_p, logs_p, z_mask) * cfg.train.c_kl
            loss_fm = feature_loss(fmap_r, fmap_g)
            loss_gen, _ = generator_loss(y_d_hat_g)
            loss_gen_all = loss_gen + loss_fm + loss_mel + loss_kl
    trainer.state.optim_g.zero_grad()
    trainer.state.scaler.scale(loss_gen_all).backward()
    trainer.state.scaler.unscale_(trainer.state.optim_g)
    _rvc_clip_grad_value(trainer.state.net_g.parameters())
    trainer.state.scaler.step(trainer.state.optim_g)
    trainer.state.scaler.update()
    return float(loss_gen_all.item())


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _peak_memory_child(kind: str, device: str) -> tuple[float, float | None]:
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as workdir:
        trainer = _make_trainer(device, Path(workdir))
        batch = _batch(trainer.config, trainer.mel)
        step = (lambda b: trainer.train_step(trainer.state, b)) if kind == "ours" else (lambda b: rvc_step(trainer, b))
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        step(batch)
        _sync(device)
        gpu = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
        return peak_rss_mb(), gpu


def peak_memory(kind: str, device: str) -> tuple[float, float | None]:
    """(peak RSS MB, peak GPU MB or None) of one step of `kind` in a fresh process."""
    return in_fresh_process(_peak_memory_child, kind, device)


def run(quick: bool = False, device: str = "cpu") -> list[BenchRow]:
    """Quick on CPU: batch 1, one warm-up and one timed step each (a real-size CPU step takes seconds)."""
    rows: list[BenchRow] = []
    batch_size = 1 if quick and not device.startswith("cuda") else BATCH
    with tempfile.TemporaryDirectory() as workdir:
        trainer = _make_trainer(device, Path(workdir))
        batch = _batch(trainer.config, trainer.mel, batch_size)
        params_g = sum(p.numel() for p in trainer.state.net_g.parameters())
        params_d = sum(p.numel() for p in trainer.state.net_d.parameters())

        def ours() -> None:
            trainer.train_step(trainer.state, batch)
            _sync(device)

        def baseline() -> None:
            rvc_step(trainer, batch)
            _sync(device)

        repeats = 1 if quick else 3
        # Always warm up: the first step pays one-off allocation costs that would land on whichever runs first.
        ours_s, base_s = interleaved(ours, baseline, repeats=repeats, warmup=True)
        precision = str(trainer.amp_dtype).replace("torch.", "")
        notes = f"v2 40k f0, G {params_g / 1e6:.1f}M + D {params_d / 1e6:.1f}M params, batch {batch_size}, segment 12800, {precision}"
        rows.append(BenchRow("train", f"step time ({device})", "s", ours_s, base_s, True, notes))
        rows += validation_rows(trainer, device, ours_s, batch_size, quick)
        rows.append(
            BenchRow(
                "train",
                f"steps per second ({device})",
                "steps/s",
                1.0 / ours_s,
                1.0 / base_s if base_s else None,
                False,
                notes,
            )
        )
    if not quick:
        ours_rss, ours_gpu = peak_memory("ours", device)
        base_rss, base_gpu = peak_memory("rvc", device)
        rows.append(
            BenchRow(
                "train",
                "peak RSS, 1 step",
                "MB",
                ours_rss,
                base_rss,
                True,
                "fresh process per variant",
            )
        )
        if ours_gpu is not None:
            rows.append(
                BenchRow(
                    "train",
                    "peak GPU memory, 1 step",
                    "MB",
                    ours_gpu,
                    base_gpu,
                    True,
                    "max_memory_allocated",
                )
            )
    else:
        rows.append(
            BenchRow(
                "train",
                "peak RSS (process, both variants)",
                "MB",
                peak_rss_mb(),
                None,
                True,
            )
        )
    return rows


DATASET_S = 600.0  # a typical dataset: RVC's guidance of about 10 minutes
CLIP_S = 3.4  # mean clip length after step 2a (3.7 s pieces, 0.3 s overlap, shorter tails)


def validation_rows(trainer: Any, device: str, step_s: float, batch_size: int, quick: bool) -> list[BenchRow]:
    """The held-out validation of an epoch end (`train.validation.evaluate`) against that epoch's training
    time, for a 10-minute dataset with the default held-out share (3 %, at least 10 s)."""
    from train.holdout import DEFAULT_MIN_SECONDS, DEFAULT_SHARE_PERCENT
    from train.validation import ValidationSet, evaluate

    held_s = max(DEFAULT_SHARE_PERCENT / 100 * DATASET_S, DEFAULT_MIN_SECONDS)
    clips = 2 if quick else int(round(held_s / 3.5))
    from train.data import Sample

    samples = []
    for _ in range(clips):  # 3.5 s clips like the step's longest
        batch = _batch(trainer.config, trainer.mel, 1)
        samples.append(Sample(spec=batch.spec[0], wave=batch.wave[0], phone=batch.phone[0], pitch=batch.pitch[0],
                              pitchf=batch.pitchf[0], speaker_id=0))
    data = ValidationSet(samples, use_f0=True)

    def once() -> Any:
        figures = evaluate(trainer.state.net_g, data, trainer.mel, trainer.config.train.c_mel, trainer.device,
                           step=0, epoch=0, epoch_end=True)
        _sync(device)
        return figures

    once()  # warm-up
    figures = once()
    per_second = figures.val_time_s / figures.val_seconds
    validation_s = per_second * held_s
    steps_per_epoch = -(-int((DATASET_S - held_s) / CLIP_S) // batch_size)
    epoch_s = steps_per_epoch * step_s
    notes = (f"{held_s:.0f} s held out of a {DATASET_S / 60:.0f} min dataset ({clips} clips of 3.5 s measured); "
             f"epoch = {steps_per_epoch} steps of batch {batch_size} = {epoch_s:.1f} s")
    return [
        BenchRow("train", f"validation per epoch ({device})", "s", validation_s, None, True, notes),
        BenchRow("train", f"validation cost per epoch ({device})", "% of epoch", 100 * validation_s / epoch_s, None,
                 True, notes),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = run(quick=args.quick, device=args.device)
    for row in rows:
        print(json.dumps(row.to_dict()))
    print(f"# {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
