"""User actions: convert one audio file (`convert_voice`) or every audio file of a folder (`convert_batch`).

Loaded models live in the `ModelCache` passed in (the app keeps one): the content encoder under the
same key the feature extraction uses, the synthesiser per (voice file, device, dtype), the index per
file. A batch logs and counts the files that fail and goes on with the others.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict, Unpack

from infer_pack.errors import CancelledError, RVCError, UserInputError
from infer_pack.params import MAX_INPUT_SECONDS
from infer_pack.progress import CancelToken, ProgressCallback, check, report
from tools.api.assets import default_f0_method
from tools.api.common import compute_device, project_of
from tools.project import Project

if TYPE_CHECKING:
    import numpy as np
    import torch

    from infer_pack.cache import ModelCache
    from infer_pack.f0.filters import PitchGaps
    from infer_pack.params import ConversionParams, Decoder
    from infer_pack.pipeline import VoiceConverter

log = logging.getLogger(__name__)

OutputFormat = Literal["wav", "flac", "mp3", "m4a"]
Precision = Literal["auto", "fp32", "fp16", "bf16"]  # auto: fp32 on CPU, fp16 on CUDA
OUTPUT_FORMATS: tuple[str, ...] = ("wav", "flac", "mp3", "m4a")
OUTPUT_DIR_NAME = "outputs"  # <project>/outputs/: where single conversions go unless told otherwise
DEFAULT_BATCH_DIR = f"{OUTPUT_DIR_NAME}/batch"  # the Batch tab's output folder (served: its results download)


class ConversionOptions(TypedDict, total=False):
    """The conversion parameters the actions take as keywords (`convert_voice(..., index_rate=0.5)`).

    Their defaults, ranges, units and help live on `infer_pack.pipeline.ConversionParams` (one place;
    the tabs and the command line are built from it); a test keeps these names equal to its fields.
    `f0_method` None (or absent): rmvpe when rmvpe.pt is present, else swift.
    """

    pitch_semitones: float
    f0_method: str | None
    index_rate: float
    filter_radius: int
    resample_hz: int
    rms_mix_rate: float
    protect: float
    pitch_gaps: PitchGaps
    decoder: Decoder
    speaker_id: int
    seed: int | None


@dataclass(frozen=True)
class ConvertRequest:
    """One conversion, resolved: the files and where it runs, plus the validated parameters."""

    model: Path  # voice .pth
    input_path: Path
    params: ConversionParams
    output_path: Path | None = None  # None: a new name under <project>/outputs/ (`single_output_path`)
    index_path: Path | None = None
    output_format: OutputFormat = "wav"
    device: str = "auto"
    precision: Precision = "auto"


@dataclass(frozen=True)
class ConvertResult:
    output_path: Path
    sample_rate: int  # Hz
    input_seconds: float
    seconds: float  # wall time of the conversion (loading included)
    index_used: Path | None
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def realtime_factor(self) -> float:
        return self.seconds / self.input_seconds if self.input_seconds > 0 else 0.0

    def summary(self) -> str:
        index = f"index {self.index_used.name}" if self.index_used else "no index"
        stages = ", ".join(f"{name} {value:.2f} s" for name, value in self.stage_seconds.items())
        return (
            f"converted {self.input_seconds:.1f} s of audio in {self.seconds:.1f} s "
            f"({self.realtime_factor:.2f}x real time; {index}) -> {self.output_path} at {self.sample_rate} Hz"
            + (f"\ntimes: {stages}" if stages else "")
        )


@dataclass(frozen=True)
class BatchResult:
    output_dir: Path
    converted: list[Path]
    failed: list[tuple[Path, str]]  # (input file, reason)
    seconds: float
    zip_path: Path | None = None  # every converted file in one zip (convert_batch(zip_results=True))

    def outcome(self) -> str:
        """A few words for the job's status line: "" when every file converted, else "1 of 3 failed"."""
        total = len(self.converted) + len(self.failed)
        return f"{len(self.failed)} of {total} failed" if self.failed else ""

    def summary(self) -> str:
        lines = [f"converted {len(self.converted)} file(s), {len(self.failed)} failed, into {self.output_dir}"]
        if self.zip_path is not None:
            lines.append(f"all results in one zip: {self.zip_path}")
        lines += [f"  {path.name}: {reason}" for path, reason in self.failed]
        return "\n".join(lines)


