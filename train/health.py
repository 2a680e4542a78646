"""Dataset health report after step 2a: how much usable audio there is and what looks wrong.

Built from `preprocess_state.json` (what preprocessing recorded per source file), saved as
`health.json` in the experiment, with a short text summary for the UI (`health.txt`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from infer_pack.errors import ExperimentError
from infer_pack.fileio import atomic_write_text
from train.experiment import Experiment, read_versioned_json, versioned
from train.holdout import read_held_out
from train.preprocess import read_state

HEALTH_FORMAT = 1  # health.json's format_version

CLIPPED_FRACTION_WARN = 0.001  # a file with more than 0.1 % of samples at full scale is flagged
SILENCE_RATIO_WARN = 0.5
MIN_RECOMMENDED_S = 600.0  # RVC's guidance: about 10 minutes of clean speech or singing


@dataclass(frozen=True)
class HealthReport:
    experiment: str
    sample_rate: int
    files_total: int  # audio files seen (done + failed)
    files_ok: int
    files_failed: list[tuple[str, str]]
    files_skipped: list[tuple[str, str]]  # not training sources (hidden, folders, not audio)
    source_duration_s: float  # decoded length of all good files
    kept_duration_s: float  # inside the sounding parts (after the slicer)
    silence_ratio: float  # share of the source removed as silence (0..1)
    clip_count: int  # training pieces written (0_gt_wavs)
    clips_duration_s: float  # their total length (overlaps counted twice)
    pieces_dropped: int  # pieces refused (peak above 2.5 or silent)
    clipped_samples: int
    clipped_files: list[tuple[str, float]]  # (file, share of samples at full scale) above the warning level
    sample_rates: dict[str, int]  # native rate in Hz (as text, for JSON) -> number of files
    warnings: list[str] = field(default_factory=list)
    held_out_clips: int = 0  # clips set aside for validation (`train.holdout`), included in clip_count
    held_out_s: float = 0.0
    held_out_line: str = ""  # the held-out set's own summary ('' for reports written before it existed)

    def to_json_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_text(self) -> str:
        return self.summary_text()

    def summary_text(self) -> str:
        rates = ", ".join(f"{int(rate) / 1000:g} kHz x{count}" for rate, count in sorted(self.sample_rates.items(), key=lambda kv: int(kv[0])))
        lines = [
            f"Dataset of {self.experiment!r} for a {self.sample_rate / 1000:g} kHz model",
            f"  files: {self.files_ok} processed, {len(self.files_failed)} failed, {len(self.files_skipped)} skipped",
            (
                f"  audio: {_minutes(self.source_duration_s)} in, {_minutes(self.kept_duration_s)} kept "
                f"({self.silence_ratio:.0%} silence removed)"
            ),
            f"  training clips: {self.clip_count} ({_minutes(self.clips_duration_s)}), {self.pieces_dropped} dropped",
            *([f"  {self.held_out_line}"] if self.held_out_line else []),
            f"  source sample rates: {rates or 'none'}",
            (
                f"  clipped samples: {self.clipped_samples}"
                + (f" in {len(self.clipped_files)} file(s) above {CLIPPED_FRACTION_WARN:.1%}" if self.clipped_files else "")
            ),
        ]
        lines += [f"  failed: {name}: {reason}" for name, reason in self.files_failed]
        lines += [f"  skipped: {name}: {reason}" for name, reason in self.files_skipped]
        lines += [f"  warning: {text}" for text in self.warnings]
        return "\n".join(lines)


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:04.1f} s"


def build_health_report(experiment: Experiment) -> HealthReport:
    """The report for what step 2a recorded. Raises ExperimentError when step 2a never ran."""
    state = read_state(experiment)
    records: dict[str, dict[str, Any]] = state.get("sources", {})
    if not records and not state.get("skipped"):
        raise ExperimentError(f"{experiment.preprocess_state_path} is missing; run step 2a (preprocess) first")
    rate = int(state.get("sample_rate", 0))
    done = [r for r in records.values() if r.get("status") == "done"]
    failed = sorted((r["name"], str(r.get("reason", ""))) for r in records.values() if r.get("status") != "done")
    skipped = sorted((str(k), str(v)) for k, v in state.get("skipped", {}).items())
    source_s = sum(float(r.get("duration_s", 0.0)) for r in done)
    kept_s = sum(float(r.get("kept_s", 0.0)) for r in done)
    rates: dict[str, int] = {}
    for r in done:
        key = str(int(r.get("native_sample_rate", 0)))
        rates[key] = rates.get(key, 0) + 1
    clipped_files = []
    for r in done:
        samples = float(r.get("duration_s", 0.0)) * rate
        share = int(r.get("clipped_samples", 0)) / samples if samples else 0.0
        if share > CLIPPED_FRACTION_WARN:
            clipped_files.append((r["name"], share))
    silence_ratio = 1.0 - kept_s / source_s if source_s > 0 else 0.0
    held = read_held_out(experiment)
    report = HealthReport(
        experiment=experiment.name,
        sample_rate=rate,
        files_total=len(records),
        files_ok=len(done),
        files_failed=failed,
        files_skipped=skipped,
        source_duration_s=source_s,
        kept_duration_s=kept_s,
        silence_ratio=max(0.0, silence_ratio),
        clip_count=sum(len(r.get("segments", [])) for r in done),
        clips_duration_s=sum(float(r.get("segments_s", 0.0)) for r in done),
        pieces_dropped=sum(len(r.get("dropped", [])) for r in done),
        clipped_samples=sum(int(r.get("clipped_samples", 0)) for r in done),
        clipped_files=sorted(clipped_files),
        sample_rates=rates,
        held_out_clips=len(held.segments) if held is not None else 0,
        held_out_s=held.seconds if held is not None else 0.0,
        held_out_line=held.summary() if held is not None else "",
    )
    report.warnings.extend(_warnings(report))
    return report


def _warnings(report: HealthReport) -> list[str]:
    found = []
    if report.clip_count == 0:
        found.append("no training clip was produced; check the files listed as failed or skipped")
    elif report.kept_duration_s < MIN_RECOMMENDED_S:
        found.append(
            f"only {_minutes(report.kept_duration_s)} of sound; voices usually need about 10 minutes of clean recordings"
        )
    if report.silence_ratio > SILENCE_RATIO_WARN:
        found.append(f"{report.silence_ratio:.0%} of the audio is silence (below -42 dB); check for long pauses or very quiet takes")
    if report.clipped_files:
        found.append(f"{len(report.clipped_files)} file(s) are clipped (flat tops at full scale); distorted input teaches the model distortion")
    low = sorted(int(r) for r in report.sample_rates if 0 < int(r) < report.sample_rate)
    if low:
        found.append(
            f"some files are recorded at {', '.join(f'{r / 1000:g} kHz' for r in low)}, below the model rate "
            f"{report.sample_rate / 1000:g} kHz; they carry nothing above {low[0] / 2000:g} kHz (consider a lower model rate)"
        )
    return found


def write_health_report(experiment: Experiment) -> HealthReport:
    """Build the report and save `health.json` and `health.txt` in the experiment (atomic writes)."""
    report = build_health_report(experiment)
    payload = versioned(report.to_json_dict(), HEALTH_FORMAT)
    atomic_write_text(experiment.health_json_path, json.dumps(payload, indent=2) + "\n")
    atomic_write_text(experiment.health_text_path, report.summary_text() + "\n")
    return report


def read_health_report(experiment: Experiment) -> HealthReport | None:
    path = experiment.health_json_path
    fix = "run step 2a again to rebuild it"
    raw = read_versioned_json(path, HEALTH_FORMAT, "health report", fix)
    if raw is None:
        return None
    try:
        raw["files_failed"] = [tuple(x) for x in raw["files_failed"]]
        raw["files_skipped"] = [tuple(x) for x in raw["files_skipped"]]
        raw["clipped_files"] = [tuple(x) for x in raw["clipped_files"]]
        return HealthReport(**raw)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExperimentError(f"{path}: unreadable health report ({exc}); {fix}") from exc
