"""The training API: train_model on a project folder, and one_click's order of steps."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
from test_train_fixtures import prepare_experiment, tiny_networks

from infer_pack.errors import AssetMissingError


@pytest.fixture
def tiny_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real Synthesizer at the experiment's tiny config, with a small discriminator."""
    monkeypatch.setattr("train.trainer.build_networks", lambda setup: tiny_networks(setup.experiment))


def test_train_model_in_a_project(project_root: Path, tiny_models: None) -> None:
    from infer_pack.checkpoint import load_voice
    from tools.api.training import train_model

    experiment = prepare_experiment(project_root / "logs", name="singer")
    experiment.filelist_path.unlink()  # train_model writes it again, as RVC does
    seen: list[tuple[int, str, float]] = []
    progress: list[tuple[int, int]] = []
    result = train_model(
        project_root,
        lambda done, total, message: progress.append((done, total)),
        None,
        experiment="singer",
        epochs=1,
        batch_size=2,
        log_interval=1,
        use_pretrained=False,
        on_metrics=lambda step, name, value: seen.append((step, name, value)),
    )
    assert not result.cancelled and result.epochs_done == 1 and result.global_step == 3
    assert result.pretrained_g is None and result.pretrained_d is None  # asked for a start from scratch
    assert result.voice_path == project_root / "weights" / "singer.pth"
    assert load_voice(result.voice_path).info == "1epoch"
    assert experiment.filelist_path.exists()
    assert {name for _, name, _ in seen} >= {"loss_mel", "loss_d", "learning_rate"}
    assert progress[-1] == (3, 3)
    assert "finished at epoch 1, step 3" in result.summary()
    assert result.last_losses["step"] == 3

    with pytest.raises(AssetMissingError, match="pretrained-v2-32k"):
        train_model(project_root, experiment="singer", epochs=2, pretrained_g="pretrained_v2/f0G32k.pth")
    # The default pretrained files are absent: no silent start from scratch, a pointer to the download.
    with pytest.raises(AssetMissingError, match="download pretrained-v2-32k") as info:
        train_model(project_root, experiment="singer", epochs=2)
    assert "From scratch" in str(info.value), "the message offers the start from scratch"


