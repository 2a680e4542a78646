"""Train tab: experiment settings, the four steps (and one-click), progress/log/Stop, loss curve, health report."""

from __future__ import annotations

import html
import os
from typing import TYPE_CHECKING, Any

import gradio as gr

from configs import load_config
from infer_pack.errors import RVCError, UserInputError
from tools.api.specs import training_param_specs
from tools.jobproc import JobCall
from tools.jobs import JobSnapshot
from tools.labels import label
from tools.project import validate_name
from tools.ui_common import F0_CHOICES, mark_missing_models, spec_value, spec_widget
from tools.ui_jobs import job_panel, newest_running

if TYPE_CHECKING:
    import pandas as pd

    from tools.web import AppContext

SAMPLE_RATE_CHOICES = ["32k", "40k", "48k"]
VERSION_CHOICES = ["v1", "v2"]
# Job kinds this tab starts (and reattaches to when a page loads).
TRAIN_JOB_KINDS = ("preprocess", "extract", "train", "index", "one-click")
Work = JobCall
# Training checks Stop between steps; a step can take minutes on a busy CPU, so it gets longer before being ended.
TRAIN_STOP_GRACE_S = 180.0


def gpu_names() -> list[str]:
    """Names of the CUDA GPUs torch sees, in id order (empty without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def device_choices(gpus: list[str]) -> list[tuple[str, str]]:
    """(shown text, device) for the device lists: auto, each GPU by id and name, and the CPU."""
    return [("auto (first GPU)" if gpus else "auto (CPU)", "auto"),
            *((f"GPU {i}: {name}", f"cuda:{i}") for i, name in enumerate(gpus)), ("CPU", "cpu")]


def pretrained_defaults(
    ctx: AppContext, sample_rate_tag: str, version: str, use_f0: bool, from_scratch: bool = False,
    f0_method: str | None = None,
) -> tuple[str, str, str]:
    """(G path, D path, note) for the settings; the note names the files these settings need that are missing.

    Without `f0_method` only the training step's files (pretrained G/D) are checked; with it the
    extraction step's too (the encoder, and rmvpe.pt for the rmvpe method). From scratch needs no G/D.
    """
    from tools import api
    from tools.api.assets import Step, needed_assets

    paths = [ctx.project.pretrained_path(version, sample_rate_tag, use_f0, kind) for kind in ("G", "D")]
    steps: tuple[Step, ...] = ("train",) if f0_method is None else ("extract", "train")
    needed = needed_assets(ctx.project, steps=steps, version=version, sample_rate_tag=sample_rate_tag,
                           use_f0=use_f0, f0_method=f0_method or "rmvpe", use_pretrained=not from_scratch)
    missing = [item for item in needed if not item.present]
    other = api.asset_status(ctx.project.root).unpublished_paths
    unverified = [item for item in needed if item.present and item.path in other]
    root = ctx.project.root
    if missing:
        names = ", ".join(str(m.path.relative_to(root)) for m in missing)
        fix = label("train.missing_fix")
        if any(m.purpose.startswith("pretrained") for m in missing):
            fix = label("train.missing_pretrained_fix")
        note = f'<span class="rvc-missing">missing: {html.escape(names)}</span> {html.escape(fix)}'
    elif from_scratch:
        note = ""
    else:
        note = '<span class="rvc-present">pretrained G and D present</span>'
    if unverified:  # the same words as the Assets panel
        names = ", ".join(str(m.path.relative_to(root)) for m in unverified)
        note += f' <span class="rvc-unverified">{html.escape(label("assets.other"))}: {html.escape(names)}</span>'
    shown = [str(p.relative_to(ctx.project.root)) for p in paths]
    return shown[0], shown[1], note


# field of a training metrics record -> curve name in the plot



def loss_frame(ctx: AppContext, experiment: str | None) -> pd.DataFrame:
    """The experiment's losses so far (read from its metrics file while training writes it)."""
    import math

    import pandas as pd

    from tools.api import loss_series, training_losses

    rows: dict[str, list[Any]] = {"step": [], "loss": [], "series": []}
    if experiment:
        records = training_losses(ctx.project, experiment)
        for record in records:
            for key, name in loss_series().items():
                value = record.get(key)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    rows["step"].append(int(record["step"]))
                    rows["loss"].append(float(value))
                    rows["series"].append(name)
    return pd.DataFrame(rows)


