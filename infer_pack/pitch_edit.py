"""Pitch curves and the edits a user makes to them, frame-exact on RVC's 10 ms f0 grid.

A curve is float64 [frames], Hz per 10 ms frame (frame k is centred at k * 10 ms of the input; 160
samples at 16 kHz), 0 = unvoiced. Edits are small frozen records over a frame range
[start, end): `Shift` (semitones; cents = semitones / 100), `Octave` (x2 or /2), `Draw` (freehand
points, interpolated per frame), `Unvoice`, `Voice` (pitch interpolated from the voiced neighbours),
`Flatten` (median or smoothed) and `Restore` (back to the extracted values: "keep" the original,
reset). Edits never touch frames outside their range, and the shifting ones leave unvoiced frames
unvoiced. `replay(extracted, edits)` applies an edit list; undo/redo replay a prefix (`EditHistory`).

The curve's files (`write_curve_json` / `read_curve_json`, `write_curve_text` / `read_curve_text`)
are defined in `infer_pack.pitch_file`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from infer_pack.errors import UserInputError

HOP_SECONDS = 0.01  # RVC's f0 hop: 160 samples at 16 kHz
FRAMES_PER_SECOND = 100
FlattenMode = Literal["median", "smooth"]
FLATTEN_MODES: tuple[FlattenMode, ...] = ("median", "smooth")
DEFAULT_SMOOTH_FRAMES = 15  # 150 ms: longer than a vibrato period (5-7 Hz), shorter than a note


class PitchEditError(UserInputError):
    """An edit that does not fit the curve (range outside it, bad value) or a malformed edit record."""


@dataclass(frozen=True)
class _Range:
    start: int  # first frame
    end: int  # one past the last frame

    def check(self, n_frames: int) -> slice:
        """The frames as a slice; raises PitchEditError when the range is empty or outside [0, n_frames]."""
        if not (isinstance(self.start, int) and isinstance(self.end, int)):
            raise PitchEditError(f"{self.describe()}: frames must be whole numbers")
        if not 0 <= self.start < self.end <= n_frames:
            raise PitchEditError(
                f"{self.describe()} does not fit a curve of {n_frames} frames; select frames within 0..{n_frames}"
            )
        return slice(self.start, self.end)

    def describe(self) -> str:
        return f"{type(self).__name__.lower()} of frames [{self.start}, {self.end})"


@dataclass(frozen=True)
class Shift(_Range):
    """Voiced frames move by `semitones` (may be fractional: 0.25 = 25 cents)."""

    semitones: float = 0.0

    def apply(self, curve: np.ndarray, extracted: np.ndarray) -> None:
        frames = self.check(curve.size)
        if not math.isfinite(self.semitones) or abs(self.semitones) > 48:
            raise PitchEditError(f"{self.describe()}: shift {self.semitones!r} semitones is not within +-48")
        curve[frames] *= 2.0 ** (self.semitones / 12.0)  # 0 Hz stays 0


@dataclass(frozen=True)
class Octave(_Range):
    """Octave fix: voiced frames x2 (`up`) or /2."""

    up: bool = True

    def apply(self, curve: np.ndarray, extracted: np.ndarray) -> None:
        curve[self.check(curve.size)] *= 2.0 if self.up else 0.5


@dataclass(frozen=True)
class Unvoice(_Range):
    """The frames become unvoiced (0 Hz): breaths and noise the estimator took for notes."""

    def apply(self, curve: np.ndarray, extracted: np.ndarray) -> None:
        curve[self.check(curve.size)] = 0.0


@dataclass(frozen=True)
class Voice(_Range):
    """Unvoiced frames of the range get pitch: linear in Hz between the nearest voiced frames on either
    side (anywhere in the curve); before the first / after the last voiced frame the nearest voiced
    value is held. Voiced frames keep their pitch. A curve without any voiced frame is left as it is."""

    def apply(self, curve: np.ndarray, extracted: np.ndarray) -> None:
        frames = self.check(curve.size)
        voiced = np.flatnonzero(curve > 0)
        if voiced.size == 0:
            return
        index = np.arange(frames.start, frames.stop)
        gaps = index[curve[frames] <= 0]
        curve[gaps] = np.interp(gaps, voiced, curve[voiced])  # np.interp holds the end values


@dataclass(frozen=True)
class Flatten(_Range):
    """Vibrato and wobble out: voiced frames take their median ("median"), or a moving average of
    their log pitch over `window_frames` within each voiced run ("smooth"). Unvoiced frames stay."""

    mode: FlattenMode = "median"
    window_frames: int = DEFAULT_SMOOTH_FRAMES

    def apply(self, curve: np.ndarray, extracted: np.ndarray) -> None:
        frames = self.check(curve.size)
        if self.mode not in FLATTEN_MODES:
            raise PitchEditError(f"{self.describe()}: unknown mode {self.mode!r}; use median or smooth")
        if not isinstance(self.window_frames, int) or self.window_frames < 1:
            raise PitchEditError(f"{self.describe()}: window_frames must be a whole number >= 1")
        part = curve[frames]  # a view: written in place
        voiced = part > 0
        if not voiced.any():
            return
        if self.mode == "median":
            part[voiced] = float(np.median(part[voiced]))
            return
        for run_start, run_end in voiced_runs(part):
            part[run_start:run_end] = _moving_average_log(part[run_start:run_end], self.window_frames)


@dataclass(frozen=True)
class Restore(_Range):
    """The frames go back to the extracted curve (keep the original vibrato; reset)."""

    def apply(self, curve: np.ndarray, extracted: np.ndarray) -> None:
        frames = self.check(curve.size)
        curve[frames] = extracted[frames]


@dataclass(frozen=True)
class Draw:
    """Freehand: the frames from the first point to the last take the pitch through the points,
    linear in log frequency (straight lines on the editor's semitone axis). Points are (frame, Hz),
    frames may be fractional; frames ceil(first) .. floor(last) are written."""

    points: tuple[tuple[float, float], ...]

    def apply(self, curve: np.ndarray, extracted: np.ndarray) -> None:
        if not self.points:
            raise PitchEditError("draw: no points given; draw at least one point")
        table = np.asarray(self.points, dtype=np.float64).reshape(-1, 2)  # [P, (frame, hz)]
        if not np.isfinite(table).all() or (table[:, 1] <= 0).any():
            raise PitchEditError("draw: every point needs a finite frame and a pitch above 0 Hz; use unvoice for 0")
        table = table[np.argsort(table[:, 0], kind="stable")]
        first, last = math.ceil(table[0, 0]), math.floor(table[-1, 0])
        if first < 0 or last >= curve.size or first > last:
            raise PitchEditError(
                f"draw: points span frames {table[0, 0]:g}..{table[-1, 0]:g}, which holds no whole frame of a curve "
                f"of {curve.size} frames; draw within 0..{curve.size - 1}"
            )
        index = np.arange(first, last + 1)
        curve[first : last + 1] = np.exp2(np.interp(index, table[:, 0], np.log2(table[:, 1])))


Edit = Shift | Octave | Unvoice | Voice | Flatten | Restore | Draw
EDIT_KINDS: dict[str, type[Shift | Octave | Unvoice | Voice | Flatten | Restore | Draw]] = {
    "shift": Shift, "octave": Octave, "unvoice": Unvoice, "voice": Voice, "flatten": Flatten, "restore": Restore,
    "draw": Draw,
}


def voiced_runs(curve: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each stretch of voiced (> 0 Hz) frames."""
    voiced = np.concatenate([[False], np.asarray(curve) > 0, [False]])
    edges = np.flatnonzero(np.diff(voiced.astype(np.int8)))  # rising, falling, rising, ...
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _moving_average_log(run: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of log2 Hz over `window` frames; near the run's ends the window shrinks."""
    logs = np.log2(run)
    half = window // 2
    sums = np.concatenate([[0.0], np.cumsum(logs)])
    index = np.arange(run.size)
    low, high = np.maximum(index - half, 0), np.minimum(index + half + 1, run.size)
    return np.exp2((sums[high] - sums[low]) / (high - low))


def shift_cents(start: int, end: int, cents: float) -> Shift:
    """A shift given in cents (100 cents = 1 semitone)."""
    return Shift(start, end, cents / 100.0)


def replay(extracted: np.ndarray, edits: list[Edit] | tuple[Edit, ...]) -> np.ndarray:
    """The curve after applying `edits` in order to a copy of `extracted` (float64 [frames])."""
    base = check_curve(extracted)
    curve = base.copy()
    for edit in edits:
        edit.apply(curve, base)
    return curve


def check_curve(curve: Any, what: str = "pitch curve") -> np.ndarray:
    """float64 [frames]; raises PitchEditError for another shape or negative / non-finite values."""
    array = np.asarray(curve, dtype=np.float64)
    if array.ndim != 1:
        raise PitchEditError(f"{what} must be one value per frame, got shape {array.shape}")
    if not np.isfinite(array).all() or (array < 0).any():
        raise PitchEditError(f"{what} holds negative or non-finite values; use 0 for unvoiced frames")
    return array


def edit_to_dict(edit: Edit) -> dict[str, Any]:
    """{"op": name, ...fields} (the JSON file's and the browser editor's record of one edit)."""
    op = next(name for name, kind in EDIT_KINDS.items() if type(edit) is kind)
    if isinstance(edit, Draw):
        return {"op": op, "points": [[float(f), float(hz)] for f, hz in edit.points]}
    record: dict[str, Any] = {"op": op, **{k: v for k, v in vars(edit).items()}}
    return record


def edit_from_dict(record: Any) -> Edit:
    """The edit of an {"op": ...} record; raises PitchEditError naming what is wrong."""
    if not isinstance(record, dict) or record.get("op") not in EDIT_KINDS:
        raise PitchEditError(f"not an edit record: {str(record)[:80]!r}; 'op' must be one of {', '.join(EDIT_KINDS)}")
    fields = {k: v for k, v in record.items() if k != "op"}
    kind = EDIT_KINDS[record["op"]]
    try:
        if kind is Draw:
            points = tuple((float(f), float(hz)) for f, hz in fields.pop("points"))
            if fields:
                raise TypeError(f"unexpected fields {sorted(fields)}")
            return Draw(points)
        for name in ("start", "end", "window_frames"):
            if name in fields and isinstance(fields[name], float) and fields[name].is_integer():
                fields[name] = int(fields[name])  # JSON from a browser may write 12.0
        if "semitones" in fields:
            fields["semitones"] = float(fields["semitones"])
        return kind(**fields)
    except (TypeError, ValueError, KeyError) as exc:
        raise PitchEditError(f"bad {record['op']} record {str(record)[:80]!r}: {exc}") from None


@dataclass
class EditHistory:
    """The extracted curve, the edit list and how much of it is applied (undo/redo move `position`)."""

    extracted: np.ndarray  # float64 [frames]
    edits: list[Edit] = field(default_factory=list)
    position: int = -1  # edits[:position] are applied; -1: all

    def __post_init__(self) -> None:
        self.extracted = check_curve(self.extracted, "extracted pitch curve")
        if self.position < 0:
            self.position = len(self.edits)
        if self.position > len(self.edits):
            raise PitchEditError(f"position {self.position} is beyond the {len(self.edits)} edits")

    def curve(self) -> np.ndarray:
        return replay(self.extracted, self.edits[: self.position])

    def push(self, edit: Edit) -> np.ndarray:
        """Apply `edit` after the current position (the undone edits are dropped); returns the new curve."""
        candidate = self.edits[: self.position] + [edit]
        curve = replay(self.extracted, candidate)  # raises before anything changes when the edit does not fit
        self.edits, self.position = candidate, len(candidate)
        return curve

    def undo(self) -> np.ndarray:
        self.position = max(0, self.position - 1)
        return self.curve()

    def redo(self) -> np.ndarray:
        self.position = min(len(self.edits), self.position + 1)
        return self.curve()

    def reset(self) -> np.ndarray:
        """Back to the extracted curve, as an edit of its own (so it can be undone)."""
        return self.push(Restore(0, int(self.extracted.size)))
