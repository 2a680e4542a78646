"""The training loop on CPU with a tiny model: learning, checkpoints, resume, cancel, export, lock."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train_fixtures import (
    SEGMENT_FRAMES,
    prepare_experiment,
    tiny_networks,
    tiny_setup,
)

from infer_pack.errors import ModelFileError, TrainingLockedError
from infer_pack.progress import CancelToken
from train.experiment import Experiment
from train.trainer import (
    Trainer,
    TrainingLock,
    TrainingOptions,
    TrainingResult,
    find_resume_point,
    optimizer_state_by_name,
)

STEPS_PER_EPOCH = 3  # 4 voice slices + 2 mute lines, batch 2


def run_training(
    experiment: Experiment,
    tmp_path: Path,
    cancel: CancelToken | None = None,
    progress=None,
    **options,
) -> tuple[Trainer, TrainingResult]:  # type: ignore[no-untyped-def]
    defaults = {
        "epochs": 2,
        "batch_size": 2,
        "save_every_epochs": 1,
        "log_interval": 1,
        "weights_dir": tmp_path / "weights",
    }
    defaults.update(options)
    torch.manual_seed(0)
    trainer = Trainer(
        tiny_setup(experiment),
        TrainingOptions(**defaults),
        networks=tiny_networks(experiment),
        cancel=cancel,
        progress=progress,
    )  # type: ignore[arg-type]
    return trainer, trainer.run()


def fixed_mel_loss(trainer: Trainer, net_g: torch.nn.Module) -> float:
    """Mel L1 of `net_g` over every item at once, with the same random slices each time (seeded)."""
    from infer_pack.commons import slice_segments
    from train.data import collate

    loader, _ = trainer._make_loader()
    dataset = loader.dataset
    batch = collate([dataset[i] for i in range(len(dataset))])  # type: ignore[arg-type]
    net_g.eval()
    with torch.no_grad():
        torch.manual_seed(123)
        y_hat, ids, *_ = net_g(
            batch.phone,
            batch.phone_lengths,
            batch.pitch,
            batch.pitchf,
            batch.spec,
            batch.spec_lengths,
            batch.speaker_id,
        )
        target = slice_segments(trainer.mel.mel_from_spectrogram(batch.spec), ids, SEGMENT_FRAMES)
        loss = float(torch.nn.functional.l1_loss(trainer.mel.mel(y_hat.squeeze(1)), target))
    net_g.train()
    return loss


@pytest.fixture
def experiment(tmp_path: Path) -> Experiment:
    return prepare_experiment(tmp_path / "logs")


def test_two_epochs_learn_and_write_rvc_files(experiment: Experiment, tmp_path: Path) -> None:
    from infer_pack.checkpoint import (
        build_synthesizer,
        load_training_checkpoint,
        load_voice,
    )

    torch.manual_seed(0)
    untrained = tiny_networks(experiment)[0]
    trainer, result = run_training(experiment, tmp_path, epochs=3)
    before = fixed_mel_loss(trainer, untrained)
    after = fixed_mel_loss(trainer, trainer.state.net_g)
    assert after < 0.85 * before, (before, after)

    assert not result.cancelled and result.epochs_done == 3
    assert result.global_step == 3 * STEPS_PER_EPOCH
    # RVC's file names and content: step in the name, epoch in "iteration", initial lr.
    g_path = experiment.g_checkpoint_path(result.global_step)
    assert result.checkpoint_g == g_path and g_path.exists()
    assert experiment.d_checkpoint_path(result.global_step).exists()
    assert experiment.g_checkpoint_path(STEPS_PER_EPOCH).exists()  # every epoch saved
    ckpt = load_training_checkpoint(g_path)
    assert ckpt.iteration == 3 and ckpt.learning_rate == pytest.approx(2e-3)
    assert any(k.startswith("enc_q.") for k in ckpt.model)
    group = ckpt.optimizer["param_groups"][0]
    assert group["betas"] == (0.8, 0.99) and group["eps"] == 1e-9 and group["weight_decay"] == 0.01
    assert float(next(iter(ckpt.optimizer["state"].values()))["step"]) == result.global_step

    # one metrics line per step (interval 1), learning rate decayed per epoch
    lines = [json.loads(x) for x in experiment.metrics_path.read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, 10))
    lrs = {x["epoch"]: x["learning_rate"] for x in lines}
    assert lrs[3] == pytest.approx(2e-3 * 0.999875**2)
    for key in (
        "loss_mel",
        "loss_kl",
        "loss_d",
        "loss_gen",
        "loss_fm",
        "grad_norm_g",
        "grad_norm_d",
        "step_time_s",
    ):
        assert np.isfinite(lines[-1][key]), key
    assert list(experiment.root.glob("events.out.tfevents.*")), "TensorBoard event file missing"
    png = result.loss_curve_path
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "epoch 3 done" in experiment.train_log_path.read_text()
    assert not experiment.lock_path.exists()

    # the exported voice is RVC's small model and synthesizes
    assert result.voice_path == tmp_path / "weights" / "tiny.pth"
    voice = load_voice(result.voice_path)
    assert voice.info == "3epoch" and voice.use_f0 and voice.version == "v2"
    assert not any(k.startswith("enc_q.") for k in voice.weights)
    net = build_synthesizer(voice)
    frames = 40
    phone = torch.randn(1, frames, 768)
    audio, *_ = net.infer(
        phone,
        torch.tensor([frames]),
        torch.full((1, frames), 60),
        torch.full((1, frames), 150.0),
        torch.tensor([0]),
    )
    assert audio.shape[-1] == frames * 320 and torch.isfinite(audio).all()


def test_resume_continues_step_count_and_optimizer_state(experiment: Experiment, tmp_path: Path) -> None:
    from infer_pack.checkpoint import load_training_checkpoint

    _, first = run_training(experiment, tmp_path, epochs=2)
    saved = load_training_checkpoint(first.checkpoint_g)
    _, second = run_training(experiment, tmp_path, epochs=3)
    assert second.resumed_from == experiment.g_checkpoint_path(2 * STEPS_PER_EPOCH)
    assert second.first_epoch == 3 and second.global_step == 3 * STEPS_PER_EPOCH
    resumed = load_training_checkpoint(experiment.g_checkpoint_path(3 * STEPS_PER_EPOCH))
    state = resumed.optimizer["state"]
    # Adam's step counters went on from 6 (they would read 3 after a silent restart)
    assert {float(s["step"]) for s in state.values()} == {3.0 * STEPS_PER_EPOCH}
    assert saved.iteration == 2 and resumed.iteration == 3
    lines = [json.loads(x) for x in experiment.metrics_path.read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, 10))  # one record per step, none repeated
    assert lines[-1]["step"] == 9 and lines[-1]["learning_rate"] == pytest.approx(2e-3 * 0.999875**2)
    # Already at the last epoch: nothing left to train, nothing restarted.
    _, third = run_training(experiment, tmp_path, epochs=3)
    assert third.global_step == 9 and third.first_epoch == 4


def test_latest_only_names_and_resume(experiment: Experiment, tmp_path: Path) -> None:
    _, result = run_training(experiment, tmp_path, epochs=2, latest_only=True)
    assert result.checkpoint_g == experiment.g_checkpoint_path(2333333)
    assert [c.step for c in experiment.list_checkpoints("G")] == [2333333]
    _, again = run_training(experiment, tmp_path, epochs=3, latest_only=True)
    assert again.first_epoch == 3 and again.global_step == 9


def test_cancel_saves_a_usable_checkpoint_and_resume_goes_on(experiment: Experiment, tmp_path: Path) -> None:
    cancel = CancelToken()

    def progress(done: int, total: int, message: str) -> None:
        if done == 4:
            cancel.cancel()

    _, stopped = run_training(
        experiment,
        tmp_path,
        epochs=3,
        save_every_epochs=10,
        cancel=cancel,
        progress=progress,
    )
    assert stopped.cancelled and stopped.global_step == 4 and stopped.epochs_done == 1
    assert stopped.checkpoint_g == experiment.g_checkpoint_path(4)
    assert stopped.voice_path is not None and stopped.voice_path.exists()
    assert not experiment.lock_path.exists()
    _, resumed = run_training(experiment, tmp_path, epochs=2, save_every_epochs=10)
    assert resumed.resumed_from == experiment.g_checkpoint_path(4)
    # step 4 was epoch 2's first: the resumed run does that epoch's two remaining steps, no more
    assert resumed.first_epoch == 2 and resumed.global_step == 2 * STEPS_PER_EPOCH
    steps = [json.loads(x)["step"] for x in experiment.metrics_path.read_text().splitlines()]
    assert steps == list(range(1, 1 + 2 * STEPS_PER_EPOCH))


def _fingerprint(batch: object) -> float:
    return float(batch.wave.double().sum())  # type: ignore[attr-defined]


def test_stops_and_resumes_do_exactly_the_steps_of_one_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped mid-epoch twice and resumed, a run trains the same batches in the same order with the same
    random draws as one that never stopped: same final weights, one step numbering, exact voice info."""
    from infer_pack.checkpoint import load_voice

    seen: list[float] = []
    original = Trainer.train_step

    def spy(self: Trainer, state: object, batch: object) -> object:
        seen.append(_fingerprint(batch))
        return original(self, state, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(Trainer, "train_step", spy)
    epochs = 3
    whole = prepare_experiment(tmp_path / "one" / "logs")
    trainer, _ = run_training(whole, tmp_path / "one", epochs=epochs, save_every_epochs=10)
    reference = {k: v.clone() for k, v in trainer.state.net_g.state_dict().items()}
    reference_order, seen[:] = list(seen), []

    parts = prepare_experiment(tmp_path / "parts" / "logs")
    messages: list[str] = []
    for stop_at in (2, 5, None):  # inside epoch 1, inside epoch 2, then to the end
        cancel = CancelToken()

        def progress(done: int, total: int, message: str, stop_at: int | None = stop_at,
                     cancel: CancelToken = cancel) -> None:
            messages.append(f"{done}/{total}")
            if done == stop_at:
                cancel.cancel()

        trainer, result = run_training(parts, tmp_path / "parts", epochs=epochs, save_every_epochs=10, cancel=cancel,
                                       progress=progress)
        if stop_at is not None:
            assert result.cancelled and result.global_step == stop_at
            voice = load_voice(tmp_path / "parts" / "weights" / "tiny.pth")
            epoch = 1 + stop_at // STEPS_PER_EPOCH
            assert voice.info == f"epoch {epoch} step {stop_at}"  # not "0epoch"
    assert seen == reference_order and len(seen) == epochs * STEPS_PER_EPOCH
    for name, value in trainer.state.net_g.state_dict().items():
        torch.testing.assert_close(value, reference[name], rtol=0, atol=1e-6, msg=name)
    # one numbering: progress counts global steps of the whole run across the three starts
    total = epochs * STEPS_PER_EPOCH
    assert [m for m in messages if not m.startswith("0/")][:2] == ["1/9", "2/9"] and f"{total}/{total}" in messages
    assert "2/9" in messages and "3/9" in messages and "6/9" in messages
    assert messages.count("3/9") == 1, messages  # step 3 is not redone after the stop at 2


def test_damaged_or_incomplete_checkpoints(experiment: Experiment, tmp_path: Path) -> None:
    run_training(experiment, tmp_path, epochs=1)
    good = experiment.g_checkpoint_path(STEPS_PER_EPOCH)
    # a G without its D (killed between the two writes) and a temp file are not resume points
    experiment.g_checkpoint_path(100).write_bytes(good.read_bytes())
    (experiment.root / ".G_200.pth.x1.tmp").write_bytes(b"partial")
    assert find_resume_point(experiment).step == STEPS_PER_EPOCH  # type: ignore[union-attr]
    # a damaged newest pair is an error that names the file and the way out, never a silent restart
    experiment.g_checkpoint_path(50).write_bytes(good.read_bytes()[:1000])
    experiment.d_checkpoint_path(50).write_bytes(experiment.d_checkpoint_path(STEPS_PER_EPOCH).read_bytes())
    with pytest.raises(ModelFileError) as info:
        run_training(experiment, tmp_path, epochs=2)
    assert "G_50.pth" in str(info.value) and "previous checkpoint" in str(info.value)
    assert not experiment.lock_path.exists()


def test_kill_during_save_leaves_previous_checkpoint(experiment: Experiment, tmp_path: Path) -> None:
    from infer_pack.checkpoint import load_training_checkpoint

    run_training(experiment, tmp_path, epochs=1)
    # a writer killed with SIGKILL in the middle of a large save
    script = (
        "import sys, torch\n"
        "from infer_pack.checkpoint import save_training_checkpoint\n"
        "print('go', flush=True)\n"
        "save_training_checkpoint(sys.argv[1], model={'w': torch.zeros(150_000_000)}, optimizer=None, learning_rate=1e-4, iteration=9)\n"
    )
    target = experiment.g_checkpoint_path(99)
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", script, str(target)], cwd=repo, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"go"
    proc.kill()
    proc.wait()
    assert not target.exists()
    point = find_resume_point(experiment)
    assert point is not None and point.step == STEPS_PER_EPOCH
    assert load_training_checkpoint(point.g_path).iteration == 1
    for leftover in experiment.root.glob(".G_99.pth*"):
        leftover.unlink()


def test_second_training_is_refused_and_stale_lock_taken_over(experiment: Experiment, tmp_path: Path) -> None:
    lock = TrainingLock(experiment.lock_path)
    with lock:
        with pytest.raises(TrainingLockedError) as info:
            run_training(experiment, tmp_path, epochs=1)
        assert "train.lock" in str(info.value)
    assert not experiment.lock_path.exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    experiment.lock_path.write_text(f"{dead.pid} {socket.gethostname()}\n")
    _, result = run_training(experiment, tmp_path, epochs=1)
    assert result.epochs_done == 1 and not experiment.lock_path.exists()


def test_optimizer_state_is_matched_by_parameter_name() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    names = [n for n, _ in net.named_parameters()]  # 0.weight 0.bias 1.weight 1.bias
    writer_order = [
        names[2],
        names[3],
        names[0],
        names[1],
    ]  # another release's parameter order
    saved = {
        "state": {
            i: {
                "step": torch.tensor(5.0),
                "exp_avg": torch.full(dict(net.named_parameters())[n].shape, float(i)),
            }
            for i, n in enumerate(writer_order)
        },
        "param_groups": [{"lr": 1e-4, "params": [0, 1, 2, 3]}],
    }
    remapped = optimizer_state_by_name(saved, writer_order, net, Path("G_1.pth"))
    for new_index, name in enumerate(names):
        assert remapped["state"][new_index]["exp_avg"].shape == dict(net.named_parameters())[name].shape
        assert float(remapped["state"][new_index]["exp_avg"].flatten()[0]) == writer_order.index(name)
    optimizer = torch.optim.AdamW(net.parameters())
    optimizer.load_state_dict(remapped)
    with pytest.raises(ModelFileError):
        optimizer_state_by_name(saved, writer_order[:3], net, Path("G_1.pth"))


def test_pretrained_weights_load_strictly(experiment: Experiment, tmp_path: Path) -> None:
    from infer_pack.checkpoint import save_training_checkpoint

    torch.manual_seed(5)
    net_g, net_d = tiny_networks(experiment)
    pre_g, pre_d = tmp_path / "f0G32k.pth", tmp_path / "f0D32k.pth"
    half = {k: v.half() for k, v in net_g.state_dict().items()}  # published files are fp16
    save_training_checkpoint(pre_g, model=half, optimizer=None, learning_rate=1e-4, iteration=0)
    save_training_checkpoint(pre_d, model=net_d, optimizer=None, learning_rate=1e-4, iteration=0)
    run_training(
        experiment,
        tmp_path,
        epochs=1,
        pretrained_g=pre_g,
        pretrained_d=pre_d,
        save_every_epochs=5,
    )
    assert "loaded pretrained generator" in experiment.train_log_path.read_text()

    broken = {k: v for k, v in net_g.state_dict().items() if not k.startswith("enc_q.")}
    save_training_checkpoint(pre_g, model=broken, optimizer=None, learning_rate=1e-4, iteration=0)
    for path in experiment.root.glob("[GD]_*.pth"):
        path.unlink()
    with pytest.raises(ModelFileError) as info:
        run_training(experiment, tmp_path, epochs=1, pretrained_g=pre_g, pretrained_d=pre_d)
    assert "enc_q" in str(info.value) and str(pre_g) in str(info.value)


def test_stop_mid_epoch_latest_only_resumes_at_the_saved_step(
    experiment: Experiment, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """G_2333333 has no step in its name: the step saved on a mid-epoch stop must be the one resumed."""
    import re

    cancel = CancelToken()

    def progress(done: int, total: int, message: str) -> None:
        if done == STEPS_PER_EPOCH + 2:  # two steps into epoch 2
            cancel.cancel()

    caplog.set_level("INFO", logger="train")
    _, stopped = run_training(
        experiment, tmp_path, epochs=3, latest_only=True, cancel=cancel, progress=progress
    )
    assert stopped.cancelled and stopped.epochs_done == 1 and stopped.global_step == STEPS_PER_EPOCH + 2
    saved = [m.group(1) for r in caplog.records if (m := re.search(r"^saved G_2333333.* step (\d+)\)", r.getMessage()))]
    assert saved[-1] == str(STEPS_PER_EPOCH + 2)
    caplog.clear()
    _, resumed = run_training(experiment, tmp_path, epochs=2, latest_only=True)
    said = [m.group(1) for r in caplog.records if (m := re.search(r"^resuming from G_2333333.* step (\d+)$", r.getMessage()))]
    assert said == saved[-1:]
    # epoch 2 goes on with its last step: the run ends where an unstopped one would
    assert resumed.first_epoch == 2 and resumed.global_step == 2 * STEPS_PER_EPOCH
    steps = [json.loads(x)["step"] for x in experiment.metrics_path.read_text().splitlines()]
    assert steps == list(range(1, 2 * STEPS_PER_EPOCH + 1))  # the two stopped steps are kept, none repeated


def test_short_runs_log_every_epoch_and_plot_points(experiment: Experiment, tmp_path: Path) -> None:
    """The config's interval (200 steps) is longer than the run: the last step of each epoch is logged anyway."""
    _, result = run_training(experiment, tmp_path, epochs=2, log_interval=None)
    steps = [json.loads(x)["step"] for x in experiment.metrics_path.read_text().splitlines()]
    assert steps == [1, STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    assert result.loss_curve_path is not None and result.loss_curve_path.stat().st_size > 0
    # An explicit interval: its multiples plus each epoch's end, never the same step twice.
    experiment.metrics_path.unlink()
    for checkpoint in experiment.list_checkpoints("G") + experiment.list_checkpoints("D"):
        checkpoint.path.unlink()
    run_training(experiment, tmp_path, epochs=2, log_interval=2)
    steps = [json.loads(x)["step"] for x in experiment.metrics_path.read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 6]


def test_training_options_refuse_a_zero_log_interval() -> None:
    from infer_pack.errors import UserInputError

    with pytest.raises(UserInputError, match="Log interval"):
        TrainingOptions(log_interval=0)


def test_trained_voice_records_its_speakers(experiment: Experiment, tmp_path: Path) -> None:
    """The exported voice says which speaker ids it was trained on (emb_g's rows do not tell)."""
    from tools import api

    _, result = run_training(experiment, tmp_path, epochs=1)
    assert result.voice_path is not None
    shown = api.show_voice_info(path=result.voice_path)
    assert shown.trained_speakers == (0,)
    assert f"1 trained speaker (id 0) of {shown.speaker_count} embedding rows" in shown.summary()
