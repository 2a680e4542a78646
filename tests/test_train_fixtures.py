"""Helpers for the training tests: a tiny experiment folder written by hand, and a tiny config.

No test functions here. The experiment has RVC's layout (0_gt_wavs, 3_feature768, 2a_f0,
2b-f0nsf, mute files, filelist.txt, config.json) with a few seconds of synthetic voice, and a
config small enough that a CPU step takes a fraction of a second.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from conftest import synthetic_voice
from scipy.io import wavfile

from configs import load_config
from train.experiment import Experiment, ExperimentMetadata, save_npy

if TYPE_CHECKING:
    import torch

    from train.trainer import TrainingSetup

TAG = "32k"
VERSION = "v2"
RATE = 32000
HOP = 320

# Shape-defining values small enough for CPU tests; hop stays 320 (product of upsample_rates).
TINY_MODEL = {
    "inter_channels": 16,
    "hidden_channels": 16,
    "filter_channels": 32,
    "n_heads": 2,
    "n_layers": 2,
    "kernel_size": 3,
    "p_dropout": 0,
    "resblock": "1",
    "resblock_kernel_sizes": [3],
    "resblock_dilation_sizes": [[1, 3, 5]],
    "upsample_rates": [10, 8, 2, 2],
    "upsample_initial_channel": 32,
    "upsample_kernel_sizes": [20, 16, 4, 4],
    "use_spectral_norm": False,
    "gin_channels": 16,
    "spk_embed_dim": 109,
}
SEGMENT_FRAMES = 12


def tiny_config_json(learning_rate: float = 2e-3) -> dict:
    raw = load_config(VERSION, TAG).to_json_dict()
    raw["model"] = dict(TINY_MODEL)
    raw["train"]["segment_size"] = SEGMENT_FRAMES * HOP
    raw["train"]["learning_rate"] = learning_rate
    return raw


def coarse_pitch(f0_hz: np.ndarray) -> np.ndarray:
    """RVC's 1..255 mel-scale pitch (f0 range 50-1100 Hz)."""
    mel = 1127.0 * np.log(1.0 + f0_hz / 700.0)
    lo, hi = 1127.0 * np.log(1.0 + 50.0 / 700.0), 1127.0 * np.log(1.0 + 1100.0 / 700.0)
    voiced = mel > 0
    mel[voiced] = (mel[voiced] - lo) * 254.0 / (hi - lo) + 1.0
    return np.clip(np.rint(mel), 1, 255).astype(np.int64)


def prepare_experiment(
    logs_dir: Path,
    name: str = "tiny",
    items: int = 4,
    seconds: float = 1.5,
    learning_rate: float = 2e-3,
) -> Experiment:
    """Write a complete, trainable experiment (as preprocessing + extraction would leave it)."""
    experiment = Experiment(logs_dir / name)
    experiment.write_metadata(ExperimentMetadata(sample_rate_tag=TAG, version=VERSION, use_f0=True))
    rng = np.random.default_rng(7)
    for i in range(items):
        base_f0 = 120.0 + 30.0 * i
        audio = synthetic_voice(seconds, RATE, f0_hz=base_f0, seed=i)
        segment = Experiment.segment_name(0, i)
        path = experiment.gt_wav_path(segment)
        path.parent.mkdir(parents=True, exist_ok=True)
        wavfile.write(path, RATE, audio)
        pitch_frames = int(seconds * 100) + 1
        f0 = base_f0 * (1.0 + 0.03 * np.sin(2 * np.pi * 5.0 * np.arange(pitch_frames) / 100.0))
        save_npy(experiment.f0_hz_path(segment), f0.astype(np.float64))
        save_npy(experiment.f0_coarse_path(segment), coarse_pitch(f0))
        feature_frames = int(seconds * 50)
        features = rng.standard_normal((feature_frames, 768)).astype(np.float32) * 0.1
        features[:, i] += 1.0  # a per-item signature the prior can learn
        save_npy(experiment.feature_path(segment, VERSION), features)
    experiment.ensure_mute_audio_and_f0(TAG)
    save_npy(experiment.mute_feature_path(VERSION), np.zeros((149, 768), dtype=np.float32))
    experiment.config_path.write_text(json.dumps(tiny_config_json(learning_rate), indent=4, sort_keys=True))
    experiment.write_filelist(VERSION, True, 0, seed=0)
    return experiment


def tiny_discriminator() -> torch.nn.Module:
    """A stand-in for MultiPeriodDiscriminator with the same outputs but a few thousand weights
    (the real one has 71 M parameters: far too slow and its checkpoints ~0.9 GB for CPU tests)."""
    import torch
    from torch import nn

    from infer_pack.commons import apply_weight_norm

    class TinyPeriod(nn.Module):
        def __init__(self, period: int) -> None:
            super().__init__()
            self.period = period
            self.convs = nn.ModuleList(
                [apply_weight_norm(nn.Conv2d(1, 4, (5, 1), (3, 1), padding=(2, 0))),
                 apply_weight_norm(nn.Conv2d(4, 8, (5, 1), (3, 1), padding=(2, 0)))]
            )  # fmt: skip
            self.conv_post = apply_weight_norm(nn.Conv2d(8, 1, (3, 1), 1, padding=(1, 0)))

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
            b, c, t = x.shape  # [B, 1, T]
            if t % self.period:
                x = nn.functional.pad(x, (0, self.period - t % self.period), "reflect")
            x = x.view(b, c, -1, self.period)  # [B, 1, T/p, p]
            fmap = []
            for conv in self.convs:
                x = nn.functional.leaky_relu(conv(x), 0.1)
                fmap.append(x)
            x = self.conv_post(x)
            fmap.append(x)
            return torch.flatten(x, 1, -1), fmap

    class TinyMultiPeriod(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.discriminators = nn.ModuleList([TinyPeriod(p) for p in (1, 2, 3)])

        def forward(self, y: torch.Tensor, y_hat: torch.Tensor):  # type: ignore[no-untyped-def]
            outs: tuple[list, list, list, list] = ([], [], [], [])
            for d in self.discriminators:
                real, fmap_r = d(y)
                fake, fmap_g = d(y_hat)
                for bucket, value in zip(outs, (real, fake, fmap_r, fmap_g)):
                    bucket.append(value)
            return outs

    return TinyMultiPeriod()


def tiny_networks(experiment: Experiment) -> tuple[torch.nn.Module, torch.nn.Module]:
    from infer_pack.models import Synthesizer
    from train.trainer import load_experiment_config

    config = load_experiment_config(experiment, VERSION, TAG)
    return Synthesizer.from_rvc_config(config, use_f0=True), tiny_discriminator()


def tiny_setup(experiment: Experiment) -> TrainingSetup:
    from train.trainer import TrainingSetup, load_experiment_config

    return TrainingSetup(experiment, VERSION, TAG, True, load_experiment_config(experiment, VERSION, TAG))
