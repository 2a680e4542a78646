"""The experiment folder `logs/<exp>/`: RVC's layout, our metadata, and the filelist line format.

This module is the one owner of every path below `logs/`. Folder and file names are RVC's, so a
folder prepared by RVC trains here and a folder prepared here trains in RVC:

    logs/<exp>/0_gt_wavs/<name>.wav        float32 wav at the model rate (one training segment)
    logs/<exp>/0_gt_wavs/<name>.spec-*.pt  spectrogram cache of the training loader (`spec_cache_path`)
    logs/<exp>/1_16k_wavs/<name>.wav       the same segment at 16 kHz, float32
    logs/<exp>/2a_f0/<name>.wav.npy        coarse pitch 1..255, int   [frames@100Hz]
    logs/<exp>/2b-f0nsf/<name>.wav.npy     pitch in Hz, float64       [frames@100Hz]
    logs/<exp>/3_feature256|768/<name>.npy content features, float32  [frames@50Hz, 256|768]
    logs/<exp>/filelist.txt                training list (see `FilelistEntry`)
    logs/<exp>/config.json                 copy of the training config (written once)
    logs/<exp>/G_<step>.pth, D_<step>.pth  training checkpoints (step = optimizer steps)
    logs/<exp>/train.log                   training log
    logs/mute/...                          silent padding examples shared by all experiments

Files RVC does not have (ignored by RVC): `experiment.json` (what the folder was prepared for),
`preprocess_state.json` (per-source progress of step 2a), `health.json` / `health.txt`,
`metrics.jsonl` and `loss_curve.png` (training metrics), `train.lock`, `holdout.json` (clips set aside
for validation, `train.holdout`: in no filelist, no index), `G_best.pth` / `D_best.pth` / `best.json`
(the pair of the lowest validation loss so far; `G_<digits>` names stay RVC's resume points). TensorBoard event files
go into `logs/<exp>/` itself, as RVC's do.

Spectrogram caches sit beside any wav of a filelist (the shared mute wav included), so their
names come from module functions (`spec_cache_path`, `rvc_spec_cache_path`), not from `Experiment`.
"""

from __future__ import annotations

import glob
import json
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from configs import (
    SAMPLE_RATE_HZ,
    SAMPLE_RATE_TAGS,
    VERSIONS,
    SampleRateTag,
    Version,
    load_config,
    sample_rate_tag_from_hz,
)
from infer_pack.errors import ExperimentError, UserInputError
from infer_pack.fileio import atomic_path, atomic_write_text

GT_WAVS = "0_gt_wavs"
WAVS_16K = "1_16k_wavs"
F0_COARSE = "2a_f0"
F0_HZ = "2b-f0nsf"
MUTE = "mute"
FEATURE_DIRS: dict[Version, str] = {"v1": "3_feature256", "v2": "3_feature768"}
METADATA_FILE = "experiment.json"
METRICS_FILE = "metrics.jsonl"
LOSS_CURVE_FILE = "loss_curve.png"
METADATA_FORMAT = 1
# RVC writes "G_2333333.pth" when only the latest checkpoint is kept.
LATEST_ONLY_STEP = 2333333
MUTE_SECONDS = 3
# Shapes of RVC's shipped mute assets: 3 s give 301 pitch frames at 100 Hz and 149 HuBERT frames.
MUTE_F0_FRAMES = 301
CheckpointKind = Literal["G", "D"]

_STEP_RE = re.compile(r"^([GD])_(\d+)\.pth$")
# `<stem>.spec.pt` (RVC) or `<stem>.spec-<tag>.pt` (ours).
_SPEC_CACHE_RE = re.compile(r"\.spec(-.+)?\.pt$")


