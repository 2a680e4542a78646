"""The Realtime tab in headless Chromium with a fake microphone (Chromium's test tone), end to end.

Also the tab's pieces without a browser: chunked input of any size, the loopback-only rule.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from helpers_app import (
    CHROMIUM,
    app_in_thread,
    make_project,
    realtime_page,
    shared_test_hubert,
)

TIMEOUT_MS = 180_000


def test_chunks_of_any_size_come_out_as_whole_blocks(reference: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    from infer_pack.cache import ModelCache
    from tools.api.realtime import start_chunk_stream, stream_settings

    root = make_project(tmp_path_factory.mktemp("chunks") / "project", reference,
                        shared_test_hubert(tmp_path_factory, reference))  # fmt: skip
    settings = stream_settings(block_time_s=0.1, extra_time_s=0.2, f0_method="pm")
    stream = start_chunk_stream(project=root, model=root / "weights" / "ref.pth", settings=settings,
                                sample_rate=48000, device="cpu", cache=ModelCache())  # fmt: skip
    rng = np.random.default_rng(0)
    sizes = [1000, 3000, 800, 7000, 2600]  # 14400 samples = 3 blocks of 4800
    outputs = [stream.push((rng.standard_normal((n, 2)) * 3000).astype(np.int16)) for n in sizes]
    assert [o.size for o in outputs] == [0, 0, 4800, 4800, 4800]
    assert stream.stats.blocks == 3 and "3 blocks of 100 ms" in stream.status()


def test_only_loopback_clients_are_served() -> None:
    from tools.ui_realtime import is_loopback

    def request(host: str | None) -> Any:
        return SimpleNamespace(client=SimpleNamespace(host=host))

    assert is_loopback(request("127.0.0.1")) and is_loopback(request("::1")) and is_loopback(request("localhost"))
    assert not is_loopback(request("192.168.1.20")) and not is_loopback(request(None)) and not is_loopback(None)


def test_realtime_remote_flag_serves_other_machines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from tools import web
    from tools.ui_realtime import realtime_allowed

    remote = SimpleNamespace(client=SimpleNamespace(host="192.168.1.20"))
    local = SimpleNamespace(client=SimpleNamespace(host="127.0.0.1"))
    default = web.AppContext.create(tmp_path)
    assert realtime_allowed(default, local) and not realtime_allowed(default, remote)
    assert realtime_allowed(web.AppContext.create(tmp_path, realtime_remote=True), remote)

    # the command-line flag reaches the app's context
    spec = importlib.util.spec_from_file_location("infer_web", Path(__file__).resolve().parents[1] / "infer-web.py")
    assert spec is not None and spec.loader is not None
    infer_web = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(infer_web)
    seen: list[Any] = []
    monkeypatch.setattr(web, "build_app", lambda ctx: seen.append(ctx) or object())
    monkeypatch.setattr(web, "serve", lambda *args, **kwargs: None)
    monkeypatch.setattr(web.JobRunner, "install_log_capture", lambda self: None)  # no handler left behind
    for flags, expected in (([], False), (["--realtime-remote"], True)):
        assert web.launch(infer_web.parse_args(["--root", str(tmp_path), *flags])) == 0
        assert seen[-1].realtime_remote is expected


@pytest.fixture(scope="module")
def served(reference: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = make_project(tmp_path_factory.mktemp("rt-browser") / "project", reference,
                        shared_test_hubert(tmp_path_factory, reference))  # fmt: skip
    with app_in_thread(root) as (url, _ctx):
        yield url


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (Debian: apt-get install chromium)")
def test_microphone_streams_through_the_voice(served: str) -> None:
    with realtime_page(served, TIMEOUT_MS) as page:
        page.locator("#rt-extra input[type=number]").fill("0.3")
        page.locator("#rt-extra input[type=number]").press("Enter")
        page.locator("#rt-mic").get_by_role("button", name="Record").click()
        status = page.locator("#rt-status textarea")
        page.wait_for_function("el => /\\d+ blocks of 250 ms/.test(el.value) || document.querySelector('.toast-body')",
                               arg=status.element_handle(), timeout=TIMEOUT_MS)  # fmt: skip
        assert page.locator(".toast-body").count() == 0, page.locator(".toast-body").all_inner_texts()
        assert "algorithmic latency 560 ms" in status.input_value()
        page.locator("#rt-mic").get_by_role("button", name="Stop").click()

