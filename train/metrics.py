"""Training metrics: one JSON object per line, TensorBoard event files, and a loss-curve PNG.

The JSON-lines file is the machine-readable record (the UI and tests read it); TensorBoard gets the
same scalars under RVC's tag names (`loss/g/total`, `loss/d/total`, `learning_rate`, ...) plus
mel images, so `tensorboard --logdir logs/<exp>` shows what it shows for RVC experiments.
The three paths are named by `train.experiment.Experiment` (`metrics_path`, `loss_curve_path`,
`tensorboard_dir`); `MetricsWriter.for_experiment` uses them.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from infer_pack.fileio import atomic_path
from train.experiment import FORMAT_KEY, check_format

METRICS_FORMAT = 1  # each metrics.jsonl record's format_version

if TYPE_CHECKING:
    from train.experiment import Experiment

log = logging.getLogger(__name__)

# Validation records (`train.validation`) carry kind "validation"; the best is the lowest BEST_KEY.
RECORD_KIND = "validation"
BEST_KEY = "val_loss_mel"
STALL_EPOCHS = 3  # epoch ends without a better validation before the curve says "likely overtraining"

# RVC caps these two for display only (the backward pass used the real values).
DISPLAY_CAP = {"mel": 75.0, "kl": 9.0}


@dataclass(frozen=True)
class LossName:
    """One loss of the training step: its key (metrics file, StepMetrics field) and how each view shows it."""

    key: str
    label: str  # the app's loss-curve legend
    short: str  # the training log line ("" = not in the line)
    plotted: bool  # drawn in the app's loss curve


# The one list of the step's losses, in the order the trainer computes them. StepMetrics has a field
# per key; the live series, the log line and the app's curve are derived from this tuple.
LOSSES: tuple[LossName, ...] = (
    LossName("loss_d", "discriminator", "d", plotted=True),
    LossName("loss_g", "generator total", "", plotted=True),
    LossName("loss_gen", "generator (adversarial)", "g", plotted=False),
    LossName("loss_fm", "feature matching", "fm", plotted=False),
    LossName("loss_mel", "mel", "mel", plotted=True),
    LossName("loss_kl", "KL", "kl", plotted=True),
)
LOSS_NAMES: tuple[str, ...] = tuple(loss.key for loss in LOSSES)
# What the app's job runner receives while training runs: every loss, then the optimiser's figures.
LIVE_METRICS: tuple[str, ...] = (*LOSS_NAMES, "learning_rate", "grad_norm_g", "grad_norm_d", "step_time_s")
# The app's loss curve: metrics key -> legend name.
PLOTTED_LOSSES: dict[str, str] = {loss.key: loss.label for loss in LOSSES if loss.plotted}
# ... and the held-out figure beside them (same scale as the training mel loss).
PLOTTED_SERIES: dict[str, str] = {**PLOTTED_LOSSES, BEST_KEY: "validation mel"}


def is_validation(record: dict[str, Any]) -> bool:
    return record.get("kind") == RECORD_KIND


def loss_line(values: StepMetrics) -> str:
    """The losses part of the training log line, e.g. "d 2.710 g 2.040 fm 0.801 mel 24.390 kl 1.820"."""
    return " ".join(f"{loss.short} {getattr(values, loss.key):.3f}" for loss in LOSSES if loss.short)


@dataclass(frozen=True)
class StepMetrics:
    """What one log interval reports (values of the last step, step time averaged)."""

    step: int
    epoch: int
    loss_d: float
    loss_g: float
    loss_gen: float
    loss_fm: float
    loss_mel: float
    loss_kl: float
    learning_rate: float
    grad_norm_d: float
    grad_norm_g: float
    step_time_s: float
    loss_g_terms: tuple[float, ...] = ()
    loss_d_real_terms: tuple[float, ...] = ()
    loss_d_fake_terms: tuple[float, ...] = ()
    extra: dict[str, float] = field(default_factory=dict)

    def to_json_dict(self) -> dict[str, Any]:
        data = {FORMAT_KEY: METRICS_FORMAT, **asdict(self)}
        data["loss_g_terms"] = list(self.loss_g_terms)
        data["loss_d_real_terms"] = list(self.loss_d_real_terms)
        data["loss_d_fake_terms"] = list(self.loss_d_fake_terms)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in data.items()}

    def scalars(self) -> dict[str, float]:
        """RVC's TensorBoard tags."""
        values = {
            "loss/g/total": self.loss_g,
            "loss/d/total": self.loss_d,
            "learning_rate": self.learning_rate,
            "grad_norm_d": self.grad_norm_d,
            "grad_norm_g": self.grad_norm_g,
            "loss/g/fm": self.loss_fm,
            "loss/g/mel": min(self.loss_mel, DISPLAY_CAP["mel"]),
            "loss/g/kl": min(self.loss_kl, DISPLAY_CAP["kl"]),
            "step_time_s": self.step_time_s,
        }
        values.update({f"loss/g/{i}": v for i, v in enumerate(self.loss_g_terms)})
        values.update({f"loss/d_r/{i}": v for i, v in enumerate(self.loss_d_real_terms)})
        values.update({f"loss/d_g/{i}": v for i, v in enumerate(self.loss_d_fake_terms)})
        values.update(self.extra)
        return values


