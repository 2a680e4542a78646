"""The held-out set: training clips step 2a sets aside for validation (`logs/<exp>/holdout.json`).

Held-out clips get pitch and features in step 2b like every other clip, but never enter
`filelist.txt` (so never a training step) nor the feature index; the trainer evaluates the
generator on them at each epoch end (`train.validation`).

The choice, made again at the end of each step 2a run from what it recorded per source file:
* nothing when `share_percent` is 0 or the dataset has fewer than `MIN_CLIPS` clips (too little to spare);
* the target is `share_percent` of the clips' total length, at least `min_seconds`, at most
  `MAX_SHARE` of the data;
* with several source files, whole files are held out (clips of one recording overlap by 0.3 s and
  share its room and microphone, so clips of a training file would flatter the model), taken in
  an order fixed by their names' hashes (not alphabetical: numbered takes would always lose the last);
* what whole files cannot give within the cap is made up with the last clips of the longest
  remaining file (one contiguous run: one overlap with training audio at most).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from infer_pack.errors import ExperimentError
from infer_pack.fileio import atomic_write_text
from train.experiment import Experiment, read_versioned_json, versioned

HOLDOUT_FORMAT = 1
DEFAULT_SHARE_PERCENT = 3.0
DEFAULT_MIN_SECONDS = 10.0
MAX_SHARE = 0.15  # never more than this share of the clips' audio
MIN_CLIPS = 10  # a smaller dataset keeps every clip for training


@dataclass(frozen=True)
class HeldOutSet:
    """What step 2a set aside, and with which settings."""

    share_percent: float
    min_seconds: float
    segments: tuple[str, ...] = ()  # clip names (as in 0_gt_wavs), sorted
    whole_sources: tuple[str, ...] = ()  # source files held out entirely
    partial_source: str = ""  # the file whose last clips were taken, if any
    seconds: float = 0.0  # total length of the held-out clips
    note: str = ""  # why nothing was held out, when so

    def to_json_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """The health report's line."""
        if not self.segments:
            return f"held out for validation: none ({self.note})"
        files = list(self.whole_sources) + ([f"the end of {self.partial_source}"] if self.partial_source else [])
        return (f"held out for validation: {len(self.segments)} clip(s), {self.seconds:.1f} s "
                f"({self.share_percent:g} %, at least {self.min_seconds:g} s) from {', '.join(files)}; never trained on")


def choose_held_out(
    sources: Mapping[str, Mapping[str, Any]],
    clip_seconds: Mapping[str, float],
    share_percent: float = DEFAULT_SHARE_PERCENT,
    min_seconds: float = DEFAULT_MIN_SECONDS,
) -> HeldOutSet:
    """Pick the held-out clips from step 2a's per-source records (`preprocess_state.json` "sources").

    `clip_seconds`: length of each clip by name. Deterministic: the same records give the same set.
    """
    if share_percent < 0 or min_seconds < 0:
        raise ValueError(f"held-out share {share_percent} % and minimum {min_seconds} s must not be negative")
    done = sorted(
        ((name, [s for s in r.get("segments", []) if s in clip_seconds]) for name, r in sources.items()
         if r.get("status") == "done"),
        key=lambda item: item[0],
    )
    done = [(name, clips) for name, clips in done if clips]
    n_clips = sum(len(clips) for _, clips in done)
    if share_percent == 0:
        return HeldOutSet(share_percent, min_seconds, note="turned off")
    if n_clips < MIN_CLIPS:
        return HeldOutSet(share_percent, min_seconds, note=f"{n_clips} clip(s), fewer than {MIN_CLIPS}: all kept for training")
    total_s = sum(clip_seconds[c] for _, clips in done for c in clips)
    cap_s = MAX_SHARE * total_s
    target_s = min(max(share_percent / 100.0 * total_s, min_seconds), cap_s)
    held: list[str] = []
    whole: list[str] = []
    held_s = 0.0
    if len(done) > 1:
        for name, clips in sorted(done, key=lambda item: hashlib.sha1(item[0].encode("utf-8")).hexdigest()):
            length = sum(clip_seconds[c] for c in clips)
            if held_s >= target_s:
                break
            if held_s + length <= cap_s:
                held += clips
                whole.append(name)
                held_s += length
    partial = ""
    if held_s < target_s:
        rest = [(name, clips) for name, clips in done if name not in whole]
        name, clips = max(rest, key=lambda item: (sum(clip_seconds[c] for c in item[1]), item[0]))
        taken: list[str] = []
        for clip in reversed(clips[1:]):  # the file's first clip always stays in training
            if held_s >= target_s or held_s + clip_seconds[clip] > cap_s:
                break
            taken.append(clip)
            held_s += clip_seconds[clip]
        if taken:
            held += taken
            partial = name
    if not held:
        return HeldOutSet(share_percent, min_seconds, note="no clip fits within the cap")
    return HeldOutSet(share_percent, min_seconds, tuple(sorted(held)), tuple(sorted(whole)), partial, round(held_s, 3))


def write_held_out(experiment: Experiment, held: HeldOutSet) -> None:
    payload = versioned(held.to_json_dict(), HOLDOUT_FORMAT)
    atomic_write_text(experiment.held_out_path, json.dumps(payload, indent=1, sort_keys=True) + "\n")


def read_held_out(experiment: Experiment) -> HeldOutSet | None:
    """The stored choice, or None for an experiment prepared without one (before it existed, or by RVC)."""
    return read_held_out_file(experiment.held_out_path)


def read_held_out_file(path: Path) -> HeldOutSet | None:
    fix = "run step 2a (preprocess) again to choose the held-out clips again"
    data = read_versioned_json(path, HOLDOUT_FORMAT, "held-out set", fix)
    if data is None:
        return None
    try:
        known = {k: v for k, v in data.items() if k in HeldOutSet.__dataclass_fields__}
        for key in ("segments", "whole_sources"):
            known[key] = tuple(str(x) for x in known.get(key, ()))
        return HeldOutSet(**known)
    except (OSError, ValueError, TypeError) as exc:
        raise ExperimentError(f"{path}: unreadable held-out set ({exc}); {fix}") from exc



def update_held_out(
    experiment: Experiment, sources: Mapping[str, Mapping[str, Any]], share_percent: float, min_seconds: float
) -> HeldOutSet:
    """Choose the held-out clips from step 2a's records (clip lengths read from 0_gt_wavs) and store them."""
    import soundfile

    lengths: dict[str, float] = {}
    for record in sources.values():
        if record.get("status") != "done":
            continue
        for name in record.get("segments", []):
            try:
                info = soundfile.info(str(experiment.gt_wav_path(name)))
            except (RuntimeError, OSError):
                continue  # a clip removed by hand is simply not a candidate
            lengths[name] = info.frames / info.samplerate
    held = choose_held_out(sources, lengths, share_percent, min_seconds)
    write_held_out(experiment, held)
    return held
