"""One training's request: the experiment and its settings, each default, range and help written once.

Light on purpose (no numpy, no torch): the command line builds `train --help` from these specs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal, TypedDict

from configs import SampleRateTag, Version
from infer_pack.specs import ParamSpec, field_specs, spec_field, spec_from
from train.options import Precision, TrainingOptions


class TrainSettings(TypedDict, total=False):
    """How to train (the settings one-click passes on): defaults and meaning on TrainRequest."""

    epochs: int
    batch_size: int
    save_every_epochs: int
    latest_only: bool
    export_every_save: bool
    use_pretrained: bool
    pretrained_g: str | Path | None
    pretrained_d: str | Path | None
    precision: Precision
    mel_epsilons: Literal["head", "classic"]
    log_interval: int | None
    num_workers: int
    resume: bool
    export_voice: bool
    cache_batches: bool
    validate_every_steps: int | None
    early_stop_epochs: int


class TrainOptions(TrainSettings, total=False):
    """The keywords `train_model` takes besides the experiment: TrainRequest's fields, a test keeps them equal."""

    version: Version | None
    sample_rate_tag: SampleRateTag | None
    use_f0: bool | None
    speaker_id: int | None
    device: str


@dataclass(frozen=True)
class TrainRequest:
    """One training: the experiment and its settings; each default is written here only."""

    experiment: str
    version: Version | None = None  # None: what the experiment was prepared for
    sample_rate_tag: SampleRateTag | None = None
    use_f0: bool | None = None
    speaker_id: int | None = spec_field(
        None, "Speaker id", "Speaker row this dataset trains (multi-speaker models); default: the one given at "
        "preprocessing.", 0, 108, 1)
    epochs: int = spec_from(TrainingOptions, "epochs")
    batch_size: int = spec_from(TrainingOptions, "batch_size")
    save_every_epochs: int = spec_from(TrainingOptions, "save_every_epochs")
    latest_only: bool = spec_from(TrainingOptions, "latest_only")
    export_every_save: bool = spec_from(TrainingOptions, "export_every_save")
    use_pretrained: bool = spec_field(
        True, "Start from pretrained G/D", "Start from pretrained[_v2]/f0G40k.pth etc. (needs far fewer epochs); "
        "off trains from scratch.", flag="no-pretrained")
    pretrained_g: str | Path | None = spec_field(
        None, "Pretrained generator", "G file relative to the project; default: the matching asset.")
    pretrained_d: str | Path | None = spec_field(
        None, "Pretrained discriminator", "D file relative to the project; default: the matching asset.")
    device: str = "auto"
    precision: Precision = spec_from(TrainingOptions, "precision")
    mel_epsilons: Literal["head", "classic"] = spec_from(TrainingOptions, "mel_epsilons")
    log_interval: int | None = spec_from(TrainingOptions, "log_interval")
    num_workers: int = spec_from(TrainingOptions, "num_workers")
    resume: bool = spec_from(TrainingOptions, "resume")
    export_voice: bool = spec_field(True, "Export the voice", "Write weights/<experiment>.pth at the end "
                                    "(and when stopped).", flag="no-export")
    cache_batches: bool = spec_from(TrainingOptions, "cache_batches")
    validate_every_steps: int | None = spec_from(TrainingOptions, "validate_every_steps")
    early_stop_epochs: int = spec_from(TrainingOptions, "early_stop_epochs")


def training_param_specs() -> dict[str, ParamSpec]:
    """What the Train tab and `tools.cli train` build their settings from (name -> default, range, help, flag)."""
    return field_specs(TrainRequest)


# TrainRequest's field names (what `train_model` passes on to the trainer's options by name)
REQUEST_FIELDS = frozenset(f.name for f in fields(TrainRequest))