class MetricsWriter:
    """Appends metrics for one experiment; a disabled writer (DDP ranks > 0) does nothing."""

    def __init__(
        self, metrics_path: Path, loss_curve_path: Path, tensorboard_dir: Path | None, enabled: bool = True
    ) -> None:
        self.metrics_path = metrics_path
        self.loss_curve_path = loss_curve_path
        self.enabled = enabled
        self._tensorboard: Any = None
        if enabled and tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tensorboard = SummaryWriter(log_dir=str(tensorboard_dir))
            except ImportError as exc:  # training goes on; only the TensorBoard view is lost
                log.warning("TensorBoard logging disabled: %s", exc)

    @classmethod
    def for_experiment(cls, experiment: Experiment, *, tensorboard: bool = True, enabled: bool = True) -> MetricsWriter:
        """The writer for an experiment's own metrics file, loss-curve PNG and (optionally) TensorBoard folder."""
        return cls(
            experiment.metrics_path,
            experiment.loss_curve_path,
            experiment.tensorboard_dir if tensorboard else None,
            enabled=enabled,
        )

    def keep_until(self, step: int) -> None:
        """Drop records after `step`: a fresh start keeps none, a resume drops what a killed run
        logged past its last checkpoint (those steps are trained again)."""
        if not self.enabled or not self.metrics_path.exists():
            return
        kept = [r for r in read_metrics(self.metrics_path) if isinstance(r.get("step"), int) and r["step"] <= step]
        text = "".join(json.dumps({FORMAT_KEY: METRICS_FORMAT, **r}, sort_keys=True) + "\n" for r in kept)
        with atomic_path(self.metrics_path) as tmp:
            tmp.write_text(text, encoding="utf-8")

    def write(self, metrics: StepMetrics, mel_images: dict[str, np.ndarray] | None = None) -> None:
        if not self.enabled:
            return
        self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(metrics.to_json_dict(), sort_keys=True) + "\n")
        if self._tensorboard is not None:
            for tag, value in metrics.scalars().items():
                self._tensorboard.add_scalar(tag, value, metrics.step)
            for tag, image in (mel_images or {}).items():
                self._tensorboard.add_image(tag, _mel_to_image(image), metrics.step, dataformats="HW")
            self._tensorboard.flush()

    def write_record(self, record: dict[str, Any], scalars: dict[str, float]) -> None:
        """Append a record of another kind (e.g. validation figures, `kind` set) and its TensorBoard scalars."""
        if not self.enabled:
            return
        self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({FORMAT_KEY: METRICS_FORMAT, **record}, sort_keys=True) + "\n")
        if self._tensorboard is not None:
            for tag, value in scalars.items():
                self._tensorboard.add_scalar(tag, value, int(record["step"]))
            self._tensorboard.flush()

    def plot(self) -> Path | None:
        """Redraw the loss-curve PNG from everything in the metrics file."""
        if not self.enabled:
            return None
        records = read_metrics(self.metrics_path)
        if not records:
            return None
        plot_loss_curve(records, self.loss_curve_path)
        return self.loss_curve_path

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every complete JSON line of a metrics file (a line cut short by a kill is skipped)."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(check_format(record, path, METRICS_FORMAT, "a metrics record",
                                        "delete the file (the loss curve starts again)"))
    return records


def plot_loss_curve(records: Sequence[dict[str, Any]], target: Path) -> None:
    """The loss-curve PNG (`draw_loss_curve`), written atomically."""
    figure = draw_loss_curve(records)
    with atomic_path(target) as tmp:
        figure.savefig(tmp, format="png")


def epoch_ends(records: Sequence[dict[str, Any]]) -> dict[int, int]:
    """epoch -> the last step logged in it (each epoch's last step is always logged)."""
    ends: dict[int, int] = {}
    for r in records:
        if not is_validation(r) and isinstance(r.get("epoch"), int) and isinstance(r.get("step"), int):
            ends[r["epoch"]] = max(ends.get(r["epoch"], 0), r["step"])
    return ends


