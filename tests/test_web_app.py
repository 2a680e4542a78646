"""The app through gradio_client: convert, typed paths confined, names validated, jobs followed to the end."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers_app import app_in_thread, audio_rms, make_project, shared_test_hubert

# Train-tab form values in tools.ui_train.TrainForm.FIELDS order.
TRAIN_DEFAULTS: dict[str, Any] = {
    "experiment": "demo", "sample_rate_tag": "40k", "version": "v2", "use_f0": True, "processes": 1,
    "dataset": "inputs", "speaker_id": 0, "f0_method": "pm", "save_every_epochs": 1, "epochs": 1, "batch_size": 2,
    "latest_only": False, "export_every_save": False, "pretrained_g": "", "pretrained_d": "",
    "index_kind": "ivf_flat", "from_scratch": False, "log_interval": 200,
}


def train_form(**changes: Any) -> list[Any]:
    values = {**TRAIN_DEFAULTS, **changes}
    return list(values.values())


@pytest.fixture(scope="module")
def served(reference: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any, Path]]:
    """(gradio client, AppContext, project root) of an app serving a project with the reference voice."""
    from gradio_client import Client

    base = tmp_path_factory.mktemp("webapp")
    hubert = shared_test_hubert(tmp_path_factory, reference)
    root = make_project(base / "project", reference, hubert)
    with app_in_thread(root) as (url, ctx):
        yield Client(url, verbose=False), ctx, root


def _progress_state(html: str) -> tuple[str, str, str]:
    """(job id, state, text) from the progress bar's HTML."""
    job = re.search(r'data-job="([^"]*)"', html)
    state = re.search(r'data-state="([^"]*)"', html)
    text = re.search(r'<div class="text">(.*?)</div>', html, re.DOTALL)
    assert job and state and text, html
    return job.group(1), state.group(1), text.group(1)


def _wait_job(client: Any, job_id: str, timeout_s: float = 120.0) -> dict[str, Any]:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        status = client.predict(job_id, api_name="/job_status")
        if status["state"] not in ("running",):
            return status
        time.sleep(0.3)
    raise TimeoutError(f"job {job_id} still running after {timeout_s} s")


def test_convert_through_the_api_writes_the_voice_rate(served: tuple[Any, Any, Path]) -> None:
    from gradio_client import handle_file

    client, _ctx, root = served
    source = root / "inputs" / "b.wav"
    out_audio, out_file, text = client.predict(
        handle_file(str(source)), "ref.pth", "", None, 0, 12, "pm", 0.75, 3, 0, 0.25, 0.33, "interpolate",
        api_name="/convert",
    )
    rms, rate, samples = audio_rms(out_file)
    assert rate == 40000, "the reference voice is a 40 kHz model"
    assert abs(samples - 40000 * 1.0) <= 40000 * 0.02, samples  # 1.0 s in, 1.0 s out
    assert rms > 1e-3, "output is silent"
    assert "converted 1.0 s of audio" in text and "40000 Hz" in text and "times:" in text
    assert Path(out_file).name.startswith("b_ref_pm_12st"), out_file  # input, voice, method, transpose
    assert (root / "outputs" / Path(out_file).name).is_file(), "single conversions are kept in <project>/outputs"
    assert audio_rms(out_audio)[1] == 40000


def test_the_decoder_choice_reaches_the_conversion(served: tuple[Any, Any, Path]) -> None:
    """The form's "Input decoding" (appended last, so older calls without it keep working): a stereo input
    gives other audio through soxr (channel mean) than through RVC's decode (0.7071 x (L + R))."""
    import numpy as np
    import soundfile
    from gradio_client import handle_file

    client, _ctx, root = served
    mono, rate = soundfile.read(root / "inputs" / "b.wav", dtype="float32")
    stereo = root / "stereo-in" / "stereo.wav"
    stereo.parent.mkdir(exist_ok=True)
    soundfile.write(stereo, np.stack([mono, 0.5 * mono], axis=1), rate)
    outputs = {}
    for decoder in ("rvc", "soxr"):
        _audio, out_file, text = client.predict(
            handle_file(str(stereo)), "ref.pth", "", None, 0, 0, "pm", 0.75, 3, 0, 0.25, 0.33, "keep", decoder,
            api_name="/convert",
        )
        outputs[decoder] = soundfile.read(out_file, dtype="float32")[0]
    assert outputs["rvc"].shape == outputs["soxr"].shape
    assert not np.allclose(outputs["rvc"], outputs["soxr"], atol=1e-4), "the decoder choice did not reach the pipeline"


