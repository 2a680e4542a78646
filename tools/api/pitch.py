"""User actions of the pitch editor: extract an input's pitch curve (`extract_pitch_curve`) and save an
edited curve as a file a conversion takes (`save_pitch_curve`, then `convert_voice(f0_file=...)`).

The extracted curve is the conversion's own pitch (same estimator, filter, gap filling, transpose and
padding; `infer_pack.pipeline.input_pitch_curve`), so an unedited curve converts exactly like no file.
"""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Unpack

from infer_pack.errors import UserInputError
from infer_pack.params import MAX_INPUT_SECONDS
from infer_pack.progress import CancelToken, ProgressCallback, check, report
from tools.api.common import compute_device, project_of
from tools.api.convert import OUTPUT_DIR_NAME, ConversionOptions, conversion_params
from tools.project import Project

if TYPE_CHECKING:
    import numpy as np

    from infer_pack.cache import ModelCache

PITCH_DIR_NAME = f"{OUTPUT_DIR_NAME}/pitch"  # saved curves (under outputs/: the app serves them for download)
CurveFormat = Literal["json", "txt"]


@dataclass(frozen=True)
class PitchCurveResult:
    """An input's pitch curve as a conversion would use it, and what the editor draws under it."""

    input_path: Path
    f0_method: str
    pitch_semitones: float
    extracted_hz: np.ndarray  # float64 [frames], frame k at k * 10 ms, 0 = unvoiced
    waveform: np.ndarray  # float32 [frames], peak per frame, loudest = 1
    spectrogram_png: bytes  # grayscale, rows evenly spaced in semitones (infer_pack.pitch_view)
    spectrogram_frame_step: int  # column c shows frame c * step
    low_midi: int  # the image's bottom row
    high_midi: int  # its top row
    seconds: float  # wall time

    @property
    def input_seconds(self) -> float:
        return self.extracted_hz.size / 100.0

    def source(self) -> dict[str, Any]:
        return {"input": self.input_path.name, "f0_method": self.f0_method, "pitch_semitones": self.pitch_semitones}

    def curve_json(self) -> dict[str, Any]:
        """The pitch file object (infer_pack.pitch_file) of the unedited curve, without edited_hz (the editor's edits
        change the result)."""
        from infer_pack.pitch_edit import EditHistory
        from infer_pack.pitch_file import curve_json

        return curve_json(EditHistory(self.extracted_hz), self.source(), with_result=False)

    def editor_json(self) -> str:
        """What the browser editor loads: {"curve": pitch file object, "view": spectrogram, waveform, note range}."""
        view = {
            "spectrogram": "data:image/png;base64," + base64.b64encode(self.spectrogram_png).decode("ascii"),
            "frame_step": self.spectrogram_frame_step,
            "low_midi": self.low_midi,
            "high_midi": self.high_midi,
            "waveform": [round(float(v), 3) for v in self.waveform],
        }
        return json.dumps({"curve": self.curve_json(), "view": view}, separators=(",", ":"))

    def summary(self) -> str:
        voiced = int((self.extracted_hz > 0).sum())
        return (f"pitch of {self.input_path.name}: {self.extracted_hz.size} frames ({self.input_seconds:.1f} s), "
                f"{voiced} voiced, {self.f0_method}, transpose {self.pitch_semitones:g}; {self.seconds:.1f} s")


@dataclass(frozen=True)
class PitchFileResult:
    path: Path
    frames: int
    edits: int  # edits applied (undone ones are kept in a JSON file but not counted)
    changed_frames: int  # frames whose pitch differs from the extracted curve

    def summary(self) -> str:
        return f"saved pitch curve {self.path} ({self.frames} frames, {self.edits} edit(s), {self.changed_frames} changed)"


