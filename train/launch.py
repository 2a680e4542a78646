"""`python -m train.trainer logs/<exp> ...`: train an experiment folder from a terminal or under torchrun.

    torchrun --nproc_per_node 4 -m train.trainer logs/alice --epochs 200

The process group is initialised from torchrun's environment (env://); only rank 0 writes files.
SIGTERM / SIGINT (which torchrun forwards to every worker) stop after the current step and save.
"""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import Sequence
from pathlib import Path

import torch

from configs import SampleRateTag, Version
from infer_pack.progress import CancelToken
from train.experiment import Experiment
from train.trainer import train
from train.training_setup import TrainingOptions, TrainingSetup, load_experiment_config

log = logging.getLogger("train.trainer")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m train.trainer",
        description="Train an experiment folder (run under torchrun for several GPUs or nodes).",
    )
    parser.add_argument(
        "experiment_dir",
        type=Path,
        help="logs/<exp> with filelist.txt (written by the app or CLI)",
    )
    parser.add_argument("--version", choices=["v1", "v2"], default=None)
    parser.add_argument("--sample-rate", choices=["32k", "40k", "48k"], default=None)
    parser.add_argument("--no-f0", action="store_true", help="train a model without pitch guidance")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4, help="items per step on each GPU")
    parser.add_argument("--save-every", type=int, default=5, help="epochs between checkpoints")
    parser.add_argument("--latest-only", action="store_true")
    parser.add_argument("--export-every-save", action="store_true")
    parser.add_argument("--pretrained-g", type=Path, default=None)
    parser.add_argument("--pretrained-d", type=Path, default=None)
    parser.add_argument("--weights-dir", type=Path, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto")
    parser.add_argument("--mel-epsilons", choices=["head", "classic"], default="head")
    parser.add_argument("--log-interval", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    experiment = Experiment(args.experiment_dir)
    meta = experiment.infer_metadata()
    version: Version = args.version or meta.version
    tag: SampleRateTag = args.sample_rate or meta.sample_rate_tag
    use_f0 = False if args.no_f0 else meta.use_f0
    setup = TrainingSetup(
        experiment,
        version,
        tag,
        use_f0,
        load_experiment_config(experiment, version, tag),
    )
    options = TrainingOptions(
        epochs=args.epochs, batch_size=args.batch_size, save_every_epochs=args.save_every,
        latest_only=args.latest_only, export_every_save=args.export_every_save,
        pretrained_g=args.pretrained_g, pretrained_d=args.pretrained_d, weights_dir=args.weights_dir,
        device=args.device, precision=args.precision, mel_epsilons=args.mel_epsilons,
        log_interval=args.log_interval, num_workers=args.workers,
    )  # fmt: skip
    cancel = CancelToken()
    # torchrun forwards SIGTERM/SIGINT to every worker: stop after the current step and save.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: cancel.cancel())
    try:
        result = train(setup, options, cancel=cancel)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    log.info(
        "finished: epoch %d, step %d, cancelled=%s",
        result.epochs_done,
        result.global_step,
        result.cancelled,
    )
    return 0