def loss_figure(ctx: AppContext, experiment: str | None) -> Any:
    """The loss-curve panel (training and validation curves, epoch marks, the best epoch), or None."""
    from tools.api import loss_curve_figure

    return loss_curve_figure(ctx.project, experiment) if experiment else None


def loss_note(ctx: AppContext, experiment: str | None) -> str:
    """The best epoch in words and, when it applies, "likely overtraining since epoch N" (HTML)."""
    from tools.api import validation_summary

    text = validation_summary(ctx.project, experiment) if experiment else ""
    lines = [f'<div class="rvc-loss-note">{html.escape(line)}</div>' for line in text.splitlines()]
    return "".join(lines)


def loss_update(ctx: AppContext, snapshot: JobSnapshot | None) -> Any:
    """A new panel while a training job runs (and once when it ends); otherwise leave the plot alone."""
    if snapshot is None or snapshot.kind not in ("train", "one-click") or not snapshot.key:
        return gr.skip()
    return loss_figure(ctx, snapshot.key)


def loss_note_update(ctx: AppContext, snapshot: JobSnapshot | None) -> Any:
    if snapshot is None or snapshot.kind not in ("train", "one-click") or not snapshot.key:
        return gr.skip()
    return loss_note(ctx, snapshot.key)


def health_report_text(ctx: AppContext, experiment: str | None) -> str:
    """The experiment's dataset health report (written by the preprocess step), or '' when none yet."""
    from tools.api import dataset_health

    if not experiment:
        return ""
    report = dataset_health(ctx.project, experiment)
    return report.summary_text() if report is not None else ""


def health_update(ctx: AppContext, snapshot: JobSnapshot | None) -> Any:
    """Show the report once a step that writes it has finished; otherwise leave the box alone."""
    if snapshot is None or not snapshot.finished or snapshot.kind not in ("preprocess", "one-click"):
        return gr.skip()
    return health_report_text(ctx, snapshot.key) or gr.skip()