def extract_pitch_curve(
    *,
    project: Project | str | Path,
    input_path: str | Path,
    device: str = "auto",
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto",
    cache: ModelCache | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    max_duration_s: float | None = MAX_INPUT_SECONDS,
    **options: Unpack[ConversionOptions],
) -> PitchCurveResult:
    """The pitch curve a conversion of `input_path` with these options would use (after transpose), with
    the spectrogram and waveform the editor shows. `options`: the conversion parameters by name; the
    pitch ones count (f0_method, pitch_semitones, filter_radius, pitch_gaps). `device` / `precision`
    choose the same context padding the conversion gets there (it changes the estimate near the ends)."""
    from infer_pack.audio import check_input, load_audio
    from infer_pack.errors import AssetMissingError
    from infer_pack.pipeline import SAMPLE_RATE, Windows, input_pitch_curve
    from infer_pack.pitch_view import log_spectrogram, png_bytes, waveform_peaks
    from tools.api.convert import _dtype

    started = time.perf_counter()
    proj = project_of(project)
    params = conversion_params(proj, options)
    path = Path(input_path)
    check_input(path, max_duration_s=max_duration_s)
    if params.f0_method == "rmvpe" and not proj.rmvpe_path.is_file():
        raise AssetMissingError(proj.rmvpe_path, "rmvpe")
    run_on = compute_device(device)
    dtype = _dtype(run_on, precision)
    windows = Windows.for_device(run_on, half=dtype.itemsize == 2)
    report(progress, 0, 3, "loading audio")
    audio = load_audio(path, SAMPLE_RATE, max_duration_s=max_duration_s)
    if audio.shape[0] < 1600:
        raise UserInputError(f"{path.name} is too short ({audio.shape[0] / SAMPLE_RATE:.3f} s); give at least 0.1 s")
    check(cancel)
    report(progress, 1, 3, f"estimating pitch ({params.f0_method})")
    curve = input_pitch_curve(audio, params, windows, rmvpe_path=proj.rmvpe_path, cache=cache, device=run_on)
    check(cancel)
    report(progress, 2, 3, "drawing the spectrogram")
    image = log_spectrogram(audio, curve.size)
    result = PitchCurveResult(
        input_path=path, f0_method=params.f0_method, pitch_semitones=params.pitch_semitones, extracted_hz=curve,
        waveform=waveform_peaks(audio, curve.size), spectrogram_png=png_bytes(image.pixels),
        spectrogram_frame_step=image.frame_step, low_midi=image.low_midi, high_midi=image.high_midi,
        seconds=time.perf_counter() - started,
    )
    report(progress, 3, 3, "done")
    return result


def save_pitch_curve(
    *,
    project: Project | str | Path,
    curve: str | dict[str, Any],
    output_path: str | Path | None = None,
    output_format: CurveFormat = "json",
) -> PitchFileResult:
    """Write an edited curve (the editor's pitch file object, or its JSON text) as a file `convert_voice`'s
    `f0_file` and `convert --f0-file` take: "json" keeps the edit list, "txt" is RVC's "time_s,hz".
    Without `output_path` it goes to outputs/pitch/<input>-pitch.<format> under a new name."""
    import numpy as np

    from infer_pack.pitch_file import history_from_json, write_curve_json, write_curve_text

    if output_format not in ("json", "txt"):
        raise UserInputError(f"unknown pitch file format {output_format!r}; choose json or txt")
    proj = project_of(project)
    try:
        data = json.loads(curve) if isinstance(curve, str) else curve
    except json.JSONDecodeError as exc:
        raise UserInputError(f"the edited pitch curve is not JSON ({exc}); extract the pitch again") from None
    history = history_from_json(data, "<edited curve>")
    source: dict[str, Any] = data["source"] if isinstance(data.get("source"), dict) else {}
    target = Path(output_path) if output_path else _new_curve_path(proj, str(source.get("input", "")), output_format)
    edited = history.curve()
    if output_format == "json":
        write_curve_json(target, history, source)
    else:
        write_curve_text(target, edited)
    changed = int(np.count_nonzero(edited != history.extracted))
    return PitchFileResult(path=target, frames=int(edited.size), edits=history.position, changed_frames=changed)


def _new_curve_path(project: Project, input_name: str, output_format: str) -> Path:
    """outputs/pitch/<input stem>-pitch[-n].<format>, claimed by creating it (no earlier curve is replaced)."""
    from infer_pack.fileio import claim_new_file

    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(input_name).stem).strip("._") or "curve"
    return claim_new_file(project.root / PITCH_DIR_NAME, f"{stem}-pitch", output_format)
