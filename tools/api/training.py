"""User actions: train a voice model, and the one-click pipeline (prepare -> features -> train -> index).

`train_model` writes RVC's filelist.txt and config.json for the experiment, then trains (or
resumes) in this process on one device. For several GPUs or machines launch
`torchrun --nproc_per_node N -m train.trainer logs/<exp> ...` on a prepared experiment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Unpack

from configs import SampleRateTag, Version
from infer_pack.errors import AssetMissingError, CancelledError, UserInputError
from infer_pack.progress import CancelToken, ProgressCallback, check
from tools.api.common import project_of
from tools.api.train_request import REQUEST_FIELDS, TrainOptions, TrainRequest, TrainSettings
from tools.project import Project
from train.options import MetricSink, TrainingOptions, training_option_specs

if TYPE_CHECKING:
    from train.experiment import Experiment
    from train.trainer import TrainingLock, TrainingResult

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class TrainResult:
    experiment_dir: Path
    epochs_done: int
    global_step: int
    cancelled: bool
    resumed_from: Path | None
    pretrained_g: Path | None
    pretrained_d: Path | None
    checkpoint_g: Path | None
    checkpoint_d: Path | None
    voice_path: Path | None
    exported: list[Path] = field(default_factory=list)
    metrics_path: Path | None = None
    loss_curve_path: Path | None = None
    last_losses: dict[str, Any] = field(default_factory=dict)
    best_epoch: int | None = None  # epoch of the lowest validation loss (None: no held-out clips)
    best_voice_path: Path | None = None  # weights/<experiment>_best.pth
    stopped_early: bool = False
    overtraining_note: str | None = None

    def summary(self) -> str:
        state = "stopped early (no better validation)" if self.stopped_early else (
            "stopped" if self.cancelled else "finished")
        text = f"training {state} at epoch {self.epochs_done}, step {self.global_step}"
        if self.resumed_from is not None:
            text += f" (resumed from {self.resumed_from.name})"
        if self.voice_path is not None:
            text += f"; voice saved to {self.voice_path}"
        if self.checkpoint_g is not None:
            text += f"; checkpoint {self.checkpoint_g.name}"
        if self.best_epoch is not None:
            text += f"; best validation at epoch {self.best_epoch}"
            if self.best_voice_path is not None:
                text += f" ({self.best_voice_path.name})"
        if self.overtraining_note:
            text += "\n" + self.overtraining_note
        return text


def _pretrained(
    project: Project,
    request: TrainRequest,
    version: Version,
    tag: SampleRateTag,
    use_f0: bool,
    kind: Literal["G", "D"],
) -> Path | None:
    explicit = request.pretrained_g if kind == "G" else request.pretrained_d
    if explicit:
        path = project.confine(explicit, f"pretrained {kind}")
        if not path.is_file():
            raise AssetMissingError(path, f"pretrained-{version}-{tag}")
        return path
    if not request.use_pretrained:
        return None
    default = project.pretrained_path(version, tag, use_f0, kind)
    if default.is_file():
        return default
    # Never fall back to an untrained start silently: that needs far more epochs and gives a
    # worse voice. The user either fetches the file or asks for a start from scratch.
    raise AssetMissingError(default, f"pretrained-{version}-{tag}")


def train_model(
    root: Project | str | Path = ".",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    *,
    experiment: str,
    on_metrics: MetricSink | None = None,
    **options: Unpack[TrainOptions],
) -> TrainResult:
    """Train (or resume) `experiment` under the project `root`; see TrainRequest for the fields.

    filelist.txt is written again first (as RVC does on each start), so a changed speaker id or a
    re-run extraction is picked up. A cancelled run saves a checkpoint and the voice, then raises
    CancelledError whose `result` is the TrainResult (`cancelled=True`).
    """
    from tools.api.assets import check_assets
    from train.experiment import Experiment
    from train.trainer import TrainingLock

    known = TrainOptions.__optional_keys__ | TrainOptions.__required_keys__
    unknown = sorted(set(options) - known)
    if unknown:
        raise UserInputError(f"unknown training setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    request = TrainRequest(experiment=experiment, **options)
    project = root if isinstance(root, Project) else Project.at(root)
    exp = Experiment(project.experiment_dir(request.experiment))
    meta = exp.infer_metadata()
    chosen_version: Version = request.version or meta.version
    tag: SampleRateTag = request.sample_rate_tag or meta.sample_rate_tag
    chosen_f0 = meta.use_f0 if request.use_f0 is None else request.use_f0
    chosen_speaker = meta.speaker_id if request.speaker_id is None else request.speaker_id
    # Pretrained files are checked before anything is written, so a missing one costs nothing.
    check_assets(
        project, steps=("train",), version=chosen_version, sample_rate_tag=tag, use_f0=chosen_f0,
        use_pretrained=request.use_pretrained, pretrained_g=request.pretrained_g, pretrained_d=request.pretrained_d,
    )
    g_path = _pretrained(project, request, chosen_version, tag, chosen_f0, "G")
    d_path = _pretrained(project, request, chosen_version, tag, chosen_f0, "D")
    # The lock comes before the first write: a start refused by a running training changes nothing.
    lock = TrainingLock(exp.lock_path)
    lock.acquire()
    try:
        return _train_locked(exp, project, request, chosen_version, tag, chosen_f0, chosen_speaker, g_path, d_path,
                             lock, progress, cancel, on_metrics)
    finally:
        lock.release()


def _train_locked(
    exp: Experiment, project: Project, request: TrainRequest, chosen_version: Version, tag: SampleRateTag,
    chosen_f0: bool, chosen_speaker: int, g_path: Path | None, d_path: Path | None, lock: TrainingLock,
    progress: ProgressCallback | None, cancel: CancelToken | None, on_metrics: MetricSink | None,
) -> TrainResult:
    from train.trainer import TrainingSetup, load_experiment_config, train

    exp.write_filelist(chosen_version, chosen_f0, chosen_speaker)
    config = load_experiment_config(exp, chosen_version, tag)
    passed_on = {name: getattr(request, name) for name in training_option_specs() if name in REQUEST_FIELDS}
    options = TrainingOptions(
        **passed_on, pretrained_g=g_path, pretrained_d=d_path, device=request.device, voice_name=exp.name,
        weights_dir=project.weights_dir if request.export_voice else None,
    )
    setup = TrainingSetup(exp, chosen_version, tag, chosen_f0, config)
    result = train(setup, options, progress=progress, cancel=cancel, on_metrics=on_metrics, held_lock=lock)
    outcome = _to_result(result, g_path, d_path)
    if outcome.cancelled:  # the one cancel rule (infer_pack.progress): stop by raising, with what was saved
        raise CancelledError(f"{outcome.summary()}; a rerun resumes from it", result=outcome)
    return outcome


def _to_result(result: TrainingResult, pretrained_g: Path | None, pretrained_d: Path | None) -> TrainResult:
    last = result.last_metrics
    return TrainResult(
        experiment_dir=result.experiment_dir,
        epochs_done=result.epochs_done,
        global_step=result.global_step,
        cancelled=result.cancelled,
        resumed_from=result.resumed_from,
        pretrained_g=pretrained_g,
        pretrained_d=pretrained_d,
        checkpoint_g=result.checkpoint_g,
        checkpoint_d=result.checkpoint_d,
        voice_path=result.voice_path,
        exported=list(result.exported),
        metrics_path=result.metrics_path,
        loss_curve_path=result.loss_curve_path,
        last_losses=last.to_json_dict() if last is not None else {},
        best_epoch=result.best_epoch,
        best_voice_path=result.best_voice_path,
        stopped_early=result.stopped_early,
        overtraining_note=result.overtraining_note,
    )


@dataclass(frozen=True)
class OneClickResult:
    preprocess: Any  # tools.api.dataset.PreprocessDatasetResult
    extract: Any  # tools.api.dataset.ExtractFeaturesResult
    train: TrainResult
    index: Any | None  # tools.api.index result; None when training was stopped

    def summary(self) -> str:
        parts = [
            self.preprocess.summary(),
            self.extract.summary(),
            self.train.summary(),
        ]
        if self.index is not None:
            parts.append(self.index.summary() if hasattr(self.index, "summary") else str(self.index))
        else:
            parts.append("index not built: training was stopped")
        return "\n".join(parts)


def _stage(progress: ProgressCallback | None, number: int, name: str) -> ProgressCallback | None:
    """Prefix a step's messages with its place in the pipeline."""
    if progress is None:
        return None

    def report(done: int, total: int, message: str) -> None:
        progress(done, total, f"[{number}/4 {name}] {message}")

    return report