def conversion_params(project: Project, options: ConversionOptions, f0_file: str | Path | None = None) -> ConversionParams:
    """The validated parameters from an action's keywords (unnamed ones keep ConversionParams' defaults)."""
    from infer_pack.params import PARAM_SPECS, ConversionParams

    unknown = sorted(set(options) - set(PARAM_SPECS))
    if unknown:
        raise UserInputError(f"unknown conversion parameter(s) {', '.join(unknown)}; known: {', '.join(PARAM_SPECS)}")
    values: dict[str, Any] = dict(options)
    if values.get("f0_method") is None:
        values["f0_method"] = default_f0_method(project)
    return ConversionParams(**values, f0_override_path=Path(f0_file) if f0_file else None).validated()


def _dtype(device: str, precision: str) -> torch.dtype:
    import torch

    if precision == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    choices = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision not in choices:
        raise UserInputError(f"unknown precision {precision!r}; choose auto, fp32, fp16 or bf16")
    if precision == "fp16" and not device.startswith("cuda"):
        raise UserInputError("fp16 needs a CUDA device; use fp32 (or bf16) on the CPU")
    return choices[precision]


def load_converter(
    project: Project,
    model: Path,
    index_path: Path | None,
    device: str,
    cache: ModelCache,
    precision: str = "auto",
    engine: str = "auto",
) -> VoiceConverter:
    """The voice, its synthesiser, the content encoder and the index, from the cache or loaded into it.

    engine "auto" runs the decoder in ONNX Runtime on a float32 CPU converter (same audio within
    5e-7, about a third faster here; the graph is exported once per voice into a cache folder) and
    in torch everywhere else.
    """
    import torch

    from infer_pack.cache import file_key
    from infer_pack.checkpoint import build_synthesizer, load_voice
    from infer_pack.errors import AssetMissingError
    from infer_pack.hubert import load_content_encoder
    from infer_pack.pipeline import VoiceConverter
    from infer_pack.retrieval import load_index
    from train.index import added_index_for

    if not model.is_file():
        raise UserInputError(f"voice model {str(model)!r} not found; pick one from weights/ or export one in the Train tab")
    dtype = _dtype(device, precision)
    voice_key = file_key(model)
    voice = cache.get_or_load(("voice", voice_key), lambda: load_voice(model))
    synthesizer = cache.get_or_load(
        ("synthesizer", voice_key, device, str(dtype)), lambda: build_synthesizer(voice, device, dtype)
    )
    if not project.hubert_path.is_file():
        raise AssetMissingError(project.hubert_path, "hubert")
    # The key the feature extraction uses too, so both share one loaded encoder.
    encoder = cache.get_or_load(
        ("hubert", file_key(project.hubert_path), device),
        lambda: load_content_encoder(project.hubert_path, device=device),
    )
    index = None
    if index_path is not None:
        resolved = added_index_for(index_path)  # RVC: a picked trained_* file means its added_* twin
        index = cache.get_or_load(("index", file_key(resolved)), lambda: load_index(resolved))
    if engine not in ("auto", "torch", "onnx"):
        raise UserInputError(f"unknown engine {engine!r}; choose auto, torch or onnx")
    if engine == "auto":
        engine = "onnx" if device == "cpu" and dtype == torch.float32 else "torch"
    try:
        return VoiceConverter(
            voice,
            encoder,
            index,
            device,
            synthesizer=synthesizer,
            dtype=dtype,
            rmvpe_path=project.rmvpe_path,
            cache=cache,
            engine=engine,  # type: ignore[arg-type]
        )
    except (ImportError, OSError, RuntimeError) as exc:
        if engine != "onnx":
            raise
        log.warning("ONNX Runtime engine unavailable for %s (%s); converting with torch", model, exc)
        return VoiceConverter(
            voice, encoder, index, device, synthesizer=synthesizer, dtype=dtype, rmvpe_path=project.rmvpe_path, cache=cache
        )