def test_convert_errors_are_one_line_messages(served: tuple[Any, Any, Path]) -> None:
    from gradio_client import handle_file

    client, _ctx, root = served
    broken = root / "junk" / "broken.wav"  # not in inputs/: the dataset tests use that folder
    broken.parent.mkdir(exist_ok=True)
    broken.write_bytes(b"RIFF\x00\x00not really audio")
    with pytest.raises(Exception) as info:
        client.predict(handle_file(str(broken)), "ref.pth", "", None, 0, 0, "pm", 0.75, 3, 0, 0.25, 0.33,
                       api_name="/convert")
    message = str(info.value)
    assert "cannot load audio" in message and "Traceback" not in message
    with pytest.raises(Exception, match="no voice selected"):
        client.predict(handle_file(str(root / "inputs" / "a.wav")), None, "", None, 0, 0, "pm", 0.75, 3, 0, 0.25,
                       0.33, api_name="/convert")


def test_typed_paths_outside_the_project_are_refused(served: tuple[Any, Any, Path]) -> None:
    client, _ctx, root = served
    outputs = client.predict(*train_form(dataset="/etc"), api_name="/preprocess")
    _job, state, text = _progress_state(outputs[1])
    assert state == "failed"
    assert "outside the project folder" in text and "--allow-path" in text
    outputs = client.predict(*train_form(dataset="../../.."), api_name="/preprocess")
    assert "outside the project folder" in _progress_state(outputs[1])[2]
    info = client.predict("/etc/passwd", api_name="/show_info")
    assert info.startswith("error:") and "outside the project folder" in info
    assert not (root / "logs" / "demo").exists()


@pytest.mark.parametrize("bad", ["../escape", "a/b", "", "x\x00y"])
def test_experiment_names_are_validated(served: tuple[Any, Any, Path], bad: str) -> None:
    client, _ctx, root = served
    outputs = client.predict(*train_form(experiment=bad), api_name="/preprocess")
    _job, state, text = _progress_state(outputs[1])
    assert state == "failed" and "invalid experiment name" in text
    assert sorted(p.name for p in (root / "logs").iterdir()) == [], "nothing may be written for a bad name"


def test_preprocess_job_runs_to_the_end_with_progress_and_log(served: tuple[Any, Any, Path]) -> None:
    client, ctx, root = served
    outputs = client.predict(*train_form(experiment="web-pre"), api_name="/preprocess")
    job_id, state, _text = _progress_state(outputs[1])
    assert job_id and state == "running"
    status = _wait_job(client, job_id)
    assert status["state"] == "done", status
    assert status["done"] == status["total"] == 2
    assert any("preprocessed 2 file(s)" in line for line in status["log"])
    assert len(list((root / "logs" / "web-pre" / "0_gt_wavs").glob("*.wav"))) >= 2
    # The same experiment cannot run two steps at once.
    release = __import__("threading").Event()
    blocker = ctx.jobs.start("train", lambda job: release.wait(10), key="web-pre")
    try:
        outputs = client.predict(*train_form(experiment="web-pre"), api_name="/extract")
        assert "busy" in _progress_state(outputs[1])[2]
    finally:
        release.set()
        ctx.jobs.wait(blocker.job_id, 10)


