"""Helpers for the app tests: a project with a voice, the app on a free loopback port, headless Chromium."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from conftest import REPO_ROOT, synthetic_voice

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REFERENCE_VOICE = "ref_v2_40k_f0.pth"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_test_wav(path: Path, seconds: float = 1.5, sample_rate: int = 16000, f0_hz: float = 180.0) -> Path:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), synthetic_voice(seconds, sample_rate, f0_hz=f0_hz), sample_rate, subtype="PCM_16")
    return path


def make_project(root: Path, reference: Path, hubert: Path | None) -> Path:
    """A project folder with the reference v2/40k voice in weights/ (a link, not a copy) and a HuBERT."""
    (root / "weights").mkdir(parents=True, exist_ok=True)
    (root / "logs").mkdir(exist_ok=True)
    voice = root / "weights" / "ref.pth"
    if not voice.exists():
        voice.symlink_to(reference / REFERENCE_VOICE)
    if hubert is not None and not (root / "hubert_base.pt").exists():
        (root / "hubert_base.pt").symlink_to(hubert)
    write_test_wav(root / "inputs" / "a.wav")
    write_test_wav(root / "inputs" / "b.wav", seconds=1.0, f0_hz=220.0)
    return root


def wait_http(url: str, timeout_s: float = 60.0, auth_ok: bool = True) -> None:
    """Wait until `url` answers (any HTTP status counts once `auth_ok`)."""
    deadline = time.time() + timeout_s
    last: Exception | None = None
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError as exc:
            if auth_ok:
                return
            last = exc
        except OSError as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s: {last}")


@contextlib.contextmanager
def chromium_browser(extra_args: tuple[str, ...] = ()) -> Iterator[Any]:
    """Headless Chromium through Playwright (skips the test when Playwright is not installed)."""
    import pytest

    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *extra_args])
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def app_page(browser: Any, url: str, timeout_ms: int) -> Iterator[Any]:
    """A fresh browser context with the app loaded (its Convert button drawn)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        page.set_default_timeout(timeout_ms)
        page.goto(url)
        page.wait_for_selector("#convert-run")
        yield page
    finally:
        context.close()


@contextlib.contextmanager
def app_in_thread(root: Path, auth: tuple[str, str] | None = None, max_upload_mb: int = 50) -> Iterator[tuple[str, Any]]:
    """Build the app for `root` and serve it on a free loopback port; yields (url, AppContext)."""
    from tools.web import AppContext, ServerSettings, build_app, serve

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    ctx = AppContext.create(root)
    ctx.jobs.install_log_capture()
    app = build_app(ctx)
    port = free_port()
    serve(app, ServerSettings(port=port, auth=auth, max_upload_mb=max_upload_mb), ctx.served_dirs(), block=False,
          ctx=ctx)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_http(url)
        yield url, ctx
    finally:
        ctx.close()
        ctx.jobs.remove_log_capture()
        app.close()


