"""Step 2a: turn a folder of recordings into training segments (`0_gt_wavs/`, `1_16k_wavs/`).

Per source file, as RVC's preprocess does:
1. decode to mono at the model rate (`PreprocessSettings.decoder`: "rvc", the default, gives RVC's
   ffmpeg samples; "soxr" averages the channels and resamples with soxr, see `infer_pack.audio`);
2. 48 Hz high-pass: 5th-order Butterworth applied causally (`lfilter`; RVC avoids `filtfilt`
   because a zero-phase filter rings before transients);
3. cut at silences (`train.slicer`, RVC's training defaults);
4. split each sounding part into 3.7 s pieces that overlap by 0.3 s; the last piece of a part takes
   whatever is left (0.6 to 4.0 s);
5. drop pieces whose peak is above 2.5 (broken or badly clipped input), and mix each kept piece
   with its peak-normalised copy: `x / peak * (0.9 * 0.75) + (1 - 0.75) * x`;
6. write it as float32 wav at the model rate and, resampled as `librosa.resample` does by default
   (soxr "HQ", then zero-padded or cut to ceil(n * 16000 / rate) samples), at 16 kHz.

Differences from RVC, on purpose:
* Piece numbering: RVC gives the last piece of each sounding part the next-but-one number, and the
  first piece of the following part reuses that number, so the earlier file is overwritten and
  lost. Here the pieces of a source file are numbered 0, 1, 2, ... without gaps or overwrites.
  The name format `<source index>_<piece index>` is RVC's; the source index is the file's
  position in the sorted folder listing, as in RVC.
* Files are spread over worker processes one file at a time; every piece is written atomically and
  each finished source file is recorded in `preprocess_state.json`, so a rerun (after a cancel, a
  crash or new files) only does what is missing or changed.
* Hidden files, folders and files that are not audio are skipped with a note instead of failing.
* A few percent of the clips are set aside for validation at the end (`train.holdout`).
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from configs import SAMPLE_RATE_HZ, SampleRateTag
from infer_pack.errors import AudioLoadError, ExperimentError, UserInputError
from infer_pack.fileio import remove_stale_temporaries
from infer_pack.params import DEFAULT_DECODER, Decoder
from infer_pack.progress import CancelToken, ProgressCallback, check, report
from train.experiment import Experiment, ExperimentMetadata
from train.holdout import DEFAULT_MIN_SECONDS, DEFAULT_SHARE_PERCENT, update_held_out
from train.slicer import Slicer, SlicerSettings

log = logging.getLogger(__name__)
TaskT = TypeVar("TaskT")
ResultT = TypeVar("ResultT")

STATE_FORMAT = 1
STATE_SAVE_INTERVAL_S = 1.0
WAV_16K_RATE = 16000
CLIP_LEVEL = 0.999  # |x| at or above this counts as a clipped sample in the health report
NON_AUDIO_EXTENSIONS = frozenset(
    {
        ".txt", ".md", ".json", ".csv", ".lab", ".srt", ".vtt", ".ini", ".db", ".log", ".pdf", ".doc", ".docx",
        ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".zip", ".rar", ".7z", ".gz", ".tar", ".py", ".npy",
        ".pth", ".pt", ".index", ".exe", ".html", ".xml", ".yaml", ".yml",
    }
)


@dataclass(frozen=True)
class PreprocessSettings:
    """RVC's preprocess constants (train tab step 2a)."""

    sample_rate: int
    segment_s: float = 3.7
    overlap_s: float = 0.3
    max_peak: float = 2.5
    norm_max: float = 0.9
    norm_alpha: float = 0.75
    highpass_hz: float = 48.0
    slicer: SlicerSettings = field(default_factory=SlicerSettings)
    decoder: Decoder = DEFAULT_DECODER  # step 1: RVC's ffmpeg decode ("rvc") or channel mean + soxr ("soxr")
    held_out_percent: float = DEFAULT_SHARE_PERCENT  # clips set aside for validation (`train.holdout`); 0: none
    held_out_min_s: float = DEFAULT_MIN_SECONDS

    @property
    def tail_s(self) -> float:
        return self.segment_s + self.overlap_s


