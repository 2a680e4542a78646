"""A built-in speech-like test signal: what calibration and benchmarks feed a voice without a recording."""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000


def synthetic_speech(seconds: float, seed: int = 0, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Harmonic voice (160 Hz, 8 partials) with vibrato, syllable envelope and pauses, float32 mono."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 160.0 * (1.0 + 0.03 * np.sin(2 * np.pi * 5.0 * t)) * (1.0 + 0.15 * np.sin(2 * np.pi * 0.3 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 9))
    envelope = np.clip(np.sin(2 * np.pi * 1.5 * t), 0.0, None) ** 0.5
    return (0.3 * voice * envelope + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
