"""Pitch (f0) estimation on 16 kHz audio, one value per 10 ms frame, 0 = unvoiced.

`estimate_f0(audio_16k, method)` dispatches to the methods in `F0_METHODS`:
* "pm": Praat autocorrelation (parselmouth), fast, RVC's settings;
* "harvest" / "dio": WORLD (pyworld) + stonemask;
* "rmvpe": RVC's RMVPE network (needs rmvpe.pt);
* "swift": the swift-f0 ONNX model shipped in its package (offline, no download).

Frame grid: frame k is centred at k * 10 ms; a signal of N samples gives N // 160 + 1 frames unless
`n_frames` asks for another count (tracks are then padded with 0 or cut, per method as RVC does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np

from infer_pack.f0.coarse import (
    COARSE_F0_MAX_HZ,
    COARSE_F0_MIN_HZ,
    f0_to_coarse,
    hz_to_mel,
    shift_f0,
)
from infer_pack.f0.filters import (
    PITCH_GAP_MODES,
    PitchGaps,
    apply_f0_file,
    apply_f0_override,
    fill_pitch_gaps,
    fit_to_frames,
    interpolate_unvoiced,
    load_f0_override,
    median_filter_f0,
)
from infer_pack.progress import CancelToken, ProgressCallback, check, report

if TYPE_CHECKING:
    from infer_pack.cache import ModelCache

SAMPLE_RATE = 16000
HOP = 160


@dataclass(frozen=True)
class F0Method:
    name: str
    description: str
    needs_model: bool  # True when a weights file must be present (rmvpe.pt)
    neural: bool  # runs a network (benefits from a GPU, first call loads weights)


F0_METHODS: Mapping[str, F0Method] = MappingProxyType(
    {
        "pm": F0Method("pm", "Praat autocorrelation: fast, fine for clean speech", False, False),
        "harvest": F0Method("harvest", "WORLD harvest: slow, robust low voices", False, False),
        "dio": F0Method("dio", "WORLD dio: fast, rougher than harvest", False, False),
        "rmvpe": F0Method("rmvpe", "RMVPE network: best for singing and noisy input (needs rmvpe.pt)", True, True),
        "swift": F0Method("swift", "SwiftF0 ONNX network: fast neural estimator, works offline", False, True),
    }
)


def frame_count(n_samples: int) -> int:
    """Frames on the 10 ms grid for `n_samples` at 16 kHz (centred frames, like STFT center=True)."""
    return n_samples // HOP + 1


def estimate_f0(
    audio_16k: np.ndarray,
    method: str,
    *,
    n_frames: int | None = None,
    f0_min: float = 50.0,
    f0_max: float = 1100.0,
    rmvpe_path: str | Path | None = None,
    cache: ModelCache | None = None,
    device: str = "cpu",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> np.ndarray:
    """f0 in Hz, float64 [n_frames] (default `len // 160 + 1`), 0 where unvoiced.

    `f0_min`/`f0_max` bound the search of pm, harvest, dio and swift. rmvpe ignores them, as RVC's
    offline pipeline does. `rmvpe_path`, `cache` and `device` concern the neural methods only.
    `cancel` is checked before the work (and between pieces of long rmvpe runs); `progress` gets
    (frames done, frames in total, message).
    """
    check(cancel)
    if method not in F0_METHODS:
        raise ValueError(f"unknown f0 method {method!r}; choose one of {', '.join(F0_METHODS)}")
    if not 0 < f0_min < f0_max:
        raise ValueError(f"need 0 < f0_min < f0_max, got {f0_min} and {f0_max}")
    audio = np.asarray(audio_16k)
    if audio.ndim != 1:
        raise ValueError(f"audio_16k must be mono [samples], got shape {audio.shape}")
    # float64 stays float64: RVC's pipeline hands its high-passed (float64) signal to pm/harvest/dio.
    audio = np.nan_to_num(
        audio.astype(np.float64 if audio.dtype == np.float64 else np.float32, copy=False),
        nan=0.0,
        posinf=0.0,
        neginf=0.0,
    )
    frames = frame_count(audio.size) if n_frames is None else int(n_frames)
    if frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    estimator = _estimator(method, rmvpe_path=rmvpe_path, cache=cache, device=device, progress=progress, cancel=cancel)
    f0 = estimator(audio, frames, float(f0_min), float(f0_max))
    report(progress, frames, frames, f"pitch ({method})")
    f0 = np.nan_to_num(np.asarray(f0, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    f0[f0 < 0] = 0.0
    return f0


Estimator = Callable[[np.ndarray, int, float, float], np.ndarray]


def _estimator(
    method: str,
    *,
    rmvpe_path: str | Path | None,
    cache: ModelCache | None,
    device: str,
    progress: ProgressCallback | None,
    cancel: CancelToken | None,
) -> Estimator:
    if method == "pm":
        from infer_pack.f0.pm import estimate_pm

        return estimate_pm
    if method == "harvest":
        from infer_pack.f0.world import estimate_harvest

        return estimate_harvest
    if method == "dio":
        from infer_pack.f0.world import estimate_dio

        return estimate_dio
    if method == "rmvpe":
        from infer_pack.f0.rmvpe import estimate_rmvpe

        def run_rmvpe(audio: np.ndarray, frames: int, f0_min: float, f0_max: float) -> np.ndarray:
            return estimate_rmvpe(
                audio, frames, rmvpe_path=rmvpe_path, cache=cache, device=device, progress=progress, cancel=cancel
            )

        return run_rmvpe
    from infer_pack.f0.swift import estimate_swift

    def run_swift(audio: np.ndarray, frames: int, f0_min: float, f0_max: float) -> np.ndarray:
        return estimate_swift(audio, frames, f0_min, f0_max, cache=cache)

    return run_swift


__all__ = [
    "COARSE_F0_MAX_HZ",
    "COARSE_F0_MIN_HZ",
    "F0_METHODS",
    "HOP",
    "PITCH_GAP_MODES",
    "SAMPLE_RATE",
    "F0Method",
    "PitchGaps",
    "apply_f0_file",
    "apply_f0_override",
    "estimate_f0",
    "fill_pitch_gaps",
    "f0_to_coarse",
    "fit_to_frames",
    "frame_count",
    "hz_to_mel",
    "interpolate_unvoiced",
    "load_f0_override",
    "median_filter_f0",
    "shift_f0",
]
