"""Pieces of the web app checked without a server: progress bar, loss curve, health report, index matching."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tools.jobs import JobRunner
from tools.web import AppContext


@pytest.fixture
def ctx(project_root: Path) -> AppContext:
    return AppContext.create(project_root)


def test_progress_bar_escapes_messages_and_reports_fraction() -> None:
    from tools.ui_jobs import progress_html

    runner = JobRunner()

    def work(job) -> None:  # type: ignore[no-untyped-def]
        job.progress(3, 4, "<script>alert(1)</script>")
        raise RuntimeError("<b>boom</b>")

    snapshot = runner.wait(runner.start("demo", work).job_id, timeout=5)
    html = progress_html(snapshot)
    assert "<script>" not in html and "&lt;b&gt;boom&lt;/b&gt;" in html
    assert 'data-state="failed"' in html and 'data-fraction="0.750"' in html
    assert 'data-state="idle"' in progress_html(None)


def test_loss_curve_reads_the_experiment_metrics(ctx: AppContext) -> None:
    from tools.ui_train import loss_frame
    from train.experiment import Experiment
    from train.metrics import MetricsWriter, StepMetrics

    experiment = Experiment(ctx.project.experiment_dir("voice"))
    writer = MetricsWriter.for_experiment(experiment, tensorboard=False)
    for step, mel in ((10, 30.0), (20, 25.0), (30, float("nan"))):
        writer.write(StepMetrics(step=step, epoch=1, loss_d=4.0, loss_g=40.0 + step, loss_gen=3.0, loss_fm=5.0,
                                 loss_mel=mel, loss_kl=2.0, learning_rate=1e-4, grad_norm_d=1.0, grad_norm_g=1.0,
                                 step_time_s=0.5))
    frame = loss_frame(ctx, "voice")
    mel = frame[frame["series"] == "mel"]
    assert list(mel["step"]) == [10, 20] and list(mel["loss"]) == [30.0, 25.0]  # NaN left out, not plotted as 0
    generator = frame[frame["series"] == "generator total"]
    assert list(generator["loss"]) == [50.0, 60.0, 70.0]
    assert all(math.isfinite(v) for v in frame["loss"])
    assert loss_frame(ctx, "absent").empty


def test_index_is_matched_to_the_voice(ctx: AppContext) -> None:
    from tools.ui_common import NO_INDEX, match_index

    root = ctx.project.root
    for relative in ("logs/alto/added_IVF12_Flat_nprobe_1_alto_v2.index", "logs/bass/trained_IVF9_bass_v2.index",
                     "logs/bass/added_IVF9_Flat_nprobe_1_bass_v2.index", "weights/tenor.index"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(b"")
    assert match_index(ctx, "alto.pth") == "logs/alto/added_IVF12_Flat_nprobe_1_alto_v2.index"
    assert match_index(ctx, "bass.pth") == "logs/bass/added_IVF9_Flat_nprobe_1_bass_v2.index"  # not trained_
    assert match_index(ctx, "tenor.pth") == "weights/tenor.index"
    assert match_index(ctx, "soprano.pth") == NO_INDEX
    assert match_index(ctx, None) == NO_INDEX


def test_pretrained_defaults_flag_missing_files(ctx: AppContext) -> None:
    from tools.ui_train import pretrained_defaults

    g, d, note = pretrained_defaults(ctx, "48k", "v1", False)
    assert (g, d) == ("pretrained/G48k.pth", "pretrained/D48k.pth")
    assert "missing" in note and "pretrained/G48k.pth" in note
    for path in (g, d):
        (ctx.project.root / path).parent.mkdir(parents=True, exist_ok=True)
        (ctx.project.root / path).write_bytes(b"x")
    assert "missing" not in pretrained_defaults(ctx, "48k", "v1", False)[2]


def test_allow_path_extends_where_typed_folders_may_point(tmp_path: Path) -> None:
    from infer_pack.errors import UserInputError
    from tools.ui_train import TrainForm

    root, outside = tmp_path / "project", tmp_path / "datasets"
    root.mkdir()
    outside.mkdir()
    values = {"experiment": "v", "dataset": str(outside)}
    with pytest.raises(UserInputError, match="--allow-path"):
        TrainForm(AppContext.create(root))._dataset(values)
    allowed = TrainForm(AppContext.create(root, allow_paths=(outside,)))._dataset(values)
    assert allowed == outside.resolve()
    with pytest.raises(UserInputError, match="outside the project folder"):
        TrainForm(AppContext.create(root, allow_paths=(outside,)))._dataset(dict(values, dataset=str(outside / "..")))


def test_api_package_re_exports_every_action() -> None:
    import inspect

    from tools import api

    assert sorted(api.__all__) == sorted(api._EXPORTS)
    for name in api.__all__:
        function = getattr(api, name)
        assert callable(function) and function.__name__ == name
        assert function.__module__ == f"tools.api.{api._EXPORTS[name]}"
        assert inspect.signature(function).return_annotation is not inspect.Signature.empty, name
    with pytest.raises(AttributeError):
        api.no_such_action  # noqa: B018


def test_api_names_are_imported_statically_for_the_type_checker() -> None:
    """The lazy exports and the TYPE_CHECKING imports name the same functions in the same modules."""
    import ast

    from conftest import REPO_ROOT

    from tools import api

    tree = ast.parse((REPO_ROOT / "tools" / "api" / "__init__.py").read_text(encoding="utf-8"))
    static: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for child in node.body:
                assert isinstance(child, ast.ImportFrom) and child.module
                for alias in child.names:
                    assert alias.asname == alias.name, f"{alias.name}: re-export it as itself"
                    static[alias.name] = child.module.removeprefix("tools.api.")
    assert static == api._EXPORTS


DEVICE_WIDGETS = ("train-extract-device", "train-train-device", "train-cache-batches")


def _device_lists(app: object) -> dict[str, object]:
    blocks = app.blocks.values()
    return {b.elem_id: b for b in blocks if getattr(b, "elem_id", None) in DEVICE_WIDGETS}


def test_device_lists_are_shown_only_with_cuda(ctx: AppContext, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from tools import ui_train
    from tools.web import build_app

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only machine
    assert ui_train.gpu_names() == []
    hidden = _device_lists(build_app(ctx))
    assert len(hidden) == 3 and not any(b.visible for b in hidden.values())
    monkeypatch.setattr(ui_train, "gpu_names", lambda: ["Fake GPU A", "Fake GPU B"])
    shown = _device_lists(build_app(ctx))
    assert all(b.visible for b in shown.values())
    choices = [tuple(c) for c in shown["train-train-device"].choices]
    assert choices == [("auto (first GPU)", "auto"), ("GPU 0: Fake GPU A", "cuda:0"), ("GPU 1: Fake GPU B", "cuda:1"),
                       ("CPU", "cpu")]
    assert ui_train.device_choices([]) == [("auto (CPU)", "auto"), ("CPU", "cpu")]


def test_device_choices_reach_the_api(ctx: AppContext, monkeypatch: pytest.MonkeyPatch) -> None:
    from infer_pack.progress import CancelToken
    from tools import api
    from tools.ui_train import TrainForm

    (ctx.project.root / "hubert_base.pt").write_bytes(b"x")
    (ctx.project.root / "data").mkdir()
    seen: dict[str, dict[str, object]] = {}
    monkeypatch.setattr(api, "one_click", lambda **kw: seen.setdefault("one_click", kw))
    monkeypatch.setattr(api, "extract_features", lambda **kw: seen.setdefault("extract", kw))
    cancel = CancelToken()
    values = {
        "experiment": "gpu", "sample_rate_tag": "40k", "version": "v2", "use_f0": True, "processes": 1,
        "dataset": "data", "speaker_id": 0, "f0_method": "pm", "save_every_epochs": 1, "epochs": 1, "batch_size": 1,
        "latest_only": True, "export_every_save": False, "pretrained_g": "", "pretrained_d": "",
        "index_kind": "ivf_flat", "from_scratch": True, "log_interval": None, "extract_device": "cuda:1",
        "train_device": "cuda:0", "cache_batches": True, "early_stop_epochs": 2, "validate_every_steps": None,
        "held_out_percent": 3,
    }
    assert list(values) == list(TrainForm.FIELDS)
    form = TrainForm(ctx)

    for starter in (form.one_click, form.extract):
        _kind, call, _key = starter(*values.values())
        # What the job's process runs: the same call, with the job's progress, cancel, metrics and cache.
        call.invoke(progress=lambda *_: None, cancel=cancel, on_metrics=lambda *_: None, cache=ctx.cache)
    assert seen["one_click"]["device"] == "cuda:1" and seen["one_click"]["train_device"] == "cuda:0"
    assert seen["one_click"]["cache_batches"] is True and seen["one_click"]["early_stop_epochs"] == 2
    assert seen["extract"]["device"] == "cuda:1"


def test_markdown_texts_have_no_html_like_words() -> None:
    """gr.Markdown drops `<name>`-like words as HTML tags, cutting the sentence that holds them."""
    import re

    from tools.labels import label

    for key in ("realtime.intro", "separate.intro", "app.title", "app.subtitle"):
        text = re.sub(r"`[^`]*`", "", label(key))  # code spans are shown literally
        assert not re.search(r"<[A-Za-z/]", text), (key, text)


def test_single_conversion_progress_says_time_so_far_and_left(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Convert tab relays the worker's per-chunk progress with an estimate (a long file never looks hung)."""
    import time as time_module

    from tools.ui_convert import _eta_progress

    clock = iter([100.0, 110.0, 130.0])
    monkeypatch.setattr(time_module, "monotonic", lambda: next(clock))
    seen: list[tuple[object, str]] = []
    report = _eta_progress(lambda value, desc: seen.append((value, desc)))
    report(1, 5, "converted chunk 1/4")  # 10 s for 1 of 5 steps: about 40 s left
    report(5, 5, "done")
    assert seen[0] == ((1, 5), "converted chunk 1/4 (10 s, about 40 s left)")
    assert seen[1] == ((5, 5), "done (30 s)")
    assert _eta_progress(None) is None


