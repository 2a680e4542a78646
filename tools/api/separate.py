"""User action: split songs into vocals and accompaniment (`separate_audio`), as RVC's UVR5 tab.

One file, a list of files or a folder goes in; for each input `<stem>_vocals.<format>` and
`<stem>_instrumental.<format>` come out, at the model's rate (44.1 kHz), in stereo. A file that
fails is named with its reason and the others go on; cancel stops between windows.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from infer_pack.errors import CancelledError, RVCError, UserInputError
from infer_pack.progress import CancelToken, ProgressCallback, check, report
from tools.api.common import compute_device, project_of
from tools.api.separate_request import SEPARATION_FORMATS as SEPARATION_FORMATS
from tools.api.separate_request import SeparationFormat as SeparationFormat
from tools.api.separate_request import SeparationSettings, separation_param_specs
from tools.project import Project

if TYPE_CHECKING:
    from infer_pack.cache import ModelCache
    from infer_pack.separation import Separator

log = logging.getLogger(__name__)

OUTPUT_DIR_NAME = "outputs/separated"  # under the project unless an output folder is given
DEFAULT_AGGRESSIVENESS: int = SeparationSettings.aggressiveness  # RVC's "agg" slider (0..20); VR models only


@dataclass(frozen=True)
class SeparatedFile:
    input_path: Path
    vocals_path: Path
    instrumental_path: Path
    seconds_of_audio: float


@dataclass(frozen=True)
class SeparateResult:
    model: Path
    output_dir: Path
    separated: list[SeparatedFile] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        head = f"separated {len(self.separated)} file(s) with {self.model.name} into {self.output_dir}"
        lines = [f"{head} in {self.seconds:.1f} s"]
        lines += [f"  {f.input_path.name} -> {f.vocals_path.name}, {f.instrumental_path.name}" for f in self.separated]
        if self.failed:
            lines.append(f"{len(self.failed)} file(s) failed:")
            lines += [f"  {path.name}: {reason}" for path, reason in self.failed]
        return "\n".join(lines)


def stem_paths(input_path: Path, output_dir: Path, output_format: str) -> tuple[Path, Path]:
    """The two output files of one input: `<stem>_vocals.<fmt>`, `<stem>_instrumental.<fmt>`."""
    return (output_dir / f"{input_path.stem}_vocals.{output_format}",
            output_dir / f"{input_path.stem}_instrumental.{output_format}")  # fmt: skip


def list_separation_models(project: Project | str | Path) -> list[Path]:
    """Model files under `<project>/uvr5_weights/` (.pth and .onnx, one folder deep as RVC's)."""
    from infer_pack.separation import MODEL_SUFFIXES
    from tools.assets import uvr5_dir

    folder = uvr5_dir(project_of(project))
    if not folder.is_dir():
        return []
    found = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in MODEL_SUFFIXES]
    return sorted(p for p in found if len(p.relative_to(folder).parts) <= 2)


def _is_model_file(name: str) -> bool:
    """A catalogued model itself, not a file beside it (a RoFormer's .yaml)."""
    from infer_pack.separation import MODEL_SUFFIXES

    return Path(name).suffix.lower() in MODEL_SUFFIXES


def model_choices(project: Project | str | Path) -> list[str]:
    """What the UI offers: every catalogued model (downloaded or not) and any other file there."""
    from tools.assets import SEPARATION_CATALOGUE, uvr5_dir

    proj = project_of(project)
    names = [item.repo_path.split("/", 1)[1] for item in SEPARATION_CATALOGUE if _is_model_file(item.repo_path)]
    folder = uvr5_dir(proj)
    names += [p.relative_to(folder).as_posix() for p in list_separation_models(proj)]
    return list(dict.fromkeys(names))


def resolve_model(project: Project, model: str | Path, *, confined: bool = False) -> Path:
    """A path, a file name under uvr5_weights/ or a download name -> an existing model file.

    A catalogued file that is absent raises AssetMissingError naming its download command.
    `confined` (the web app): every candidate must lie inside the project (or an allowed folder) and is
    refused before anything is looked up, so that the answer never tells whether a server path exists;
    relative names are read against the project, never against the server's working folder. Without
    it (the command line), a relative path may also name a file in the working folder.
    """
    from tools.assets import SEPARATION_CATALOGUE, missing_asset_error, uvr5_dir
    from tools.project import check_typed_path

    text = str(model).strip()
    if not text:
        raise UserInputError("choose a separation model (a .pth or .onnx file under uvr5_weights/)")
    check_typed_path(text, "separation model")
    by_group = {item.group: item.local_path(project) for item in SEPARATION_CATALOGUE if _is_model_file(item.repo_path)}
    path = Path(text).expanduser()
    if text in by_group:
        candidates = [by_group[text]]
    elif path.is_absolute():
        candidates = [path]
    else:
        candidates = [uvr5_dir(project) / text, project.root / text] + ([] if confined else [path])
    if confined:
        candidates = [project.confine(candidate, "separation model") for candidate in candidates]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    first = candidates[0]
    error = missing_asset_error(project, first)
    if error.asset != "all":  # one of ours: say how to download it
        raise error
    raise UserInputError(
        f"separation model {text!r} not found (looked at {', '.join(str(c) for c in candidates)}); "
        f"put the file under {uvr5_dir(project)} or give its path"
    )


