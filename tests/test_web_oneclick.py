"""The Train tab's one-click button through gradio_client: a fresh experiment from a folder of wavs to a voice.

The run is the real pipeline (preprocess -> pitch and features -> training from scratch -> index) at the
smallest settings: three short synthetic takes, one epoch, batch size 1, PM pitch, the random v2-width HuBERT.
The voice it writes is then used through the Convert tab's endpoint.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers_app import (
    app_in_thread,
    audio_rms,
    make_project,
    shared_test_hubert,
    write_test_wav,
)

EXPERIMENT = "oneclick"
VERSION = "v2"
SAMPLE_RATE_TAG = "40k"
MODEL_RATE = 40000
# Pipeline steps in order, as tools.api.training.one_click prefixes their progress messages.
STEPS = ("[1/4 preprocess]", "[2/4 features]", "[3/4 train]", "[4/4 index]")
# Train-tab form values in tools.ui_train.TrainForm.FIELDS order.
ONE_CLICK_FORM: dict[str, Any] = {
    "experiment": EXPERIMENT, "sample_rate_tag": SAMPLE_RATE_TAG, "version": VERSION, "use_f0": True,
    "processes": 1, "dataset": "dataset", "speaker_id": 0, "f0_method": "pm", "save_every_epochs": 1, "epochs": 1,
    "batch_size": 1, "latest_only": True, "export_every_save": False, "pretrained_g": "", "pretrained_d": "",
    "index_kind": "ivf_flat", "from_scratch": True,
}
JOB_TIMEOUT_S = 600.0


@pytest.fixture(scope="module")
def served(reference: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    """(gradio client, project root) of an app whose project has a dataset folder of three short takes."""
    from gradio_client import Client

    base = tmp_path_factory.mktemp("oneclick")
    hubert = shared_test_hubert(tmp_path_factory, reference)
    root = make_project(base / "project", reference, hubert)
    for i, f0_hz in enumerate((140.0, 190.0, 240.0)):
        write_test_wav(root / "dataset" / f"take{i}.wav", seconds=1.5, sample_rate=MODEL_RATE, f0_hz=f0_hz)
    with app_in_thread(root) as (url, _ctx):
        yield Client(url, verbose=False), root


def _job_id(progress_html: str) -> tuple[str, str]:
    """(job id, state) from the job panel's progress bar."""
    job = re.search(r'data-job="([^"]*)"', progress_html)
    state = re.search(r'data-state="([^"]*)"', progress_html)
    assert job and state, progress_html
    return job.group(1), state.group(1)


def _follow(client: Any, job_id: str, timeout_s: float) -> tuple[dict[str, Any], list[str]]:
    """Poll /job_status until the job ends; returns the last status and every log line and message seen, in order.

    /job_status returns the last 50 log lines, so lines are gathered on each poll (new ones appended).
    """
    seen: list[str] = []
    known: set[str] = set()

    def take(lines: list[str]) -> None:
        for line in lines:
            if line not in known:
                known.add(line)
                seen.append(line)

    deadline = time.time() + timeout_s
    while True:
        status = client.predict(job_id, api_name="/job_status")
        take([*status["log"], status["message"]])
        if status["state"] != "running":
            return status, seen
        assert time.time() < deadline, f"one-click still running after {timeout_s} s: {seen[-5:]}"
        time.sleep(0.25)


def _first_line_with(lines: list[str], text: str) -> int:
    for number, line in enumerate(lines):
        if text in line:
            return number
    raise AssertionError(f"no line names {text!r}:\n" + "\n".join(lines))


@pytest.mark.slow  # about 50 s of CPU work; 60 to 95 s wall on a shared 2-core machine
def test_one_click_trains_a_voice_that_converts(served: tuple[Any, Path]) -> None:
    from gradio_client import handle_file

    from infer_pack.checkpoint import load_voice

    client, root = served
    started = client.predict(*ONE_CLICK_FORM.values(), api_name="/one_click")
    job_id, state = _job_id(started[1])
    assert job_id.startswith("one-click-") and state == "running", started[1]

    status, lines = _follow(client, job_id, JOB_TIMEOUT_S)
    assert status["state"] == "done", (status["error"], lines[-10:])
    positions = [_first_line_with(lines, step) for step in STEPS]
    assert positions == sorted(positions), f"steps out of order: {dict(zip(STEPS, positions))}"
    # The job's result summary (one line per step) is logged once the last step has started.
    for step_result in ("preprocessed 3 file(s)", "training finished at epoch 1, step 5", "index built from"):
        assert _first_line_with(lines, step_result) > positions[-1], step_result
    assert "loss_mel" in status["last_metrics"], "training reported no losses"

    voice_path = root / "weights" / f"{EXPERIMENT}.pth"
    voice = load_voice(voice_path)
    assert (voice.version, voice.sample_rate, voice.use_f0) == (VERSION, MODEL_RATE, True)
    indexes = list((root / "logs" / EXPERIMENT).glob(f"added_IVF*_Flat_nprobe_1_{EXPERIMENT}_{VERSION}.index"))
    assert len(indexes) == 1, sorted(p.name for p in (root / "logs" / EXPERIMENT).iterdir())

    # The voice and the index did not exist when the app started; the Convert endpoint must still take them.
    source = root / "inputs" / "b.wav"  # 1.0 s at 16 kHz
    index = str(indexes[0].relative_to(root))
    _audio, out_file, text = client.predict(
        handle_file(str(source)), voice_path.name, index, None, 0, 0, "pm", 0.75, 3, 0, 0.25, 0.33,
        api_name="/convert",
    )
    rms, rate, samples = audio_rms(out_file)
    assert rate == MODEL_RATE, text
    assert abs(samples - MODEL_RATE * 1.0) <= MODEL_RATE * 0.02, samples  # 1.0 s in, 1.0 s out
    assert math.isfinite(rms), "the output is not a number"
    assert f"index {indexes[0].name}" in text and f"at {MODEL_RATE} Hz" in text, text
    # Names typed by an API client are checked by the handler: a missing voice is a one-line error.
    with pytest.raises(Exception, match="not found; pick one from weights/") as info:
        client.predict(handle_file(str(source)), "missing.pth", "", None, 0, 0, "pm", 0.75, 3, 0, 0.25, 0.33,
                       api_name="/convert")
    assert "Traceback" not in str(info.value)
