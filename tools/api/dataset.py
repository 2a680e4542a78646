"""User actions of the training data steps: 2a `preprocess_dataset`, 2b `extract_features`.

Both resume: running one again only does what is missing (new or changed source files, segments
without pitch or features). Both take `progress` / `cancel`; a cancelled step keeps its finished work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from configs import SampleRateTag, Version
from infer_pack.errors import AssetMissingError, ExperimentError, RVCError, UserInputError
from infer_pack.params import DECODERS, DEFAULT_DECODER, Decoder
from infer_pack.progress import CancelToken, ProgressCallback
from tools.api.common import compute_device, project_of
from tools.project import Project

if TYPE_CHECKING:
    from infer_pack.cache import ModelCache
    from train.experiment import Experiment
    from train.extract_f0 import ExtractResult
    from train.health import HealthReport
    from train.preprocess import PreprocessResult


@dataclass(frozen=True)
class PreprocessRequest:
    experiment: str
    dataset_dir: Path
    sample_rate_tag: SampleRateTag = "40k"
    speaker_id: int = 0
    n_processes: int | None = None  # None: one per core
    decoder: Decoder = DEFAULT_DECODER  # "rvc": RVC's ffmpeg decode; "soxr": channel mean + soxr (infer_pack.audio)
    held_out_percent: float = 3.0  # share of the clips set aside for validation (train.holdout); 0: none


@dataclass(frozen=True)
class PreprocessDatasetResult:
    experiment_dir: Path
    preprocess: PreprocessResult
    health: HealthReport

    def summary(self) -> str:
        p = self.preprocess
        head = (
            f"preprocessed {p.processed} file(s) ({p.reused} already done, {p.n_failed} failed, {len(p.skipped)} skipped): "
            f"{p.segments_written} new clip(s), {p.segments_total} in total, in {p.seconds:.1f} s"
        )
        return head + "\n" + self.health.summary_text()


@dataclass(frozen=True)
class ExtractRequest:
    experiment: str
    version: Version | None = None  # None: what the experiment was prepared for (v2 by default)
    use_f0: bool | None = None
    f0_method: str = "rmvpe"
    interpolate_unvoiced: bool = True
    speaker_id: int | None = None  # None: the one given at preprocessing
    n_processes: int | None = None
    device: str = "auto"


@dataclass(frozen=True)
class ExtractFeaturesResult:
    experiment_dir: Path
    version: Version
    use_f0: bool
    f0: ExtractResult | None
    features: ExtractResult
    filelist_path: Path
    config_path: Path
    examples: int  # data lines in filelist.txt (without the two silent ones)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = []
        if self.f0 is not None:
            f = self.f0
            lines.append(
                f"pitch: {f.done} new, {f.reused} already done, {f.n_failed} failed, {len(f.skipped)} skipped (no voice) "
                f"in {f.seconds:.1f} s"
            )
        g = self.features
        lines.append(f"features ({self.version}): {g.done} new, {g.reused} already done, {g.n_failed} failed in {g.seconds:.1f} s")
        lines.append(f"file list: {self.examples} example(s) + 2 silent -> {self.filelist_path}")
        lines += [f"  {problem}" for problem in self.problems]
        return "\n".join(lines)


DATASETS_DIR_NAME = "datasets"  # <project>/datasets/<experiment>/: audio files uploaded through the app


@dataclass(frozen=True)
class ImportedDataset:
    folder: Path  # what step 2a reads (`dataset_dir`)
    added: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file name, why)

    def summary(self) -> str:
        lines = [f"{len(self.added)} file(s) added to {self.folder}"]
        lines += [f"  skipped {name}: {why}" for name, why in self.skipped]
        return "\n".join(lines)


def import_dataset_files(
    *, project: Project | str | Path, experiment: str, files: list[str | Path], original_names: list[str] | None = None
) -> ImportedDataset:
    """Copy audio files (browser uploads, or any readable files) into `<project>/datasets/<experiment>/`.

    For users whose audio is not on the server: the folder is inside the project, so step 2a may read it
    without `--allow-path`. Names are reduced to their last part and made unique (a file never replaces
    another); files that are not audio by name, empty or unreadable are skipped with the reason. Copies are
    atomic, so a stopped upload leaves no half file.
    """
    import shutil

    from infer_pack.audio import audio_extension_ok
    from infer_pack.fileio import atomic_path
    from tools.project import validate_name

    proj = project_of(project)
    name = validate_name(experiment, "experiment name")
    folder = proj.root / DATASETS_DIR_NAME / name
    names = original_names or [Path(f).name for f in files]
    if len(names) != len(files):
        raise UserInputError("original_names must name every file")
    if not files:
        raise UserInputError("no files given; choose the audio files of your dataset")
    folder.mkdir(parents=True, exist_ok=True)
    taken = {p.name.lower() for p in folder.iterdir()}
    result = ImportedDataset(folder)
    for source, given in zip(files, names, strict=True):
        clean = Path(str(given).replace("\\", "/")).name.strip().lstrip(".")
        clean = "".join(ch for ch in clean if ch.isprintable() and ch not in '<>:"|?*')
        source_path = Path(source)
        if not clean or not audio_extension_ok(clean):
            result.skipped.append((str(given), "not an audio file name (wav, flac, mp3, m4a, ogg, ...)"))
            continue
        try:
            if source_path.stat().st_size == 0:
                result.skipped.append((str(given), "the file is empty"))
                continue
        except OSError as exc:
            result.skipped.append((str(given), f"cannot read it ({exc.strerror or exc})"))
            continue
        stem, suffix, number = Path(clean).stem, Path(clean).suffix, 1
        target_name = clean
        while target_name.lower() in taken:
            number += 1
            target_name = f"{stem}-{number}{suffix}"
        taken.add(target_name.lower())
        target = folder / target_name
        try:
            with atomic_path(target) as tmp:
                shutil.copyfile(source_path, tmp)
        except RVCError:
            raise  # disk full: the files copied so far stay, the message says what to free
        except OSError as exc:
            result.skipped.append((str(given), f"cannot copy it ({exc.strerror or exc})"))
            continue
        result.added.append(target)
    if not result.added:
        raise UserInputError("no audio file was added: " + "; ".join(f"{n}: {why}" for n, why in result.skipped))
    return result


def _experiment(project: Project, name: str) -> Experiment:
    from train.experiment import Experiment

    return Experiment(project.experiment_dir(name))


def preprocess_dataset(
    *,
    project: Project | str | Path,
    experiment: str,
    dataset_dir: str | Path,
    sample_rate_tag: SampleRateTag = "40k",
    speaker_id: int = 0,
    n_processes: int | None = None,
    decoder: Decoder = DEFAULT_DECODER,
    held_out_percent: float = 3.0,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> PreprocessDatasetResult:
    """Step 2a: slice every audio file directly in `dataset_dir` into `logs/<experiment>/`, then write the health report.

    `decoder`: how each file becomes mono at the model rate ("rvc", RVC's samples; or "soxr").
    `held_out_percent`: share of the clips set aside for validation (whole files where there are several,
    at least 10 s; 0: none), never trained on nor indexed (`train.holdout`).
    """
    from configs import SAMPLE_RATE_HZ
    from train.health import write_health_report
    from train.preprocess import PreprocessSettings, preprocess_folder

    request = PreprocessRequest(experiment, Path(dataset_dir), sample_rate_tag, speaker_id, n_processes, decoder,
                                held_out_percent)
    if not 0 <= request.held_out_percent <= 50:
        raise UserInputError(f"held-out share must be 0 to 50 %, got {request.held_out_percent}")
    if request.n_processes is not None and request.n_processes < 1:
        raise UserInputError(f"n_processes must be at least 1, got {request.n_processes}")
    if request.decoder not in DECODERS:
        raise UserInputError(f"unknown decoder {request.decoder!r}; choose one of {', '.join(DECODERS)}")
    if request.sample_rate_tag not in SAMPLE_RATE_HZ:
        raise UserInputError(f"unknown sample rate {request.sample_rate_tag!r}; choose one of {', '.join(SAMPLE_RATE_HZ)}")
    settings = PreprocessSettings(sample_rate=SAMPLE_RATE_HZ[request.sample_rate_tag], decoder=request.decoder,
                                  held_out_percent=request.held_out_percent)
    proj = project_of(project)
    exp = _experiment(proj, request.experiment)
    result = preprocess_folder(
        request.dataset_dir,
        exp,
        request.sample_rate_tag,
        speaker_id=request.speaker_id,
        n_workers=request.n_processes,
        settings=settings,
        progress=progress,
        cancel=cancel,
    )
    return PreprocessDatasetResult(exp.root, result, write_health_report(exp))


def extract_features(
    *,
    project: Project | str | Path,
    experiment: str,
    version: Version | None = None,
    use_f0: bool | None = None,
    f0_method: str | None = None,
    interpolate_unvoiced: bool = True,
    speaker_id: int | None = None,
    n_processes: int | None = None,
    device: str = "auto",
    cache: ModelCache | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> ExtractFeaturesResult:
    """Step 2b: pitch (with f0) and content features for every segment, then filelist.txt and config.json."""
    from infer_pack.cache import ModelCache, file_key
    from infer_pack.hubert import ContentEncoder, load_content_encoder
    from tools.api.assets import default_f0_method
    from train.extract_f0 import extract_f0
    from train.extract_features import extract_features as extract_content

    f0_method = f0_method or default_f0_method(project)  # rmvpe when rmvpe.pt is there, else swift
    request = ExtractRequest(experiment, version, use_f0, f0_method, interpolate_unvoiced, speaker_id, n_processes, device)
    from infer_pack.f0 import F0_METHODS

    if request.f0_method not in F0_METHODS:
        raise UserInputError(f"unknown f0 method {request.f0_method!r}; choose one of {', '.join(F0_METHODS)}")
    proj = project_of(project)
    exp = _experiment(proj, request.experiment)
    if not exp.wavs16k_names():
        raise ExperimentError(f"{exp.wavs16k_dir} holds no clips; run step 2a (preprocess) for {request.experiment!r} first")
    meta = exp.infer_metadata()
    chosen_version: Version = request.version or meta.version
    chosen_f0 = meta.use_f0 if request.use_f0 is None else request.use_f0
    chosen_speaker = meta.speaker_id if request.speaker_id is None else request.speaker_id
    if not proj.hubert_path.is_file():
        raise AssetMissingError(proj.hubert_path, "hubert")
    if chosen_f0 and request.f0_method == "rmvpe" and not proj.rmvpe_path.is_file():
        raise AssetMissingError(proj.rmvpe_path, "rmvpe")
    resolved_device = compute_device(request.device)
    cache = cache or ModelCache()
    exp.write_metadata(
        meta.replace(
            version=chosen_version,
            use_f0=chosen_f0,
            speaker_id=chosen_speaker,
            f0_method=request.f0_method if chosen_f0 else None,
            interpolate_unvoiced=request.interpolate_unvoiced,
        )
    )
    exp.ensure_mute_audio_and_f0(meta.sample_rate_tag)

    f0_result = None
    if chosen_f0:
        f0_result = extract_f0(
            exp,
            request.f0_method,
            interpolate_unvoiced=request.interpolate_unvoiced,
            n_workers=request.n_processes,
            rmvpe_path=proj.rmvpe_path,
            cache=cache,
            device=resolved_device,
            progress=progress,
            cancel=cancel,
        )

    def encoder() -> ContentEncoder:
        # Same key style as rmvpe's, so the conversion side can share the loaded encoder.
        return cache.get_or_load(
            ("hubert", file_key(proj.hubert_path), str(resolved_device)),
            lambda: load_content_encoder(proj.hubert_path, device=resolved_device),
        )

    features = extract_content(exp, chosen_version, encoder, device=resolved_device, progress=progress, cancel=cancel)
    config_path = exp.write_config(chosen_version, meta.sample_rate_tag)
    entries = exp.write_filelist(chosen_version, chosen_f0, chosen_speaker)
    problems = []
    if f0_result is not None:
        problems += [f"pitch failed for {name}: {reason}" for name, reason in f0_result.failed]
        problems += [f"no pitch for {name}: {reason} (left out of training)" for name, reason in f0_result.skipped]
    problems += [f"features failed for {name}: {reason}" for name, reason in features.failed]
    return ExtractFeaturesResult(
        experiment_dir=exp.root,
        version=chosen_version,
        use_f0=chosen_f0,
        f0=f0_result,
        features=features,
        filelist_path=exp.filelist_path,
        config_path=config_path,
        examples=len(entries) - 2,
        problems=problems,
    )


def dataset_health(project: Project | str | Path, experiment: str) -> HealthReport | None:
    """The dataset health report step 2a wrote for an experiment, or None before step 2a ran."""
    from train.experiment import Experiment
    from train.health import read_health_report

    proj = project_of(project)
    return read_health_report(Experiment(proj.experiment_dir(experiment)))