@dataclass(frozen=True)
class ExperimentMetadata:
    """What an experiment was prepared for; stored in `experiment.json` (atomic JSON)."""

    sample_rate_tag: SampleRateTag
    version: Version = "v2"
    use_f0: bool = True
    speaker_id: int = 0
    f0_method: str | None = None
    interpolate_unvoiced: bool = True
    source_dir: str | None = None
    format: int = METADATA_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.sample_rate_tag not in SAMPLE_RATE_TAGS:
            raise UserInputError(f"unknown sample rate {self.sample_rate_tag!r}; use one of {SAMPLE_RATE_TAGS}")
        if self.version not in VERSIONS:
            raise UserInputError(f"unknown model version {self.version!r}; use one of {VERSIONS}")
        if not 0 <= self.speaker_id < 109:
            raise UserInputError(f"speaker id {self.speaker_id} is outside 0..108 (RVC models have 109 speaker slots)")

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE_HZ[self.sample_rate_tag]

    def to_json_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json_dict(cls, raw: dict[str, Any], source: Path) -> ExperimentMetadata:
        known = {name for name in cls.__dataclass_fields__}
        try:
            return cls(**{k: v for k, v in raw.items() if k in known})
        except (TypeError, UserInputError) as exc:
            raise ExperimentError(f"{source}: unreadable experiment metadata ({exc}); delete the file to re-create it") from exc

    def replace(self, **changes: Any) -> ExperimentMetadata:
        data = self.to_json_dict()
        data.update(changes)
        return ExperimentMetadata(**data)


def _escape_path(path: Path) -> str:
    # RVC doubles backslashes of the experiment path in data lines (Windows paths); a no-op on POSIX.
    return str(path).replace("\\", "\\\\")


@dataclass(frozen=True)
class FilelistEntry:
    """One training example: `wav|feature|coarse_f0|f0_hz|speaker` (with pitch) or `wav|feature|speaker`."""

    gt_wav: Path
    feature: Path
    f0_coarse: Path | None
    f0_hz: Path | None
    speaker_id: int

    @property
    def use_f0(self) -> bool:
        return self.f0_coarse is not None

    def to_line(self, escape: bool = True) -> str:
        fmt = _escape_path if escape else str
        fields = [fmt(self.gt_wav), fmt(self.feature)]
        if self.f0_coarse is not None and self.f0_hz is not None:
            fields += [fmt(self.f0_coarse), fmt(self.f0_hz)]
        fields.append(str(self.speaker_id))
        return "|".join(fields)

    @classmethod
    def parse(cls, line: str, use_f0: bool | None = None, source: str | Path = "filelist.txt") -> FilelistEntry:
        """Parse one line; `use_f0` (when given) demands 5 fields (pitch) or 3 (no pitch), as RVC's loaders do."""
        fields = line.rstrip("\r\n").split("|")
        expected = {True: (5,), False: (3,), None: (3, 5)}[use_f0]
        if len(fields) not in expected:
            raise ExperimentError(
                f"{source}: line {line[:120]!r} has {len(fields)} fields, expected {' or '.join(map(str, expected))}; "
                "re-create the file list (it is written again before training)"
            )
        try:
            speaker = int(fields[-1])
        except ValueError as exc:
            raise ExperimentError(f"{source}: line {line[:120]!r} ends with {fields[-1]!r}, not a speaker id") from exc
        if len(fields) == 5:
            return cls(Path(fields[0]), Path(fields[1]), Path(fields[2]), Path(fields[3]), speaker)
        return cls(Path(fields[0]), Path(fields[1]), None, None, speaker)


def stem(file_name: str) -> str:
    """RVC's example name: the text before the first dot (`3_1.wav.npy` -> `3_1`)."""
    return file_name.split(".")[0]


def spec_cache_path(wav_path: Path, cache_tag: str) -> Path:
    """The training loader's spectrogram cache beside `wav_path`: `<stem>.spec-<cache_tag>.pt`.

    `cache_tag` names everything the spectrogram depends on (`MelTransform.cache_tag`: epsilon mode
    and STFT sizes), so a cache made with other settings is never read back.
    """
    return wav_path.with_name(f"{stem(wav_path.name)}.spec-{cache_tag}.pt")