@dataclass
class SourceResult:
    """What happened to one source file (one entry of `preprocess_state.json`)."""

    name: str
    index: int
    status: str  # "done" | "failed" | "skipped"
    reason: str = ""
    size: int = 0
    mtime_ns: int = 0
    segments: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # pieces not written (peak above max_peak, or silent)
    duration_s: float = 0.0
    kept_s: float = 0.0  # audio inside the sounding parts (before splitting into pieces)
    segments_s: float = 0.0  # total length of the written pieces (overlaps counted twice)
    native_sample_rate: int = 0
    clipped_samples: int = 0
    peak: float = 0.0
    seconds: float = 0.0  # processing time
    decoder: str = "soxr"  # how it was decoded (records written before the choice existed: soxr)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> SourceResult:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in raw.items() if k in known})


@dataclass(frozen=True)
class PreprocessResult:
    experiment: Path
    sample_rate: int
    processed: int  # source files done in this run
    reused: int  # source files already done by an earlier run (unchanged)
    failed: list[tuple[str, str]]  # (file name, reason)
    skipped: list[tuple[str, str]]  # (file name, why it is not a training source)
    segments_written: int  # pieces written in this run
    segments_total: int  # pieces in 0_gt_wavs from all finished sources
    seconds: float

    @property
    def n_failed(self) -> int:
        return len(self.failed)


# ---------------------------------------------------------------------------------------------
# The numerics (pure functions; tested directly)
# ---------------------------------------------------------------------------------------------
def highpass(audio: np.ndarray, sample_rate: int, cutoff_hz: float = 48.0) -> np.ndarray:
    """RVC's 5th-order Butterworth high-pass, applied causally (`lfilter`). Returns float64 [T]."""
    from scipy import signal

    b, a = signal.butter(N=5, Wn=cutoff_hz, btype="high", fs=sample_rate)
    return signal.lfilter(b, a, audio)


def split_points(n_samples: int, sample_rate: int, segment_s: float = 3.7, overlap_s: float = 0.3) -> list[tuple[int, int]]:
    """Sample ranges of the pieces of one sounding part, RVC's arithmetic (3.4 s hop, pieces over 4.0 s split)."""
    pieces: list[tuple[int, int]] = []
    tail = (segment_s + overlap_s) * sample_rate
    length = int(segment_s * sample_rate)
    i = 0
    while True:
        start = int(sample_rate * (segment_s - overlap_s) * i)
        i += 1
        if n_samples - start > tail:
            pieces.append((start, start + length))
        else:
            pieces.append((start, n_samples))
            return pieces


def normalize_piece(piece: np.ndarray, norm_max: float = 0.9, alpha: float = 0.75, max_peak: float = 2.5) -> np.ndarray | None:
    """`x / peak * (norm_max * alpha) + (1 - alpha) * x`, or None when the peak is 0, not finite or above `max_peak`."""
    if piece.size == 0:
        return None
    peak = float(np.abs(piece).max())
    if not np.isfinite(peak) or peak <= 0.0 or peak > max_peak:
        return None
    return piece / peak * (norm_max * alpha) + (1.0 - alpha) * piece


