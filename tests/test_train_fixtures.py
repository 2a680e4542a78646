"""Helpers for the training tests: a tiny experiment folder written by hand, and a tiny config.

No test functions here. The experiment has RVC's layout (0_gt_wavs, 3_feature768, 2a_f0,
2b-f0nsf, mute files, filelist.txt, config.json) with a few seconds of synthetic voice, and a
config small enough that a CPU step takes a fraction of a second.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.io import wavfile

from conftest import synthetic_voice
from configs import load_config
from train.experiment import Experiment, ExperimentMetadata, save_npy

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


def prepare_experiment(logs_dir: Path, name: str = "tiny", items: int = 4, seconds: float = 1.5, learning_rate: float = 2e-3) -> Experiment:
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