def rvc_spec_cache_path(wav_path: Path) -> Path:
    """RVC's spectrogram cache beside `wav_path`: `<stem>.spec.pt` (written by RVC, never read here)."""
    return wav_path.with_name(f"{stem(wav_path.name)}.spec.pt")


def is_spec_cache(file_name: str) -> bool:
    """True for a spectrogram cache file name, ours (`spec_cache_path`) or RVC's (`rvc_spec_cache_path`)."""
    return _SPEC_CACHE_RE.search(file_name) is not None


@dataclass(frozen=True)
class Checkpoint:
    kind: CheckpointKind
    step: int
    path: Path


class Experiment:
    """Paths and small files of one experiment folder `logs/<name>/`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).absolute()
        if not self.root.name or self.root.name == MUTE:
            raise UserInputError(f"{self.root}: not a usable experiment folder name; pick another experiment name")

    @classmethod
    def in_logs(cls, logs_dir: str | Path, name: str) -> Experiment:
        """The experiment `name` below a project's `logs/` folder (the name must be a plain folder name)."""
        cleaned = name.strip()
        if not cleaned or cleaned in {".", "..", MUTE} or "/" in cleaned or "\\" in cleaned or "\x00" in cleaned:
            raise UserInputError(f"invalid experiment name {name!r}: use a plain folder name (not 'mute')")
        return cls(Path(logs_dir) / cleaned)

    def __repr__(self) -> str:
        return f"Experiment({str(self.root)!r})"

    # -- folders -------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.root.name

    @property
    def logs_dir(self) -> Path:
        return self.root.parent

    @property
    def gt_wavs_dir(self) -> Path:
        return self.root / GT_WAVS

    @property
    def wavs16k_dir(self) -> Path:
        return self.root / WAVS_16K

    @property
    def f0_coarse_dir(self) -> Path:
        return self.root / F0_COARSE

    @property
    def f0_hz_dir(self) -> Path:
        return self.root / F0_HZ

    def feature_dir(self, version: Version) -> Path:
        if version not in FEATURE_DIRS:
            raise UserInputError(f"unknown model version {version!r}; use one of {VERSIONS}")
        return self.root / FEATURE_DIRS[version]

    @property
    def mute_dir(self) -> Path:
        return self.logs_dir / MUTE

    # -- files ---------------------------------------------------------------------------------
    @property
    def filelist_path(self) -> Path:
        return self.root / "filelist.txt"

    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    @property
    def metadata_path(self) -> Path:
        return self.root / METADATA_FILE

    @property
    def preprocess_state_path(self) -> Path:
        return self.root / "preprocess_state.json"

    @property
    def preprocess_log_path(self) -> Path:
        return self.root / "preprocess.log"

    @property
    def extract_log_path(self) -> Path:
        return self.root / "extract_f0_feature.log"

    @property
    def health_json_path(self) -> Path:
        return self.root / "health.json"

    @property
    def health_text_path(self) -> Path:
        return self.root / "health.txt"

    @property
    def train_log_path(self) -> Path:
        return self.root / "train.log"

    @property
    def metrics_path(self) -> Path:
        """Training metrics, one JSON object per logged step (`train.metrics` writes, the UI reads)."""
        return self.root / METRICS_FILE

    @property
    def loss_curve_path(self) -> Path:
        """The loss-curve PNG redrawn from the metrics file at each checkpoint and at the end."""
        return self.root / LOSS_CURVE_FILE

    @property
    def tensorboard_dir(self) -> Path:
        """Where TensorBoard event files go: the experiment folder itself, as in RVC, so
        `tensorboard --logdir logs/<exp>` shows RVC's and our runs the same way."""
        return self.root

    @property
    def lock_path(self) -> Path:
        return self.root / "train.lock"

    @property
    def held_out_path(self) -> Path:
        return self.root / "holdout.json"

    @property
    def best_path(self) -> Path:
        """The record of the best validation so far (epoch, step, figures), written after its G/D pair."""
        return self.root / "best.json"

    def best_checkpoint_path(self, kind: CheckpointKind) -> Path:
        return self.root / f"{kind}_best.pth"

    def held_out_names(self) -> frozenset[str]:
        """Clips step 2a set aside for validation (empty without a held-out set)."""
        from train.holdout import read_held_out

        held = read_held_out(self)
        return frozenset(held.segments) if held is not None else frozenset()

    def gt_wav_path(self, name: str) -> Path:
        return self.gt_wavs_dir / f"{name}.wav"

    def wav16k_path(self, name: str) -> Path:
        return self.wavs16k_dir / f"{name}.wav"

    def f0_coarse_path(self, name: str) -> Path:
        return self.f0_coarse_dir / f"{name}.wav.npy"

    def f0_hz_path(self, name: str) -> Path:
        return self.f0_hz_dir / f"{name}.wav.npy"

    def feature_path(self, name: str, version: Version) -> Path:
        return self.feature_dir(version) / f"{name}.npy"

    def piece_files(self, name: str) -> list[Path]:
        """Every file made from the piece `name` that exists: its wavs, spectrogram caches, pitch and features.

        Removing these when a source is cut again keeps a later step from reusing another audio's
        pitch or features under the same name.
        """
        files = [self.gt_wav_path(name), self.wav16k_path(name), self.f0_coarse_path(name), self.f0_hz_path(name)]
        files += [self.feature_path(name, version) for version in FEATURE_DIRS]
        for folder in (self.gt_wavs_dir, self.wavs16k_dir):
            if folder.is_dir():
                files += [p for p in folder.glob(f"{glob.escape(name)}.spec*.pt") if is_spec_cache(p.name)]
        return [path for path in files if path.is_file()]

    @staticmethod
    def segment_name(source_index: int, segment_index: int) -> str:
        """RVC's segment name: `<index of the source file>_<index of the piece>`."""
        return f"{source_index}_{segment_index}"

    # -- mute assets (shared by every experiment below the same logs/) -------------------------
    def mute_wav_path(self, sample_rate_tag: SampleRateTag) -> Path:
        return self.mute_dir / GT_WAVS / f"mute{sample_rate_tag}.wav"

    def mute_feature_path(self, version: Version) -> Path:
        return self.mute_dir / FEATURE_DIRS[version] / "mute.npy"

    @property
    def mute_f0_coarse_path(self) -> Path:
        return self.mute_dir / F0_COARSE / "mute.wav.npy"

    @property
    def mute_f0_hz_path(self) -> Path:
        return self.mute_dir / F0_HZ / "mute.wav.npy"

    def ensure_mute_audio_and_f0(self, sample_rate_tag: SampleRateTag) -> list[Path]:
        """Write the silent wav (3 s of int16 zeros) and its pitch arrays if absent; returns what was written."""
        written: list[Path] = []
        wav_path = self.mute_wav_path(sample_rate_tag)
        if not wav_path.exists():
            from scipy.io import wavfile

            rate = SAMPLE_RATE_HZ[sample_rate_tag]
            silence = np.zeros(MUTE_SECONDS * rate, dtype=np.int16)
            with atomic_path(wav_path) as tmp:
                wavfile.write(tmp, rate, silence)
            written.append(wav_path)
        # RVC's shipped arrays: coarse pitch all 1 (unvoiced) as int32, Hz all 0 as float64.
        for path, array in (
            (self.mute_f0_coarse_path, np.ones(MUTE_F0_FRAMES, dtype=np.int32)),
            (self.mute_f0_hz_path, np.zeros(MUTE_F0_FRAMES, dtype=np.float64)),
        ):
            if not path.exists():
                save_npy(path, array)
                written.append(path)
        return written

    # -- metadata ------------------------------------------------------------------------------
    def read_metadata(self) -> ExperimentMetadata | None:
        """Our `experiment.json`, or None when absent (e.g. a folder RVC prepared; see `infer_metadata`)."""
        path = self.metadata_path
        if not path.exists():
            return None
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ExperimentError(f"{path}: unreadable experiment metadata ({exc}); delete the file to re-create it") from exc
        if not isinstance(raw, dict):
            raise ExperimentError(f"{path}: experiment metadata is not a JSON object; delete the file to re-create it")
        payload = check_format(raw, path, EXPERIMENT_JSON_FORMAT, "experiment metadata", "delete the file to re-create it")
        return ExperimentMetadata.from_json_dict(payload, path)

    def write_metadata(self, metadata: ExperimentMetadata) -> None:
        payload = versioned(metadata.to_json_dict(), EXPERIMENT_JSON_FORMAT)
        atomic_write_text(self.metadata_path, json.dumps(payload, indent=2, sort_keys=True) + "\n")

    def infer_metadata(self) -> ExperimentMetadata:
        """Metadata from `experiment.json`, or guessed from the folder contents (RVC-prepared folders)."""
        stored = self.read_metadata()
        if stored is not None:
            return stored
        tag = self._guess_sample_rate_tag()
        if tag is None:
            raise ExperimentError(
                f"{self.root}: cannot tell the sample rate of this experiment (no experiment.json, config.json or "
                "0_gt_wavs/*.wav); run step 2a (preprocess) first"
            )
        has_768 = _has_files(self.feature_dir("v2"), ".npy")
        has_256 = _has_files(self.feature_dir("v1"), ".npy")
        version: Version = "v1" if has_256 and not has_768 else "v2"
        use_f0 = _has_files(self.f0_hz_dir, ".npy") or not (has_256 or has_768)
        return ExperimentMetadata(sample_rate_tag=tag, version=version, use_f0=use_f0)

    def _guess_sample_rate_tag(self) -> SampleRateTag | None:
        if self.config_path.exists():
            try:
                rate = int(json.loads(self.config_path.read_text(encoding="utf-8"))["data"]["sampling_rate"])
                return sample_rate_tag_from_hz(rate)
            except (OSError, ValueError, KeyError, TypeError):
                pass
        if self.gt_wavs_dir.is_dir():
            import soundfile

            for path in sorted(self.gt_wavs_dir.glob("*.wav")):
                try:
                    return sample_rate_tag_from_hz(int(soundfile.info(str(path)).samplerate))
                except (RuntimeError, ValueError):
                    continue
        return None

    # -- segments ------------------------------------------------------------------------------
    def segment_names(self) -> list[str]:
        """Example names present in 0_gt_wavs (sorted; hidden and temporary files ignored)."""
        return _stems(self.gt_wavs_dir, ".wav")

    def wavs16k_names(self) -> list[str]:
        return _stems(self.wavs16k_dir, ".wav")

    def complete_names(self, version: Version, use_f0: bool) -> list[str]:
        """RVC's rule: names present in 0_gt_wavs, the feature folder and (with pitch) both f0 folders."""
        names = set(_stems(self.gt_wavs_dir, None)) & set(_stems(self.feature_dir(version), None))
        if use_f0:
            names &= set(_stems(self.f0_coarse_dir, None)) & set(_stems(self.f0_hz_dir, None))
        return sorted(names, key=_natural_key)

    # -- filelist and config -------------------------------------------------------------------
    def _entries(self, names: list[str], version: Version, use_f0: bool, speaker_id: int) -> list[FilelistEntry]:
        return [
            FilelistEntry(
                self.gt_wav_path(name),
                self.feature_path(name, version),
                self.f0_coarse_path(name) if use_f0 else None,
                self.f0_hz_path(name) if use_f0 else None,
                speaker_id,
            )
            for name in names
        ]

    def held_out_entries(self, version: Version, use_f0: bool, speaker_id: int) -> list[FilelistEntry]:
        """The complete held-out examples (validation data), in name order."""
        held = self.held_out_names()
        return self._entries([n for n in self.complete_names(version, use_f0) if n in held], version, use_f0, speaker_id)

    def filelist_entries(self, version: Version, use_f0: bool, speaker_id: int) -> list[FilelistEntry]:
        """Data entries for every complete example that is not held out, plus RVC's two identical mute
        entries (unshuffled)."""
        tag = self.infer_metadata().sample_rate_tag
        held = self.held_out_names()
        names = [n for n in self.complete_names(version, use_f0) if n not in held]
        entries = self._entries(names, version, use_f0, speaker_id)
        mute = FilelistEntry(
            self.mute_wav_path(tag),
            self.mute_feature_path(version),
            self.mute_f0_coarse_path if use_f0 else None,
            self.mute_f0_hz_path if use_f0 else None,
            speaker_id,
        )
        return entries + [mute, mute]

    def write_filelist(
        self, version: Version, use_f0: bool, speaker_id: int = 0, seed: int | None = None
    ) -> list[FilelistEntry]:
        """Write filelist.txt as RVC does: absolute paths, 2 mute lines, shuffled, '\\n'-joined, no final newline.

        Mute assets must exist (feature extraction creates them). `seed=None` shuffles like RVC (unseeded).
        """
        entries = self.filelist_entries(version, use_f0, speaker_id)
        if len(entries) <= 2:
            raise ExperimentError(
                f"{self.root}: no complete training example (0_gt_wavs + {FEATURE_DIRS[version]}"
                f"{' + 2a_f0 + 2b-f0nsf' if use_f0 else ''}); run preprocessing and feature extraction first"
            )
        self.ensure_mute_audio_and_f0(self.infer_metadata().sample_rate_tag)
        for path in (entries[-1].gt_wav, entries[-1].feature, entries[-1].f0_coarse, entries[-1].f0_hz):
            if path is not None and not path.exists():
                raise ExperimentError(f"missing silent example {path}; run feature extraction (step 2b) to create it")
        lines = [entry.to_line(escape=True) for entry in entries[:-2]]
        lines += [entry.to_line(escape=False) for entry in entries[-2:]]
        if seed is None:
            random.shuffle(lines)
        else:
            random.Random(seed).shuffle(lines)
        atomic_write_text(self.filelist_path, "\n".join(lines))
        return entries

    def read_filelist(self, use_f0: bool | None = None) -> list[FilelistEntry]:
        path = self.filelist_path
        if not path.exists():
            raise ExperimentError(f"{path} is missing; run feature extraction (step 2b) or start training to create it")
        text = path.read_text(encoding="utf-8")
        return [FilelistEntry.parse(line, use_f0, path) for line in text.split("\n") if line.strip()]

    def filelist_speaker_ids(self, use_f0: bool | None = None) -> list[int] | None:
        """The speaker ids filelist.txt trains on (what a voice made here records); None without a readable one."""
        try:
            return sorted({entry.speaker_id for entry in self.read_filelist(use_f0)})
        except (ExperimentError, OSError, UnicodeDecodeError):
            return None

    def write_config(self, version: Version, sample_rate_tag: SampleRateTag) -> Path:
        """Copy RVC's training config to config.json (sorted keys, indent 4) unless one is already there."""
        if not self.config_path.exists():
            raw = load_config(version, sample_rate_tag).to_json_dict()
            atomic_write_text(self.config_path, json.dumps(raw, ensure_ascii=False, indent=4, sort_keys=True) + "\n")
        return self.config_path

    # -- training checkpoints ------------------------------------------------------------------
    def checkpoint_path(self, kind: CheckpointKind, step: int) -> Path:
        if kind not in ("G", "D") or step < 0:
            raise UserInputError(f"invalid checkpoint {kind!r} at step {step}")
        return self.root / f"{kind}_{int(step)}.pth"

    def g_checkpoint_path(self, step: int) -> Path:
        return self.checkpoint_path("G", step)

    def d_checkpoint_path(self, step: int) -> Path:
        return self.checkpoint_path("D", step)

    def list_checkpoints(self, kind: CheckpointKind) -> list[Checkpoint]:
        """`G_<step>.pth` / `D_<step>.pth` sorted by step (RVC resumes from the highest)."""
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.iterdir():
            match = _STEP_RE.match(path.name)
            if match and match.group(1) == kind and path.is_file():
                found.append(Checkpoint(kind, int(match.group(2)), path))
        return sorted(found, key=lambda c: c.step)

    def latest_checkpoint(self, kind: CheckpointKind) -> Checkpoint | None:
        found = self.list_checkpoints(kind)
        return found[-1] if found else None

    def exists(self) -> bool:
        return self.root.is_dir()