def test_model_tools_show_change_and_merge(served: tuple[Any, Any, Path]) -> None:
    client, _ctx, root = served
    info = client.predict("ref", api_name="/show_info")
    assert "version: v2" in info and "40k" in info and "pitch guidance (f0): yes" in info
    # RVC's voices hold 109 speaker-embedding rows whatever they were trained on; not "109 speakers".
    assert "speakers: 109" not in info and "109 embedding rows" in info, info
    merged = client.predict("ref", "ref", 0.25, "blend", "a blend", api_name="/merge")
    assert merged.startswith("merged voice written to") and (root / "weights" / "blend.pth").is_file()
    changed = client.predict("blend", "renamed info", "", api_name="/change_info")
    assert "renamed info" in changed
    assert "info: renamed info" in client.predict("blend", api_name="/show_info")
    refused = client.predict("ref", "ref", 0.5, "../outside", "", api_name="/merge")
    assert refused.startswith("error: invalid voice name")
    assert not (root.parent / "outside.pth").exists()


@pytest.mark.slow
def test_batch_converts_a_folder_and_counts_failures(served: tuple[Any, Any, Path]) -> None:
    import shutil

    client, _ctx, root = served
    folder = root / "batch-in"
    folder.mkdir()
    shutil.copy(root / "inputs" / "b.wav", folder / "take.wav")
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00not really audio")
    outputs = client.predict("ref.pth", "", "batch-in", "batch-out", "flac", 0, 0, "pm", 0.75, 3, 0, 0.25, 0.33,
                             "keep", None, api_name="/convert_batch")
    job_id, state, _text = _progress_state(outputs[1])
    assert state == "running"
    status = _wait_job(client, job_id, timeout_s=300)
    assert status["state"] == "done", status
    assert any("converted 1 file(s), 1 failed" in line for line in status["log"]), status["log"]
    assert any("broken.wav" in line and "cannot load audio" in line for line in status["log"])
    assert sorted(p.name for p in (root / "batch-out").iterdir()) == ["ref-converted.zip", "take.flac"]
    refused = client.predict("ref.pth", "", "/tmp", "batch-out", "wav", 0, 0, "pm", 0.75, 3, 0, 0.25, 0.33,
                             "keep", None, api_name="/convert_batch")
    assert "outside the project folder" in _progress_state(refused[1])[2]


@pytest.mark.slow
def test_batch_of_uploaded_files_with_one_stem(served: tuple[Any, Any, Path]) -> None:
    """Several uploads at once (two share the stem `a`): each gets its own `<stem>.<format>` and the zip holds all."""
    import shutil
    import zipfile

    import soundfile
    from gradio_client import handle_file

    client, _ctx, root = served
    uploads = root.parent / "uploads"
    uploads.mkdir()
    shutil.copy(root / "inputs" / "b.wav", uploads / "a.wav")
    data, rate = soundfile.read(str(root / "inputs" / "b.wav"))
    soundfile.write(str(uploads / "a.flac"), data, rate)
    files = [handle_file(str(uploads / "a.wav")), handle_file(str(uploads / "a.flac"))]
    outputs = client.predict("ref.pth", "", "", "outputs/batch-up", "wav", 0, 0, "pm", 0.75, 3, 0, 0.25, 0.33,
                             "keep", files, api_name="/convert_batch")
    job_id, state, text = _progress_state(outputs[1])
    assert state == "running", text
    status = _wait_job(client, job_id, timeout_s=300)
    assert status["state"] == "done", status
    folder = root / "outputs" / "batch-up"
    assert sorted(p.name for p in folder.iterdir()) == ["a-flac.wav", "a-wav.wav", "ref-converted.zip"]
    with zipfile.ZipFile(folder / "ref-converted.zip") as archive:
        assert sorted(archive.namelist()) == ["a-flac.wav", "a-wav.wav"]
    assert any("all results in one zip" in line for line in status["log"]), status["log"]
    nothing = client.predict("ref.pth", "", "", "outputs/x", "wav", 0, 0, "pm", 0.75, 3, 0, 0.25, 0.33, "keep", None,
                             api_name="/convert_batch")
    assert "upload the files" in _progress_state(nothing[1])[2]