def _inputs(input_path: str | Path | None, input_dir: str | Path | None,
            input_paths: list[str | Path] | None) -> list[Path]:  # fmt: skip
    from infer_pack.audio import audio_extension_ok

    if input_path:
        return [Path(input_path)]
    if input_paths:
        return [Path(p) for p in input_paths]
    if input_dir is None:
        raise UserInputError("give an input file, a list of files or an input folder")
    folder = Path(input_dir)
    if not folder.is_dir():
        raise UserInputError(f"input folder {str(folder)!r} does not exist; check the path")
    files = sorted(p for p in folder.iterdir() if p.is_file() and audio_extension_ok(p))
    if not files:
        raise UserInputError(f"no audio files found in {str(folder)!r}; supported: wav, flac, mp3, m4a, ogg, ...")
    return files


def load_separation_model(path: Path, *, device: str, aggressiveness: int, cache: ModelCache) -> Separator:
    from infer_pack.cache import file_key
    from infer_pack.separation import load_separator

    return cache.get_or_load(
        ("separator", file_key(path), device, aggressiveness),
        lambda: load_separator(path, device=device, aggressiveness=aggressiveness / 100),
    )


def separate_audio(
    *,
    project: Project | str | Path,
    model: str | Path,
    input_path: str | Path | None = None,
    input_dir: str | Path | None = None,
    input_paths: list[str | Path] | None = None,
    output_dir: str | Path | None = None,
    output_format: SeparationFormat = "wav",
    aggressiveness: int = DEFAULT_AGGRESSIVENESS,
    device: str = "auto",
    cache: ModelCache | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> SeparateResult:
    """Separate one file (`input_path`), the given files or every audio file of `input_dir`.

    `model`: a path, a file name under `<project>/uvr5_weights/` or a download name (uvr5-hp5, ...).
    `aggressiveness` 0..20 as RVC's slider (VR models: how hard the mask pushes the other stem out).
    """
    from infer_pack.cache import ModelCache
    from infer_pack.separation import load_stereo
    from tools.api.convert import write_audio

    started = time.perf_counter()
    proj = project_of(project)
    if output_format not in SEPARATION_FORMATS:
        raise UserInputError(f"unknown output format {output_format!r}; choose one of {', '.join(SEPARATION_FORMATS)}")
    aggressiveness = separation_param_specs()["aggressiveness"].checked(aggressiveness)
    files = _inputs(input_path, input_dir, input_paths)
    model_path = resolve_model(proj, model)
    out_dir = Path(output_dir) if output_dir else proj.root / OUTPUT_DIR_NAME
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = cache if cache is not None else ModelCache()
    separator = load_separation_model(model_path, device=compute_device(device), aggressiveness=int(aggressiveness),
                                      cache=cache)  # fmt: skip

    separated: list[SeparatedFile] = []
    failed: list[tuple[Path, str]] = []
    total = len(files)
    report(progress, 0, total, f"separating {total} file(s) with {model_path.name}")
    for number, path in enumerate(files):
        check(cancel)

        def inner(done: int, steps: int, message: str, number: int = number, name: str = path.name) -> None:
            report(progress, number, total, f"{name}: {message}")

        try:
            stereo = load_stereo(path, separator.sample_rate)
            stems = separator.separate(stereo, inner, cancel)
            vocals_path, instrumental_path = stem_paths(path, out_dir, output_format)
            write_audio(vocals_path, stems.vocals.T, stems.sample_rate, output_format)
            write_audio(instrumental_path, stems.instrumental.T, stems.sample_rate, output_format)
        except CancelledError:
            raise
        except RVCError as exc:
            failed.append((path, str(exc)))
            log.warning("separation: %s failed: %s", path, exc)
        except (OSError, ValueError, RuntimeError) as exc:
            failed.append((path, f"{type(exc).__name__}: {exc}"))
            log.warning("separation: %s failed: %s", path, exc)
        else:
            separated.append(SeparatedFile(path, vocals_path, instrumental_path, stereo.shape[1] / stems.sample_rate))
        status = "failed" if failed and failed[-1][0] == path else "done"
        report(progress, number + 1, total, f"{number + 1}/{total} {path.name}: {status}")
    return SeparateResult(model=model_path, output_dir=out_dir, separated=separated, failed=failed,
                          seconds=time.perf_counter() - started)  # fmt: skip
