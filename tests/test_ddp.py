"""Distributed training on CPU: two processes with gloo, env:// initialisation as under torchrun."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
from test_train_fixtures import prepare_experiment, tiny_networks, tiny_setup

from train.experiment import Experiment

WORLD = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker(rank: int, experiment_root: str, out_dir: str, port: int, device: str = "cpu") -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    from train.trainer import Trainer, TrainingOptions

    experiment = Experiment(experiment_root)
    torch.manual_seed(100 + rank)  # different initial weights per rank: DDP must broadcast rank 0's
    options = TrainingOptions(
        epochs=2,
        batch_size=2,
        save_every_epochs=1,
        log_interval=1,
        weights_dir=Path(out_dir) / "weights",
        device=device,  # explicit: "auto" would put both ranks on a machine's single GPU
    )
    trainer = Trainer(tiny_setup(experiment), options, networks=tiny_networks(experiment))
    result = trainer.run()
    weights = {
        "g": [p.detach().double().sum().item() for p in trainer.state.net_g.parameters()],
        "d": [p.detach().double().sum().item() for p in trainer.state.net_d.parameters()],
        "step": result.global_step,
        "checkpoint": str(result.checkpoint_g) if result.checkpoint_g else None,
        "voice": str(result.voice_path) if result.voice_path else None,
    }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(weights))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_stay_in_sync_and_only_rank0_writes(tmp_path: Path) -> None:
    from infer_pack.checkpoint import load_training_checkpoint

    experiment = prepare_experiment(tmp_path / "logs")
    out = tmp_path / "out"
    out.mkdir()
    torch.multiprocessing.spawn(
        _worker,
        args=(str(experiment.root), str(out), _free_port()),
        nprocs=WORLD,
        join=True,
    )
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]
    # 6 items, 2 per rank per step -> 2 steps per epoch on each rank
    assert ranks[0]["step"] == ranks[1]["step"] == 4
    assert ranks[0]["g"] == ranks[1]["g"] and ranks[0]["d"] == ranks[1]["d"]
    # rank 0 alone wrote: one checkpoint pair per epoch, one voice, one metrics line per step, one event file
    assert ranks[0]["checkpoint"] and ranks[1]["checkpoint"] is None and ranks[1]["voice"] is None
    assert sorted(c.step for c in experiment.list_checkpoints("G")) == [2, 4]
    assert sorted(c.step for c in experiment.list_checkpoints("D")) == [2, 4]
    saved = load_training_checkpoint(experiment.g_checkpoint_path(4)).model
    assert not any(k.startswith("module.") for k in saved)
    assert [p.double().sum().item() for p in saved.values()] == pytest.approx(ranks[1]["g"], rel=0, abs=0)
    steps = [json.loads(line)["step"] for line in experiment.metrics_path.read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert len(list(experiment.root.glob("events.out.tfevents.*"))) == 1
    assert [p.name for p in (out / "weights").iterdir()] == ["tiny.pth"]
    assert not experiment.lock_path.exists()
