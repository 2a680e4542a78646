"""Training-set preprocessing (step 2a): ours vs RVC's recipe run in one process.

Data: synthetic speech-like recordings (harmonic syllables with pauses, 44.1 kHz PCM 16-bit wav),
10 minutes in 30 s files (quick: 1 minute in 15 s files), processed for a 40 kHz model.

Baseline: RVC's preprocess steps re-implemented here in a single process: decode, `lfilter`
high-pass, RVC's frame-by-frame slicer with its strided RMS, 3.7 s pieces, normalisation, float64
soxr "HQ" resampling (librosa's default) and scipy wav writes. The decoder is the same for both
(RVC calls the FFmpeg program, which this machine may not have), so the figures compare the rest.
Ours: `train.preprocess.preprocess_folder` with one worker process per core.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import BenchRow, interleaved

SOURCE_RATE = 44100
TARGET_RATE = 40000


def synthetic_speech(duration_s: float, sample_rate: int, seed: int) -> np.ndarray:
    """Syllables of a harmonic voice (0.15-0.4 s) in phrases, separated by 0.2-1.2 s pauses at -60 dB."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * sample_rate)
    out = (0.001 * rng.standard_normal(n)).astype(np.float64)
    position = int(0.3 * sample_rate)
    f0 = 120.0 + 80.0 * rng.random()
    while position < n:
        phrase_end = min(n, position + int(rng.uniform(1.0, 4.0) * sample_rate))
        while position < phrase_end:
            length = int(rng.uniform(0.15, 0.4) * sample_rate)
            t = np.arange(min(length, n - position)) / sample_rate
            pitch = f0 * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(3, 6) * t))
            phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
            voice = sum(np.sin(k * phase) / k for k in range(1, 10))
            envelope = np.sin(np.pi * np.linspace(0, 1, t.size)) ** 0.7
            out[position : position + t.size] += 0.25 * voice * envelope
            position += t.size
        position += int(rng.uniform(0.2, 1.2) * sample_rate)
    return np.clip(out, -1, 1).astype(np.float32)


