"""Pitch estimators: seconds per 10 s of 16 kHz audio, and accuracy on synthetic notes with a known f0.

Speed rows compare our `estimate_f0` with the library call exactly as RVC makes it (pm, harvest,
dio: the same libraries, so the ratio shows our overhead) and, for rmvpe, with the network as RVC
runs it (BatchNorm kept, the whole signal in one pass). RMVPE speed does not depend on the weight
values, so the random-weight reference model stands in when no rmvpe.pt is found; its accuracy is
only reported with a real rmvpe.pt (`$RVC_RMVPE_PATH` or ./rmvpe.pt).

Accuracy rows: raw pitch accuracy (share of voiced frames within 50 cents, higher is better) and
voicing error (share of frames with the wrong voiced/unvoiced decision) at several SNRs.

    python -m bench.bench_f0 [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import BenchRow, interleaved

SAMPLE_RATE = 16000
SNRS_DB: tuple[float | None, ...] = (None, 20.0, 10.0, 0.0)


def _find_rmvpe() -> tuple[Path | None, bool]:
    """(path, is_real_model): $RVC_RMVPE_PATH, ./rmvpe.pt, else the reference random-weight file."""
    for candidate in (os.environ.get("RVC_RMVPE_PATH"), "rmvpe.pt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate), True
    root = Path(__file__).resolve().parents[1]
    reference = Path(os.environ.get("RVC_REFERENCE_DIR", root.parent / "shared" / "reference"))
    random_weights = reference / "rmvpe" / "ref_rmvpe_random.pt"
    return (random_weights, False) if random_weights.is_file() else (None, False)


def _rvc_style(method: str) -> Callable[[np.ndarray], np.ndarray]:
    """The library call as RVC's pipeline makes it (no post-processing), for the speed baseline."""

    def pm(audio: np.ndarray) -> np.ndarray:
        import parselmouth

        return (
            parselmouth.Sound(audio.astype(np.float64), SAMPLE_RATE)
            .to_pitch_ac(time_step=0.01, voicing_threshold=0.6, pitch_floor=50, pitch_ceiling=1100)
            .selected_array["frequency"]
        )

    def world(audio: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            import pyworld
        x = audio.astype(np.double)
        track = pyworld.harvest if method == "harvest" else pyworld.dio
        f0, t = track(x, fs=SAMPLE_RATE, f0_ceil=1100, f0_floor=50, frame_period=10)
        return pyworld.stonemask(x, f0, t, SAMPLE_RATE)

    return pm if method == "pm" else world


def _rvc_style_rmvpe(path: Path, device: str) -> Callable[[np.ndarray], np.ndarray]:
    """RVC's way: the network with its BatchNorm layers, the whole signal in one pass."""
    import torch

    from infer_pack.f0.rmvpe import RMVPE, build_model
    from infer_pack.f0.rmvpe_decode import decode_salience
    from infer_pack.torchio import safe_torch_load

    model = build_model()
    model.load_state_dict(safe_torch_load(path))
    runner = RMVPE(model.eval().float().to(device), device)

    def run(audio: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return decode_salience(runner._to_numpy(runner.mel_to_salience(runner.log_mel(audio))))

    return run


def _speed_rows(quick: bool, device: str, rmvpe: Path | None) -> list[BenchRow]:
    from infer_pack.cache import ModelCache
    from infer_pack.f0 import estimate_f0
    from infer_pack.f0.evaluation import synthetic_pitch_signal

    audio = synthetic_pitch_signal(10.0, snr_db=20.0, seed=11).audio
    cache = ModelCache()
    repeats = 1 if quick else 3
    rows: list[BenchRow] = []
    methods = ["pm", "dio", "harvest", "swift"] + (["rmvpe"] if rmvpe is not None else [])
    for method in methods:
        repeats_here = 1 if quick and method == "harvest" else repeats

        def ours(method: str = method) -> Any:
            return estimate_f0(audio, method, rmvpe_path=rmvpe, cache=cache, device=device)

        baseline: Callable[[], Any] | None
        if method in ("pm", "dio", "harvest"):
            call = _rvc_style(method)
            baseline = lambda call=call: call(audio)
            note = "baseline: the same library call as RVC"
        elif method == "rmvpe":
            call = _rvc_style_rmvpe(rmvpe, device)  # type: ignore[arg-type]
            baseline = lambda call=call: call(audio)
            note = "baseline: unfused network, one pass (RVC)"
        else:
            baseline = None
            note = "swift-f0 ONNX on CPU"
        ours_s, base_s = interleaved(ours, baseline, repeats=repeats_here, warmup=not (quick and method == "harvest"))
        # CPU seconds of one call: on a loaded machine wall time is inflated, CPU time much less so
        # (the single-threaded methods' CPU time is close to their wall time on an idle machine).
        started = time.process_time()
        ours()
        cpu_s = time.process_time() - started
        note += f"; cpu {cpu_s:.3f} s"
        rows.append(
            BenchRow("f0", f"{method} 10 s", "s", ours_s, base_s, True, note, {"device": device, "cpu_s": cpu_s})
        )
    return rows


def _accuracy_rows(quick: bool, device: str, rmvpe: Path | None, rmvpe_is_real: bool) -> list[BenchRow]:
    from infer_pack.cache import ModelCache
    from infer_pack.f0 import estimate_f0
    from infer_pack.f0.evaluation import (
        raw_pitch_accuracy,
        synthetic_pitch_signal,
        voicing_error,
    )

    seeds = (1,) if quick else (1, 2, 3)
    duration = 4.0 if quick else 10.0
    methods = ["pm", "dio", "harvest", "swift"] + (["rmvpe"] if rmvpe is not None and rmvpe_is_real else [])
    cache = ModelCache()
    rows: list[BenchRow] = []
    for snr in SNRS_DB:
        signals = [synthetic_pitch_signal(duration, snr_db=snr, seed=seed) for seed in seeds]
        label = "clean" if snr is None else f"{snr:g} dB SNR"
        for method in methods:
            rpa, verr = [], []
            for signal in signals:
                f0 = estimate_f0(signal.audio, method, rmvpe_path=rmvpe, cache=cache, device=device)
                rpa.append(raw_pitch_accuracy(f0, signal.f0_true, signal.scored))
                verr.append(voicing_error(f0, signal.f0_true, signal.scored))
            extra = {"snr_db": snr, "seeds": list(seeds), "seconds_each": duration}
            rows.append(BenchRow("f0", f"{method} RPA50 {label}", "share", float(np.mean(rpa)), None, False, "", extra))
            rows.append(
                BenchRow("f0", f"{method} voicing error {label}", "share", float(np.mean(verr)), None, True, "", extra)
            )
    return rows


def run(quick: bool, device: str) -> list[BenchRow]:
    rmvpe, rmvpe_is_real = _find_rmvpe()
    rows = _speed_rows(quick, device, rmvpe)
    for row in rows:
        if row.name.startswith("rmvpe") and not rmvpe_is_real:
            row.notes += "; random weights (speed only)"
    rows += _accuracy_rows(quick, device, rmvpe, rmvpe_is_real)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="pitch estimator speed and accuracy")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    for row in run(args.quick, args.device):
        base = "" if row.baseline is None else f"  baseline {row.baseline:.4g}  ratio {row.ratio:.3g}"
        print(f"{row.name:<34} {row.ours:10.4g} {row.unit:<6}{base}  {row.notes}")


if __name__ == "__main__":
    main()
