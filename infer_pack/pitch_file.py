"""The pitch curve's files: the editor's JSON (curve + edit list) and RVC's "time_s,hz" text.

JSON (`.json`, written by `write_curve_json`), one object:

    {
      "format": "rvc-pitch-curve",   # fixed: tells this file from other JSON
      "version": 1,                  # newer versions are refused, with the fix
      "hop_seconds": 0.01,           # frame spacing (RVC's f0 hop: 160 samples at 16 kHz); only 0.01 is read
      "source": {...},               # what made the curve (input name, f0 method, transpose): information only
      "extracted_hz": [float, ...],  # the curve as extracted (after transpose), Hz per frame, 0 = unvoiced
      "edits": [{"op": "shift", "start": 120, "end": 180, "semitones": 2.0}, ...],
      "position": 1,                 # edits[:position] are applied (the rest were undone: redo)
      "edited_hz": [float, ...]      # the result, for other programs; must equal the replayed edits
    }

Frame k is at k * hop_seconds of the input. Edit records: `infer_pack.pitch_edit.edit_to_dict`.
A conversion given this file (`--f0-file x.json`) replaces frames 0 .. len(edited_hz) - 1 of its
pitch by `edited_hz` exactly (`infer_pack.f0.filters.apply_f0_file`).

Text (`.txt` / `.csv`): RVC's f0 file, "time_s,hz" lines. `write_curve_text` picks float32 times for
which RVC's float32 arithmetic (time * 100, then interpolation at whole frames) gives each frame's
pitch exactly (`grid_times`), so RVC and this project read the curve back frame-exactly too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from infer_pack.errors import UserInputError
from infer_pack.pitch_edit import (
    FRAMES_PER_SECOND,
    HOP_SECONDS,
    EditHistory,
    PitchEditError,
    check_curve,
    edit_from_dict,
    edit_to_dict,
)

FORMAT_NAME = "rvc-pitch-curve"
FORMAT_VERSION = 1
JSON_SUFFIX = ".json"


class PitchFileError(UserInputError):
    """A pitch curve file that cannot be read; the message names the file and the fix."""

    def __init__(self, path: str | Path, reason: str, fix: str = "") -> None:
        self.path = str(path)
        fix = fix or "save the curve again from the pitch editor, or give a 'time_s,hz' text file"
        super().__init__(f"pitch curve file {self.path!r}: {reason}; {fix}")


def is_json_curve(path: str | Path) -> bool:
    return Path(path).suffix.lower() == JSON_SUFFIX


def curve_json(history: EditHistory, source: dict[str, Any] | None = None, *, with_result: bool = True) -> dict[str, Any]:
    """The JSON object of `history` (see the module's docstring); `with_result=False` leaves out edited_hz
    (the browser editor's copy, whose edits change)."""
    data = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "hop_seconds": HOP_SECONDS,
        "source": dict(source or {}),
        "extracted_hz": [float(v) for v in history.extracted],
        "edits": [edit_to_dict(edit) for edit in history.edits],
        "position": history.position,
    }
    if with_result:
        data["edited_hz"] = [float(v) for v in history.curve()]
    return data


def write_curve_json(path: str | Path, history: EditHistory, source: dict[str, Any] | None = None) -> Path:
    """Write the editor's JSON atomically; returns the path."""
    from infer_pack.fileio import atomic_write_text

    atomic_write_text(path, json.dumps(curve_json(history, source), separators=(",", ":")) + "\n")
    return Path(path)


def history_from_json(data: Any, path: str | Path = "<json>") -> EditHistory:
    """The edit history held by a parsed JSON object; errors name `path`."""
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise PitchFileError(path, f"not a pitch curve (its 'format' is not {FORMAT_NAME!r})")
    version = data.get("version")
    if not isinstance(version, int) or version < 1:
        raise PitchFileError(path, f"bad 'version' {version!r}")
    if version > FORMAT_VERSION:
        raise PitchFileError(path, f"format version {version} is newer than this program reads ({FORMAT_VERSION})",
                             "update this program, or export the curve as 'time_s,hz' text")
    if data.get("hop_seconds") != HOP_SECONDS:
        raise PitchFileError(path, f"hop_seconds is {data.get('hop_seconds')!r}; only RVC's 0.01 s frames are read")
    edits = data.get("edits", [])
    if not isinstance(edits, list):
        raise PitchFileError(path, "'edits' is not a list")
    try:
        history = EditHistory(
            check_curve(data.get("extracted_hz"), "extracted_hz"),
            [edit_from_dict(record) for record in edits],
            int(data.get("position", len(edits))),
        )
        curve = history.curve()
    except (PitchEditError, TypeError, ValueError) as exc:
        raise PitchFileError(path, str(exc)) from None
    if "edited_hz" in data:
        try:
            stored = check_curve(data["edited_hz"], "edited_hz")
        except (PitchEditError, TypeError, ValueError) as exc:
            raise PitchFileError(path, str(exc)) from None
        if stored.shape != curve.shape or not np.allclose(stored, curve, rtol=1e-9, atol=1e-9):
            raise PitchFileError(path, "edited_hz differs from the curve its edit list gives",
                                 "remove 'edited_hz' (it is written for other programs) or fix the edits")
    return history


def read_curve_json(path: str | Path) -> EditHistory:
    """Read the editor's JSON; raises PitchFileError naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PitchFileError(path, "not found", "check the path") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PitchFileError(path, f"unreadable JSON ({exc})") from None
    return history_from_json(data, path)


def grid_times(n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """The text file's times for frames 0 .. n_frames - 1: (float32 times [L], frame of each time [L]).

    RVC scales each time by 100 in float32 and interpolates the table at the whole frame indices. A
    frame k gets the float32 time whose product is exactly k where one exists (about 88% of frames);
    otherwise two lines: the nearest times whose products lie just below and just above k, both with
    the frame's pitch, so the interpolation at k gives that pitch exactly.
    """
    index = np.arange(n_frames)
    rate = np.float32(FRAMES_PER_SECOND)
    near = (index / FRAMES_PER_SECOND).astype(np.float32)
    low, high = near.copy(), near.copy()  # raised / lowered until their products straddle k
    for _ in range(8):
        below = low * rate > index
        above = high * rate < index
        if not (below.any() or above.any()):
            break
        low[below] = np.nextafter(low[below], np.float32(0))
        high[above] = np.nextafter(high[above], np.float32(np.inf))
    exact = (low * rate == index) | (high * rate == index)
    single = np.where(low * rate == index, low, high)
    times = np.where(exact[:, None], single[:, None], np.stack([low, high], axis=1))  # [n_frames, 2]
    keep = np.stack([np.ones(n_frames, dtype=bool), ~exact], axis=1)  # the exact frames' second column is unused
    return times[keep], np.repeat(index, keep.sum(axis=1))


def write_curve_text(path: str | Path, curve: np.ndarray) -> Path:
    """RVC's f0 file: "time_s,hz" lines on the 10 ms grid that RVC and this project read back frame-exactly
    (float32 pitch; see `grid_times`)."""
    from infer_pack.fileio import atomic_write_text

    hz = check_curve(curve).astype(np.float32)
    times, frames = grid_times(hz.size)
    lines = [f"{float(t)!r},{float(hz[k])!r}" for t, k in zip(times, frames, strict=True)]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return Path(path)


def read_curve_text(path: str | Path) -> np.ndarray:
    """A "time_s,hz" file as a curve on the 10 ms grid (frames 0 .. the last time), as a conversion applies it:
    frames before the first time are unvoiced."""
    from infer_pack.f0.filters import apply_f0_override, load_f0_override

    times, hz = load_f0_override(path)
    last = int(np.round(np.float32(times.max()) * np.float32(FRAMES_PER_SECOND)))
    return apply_f0_override(np.zeros(last + 1), times, hz)


def read_curve(path: str | Path) -> EditHistory:
    """Either format: JSON with its edits, or text as an extracted curve without edits."""
    if is_json_curve(path):
        return read_curve_json(path)
    return EditHistory(read_curve_text(path))
