"""Post-processing of f0 tracks: length fitting, median filter, unvoiced filling, user overrides (f0 files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from infer_pack.errors import UserInputError
from infer_pack.params import PITCH_GAP_MODES, PitchGaps

FRAMES_PER_SECOND = 100  # 16 kHz / hop 160


def fit_to_frames(f0: np.ndarray, n_frames: int, *, centered: bool = False) -> np.ndarray:
    """Pad with 0 (unvoiced) or cut `f0` to `n_frames`.

    `centered=True` splits the padding between both ends like RVC does for parselmouth, whose
    first frame sits half a window into the signal: `(n - len + 1) // 2` zeros in front.
    """
    f0 = np.asarray(f0, dtype=np.float64)
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    if f0.size == n_frames:
        return f0
    if centered and f0.size < n_frames:
        front = (n_frames - f0.size + 1) // 2
        return np.pad(f0, (front, n_frames - f0.size - front))
    if f0.size > n_frames:
        return f0[:n_frames].copy()
    return np.pad(f0, (0, n_frames - f0.size))


def median_filter_f0(f0: np.ndarray, radius: int, *, rvc_compatible: bool = True) -> np.ndarray:
    """RVC's "filter radius" median filter on an f0 track (float64).

    RVC applies it to harvest output only, and its `filter_radius` is just a switch: when it is
    >= 3, `scipy.signal.medfilt(f0, 3)` runs (always 3 taps, whatever the radius). That is what
    `rvc_compatible=True` does. With `rvc_compatible=False` the kernel really is `2 * radius + 1`
    (radius 0 leaves the track unchanged).
    """
    from scipy.signal import medfilt

    f0 = np.asarray(f0, dtype=np.float64)
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    if rvc_compatible:
        return medfilt(f0, 3) if radius > 2 and f0.size else f0.copy()
    return medfilt(f0, 2 * radius + 1) if radius > 0 and f0.size else f0.copy()


def interpolate_unvoiced(f0: np.ndarray) -> np.ndarray:
    """Fill unvoiced (<= 0) frames by linear interpolation between voiced neighbours.

    The ends hold the nearest voiced value: [0, 0, 200, 0, 0, 300, 0] -> [200, 200, 200, 233.3,
    266.7, 300, 300] (what current RVC does before inference and training). An all-unvoiced
    track stays all zeros.
    """
    f0 = np.asarray(f0, dtype=np.float64)
    voiced = f0 > 0
    if not voiced.any() or voiced.all():
        return f0.copy()
    index = np.arange(f0.size)
    return np.interp(index, index[voiced], f0[voiced])




def fill_pitch_gaps(f0: np.ndarray, mode: PitchGaps) -> np.ndarray:
    """What happens to unvoiced (0 Hz) frames before coarse pitch, for training and conversion alike.

    "keep": they stay 0, so the synthesiser sees unvoiced frames and consonant protection acts (RVC
    releases up to 2024, which most published voices were trained with). "interpolate": they are
    filled by `interpolate_unvoiced` (current RVC, 2026 main); the track then has no unvoiced frame
    and protection has nothing to act on.
    """
    if mode == "keep":
        return np.asarray(f0, dtype=np.float64).copy()
    if mode == "interpolate":
        return interpolate_unvoiced(f0)
    raise ValueError(f"unknown pitch gap mode {mode!r}; choose one of {', '.join(PITCH_GAP_MODES)}")


def load_f0_override(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read RVC's f0 file: one "time_seconds,hz" per line. Returns (times float64, hz float64).

    RVC parses it with `float()` on each comma-separated field and keeps float32; blank lines are
    skipped here. Times must be increasing for interpolation to mean anything.
    """
    path = Path(path)
    fix = 'write one "time_in_seconds,frequency_hz" pair per line, e.g. "0.51,220.0"'
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserInputError(f"f0 file {str(path)!r} not found; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read f0 file {str(path)!r} ({exc}); {fix}") from None
    rows: list[tuple[float, float]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        fields = line.split(",")
        try:
            if len(fields) != 2:
                raise ValueError(f"{len(fields)} fields")
            time_s, hz = float(fields[0]), float(fields[1])
        except ValueError:
            raise UserInputError(
                f"f0 file {str(path)!r} line {number} is not 'time,hz': {line[:60]!r}; {fix}"
            ) from None
        if not (np.isfinite(time_s) and np.isfinite(hz)) or time_s < 0 or hz < 0:
            raise UserInputError(f"f0 file {str(path)!r} line {number} has a negative or non-finite value; {fix}")
        rows.append((time_s, hz))
    if not rows:
        raise UserInputError(f"f0 file {str(path)!r} holds no values; {fix}")
    table = np.asarray(rows, dtype=np.float32).astype(np.float64)  # RVC keeps the table as float32
    order = np.argsort(table[:, 0], kind="stable")
    return table[order, 0], table[order, 1]


def apply_f0_override(
    f0: np.ndarray,
    times: np.ndarray,
    hz: np.ndarray,
    *,
    frame_offset: int = 0,
    frames_per_second: int = FRAMES_PER_SECOND,
) -> np.ndarray:
    """Replace the estimate over the override's span by the file's curve (linear between points).

    RVC applies this after the transpose, so the file's values are absolute Hz. `frame_offset` is
    the frame index of time 0 (RVC passes the reflect-padding it added in front, `x_pad * 100`).
    For files starting at time 0 (the usual export of a pitch editor) this equals RVC exactly:
    frames 0 .. round((t_max - t_min) * 100) are replaced. RVC always starts the replaced span at
    frame 0 even when the file starts later, which moves the curve; here it starts at the file's
    first time instead.
    """
    out = np.array(f0, dtype=np.float64, copy=True)
    # RVC holds the table in float32 and scales the times in float32; do the same so the
    # interpolation positions (and the span length) come out identical.
    times32 = np.asarray(times, dtype=np.float32)
    hz32 = np.asarray(hz, dtype=np.float32)
    if times32.size == 0:
        return out
    rate = np.float32(frames_per_second)
    start = int(np.round(times32.min() * rate))
    count = int(np.round((times32.max() - times32.min()) * rate + np.float32(1)))
    positions = start + np.arange(count)
    replacement = np.interp(positions, times32 * rate, hz32)
    begin = frame_offset + start
    end = min(out.size, begin + count)
    if begin < end:
        out[begin:end] = replacement[: end - begin]
    return out


def apply_f0_file(f0: np.ndarray, path: str | Path, *, frame_offset: int = 0) -> np.ndarray:
    """Replace the estimate by a user's pitch curve file, of either format.

    RVC's "time_s,hz" text goes through `load_f0_override` / `apply_f0_override` (RVC's arithmetic).
    The pitch editor's JSON (`infer_pack.pitch_file`) holds one value per 10 ms frame: frames
    `frame_offset` .. `frame_offset + len - 1` take its edited curve exactly (cut at the track's end).
    """
    from infer_pack.pitch_file import is_json_curve, read_curve_json

    if not is_json_curve(path):
        times, hz = load_f0_override(path)
        return apply_f0_override(f0, times, hz, frame_offset=frame_offset)
    curve = read_curve_json(path).curve()
    out = np.array(f0, dtype=np.float64, copy=True)
    end = min(out.size, frame_offset + curve.size)
    if frame_offset < end:
        out[frame_offset:end] = curve[: end - frame_offset]
    return out
