"""WORLD's harvest and dio (pyworld), each refined by stonemask, frame period 10 ms, as RVC runs them."""

from __future__ import annotations

import warnings
from types import ModuleType

import numpy as np

from infer_pack.f0.filters import fit_to_frames

SAMPLE_RATE = 16000
FRAME_PERIOD_MS = 10.0


def _pyworld() -> ModuleType:
    # pyworld imports the deprecated pkg_resources; its warning says nothing useful to our users.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        import pyworld
    return pyworld


def estimate_harvest(audio_16k: np.ndarray, n_frames: int, f0_min: float, f0_max: float) -> np.ndarray:
    """f0 [n_frames] float64 Hz (0 = unvoiced). Harvest is slow (about 3 s of CPU per 10 s of audio) but robust.

    RVC's optional 3-tap median filter is not applied here: see `median_filter_f0`.
    """
    pyworld = _pyworld()
    x = np.ascontiguousarray(audio_16k, dtype=np.float64)
    f0, times = pyworld.harvest(x, fs=SAMPLE_RATE, f0_ceil=f0_max, f0_floor=f0_min, frame_period=FRAME_PERIOD_MS)
    f0 = pyworld.stonemask(x, f0, times, SAMPLE_RATE)
    return fit_to_frames(f0, n_frames)


def estimate_dio(audio_16k: np.ndarray, n_frames: int, f0_min: float, f0_max: float) -> np.ndarray:
    """f0 [n_frames] float64 Hz (0 = unvoiced). Fast, less robust than harvest on noisy input."""
    pyworld = _pyworld()
    x = np.ascontiguousarray(audio_16k, dtype=np.float64)
    f0, times = pyworld.dio(x, fs=SAMPLE_RATE, f0_ceil=f0_max, f0_floor=f0_min, frame_period=FRAME_PERIOD_MS)
    f0 = pyworld.stonemask(x, f0, times, SAMPLE_RATE)
    return fit_to_frames(f0, n_frames)