class TrainForm:
    """Turns the form values into API calls. Values arrive in `FIELDS` order."""

    FIELDS = (
        "experiment", "sample_rate_tag", "version", "use_f0", "processes", "dataset", "speaker_id", "f0_method",
        "save_every_epochs", "epochs", "batch_size", "latest_only", "export_every_save", "pretrained_g",
        "pretrained_d", "index_kind", "from_scratch", "log_interval", "extract_device", "train_device",
        "cache_batches", "early_stop_epochs", "validate_every_steps", "held_out_percent",
    )
    # The form's training settings: widgets, checks and the API's keywords all come from their specs.
    SETTINGS = ("save_every_epochs", "epochs", "batch_size", "latest_only", "export_every_save", "log_interval",
                "cache_batches", "early_stop_epochs", "validate_every_steps")

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def values(self, raw: tuple[Any, ...]) -> dict[str, Any]:
        v = dict(zip(self.FIELDS, raw))
        v["experiment"] = validate_name(str(v["experiment"] or ""), "experiment name")
        v["use_f0"] = bool(v["use_f0"])
        v["processes"] = int(v["processes"])
        v["held_out_percent"] = float(v.get("held_out_percent") or 0.0)
        specs = training_param_specs()
        v["speaker_id"] = spec_value(specs["speaker_id"], v["speaker_id"]) or 0
        for name in self.SETTINGS:
            v[name] = spec_value(specs[name], v.get(name))
        return v

    def _dataset(self, v: dict[str, Any]) -> Any:
        if not str(v["dataset"] or "").strip():
            raise UserInputError("no dataset folder given; type the folder that holds your audio files")
        return self.ctx.project.confine(str(v["dataset"]).strip(), "dataset folder")

    def _pretrained(self, v: dict[str, Any], kind: str) -> str | None:
        """A typed pretrained path, confined; None (empty field) trains from scratch unless the default exists."""
        text = str(v[f"pretrained_{kind.lower()}"] or "").strip()
        return str(self.ctx.project.confine(text, f"pretrained {kind}")) if text else None

    def _check_assets(self, v: dict[str, Any], *steps: str) -> None:
        """Refuse the start at once (not after preparing the data) when the steps' files are missing."""
        from tools.api.assets import check_assets

        scratch = bool(v["from_scratch"])
        check_assets(
            self.ctx.project, steps=steps, version=v["version"], sample_rate_tag=v["sample_rate_tag"],
            use_f0=v["use_f0"], f0_method=v["f0_method"], use_pretrained=not scratch,
            pretrained_g=None if scratch else self._pretrained(v, "G"),
            pretrained_d=None if scratch else self._pretrained(v, "D"),
        )

    def _training_kwargs(self, v: dict[str, Any]) -> dict[str, Any]:
        """TrainRequest fields (tools.api.training) from the form."""
        return {
            **{name: v[name] for name in self.SETTINGS},
            "sample_rate_tag": v["sample_rate_tag"], "version": v["version"], "use_f0": v["use_f0"],
            "speaker_id": v["speaker_id"], "device": v.get("train_device") or "auto",
            "use_pretrained": not v["from_scratch"],
            "pretrained_g": None if v["from_scratch"] else self._pretrained(v, "G"),
            "pretrained_d": None if v["from_scratch"] else self._pretrained(v, "D"),
        }

    def preprocess(self, *raw: Any) -> tuple[str, Work, str]:
        v = self.values(raw)
        dataset = self._dataset(v)
        work = JobCall("preprocess_dataset", dict(
            project=self.ctx.project, experiment=v["experiment"], dataset_dir=dataset,
            sample_rate_tag=v["sample_rate_tag"], speaker_id=v["speaker_id"], n_processes=v["processes"],
            held_out_percent=v["held_out_percent"],
        ))
        return "preprocess", work, v["experiment"]

    def extract(self, *raw: Any) -> tuple[str, Work, str]:
        v = self.values(raw)
        self._check_assets(v, "extract")
        work = JobCall("extract_features", dict(
            project=self.ctx.project, experiment=v["experiment"], version=v["version"], use_f0=v["use_f0"],
            f0_method=v["f0_method"], speaker_id=v["speaker_id"], n_processes=v["processes"],
            device=v.get("extract_device") or "auto",
        ), inject=("progress", "cancel", "cache"))
        return "extract", work, v["experiment"]

    def train(self, *raw: Any) -> tuple[str, Work, str]:
        v = self.values(raw)
        self._check_assets(v, "train")
        kwargs = self._training_kwargs(v)
        work = JobCall("train_model", dict(root=self.ctx.project, experiment=v["experiment"], **kwargs),
                       inject=("progress", "cancel", "on_metrics"), grace_s=TRAIN_STOP_GRACE_S)
        return "train", work, v["experiment"]

    def index(self, *raw: Any) -> tuple[str, Work, str]:
        v = self.values(raw)
        work = JobCall("train_index", dict(
            project=self.ctx.project, experiment=v["experiment"], version=v["version"], kind=v["index_kind"],
        ))
        return "index", work, v["experiment"]

    def one_click(self, *raw: Any) -> tuple[str, Work, str]:
        v = self.values(raw)
        dataset = self._dataset(v)
        self._check_assets(v, "extract", "train")
        kwargs = self._training_kwargs(v)
        train_device = kwargs.pop("device")
        work = JobCall("one_click", dict(
            project=self.ctx.project, experiment=v["experiment"], dataset_dir=dataset, f0_method=v["f0_method"],
            n_processes=v["processes"], device=v.get("extract_device") or "auto", train_device=train_device,
            **kwargs,
        ), inject=("progress", "cancel", "cache", "on_metrics"), grace_s=TRAIN_STOP_GRACE_S)
        return "one-click", work, v["experiment"]


