"""The training loop: RVC's recipe, one discriminator step then one generator step per batch.

Recipe (RVC's `train/train.py`): AdamW(lr 1e-4, betas (0.8, 0.99), eps 1e-9, weight decay 0.01)
for each network, learning rate x0.999875 per epoch, losses = LSGAN + 2 x feature matching +
45 x mel L1 + KL. Checkpoints `G_<step>.pth` / `D_<step>.pth` in RVC's format every N epochs.

Where it deliberately differs from RVC, and why:
* Resume never falls back silently to a fresh start: a damaged newest checkpoint is an error
  that says which files to remove. Only a (G, D) pair written by the same save is used.
* Resume continues after the saved epoch instead of re-running it, and the step count goes on
  from the file name; optimiser moments are matched to parameters by name, so checkpoints from
  RVC releases with another parameter order resume correctly.
* Cancel saves a checkpoint (and the voice) before stopping; a second training of the same
  experiment is refused through `train.lock`.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from infer_pack.errors import (
    ExperimentError,
    ModelFileError,
)
from infer_pack.fileio import remove_stale_temporaries
from infer_pack.progress import CancelToken, ProgressCallback, report
from train.data import Batch, DistributedBucketSampler, TrainingDataset, collate
from train.experiment import LATEST_ONLY_STEP
from train.losses import (
    discriminator_loss,
    feature_loss,
    generator_loss,
    kl_loss,
    mel_loss,
)
from train.mel import MelTransform
from train.metrics import LIVE_METRICS, LOSS_NAMES, MetricsWriter, StepMetrics, loss_line
from train.options import Precision, TrainingOptions
from train.training_setup import (
    _RESUME_FIX,
    Distributed,
    MetricSink,
    ResumePoint,
    TrainingLock,
    TrainingResult,
    TrainingSetup,
    attach_file_log,
    build_networks,
    find_resume_point,
    grad_norm,
    load_experiment_config,
    load_pretrained,
    no_sync,
    optimizer_state_by_name,
    resolve_device,
    resolve_precision,
    resume_step,
    unwrap,
)

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


class Trainer:
    """Holds the networks, optimisers and data of one training run; `run()` trains."""

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
        self.net_g: torch.nn.Module
        self.net_d: torch.nn.Module

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

    def _make_loader(
        self,
    ) -> tuple[torch.utils.data.DataLoader[Any], DistributedBucketSampler]:  # yields Batch (collate)
        entries = self.experiment.read_filelist(self.setup.use_f0)
        dataset = TrainingDataset(entries, self.mel, self.setup.use_f0)
        sampler = DistributedBucketSampler(
            dataset.lengths,
            self.options.batch_size,
            num_replicas=self.dist.world_size,
            rank=self.dist.rank,
        )
        if len(sampler) == 0:
            raise ExperimentError(
                f"{self.experiment.filelist_path}: no training example has a usable length "
                "(slices of roughly 1 to 7 s are used); check the preprocessing output or lower the batch size"
            )
        workers = self.options.num_workers
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
            prefetch_factor=8 if workers > 0 else None,
        )
        return loader, sampler

    def _make_optimizer(self, net: torch.nn.Module) -> torch.optim.AdamW:
        train = self.config.train
        return torch.optim.AdamW(
            net.parameters(),
            lr=train.learning_rate,
            betas=train.betas,
            eps=train.eps,
            weight_decay=0.01,
        )

    def _resume(self, steps_per_epoch: int) -> tuple[int, int, Path | None]:
        """Load the newest complete checkpoint; returns (first epoch to train, global step, file)."""
        from infer_pack.checkpoint import load_state_strict, load_training_checkpoint

        point = find_resume_point(self.experiment) if self.options.resume else None
        if point is None:
            return 1, 0, None
        epochs_done = None
        recorded_steps: list[int | None] = []
        for path, net, optimizer in (
            (point.d_path, self.net_d, self.optim_d),
            (point.g_path, self.net_g, self.optim_g),
        ):
            try:
                ckpt = load_training_checkpoint(path)
            except ModelFileError as exc:
                raise ModelFileError(
                    path,
                    f"cannot resume from it ({exc.reason})",
                    _RESUME_FIX.format(path=path),
                ) from None
            load_state_strict(
                net,
                ckpt.model,
                path,
                "network being trained",
                _RESUME_FIX.format(path=path),
            )
            if ckpt.optimizer:
                try:
                    optimizer.load_state_dict(optimizer_state_by_name(ckpt.optimizer, list(ckpt.model), net, path))
                except (KeyError, ValueError, TypeError) as exc:
                    raise ModelFileError(
                        path,
                        f"optimizer state does not fit ({exc})",
                        _RESUME_FIX.format(path=path),
                    ) from None
            else:
                log.warning("%s holds no optimizer state; Adam moments start from zero", path)
            epochs_done = ckpt.iteration if epochs_done is None else min(epochs_done, ckpt.iteration)
            recorded_steps.append(ckpt.global_step)
        assert epochs_done is not None
        step = resume_step(point.step, recorded_steps, epochs_done, steps_per_epoch)
        log.info(
            "resuming from %s (epoch %d done, step %d)",
            point.g_path.name,
            epochs_done,
            step,
        )
        return epochs_done + 1, step, point.g_path

    def _set_learning_rate(self, first_epoch: int) -> list[torch.optim.lr_scheduler.ExponentialLR]:
        """Epoch e trains with lr x decay^(e-1); a scheduler per optimiser steps once per epoch."""
        train = self.config.train
        schedulers = []
        for optimizer in (self.optim_g, self.optim_d):
            for group in optimizer.param_groups:
                group["initial_lr"] = train.learning_rate
                group["lr"] = train.learning_rate * train.lr_decay ** (first_epoch - 1)
            schedulers.append(
                torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=train.lr_decay, last_epoch=first_epoch - 2)
            )
        return schedulers

    # -- one step --------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(
            self.device.type,
            dtype=self.amp_dtype,
            enabled=self.amp_dtype != torch.float32,
        )

    def train_step(self, batch: Batch) -> StepOutput:
        from infer_pack.commons import slice_segments

        b = batch.to(self.device, non_blocking=True)
        hop = self.config.data.hop_length
        segment_frames = self.config.segment_frames

        with self._autocast():
            y_hat, ids_slice, _x_mask, z_mask, (_z, z_p, m_p, logs_p, _m_q, logs_q) = self.net_g(
                b.phone,
                b.phone_lengths,
                b.pitch,
                b.pitchf,
                b.spec,
                b.spec_lengths,
                b.speaker_id,
            )  # y_hat [B, 1, segment_size]
        with torch.no_grad():
            target_mel = slice_segments(self.mel.mel_from_spectrogram(b.spec), ids_slice, segment_frames)  # [B, M, S]
        generated_mel = self.mel.mel(y_hat.float().squeeze(1))  # [B, M, S], fp32
        wave = slice_segments(b.wave, ids_slice * hop, self.config.train.segment_size)  # [B, 1, segment_size]

        # Discriminator: real -> 1, generated (detached) -> 0.
        with self._autocast():
            real_scores, fake_scores, _, _ = self.net_d(wave, y_hat.detach())
        loss_d, d_real_terms, d_fake_terms = discriminator_loss(real_scores, fake_scores)
        self.optim_d.zero_grad(set_to_none=True)
        self.scaler.scale(loss_d).backward()
        self.scaler.unscale_(self.optim_d)
        grad_norm_d = grad_norm(self.net_d)
        self.scaler.step(self.optim_d)

        # Generator: fool the (just updated) discriminator, match its features, the mel and the prior.
        # The discriminator's weight gradients of this pass are never used, so they are not computed.
        with self._autocast(), no_sync(self.net_d):
            _, fake_scores, real_maps, fake_maps = self.net_d(wave, y_hat)
        loss_gen, g_terms = generator_loss(fake_scores)
        loss_fm = feature_loss(real_maps, fake_maps)
        loss_mel = mel_loss(target_mel, generated_mel, self.config.train.c_mel)
        loss_kl = kl_loss(z_p, logs_q, m_p, logs_p, z_mask) * self.config.train.c_kl
        loss_g = loss_gen + loss_fm + loss_mel + loss_kl
        self.optim_g.zero_grad(set_to_none=True)
        self.scaler.scale(loss_g).backward(inputs=self._g_params)
        self.scaler.unscale_(self.optim_g)
        grad_norm_g = grad_norm(self.net_g)
        self.scaler.step(self.optim_g)
        self.scaler.update()
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
    def _save_checkpoints(self, epochs_done: int, global_step: int) -> tuple[Path, Path]:
        """G then D, each written atomically; a pair is only used for resume once both exist."""
        from infer_pack.checkpoint import save_training_checkpoint

        step_name = LATEST_ONLY_STEP if self.options.latest_only else global_step
        g_path = self.experiment.g_checkpoint_path(step_name)
        d_path = self.experiment.d_checkpoint_path(step_name)
        lr = self.config.train.learning_rate
        for path, net, optimizer in (
            (g_path, self.net_g, self.optim_g),
            (d_path, self.net_d, self.optim_d),
        ):
            save_training_checkpoint(
                path,
                model=unwrap(net).state_dict(),
                iteration=epochs_done,
                optimizer=optimizer.state_dict(),
                learning_rate=lr,
                global_step=global_step,
            )
        log.info(
            "saved %s and %s (epoch %d done, step %d)",
            g_path.name,
            d_path.name,
            epochs_done,
            global_step,
        )
        return g_path, d_path

    def _export_voice(self, path: Path, epochs_done: int) -> Path:
        from infer_pack.checkpoint import save_voice, voice_from_state_dict

        state = {k: v.detach().cpu() for k, v in unwrap(self.net_g).state_dict().items()}
        voice = voice_from_state_dict(
            state,
            self.config,
            self.setup.use_f0,
            f"{epochs_done}epoch",
            self.setup.version,
            trained_speakers=self.experiment.filelist_speaker_ids(self.setup.use_f0),
        )
        save_voice(path, voice)
        log.info("exported voice %s", path)
        return path

    def _voice_path(self, epochs_done: int | None, global_step: int) -> Path | None:
        if self.options.weights_dir is None:
            return None
        name = self.options.voice_name or self.experiment.name
        suffix = "" if epochs_done is None else f"_e{epochs_done}_s{global_step}"
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

    def _epoch_batches(
        self, loader: Iterable[Batch], cache: list[Batch] | None, epoch: int, steps_per_epoch: int
    ) -> Iterator[Batch]:
        """One epoch's batches: from the loader, or (caching) the cached ones in a new order per epoch.

        A cache is used only once it holds a whole epoch (a resumed or stopped first epoch fills it again).
        """
        if cache is not None and len(cache) == steps_per_epoch:
            order = torch.randperm(len(cache), generator=torch.Generator().manual_seed(epoch))
            yield from (cache[i] for i in order.tolist())
            return
        if cache is not None:
            cache.clear()
        for batch in loader:
            if cache is not None:
                batch = batch.to(self.device)
                cache.append(batch)
            yield batch

    def _run(self, metrics: MetricsWriter) -> TrainingResult:
        options = self.options
        torch.manual_seed(options.seed if options.seed is not None else self.config.train.seed)
        loader, sampler = self._make_loader()
        steps_per_epoch = len(sampler)

        net_g, net_d = self._networks if self._networks is not None else build_networks(self.setup)
        self.net_g, self.net_d = net_g.to(self.device), net_d.to(self.device)
        self.optim_g = self._make_optimizer(self.net_g)
        self.optim_d = self._make_optimizer(self.net_d)
        first_epoch, global_step, resumed_from = self._resume(steps_per_epoch)
        if resumed_from is None:
            for path, net, what in (
                (options.pretrained_g, self.net_g, "generator"),
                (options.pretrained_d, self.net_d, "discriminator"),
            ):
                if path is not None:
                    load_pretrained(net, Path(path), what)
                    log.info("loaded pretrained %s %s", what, path)
                else:
                    log.info("no pretrained %s: training it from random weights", what)
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net_g = torch.nn.parallel.DistributedDataParallel(self.net_g, device_ids=ids)
            self.net_d = torch.nn.parallel.DistributedDataParallel(self.net_d, device_ids=ids)
        metrics.keep_until(global_step)
        self._g_params = [p for p in self.net_g.parameters() if p.requires_grad]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        schedulers = self._set_learning_rate(first_epoch)
        self.net_g.train()
        self.net_d.train()

        result = TrainingResult(
            experiment_dir=self.experiment.root, first_epoch=first_epoch, epochs_done=first_epoch - 1,
            global_step=global_step, cancelled=False, resumed_from=resumed_from, checkpoint_g=None,
            checkpoint_d=None, voice_path=None, metrics_path=self.experiment.metrics_path,
        )  # fmt: skip
        total_steps = max(0, options.epochs - first_epoch + 1) * steps_per_epoch
        steps_this_run = 0
        saved_step = global_step if resumed_from is not None else -1
        log.info(
            "training %s: epochs %d..%d, %d steps per epoch, device %s, %s, rank %d/%d",
            self.experiment.name, first_epoch, options.epochs, steps_per_epoch, self.device,
            str(self.amp_dtype).replace("torch.", ""), self.dist.rank, self.dist.world_size,
        )  # fmt: skip
        report(self.progress, 0, total_steps, f"training from epoch {first_epoch}")

        interval_time = 0.0
        interval_steps = 0
        cache: list[Batch] | None = [] if options.cache_batches else None
        for epoch in range(first_epoch, options.epochs + 1):
            sampler.set_epoch(epoch)
            for batch_number, batch in enumerate(self._epoch_batches(loader, cache, epoch, steps_per_epoch), 1):
                if self._stop_requested():
                    return self._stop(result, epoch - 1, global_step, saved_step, metrics)
                start = time.perf_counter()
                out = self.train_step(batch)
                global_step += 1
                steps_this_run += 1
                interval_time += time.perf_counter() - start
                interval_steps += 1
                # The first step and each epoch's last are logged too, so a run shorter than the interval
                # still draws a curve.
                due = global_step % self.log_interval == 0 or steps_this_run == 1 or batch_number == steps_per_epoch
                if self.dist.is_main and due:
                    result.last_metrics = self._log_metrics(
                        out, epoch, global_step, interval_time / interval_steps, metrics
                    )
                    interval_time, interval_steps = 0.0, 0
                report(
                    self.progress,
                    steps_this_run,
                    total_steps,
                    f"epoch {epoch}/{options.epochs} step {global_step}",
                )
            result.epochs_done, result.global_step = epoch, global_step
            log.info("epoch %d done (step %d)", epoch, global_step)
            if self.dist.is_main and (epoch % options.save_every_epochs == 0 or epoch == options.epochs):
                result.checkpoint_g, result.checkpoint_d = self._save_checkpoints(epoch, global_step)
                saved_step = global_step
                if options.export_every_save and epoch != options.epochs:
                    voice = self._voice_path(epoch, global_step)
                    if voice is not None:
                        result.exported.append(self._export_voice(voice, epoch))
                result.loss_curve_path = metrics.plot()
            for scheduler in schedulers:
                scheduler.step()
        result.epochs_done, result.global_step = (
            max(result.epochs_done, first_epoch - 1),
            global_step,
        )
        if self.dist.is_main:
            final = self._voice_path(None, global_step)
            if final is not None:
                result.voice_path = self._export_voice(final, result.epochs_done)
                result.exported.append(result.voice_path)
            result.loss_curve_path = metrics.plot()
        self._barrier()
        report(
            self.progress,
            total_steps,
            total_steps,
            f"training done: epoch {result.epochs_done}, step {global_step}",
        )
        return result

    def _stop(
        self,
        result: TrainingResult,
        epochs_done: int,
        global_step: int,
        saved_step: int,
        metrics: MetricsWriter,
    ) -> TrainingResult:
        """Cancelled: save what was learnt (unless just saved), export the voice, and stop."""
        result.cancelled = True
        result.epochs_done, result.global_step = epochs_done, global_step
        if self.dist.is_main:
            if global_step != saved_step and global_step > 0:
                result.checkpoint_g, result.checkpoint_d = self._save_checkpoints(epochs_done, global_step)
            final = self._voice_path(None, global_step)
            if final is not None and global_step > 0:
                result.voice_path = self._export_voice(final, epochs_done)
                result.exported.append(result.voice_path)
            result.loss_curve_path = metrics.plot()
        log.info("training stopped at step %d", global_step)
        self._barrier()
        return result

    def _stop_requested(self) -> bool:
        """The cancel flag, agreed by every rank (any rank's stop stops all)."""
        flag = self.cancel.cancelled
        if not self.dist.enabled:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return bool(value.item() > 0)

    def _barrier(self) -> None:
        if self.dist.enabled and torch.distributed.is_initialized():
            torch.distributed.barrier()

    def _log_metrics(
        self,
        out: StepOutput,
        epoch: int,
        step: int,
        step_time: float,
        metrics: MetricsWriter,
    ) -> StepMetrics:
        values = StepMetrics(
            step=step,
            epoch=epoch,
            **{name: float(out.losses[name].item()) for name in LOSS_NAMES},  # type: ignore[arg-type]
            learning_rate=self.optim_g.param_groups[0]["lr"],
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
                    self.on_metrics(step, name, float(record[name]))
        log.info("epoch %d step %d lr %.3g: %s (%.2f s/step)", epoch, step, values.learning_rate, loss_line(values),
                 step_time)
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
