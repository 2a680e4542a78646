"""SwiftF0 (the `swift-f0` package: a small ONNX model shipped inside it, runs offline on CPU).

SwiftF0 gives one pitch and one voicing confidence per 256-sample hop (16 ms), frame k centred at
k * 16 ms. We resample that onto the 10 ms grid: the pitch is interpolated linearly in log-frequency
(the model reports a pitch for every frame, voiced or not) and a 10 ms frame is voiced when the
interpolated confidence reaches the model's calibrated 0.5.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from infer_pack.f0.filters import fit_to_frames

if TYPE_CHECKING:
    from infer_pack.cache import ModelCache

SAMPLE_RATE = 16000
GRID_HOP = 160
VOICED_CONFIDENCE = 0.5


def _detector() -> Any:
    from swift_f0 import SwiftF0

    # spin=False: the ONNX thread pool sleeps between calls instead of busy-waiting (shared machines).
    return SwiftF0(spin=False)


def get_swift(cache: ModelCache | None = None) -> Any:
    if cache is None:
        return _detector()
    return cache.get_or_load(("swift-f0",), _detector)


def estimate_swift(
    audio_16k: np.ndarray,
    n_frames: int,
    f0_min: float,
    f0_max: float,
    *,
    cache: ModelCache | None = None,
) -> np.ndarray:
    """f0 [n_frames] float64 Hz (0 = unvoiced); the range is clamped to the model's 46.9..2093.75 Hz."""
    import swift_f0

    if audio_16k.size == 0:
        return np.zeros(n_frames, dtype=np.float64)
    low = max(float(f0_min), swift_f0.FMIN)
    high = min(float(f0_max), swift_f0.FMAX)
    result = get_swift(cache).detect(np.asarray(audio_16k, dtype=np.float32), SAMPLE_RATE, fmin=low, fmax=high)
    source_times = np.asarray(result.timestamps, dtype=np.float64)  # [frames_16ms]
    grid_frames = audio_16k.size // GRID_HOP + 1
    grid_times = np.arange(grid_frames) * (GRID_HOP / SAMPLE_RATE)  # [frames_10ms]
    pitch = np.clip(np.asarray(result.pitch_hz, dtype=np.float64), swift_f0.FMIN, swift_f0.FMAX)
    log_pitch = np.interp(grid_times, source_times, np.log2(pitch))
    confidence = np.interp(grid_times, source_times, np.asarray(result.confidence, dtype=np.float64))
    f0 = np.where(confidence >= VOICED_CONFIDENCE, 2.0**log_pitch, 0.0)
    return fit_to_frames(f0, n_frames)
