"""Salience [T, 360] -> cents -> Hz, exactly as RVC's RMVPE decodes it (numpy)."""

from __future__ import annotations

import numpy as np

N_BINS = 360
CENTS_PER_BIN = 20.0
# Bin 0 is 1997.38 cents above 10 Hz (31.7 Hz); bin 359 is about 2005.5 Hz.
CENTS_OFFSET = 1997.3794084376191
WINDOW_RADIUS = 4  # the local average uses the argmax bin and 4 neighbours on each side
RVC_THRESHOLD = 0.03


def cents_mapping() -> np.ndarray:
    """Cents of each bin, padded with 4 zeros at each end: float64 [368]."""
    table = CENTS_PER_BIN * np.arange(N_BINS) + CENTS_OFFSET
    return np.pad(table, (WINDOW_RADIUS, WINDOW_RADIUS))


def to_local_average_cents(salience: np.ndarray, threshold: float = RVC_THRESHOLD) -> np.ndarray:
    """Salience-weighted mean cents over the 9 bins around the peak; 0 where the peak <= threshold.

    The windows stay float32 (so the weight sum is a float32 sum) and the numerator is float64,
    which reproduces RVC's arithmetic bit for bit.
    """
    salience = np.asarray(salience)  # [T, 360]
    frames = salience.shape[0]
    center = np.argmax(salience, axis=1) + WINDOW_RADIUS  # index into the padded rows
    padded = np.pad(salience, ((0, 0), (WINDOW_RADIUS, WINDOW_RADIUS)))  # [T, 368]
    columns = center[:, None] + np.arange(-WINDOW_RADIUS, WINDOW_RADIUS + 1)[None, :]  # [T, 9]
    windows = padded[np.arange(frames)[:, None], columns]  # [T, 9], salience dtype
    cents_windows = cents_mapping()[columns]  # [T, 9] float64
    weighted = np.sum(windows * cents_windows, axis=1)
    total = np.sum(windows, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cents = weighted / total
    peak = np.max(padded, axis=1)
    cents[peak <= threshold] = 0.0
    return cents


def cents_to_hz(cents: np.ndarray) -> np.ndarray:
    """10 * 2^(cents / 1200), with 0 cents (unvoiced) mapped to 0 Hz."""
    f0 = 10.0 * 2.0 ** (np.asarray(cents, dtype=np.float64) / 1200.0)
    f0[f0 == 10.0] = 0.0
    return f0


def decode_salience(salience: np.ndarray, threshold: float = RVC_THRESHOLD) -> np.ndarray:
    """f0 in Hz, float64 [T]."""
    return cents_to_hz(to_local_average_cents(salience, threshold))
