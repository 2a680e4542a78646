"""User actions of the Model tools tab: show / change a voice's info, merge two voices, extract a
small voice model from a training checkpoint, export a voice to ONNX.

Paths arrive resolved (the UI and CLI confine what users type to the project); each function
takes keyword arguments, builds a typed request and returns a typed result with `summary()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from configs import SAMPLE_RATE_TAGS, VERSIONS, SampleRateTag, Version
from infer_pack.errors import UserInputError
from infer_pack.progress import CancelToken, ProgressCallback


def _existing(path: str | Path, what: str) -> Path:
    resolved = Path(path)
    if not resolved.is_file():
        raise UserInputError(
            f"{what} {str(resolved)!r} does not exist; pick an existing .pth file"
        )
    return resolved


# -- show / change info ------------------------------------------------------------------------


@dataclass(frozen=True)
class VoiceInfoResult:
    path: Path
    version: str
    sample_rate_tag: str
    sample_rate: int
    use_f0: bool
    info: str
    speaker_count: int
    parameter_count: int
    file_size_bytes: int
    extra_keys: tuple[str, ...]
    text: str
    # speaker_count is emb_g's row count; these are the ids trained, when the file records them
    trained_speakers: tuple[int, ...] | None = None

    def summary(self) -> str:
        return self.text


def show_voice_info(*, path: str | Path) -> VoiceInfoResult:
    """Read a voice model's metadata (version, rate, pitch, info text, sizes)."""
    from train.export import describe_voice

    s = describe_voice(_existing(path, "voice model"))
    return VoiceInfoResult(
        path=s.path,
        version=s.version,
        sample_rate_tag=s.sample_rate_tag,
        sample_rate=s.sample_rate,
        use_f0=s.use_f0,
        info=s.info,
        speaker_count=s.speaker_count,
        parameter_count=s.parameter_count,
        file_size_bytes=s.file_size_bytes,
        extra_keys=tuple(s.extra_keys),
        text=s.to_text(),
        trained_speakers=s.trained_speakers,
    )


@dataclass(frozen=True)
class ChangeInfoRequest:
    path: Path
    info: str
    output_path: Path | None = None  # None: rewrite in place


@dataclass(frozen=True)
class ChangeInfoResult:
    path: Path
    info: str

    def summary(self) -> str:
        return f"info of {self.path.name} is now: {self.info}"


def change_voice_info(
    *, path: str | Path, info: str, output_path: str | Path | None = None
) -> ChangeInfoResult:
    """Replace the info text of a voice (atomic; in place, or saved as `output_path`)."""
    from train.export import change_voice_info as rewrite

    request = ChangeInfoRequest(
        _existing(path, "voice model"), info, Path(output_path) if output_path else None
    )
    written = rewrite(request.path, request.info, request.output_path)
    return ChangeInfoResult(path=written, info=request.info)


# -- merge -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MergeRequest:
    path_a: Path
    path_b: Path
    ratio_a: float  # weight of A, 0..1
    output_path: Path
    info: str = ""

    def validate(self) -> None:
        if not 0.0 <= self.ratio_a <= 1.0:
            raise UserInputError(
                f"merge ratio {self.ratio_a} must lie between 0 and 1 (the weight of voice A)"
            )
        if self.output_path.suffix != ".pth":
            raise UserInputError(
                f"merged voice {str(self.output_path)!r} must be a .pth file"
            )


@dataclass(frozen=True)
class MergeResult:
    path: Path
    ratio_a: float

    def summary(self) -> str:
        return f"merged voice written to {self.path} (A {self.ratio_a:g}, B {1 - self.ratio_a:g})"


def merge_voices(
    *,
    path_a: str | Path,
    path_b: str | Path,
    ratio_a: float = 0.5,
    output_path: str | Path,
    info: str = "",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> MergeResult:
    """Blend two voices of the same architecture: ratio_a * A + (1 - ratio_a) * B."""
    from train.export import merge_voices as merge

    request = MergeRequest(
        _existing(path_a, "voice A"),
        _existing(path_b, "voice B"),
        float(ratio_a),
        Path(output_path),
        info,
    )
    request.validate()
    written = merge(
        request.path_a,
        request.path_b,
        request.ratio_a,
        request.output_path,
        info=request.info,
        progress=progress,
        cancel=cancel,
    )
    return MergeResult(path=written, ratio_a=request.ratio_a)


# -- extract a small model ---------------------------------------------------------------------


@dataclass(frozen=True)
class ExtractRequest:
    checkpoint_path: Path
    output_path: Path
    sample_rate_tag: SampleRateTag | None = None  # None: read from the weights
    version: Version | None = None
    use_f0: bool | None = None
    info: str = ""

    def validate(self) -> None:
        if (
            self.sample_rate_tag is not None
            and self.sample_rate_tag not in SAMPLE_RATE_TAGS
        ):
            raise UserInputError(
                f"sample rate {self.sample_rate_tag!r} must be one of {', '.join(SAMPLE_RATE_TAGS)}"
            )
        if self.version is not None and self.version not in VERSIONS:
            raise UserInputError(f"version {self.version!r} must be v1 or v2")


@dataclass(frozen=True)
class ExtractResult:
    path: Path
    version: str
    sample_rate_tag: str
    use_f0: bool

    def summary(self) -> str:
        pitch = "with" if self.use_f0 else "without"
        return f"voice written to {self.path} ({self.version}, {self.sample_rate_tag}, {pitch} pitch)"


def extract_small_model(
    *,
    checkpoint_path: str | Path,
    output_path: str | Path,
    sample_rate_tag: SampleRateTag | None = None,
    version: Version | None = None,
    use_f0: bool | None = None,
    info: str = "",
) -> ExtractResult:
    """Write the voice model of a G_*.pth training checkpoint (values given are checked against the weights)."""
    from train.export import extract_small_model as extract

    request = ExtractRequest(
        _existing(checkpoint_path, "checkpoint"),
        Path(output_path),
        sample_rate_tag,
        version,
        use_f0,
        info,
    )
    request.validate()
    written, layout = extract(
        request.checkpoint_path,
        request.output_path,
        sample_rate_tag=request.sample_rate_tag,
        use_f0=request.use_f0,
        version=request.version,
        info=request.info,
    )
    return ExtractResult(
        path=written,
        version=layout.version,
        sample_rate_tag=layout.sample_rate_tag,
        use_f0=layout.use_f0,
    )


# -- ONNX --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OnnxResult:
    path: Path
    input_names: tuple[str, ...]
    opset: int

    def summary(self) -> str:
        return (
            f"ONNX model written to {self.path} (opset {self.opset}; inputs {', '.join(self.input_names)}; "
            "rnd = prior noise, zeros for a deterministic result)"
        )


def export_onnx(
    *, path: str | Path, output_path: str | Path | None = None, opset: int = 17
) -> OnnxResult:
    """Export a voice to ONNX (default output: beside the voice, same name, .onnx)."""
    from train.onnx_export import export_onnx as export

    source = _existing(path, "voice model")
    target = Path(output_path) if output_path else source.with_suffix(".onnx")
    if target.suffix != ".onnx":
        raise UserInputError(f"ONNX output {str(target)!r} must end in .onnx")
    result = export(source, target, opset=opset)
    return OnnxResult(
        path=result.path, input_names=tuple(result.input_names), opset=result.opset
    )