def one_click(
    *,
    project: Project | str | Path,
    experiment: str,
    dataset_dir: str | Path,
    sample_rate_tag: SampleRateTag = "40k",
    version: Version = "v2",
    use_f0: bool = True,
    speaker_id: int = 0,
    f0_method: str | None = None,
    n_processes: int | None = None,
    cache: Any = None,
    device: str = "auto",
    train_device: str | None = None,
    on_metrics: MetricSink | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    **training: Unpack[TrainSettings],
) -> OneClickResult:
    """Preprocess `dataset_dir`, extract pitch and features, train, and build the index, in order.

    Each step is the same API function the separate buttons call; `training` takes the other
    train_model fields (epochs, batch_size, save_every_epochs, pretrained_g, ...). A step that is
    already done is quick (every step resumes); a stopped training skips the index. `f0_method` None
    picks rmvpe when rmvpe.pt is present, else swift. Missing assets (encoder, rmvpe, pretrained G/D)
    raise MissingAssetsError before the first step, not after the data is prepared. `device` runs the
    pitch and feature extraction; `train_device` (None: the same) runs the training.
    """
    from tools.api.assets import check_assets, default_f0_method
    from tools.api.dataset import extract_features, preprocess_dataset
    from tools.api.index import train_index

    proj = project if isinstance(project, Project) else Project.at(project)
    f0_method = f0_method or default_f0_method(proj)
    check_assets(
        proj, steps=("extract", "train"), version=version, sample_rate_tag=sample_rate_tag, use_f0=use_f0,
        f0_method=f0_method, use_pretrained=training.get("use_pretrained", True),
        pretrained_g=training.get("pretrained_g"), pretrained_d=training.get("pretrained_d"),
    )
    prepared = preprocess_dataset(
        project=proj, experiment=experiment, dataset_dir=dataset_dir, sample_rate_tag=sample_rate_tag,
        speaker_id=speaker_id, n_processes=n_processes, progress=_stage(progress, 1, "preprocess"), cancel=cancel,
    )  # fmt: skip
    check(cancel)
    extracted = extract_features(
        project=proj, experiment=experiment, version=version, use_f0=use_f0, f0_method=f0_method,
        speaker_id=speaker_id, n_processes=n_processes, device=device, cache=cache,
        progress=_stage(progress, 2, "features"), cancel=cancel,
    )  # fmt: skip
    check(cancel)
    try:
        trained = train_model(
            proj, _stage(progress, 3, "train"), cancel, experiment=experiment, version=version,
            sample_rate_tag=sample_rate_tag, use_f0=use_f0, speaker_id=speaker_id, device=train_device or device,
            on_metrics=on_metrics, **training,
        )  # fmt: skip
    except CancelledError as exc:
        stopped = exc.result if isinstance(exc.result, TrainResult) else None
        raise CancelledError(str(exc), result=OneClickResult(prepared, extracted, stopped, None) if stopped else None) from None
    index = train_index(
        project=proj,
        experiment=experiment,
        version=version,
        progress=_stage(progress, 4, "index"),
        cancel=cancel,
    )
    return OneClickResult(prepared, extracted, trained, index)