def make_dataset(folder: Path, total_s: float, file_s: float) -> list[Path]:
    from infer_pack.audio import write_wav

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(round(total_s / file_s)):
        path = folder / f"take_{i:03d}.wav"
        write_wav(path, synthetic_speech(file_s, SOURCE_RATE, seed=i), SOURCE_RATE, "PCM_16")
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------
# Baseline: RVC's single-process recipe
# ---------------------------------------------------------------------------------------------
def _rvc_rms(y: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    padded = np.pad(y, (frame_length // 2, frame_length // 2), mode="constant")
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame_length)[::hop_length]  # [F, win]
    return np.sqrt(np.mean(np.abs(frames) ** 2, axis=-1))


def _rvc_slice(audio: np.ndarray, sr: int) -> list[np.ndarray]:
    """RVC's slicer loop, one frame at a time (threshold -42 dB, 1500/400/15/500 ms)."""
    threshold = 10 ** (-42 / 20.0)
    hop = round(sr * 15 / 1000)
    min_interval_samples = sr * 400 / 1000
    win = min(round(min_interval_samples), 4 * hop)
    min_length = round(sr * 1500 / 1000 / hop)
    min_interval = round(min_interval_samples / hop)
    kept = round(sr * 500 / 1000 / hop)
    if audio.shape[0] <= min_length:
        return [audio]
    rms = _rvc_rms(audio, win, hop)
    tags: list[tuple[int, int]] = []
    silence_start = None
    clip_start = 0
    for i, value in enumerate(rms):
        if value < threshold:
            if silence_start is None:
                silence_start = i
            continue
        if silence_start is None:
            continue
        leading = silence_start == 0 and i > kept
        middle = i - silence_start >= min_interval and i - clip_start >= min_length
        if not leading and not middle:
            silence_start = None
            continue
        if i - silence_start <= kept:
            pos = rms[silence_start : i + 1].argmin() + silence_start
            tags.append((0, pos) if silence_start == 0 else (pos, pos))
            clip_start = pos
        elif i - silence_start <= kept * 2:
            pos = rms[i - kept : silence_start + kept + 1].argmin() + i - kept
            pos_l = rms[silence_start : silence_start + kept + 1].argmin() + silence_start
            pos_r = rms[i - kept : i + 1].argmin() + i - kept
            if silence_start == 0:
                tags.append((0, pos_r))
                clip_start = pos_r
            else:
                tags.append((min(pos_l, pos), max(pos_r, pos)))
                clip_start = max(pos_r, pos)
        else:
            pos_l = rms[silence_start : silence_start + kept + 1].argmin() + silence_start
            pos_r = rms[i - kept : i + 1].argmin() + i - kept
            tags.append((0, pos_r) if silence_start == 0 else (pos_l, pos_r))
            clip_start = pos_r
        silence_start = None
    total = rms.shape[0]
    if silence_start is not None and total - silence_start >= min_interval:
        end = min(total, silence_start + kept)
        pos = rms[silence_start : end + 1].argmin() + silence_start
        tags.append((pos, total + 1))
    if not tags:
        return [audio]
    chunks = []
    if tags[0][0] > 0:
        chunks.append(audio[: tags[0][0] * hop])
    for (_, begin), (end, _) in itertools.pairwise(tags):
        chunks.append(audio[begin * hop : min(audio.shape[0], end * hop)])
    if tags[-1][1] < total:
        chunks.append(audio[tags[-1][1] * hop : min(audio.shape[0], total * hop)])
    return chunks


def rvc_single_process(source_dir: Path, exp_dir: Path, sr: int = TARGET_RATE) -> int:
    """RVC's preprocess recipe, one file after another. Returns the number of pieces written."""
    import soxr
    from scipy import signal
    from scipy.io import wavfile

    from infer_pack.audio import load_audio

    gt_dir, k16_dir = exp_dir / "0_gt_wavs", exp_dir / "1_16k_wavs"
    gt_dir.mkdir(parents=True, exist_ok=True)
    k16_dir.mkdir(parents=True, exist_ok=True)
    b, a = signal.butter(N=5, Wn=48, btype="high", fs=sr)
    written = 0

    def norm_write(piece: np.ndarray, idx0: int, idx1: int) -> None:
        nonlocal written
        peak = np.abs(piece).max()
        if peak > 2.5:
            return
        piece = (piece / peak * (0.9 * 0.75)) + (1 - 0.75) * piece
        wavfile.write(gt_dir / f"{idx0}_{idx1}.wav", sr, piece.astype(np.float32))
        # librosa.resample(piece, orig_sr=sr, target_sr=16000): soxr "HQ", then zero-padded to ceil(n * 16000 / sr)
        k16 = soxr.resample(piece, sr, 16000, quality="HQ")
        k16 = np.pad(k16, (0, max(0, math.ceil(piece.size * 16000 / sr) - k16.size)))
        wavfile.write(k16_dir / f"{idx0}_{idx1}.wav", 16000, k16.astype(np.float32))
        written += 1

    for idx0, name in enumerate(sorted(os.listdir(source_dir))):
        audio = signal.lfilter(b, a, load_audio(source_dir / name, sr))
        idx1 = 0
        for chunk in _rvc_slice(audio, sr):
            i = 0
            while True:
                start = int(sr * (3.7 - 0.3) * i)
                i += 1
                if len(chunk[start:]) > 4.0 * sr:
                    norm_write(chunk[start : start + int(3.7 * sr)], idx0, idx1)
                    idx1 += 1
                else:
                    piece = chunk[start:]
                    idx1 += 1
                    break
            norm_write(piece, idx0, idx1)
    return written


# ---------------------------------------------------------------------------------------------
def _cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished child processes."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def run(quick: bool, device: str = "cpu") -> list[BenchRow]:
    from train.experiment import Experiment
    from train.preprocess import preprocess_folder

    total_s, file_s = (60.0, 15.0) if quick else (600.0, 30.0)
    workers = max(1, min(2, os.cpu_count() or 1))
    work = Path(tempfile.mkdtemp(prefix="bench_preprocess_"))
    try:
        source = work / "source"
        make_dataset(source, total_s, file_s)
        counter = {"ours": 0, "base": 0}
        pieces = {"ours": 0, "base": 0}
        cpu: dict[str, list[float]] = {"ours": [], "base": []}

        def ours() -> None:
            counter["ours"] += 1
            exp = Experiment(work / "logs" / f"ours{counter['ours']}")
            before = _cpu_seconds()
            result = preprocess_folder(source, exp, "40k", n_workers=workers)
            cpu["ours"].append(_cpu_seconds() - before)
            pieces["ours"] = result.segments_written
            shutil.rmtree(exp.root)

        def baseline() -> None:
            counter["base"] += 1
            target = work / "logs" / f"base{counter['base']}"
            before = _cpu_seconds()
            pieces["base"] = rvc_single_process(source, target)
            cpu["base"].append(_cpu_seconds() - before)
            shutil.rmtree(target)

        # The first run in this process also pays for importing scipy and the decoders.
        cold_start = time.perf_counter()
        ours()
        cold_s = time.perf_counter() - cold_start
        cpu["ours"].clear()
        ours_s, base_s = interleaved(ours, baseline, repeats=3, warmup=True)
        assert base_s is not None
        ours_cpu, base_cpu = _median(cpu["ours"]), _median(cpu["base"])
        load = os.getloadavg()[0]
        label = f"{total_s / 60:g} min audio, {int(total_s / file_s)} files"
        return [
            BenchRow(
                area="preprocess",
                name=f"step 2a, {label}",
                unit="s",
                ours=ours_s,
                baseline=base_s,
                notes=f"{workers} worker processes vs RVC recipe in 1 process; speed-up {base_s / ours_s:.2f}x; "
                f"pieces ours {pieces['ours']} / RVC {pieces['base']}; load average {load:.1f}",
                extra={"first_run_in_fresh_process_s": cold_s, "audio_s": total_s, "workers": workers, "load_average": load},
            ),
            BenchRow(
                area="preprocess",
                name=f"step 2a CPU time, {label}",
                unit="CPU s",
                ours=ours_cpu,
                baseline=base_cpu,
                notes=f"all processes, user + system: ours needs {base_cpu / ours_cpu:.2f}x less work "
                "(less sensitive than wall time to other load on the machine)",
            ),
            BenchRow(
                area="preprocess",
                name=f"step 2a throughput, {label}",
                unit="x realtime",
                ours=total_s / ours_s,
                baseline=total_s / base_s,
                lower_is_better=False,
            ),
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    for row in run(quick=True):
        print(row.to_dict())
