"""Synthetic test signals with a known f0 and the usual pitch metrics (used by tests and bench)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000
HOP = 160


@dataclass(frozen=True)
class PitchSignal:
    audio: np.ndarray  # float32 [samples] at 16 kHz
    f0_true: np.ndarray  # float64 [frames], 0 where silent
    scored: np.ndarray  # bool [frames]; False on frames next to an onset/offset (ambiguous)


def synthetic_pitch_signal(
    duration_s: float = 4.0,
    *,
    snr_db: float | None = None,
    base_hz: float = 150.0,
    vibrato_depth: float = 0.02,
    n_harmonics: int = 10,
    seed: int = 0,
) -> PitchSignal:
    """Notes with harmonics, vibrato and glides separated by silences, plus white noise at `snr_db`.

    Each note lasts 0.4-0.9 s with a pitch between `base_hz` / 1.5 and `base_hz` * 2.5 and is
    followed by 0.1-0.3 s of silence. Frames within 30 ms of a note boundary are not scored.
    """
    rng = np.random.default_rng(seed)
    n = int(duration_s * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    f0_samples = np.zeros(n)
    position = int(0.2 * SAMPLE_RATE)
    while position < n:
        length = int(rng.uniform(0.4, 0.9) * SAMPLE_RATE)
        end = min(n, position + length)
        start_hz = base_hz * rng.uniform(1 / 1.5, 2.5)
        end_hz = start_hz * 2 ** (rng.uniform(-3, 3) / 12)  # glide up to 3 semitones
        progress = np.linspace(0.0, 1.0, end - position)
        rate = rng.uniform(4.5, 6.5)
        vibrato = 1.0 + vibrato_depth * np.sin(2 * np.pi * rate * t[position:end])
        f0_samples[position:end] = start_hz * (end_hz / start_hz) ** progress * vibrato
        position = end + int(rng.uniform(0.1, 0.3) * SAMPLE_RATE)
    voiced = f0_samples > 0
    phase = 2 * np.pi * np.cumsum(f0_samples) / SAMPLE_RATE
    tone = np.zeros(n)
    for k in range(1, n_harmonics + 1):
        partial = np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k
        partial[f0_samples * k >= 0.45 * SAMPLE_RATE] = 0.0  # no aliasing
        tone += partial
    # 10 ms raised-cosine fades at each note edge avoid clicks that confuse voicing.
    edges = np.diff(voiced.astype(np.int8), prepend=0, append=0)
    envelope = voiced.astype(np.float64)
    fade = int(0.01 * SAMPLE_RATE)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, fade))
    for onset in np.flatnonzero(edges == 1):
        envelope[onset : onset + fade] *= ramp[: min(fade, n - onset)]
    for offset in (int(i) for i in np.flatnonzero(edges == -1)):
        envelope[max(0, offset - fade) : offset] *= ramp[::-1][fade - min(fade, offset) :]
    tone *= envelope
    tone *= 0.3 / max(np.abs(tone).max(), 1e-9)
    audio = tone
    if snr_db is not None:
        signal_rms = np.sqrt(np.mean(tone[voiced] ** 2))
        noise_rms = signal_rms / 10 ** (snr_db / 20)
        audio = tone + noise_rms * rng.standard_normal(n)
    frames = n // HOP + 1
    centres = np.minimum(np.arange(frames) * HOP, n - 1)
    f0_true = f0_samples[centres]
    guard = int(0.03 * SAMPLE_RATE)
    boundary = np.zeros(n + 1, dtype=np.int64)
    for edge in (int(i) for i in np.flatnonzero(edges != 0)):
        boundary[max(0, edge - guard)] += 1
        boundary[min(n, edge + guard)] -= 1
    near_edge = np.cumsum(boundary)[:n] > 0
    scored = ~near_edge[centres]
    return PitchSignal(audio=audio.astype(np.float32), f0_true=f0_true, scored=scored)


def raw_pitch_accuracy(
    f0_est: np.ndarray, f0_true: np.ndarray, scored: np.ndarray | None = None, cents: float = 50.0
) -> float:
    """Share of truly voiced frames whose estimate is voiced and within `cents` of the truth."""
    mask = f0_true > 0 if scored is None else (f0_true > 0) & scored
    if not mask.any():
        return float("nan")
    est, ref = f0_est[mask], f0_true[mask]
    ok = est > 0
    error = np.full(est.shape, np.inf)
    error[ok] = np.abs(1200.0 * np.log2(est[ok] / ref[ok]))
    return float(np.mean(error <= cents))


def voicing_error(f0_est: np.ndarray, f0_true: np.ndarray, scored: np.ndarray | None = None) -> float:
    """Share of scored frames whose voiced/unvoiced decision differs from the truth."""
    mask = np.ones(f0_true.shape, dtype=bool) if scored is None else scored
    return float(np.mean((f0_est[mask] > 0) != (f0_true[mask] > 0)))