def resample_16k(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """To 16 kHz as RVC's `librosa.resample(x, orig_sr=rate, target_sr=16000)` does. float32 [T'].

    librosa (0.10 on) resamples with soxr "HQ" and then fixes the length to ceil(T * 16000 / rate),
    zero-padding the end: soxr alone gives one sample less when T * 16000 / rate is not whole.
    """
    import soxr

    resampled = np.asarray(soxr.resample(audio, sample_rate, WAV_16K_RATE, quality="HQ"), dtype=np.float32)
    length = -(-audio.shape[0] * WAV_16K_RATE // sample_rate)  # ceil, in integers
    if resampled.shape[0] >= length:
        return resampled[:length]
    return np.pad(resampled, (0, length - resampled.shape[0]))


def write_segment_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """float32 wav exactly as RVC writes segments (scipy's writer), made visible by an atomic rename.

    No fsync per piece: pieces can be made again from the source, and `preprocess_state.json`
    (written after all pieces of a source exist) is what marks a source as done.
    """
    from scipy.io import wavfile

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        wavfile.write(tmp, sample_rate, np.ascontiguousarray(audio, dtype=np.float32))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------
# One source file (runs in a worker process)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Task:
    path: str
    name: str
    index: int
    size: int
    mtime_ns: int
    gt_wavs_dir: str
    wavs16k_dir: str
    settings: PreprocessSettings


def decode_source(path: str | Path, sample_rate: int, decoder: Decoder = DEFAULT_DECODER) -> tuple[np.ndarray, int]:
    """Mono float32 audio at `sample_rate` [T] and the file's own rate, decoded as `load_audio(decoder=...)`.

    WAV/FLAC/AIFF are read with libsndfile (a few ms; opening a file through FFmpeg costs tens of
    ms, which adds up over thousands of short clips) where that gives `load_audio`'s samples: always
    for "soxr" (channel mean, soxr "HQ"), and for "rvc" when the file is mono at `sample_rate`
    (nothing to mix or resample, e.g. the 16 kHz pieces steps 2b read). Every other case goes
    through `load_audio`.
    """
    import soundfile

    path = Path(path)
    try:
        info = soundfile.info(str(path))
    except (RuntimeError, TypeError):  # libsndfile does not know the format
        info = None
    needs_ffmpeg = decoder == "rvc" and info is not None and (info.channels != 1 or info.samplerate != sample_rate)
    if (
        needs_ffmpeg
        or info is None
        or info.format not in _LIBSNDFILE_FORMATS
        or info.frames <= 0
        or info.samplerate <= 0
    ):
        from infer_pack.audio import load_audio, probe

        audio = load_audio(path, sample_rate, decoder=decoder)
        try:
            native = int(probe(path).sample_rate)
        except AudioLoadError:
            native = 0
        return audio, native
    import soxr

    from infer_pack.audio import MAX_DURATION_S, _wav_missing_fraction

    # libsndfile quietly shortens a cut WAV to the bytes present; the header tells how much is missing.
    missing = _wav_missing_fraction(path)
    if missing > 0.01:
        raise AudioLoadError(
            path,
            f"the file is cut short: {missing:.0%} of the audio its header announces is missing (truncated copy?)",
            "re-export or re-download the file",
        )
    if info.frames / info.samplerate > MAX_DURATION_S:
        raise AudioLoadError(
            path,
            f"it lasts {info.frames / info.samplerate / 3600:.1f} h, more than the {MAX_DURATION_S / 3600:.1f} h loaded at once",
            "split it into shorter files",
        )
    try:
        data = soundfile.read(str(path), dtype="float32", always_2d=True)[0]  # [T, channels]
    except RuntimeError as exc:
        raise AudioLoadError(path, f"corrupt audio data ({exc})", "re-export or re-download the file") from None
    if data.shape[0] < 0.99 * info.frames:
        raise AudioLoadError(
            path,
            f"only {data.shape[0] / info.samplerate:.2f} s of the {info.frames / info.samplerate:.2f} s its header announces could be read (truncated file?)",
            "re-export or re-download the file",
        )
    if data.shape[0] == 0:
        raise AudioLoadError(path, "it holds no audio samples", "re-export it with some sound in it")
    mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    if not np.all(np.isfinite(mono)):
        mono = np.nan_to_num(mono, nan=0.0, posinf=0.0, neginf=0.0)
    if info.samplerate != sample_rate:
        mono = soxr.resample(mono, info.samplerate, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32), int(info.samplerate)


_LIBSNDFILE_FORMATS = frozenset({"WAV", "WAVEX", "FLAC", "AIFF", "W64", "RF64"})


def process_source(task: _Task) -> SourceResult:
    """Decode, filter, slice, split, normalise and write one source file. Never raises for bad audio."""
    started = time.perf_counter()
    s = task.settings
    result = SourceResult(task.name, task.index, "failed", size=task.size, mtime_ns=task.mtime_ns)
    try:
        result.decoder = s.decoder
        audio, result.native_sample_rate = decode_source(task.path, s.sample_rate, s.decoder)  # [T] float32
        result.duration_s = audio.size / s.sample_rate
        magnitude = np.abs(audio)
        result.peak = float(magnitude.max())
        result.clipped_samples = int(np.count_nonzero(magnitude >= CLIP_LEVEL))
        filtered = highpass(audio, s.sample_rate, s.highpass_hz)  # [T] float64
        slicer = Slicer(s.sample_rate, s.slicer)
        piece_index = 0
        for begin, end in slicer.slice_ranges(filtered):
            part = filtered[begin:end]
            result.kept_s += part.size / s.sample_rate
            for start, stop in split_points(part.size, s.sample_rate, s.segment_s, s.overlap_s):
                raw = part[start:stop]
                piece = normalize_piece(raw, s.norm_max, s.norm_alpha, s.max_peak)
                if piece is None:
                    peak = float(np.abs(raw).max()) if raw.size else 0.0
                    result.dropped.append(f"{(begin + start) / s.sample_rate:.2f} s (peak {peak:.3g})")
                    continue
                name = Experiment.segment_name(task.index, piece_index)
                piece_index += 1
                piece32 = piece.astype(np.float32)
                write_segment_wav(Path(task.gt_wavs_dir) / f"{name}.wav", piece32, s.sample_rate)
                write_segment_wav(Path(task.wavs16k_dir) / f"{name}.wav", resample_16k(piece32, s.sample_rate), WAV_16K_RATE)
                result.segments.append(name)
                result.segments_s += piece.size / s.sample_rate
        result.status = "done"
    except AudioLoadError as exc:
        result.reason = exc.reason
    except Exception as exc:  # noqa: BLE001 - one broken file must not stop the batch; it is reported by name
        result.reason = f"{type(exc).__name__}: {exc}"
    result.seconds = time.perf_counter() - started
    return result


# ---------------------------------------------------------------------------------------------
# The folder: listing, resume state, workers
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourceFile:
    name: str
    path: Path
    index: int  # position in the sorted listing (RVC's source index)
    skip_reason: str = ""


def list_sources(source_dir: Path) -> list[SourceFile]:
    """Every entry directly in `source_dir` (not recursive), sorted, with why it is skipped if it is."""
    from infer_pack.audio import AUDIO_EXTENSIONS

    if not source_dir.is_dir():
        raise UserInputError(f"training folder {str(source_dir)!r} does not exist or is not a folder; pick the folder holding the recordings")
    found: list[SourceFile] = []
    for index, name in enumerate(sorted(os.listdir(source_dir))):
        path = source_dir / name
        reason = ""
        suffix = path.suffix.lower()
        if name.startswith("."):
            reason = "hidden file"
        elif path.is_dir():
            reason = "folder (sub-folders are not searched)"
        elif not path.is_file():
            reason = "not a regular file"
        elif suffix in NON_AUDIO_EXTENSIONS or (suffix not in AUDIO_EXTENSIONS and not _probes_as_audio(path)):
            reason = "not an audio file"
        found.append(SourceFile(name, path, index, reason))
    return found


def _probes_as_audio(path: Path) -> bool:
    from infer_pack.audio import probe

    try:
        return probe(path).sample_rate > 0
    except AudioLoadError:
        return False


def read_state(experiment: Experiment) -> dict[str, Any]:
    import json

    path = experiment.preprocess_state_path
    if not path.exists():
        return {"format": STATE_FORMAT, "sources": {}}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("%s is unreadable (%s); every source file will be processed again", path, exc)
        return {"format": STATE_FORMAT, "sources": {}}
    if not isinstance(raw, dict):
        log.warning("%s is not a JSON object; every source file will be processed again", path)
        return {"format": STATE_FORMAT, "sources": {}}
    found = raw.get("format", 1)
    if not isinstance(found, int) or found > STATE_FORMAT:
        raise ExperimentError(
            f"{path}: the preprocessing state was written by a newer version of this tool (format {found!r}; this "
            f"one reads up to {STATE_FORMAT}); update the tool, or delete the file to preprocess every source again"
        )
    raw.setdefault("sources", {})
    return raw


def _write_state(experiment: Experiment, state: dict[str, Any]) -> None:
    import json

    from infer_pack.fileio import atomic_write_text

    atomic_write_text(experiment.preprocess_state_path, json.dumps(state, indent=1, sort_keys=True))


def _remove_pieces(experiment: Experiment, names: list[str]) -> None:
    # Pitch, features and spectrogram caches go too: a later step skips names whose output exists,
    # and the new pieces of a changed source reuse these names.
    for name in names:
        for path in experiment.piece_files(name):
            path.unlink(missing_ok=True)


# Imported once by the fork server, so each worker starts without paying for them again.
_WORKER_PRELOAD = ["numpy", "scipy.signal", "scipy.io.wavfile", "soxr", "soundfile", "av", "infer_pack.audio", "parselmouth", "train.preprocess", "train.extract_f0"]


def _worker_context() -> Any:
    """How to start worker processes without the hazards of forking a threaded process.

    A process with a single Python thread (CLI, benchmark, tests) forks: workers start in
    milliseconds and inherit the imports. A threaded one (the web app) must not fork (a lock held
    by another thread would stay locked forever in the child), so it uses "forkserver": workers are
    forked from a clean single-threaded server that has already imported scipy and the decoders.
    Platforms without either start method use "spawn".
    """
    import threading

    methods = multiprocessing.get_all_start_methods()
    if threading.active_count() == 1 and "fork" in methods:
        # Import the heavy modules here once, so forked workers inherit them instead of each
        # importing scipy again (seconds per worker on a busy machine).
        for name in _WORKER_PRELOAD:
            try:
                importlib.import_module(name)
            except ImportError:
                pass  # a worker that needs it reports the error per file
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(_WORKER_PRELOAD)
        return context
    return multiprocessing.get_context("spawn")


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def preprocess_folder(
    source_dir: str | Path,
    experiment: Experiment,
    sample_rate_tag: SampleRateTag,
    *,
    speaker_id: int = 0,
    n_workers: int | None = None,
    settings: PreprocessSettings | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> PreprocessResult:
    """Step 2a for every file directly in `source_dir`; resumes where an earlier run stopped.

    Raises ExperimentError when the experiment was prepared at another sample rate, CancelledError
    when cancelled (finished files are kept and recorded). Bad files are counted, not raised.
    """
    started = time.perf_counter()
    source_dir = Path(source_dir)
    rate = SAMPLE_RATE_HZ[sample_rate_tag]
    settings = settings or PreprocessSettings(sample_rate=rate)
    if settings.sample_rate != rate:
        raise UserInputError(f"settings are for {settings.sample_rate} Hz but the experiment asks for {sample_rate_tag}")
    sources = list_sources(source_dir)  # first: a wrong folder must not leave an empty experiment behind
    metadata = experiment.read_metadata()
    state = read_state(experiment)
    if (metadata is not None and metadata.sample_rate_tag != sample_rate_tag and experiment.segment_names()) or (
        state["sources"] and state.get("sample_rate", rate) != rate
    ):
        old = metadata.sample_rate_tag if metadata else f"{state.get('sample_rate')} Hz"
        raise ExperimentError(
            f"experiment {str(experiment.root)!r} was prepared at {old}, not {sample_rate_tag}; "
            "use a new experiment name, or delete the folder to start over"
        )
    for folder in (experiment.gt_wavs_dir, experiment.wavs16k_dir):
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(folder)
    new_metadata = (metadata or ExperimentMetadata(sample_rate_tag=sample_rate_tag)).replace(
        sample_rate_tag=sample_rate_tag, speaker_id=speaker_id, source_dir=str(source_dir.absolute())
    )
    experiment.write_metadata(new_metadata)
    state["sample_rate"] = rate
    state["format"] = STATE_FORMAT
    state["source_dir"] = str(source_dir.absolute())

    records: dict[str, dict[str, Any]] = state["sources"]
    skipped = [(s.name, s.skip_reason) for s in sources if s.skip_reason]
    todo: list[_Task] = []
    reused = 0
    # Every recorded file (done or failed) keeps its index for good, so pieces never collide.
    used_indexes = {int(r["index"]) for r in records.values()}
    for source in sources:
        if source.skip_reason:
            continue
        stat = source.path.stat()
        record = records.get(source.name)
        if (
            record
            and record.get("status") == "done"
            and record.get("size") == stat.st_size
            and record.get("mtime_ns") == stat.st_mtime_ns
            and record.get("decoder", "soxr") == settings.decoder  # decoded another way: made again
        ):
            reused += 1
            continue
        index = source.index
        if record is not None:
            # A changed (or previously failed) file keeps its index; its old pieces go away first.
            index = int(record["index"])
            _remove_pieces(experiment, list(record.get("segments", [])))
        elif index in used_indexes:
            # The folder gained files since the last run: never reuse a finished file's index.
            index = max(used_indexes | {s.index for s in sources}) + 1
        used_indexes.add(index)
        todo.append(
            _Task(str(source.path), source.name, index, stat.st_size, stat.st_mtime_ns,
                  str(experiment.gt_wavs_dir), str(experiment.wavs16k_dir), settings)
        )
    state["skipped"] = dict(skipped)
    _write_state(experiment, state)

    total = len(todo)
    failed: list[tuple[str, str]] = []
    written = 0
    report(progress, 0, total, f"preprocess: {total} file(s) to do, {reused} already done, {len(skipped)} skipped")
    # The state is saved at most once per STATE_SAVE_INTERVAL_S (and always at the end, on cancel
    # or on error): rewriting it after every file of a large dataset would cost more than the work.
    # A kill loses at most that interval of records; those files are simply done again.
    last_save = time.monotonic()
    try:
        for done, result in enumerate(_run_tasks(todo, n_workers or default_workers(), cancel), start=1):
            records[result.name] = result.to_json()
            if time.monotonic() - last_save >= STATE_SAVE_INTERVAL_S:
                _write_state(experiment, state)
                last_save = time.monotonic()
            if result.status == "done":
                written += len(result.segments)
                message = f"{result.name}: {len(result.segments)} piece(s)"
            else:
                failed.append((result.name, result.reason))
                message = f"{result.name}: FAILED ({result.reason})"
                log.warning("preprocess: %s failed: %s", result.name, result.reason)
            report(progress, done, total, message)
    finally:
        _write_state(experiment, state)
    update_held_out(experiment, records, settings.held_out_percent, settings.held_out_min_s)
    segments_total = sum(len(r.get("segments", [])) for r in records.values() if r.get("status") == "done")
    return PreprocessResult(
        experiment=experiment.root,
        sample_rate=rate,
        processed=total - len(failed),
        reused=reused,
        failed=failed,
        skipped=skipped,
        segments_written=written,
        segments_total=segments_total,
        seconds=time.perf_counter() - started,
    )


def _run_tasks(tasks: list[_Task], n_workers: int, cancel: CancelToken | None) -> Iterator[SourceResult]:
    return parallel_map(process_source, tasks, n_workers, cancel)


def parallel_map(
    func: Callable[[TaskT], ResultT], tasks: list[TaskT], n_workers: int, cancel: CancelToken | None
) -> Iterator[ResultT]:
    """`func(task)` for every task in worker processes; results in completion order.

    `func` must be a module-level function and must report per-item failures in its result rather
    than raise. Cancel is checked between items: items already started finish (and are yielded),
    then CancelledError is raised. With one worker everything runs in this process.
    """
    if not tasks:
        return
    n_workers = max(1, min(n_workers, len(tasks)))
    if n_workers == 1:
        for task in tasks:
            check(cancel)
            yield func(task)
        return
    pending = iter(tasks)
    with futures.ProcessPoolExecutor(max_workers=n_workers, mp_context=_worker_context()) as pool:
        running: set[futures.Future[ResultT]] = set()
        cancelled = False

        def refill() -> None:
            nonlocal cancelled
            # Two items per worker in flight: workers never wait, and a cancel leaves little to finish.
            while len(running) < n_workers * 2 and not cancelled:
                if cancel is not None and cancel.cancelled:
                    cancelled = True
                    return
                task = next(pending, None)
                if task is None:
                    return
                running.add(pool.submit(func, task))

        refill()
        while running:
            finished, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
            for future in finished:
                running.discard(future)
                try:
                    yield future.result()
                except BrokenProcessPool as exc:
                    raise ExperimentError(
                        "a worker process died (out of memory?); files finished so far are kept, "
                        "run the step again to resume, with fewer processes if it happens again"
                    ) from exc
            refill()
        if cancelled:
            check(cancel)