@contextlib.contextmanager
def app_in_subprocess(root: Path, *extra: str, timeout_s: float = 90.0) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Run `infer-web.py --root ROOT --port P EXTRA...`; yields (url, process)."""
    port = free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "infer-web.py"), "--root", str(root), "--port", str(port), *extra],
        cwd=str(REPO_ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        try:
            wait_http(url, timeout_s)
        except TimeoutError:
            proc.kill()
            output = proc.communicate(timeout=10)[0]
            raise TimeoutError(f"app did not start; its output:\n{output[-3000:]}") from None
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def audio_rms(path: str | Path) -> tuple[float, int, int]:
    """(rms, sample rate, samples) of an audio file."""
    import soundfile as sf

    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return float(np.sqrt(np.mean(data**2))), int(rate), int(data.shape[0])


def build_fairseq_hubert(
    template: Path, target: Path, *, embed_dim: int = 768, layers: int = 2, ffn_dim: int = 64, heads: int = 12,
    final_dim: int = 256, seed: int = 7,
) -> Path:
    """A random-weight HuBERT in fairseq's checkpoint layout, wide enough for v2 voices (768) but light.

    The top level (cfg groups, task_state with its pickled fairseq Dictionary) is copied from the
    reference tiny checkpoint, so it loads through the same code path as the real hubert_base.pt; only
    the transformer's sizes change (conv stack kept at the template's channels).
    """
    import sys as _sys
    import types

    import torch

    stub_names = ["fairseq", "fairseq.data", "fairseq.data.dictionary"]
    saved = {name: _sys.modules.get(name) for name in stub_names}

    class Dictionary:  # stands in for fairseq's class while unpickling and re-pickling the template
        def __setstate__(self, state: dict[str, Any]) -> None:
            self.__dict__.update(state)

    Dictionary.__module__ = "fairseq.data.dictionary"
    Dictionary.__qualname__ = "Dictionary"
    for name in stub_names:
        _sys.modules[name] = types.ModuleType(name)
    _sys.modules["fairseq.data.dictionary"].Dictionary = Dictionary  # type: ignore[attr-defined]
    try:
        ckpt = torch.load(str(template), map_location="cpu", weights_only=False)
        model_cfg = ckpt["cfg"]["model"]
        conv = int(ckpt["model"]["layer_norm.weight"].shape[0])
        kernel, groups = int(model_cfg["conv_pos"]), int(model_cfg["conv_pos_groups"])
        n_labels = int(ckpt["model"]["label_embs_concat"].shape[0])
        model_cfg.update(
            encoder_embed_dim=embed_dim, encoder_layers=layers, encoder_ffn_embed_dim=ffn_dim,
            encoder_attention_heads=heads, final_dim=final_dim,
        )
        gen = torch.Generator().manual_seed(seed)

        def rand(*shape: int, scale: float = 0.05) -> torch.Tensor:
            return (torch.randn(*shape, generator=gen) * scale).half()

        def ones(n: int) -> torch.Tensor:
            return torch.ones(n, dtype=torch.float16)

        def zeros(n: int) -> torch.Tensor:
            return torch.zeros(n, dtype=torch.float16)

        e, f = embed_dim, ffn_dim
        state: dict[str, torch.Tensor] = {"mask_emb": rand(e), "label_embs_concat": rand(n_labels, final_dim)}
        for key, value in ckpt["model"].items():
            if key.startswith("feature_extractor."):
                state[key] = value
        state |= {
            "post_extract_proj.weight": rand(e, conv, scale=0.2), "post_extract_proj.bias": zeros(e),
            "encoder.pos_conv.0.bias": zeros(e), "encoder.pos_conv.0.weight_g": ones(kernel).view(1, 1, kernel),
            "encoder.pos_conv.0.weight_v": rand(e, e // groups, kernel),
        }
        for i in range(layers):
            p = f"encoder.layers.{i}."
            for proj in ("k", "v", "q", "out"):
                state[f"{p}self_attn.{proj}_proj.weight"] = rand(e, e, scale=0.03)
                state[f"{p}self_attn.{proj}_proj.bias"] = zeros(e)
            state |= {
                f"{p}self_attn_layer_norm.weight": ones(e), f"{p}self_attn_layer_norm.bias": zeros(e),
                f"{p}fc1.weight": rand(f, e), f"{p}fc1.bias": zeros(f),
                f"{p}fc2.weight": rand(e, f), f"{p}fc2.bias": zeros(e),
                f"{p}final_layer_norm.weight": ones(e), f"{p}final_layer_norm.bias": zeros(e),
            }
        state |= {
            "encoder.layer_norm.weight": ones(e), "encoder.layer_norm.bias": zeros(e),
            "layer_norm.weight": ckpt["model"]["layer_norm.weight"], "layer_norm.bias": ckpt["model"]["layer_norm.bias"],
            "final_proj.weight": rand(final_dim, e), "final_proj.bias": zeros(final_dim),
        }
        ckpt["model"] = state
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save(ckpt, str(target))
    finally:
        for name, module in saved.items():
            if module is None:
                _sys.modules.pop(name, None)
            else:
                _sys.modules[name] = module
    return target


def shared_test_hubert(tmp_path_factory: Any, reference: Path) -> Path:
    """The random v2-width HuBERT, built once per test session (every app test module reuses the file)."""
    target = Path(tmp_path_factory.getbasetemp()) / "shared-app" / "hubert768.pt"
    if not target.is_file():
        build_fairseq_hubert(reference / "tiny_hubert.pt", target)
    return target


FAKE_MICROPHONE_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


@contextlib.contextmanager
def realtime_page(url: str, timeout_ms: int) -> Iterator[Any]:
    """Headless Chromium with its fake microphone (a test tone) on the app's Realtime tab, voice "ref" chosen."""
    import pytest

    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *FAKE_MICROPHONE_ARGS])
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000}, permissions=["microphone"])
            page = context.new_page()
            page.set_default_timeout(timeout_ms)
            page.goto(url)
            page.get_by_role("tab", name="Realtime").click()
            page.wait_for_timeout(1000)  # the tab refreshes its voice list when selected
            page.locator("#rt-voice input").click()
            page.get_by_role("option", name="ref").click()
            yield page
        finally:
            browser.close()


def click_when_uploaded(page: Any, button: str, attempts: int = 60) -> None:
    """Click `button`; while Gradio answers that an upload is still running, close its notice and retry."""
    for _ in range(attempts):
        page.locator(button).click()
        page.wait_for_timeout(1000)
        pending = page.locator(".toast-body", has_text="finish uploading")
        if pending.count() == 0:
            return
        page.locator(".toast-body .toast-close").first.click()
        page.wait_for_timeout(500)
    raise AssertionError("the upload never finished")
