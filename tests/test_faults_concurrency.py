"""Work at the same time in one process, as the web app runs jobs in threads.

* two conversions at once give exactly what each gives alone;
* a conversion run while a training runs gives the same result as without it;
* a second training of an experiment that is being trained is refused (TrainingLockedError).

Voice: the reference ref_v2_40k_f0.pth; content encoder: the tiny reference HuBERT followed by a
fixed projection to 768 values (tests/test_pipeline.py's ProjectedEncoder); short padding windows
(as in tests/test_pipeline.py) to keep the runs short.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import reference_file, synthetic_voice

from infer_pack.progress import CancelToken

EXP = "singer"


@pytest.fixture(scope="module", autouse=True)
def one_intra_op_thread() -> Any:
    """Bit-identical results need one intra-op thread per call: with several, MKL (dynamic by default)
    gives a call running beside another fewer threads, which changes float rounding in the last bit.
    (torch's count also follows any omp_set_num_threads in the process, e.g. faiss' in train.index.)"""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def converter(reference: Path) -> Any:
    """One converter shared by every thread, as the app shares its cached synthesiser and encoder."""
    from test_pipeline import SHORT_WINDOWS, ProjectedEncoder

    from infer_pack.checkpoint import load_voice
    from infer_pack.pipeline import VoiceConverter

    voice = load_voice(reference_file(reference, "ref_v2_40k_f0.pth"))
    encoder = ProjectedEncoder(reference_file(reference, "tiny_hubert.pt"), 768)
    return VoiceConverter(voice, encoder, windows=SHORT_WINDOWS)


@functools.cache
def _take(number: int) -> np.ndarray:
    """Two different 0.7 s inputs at 16 kHz."""
    return synthetic_voice(0.7, 16000, f0_hz=(140.0, 220.0)[number], seed=number)


def _convert(converter: Any, take: int) -> np.ndarray:
    from infer_pack.pipeline import ConversionParams

    audio, rate = converter.convert(_take(take), ConversionParams(f0_method="pm", pitch_semitones=2.0, seed=7))
    assert rate == 40000 and audio.size > 0
    return audio


@pytest.fixture(scope="module")
def alone(converter: Any) -> list[np.ndarray]:
    """Each take converted on its own, one after the other."""
    first = [_convert(converter, take) for take in (0, 1)]
    np.testing.assert_array_equal(first[0], _convert(converter, 0))  # the seed makes a conversion repeatable at all
    assert not np.array_equal(first[0][: first[1].size], first[1][: first[0].size])
    return first


def _run_together(jobs: list[Callable[[], Any]]) -> list[Any]:
    """Start every job at the same moment in its own thread; re-raise the first error."""
    barrier = threading.Barrier(len(jobs))
    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = jobs[i]()
        except BaseException as exc:  # noqa: BLE001 (re-raised below)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    if errors:
        raise errors[0]
    return results


def test_two_conversions_at_once_equal_sequential_runs(converter: Any, alone: list[np.ndarray]) -> None:
    for round_ in range(2):
        together = _run_together([lambda t=take: _convert(converter, t) for take in (0, 1)])
        for take in (0, 1):
            np.testing.assert_array_equal(together[take], alone[take], err_msg=f"take {take}, round {round_}")


def test_conversion_while_training_runs(
    converter: Any, alone: list[np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_train_fixtures import prepare_experiment, tiny_networks

    from infer_pack.errors import TrainingLockedError
    from tools.api.training import train_model

    monkeypatch.setattr("train.trainer.build_networks", lambda setup: tiny_networks(setup.experiment))
    train_root = tmp_path / "train-project"
    experiment = prepare_experiment(train_root / "logs", name=EXP)
    started = threading.Event()
    release = threading.Event()
    stop = CancelToken()
    outcome: dict[str, Any] = {}

    def progress(done: int, total: int, message: str) -> None:
        if done >= 1:
            started.set()
            release.wait(timeout=120)  # keep the training inside its loop while the main thread checks the lock

    def train() -> None:
        from infer_pack.errors import CancelledError

        try:
            # Far more epochs than needed: it trains through every conversion below, then is stopped.
            outcome["result"] = train_model(
                train_root, progress, stop, experiment=EXP, epochs=100, batch_size=2, save_every_epochs=100, device="cpu",
                use_pretrained=False,
            )
        except CancelledError as exc:  # the stop below: the result saved at the stop comes with it
            outcome["result"] = exc.result
        except BaseException as exc:  # noqa: BLE001 (checked below)
            outcome["error"] = exc

    trainer = threading.Thread(target=train)
    trainer.start()
    try:
        assert started.wait(timeout=120), f"training did not start: {outcome}"
        with pytest.raises(TrainingLockedError):
            train_model(train_root, experiment=EXP, epochs=2, batch_size=2, device="cpu", use_pretrained=False)
        release.set()  # now both run for real: training steps beside the conversions
        converted = [_convert(converter, take) for take in (0, 1)]
        assert trainer.is_alive(), "the training ended before the conversions did"
    finally:
        release.set()
        stop.cancel()
        trainer.join(timeout=300)
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert result.cancelled and result.global_step > 1 and not experiment.lock_path.exists()
    for take, audio in zip((0, 1), converted):
        np.testing.assert_array_equal(audio, alone[take])


def test_second_training_in_another_thread_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One process, two jobs: the lock names its holder (this process) and nothing of the first is touched."""
    from test_train_fixtures import prepare_experiment, tiny_networks

    from infer_pack.errors import TrainingLockedError
    from tools.api.training import train_model
    from train.trainer import TrainingLock

    monkeypatch.setattr("train.trainer.build_networks", lambda setup: tiny_networks(setup.experiment))
    experiment = prepare_experiment(tmp_path / "logs", name=EXP)
    with TrainingLock(experiment.lock_path):
        errors = _run_together(
            [lambda: _refused(lambda: train_model(tmp_path, experiment=EXP, epochs=1, batch_size=2, device="cpu", use_pretrained=False)),
             lambda: _refused(lambda: train_model(tmp_path, experiment=EXP, epochs=1, batch_size=2, device="cpu", use_pretrained=False))]
        )  # fmt: skip
        assert all(isinstance(e, TrainingLockedError) and "train.lock" in str(e) for e in errors)
        assert experiment.lock_path.exists() and not experiment.list_checkpoints("G")
    assert not experiment.lock_path.exists()