def _require_rmvpe(project: Project, converter: VoiceConverter, params: ConversionParams) -> None:
    from infer_pack.errors import AssetMissingError

    if converter.use_f0 and params.f0_method == "rmvpe" and not project.rmvpe_path.is_file():
        raise AssetMissingError(project.rmvpe_path, "rmvpe")


def write_audio(path: Path, audio: np.ndarray, sample_rate: int, output_format: str) -> None:
    """16-bit WAV/FLAC (what RVC writes), MP3 through libsndfile, M4A (AAC) through PyAV; atomically."""
    import soundfile

    from infer_pack.audio import write_wav
    from infer_pack.fileio import atomic_path

    if output_format == "wav":
        write_wav(path, audio, sample_rate, subtype="PCM_16")
        return
    if output_format in ("flac", "mp3"):
        fmt, subtype = ("FLAC", "PCM_16") if output_format == "flac" else ("MP3", "MPEG_LAYER_III")
        with atomic_path(path) as tmp:
            soundfile.write(str(tmp), audio, sample_rate, format=fmt, subtype=subtype)
        return
    if output_format == "m4a":
        with atomic_path(path) as tmp:
            _write_m4a(tmp, audio, sample_rate)
        return
    raise UserInputError(f"unknown output format {output_format!r}; choose one of {', '.join(OUTPUT_FORMATS)}")