def training_losses(project: Project | str | Path, experiment: str) -> list[dict[str, Any]]:
    """The metrics records an experiment's training wrote so far (`metrics.jsonl`), oldest first; [] if none."""
    from train.experiment import Experiment
    from train.metrics import read_metrics

    proj = project_of(project)
    return read_metrics(Experiment(proj.experiment_dir(experiment)).metrics_path)


def loss_series() -> dict[str, str]:
    """The series the app's curve draws: metrics key -> legend name (the trainer's losses, then validation)."""
    from train.metrics import PLOTTED_SERIES

    return dict(PLOTTED_SERIES)


def loss_curve_figure(project: Project | str | Path, experiment: str) -> Any:
    """The loss-curve panel of an experiment (a matplotlib Figure, as its loss_curve.png), or None before any record."""
    from train.metrics import draw_loss_curve

    records = training_losses(project, experiment)
    return draw_loss_curve(records) if records else None


def validation_summary(project: Project | str | Path, experiment: str) -> str:
    """The best validation so far and, when it applies, "likely overtraining since epoch N"; '' without validation."""
    from train.metrics import BEST_KEY, ValidationHistory, overtraining_note

    records = training_losses(project, experiment)
    best = ValidationHistory.from_records(records).best
    if best is None:
        return ""
    text = (f"Best validation: epoch {best['epoch']} (step {best['step']}, validation mel {best[BEST_KEY]:.2f}), "
            f"kept as weights/{experiment}_best.pth")
    note = overtraining_note(records)
    return text + ("\n" + note if note else "")
