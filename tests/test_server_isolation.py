"""The server outlives its jobs and its inputs: the app in its own process, driven through gradio_client.

* An 8-channel WAV (which once crashed the whole server in the decoder) converts while a training runs.
* kill -9 of the training's process ends that job with the cause; the server and conversions go on.
* A user's sequence (one-click, a second training stopped midway, index, conversions) leaves the
  server's own memory where it started: the work happened in processes that are gone.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers_app import app_in_subprocess, make_project, shared_test_hubert, write_test_wav

pytestmark = pytest.mark.slow

EXPERIMENT = "isolated"
FORM: dict[str, Any] = {
    "experiment": EXPERIMENT, "sample_rate_tag": "40k", "version": "v2", "use_f0": True, "processes": 1,
    "dataset": "dataset", "speaker_id": 0, "f0_method": "pm", "save_every_epochs": 1, "epochs": 1, "batch_size": 1,
    "latest_only": True, "export_every_save": False, "pretrained_g": "", "pretrained_d": "",
    "index_kind": "ivf_flat", "from_scratch": True, "log_interval": 1, "extract_device": "auto",
    "train_device": "auto", "cache_batches": False, "early_stop_epochs": 0, "validate_every_steps": None,
    "held_out_percent": 3,
}
CONVERT_PARAMS = (0, 0, "pm", 0.75, 3, 0, 0.25, 0.33)
# The server's resident memory after the sequence may exceed its size before by at most this much.
# Measured on a 2-core Xeon: +2 MB (360 -> 362 MB); the margin leaves room for Gradio's per-session
# state, upload bookkeeping and job logs, and stays far below one loaded model (HuBERT alone is ~360 MB).
RSS_MARGIN_MB = 150


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def _job_id(progress_html: str) -> str:
    found = re.search(r'data-job="([^"]+)"', progress_html)
    assert found, progress_html
    return found.group(1)


def _status(client: Any, job_id: str) -> dict[str, Any]:
    return client.predict(job_id, api_name="/job_status")  # type: ignore[no-any-return]


def _wait(client: Any, job_id: str, until: Any, timeout_s: float = 600.0) -> dict[str, Any]:
    deadline = time.time() + timeout_s
    while True:
        status = _status(client, job_id)
        if until(status):
            return status
        assert status["state"] == "running", status
        assert time.time() < deadline, f"timed out; last status {status}"
        time.sleep(0.5)


def _start(client: Any, api_name: str, **changes: Any) -> str:
    values = {**FORM, **changes}
    started = client.predict(*values.values(), api_name=api_name)
    return _job_id(started[1])


@pytest.fixture(scope="module")
def served(reference: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any, Path]]:
    """(gradio client, server process, project root)."""
    from gradio_client import Client

    base = tmp_path_factory.mktemp("isolation")
    hubert = shared_test_hubert(tmp_path_factory, reference)
    root = make_project(base / "project", reference, hubert)
    for i, f0_hz in enumerate((140.0, 190.0, 240.0)):
        write_test_wav(root / "dataset" / f"take{i}.wav", seconds=1.5, sample_rate=40000, f0_hz=f0_hz)
    with app_in_subprocess(root, timeout_s=120.0) as (url, proc):
        yield Client(url, verbose=False), proc, root


def _eight_channel_wav(path: Path) -> Path:
    import soundfile as sf

    t = np.arange(16000) / 16000
    voice = 0.3 * np.sin(2 * np.pi * 180.0 * t)
    sf.write(str(path), np.stack([voice] * 8, axis=1).astype(np.float32), 16000, subtype="FLOAT")
    return path


def _convert(client: Any, source: Path) -> tuple[str, str]:
    from gradio_client import handle_file

    _audio, out_file, text = client.predict(handle_file(str(source)), "ref.pth", "", None, *CONVERT_PARAMS,
                                            api_name="/convert")
    return out_file, text


def test_a_crashing_input_and_a_killed_job_leave_the_server_and_other_work_running(
    served: tuple[Any, Any, Path], tmp_path: Path
) -> None:
    client, proc, _root = served
    job_id = _start(client, "/one_click", experiment="killed", epochs=500)
    training = _wait(client, job_id, lambda s: "[3/4 train]" in s["message"])
    pid = training["pid"]
    assert pid and pid != proc.pid, training

    # The input that used to segfault the server converts while the training goes on.
    out_file, text = _convert(client, _eight_channel_wav(tmp_path / "eight channels.wav"))
    assert Path(out_file).stat().st_size > 0 and "40000 Hz" in text, text
    assert _status(client, job_id)["state"] == "running"

    os.kill(pid, signal.SIGKILL)
    ended = _wait(client, job_id, lambda s: s["state"] != "running", timeout_s=60)
    assert ended["state"] == "failed", ended
    assert "one-click job's process was killed (SIGKILL)" in ended["error"], ended["error"]
    assert proc.poll() is None, "the server died with its job"
    out_file, _text = _convert(client, _root / "inputs" / "a.wav")
    assert Path(out_file).stat().st_size > 0


def test_the_servers_memory_comes_back_after_a_users_sequence(served: tuple[Any, Any, Path]) -> None:
    client, proc, root = served
    _convert(client, root / "inputs" / "a.wav")  # Gradio's first request warms up its own state
    before = _rss_mb(proc.pid)

    first = _start(client, "/one_click")
    assert _wait(client, first, lambda s: s["state"] != "running")["state"] == "done"
    resumed = _start(client, "/train", epochs=200)
    _wait(client, resumed, lambda s: "epoch 2" in " ".join(s["log"]) or s["state"] != "running")
    client.predict(resumed, api_name="/stop_job")
    assert _wait(client, resumed, lambda s: s["state"] != "running")["state"] == "cancelled"
    index = _start(client, "/train_index")
    assert _wait(client, index, lambda s: s["state"] != "running")["state"] == "done"
    for name in ("a.wav", "b.wav", "a.wav"):
        _convert(client, root / "inputs" / name)

    time.sleep(2.0)
    after = _rss_mb(proc.pid)
    print(f"server RSS: {before:.0f} MB before, {after:.0f} MB after (+{after - before:.0f} MB)")
    assert after - before < RSS_MARGIN_MB, (before, after)
