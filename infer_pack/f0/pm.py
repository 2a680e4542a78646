"""Praat autocorrelation pitch ("pm") through parselmouth, with RVC's settings."""

from __future__ import annotations

import numpy as np

from infer_pack.f0.filters import fit_to_frames

SAMPLE_RATE = 16000
TIME_STEP_S = 0.01
VOICING_THRESHOLD = 0.6


def estimate_pm(audio_16k: np.ndarray, n_frames: int, f0_min: float, f0_max: float) -> np.ndarray:
    """f0 [n_frames] float64 Hz, 0 = unvoiced.

    Praat's frames are centred in the signal (its first frame sits about half an analysis window
    in), so RVC pads the shorter track with zeros split between both ends; so do we.
    """
    import parselmouth

    # Praat needs at least 3 periods of the floor frequency in the signal.
    if audio_16k.size < int(np.ceil(3.0 * SAMPLE_RATE / f0_min)) + 1:
        return np.zeros(n_frames, dtype=np.float64)
    sound = parselmouth.Sound(audio_16k.astype(np.float64), SAMPLE_RATE)
    pitch = sound.to_pitch_ac(
        time_step=TIME_STEP_S,
        voicing_threshold=VOICING_THRESHOLD,
        pitch_floor=f0_min,
        pitch_ceiling=f0_max,
    )
    f0 = np.asarray(pitch.selected_array["frequency"], dtype=np.float64)
    return fit_to_frames(f0, n_frames, centered=True)
