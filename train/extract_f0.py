"""Step 2b, pitch: `1_16k_wavs/<name>.wav` -> `2b-f0nsf/<name>.wav.npy` (Hz) and `2a_f0/<name>.wav.npy` (coarse).

Formats are RVC's: Hz as float64 [frames] per 10 ms, coarse pitch 1..255 as int64 [frames]
(`infer_pack.f0.f0_to_coarse`). Frame counts: pm is padded to `samples // 160` as RVC's training
extractor does; the other methods keep their natural `samples // 160 + 1` (the training loader cuts
features, pitch and audio to a common length anyway).

`interpolate_unvoiced=True` (default) fills unvoiced frames by linear interpolation before saving,
as current RVC does; a segment with no voiced frame at all is then skipped (and reported), also
as RVC does. `False` saves the raw track with zeros, like older RVC releases.

Resume: a segment whose two files both exist is skipped; both are written atomically (Hz first,
then coarse), so an interrupted run never leaves a half-written array behind.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from infer_pack.cache import ModelCache
from infer_pack.errors import AudioLoadError, UserInputError
from infer_pack.fileio import remove_stale_temporaries
from infer_pack.progress import CancelToken, ProgressCallback, report
from train.experiment import Experiment, save_npy
from train.preprocess import decode_source, default_workers, parallel_map

# Methods that are plain CPU code: spread over processes. Neural ones run in this process (one model).
PROCESS_PARALLEL_METHODS = frozenset({"pm", "harvest", "dio"})


@dataclass(frozen=True)
class ExtractResult:
    """Outcome of one extraction step over the experiment's segments."""

    step: str  # "f0" | "features"
    total: int  # segments found
    done: int  # written in this run
    reused: int  # already complete from an earlier run
    failed: list[tuple[str, str]] = field(default_factory=list)  # (segment, reason)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (segment, why no output is wanted)
    seconds: float = 0.0

    @property
    def n_failed(self) -> int:
        return len(self.failed)


@dataclass(frozen=True)
class _F0Task:
    name: str
    wav_path: str
    hz_path: str
    coarse_path: str
    method: str
    interpolate_unvoiced: bool
    rmvpe_path: str | None
    device: str


@dataclass(frozen=True)
class _ItemResult:
    name: str
    status: str  # "done" | "failed" | "skipped"
    reason: str = ""


def f0_for_segment(
    audio_16k: np.ndarray,
    method: str,
    *,
    interpolate_unvoiced: bool = True,
    rmvpe_path: str | Path | None = None,
    cache: ModelCache | None = None,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray] | None:
    """(f0 Hz float64 [frames], coarse int64 [frames]) of one 16 kHz segment; None when it has no voiced frame
    and unvoiced frames are to be interpolated (RVC skips such segments)."""
    from infer_pack import f0 as f0lib

    n_frames = audio_16k.size // f0lib.HOP if method == "pm" else None
    f0 = f0lib.estimate_f0(audio_16k, method, n_frames=n_frames, rmvpe_path=rmvpe_path, cache=cache, device=device)
    if interpolate_unvoiced and not np.any(f0 > 0):
        return None
    # The same helper conversion uses for its "pitch gaps" parameter, so both fill gaps alike.
    f0 = f0lib.fill_pitch_gaps(f0, "interpolate" if interpolate_unvoiced else "keep")
    return f0, f0lib.f0_to_coarse(f0)


def _f0_one(task: _F0Task, cache: ModelCache | None = None) -> _ItemResult:
    try:
        audio, _ = decode_source(task.wav_path, 16000)  # [T] float32
        result = f0_for_segment(
            audio,
            task.method,
            interpolate_unvoiced=task.interpolate_unvoiced,
            rmvpe_path=task.rmvpe_path,
            cache=cache,
            device=task.device,
        )
        if result is None:
            return _ItemResult(task.name, "skipped", "no voiced frame (silence or noise only)")
        f0_hz, coarse = result
        save_npy(Path(task.hz_path), f0_hz)
        save_npy(Path(task.coarse_path), coarse)
        return _ItemResult(task.name, "done")
    except AudioLoadError as exc:
        return _ItemResult(task.name, "failed", exc.reason)
    except Exception as exc:  # noqa: BLE001 - one bad segment must not stop the batch; it is reported by name
        return _ItemResult(task.name, "failed", f"{type(exc).__name__}: {exc}")


def extract_f0(
    experiment: Experiment,
    method: str,
    *,
    interpolate_unvoiced: bool = True,
    n_workers: int | None = None,
    rmvpe_path: str | Path | None = None,
    cache: ModelCache | None = None,
    device: str = "cpu",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> ExtractResult:
    """Pitch for every segment of `1_16k_wavs` that lacks it. CancelledError keeps what is finished."""
    from infer_pack.f0 import F0_METHODS

    if method not in F0_METHODS:
        raise UserInputError(f"unknown f0 method {method!r}; choose one of {', '.join(F0_METHODS)}")
    started = time.perf_counter()
    experiment.f0_coarse_dir.mkdir(parents=True, exist_ok=True)
    experiment.f0_hz_dir.mkdir(parents=True, exist_ok=True)
    for folder in (experiment.f0_coarse_dir, experiment.f0_hz_dir):
        remove_stale_temporaries(folder)  # left by a killed run
    names = experiment.wavs16k_names()
    todo = [
        _F0Task(
            name,
            str(experiment.wav16k_path(name)),
            str(experiment.f0_hz_path(name)),
            str(experiment.f0_coarse_path(name)),
            method,
            interpolate_unvoiced,
            None if rmvpe_path is None else str(rmvpe_path),
            device,
        )
        for name in names
        if not (experiment.f0_hz_path(name).exists() and experiment.f0_coarse_path(name).exists())
    ]
    reused = len(names) - len(todo)
    total = len(todo)
    report(progress, 0, total, f"pitch ({method}): {total} segment(s) to do, {reused} already done")
    if method in PROCESS_PARALLEL_METHODS:
        results = parallel_map(_f0_one, todo, n_workers or default_workers(), cancel)
    else:
        cache = cache or ModelCache()
        results = (_f0_one(task, cache) for task in _checked(todo, cancel))
    done, failed, skipped = 0, [], []
    for count, item in enumerate(results, start=1):
        if item.status == "done":
            done += 1
        elif item.status == "skipped":
            skipped.append((item.name, item.reason))
        else:
            failed.append((item.name, item.reason))
        report(progress, count, total, f"pitch {item.name}: {item.status}" + (f" ({item.reason})" if item.reason else ""))
    return ExtractResult("f0", len(names), done, reused, failed, skipped, time.perf_counter() - started)


def _checked(tasks: list[_F0Task], cancel: CancelToken | None) -> Iterator[_F0Task]:
    for task in tasks:
        if cancel is not None:
            cancel.check()
        yield task
