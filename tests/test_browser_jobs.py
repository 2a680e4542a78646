"""Headless Chromium: a running job stays visible and stoppable (second click, page reload, the running-jobs list),
and a refused start shows its whole message.

The dataset step is replaced by a slow stand-in (the app runs in this process), so the job runs as long as the
test needs without loading the machine; everything else (buttons, job runner, panels) is the real app.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers_app import (
    CHROMIUM,
    app_in_thread,
    make_project,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (Debian: apt-get install chromium)"),
]
TIMEOUT_MS = 60_000
SLOW_STEP = "slow stand-in step started"


@pytest.fixture(scope="module")
def served(reference: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any, Path]]:
    root = make_project(tmp_path_factory.mktemp("browser-jobs") / "project", reference, hubert=None)
    with app_in_thread(root) as (url, ctx):
        yield url, ctx, root



@pytest.fixture
def slow_preprocess(monkeypatch: pytest.MonkeyPatch, served: tuple[str, Any, Path]) -> Iterator[None]:
    """Replace the dataset step with one that runs until stopped (checking the cancel token like the real one)."""
    from infer_pack.progress import track
    from tools import api

    def slow(**kwargs: Any) -> None:
        logging.getLogger("tests.slow").info(SLOW_STEP)
        for _ in track(range(100_000), 100_000, "slow", kwargs["progress"], kwargs["cancel"]):
            time.sleep(0.02)

    monkeypatch.setattr(api, "preprocess_dataset", slow)
    served[1].set_isolation(False)  # the replacement lives in this process only
    yield
    served[1].jobs.cancel_all()
    served[1].set_isolation(True)


def _fill(page: Any, elem_id: str, value: str) -> None:
    page.locator(f"{elem_id} input, {elem_id} textarea").first.fill(value)


def _bar(page: Any) -> Any:
    return page.locator("#train-panel .rvc-progress")


def _log(page: Any) -> str:
    return str(page.locator("#train-panel .rvc-log textarea").input_value())


def _start_slow_step(page: Any, experiment: str) -> str:
    page.get_by_role("tab", name="Train").click()
    _fill(page, "#train-experiment", experiment)
    _fill(page, "#train-dataset", "inputs")
    page.locator("#train-preprocess").click()
    page.wait_for_selector('#train-panel .rvc-progress[data-state="running"]')
    page.wait_for_function(
        "text => document.querySelector('#train-panel .rvc-log textarea').value.includes(text)", arg=SLOW_STEP
    )
    return str(_bar(page).get_attribute("data-job"))


def _wait_stopped(page: Any, ctx: Any, job_id: str) -> None:
    page.wait_for_selector(f'#train-panel .rvc-progress[data-job="{job_id}"][data-state="cancelled"]')
    assert ctx.jobs.snapshot(job_id).state == "cancelled"
    assert not ctx.jobs.running()


def test_second_click_keeps_following_the_running_job(
    page: Any, served: tuple[str, Any, Path], slow_preprocess: None, tmp_path: Path,
) -> None:
    _url, ctx, _root = served
    job_id = _start_slow_step(page, "twice")
    page.locator("#train-preprocess").click()  # the experiment is busy: refused
    notice = page.locator(".toast-body", has_text="busy")
    notice.wait_for()
    page.wait_for_function(
        "() => document.querySelector('#train-panel .rvc-log textarea').value.includes('not started')"
    )
    page.screenshot(path=str(tmp_path / "second-click.png"), full_page=True)
    assert _bar(page).get_attribute("data-job") == job_id
    assert _bar(page).get_attribute("data-state") == "running"
    log = _log(page)
    assert SLOW_STEP in log, "the running job's log must stay"
    assert "is busy with a running 'preprocess' step" in log
    assert len(ctx.jobs.running()) == 1
    from gradio_client import Client

    listed = Client(served[0], verbose=False).predict(api_name="/running_jobs")
    assert [(j["job_id"], j["experiment"], j["state"]) for j in listed] == [(job_id, "twice", "running")]
    page.locator("#train-panel .rvc-stop").click()  # Stop still targets the running job
    _wait_stopped(page, ctx, job_id)


def test_a_reloaded_page_shows_and_stops_the_running_job(
    page: Any, served: tuple[str, Any, Path], slow_preprocess: None, tmp_path: Path,
) -> None:
    from tools.api.dataset import preprocess_dataset  # the real step (the fixture replaced the API's name)

    _url, ctx, root = served
    preprocess_dataset(project=root, experiment="reloaded", dataset_dir=root / "inputs")  # its health report exists
    page.get_by_role("tab", name="Train").click()
    _fill(page, "#train-log-interval", "25")
    page.locator("#train-from-scratch input").check()
    job_id = _start_slow_step(page, "reloaded")
    page.reload()
    page.wait_for_selector("#convert-run")
    # The running-jobs list (outside the tabs) names the job on any page load.
    heading = page.locator("#running-jobs").get_by_text("Running jobs (1)")
    heading.wait_for()
    page.get_by_role("tab", name="Train").click()
    page.wait_for_selector(f'#train-panel .rvc-progress[data-job="{job_id}"][data-state="running"]')
    experiment = page.locator("#train-experiment input, #train-experiment textarea").first
    assert experiment.input_value() == "reloaded", "the form shows the running job's experiment"
    # ... and the rest of the form it was started with, not the defaults
    assert page.locator("#train-dataset input, #train-dataset textarea").first.input_value() == "inputs"
    assert page.locator("#train-log-interval input").first.input_value() == "25"
    assert page.locator("#train-from-scratch input").is_checked()
    # The note on pretrained files is the one for that form (from scratch), and the health report is shown.
    page.wait_for_function("() => document.querySelector('#train-health textarea').value.includes('training clips')")
    note = page.locator("#train-pretrained-note").inner_text()
    assert "f0G40k" not in note and "From scratch" not in note, note
    page.wait_for_function(
        "text => document.querySelector('#train-panel .rvc-log textarea').value.includes(text)", arg=SLOW_STEP
    )
    heading.click()
    page.wait_for_selector(f'#running-jobs-table tr[data-job="{job_id}"]')
    page.screenshot(path=str(tmp_path / "reloaded.png"), full_page=True)
    page.locator("#running-jobs-stop").click()  # the list's Stop button (its choice defaults to the newest job)
    _wait_stopped(page, ctx, job_id)
    page.wait_for_selector('#running-jobs-table .rvc-running[data-count="0"]', timeout=10_000)


def test_a_refused_start_shows_the_whole_message(page: Any, served: tuple[str, Any, Path], tmp_path: Path) -> None:
    page.get_by_role("tab", name="Train").click()
    _fill(page, "#train-experiment", "outside")
    _fill(page, "#train-dataset", "/etc")
    page.locator("#train-preprocess").click()
    page.wait_for_selector('#train-panel .rvc-progress[data-state="failed"]')
    page.wait_for_function("() => document.querySelector('#train-panel .rvc-log textarea').value.length > 0")
    page.screenshot(path=str(tmp_path / "refused.png"), full_page=True)
    log = _log(page)
    # The message's end (how to allow the folder) is there, in the log and in a notice.
    assert "outside the project folder" in log and "--allow-path" in log, log
    toast = page.locator(".toast-body", has_text="outside the project folder")
    toast.wait_for()
    assert "--allow-path" in toast.inner_text()
    white_space = _bar(page).locator(".text").evaluate("el => getComputedStyle(el).whiteSpace")
    assert white_space == "normal", "a failed step's message wraps instead of being cut"


def test_a_single_voice_is_picked_on_page_load(page: Any, served: tuple[str, Any, Path]) -> None:
    """A project with one voice needs no choosing before the first conversion."""
    _url, _ctx, root = served
    assert [p.name for p in (root / "weights").glob("*.pth")] == ["ref.pth"]
    page.wait_for_function("() => document.querySelector('#convert-voice input').value === 'ref'")
