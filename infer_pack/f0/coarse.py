"""Hz -> RVC's coarse pitch (1..255) and semitone shifts, computed exactly as RVC does (float64, np.rint)."""

from __future__ import annotations

import numpy as np

COARSE_F0_MIN_HZ = 50.0
COARSE_F0_MAX_HZ = 1100.0
COARSE_BINS = 256  # embedding rows; values used are 1..255, 1 = unvoiced / below 50 Hz


def hz_to_mel(f0_hz: np.ndarray | float) -> np.ndarray:
    """The mel scale RVC uses for pitch: 1127 * ln(1 + f / 700)."""
    return 1127.0 * np.log(1.0 + np.asarray(f0_hz, dtype=np.float64) / 700.0)


def f0_to_coarse(f0_hz: np.ndarray) -> np.ndarray:
    """Coarse pitch int64 [T] in 1..255 from f0 in Hz [T] (0 = unvoiced -> 1).

    Steps (RVC's `get_f0`): mel in float64; voiced values (mel > 0) scaled so 50 Hz -> 1 and
    1100 Hz -> 255; clamp to 1..255; round half to even.
    """
    mel = hz_to_mel(f0_hz)
    mel_min = hz_to_mel(COARSE_F0_MIN_HZ)
    mel_max = hz_to_mel(COARSE_F0_MAX_HZ)
    voiced = mel > 0
    mel[voiced] = (mel[voiced] - mel_min) * 254.0 / (mel_max - mel_min) + 1.0
    mel[mel <= 1.0] = 1.0
    mel[mel > 255.0] = 255.0
    return np.rint(mel).astype(np.int64)


def shift_f0(f0_hz: np.ndarray, semitones: float) -> np.ndarray:
    """Transpose by `semitones` (RVC's `f0 * 2 ** (key / 12)`); unvoiced 0 stays 0. Returns float64."""
    return np.asarray(f0_hz, dtype=np.float64) * pow(2.0, float(semitones) / 12.0)