def _write_m4a(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    import av
    import numpy as np

    # [T] mono or [T, 2] stereo (separated stems) -> [channels, T] planar
    planar = audio[None] if audio.ndim == 1 else audio.T
    layout = {1: "mono", 2: "stereo"}.get(planar.shape[0])
    if layout is None:
        raise UserInputError(f"M4A output takes mono or stereo audio, not {planar.shape[0]} channels")
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=sample_rate)
        stream.layout = layout
        samples = np.ascontiguousarray(np.clip(planar, -1.0, 1.0), dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def _convert_file(
    converter: VoiceConverter,
    input_path: Path,
    output_path: Path,
    params: ConversionParams,
    output_format: str,
    progress: ProgressCallback | None,
    cancel: CancelToken | None,
    max_duration_s: float | None,
) -> tuple[int, float]:
    from infer_pack.audio import load_audio
    from infer_pack.pipeline import SAMPLE_RATE

    audio = load_audio(input_path, SAMPLE_RATE, max_duration_s=max_duration_s, decoder=params.decoder)
    out, rate = converter.convert(audio, params, progress, cancel)
    write_audio(output_path, out, rate, output_format)
    return rate, audio.shape[0] / SAMPLE_RATE


def convert_voice(
    *,
    project: Project | str | Path,
    model: str | Path,
    input_path: str | Path,
    output_path: str | Path | None = None,
    index_path: str | Path | None = None,
    f0_file: str | Path | None = None,
    output_format: OutputFormat = "wav",
    device: str = "auto",
    precision: Precision = "auto",
    cache: ModelCache | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    max_duration_s: float | None = MAX_INPUT_SECONDS,
    **options: Unpack[ConversionOptions],
) -> ConvertResult:
    """Convert one audio file with a voice model (and optionally its feature index).

    `options`: the conversion parameters by name (`ConversionOptions`; defaults on ConversionParams).
    The input is checked from its header (exists, audio, plausible rate, at most `max_duration_s`)
    before any model is loaded. Without `output_path` the result goes to `outputs/` under a name that
    says what made it and never replaces an earlier result (`single_output_path`).
    """
    from infer_pack.audio import check_input
    from infer_pack.cache import ModelCache

    started = time.perf_counter()
    proj = project_of(project)
    if output_format not in OUTPUT_FORMATS:
        raise UserInputError(f"unknown output format {output_format!r}; choose one of {', '.join(OUTPUT_FORMATS)}")
    request = ConvertRequest(
        model=Path(model), input_path=Path(input_path), params=conversion_params(proj, options, f0_file),
        output_path=Path(output_path) if output_path else None, index_path=Path(index_path) if index_path else None,
        output_format=output_format, device=device, precision=precision,
    )
    params = request.params
    check_input(request.input_path, max_duration_s=max_duration_s)
    cache = cache if cache is not None else ModelCache()
    converter = load_converter(proj, request.model, request.index_path, compute_device(request.device), cache, precision)
    _require_rmvpe(proj, converter, params)
    if request.output_path is not None:
        target = request.output_path
        rate, input_seconds = _convert_file(
            converter, request.input_path, target, params, request.output_format, progress, cancel, max_duration_s
        )
    else:
        target = single_output_path(proj.root / OUTPUT_DIR_NAME, request)
        try:
            rate, input_seconds = _convert_file(
                converter, request.input_path, target, params, request.output_format, progress, cancel, max_duration_s
            )
        except BaseException:
            target.unlink(missing_ok=True)  # the reserved name, never written
            raise
    times = converter.last_times
    return ConvertResult(
        output_path=target,
        sample_rate=rate,
        input_seconds=input_seconds,
        seconds=time.perf_counter() - started,
        index_used=converter.index.path if converter.index is not None and params.index_rate > 0 else None,
        stage_seconds={"features": times.features, "f0": times.f0, "synthesis": times.synthesis},
    )


def single_output_path(folder: Path, request: ConvertRequest) -> Path:
    """`<input>_<voice>_<method>[_<n>st].<format>` in `folder`, reserved so that no other result takes it.

    Converting the same input again (another method, another user converting a file of the same name
    at the same moment) gets `-2`, `-3`, ...: the name is claimed by creating the file exclusively,
    and the conversion later replaces that empty file atomically.
    """
    from infer_pack.fileio import claim_new_file

    pitch = request.params.pitch_semitones
    shift = f"_{pitch:g}st" if pitch else ""  # "_12st", "_-3st" (no "+": web servers drop it from names)
    base = f"{request.input_path.stem}_{request.model.stem}_{request.params.f0_method}{shift}"
    return claim_new_file(folder, base, request.output_format)


def batch_output_names(inputs: list[Path], output_format: str) -> list[str]:
    """`<stem>.<format>` per input (`song.mp3` -> `song.wav`; RVC writes `song.mp3.wav`), unique in the batch.

    Inputs sharing a stem (`a.wav`, `a.mp3`, or two uploads named `a.wav`) keep their extension in the
    name (`a-wav.wav`, `a-mp3.wav`); what still clashes gets `-2`, `-3`, ... Names are compared without
    case, so none overwrites another on a case-insensitive disk either.
    """
    stem_counts: dict[str, int] = {}
    for path in inputs:
        stem_counts[path.stem.lower()] = stem_counts.get(path.stem.lower(), 0) + 1
    taken: set[str] = set()
    names = []
    for path in inputs:
        extension = path.suffix.lstrip(".")
        base = path.stem if stem_counts[path.stem.lower()] == 1 or not extension else f"{path.stem}-{extension}"
        name, number = base, 1
        while name.lower() in taken:
            number += 1
            name = f"{base}-{number}"
        taken.add(name.lower())
        names.append(f"{name}.{output_format}")
    return names


def batch_zip_name(model: Path) -> str:
    """The zip of a batch's results, in its output folder (`<voice>-converted.zip`)."""
    return f"{model.stem}-converted.zip"


def _write_zip(target: Path, files: list[Path]) -> Path:
    """All `files` (by name) in one zip, written atomically; stored, not deflated: audio barely compresses."""
    import zipfile

    from infer_pack.fileio import atomic_path

    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for path in files:
            archive.write(path, arcname=path.name)
    return target


def convert_batch(
    *,
    project: Project | str | Path,
    model: str | Path,
    input_dir: str | Path | None = None,
    output_dir: str | Path,
    input_paths: list[str | Path] | None = None,
    index_path: str | Path | None = None,
    output_format: OutputFormat = "wav",
    device: str = "auto",
    precision: Precision = "auto",
    cache: ModelCache | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    max_duration_s: float | None = MAX_INPUT_SECONDS,
    zip_results: bool = False,
    **options: Unpack[ConversionOptions],
) -> BatchResult:
    """Convert every audio file of `input_dir` (or the given `input_paths`) into `output_dir`.

    Outputs are named by `batch_output_names`; with `zip_results` the converted files also go into
    `output_dir/<voice>-converted.zip` (one download). A file that fails is logged and counted and the
    others go on; cancel stops between files.
    """
    from infer_pack.audio import audio_extension_ok
    from infer_pack.cache import ModelCache

    started = time.perf_counter()
    proj = project_of(project)
    if output_format not in OUTPUT_FORMATS:
        raise UserInputError(f"unknown output format {output_format!r}; choose one of {', '.join(OUTPUT_FORMATS)}")
    if input_paths:
        files = [Path(p) for p in input_paths]
    elif input_dir is not None:
        folder = Path(input_dir)
        if not folder.is_dir():
            raise UserInputError(f"input folder {str(folder)!r} does not exist; check the path")
        files = sorted(p for p in folder.iterdir() if p.is_file() and audio_extension_ok(p))
    else:
        raise UserInputError("give an input folder or a list of input files")
    if not files:
        raise UserInputError(f"no audio files found in {str(input_dir)!r}; supported: wav, flac, mp3, m4a, ogg, ...")
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    request = ConvertRequest(
        model=Path(model), input_path=files[0], params=conversion_params(proj, options),
        index_path=Path(index_path) if index_path else None, output_format=output_format, device=device,
        precision=precision,
    )
    params = request.params
    cache = cache if cache is not None else ModelCache()
    converter = load_converter(proj, request.model, request.index_path, compute_device(device), cache, precision)
    _require_rmvpe(proj, converter, params)

    converted: list[Path] = []
    failed: list[tuple[Path, str]] = []
    report(progress, 0, len(files), f"converting {len(files)} file(s)")
    for number, (path, name) in enumerate(zip(files, batch_output_names(files, output_format), strict=True)):
        check(cancel)
        target = out_dir / name
        try:
            _convert_file(converter, path, target, params, output_format, None, cancel, max_duration_s)
        except CancelledError:
            raise
        except (RVCError, OSError, ValueError, RuntimeError) as exc:
            reason = str(exc) if isinstance(exc, RVCError) else f"{type(exc).__name__}: {exc}"
            if input_paths:  # uploads live in the web server's temporary folders: name them as uploaded
                reason = reason.replace(str(path), path.name)
            failed.append((path, reason))
            log.warning("batch conversion: %s failed: %s", path.name if input_paths else path, reason)
        else:
            converted.append(target)
        report(progress, number + 1, len(files), f"{number + 1}/{len(files)} {path.name}: "
               + ("failed" if failed and failed[-1][0] == path else "done"))  # fmt: skip
    zip_path = _write_zip(out_dir / batch_zip_name(request.model), converted) if zip_results and converted else None
    return BatchResult(output_dir=out_dir, converted=converted, failed=failed, seconds=time.perf_counter() - started,
                       zip_path=zip_path)
