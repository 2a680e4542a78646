"""Step 2b, content features: `1_16k_wavs/<name>.wav` -> `3_feature256|768/<name>.npy` (float32 [frames, dim]).

As RVC: the whole 16 kHz segment goes through the content encoder in one call (v1: layer 9 +
final projection, 256 values per 20 ms frame; v2: layer 12, 768 values), and a result holding NaN
is not saved (reported instead). Runs in this process, one segment after another, with the
encoder already loaded (it is the expensive part and uses every core through torch).

Also makes the silent example `logs/mute/3_feature256|768/mute.npy` (features of 3 s of zeros)
with the same encoder, since RVC's filelist always includes two silent examples.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import numpy as np

from configs import Version
from infer_pack.errors import AudioLoadError
from infer_pack.fileio import remove_stale_temporaries
from infer_pack.progress import CancelToken, ProgressCallback, check, report
from train.experiment import MUTE_SECONDS, Experiment, save_npy
from train.extract_f0 import ExtractResult
from train.preprocess import decode_source

if TYPE_CHECKING:
    from infer_pack.hubert import ContentEncoder

WAV_RATE = 16000


def features_for_audio(encoder: ContentEncoder, audio_16k: np.ndarray, version: Version, device: str = "cpu") -> np.ndarray:
    """Content features float32 [frames, dim] of one mono 16 kHz clip [T]."""
    import torch

    wave = torch.from_numpy(np.ascontiguousarray(audio_16k, dtype=np.float32)).view(1, -1).to(device)  # [1, T]
    with torch.inference_mode():
        features = encoder.extract(wave, version)  # [1, frames, dim]
    return features.squeeze(0).float().cpu().numpy()


def ensure_mute_features(experiment: Experiment, encoder: ContentEncoder, version: Version, device: str = "cpu") -> bool:
    """Write `logs/mute/3_feature*/mute.npy` from 3 s of silence if absent. True when written."""
    path = experiment.mute_feature_path(version)
    if path.exists():
        return False
    features = features_for_audio(encoder, np.zeros(MUTE_SECONDS * WAV_RATE, dtype=np.float32), version, device)
    save_npy(path, features.astype(np.float32))
    return True


def extract_features(
    experiment: Experiment,
    version: Version,
    encoder: ContentEncoder | Callable[[], ContentEncoder],
    *,
    device: str = "cpu",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> ExtractResult:
    """Features for every segment of `1_16k_wavs` that lacks them. CancelledError keeps what is finished.

    `encoder` may be a function returning it: it is then called only when there is work to do.
    """
    started = time.perf_counter()
    out_dir = experiment.feature_dir(version)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)  # left by a killed run
    names = experiment.wavs16k_names()
    todo = [name for name in names if not experiment.feature_path(name, version).exists()]
    model: ContentEncoder | None = None
    if todo or not experiment.mute_feature_path(version).exists():
        # An object with `extract` (the encoder, or a stand-in) or a function that loads one.
        loader = cast("Callable[[], ContentEncoder]", encoder)
        model = cast("ContentEncoder", encoder) if hasattr(encoder, "extract") else loader()
        ensure_mute_features(experiment, model, version, device)
    total = len(todo)
    done = 0
    failed: list[tuple[str, str]] = []
    report(progress, 0, total, f"features ({version}): {total} segment(s) to do, {len(names) - total} already done")
    for count, name in enumerate(todo, start=1):
        check(cancel)
        try:
            audio, _ = decode_source(experiment.wav16k_path(name), WAV_RATE)  # [T] float32
            assert model is not None  # loaded above since `todo` is not empty
            features = features_for_audio(model, audio, version, device)  # [frames, dim]
            if not np.all(np.isfinite(features)):
                failed.append((name, "the encoder returned NaN/Inf (try float32 or another device)"))
            else:
                save_npy(experiment.feature_path(name, version), features.astype(np.float32, copy=False))
                done += 1
        except AudioLoadError as exc:
            failed.append((name, exc.reason))
        except (RuntimeError, ValueError, OSError) as exc:
            failed.append((name, f"{type(exc).__name__}: {exc}"))
        report(progress, count, total, f"features {name}" + (f": FAILED ({failed[-1][1]})" if failed and failed[-1][0] == name else ""))
    return ExtractResult("features", len(names), done, len(names) - total, failed, [], time.perf_counter() - started)
