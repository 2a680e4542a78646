"""User actions: train a voice model, and the one-click pipeline (prepare -> features -> train -> index).

`train_model` writes RVC's filelist.txt and config.json for the experiment, then trains (or
resumes) in this process on one device. For several GPUs or machines launch
`torchrun --nproc_per_node N -m train.trainer logs/<exp> ...` on a prepared experiment.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from configs import SampleRateTag, Version
from infer_pack.errors import AssetMissingError
from infer_pack.progress import CancelToken, ProgressCallback, check
from tools.project import Project

if TYPE_CHECKING:
    from train.trainer import TrainingResult

log = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16", "fp16"]


@dataclass(frozen=True)
class TrainRequest:
    experiment: str
    version: Version | None = None  # None: what the experiment was prepared for
    sample_rate_tag: SampleRateTag | None = None
    use_f0: bool | None = None
    speaker_id: int = 0
    epochs: int = 20
    batch_size: int = 4  # items per step
    save_every_epochs: int = 5
    latest_only: bool = False
    export_every_save: bool = False
    use_pretrained: bool = True  # start from pretrained[_v2]/f0G40k.pth etc. when present
    pretrained_g: str | None = None  # explicit files override the project's pretrained folder
    pretrained_d: str | None = None
    device: str = "auto"
    precision: Precision = "auto"
    mel_epsilons: Literal["head", "classic"] = "head"
    log_interval: int | None = None
    num_workers: int = 0
    resume: bool = True
    export_voice: bool = True  # write weights/<experiment>.pth at the end (and when stopped)


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

    def summary(self) -> str:
        state = "stopped" if self.cancelled else "finished"
        text = f"training {state} at epoch {self.epochs_done}, step {self.global_step}"
        if self.resumed_from is not None:
            text += f" (resumed from {self.resumed_from.name})"
        if self.voice_path is not None:
            text += f"; voice saved to {self.voice_path}"
        if self.checkpoint_g is not None:
            text += f"; checkpoint {self.checkpoint_g.name}"
        return text


def _pretrained(project: Project, request: TrainRequest, version: Version, tag: SampleRateTag, use_f0: bool, kind: Literal["G", "D"]) -> Path | None:
    explicit = request.pretrained_g if kind == "G" else request.pretrained_d
    if explicit:
        path = project.confine(explicit, f"pretrained {kind}")
        if not path.is_file():
            raise AssetMissingError(path, f"pretrained {kind}")
        return path
    if not request.use_pretrained:
        return None
    default = project.pretrained_path(version, tag, use_f0, kind)
    if default.is_file():
        return default
    log.warning("pretrained %s %s is missing: training it from scratch (needs far more epochs)", kind, default)
    return None


def train_model(
    root: str | Path = ".",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    **fields: Any,
) -> TrainResult:
    """Train or resume `experiment` (keyword fields of TrainRequest) under the project `root`."""
    from train.experiment import Experiment
    from train.trainer import TrainingOptions, TrainingSetup, load_experiment_config, train

    request = TrainRequest(**fields)
    project = Project.at(root)
    experiment = Experiment(project.experiment_dir(request.experiment))
    meta = experiment.infer_metadata()
    version: Version = request.version or meta.version
    tag: SampleRateTag = request.sample_rate_tag or meta.sample_rate_tag
    use_f0 = meta.use_f0 if request.use_f0 is None else request.use_f0
    experiment.write_filelist(version, use_f0, request.speaker_id)
    config = load_experiment_config(experiment, version, tag)
    pretrained_g = _pretrained(project, request, version, tag, use_f0, "G")
    pretrained_d = _pretrained(project, request, version, tag, use_f0, "D")
    options = TrainingOptions(
        epochs=request.epochs,
        batch_size=request.batch_size,
        save_every_epochs=request.save_every_epochs,
        latest_only=request.latest_only,
        export_every_save=request.export_every_save,
        pretrained_g=pretrained_g,
        pretrained_d=pretrained_d,
        weights_dir=project.weights_dir if request.export_voice else None,
        voice_name=experiment.name,
        device=request.device,
        precision=request.precision,
        mel_epsilons=request.mel_epsilons,
        log_interval=request.log_interval,
        num_workers=request.num_workers,
        resume=request.resume,
    )
    setup = TrainingSetup(experiment, version, tag, use_f0, config)
    result = train(setup, options, progress=progress, cancel=cancel)
    return _to_result(result, pretrained_g, pretrained_d)


def _to_result(result: "TrainingResult", pretrained_g: Path | None, pretrained_d: Path | None) -> TrainResult:
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
    )