def test_batch_with_a_bad_upload_says_how_many_failed_and_names_it_as_uploaded(served: tuple[Any, Any, Path]) -> None:
    from gradio_client import handle_file

    from tools.ui_jobs import progress_html

    client, ctx, root = served
    uploads = root.parent / "uploads-bad"
    uploads.mkdir()
    for name in ("one.wav", "two.wav"):
        (uploads / name).write_bytes((root / "inputs" / "b.wav").read_bytes())
    (uploads / "not audio.wav").write_bytes(b"this is not a wav file at all" * 20)
    files = [handle_file(str(uploads / n)) for n in ("one.wav", "not audio.wav", "two.wav")]
    outputs = client.predict("ref.pth", "", "", "outputs/batch-bad", "wav", 0, 0, "pm", 0.75, 3, 0, 0.25, 0.33,
                             "keep", files, api_name="/convert_batch")
    job_id, _state, _text = _progress_state(outputs[1])
    status = _wait_job(client, job_id, timeout_s=300)
    assert status["state"] == "done" and status["outcome"] == "1 of 3 failed", status
    failures = [line for line in status["log"] if "not audio.wav" in line]
    assert failures and not any("/gradio/" in line for line in status["log"]), status["log"]
    bar = progress_html(ctx.jobs.snapshot(job_id))
    assert "done, 1 of 3 failed" in bar, bar


@pytest.mark.slow
def test_training_streams_losses_and_stop_really_stops(served: tuple[Any, Any, Path]) -> None:
    from tools import api
    from tools.ui_train import loss_frame

    client, ctx, root = served
    api.preprocess_dataset(project=ctx.project, experiment="web-train", dataset_dir=root / "inputs", n_processes=1)
    api.extract_features(project=ctx.project, experiment="web-train", f0_method="pm", n_processes=1,
                         device="cpu", cache=ctx.cache)
    outputs = client.predict(*train_form(experiment="web-train", epochs=100, batch_size=1, from_scratch=True,
                                         log_interval=1), api_name="/train")
    job_id, state, _text = _progress_state(outputs[1])
    assert state == "running", outputs[1]
    deadline = time.time() + 300
    status = client.predict(job_id, api_name="/job_status")
    while len(set(loss_frame(ctx, "web-train")["step"])) < 3 and status["state"] == "running":
        assert time.time() < deadline, "no training step was logged in time"
        time.sleep(0.5)
        status = client.predict(job_id, api_name="/job_status")
    assert status["state"] == "running", (status["error"], status["log"][-5:])
    assert math.isfinite(status["last_metrics"]["loss_mel"])
    assert client.predict(job_id, api_name="/stop_job") is True
    status = _wait_job(client, job_id, timeout_s=300)
    assert status["state"] == "cancelled", status
    assert any("training stopped at epoch" in line for line in status["log"])
    experiment = root / "logs" / "web-train"
    assert list(experiment.glob("G_*.pth")) and list(experiment.glob("D_*.pth")), "a stopped run keeps a checkpoint"
    assert (root / "weights" / "web-train.pth").is_file(), "a stopped run exports the voice"
    steps_at_stop = len(loss_frame(ctx, "web-train"))
    logged = sorted(set(loss_frame(ctx, "web-train")["step"]))
    assert logged == list(range(1, len(logged) + 1)), f"the form's log interval (1) logs every step: {logged}"
    time.sleep(2)
    assert len(loss_frame(ctx, "web-train")) == steps_at_stop, "nothing trains after Stop"
    assert not ctx.jobs.running()
    # The checkpoint the stop left behind becomes a small voice through the Model tools tab.
    checkpoint = sorted(experiment.glob("G_*.pth"))[-1].relative_to(root)
    extracted = client.predict(str(checkpoint), "from-ckpt", "auto", "auto", "auto", "made in a test",
                               api_name="/extract_model")
    assert extracted.startswith("voice written to") and "(v2, 40k, with pitch)" in extracted, extracted
    assert "info: made in a test" in client.predict("from-ckpt", api_name="/show_info")
