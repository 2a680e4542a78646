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
from infer_pack.specs import add_spec_flags, spec_values
from train.experiment import Experiment
from train.options import TrainingOptions, training_option_specs
from train.trainer import train
from train.training_setup import TrainingSetup, load_experiment_config

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
    parser.add_argument("--pretrained-g", type=Path, default=None)
    parser.add_argument("--pretrained-d", type=Path, default=None)
    parser.add_argument("--weights-dir", type=Path, default=None, help="where voice models go (default: none written)")
    parser.add_argument("--device", default="auto")
    # Under torchrun the loader gets two workers per process unless told otherwise.
    add_spec_flags(parser.add_argument_group("training settings"), training_option_specs(),
                   defaults={"num_workers": 2}, shown_defaults={"num_workers": "2"})
    # Earlier spellings of two switches, still accepted.
    parser.add_argument("--latest-only", dest="latest_only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--export-every-save", dest="export_every_save", action="store_true", help=argparse.SUPPRESS)
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
        **spec_values(args, training_option_specs()), pretrained_g=args.pretrained_g, pretrained_d=args.pretrained_d,
        weights_dir=args.weights_dir, device=args.device,
    )
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
