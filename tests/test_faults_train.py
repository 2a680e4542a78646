"""Training killed with SIGKILL mid-epoch and mid-checkpoint-save, then resumed.

The child runs the real `tools.api.training.train_model` on a tiny experiment (the helpers of
tests/test_train_fixtures.py: the real Synthesizer at a tiny config and a small discriminator).
After the kill the previous checkpoint must still load and the rerun must resume from it, never
silently from scratch; while the child holds the experiment, a second training is refused.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fault_helpers import leftovers, start_driver
from test_train_fixtures import prepare_experiment, tiny_networks

from infer_pack.errors import TrainingLockedError
from train.experiment import Experiment

EXP = "singer"
STEPS_PER_EPOCH = 3  # 4 slices + 2 silent lines, batch 2
EPOCHS = 2  # epoch 1 is trained once per module (in this process); the child runs epoch 2

TRAIN_DRIVER = """
import train.trainer as tr
from test_train_fixtures import tiny_networks
tr.build_networks = lambda setup: tiny_networks(setup.experiment)
progress = None
{hooks}
from tools.api.training import train_model
train_model({root!r}, progress, experiment={exp!r}, epochs={epochs}, batch_size=2, save_every_epochs=1, log_interval=1, device="cpu", use_pretrained=False)
touch({root!r} + "/finished")
"""


@pytest.fixture
def tiny_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("train.trainer.build_networks", lambda setup: tiny_networks(setup.experiment))


@pytest.fixture(scope="module")
def trained_one_epoch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose experiment has finished epoch 1 (G_3.pth / D_3.pth, metrics, voice)."""
    from tools.api.training import train_model

    root = tmp_path_factory.mktemp("faults-train") / "project"
    prepare_experiment(root / "logs", name=EXP)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("train.trainer.build_networks", lambda setup: tiny_networks(setup.experiment))
        result = train_model(root, experiment=EXP, epochs=1, batch_size=2, save_every_epochs=1, log_interval=1, device="cpu", use_pretrained=False)
    assert result.global_step == STEPS_PER_EPOCH
    return root


@pytest.fixture
def project(trained_one_epoch: Path, tmp_path: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(trained_one_epoch, root)
    return root


def _resume_and_check(root: Path, experiment: Experiment) -> None:
    """Rerun in this process: it must continue from G_3/D_3 (epoch 1) and end at step 6 with every step logged once."""
    from infer_pack.checkpoint import load_training_checkpoint, load_voice
    from tools.api.training import train_model

    previous = load_training_checkpoint(experiment.g_checkpoint_path(STEPS_PER_EPOCH))
    assert previous.iteration == 1
    load_training_checkpoint(experiment.d_checkpoint_path(STEPS_PER_EPOCH))

    result = train_model(root, experiment=EXP, epochs=EPOCHS, batch_size=2, save_every_epochs=1, log_interval=1, device="cpu", use_pretrained=False)
    assert result.resumed_from == experiment.g_checkpoint_path(STEPS_PER_EPOCH), "did not resume from the last complete checkpoint"
    assert not result.cancelled and result.epochs_done == EPOCHS and result.global_step == EPOCHS * STEPS_PER_EPOCH
    final = load_training_checkpoint(experiment.g_checkpoint_path(EPOCHS * STEPS_PER_EPOCH))
    assert final.iteration == EPOCHS
    # Adam's step counters went on from the checkpoint (a fresh start would read 3, not 6).
    assert {float(s["step"]) for s in final.optimizer["state"].values()} == {float(EPOCHS * STEPS_PER_EPOCH)}
    steps = [json.loads(line)["step"] for line in experiment.metrics_path.read_text().splitlines()]
    assert steps == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1)), "steps of the killed run were logged twice or lost"
    assert load_voice(root / "weights" / f"{EXP}.pth").info == f"{EPOCHS}epoch"
    assert not experiment.lock_path.exists()


def test_kill_mid_epoch_resumes_from_last_checkpoint_and_second_training_is_refused(
    project: Path, tmp_path: Path, tiny_models: None
) -> None:
    from tools.api.training import train_model

    experiment = Experiment(project / "logs" / EXP)
    marker = tmp_path / "paused"
    # The child resumes from G_3/D_3 and pauses inside epoch 2, after step 5.
    hooks = (
        "def progress(done, total, message):\n"
        "    if message.endswith(' step 5'):\n"
        f"        touch({str(marker)!r})\n"
        "        while True:\n"
        "            time.sleep(60)\n"
    )
    driver = start_driver(tmp_path, "train", TRAIN_DRIVER.format(hooks=hooks, root=str(project), exp=EXP, epochs=EPOCHS))
    driver.wait_until(marker.exists, "training paused after step 5")
    try:
        assert experiment.g_checkpoint_path(3).exists() and experiment.d_checkpoint_path(3).exists()
        # The same experiment cannot be trained twice at once.
        with pytest.raises(TrainingLockedError) as info:
            train_model(project, experiment=EXP, epochs=EPOCHS, batch_size=2, device="cpu", use_pretrained=False)
        assert "train.lock" in str(info.value) and str(driver.proc.pid) in str(info.value)
    finally:
        driver.kill()
    assert experiment.lock_path.exists()  # left by the killed run: taken over as stale below
    _resume_and_check(project, experiment)


def test_kill_mid_checkpoint_save_keeps_the_previous_pair(project: Path, tmp_path: Path, tiny_models: None) -> None:
    from train.trainer import find_resume_point

    experiment = Experiment(project / "logs" / EXP)
    marker = tmp_path / "paused"
    target = f"/D_{2 * STEPS_PER_EPOCH}.pth"
    # Pause the save at the end of epoch 2 with D's temp file complete, before its rename:
    # G_6.pth is already in place, so the newest pair is written halfway.
    hooks = f"block_on_replace(lambda dst: dst.endswith({target!r}), {str(marker)!r})"
    driver = start_driver(tmp_path, "train", TRAIN_DRIVER.format(hooks=hooks, root=str(project), exp=EXP, epochs=EPOCHS))
    driver.wait_until(marker.exists, f"save of {target} paused before its rename")
    driver.kill()

    assert not (experiment.root / target.lstrip("/")).exists()
    assert any(name.startswith(f".{target.lstrip('/')}") for name in leftovers(experiment.root)), "kill point missed"
    assert experiment.g_checkpoint_path(6).exists()
    point = find_resume_point(experiment)
    assert point is not None and point.step == STEPS_PER_EPOCH
    _resume_and_check(project, experiment)
