"""The training loop: RVC's recipe, one discriminator step then one generator step per batch.

Recipe (RVC's `train/train.py`): AdamW(lr 1e-4, betas (0.8, 0.99), eps 1e-9, weight decay 0.01)
for each network, learning rate x0.999875 per epoch, losses = LSGAN + 2 x feature matching +
45 x mel L1 + KL. Checkpoints `G_<step>.pth` / `D_<step>.pth` in RVC's format every N epochs.

Where it deliberately differs from RVC, and why:
* Resume never falls back silently to a fresh start: a damaged newest checkpoint is an error
  that says which files to remove. Only a (G, D) pair written by the same save is used.
* Resume is exact: checkpoints carry the position (epoch, step within it), the RNG states and the
  gradient scaler, every epoch's sample order is fixed by its number, so a run stopped and resumed
  any number of times does the same steps as one that never stopped. RVC's own checkpoints resume
  after their saved epoch (not re-running it); optimiser moments are matched to parameters by
  name, so checkpoints from RVC releases with another parameter order resume correctly.
* Stop takes effect between two steps and saves a checkpoint (and the voice); a second training of the same
  experiment is refused through `train.lock`.
* Held-out validation (`train.validation`) at each epoch end: the lowest validation loss so far is kept
  as G_best.pth / D_best.pth (resumable) and weights/<name>_best.pth; optional early stop.
* With DDP each GPU gets `batch_size` items per step (RVC gives each GPU batch x n_gpus).
* The generator's backward skips the discriminator's weight gradients (they are discarded by
  RVC anyway), and the target mel is computed in fp32 outside autocast.

Distributed: launch with `torchrun --nproc_per_node N -m train.trainer logs/<exp> ...`; the
process group is initialised from the environment (env://); only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from infer_pack.errors import (
    ModelFileError,
)
from infer_pack.fileio import remove_stale_temporaries
from infer_pack.progress import CancelToken, ProgressCallback, report
from train.data import Batch, DistributedBucketSampler
from train.experiment import LATEST_ONLY_STEP
from train.losses import (
    discriminator_loss,
    feature_loss,
    generator_loss,
    kl_loss,
    mel_loss,
)
from train.mel import MelTransform
from train.metrics import (
    LIVE_METRICS,
    LOSS_NAMES,
    MetricsWriter,
    StepMetrics,
    loss_line,
    overtraining_note,
    read_metrics,
)
from train.options import Precision, TrainingOptions
from train.training_setup import (
    _RESUME_FIX,
    Distributed,
    LoopCounters,
    MetricSink,
    Position,
    ResumePoint,
    ResumeState,
    StepOutput,
    TrainingLock,
    TrainingResult,
    TrainingSetup,
    TrainState,
    attach_file_log,
    build_networks,
    find_resume_point,
    grad_norm,
    load_experiment_config,
    load_pretrained,
    make_loader,
    no_sync,
    optimizer_state_by_name,
    resolve_device,
    resolve_precision,
    resume_step,
    unwrap,
)
from train.validation import TENSORBOARD_TAGS, Validator, write_best

# Re-exported: scripts and the API import these from here (`from train.trainer import ...`).
__all__ = [
    "LIVE_METRICS", "Distributed", "MetricSink", "Precision", "ResumePoint", "StepOutput", "Trainer", "TrainingLock",
    "TrainingOptions", "TrainingResult", "TrainingSetup", "build_networks", "find_resume_point",
    "load_experiment_config", "load_pretrained", "main", "optimizer_state_by_name", "resolve_device",
    "resolve_precision", "train",
]

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------
class Trainer:
    """One training run: `run()` = set up (`_setup`), epochs (`_train_epoch`, `_end_epoch`), then
    `_finish` or, when stopped, `_stop`. Each step is `train_step(state, batch)`."""

    def __init__(
        self,
        setup: TrainingSetup,
        options: TrainingOptions,
        *,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        networks: tuple[torch.nn.Module, torch.nn.Module] | None = None,
        on_metrics: MetricSink | None = None,
        held_lock: TrainingLock | None = None,
    ) -> None:
        self.setup = setup
        self._held_lock = held_lock  # taken by the caller before it wrote anything into the experiment
        self.on_metrics = on_metrics
        self.options = options
        self.progress = progress
        self.cancel = cancel or CancelToken()
        self.experiment = setup.experiment
        self.config = setup.config
        self.dist = Distributed.from_env()
        self.device = resolve_device(options.device, self.dist)
        self.amp_dtype = resolve_precision(options.precision, self.device)
        self.mel = MelTransform.from_data_section(self.config.data, options.mel_epsilons)
        self.log_interval = options.log_interval or self.config.train.log_interval
        self._networks = networks
        self.state: TrainState  # set up by run()
        self.validator: Validator  # opened by run() (after the metrics file is cut back to the resumed step)

    # -- setup -----------------------------------------------------------------------------------
    def _init_process_group(self) -> None:
        if self.dist.enabled and not torch.distributed.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(
                backend,
                init_method="env://",
                rank=self.dist.rank,
                world_size=self.dist.world_size,
            )

    def _make_loader(self) -> tuple[torch.utils.data.DataLoader[Any], DistributedBucketSampler]:
        return make_loader(self.experiment, self.mel, self.setup.use_f0, self.options, self.dist, self.device,
                           self.config.train.seed)

    def _make_optimizer(self, net: torch.nn.Module) -> torch.optim.AdamW:
        train = self.config.train
        return torch.optim.AdamW(
            net.parameters(),
            lr=train.learning_rate,
            betas=train.betas,
            eps=train.eps,
            weight_decay=0.01,
        )

    def new_state(self, net_g: torch.nn.Module, net_d: torch.nn.Module) -> TrainState:
        """Networks moved to the device, fresh optimisers and scaler, position at the start."""
        net_g, net_d = net_g.to(self.device), net_d.to(self.device)
        return TrainState(
            net_g=net_g, net_d=net_d, optim_g=self._make_optimizer(net_g), optim_d=self._make_optimizer(net_d),
            scaler=torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16),
            g_params=[p for p in net_g.parameters() if p.requires_grad],
        )

    def _resume(self, state: TrainState, steps_per_epoch: int) -> tuple[Path | None, ResumeState | None]:
        """Load the newest complete checkpoint pair into `state` and set its position."""
        from infer_pack.checkpoint import load_state_strict, load_training_checkpoint

        point = find_resume_point(self.experiment) if self.options.resume else None
        if point is None:
            return None, None
        epochs_done = None
        recorded_steps: list[int | None] = []
        exact: ResumeState | None = None
        for path, net, optimizer in (
            (point.d_path, state.net_d, state.optim_d),
            (point.g_path, state.net_g, state.optim_g),
        ):
            try:
                ckpt = load_training_checkpoint(path)
            except ModelFileError as exc:
                raise ModelFileError(path, f"cannot resume from it ({exc.reason})", _RESUME_FIX.format(path=path)) from None
            load_state_strict(net, ckpt.model, path, "network being trained", _RESUME_FIX.format(path=path))
            if ckpt.optimizer:
                try:
                    optimizer.load_state_dict(optimizer_state_by_name(ckpt.optimizer, list(ckpt.model), net, path))
                except (KeyError, ValueError, TypeError) as exc:
                    raise ModelFileError(
                        path, f"optimizer state does not fit ({exc})", _RESUME_FIX.format(path=path)
                    ) from None
            else:
                log.warning("%s holds no optimizer state; Adam moments start from zero", path)
            epochs_done = ckpt.iteration if epochs_done is None else min(epochs_done, ckpt.iteration)
            recorded_steps.append(ckpt.global_step)
            if path == point.g_path:
                exact = ResumeState.from_dict(ckpt.resume, path)
        assert epochs_done is not None
        step = resume_step(point.step, recorded_steps, epochs_done, steps_per_epoch)
        if exact is not None and exact.steps_per_epoch != steps_per_epoch:
            log.warning("the training set changed since %s (%d steps per epoch, now %d): epoch %d starts over",
                        point.g_path.name, exact.steps_per_epoch, steps_per_epoch, exact.position.epoch)
            exact = ResumeState(Position(exact.position.epoch, 0, exact.position.global_step), steps_per_epoch,
                                exact.rng_cpu, exact.rng_cuda, exact.scaler)
        if exact is not None:
            state.position = exact.position
            if exact.scaler:
                state.scaler.load_state_dict(exact.scaler)
        else:  # RVC's checkpoints and older ones: on from the end of the saved epoch
            state.position = Position(epochs_done + 1, 0, step)
        state.saved_step = state.position.global_step
        where = state.position
        log.info("resuming from %s: epoch %d, %d of %d steps of it done, step %d", point.g_path.name, where.epoch,
                 where.batch, steps_per_epoch, where.global_step)
        return point.g_path, exact

    def _load_pretrained(self, state: TrainState) -> None:
        for path, net, what in (
            (self.options.pretrained_g, state.net_g, "generator"),
            (self.options.pretrained_d, state.net_d, "discriminator"),
        ):
            if path is not None:
                load_pretrained(net, Path(path), what)
                log.info("loaded pretrained %s %s", what, path)
            else:
                log.info("no pretrained %s: training it from random weights", what)

    def _schedulers(self, state: TrainState) -> list[torch.optim.lr_scheduler.ExponentialLR]:
        """Epoch e trains with lr x decay^(e-1); a scheduler per optimiser steps once per epoch."""
        train = self.config.train
        first_epoch = state.position.epoch
        schedulers = []
        for optimizer in (state.optim_g, state.optim_d):
            for group in optimizer.param_groups:
                group["initial_lr"] = train.learning_rate
                group["lr"] = train.learning_rate * train.lr_decay ** (first_epoch - 1)
            schedulers.append(
                torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=train.lr_decay, last_epoch=first_epoch - 2)
            )
        return schedulers

    def _setup(self) -> tuple[TrainState, torch.utils.data.DataLoader[Any], DistributedBucketSampler, Path | None]:
        """Seed, data, networks (resumed, pretrained or random), DDP wrappers, schedulers."""
        torch.manual_seed(self.options.seed if self.options.seed is not None else self.config.train.seed)
        loader, sampler = self._make_loader()
        nets = self._networks if self._networks is not None else build_networks(self.setup)
        state = self.new_state(*nets)
        resumed_from, exact = self._resume(state, len(sampler))
        if resumed_from is None:
            self._load_pretrained(state)
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            state.net_g = torch.nn.parallel.DistributedDataParallel(state.net_g, device_ids=ids)
            state.net_d = torch.nn.parallel.DistributedDataParallel(state.net_d, device_ids=ids)
            state.g_params = [p for p in state.net_g.parameters() if p.requires_grad]
        state.schedulers = self._schedulers(state)
        state.net_g.train()
        state.net_d.train()
        if exact is not None:  # last: everything above may draw random numbers
            exact.restore_rng()
        self.state = state  # kept for callers that look at the networks after `run()`
        return state, loader, sampler, resumed_from

    # -- one step --------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype != torch.float32)

    def train_step(self, state: TrainState, batch: Batch) -> StepOutput:
        """One discriminator step, then one generator step; the losses come back by name (LOSS_NAMES)."""
        from infer_pack.commons import slice_segments

        b = batch.to(self.device, non_blocking=True)
        hop = self.config.data.hop_length
        segment_frames = self.config.segment_frames
        net_g, net_d, scaler = state.net_g, state.net_d, state.scaler

        with self._autocast():
            y_hat, ids_slice, _x_mask, z_mask, (_z, z_p, m_p, logs_p, _m_q, logs_q) = net_g(
                b.phone, b.phone_lengths, b.pitch, b.pitchf, b.spec, b.spec_lengths, b.speaker_id,
            )  # y_hat [B, 1, segment_size]
        with torch.no_grad():
            target_mel = slice_segments(self.mel.mel_from_spectrogram(b.spec), ids_slice, segment_frames)  # [B, M, S]
        generated_mel = self.mel.mel(y_hat.float().squeeze(1))  # [B, M, S], fp32
        wave = slice_segments(b.wave, ids_slice * hop, self.config.train.segment_size)  # [B, 1, segment_size]

        # Discriminator: real -> 1, generated (detached) -> 0.
        with self._autocast():
            real_scores, fake_scores, _, _ = net_d(wave, y_hat.detach())
        loss_d, d_real_terms, d_fake_terms = discriminator_loss(real_scores, fake_scores)
        state.optim_d.zero_grad(set_to_none=True)
        scaler.scale(loss_d).backward()
        scaler.unscale_(state.optim_d)
        grad_norm_d = grad_norm(net_d)
        scaler.step(state.optim_d)

        # Generator: fool the (just updated) discriminator, match its features, the mel and the prior.
        # The discriminator's weight gradients of this pass are never used, so they are not computed.
        with self._autocast(), no_sync(net_d):
            _, fake_scores, real_maps, fake_maps = net_d(wave, y_hat)
        loss_gen, g_terms = generator_loss(fake_scores)
        loss_fm = feature_loss(real_maps, fake_maps)
        loss_mel = mel_loss(target_mel, generated_mel, self.config.train.c_mel)
        loss_kl = kl_loss(z_p, logs_q, m_p, logs_p, z_mask) * self.config.train.c_kl
        loss_g = loss_gen + loss_fm + loss_mel + loss_kl
        state.optim_g.zero_grad(set_to_none=True)
        scaler.scale(loss_g).backward(inputs=state.g_params)
        scaler.unscale_(state.optim_g)
        grad_norm_g = grad_norm(net_g)
        scaler.step(state.optim_g)
        scaler.update()
        losses = {"loss_d": loss_d, "loss_g": loss_g, "loss_gen": loss_gen, "loss_fm": loss_fm, "loss_mel": loss_mel,
                  "loss_kl": loss_kl}  # fmt: skip
        return StepOutput(
            losses={name: losses[name].detach() for name in LOSS_NAMES},
            grad_norm_d=grad_norm_d,
            grad_norm_g=grad_norm_g,
            d_real_terms=d_real_terms,
            d_fake_terms=d_fake_terms,
            g_terms=[t.detach() for t in g_terms],
            target_mel=target_mel.detach(),
            generated_mel=generated_mel.detach(),
        )

    # -- files -------------------------------------------------------------------------------------
    def _save_checkpoints(self, state: TrainState, steps_per_epoch: int, best: bool = False) -> tuple[Path, Path]:
        """G then D at the current position, each written atomically; a pair is only used for resume once
        both exist. `iteration` (RVC's field) is the number of whole epochs done. `best`: the G_best/D_best pair."""
        from infer_pack.checkpoint import save_training_checkpoint

        where = state.position
        step_name = LATEST_ONLY_STEP if self.options.latest_only else where.global_step
        g_path = self.experiment.best_checkpoint_path("G") if best else self.experiment.g_checkpoint_path(step_name)
        d_path = self.experiment.best_checkpoint_path("D") if best else self.experiment.d_checkpoint_path(step_name)
        resume = ResumeState.capture(where, steps_per_epoch, state.scaler).to_dict()
        for path, net, optimizer in ((g_path, state.net_g, state.optim_g), (d_path, state.net_d, state.optim_d)):
            save_training_checkpoint(
                path, model=unwrap(net).state_dict(), iteration=where.epochs_done, optimizer=optimizer.state_dict(),
                learning_rate=self.config.train.learning_rate, global_step=where.global_step, resume=resume,
            )
        if not best:
            state.saved_step = where.global_step
        log.info("saved %s and %s (%s)", g_path.name, d_path.name, self._where(where, steps_per_epoch))
        return g_path, d_path

    @staticmethod
    def _where(where: Position, steps_per_epoch: int) -> str:
        """The one wording of a position (log, progress, stop message)."""
        if where.batch == 0:
            return f"epoch {where.epochs_done} done, step {where.global_step}"
        return f"epoch {where.epoch}, {where.batch} of {steps_per_epoch} steps, step {where.global_step}"

    def _export_voice(self, state: TrainState, path: Path, note: str = "") -> Path:
        from infer_pack.checkpoint import save_voice, voice_from_state_dict

        where = state.position
        # RVC's info is "<epochs>epoch"; a voice saved mid-epoch says so as the log does ("epoch 2 step 31").
        info = f"{where.epochs_done}epoch" if where.batch == 0 else f"epoch {where.epoch} step {where.global_step}"
        info += note
        weights = {k: v.detach().cpu() for k, v in unwrap(state.net_g).state_dict().items()}
        voice = voice_from_state_dict(
            weights, self.config, self.setup.use_f0, info, self.setup.version,
            trained_speakers=self.experiment.filelist_speaker_ids(self.setup.use_f0),
        )
        save_voice(path, voice)
        log.info("exported voice %s", path)
        return path

    def _voice_path(self, where: Position | None, suffix: str = "") -> Path | None:
        if self.options.weights_dir is None:
            return None
        name = self.options.voice_name or self.experiment.name
        suffix = suffix if where is None else f"_e{where.epochs_done}_s{where.global_step}"
        return Path(self.options.weights_dir) / f"{name}{suffix}.pth"

    # -- the loop ------------------------------------------------------------------------------------
    def run(self) -> TrainingResult:
        self._init_process_group()
        lock = self._held_lock or TrainingLock(self.experiment.lock_path)
        if self.dist.is_main and not lock.owned:
            lock.acquire()
            # A checkpoint save cut short by a killed run leaves a hidden temp file (hundreds of MB).
            remove_stale_temporaries(self.experiment.root)
        file_log = attach_file_log(self.experiment.train_log_path) if self.dist.is_main else None
        metrics = MetricsWriter.for_experiment(self.experiment, enabled=self.dist.is_main)
        try:
            return self._run(metrics)
        finally:
            metrics.close()
            if file_log is not None:
                logging.getLogger("train").removeHandler(file_log)
                file_log.close()
            lock.release()

    def _run(self, metrics: MetricsWriter) -> TrainingResult:
        state, loader, sampler, resumed_from = self._setup()
        steps_per_epoch = len(sampler)
        start = state.position
        metrics.keep_until(start.global_step)
        self.validator = Validator.open(
            self.experiment, version=self.setup.version, use_f0=self.setup.use_f0, mel=self.mel,
            c_mel=self.config.train.c_mel, device=self.device, every_steps=self.options.validate_every_steps,
            early_stop_epochs=self.options.early_stop_epochs,
            records=read_metrics(self.experiment.metrics_path) if self.dist.is_main else [],
        )
        result = TrainingResult(
            experiment_dir=self.experiment.root, first_epoch=start.epoch, epochs_done=start.epochs_done,
            global_step=start.global_step, cancelled=False, resumed_from=resumed_from, checkpoint_g=None,
            checkpoint_d=None, voice_path=None, metrics_path=self.experiment.metrics_path,
        )  # fmt: skip
        if (best := self.validator.history.best) is not None:
            result.best_epoch, result.best_step = int(best["epoch"]), int(best["step"])
        log.info(
            "training %s: epochs %d..%d, %d steps per epoch, device %s, %s, rank %d/%d",
            self.experiment.name, start.epoch, self.options.epochs, steps_per_epoch, self.device,
            str(self.amp_dtype).replace("torch.", ""), self.dist.rank, self.dist.world_size,
        )  # fmt: skip
        loop = LoopCounters(steps_per_epoch, self.options.epochs * steps_per_epoch, start.global_step)
        self._report(state, loop, f"training from {self._where(start, steps_per_epoch)}")
        cache: list[Batch] | None = [] if self.options.cache_batches else None
        while state.position.epoch <= self.options.epochs:
            if self._train_epoch(state, loader, sampler, cache, loop, metrics, result):
                return self._stop(state, loop, result, metrics)
            self._end_epoch(state, loop, result, metrics)
            if self._any_rank(self.validator.should_stop()):
                return self._stop_early(state, loop, result, metrics)
        return self._finish(state, loop, result, metrics)

    def _report(self, state: TrainState, loop: LoopCounters, message: str) -> None:
        """Progress in global steps of the whole run (a resumed run goes on from where it stood)."""
        report(self.progress, state.position.global_step, loop.total_steps, message)

    def _epoch_batches(
        self, loader: Iterable[Batch], cache: list[Batch] | None, epoch: int, start_batch: int, steps_per_epoch: int
    ) -> Iterator[Batch]:
        """Epoch `epoch`'s batches from `start_batch` on: from the loader, or (caching) the cached ones in a
        new order per epoch. A cache is used only once it holds a whole epoch (a resumed or stopped first
        epoch fills it again)."""
        if cache is not None and len(cache) == steps_per_epoch:
            order = torch.randperm(len(cache), generator=torch.Generator().manual_seed(epoch))
            yield from (cache[i] for i in order.tolist()[start_batch:])
            return
        if cache is not None:
            cache.clear()
        for batch in loader:
            if cache is not None:
                batch = batch.to(self.device)
                cache.append(batch)
            yield batch

    def _train_epoch(
        self, state: TrainState, loader: Iterable[Batch], sampler: DistributedBucketSampler,
        cache: list[Batch] | None, loop: LoopCounters, metrics: MetricsWriter, result: TrainingResult,
    ) -> bool:
        """The rest of the epoch in progress; True when a stop was asked for (checked between steps)."""
        where = state.position
        sampler.set_epoch(where.epoch, where.batch)
        for batch in self._epoch_batches(loader, cache, where.epoch, where.batch, loop.steps_per_epoch):
            if self._stop_requested():
                return True
            started = time.perf_counter()
            out = self.train_step(state, batch)
            where.batch += 1
            where.global_step += 1
            loop.time_s += time.perf_counter() - started
            loop.steps += 1
            # The first step and each epoch's last are logged too, so a short run still draws a curve.
            due = (where.global_step % self.log_interval == 0 or where.global_step == loop.first_step + 1
                   or where.batch == loop.steps_per_epoch)  # fmt: skip
            if self.dist.is_main and due:
                result.last_metrics = self._log_metrics(state, out, loop.time_s / loop.steps, metrics)
                loop.time_s, loop.steps = 0.0, 0
            if self.dist.is_main and self.validator.due_within_epoch(where.global_step, where.batch, loop.steps_per_epoch):
                self._validate(state, loop, metrics, result, epoch=where.epoch, epoch_end=False)
            self._report(state, loop, f"epoch {where.epoch}/{self.options.epochs} step {where.global_step}")
        return False

    def _end_epoch(self, state: TrainState, loop: LoopCounters, result: TrainingResult, metrics: MetricsWriter) -> None:
        """Advance to the next epoch (its learning rate), then save and export when due."""
        where = state.position
        epoch = where.epoch
        log.info("epoch %d done (step %d)", epoch, where.global_step)
        where.epoch, where.batch = epoch + 1, 0
        for scheduler in state.schedulers:
            scheduler.step()
        result.epochs_done, result.global_step = epoch, where.global_step
        if self.dist.is_main and self.validator.enabled:
            self._validate(state, loop, metrics, result, epoch=epoch, epoch_end=True)
        if self.dist.is_main and (epoch % self.options.save_every_epochs == 0 or epoch == self.options.epochs):
            result.checkpoint_g, result.checkpoint_d = self._save_checkpoints(state, loop.steps_per_epoch)
            if self.options.export_every_save and epoch != self.options.epochs:
                voice = self._voice_path(where)
                if voice is not None:
                    result.exported.append(self._export_voice(state, voice))
            result.loss_curve_path = metrics.plot()

    def _finish(self, state: TrainState, loop: LoopCounters, result: TrainingResult, metrics: MetricsWriter) -> TrainingResult:
        where = state.position
        result.epochs_done, result.global_step = where.epochs_done, where.global_step
        if self.dist.is_main:
            final = self._voice_path(None)
            if final is not None:
                result.voice_path = self._export_voice(state, final)
                result.exported.append(result.voice_path)
            result.loss_curve_path = metrics.plot()
            result.overtraining_note = overtraining_note(read_metrics(self.experiment.metrics_path))
            if result.overtraining_note:
                log.info("%s", result.overtraining_note)
        self._barrier()
        self._report(state, loop, f"training done: {self._where(where, loop.steps_per_epoch)}")
        return result

    def _stop(self, state: TrainState, loop: LoopCounters, result: TrainingResult, metrics: MetricsWriter) -> TrainingResult:
        """Stopped between two steps: save the exact position (unless just saved), export the voice, stop."""
        where = state.position
        result.cancelled = True
        result.epochs_done, result.global_step = where.epochs_done, where.global_step
        if self.dist.is_main:
            if where.global_step != state.saved_step and where.global_step > 0:
                result.checkpoint_g, result.checkpoint_d = self._save_checkpoints(state, loop.steps_per_epoch)
            final = self._voice_path(None)
            if final is not None and where.global_step > 0:
                result.voice_path = self._export_voice(state, final)
                result.exported.append(result.voice_path)
            result.loss_curve_path = metrics.plot()
        log.info("training stopped at %s", self._where(where, loop.steps_per_epoch))
        self._barrier()
        return result

    def _validate(
        self, state: TrainState, loop: LoopCounters, metrics: MetricsWriter, result: TrainingResult, *, epoch: int,
        epoch_end: bool,
    ) -> None:
        """Evaluate on the held-out clips, log the figures; a new best is kept (G_best/D_best, <name>_best.pth)."""
        where = state.position
        figures, improved = self.validator.run(unwrap(state.net_g), step=where.global_step, epoch=epoch,
                                               epoch_end=epoch_end)
        record = figures.to_record()
        metrics.write_record(record, {tag: record[k] for k, tag in TENSORBOARD_TAGS.items() if record[k] is not None})
        cents = "-" if figures.val_f0_cents is None else f"{figures.val_f0_cents:.0f}"
        log.info("validation at epoch %d step %d: mel %.3f, stft %.3f, pitch error %s cents (%.1f s of audio in "
                 "%.2f s)%s", epoch, where.global_step, figures.val_loss_mel, figures.val_stft, cents,
                 figures.val_seconds, figures.val_time_s, ", the best so far" if improved else "")
        if not improved:
            return
        result.best_epoch, result.best_step = epoch, where.global_step
        self._save_checkpoints(state, loop.steps_per_epoch, best=True)
        voice = self._voice_path(None, suffix="_best")
        if voice is not None:
            self._export_voice(state, voice, note=f", best validation (mel {figures.val_loss_mel:.3f})")
            result.best_voice_path = voice
        write_best(self.experiment, figures, voice)

    def _stop_early(
        self, state: TrainState, loop: LoopCounters, result: TrainingResult, metrics: MetricsWriter
    ) -> TrainingResult:
        """No better validation for `early_stop_epochs` epochs: save where it stands and finish."""
        where = state.position
        log.info("early stop after epoch %d: no better validation for %d epochs (best: epoch %s)", where.epochs_done,
                 self.options.early_stop_epochs, result.best_epoch)
        result.stopped_early = True
        if self.dist.is_main and where.global_step != state.saved_step:
            result.checkpoint_g, result.checkpoint_d = self._save_checkpoints(state, loop.steps_per_epoch)
        return self._finish(state, loop, result, metrics)

    def _stop_requested(self) -> bool:
        """The cancel flag, agreed by every rank (any rank's stop stops all)."""
        return self._any_rank(self.cancel.cancelled)

    def _any_rank(self, flag: bool) -> bool:
        """True on every rank when it is on any rank."""
        if not self.dist.enabled:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return bool(value.item() > 0)

    def _barrier(self) -> None:
        if self.dist.enabled and torch.distributed.is_initialized():
            torch.distributed.barrier()

    def _log_metrics(self, state: TrainState, out: StepOutput, step_time: float, metrics: MetricsWriter) -> StepMetrics:
        where = state.position
        values = StepMetrics(
            step=where.global_step,
            epoch=where.epoch,
            **{name: float(out.losses[name].item()) for name in LOSS_NAMES},  # type: ignore[arg-type]
            learning_rate=state.optim_g.param_groups[0]["lr"],
            grad_norm_d=out.grad_norm_d.item(),
            grad_norm_g=out.grad_norm_g.item(),
            step_time_s=step_time,
            loss_g_terms=tuple(t.item() for t in out.g_terms),
            loss_d_real_terms=tuple(t.item() for t in out.d_real_terms),
            loss_d_fake_terms=tuple(t.item() for t in out.d_fake_terms),
        )
        images = {
            "slice/mel_org": out.target_mel[0].float().cpu().numpy(),
            "slice/mel_gen": out.generated_mel[0].float().cpu().numpy(),
        }
        metrics.write(values, images)
        if self.on_metrics is not None:
            record = values.to_json_dict()
            for name in LIVE_METRICS:
                if record.get(name) is not None:
                    self.on_metrics(where.global_step, name, float(record[name]))
        log.info("epoch %d step %d lr %.3g: %s (%.2f s/step)", values.epoch, where.global_step, values.learning_rate,
                 loss_line(values), step_time)
        return values


def train(
    setup: TrainingSetup,
    options: TrainingOptions,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    on_metrics: MetricSink | None = None,
    held_lock: TrainingLock | None = None,
) -> TrainingResult:
    """Train (or resume) one experiment; see the module docstring for the recipe.

    `held_lock`: the experiment's training lock, already taken by the caller (released at the end).
    """
    return Trainer(
        setup, options, progress=progress, cancel=cancel, on_metrics=on_metrics, held_lock=held_lock
    ).run()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m train.trainer logs/<exp> ...` (torchrun's entry point): see `train.launch`."""
    from train.launch import main as launch_main

    return launch_main(argv)


if __name__ == "__main__":
    sys.exit(main())