# Our JSON files (experiment.json, health.json, the preprocess state, metrics.jsonl records) carry
# `format_version`; files written before it existed count as version 1.
FORMAT_KEY = "format_version"
EXPERIMENT_JSON_FORMAT = 1


def versioned(payload: dict[str, Any], version: int) -> dict[str, Any]:
    """`payload` with its format version, ready for json.dumps."""
    return {FORMAT_KEY: version, **payload}


def read_versioned_json(path: Path, supported: int, what: str, fix: str) -> dict[str, Any] | None:
    """One of the experiment's versioned JSON files (None when absent): a JSON object of a format this tool
    reads, without its version key; anything else is an ExperimentError naming the file, `what` and `fix`."""
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise TypeError("not a JSON object")
    except (OSError, ValueError, TypeError) as exc:
        raise ExperimentError(f"{path}: unreadable {what} ({exc}); {fix}") from exc
    return check_format(raw, path, supported, what, fix)


def check_format(raw: dict[str, Any], path: Path, supported: int, what: str, fix: str) -> dict[str, Any]:
    """Refuse a file of a newer format than this tool reads; returns the payload without the version key."""
    version = raw.get(FORMAT_KEY, 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ExperimentError(f"{path}: {what} has an invalid {FORMAT_KEY} {version!r}; {fix}")
    if version > supported:
        raise ExperimentError(
            f"{path}: {what} was written by a newer version of this tool (format {version}; this one reads up to "
            f"{supported}); update the tool, or {fix}"
        )
    return {k: v for k, v in raw.items() if k != FORMAT_KEY}


def load_npy(path: Path) -> np.ndarray:
    """An array saved by `save_npy` (or by RVC's np.save): no pickles; errors name the file and the fix."""
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except (OSError, ValueError, EOFError) as exc:
        raise ExperimentError(
            f"cannot read {str(path)!r} ({exc}); delete it and rerun the step that makes it (2b for pitch and features)"
        ) from None


def save_npy(path: Path, array: np.ndarray) -> None:
    """np.save to `path` exactly (np.save on a name would append '.npy'), atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def _natural_key(name: str) -> tuple[Any, ...]:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def _stems(folder: Path, suffix: str | None) -> list[str]:
    if not folder.is_dir():
        return []
    names = set()
    for path in folder.iterdir():
        if path.name.startswith(".") or path.name.endswith(".tmp"):
            continue
        if suffix is not None and path.suffix != suffix:
            continue
        if suffix is None and is_spec_cache(path.name):
            continue
        names.add(stem(path.name))
    names.discard("")
    return sorted(names, key=_natural_key)


def _has_files(folder: Path, suffix: str) -> bool:
    return folder.is_dir() and any(p.suffix == suffix and not p.name.startswith(".") for p in folder.iterdir())