def test_stopping_a_training_says_it_waits_for_the_step_in_progress() -> None:
    """After Stop, a training's bar says the running step is finished and kept (with its expected length),
    then a checkpoint is saved; other jobs just say when they end at the latest."""
    import time

    from tools.jobs import JobSnapshot, MetricPoint
    from tools.ui_jobs import progress_html

    def snapshot(metrics: tuple[MetricPoint, ...]) -> JobSnapshot:
        return JobSnapshot(
            job_id="j1", kind="train", key="alice", state="running", done=4, total=28, message="epoch 1/4 step 4",
            log=(), metrics=metrics, error=None, result=None, started_at=time.time() - 60, finished_at=None,
            stop_deadline=time.time() + 180,
        )

    training = progress_html(snapshot((MetricPoint(3, "step_time_s", 41.6), MetricPoint(4, "loss_mel", 20.0))))
    assert "waiting for the step in progress (about 42 s a step; it is kept, not redone)" in training
    assert "then a checkpoint is saved" in training
    other = progress_html(snapshot(()))
    assert "ends at its next check" in other and "a step" not in other


def test_client_disconnects_are_one_line_not_tracebacks() -> None:
    """A request cut by a closed tab logs one INFO line; any other exception keeps its traceback."""
    import logging
    import sys

    from tools.web import DisconnectFilter

    def record_of(exc: BaseException) -> logging.LogRecord:
        try:
            raise exc
        except BaseException:
            return logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "Exception in ASGI application",
                                     (), sys.exc_info())

    def wrapped() -> BaseException:
        try:
            try:
                raise BrokenPipeError("peer closed")
            except BrokenPipeError as inner:
                raise RuntimeError("response failed") from inner
        except RuntimeError as outer:
            return outer

    disconnects = DisconnectFilter()
    for exc in (ConnectionResetError("reset by peer"), wrapped(), ExceptionGroup("task group", [ConnectionResetError()])):
        record = record_of(exc)
        assert disconnects.filter(record) and record.exc_info is None and record.levelno == logging.INFO
        assert "client disconnected" in record.getMessage()
    real = record_of(ValueError("a real bug"))
    assert disconnects.filter(real) and real.exc_info is not None and real.levelno == logging.ERROR


def test_an_emptied_optional_number_box_means_not_given() -> None:
    """The browser sends an emptied number box as 0 (or nothing): for an optional setting whose values start
    at 1 that is "not given"; a required one names its field; out-of-range values are refused."""
    from infer_pack.errors import UserInputError
    from tools.api.specs import training_param_specs
    from tools.ui_common import spec_value

    specs = training_param_specs()
    assert spec_value(specs["validate_every_steps"], 0) is None
    assert spec_value(specs["log_interval"], None) is None and spec_value(specs["log_interval"], 50.0) == 50
    with pytest.raises(UserInputError, match="Total epochs"):
        spec_value(specs["epochs"], None)
    with pytest.raises(UserInputError, match="Batch size"):
        spec_value(specs["batch_size"], 0)