def _refused(call: Callable[[], Any]) -> BaseException | None:
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 (returned for the assertion)
        return exc
    return None


def test_a_training_refused_by_another_process_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lock is taken before filelist.txt is rewritten: a refused start leaves the experiment as it was."""
    import subprocess
    import sys

    from test_train_fixtures import prepare_experiment, tiny_networks

    from infer_pack.errors import TrainingLockedError
    from tools.api.training import train_model

    monkeypatch.setattr("train.trainer.build_networks", lambda setup: tiny_networks(setup.experiment))
    experiment = prepare_experiment(tmp_path / "logs", name=EXP)
    filelist = experiment.root / "filelist.txt"
    filelist.write_text("the running training's list\n", encoding="utf-8")
    before = (filelist.read_bytes(), filelist.stat().st_mtime_ns)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from train.trainer import TrainingLock; "
         "lock = TrainingLock(__import__('pathlib').Path(sys.argv[1])); lock.acquire(); print('held', flush=True); "
         "time.sleep(120)", str(experiment.lock_path)],
        cwd=str(Path(__file__).resolve().parents[1]), stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(TrainingLockedError, match=f"pid {holder.pid}|{holder.pid}"):
            train_model(tmp_path, experiment=EXP, epochs=1, batch_size=2, device="cpu", use_pretrained=False,
                        speaker_id=3)
        assert (filelist.read_bytes(), filelist.stat().st_mtime_ns) == before
    finally:
        holder.kill()
        holder.wait(timeout=10)