def build(ctx: AppContext) -> None:
    from tools.api import index as api_index

    form = TrainForm(ctx)
    specs = training_param_specs()
    from tools.api.assets import default_f0_method

    default_f0 = default_f0_method(ctx.project)
    default_g, default_d, default_note = pretrained_defaults(ctx, "40k", "v2", True, False, default_f0)
    with gr.Row():
        experiment = gr.Textbox(label=label("train.experiment"), value="my-voice", elem_id="train-experiment")
        sample_rate = gr.Radio(SAMPLE_RATE_CHOICES, value="40k", label=label("train.sample_rate"))
        version = gr.Radio(VERSION_CHOICES, value="v2", label=label("train.version"))
        use_f0 = gr.Checkbox(value=True, label=label("train.use_f0"))
    with gr.Row():
        dataset = gr.Textbox(label=label("train.dataset"), scale=3, elem_id="train-dataset")
        processes = gr.Slider(1, max(1, os.cpu_count() or 1), value=max(1, (os.cpu_count() or 2) // 2), step=1,
                              label=label("train.processes"))
        speaker_id = spec_widget(specs["speaker_id"], label("train.speaker_id"), value=0, elem_id="train-speaker-id")
        f0_method = gr.Radio(mark_missing_models(ctx, F0_CHOICES), value=default_f0, label=label("train.f0_method"),
                             elem_id="train-f0")
        held_out = gr.Slider(0, 20, value=3, step=1, label=label("train.held_out_percent"),
                             info=label("train.held_out_info"), elem_id="train-held-out")
    with gr.Accordion(label("train.upload_title"), open=False):
        uploads = gr.File(file_count="multiple", type="filepath", label=label("train.upload"),
                          elem_id="train-upload")

    def on_upload(files: list[str] | None, name: str) -> str:
        """Uploaded audio goes to datasets/<experiment>/ (inside the project) and becomes the dataset folder."""
        from tools.api.dataset import import_dataset_files

        if not files:
            return gr.skip()
        try:
            imported = import_dataset_files(project=ctx.project, experiment=str(name or ""), files=list(files))
        except RVCError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        gr.Info(imported.summary(), duration=10)
        return imported.folder.relative_to(ctx.project.root).as_posix()

    uploads.upload(on_upload, [uploads, experiment], [dataset], api_name=False)
    def setting(name: str, **extra: Any) -> Any:
        return spec_widget(specs[name], label(f"train.{name}"), elem_id=f"train-{name.replace('_', '-')}", **extra)

    with gr.Row():
        save_every = setting("save_every_epochs")
        epochs = setting("epochs")
        batch_size = setting("batch_size")
        save_latest_only = setting("latest_only")
        save_small_each = setting("export_every_save")
        # shown filled with the configs' interval (an emptied box means the same)
        early_stop = setting("early_stop_epochs")
        validate_every = setting("validate_every_steps")
        log_interval = setting("log_interval", value=load_config("v2", "40k").train.log_interval)
    with gr.Row():
        pretrained_g = gr.Textbox(default_g, label=label("train.pretrained_g"), scale=2)
        pretrained_d = gr.Textbox(default_d, label=label("train.pretrained_d"), scale=2)
        with gr.Column(scale=2):
            from_scratch = gr.Checkbox(value=False, label=label("train.from_scratch"), elem_id="train-from-scratch")
            pretrained_note = gr.HTML(default_note, elem_id="train-pretrained-note")
        index_kind = gr.Dropdown(api_index.index_kind_choices(), value="ivf_flat", label=label("train.index_kind"),
                                 info=api_index.index_kind_help(), scale=2)
    # GPU choices only where a GPU is visible; on CPU-only machines "auto" (= cpu) is the only choice.
    gpus = gpu_names()
    with gr.Row(visible=bool(gpus)):
        extract_device = gr.Dropdown(device_choices(gpus), value="auto", label=label("train.extract_device"),
                                     info=label("train.extract_device_info"), visible=bool(gpus),
                                     elem_id="train-extract-device")
        train_device = gr.Dropdown(device_choices(gpus), value="auto", label=label("train.train_device"),
                                   info=label("train.train_device_info"), visible=bool(gpus),
                                   elem_id="train-train-device")
        cache_batches = setting("cache_batches", visible=bool(gpus))

    def refill(sr: str, ver: str, f0: bool, method: str, scratch: bool) -> tuple[str, str, str]:
        return pretrained_defaults(ctx, sr, ver, bool(f0), bool(scratch), method)

    settings = [sample_rate, version, use_f0, f0_method, from_scratch]
    for widget in settings:  # user edits only: a restored form (page reload) keeps its pretrained paths
        widget.input(refill, settings, [pretrained_g, pretrained_d, pretrained_note], api_name=False)  # type: ignore[attr-defined]

    def on_load() -> tuple[Any, Any]:
        """Assets may have arrived since the app started: offer the method they allow, and say what is missing."""
        if newest_running(ctx.jobs, TRAIN_JOB_KINDS) is not None:
            return gr.skip(), gr.skip()  # the running job's form comes back instead (follow_on_load)
        method = default_f0_method(ctx.project)
        choices = mark_missing_models(ctx, F0_CHOICES)
        return gr.Radio(choices=choices, value=method), pretrained_defaults(ctx, "40k", "v2", True, False, method)[2]

    gr.on(None, on_load, inputs=None, outputs=[f0_method, pretrained_note], api_name=False, show_progress="hidden")

    with gr.Row():
        b_pre = gr.Button(label("train.step1"), elem_id="train-preprocess")
        b_ext = gr.Button(label("train.step2"), elem_id="train-extract")
        b_train = gr.Button(label("train.step3"), elem_id="train-train")
        b_index = gr.Button(label("train.step4"), elem_id="train-index")
        b_all = gr.Button(label("train.one_click"), variant="primary", elem_id="train-one-click")
    health = gr.Textbox(render=False, label=label("train.health"), lines=10, interactive=False, elem_id="train-health")
    loss_plot = gr.Plot(None, render=False, label=label("train.loss"), elem_id="train-loss")
    loss_words = gr.HTML("", render=False, elem_id="train-loss-note")
    panel = job_panel(ctx.jobs, extra_outputs=[loss_plot, loss_words, health],
                      render_extra=lambda s: [loss_update(ctx, s), loss_note_update(ctx, s), health_update(ctx, s)],
                      elem_id="train-panel")
    def existing_state(name: str) -> tuple[Any, str, str]:
        """What an experiment already has: its loss curve (with the best epoch) and health report."""
        try:
            valid = validate_name(name, "experiment name")
        except UserInputError:
            return None, "", ""
        return loss_figure(ctx, valid), loss_note(ctx, valid), health_report_text(ctx, valid)

    experiment.blur(existing_state, [experiment], [loss_plot, loss_words, health], api_name=False)

    def follow_experiment(name: str) -> list[Any]:
        """Typing the name of an experiment that has a running job shows that job (and its Stop target)."""
        try:
            valid = validate_name(name, "experiment name")
        except UserInputError:
            return panel.attach(None)
        return panel.attach(newest_running(ctx.jobs, TRAIN_JOB_KINDS, valid))

    def follow_on_load() -> list[Any]:
        """A page loaded while a step runs (reload, second tab) shows that step, the form it was started with,
        the note on pretrained files for that form (not the defaults'), and the experiment's health report."""
        snapshot = newest_running(ctx.jobs, TRAIN_JOB_KINDS)
        note: Any = gr.skip()
        if snapshot is not None and len(snapshot.form) == len(fields):
            form = list(snapshot.form)
            v = dict(zip(TrainForm.FIELDS, form))
            note = pretrained_defaults(ctx, v["sample_rate_tag"], v["version"], bool(v["use_f0"]),
                                       bool(v["from_scratch"]), v["f0_method"])[2]
        else:
            form = [gr.skip()] * len(fields)
            if snapshot is not None and snapshot.key:
                form[0] = snapshot.key
        attached = panel.attach(snapshot)
        if snapshot is not None and snapshot.key:
            attached[panel.outputs.index(health)] = health_report_text(ctx, snapshot.key) or gr.skip()
        return [*form, *attached, note]

    experiment.blur(follow_experiment, [experiment], panel.outputs, api_name=False, show_progress="hidden")
    fields = [experiment, sample_rate, version, use_f0, processes, dataset, speaker_id, f0_method, save_every,
              epochs, batch_size, save_latest_only, save_small_each, pretrained_g, pretrained_d, index_kind,
              from_scratch, log_interval, extract_device, train_device, cache_batches, early_stop, validate_every,
              held_out]
    gr.on(None, follow_on_load, inputs=None, outputs=[*fields, *panel.outputs, pretrained_note], api_name=False,
          show_progress="hidden")
    with gr.Row():
        with gr.Column(scale=3):
            loss_plot.render()
            loss_words.render()
        with gr.Column(scale=2):
            health.render()
    panel.bind(b_pre, form.preprocess, fields, api_name="preprocess")
    panel.bind(b_ext, form.extract, fields, api_name="extract")
    panel.bind(b_train, form.train, fields, api_name="train")
    panel.bind(b_index, form.index, fields, api_name="train_index")
    panel.bind(b_all, form.one_click, fields, api_name="one_click")