def draw_loss_curve(records: Sequence[dict[str, Any]]) -> Any:
    """A matplotlib Figure: above, the mel losses (training and validation, one scale) with KL and feature
    matching; below, the adversarial pair. Every series named in a legend, integer steps, a dotted line
    at each epoch's end (epoch numbers along the top), the best validation marked, and the overtraining
    sentence underneath when it applies."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    train = [r for r in records if not is_validation(r)]
    history = ValidationHistory.from_records(records)
    steps = [r["step"] for r in train]
    # Few records (a short run): draw each one as a dot, since a single record makes no line.
    style: dict[str, Any] = {"marker": "o", "markersize": 3} if len(train) <= 50 else {}
    note = overtraining_note(records)
    figure = Figure(figsize=(8, 5.4 if note else 4.8), dpi=100)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    for key, label in (("loss_mel", "training mel (x c_mel)"), ("loss_fm", "feature matching"), ("loss_kl", "KL")):
        top.plot(steps, [_num(r.get(key)) for r in train], label=label, **style)
    if history.records:
        top.plot([r["step"] for r in history.records], [_num(r.get(BEST_KEY)) for r in history.records],
                 label="validation mel (held-out)", color="black", linewidth=2, marker="s", markersize=4)
    for key, label in (("loss_gen", "generator (adversarial)"), ("loss_d", "discriminator")):
        bottom.plot(steps, [_num(r.get(key)) for r in train], label=label, **style)
    ends = epoch_ends(records)
    for axis in (top, bottom):
        for step in ends.values():
            axis.axvline(step, color="grey", linestyle=":", linewidth=0.8)
        axis.grid(alpha=0.3)
        axis.set_ylabel("loss")
    best = history.best
    if best is not None:
        for axis in (top, bottom):
            axis.axvline(best["step"], color="tab:purple", linewidth=1.5)
        top.plot([best["step"]], [best[BEST_KEY]], marker="*", markersize=16, color="tab:purple", linestyle="none",
                 label=f"best: epoch {best['epoch']} (step {best['step']})")
    if ends:
        epochs_axis = top.secondary_xaxis("top")
        shown = sorted(ends.items())[:: max(1, len(ends) // 20)]  # at most ~20 labels
        epochs_axis.set_xticks([step for _, step in shown], labels=[str(epoch) for epoch, _ in shown])
        epochs_axis.set_xlabel("end of epoch", fontsize="small")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.set_xlabel("step")
    top.legend(loc="best", fontsize="small")
    bottom.legend(loc="upper right", fontsize="small")
    if note:
        import textwrap

        figure.text(0.01, 0.01, textwrap.fill(note, 120), fontsize="small", color="tab:red")
        figure.tight_layout(rect=(0, 0.1, 1, 1))
    else:
        figure.tight_layout()
    return figure


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else float("nan")


def _mel_to_image(mel: np.ndarray) -> np.ndarray:
    """[n_mels, frames] log mel -> [H, W] in 0..1, low frequencies at the bottom."""
    low, high = float(np.min(mel)), float(np.max(mel))
    scaled = (mel - low) / (high - low) if high > low else np.zeros_like(mel)
    return np.flipud(scaled).astype(np.float32)


# -- validation history: best so far, epochs since, early stop, the overtraining sentence ---------
@dataclass
class ValidationHistory:
    """Validation records in step order (from metrics.jsonl and this run)."""

    records: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_records(cls, records: Sequence[dict[str, Any]]) -> ValidationHistory:
        return cls(sorted((dict(r) for r in records if is_validation(r)), key=lambda r: int(r["step"])))

    @property
    def best(self) -> dict[str, Any] | None:
        """The record with the lowest finite `val_loss_mel` (the earliest of equals)."""
        best = None
        for record in self.records:
            value = record.get(BEST_KEY)
            if isinstance(value, (int, float)) and math.isfinite(value) and (best is None or value < best[BEST_KEY]):
                best = record
        return best

    def add(self, record: dict[str, Any]) -> bool:
        """Append one; True when it is the new best."""
        self.records.append(dict(record))
        return self.best is self.records[-1]

    def epochs_without_improvement(self) -> int:
        """Epoch-end validations after the best one (all of them when none was finite)."""
        best = self.best
        after = int(best["step"]) if best is not None else -1
        return sum(1 for r in self.records if r.get("epoch_end") and int(r["step"]) > after)

    def should_stop(self, patience_epochs: int) -> bool:
        return patience_epochs > 0 and self.epochs_without_improvement() >= patience_epochs


def overtraining_note(records: Sequence[dict[str, Any]], stall_epochs: int = STALL_EPOCHS) -> str | None:
    """"likely overtraining since epoch N" when validation has not improved for `stall_epochs` epoch ends
    while the training mel loss (mean per epoch) still fell; None otherwise."""
    history = ValidationHistory.from_records(records)
    best = history.best
    ends = [r for r in history.records if r.get("epoch_end")]
    if best is None or not ends or history.epochs_without_improvement() < stall_epochs:
        return None
    best_epoch, last_epoch = int(best["epoch"]), int(ends[-1]["epoch"])
    by_epoch: dict[int, list[float]] = {}
    for r in records:
        value = r.get("loss_mel")
        if not is_validation(r) and isinstance(value, (int, float)) and math.isfinite(value):
            by_epoch.setdefault(int(r["epoch"]), []).append(float(value))
    if best_epoch not in by_epoch or last_epoch not in by_epoch:
        return None
    then, now = float(np.mean(by_epoch[best_epoch])), float(np.mean(by_epoch[last_epoch]))
    if now >= then:
        return None
    return (f"Validation has not improved since epoch {best_epoch} ({last_epoch - best_epoch} epochs) while the "
            f"training mel loss kept falling ({then:.2f} -> {now:.2f}): likely overtraining since epoch {best_epoch}. "
            f"The best voice is the one kept at epoch {best_epoch} (<experiment>_best).")
