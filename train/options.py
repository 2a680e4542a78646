"""How to train: the trainer's options, each user-settable one's default, range and help written once.

Light on purpose (no torch, no numpy): the command lines read these specs for `--help`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from infer_pack.errors import UserInputError
from infer_pack.specs import ParamSpec, field_specs, spec_field

if TYPE_CHECKING:
    from train.mel import EpsilonMode

Precision = Literal["auto", "fp32", "bf16", "fp16"]
# (step, metric name, value): a live view of the losses (e.g. the app's job runner)
MetricSink = Callable[[int, str, float], None]
PRECISIONS: tuple[Precision, ...] = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class TrainingOptions:
    """How to train: each user-settable field's default, range and help are written here only.

    The API's TrainRequest takes these fields by name (`spec_from`), the command lines
    (`tools.cli train`, `python -m train.trainer`) and the Train tab are built from their specs.
    """

    epochs: int = spec_field(20, "Total epochs", "Passes over the dataset; a resumed run continues up to this "
                             "total.", 1, 1000, 1, unit="epochs")
    batch_size: int = spec_field(4, "Batch size", "Segments per step on each device (more needs more memory).",
                                 1, 40, 1)
    save_every_epochs: int = spec_field(
        5, "Save every N epochs", "Write a G/D checkpoint (and the voice) every N epochs.", 1, 50, 1,
        flag="save-every", unit="epochs")
    latest_only: bool = spec_field(
        False, "Keep only the latest checkpoint", "Overwrite G_2333333.pth / D_2333333.pth at each save instead of "
        "keeping every save (saves disk space).", flag="save-latest-only")
    export_every_save: bool = spec_field(
        False, "Export a voice at every save", "Also write weights/<exp>_e<epoch>_s<step>.pth at each save.",
        flag="save-small-each")
    pretrained_g: Path | None = None  # None: start the generator from random weights
    pretrained_d: Path | None = None
    weights_dir: Path | None = None  # where voice models go; None: no voice export
    voice_name: str | None = None  # default: the experiment name
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    precision: Precision = spec_field(
        "auto", "Precision", "auto: bf16 on GPUs that support it, else fp16; always fp32 on CPU. fp16 uses a "
        "gradient scaler.", choices=PRECISIONS)
    mel_epsilons: EpsilonMode = spec_field(
        "head", "Mel epsilons", "head: the log-mel floor of RVC's current code; classic: its earlier releases'.",
        choices=("head", "classic"))
    log_interval: int | None = spec_field(
        None, "Log interval", "Log losses every N steps (each epoch's last step is always logged); empty: the "
        "config's (200).", 1, 1_000_000, 1, unit="steps")
    seed: int | None = None  # None: the config's (1234)
    num_workers: int = spec_field(0, "Loader workers", "Processes reading the training set (0: in the trainer).",
                                  0, 64, 1, flag="workers")
    resume: bool = spec_field(True, "Resume", "Continue from the experiment's newest G/D checkpoint.",
                              flag="no-resume")
    # Keep the first epoch's batches on the training device and replay them, reshuffled, in later epochs
    # (RVC's "cache training set on GPU"): no loading after epoch 1, at the cost of device memory.
    cache_batches: bool = spec_field(
        False, "Cache the training set on the device", "Keep epoch 1's batches on the device and replay them in "
        "later epochs (RVC's cache on GPU; faster for small datasets, uses device memory).", flag="cache-on-device")

    validate_every_steps: int | None = spec_field(
        None, "Validate every N steps", "Also evaluate on the held-out clips every N steps (each epoch end always "
        "does); 0 or empty: at epoch ends only.", 1, 1_000_000, 1, unit="steps")
    early_stop_epochs: int = spec_field(
        0, "Early stop after N epochs", "Stop when the validation loss has not improved for N epochs (needs held-out "
        "clips); 0: off.", 0, 1000, 1, flag="early-stop", unit="epochs")

    def __post_init__(self) -> None:
        specs = training_option_specs()
        for name in ("epochs", "batch_size", "save_every_epochs", "num_workers", "early_stop_epochs"):
            specs[name].checked(getattr(self, name), upper=False)  # the range is the UI's; scripts may go further
        for name in ("log_interval", "validate_every_steps"):
            if getattr(self, name) is not None:
                specs[name].checked(getattr(self, name), upper=False)
        if self.precision not in PRECISIONS:
            raise UserInputError(f"unknown precision {self.precision!r}; use auto, fp32, bf16 or fp16")


def training_option_specs() -> dict[str, ParamSpec]:
    """The user-settable TrainingOptions fields: name -> default, range, help, flag."""
    return field_specs(TrainingOptions)