def test_one_click_runs_each_step_once_in_order(project_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tools.api.dataset as dataset_api
    import tools.api.training as training_api

    calls: list[tuple[str, dict[str, Any]]] = []

    def recorder(name: str, result: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append((name, kwargs))
            kwargs.get("progress") and kwargs["progress"](1, 1, "ok")
            return result

        return call

    trained = training_api.TrainResult(
        project_root, 3, 30, False, None, None, None, None, None, project_root / "weights" / "x.pth"
    )
    monkeypatch.setattr(dataset_api, "preprocess_dataset", recorder("preprocess", "P"))
    monkeypatch.setattr(dataset_api, "extract_features", recorder("extract", "E"))
    monkeypatch.setattr(training_api, "train_model", recorder("train", trained))
    index_module = types.ModuleType("tools.api.index")
    index_module.train_index = recorder("index", "I")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tools.api.index", index_module)
    # The preflight check wants the encoder and the pretrained G/D of both configurations used below.
    for relative in ("hubert_base.pt", "pretrained/f0G48k.pth", "pretrained/f0D48k.pth",
                     "pretrained_v2/f0G40k.pth", "pretrained_v2/f0D40k.pth"):
        (project_root / relative).parent.mkdir(parents=True, exist_ok=True)
        (project_root / relative).write_bytes(b"x")
    messages: list[str] = []
    result = training_api.one_click(
        project=project_root,
        experiment="x",
        dataset_dir=project_root / "data",
        sample_rate_tag="48k",
        version="v1",
        f0_method="pm",
        epochs=3,
        progress=lambda d, t, m: messages.append(m),
    )
    assert [name for name, _ in calls] == ["preprocess", "extract", "train", "index"]
    assert calls[0][1]["sample_rate_tag"] == "48k" and calls[1][1]["f0_method"] == "pm"
    assert calls[2][1]["epochs"] == 3 and calls[2][1]["version"] == "v1"
    assert calls[3][1]["version"] == "v1"
    assert (result.preprocess, result.extract, result.train, result.index) == ("P", "E", trained, "I")
    assert messages[0].startswith("[1/4 preprocess]") and messages[-1].startswith("[4/4 index]")

    # a stopped training builds no index: the stop comes out as CancelledError carrying what was done
    from infer_pack.errors import CancelledError

    calls.clear()
    stopped = training_api.TrainResult(project_root, 1, 5, True, None, None, None, None, None, None)

    def stopping_train(*args: Any, **kwargs: Any) -> Any:
        calls.append(("train", kwargs))
        raise CancelledError("training stopped at epoch 1, step 5", result=stopped)

    monkeypatch.setattr(training_api, "train_model", stopping_train)
    with pytest.raises(CancelledError, match="training stopped at epoch 1, step 5") as info:
        training_api.one_click(project=project_root, experiment="x", dataset_dir=project_root / "data")
    assert [name for name, _ in calls] == ["preprocess", "extract", "train"]
    partial = info.value.result
    assert (partial.preprocess, partial.extract, partial.train, partial.index) == ("P", "E", stopped, None)


def test_one_click_checks_assets_before_any_work(project_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tools.api.dataset as dataset_api
    import tools.api.training as training_api
    from infer_pack.errors import MissingAssetsError
    from tools.api.assets import default_f0_method, missing_assets

    def must_not_run(**_kwargs: Any) -> None:
        raise AssertionError("a step ran although assets are missing")

    monkeypatch.setattr(dataset_api, "preprocess_dataset", must_not_run)
    # A fresh install: no rmvpe.pt, so the default pitch method is the one whose model ships with its package.
    assert default_f0_method(project_root) == "swift"
    with pytest.raises(MissingAssetsError) as info:
        training_api.one_click(project=project_root, experiment="fresh", dataset_dir=project_root / "data")
    message = str(info.value)
    assert "hubert_base.pt (hubert)" in message and "f0G40k.pth (pretrained-v2-40k)" in message
    assert "rmvpe" not in message, "swift was chosen, so rmvpe.pt is not needed"
    assert "python -m tools.cli download hubert pretrained-v2-40k" in message
    assert "From scratch" in message and "--no-pretrained" in message
    assert not (project_root / "logs" / "fresh").exists(), "nothing may be prepared before the check"
    # Asked for rmvpe explicitly, it is named too; from scratch, the pretrained files are not needed.
    names = [m.asset for m in missing_assets(project_root, f0_method="rmvpe", use_pretrained=False)]
    assert names == ["hubert", "rmvpe"]
    (project_root / "rmvpe.pt").write_bytes(b"x")
    assert default_f0_method(project_root) == "rmvpe"


@pytest.mark.slow  # three tiny epochs: ~35 s of CPU
def test_cached_batches_are_loaded_once(project_root: Path, tiny_models: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """RVC's "cache training set on GPU": epoch 1 loads the batches, later epochs replay them from the device."""
    from tools.api.training import train_model
    from train.data import TrainingDataset

    prepare_experiment(project_root / "logs", name="cached")
    reads: list[int] = []
    real_getitem = TrainingDataset.__getitem__

    def counting(self: TrainingDataset, index: int) -> Any:
        reads.append(index)
        return real_getitem(self, index)

    monkeypatch.setattr(TrainingDataset, "__getitem__", counting)
    result = train_model(project_root, experiment="cached", epochs=2, batch_size=2, use_pretrained=False,
                         cache_batches=True, export_voice=False)
    assert result.epochs_done == 2
    two_cached_epochs = len(reads)
    reads.clear()
    train_model(project_root, experiment="cached", epochs=3, batch_size=2, use_pretrained=False,
                cache_batches=False, export_voice=False)  # resumes at epoch 3: one epoch loaded from disk
    assert two_cached_epochs == len(reads) > 0, "two cached epochs load what one uncached epoch loads"


def test_a_stopped_training_raises_cancelled_with_what_it_saved(
    project_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one cancel rule: every step stops by raising CancelledError; training's carries its result."""
    from test_train_fixtures import prepare_experiment, tiny_networks

    from infer_pack.errors import CancelledError
    from infer_pack.progress import CancelToken
    from tools.api.training import train_model

    monkeypatch.setattr("train.trainer.build_networks", lambda setup: tiny_networks(setup.experiment))
    prepare_experiment(project_root / "logs", name="stopped")
    cancel = CancelToken()

    def progress(done: int, total: int, message: str) -> None:
        if done >= 2:
            cancel.cancel()

    with pytest.raises(CancelledError, match="training stopped at epoch .*; a rerun resumes from it") as info:
        train_model(project_root, progress, cancel, experiment="stopped", epochs=5, batch_size=2, device="cpu",
                    use_pretrained=False)
    result = info.value.result
    assert result is not None and result.cancelled and result.global_step >= 2
    assert result.checkpoint_g is not None and result.checkpoint_g.is_file()


def test_training_settings_are_written_once(project_root: Path) -> None:
    """TrainRequest holds each default; the keywords train_model takes (TrainOptions) name exactly its fields."""
    from dataclasses import fields

    from infer_pack.errors import UserInputError
    from tools.api.training import TrainOptions, TrainRequest, TrainSettings, train_model

    names = {f.name for f in fields(TrainRequest)} - {"experiment"}
    assert set(TrainOptions.__optional_keys__) == names
    assert set(TrainSettings.__optional_keys__) < names  # what one-click passes on
    with pytest.raises(UserInputError, match="unknown training setting.s. epoch;"):
        train_model(project_root, experiment="x", epoch=3)  # type: ignore[call-arg]
