"""What a training run is made of, before its loop: options, the experiment's config, the lock, devices,
networks, pretrained weights and the checkpoint pair to resume from (the loop itself: `train.trainer`)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from configs import RVCConfig, SampleRateTag, Version, parse_config
from infer_pack.errors import (
    AssetMissingError,
    ExperimentError,
    ModelFileError,
    TrainingLockedError,
    UserInputError,
)
from infer_pack.fileio import LockHolder, PidLockFile
from train.data import DistributedBucketSampler, TrainingDataset, collate
from train.experiment import LATEST_ONLY_STEP, Experiment
from train.mel import MelTransform
from train.metrics import StepMetrics
from train.options import MetricSink as MetricSink
from train.options import Precision, TrainingOptions

log = logging.getLogger("train.trainer")



# ----------------------------------------------------------------------------------------------
# What to train and how
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingSetup:
    """The experiment and the model it trains; `config` is the experiment's config.json."""

    experiment: Experiment
    version: Version
    sample_rate_tag: SampleRateTag
    use_f0: bool
    config: RVCConfig


@dataclass
class TrainingResult:
    experiment_dir: Path
    first_epoch: int  # first epoch this run trained
    epochs_done: int  # last completed epoch
    global_step: int
    cancelled: bool
    resumed_from: Path | None
    checkpoint_g: Path | None
    checkpoint_d: Path | None
    voice_path: Path | None  # final (or on-cancel) voice model
    exported: list[Path] = field(default_factory=list)
    metrics_path: Path | None = None
    loss_curve_path: Path | None = None
    last_metrics: StepMetrics | None = None
    best_epoch: int | None = None  # epoch of the lowest validation loss so far (None: no validation)
    best_step: int | None = None
    best_voice_path: Path | None = None  # weights/<name>_best.pth
    stopped_early: bool = False  # early stop: no better validation for `early_stop_epochs` epochs
    overtraining_note: str | None = None  # "likely overtraining since epoch N", when it is so


def load_experiment_config(experiment: Experiment, version: Version, sample_rate_tag: SampleRateTag) -> RVCConfig:
    """The experiment's config.json (RVC's copy, written once) as a typed config."""
    path = experiment.write_config(version, sample_rate_tag)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        config = parse_config(raw, version, sample_rate_tag, path)
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ExperimentError(f"{path}: unreadable training config ({exc}); delete it to get the default back") from exc
    expected = {"32k": 32000, "40k": 40000, "48k": 48000}[sample_rate_tag]
    if config.sample_rate != expected:
        raise ExperimentError(
            f"{path} is for {config.sample_rate} Hz but the experiment trains at {sample_rate_tag}; "
            "delete config.json or pick the experiment's sample rate"
        )
    return config


# ----------------------------------------------------------------------------------------------
# One training at a time per experiment
# ----------------------------------------------------------------------------------------------
def _training_lock_refusal(path: Path, holder: LockHolder | None) -> TrainingLockedError:
    if holder is None:
        return TrainingLockedError(
            f"{path}: another training of this experiment is starting; wait for it "
            "(if no training runs, delete this file)"
        )
    return TrainingLockedError(
        f"{path}: experiment is already being trained by process {holder.pid} on "
        f"{holder.host or 'this machine'}; wait for it or stop it (if no training runs, delete this file)"
    )


class TrainingLock(PidLockFile):
    """`train.lock` holding "<pid> <host>"; a lock left by a dead process is taken over."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, _training_lock_refusal)


# ----------------------------------------------------------------------------------------------
# Devices, precision, processes
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls) -> Distributed:
        """RANK / WORLD_SIZE / LOCAL_RANK as set by torchrun (or a test that spawns ranks)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        return cls(
            int(os.environ["RANK"]),
            world,
            int(os.environ.get("LOCAL_RANK", os.environ["RANK"])),
        )


def resolve_device(name: str, dist: Distributed) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserInputError(f"device {name!r} asked for but no CUDA GPU is visible; use device 'cpu'")
        if dist.enabled:
            device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    return device


def resolve_precision(precision: Precision, device: torch.device) -> torch.dtype:
    """Autocast dtype; fp32 means autocast off. Weights always stay fp32."""
    if device.type != "cuda":
        if precision in ("bf16", "fp16"):
            log.warning("mixed precision needs a GPU; training in fp32 on %s", device)
        return torch.float32
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


# ----------------------------------------------------------------------------------------------
# Networks and checkpoints
# ----------------------------------------------------------------------------------------------
def build_networks(setup: TrainingSetup) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The training generator (with enc_q) and the multi-period discriminator of the version."""
    from infer_pack.discriminators import MultiPeriodDiscriminator
    from infer_pack.models import Synthesizer

    net_g = Synthesizer.from_rvc_config(setup.config, use_f0=setup.use_f0)
    net_d = MultiPeriodDiscriminator(setup.version)
    return net_g, net_d


def load_pretrained(net: torch.nn.Module, path: Path, what: str) -> None:
    """Strict load of a pretrained G/D (`{"model": state_dict}`, keys incl. enc_q), as RVC does it."""
    from infer_pack.checkpoint import load_pretrained_state

    if not path.is_file():
        raise AssetMissingError(path, f"pretrained {what}")
    load_pretrained_state(path, into=net, what=f"{what} being trained")


def optimizer_state_by_name(
    saved: dict[str, Any], saved_keys: Sequence[str], net: torch.nn.Module, path: Path
) -> dict[str, Any]:
    """Re-index an optimiser state saved with another parameter order onto this network's order.

    Adam's state is indexed by parameter position; the checkpoint's `model` dict lists the
    writer's parameters in that same order (the networks have no buffers).
    """
    names = [name for name, _ in net.named_parameters()]
    position = {name: i for i, name in enumerate(k for k in saved_keys if k in set(names))}
    if set(position) != set(names):
        raise ModelFileError(
            path,
            "the checkpoint's model keys do not match this network",
            _RESUME_FIX.format(path=path),
        )
    old_state = saved.get("state", {})
    new_state: dict[int, Any] = {}
    for new_index, name in enumerate(names):
        entry = old_state.get(position[name])
        if entry is not None:
            new_state[new_index] = entry
    groups = [dict(group, params=list(range(len(names)))) for group in saved["param_groups"]]
    if len(groups) != 1:
        raise ModelFileError(
            path,
            f"optimizer has {len(groups)} parameter groups, expected 1",
            _RESUME_FIX.format(path=path),
        )
    return {"state": new_state, "param_groups": groups}


_RESUME_FIX = (
    "move {path} and its G/D partner out of the experiment folder to resume from the previous checkpoint, "
    "or train under a new experiment name to start over"
)


@dataclass(frozen=True)
class ResumePoint:
    g_path: Path
    d_path: Path
    step: int  # from the file name; LATEST_ONLY_STEP when unknown


def find_resume_point(experiment: Experiment) -> ResumePoint | None:
    """The newest step for which both G_<step>.pth and D_<step>.pth exist (RVC's numeric order)."""
    d_steps = {c.step: c.path for c in experiment.list_checkpoints("D")}
    pairs = [(c.step, c.path, d_steps[c.step]) for c in experiment.list_checkpoints("G") if c.step in d_steps]
    if not pairs:
        return None
    step, g_path, d_path = max(pairs, key=lambda p: p[0])
    return ResumePoint(g_path, d_path, step)


def resume_step(name_step: int, recorded: Sequence[int | None], epochs_done: int, steps_per_epoch: int) -> int:
    """The step a resumed run goes on from: the one the G/D pair recorded when saved (a stop mid-epoch
    saves more steps than whole epochs), else the file name's, else whole epochs (RVC's G_2333333)."""
    if recorded and all(s is not None for s in recorded) and len(set(recorded)) == 1:
        return int(recorded[0])  # type: ignore[arg-type]
    if name_step != LATEST_ONLY_STEP:
        return name_step
    return epochs_done * steps_per_epoch


@dataclass
class Position:
    """Where a run is: the epoch in progress (1-based), how many of its batches are trained, steps in all.

    One numbering everywhere: the log, the progress bar, checkpoint names (G_<global_step>.pth) and
    the voice's info all read it from here."""

    epoch: int = 1
    batch: int = 0
    global_step: int = 0

    @property
    def epochs_done(self) -> int:
        return self.epoch - 1


RESUME_FORMAT = 1  # version of the "resume" entry written into G/D checkpoints


@dataclass(frozen=True)
class ResumeState:
    """What a checkpoint needs so that a resumed run does exactly the steps an unstopped one would:
    the position, the epoch length it belongs to, the RNG states and the gradient scaler."""

    position: Position
    steps_per_epoch: int
    rng_cpu: torch.Tensor
    rng_cuda: list[torch.Tensor]
    scaler: dict[str, Any]

    @classmethod
    def capture(cls, position: Position, steps_per_epoch: int, scaler: torch.amp.GradScaler) -> ResumeState:
        cuda = [state.clone() for state in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []
        return cls(Position(position.epoch, position.batch, position.global_step), steps_per_epoch,
                   torch.get_rng_state().clone(), cuda, dict(scaler.state_dict()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": RESUME_FORMAT, "epoch": self.position.epoch, "batch": self.position.batch,
            "global_step": self.position.global_step, "steps_per_epoch": self.steps_per_epoch,
            "rng_cpu": self.rng_cpu, "rng_cuda": list(self.rng_cuda), "scaler": self.scaler,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, path: Path) -> ResumeState | None:
        """The saved state, or None (RVC's files and older ones: the run goes on from the saved epoch's end)."""
        if data is None:
            return None
        version = data.get("format_version")
        if version != RESUME_FORMAT:
            log.warning("%s: resume entry of format %r (this version reads %d); going on from the saved epoch",
                        path, version, RESUME_FORMAT)
            return None
        try:
            position = Position(int(data["epoch"]), int(data["batch"]), int(data["global_step"]))
            rng_cpu = data["rng_cpu"]
            if not isinstance(rng_cpu, torch.Tensor):
                raise TypeError("rng_cpu is not a tensor")
            return cls(position, int(data["steps_per_epoch"]), rng_cpu, list(data.get("rng_cuda") or []),
                       dict(data.get("scaler") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(path, f"its resume entry is damaged ({exc})", _RESUME_FIX.format(path=path)) from None

    def restore_rng(self) -> None:
        torch.set_rng_state(self.rng_cpu)
        if self.rng_cuda and torch.cuda.is_available() and len(self.rng_cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(self.rng_cuda)


@dataclass
class StepOutput:
    """One step's results: `losses` holds a detached scalar per name of `train.metrics.LOSS_NAMES`."""

    losses: dict[str, torch.Tensor]
    grad_norm_d: torch.Tensor
    grad_norm_g: torch.Tensor
    d_real_terms: list[torch.Tensor]
    d_fake_terms: list[torch.Tensor]
    g_terms: list[torch.Tensor]
    target_mel: torch.Tensor  # [B, n_mels, segment_frames]
    generated_mel: torch.Tensor  # [B, n_mels, segment_frames]


@dataclass
class TrainState:
    """Everything a step changes: the networks, their optimisers and schedulers, the scaler and the position."""

    net_g: torch.nn.Module
    net_d: torch.nn.Module
    optim_g: torch.optim.AdamW
    optim_d: torch.optim.AdamW
    scaler: torch.amp.GradScaler
    position: Position = field(default_factory=Position)
    schedulers: list[torch.optim.lr_scheduler.ExponentialLR] = field(default_factory=list)
    g_params: list[torch.nn.Parameter] = field(default_factory=list)  # what the generator's backward computes
    saved_step: int = -1  # global step of the newest checkpoint on disk (-1: none this run)


@dataclass
class LoopCounters:
    """Counters of this run's loop (not saved): epoch length, the run's total, the step it began at, timing."""

    steps_per_epoch: int
    total_steps: int
    first_step: int
    time_s: float = 0.0
    steps: int = 0


def make_loader(
    experiment: Experiment, mel: MelTransform, use_f0: bool, options: TrainingOptions, dist: Distributed,
    device: torch.device, seed: int,
) -> tuple[torch.utils.data.DataLoader[Any], DistributedBucketSampler]:  # yields Batch (collate)
    """The experiment's training set in length buckets, this rank's share, in a fixed order per epoch."""
    entries = experiment.read_filelist(use_f0)
    dataset = TrainingDataset(entries, mel, use_f0)
    sampler = DistributedBucketSampler(dataset.lengths, options.batch_size, num_replicas=dist.world_size,
                                       rank=dist.rank)
    if len(sampler) == 0:
        raise ExperimentError(
            f"{experiment.filelist_path}: no training example has a usable length "
            "(slices of roughly 1 to 7 s are used); check the preprocessing output or lower the batch size"
        )
    workers = options.num_workers
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=8 if workers > 0 else None,
        # Its own generator: starting an epoch's iterator must not draw from the global RNG, or a run
        # resumed mid-epoch (which starts that epoch's iterator again) would go on with other draws.
        generator=torch.Generator().manual_seed(seed),
    )
    return loader, sampler


# -- helpers of the loop ------------------------------------------------------------------------
def unwrap(net: torch.nn.Module) -> torch.nn.Module:
    return net.module if isinstance(net, torch.nn.parallel.DistributedDataParallel) else net


@contextlib.contextmanager
def no_sync(net: torch.nn.Module) -> Iterator[None]:
    if isinstance(net, torch.nn.parallel.DistributedDataParallel):
        with net.no_sync():
            yield
    else:
        yield


def grad_norm(net: torch.nn.Module) -> torch.Tensor:
    """Total L2 norm of the (unscaled) gradients; nothing is clipped (as in RVC)."""
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm(grads, norm_type=2.0).detach()


def attach_file_log(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    logger = logging.getLogger("train")
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler
