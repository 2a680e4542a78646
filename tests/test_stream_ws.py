"""The app's streaming API (`/stream/ws`) through a real WebSocket client (the `websockets` package).

The app runs in this process on a loopback port with the tiny reference voice; each stream is
checked against `tools.api.start_chunk_stream` fed with the same chunks (the same engine).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REPO_ROOT, synthetic_voice
from helpers_app import app_in_thread, make_project, shared_test_hubert, write_test_wav

START = {"voice": "ref", "sample_rate": 48000, "f0_method": "pm", "block_time_s": 0.1, "extra_time_s": 0.2,
         "crossfade_time_s": 0.05}  # fmt: skip
BLOCK = 4800  # 0.1 s at 48 kHz
CHUNKS = [1000, 3000, 800, 7000, 2600, 4800, 4000, 5600]  # 28800 samples = 6 blocks


@pytest.fixture(scope="module")
def project(reference: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("stream-ws") / "project", reference,
                        shared_test_hubert(tmp_path_factory, reference))  # fmt: skip


@pytest.fixture(scope="module")
def ws_url(project: Path) -> Iterator[str]:
    with app_in_thread(project) as (url, _ctx):
        yield url.replace("http://", "ws://") + "stream/ws"


def _voice_chunks() -> list[np.ndarray]:
    audio = (synthetic_voice(sum(CHUNKS) / 48000, 48000, f0_hz=190.0) * 20000).astype(np.int16)
    edges = np.cumsum([0, *CHUNKS])
    return [audio[a:b] for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _stream(url: str, start: dict[str, Any], chunks: list[bytes], expected_bytes: int,
            headers: dict[str, str] | None = None) -> tuple[dict[str, Any], bytes, dict[str, Any]]:  # fmt: skip
    """(ready line, the converted bytes, the stats line) of one stream."""
    from websockets.sync.client import connect

    with connect(url, additional_headers=headers) as ws:
        ws.send(json.dumps(start))
        ready = json.loads(ws.recv(timeout=120))
        assert ready.get("ready") is True, ready
        received = b""
        for chunk in chunks:
            ws.send(chunk)
        while len(received) < expected_bytes:
            message = ws.recv(timeout=120)
            assert isinstance(message, bytes), message
            received += message
        ws.send(json.dumps({"stats": True}))
        stats = json.loads(ws.recv(timeout=60))["stats"]
    return ready, received, stats


def _refusal(url: str, start: Any, headers: dict[str, str] | None = None, after_ready: bytes | None = None) -> tuple[str, int]:
    """(the error line, the close code) of a stream the server refuses or ends."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with connect(url, additional_headers=headers, max_size=None) as ws:
        ws.send(start if isinstance(start, bytes | str) else json.dumps(start))
        if after_ready is not None:
            assert json.loads(ws.recv(timeout=120)).get("ready") is True
            ws.send(after_ready)
        answer = json.loads(ws.recv(timeout=120))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd is not None
    return str(answer["error"]), closed.value.rcvd.code


def _reference_stream(project: Path, settings: dict[str, Any], chunks: list[np.ndarray], pcm16: bool) -> np.ndarray:
    from infer_pack.cache import ModelCache
    from tools.api.realtime import start_chunk_stream, stream_settings

    stream = start_chunk_stream(project=project, model=project / "weights" / "ref.pth", settings=stream_settings(**settings),
                                sample_rate=48000, device="cpu", cache=ModelCache())  # fmt: skip
    push = stream.push_pcm16 if pcm16 else stream.push
    return np.concatenate([push(chunk) for chunk in chunks])


def test_stream_gives_what_the_engine_gives_for_the_same_chunks(ws_url: str, project: Path) -> None:
    chunks = _voice_chunks()
    settings = {k: v for k, v in START.items() if k not in ("voice", "sample_rate")}

    ready, received, stats = _stream(ws_url, START, [c.tobytes() for c in chunks], 6 * BLOCK * 2)
    assert ready["block_samples"] == BLOCK and ready["sample_rate"] == 48000 and ready["format"] == "pcm_s16le"
    assert ready["latency_s"] > 0.1 and ready["delay_samples"] > 0
    assert stats["blocks"] == 6 and stats["block_ms"] == 100.0 and stats["median_compute_ms"] > 0
    served = np.frombuffer(received, dtype="<i2")
    expected = _reference_stream(project, settings, chunks, pcm16=True)
    assert served.shape == expected.shape == (6 * BLOCK,)
    assert np.abs(expected).max() > 500  # a voice came out, not silence
    assert np.abs(served.astype(np.int32) - expected).max() <= 1

    # float samples in two channels: the same voice on both channels
    stereo = [np.repeat((c.astype(np.float32) / 32767.0)[:, None], 2, axis=1) for c in chunks]
    start = {**START, "format": "pcm_f32le", "channels": 2}
    _, received, _ = _stream(ws_url, start, [c.astype("<f4").tobytes() for c in stereo], 6 * BLOCK * 8)
    frames = np.frombuffer(received, dtype="<f4").reshape(-1, 2)
    np.testing.assert_array_equal(frames[:, 0], frames[:, 1])
    mono = _reference_stream(project, settings, [c.mean(axis=1) for c in stereo], pcm16=False)
    np.testing.assert_allclose(frames[:, 0], mono, atol=1e-5)


@pytest.mark.parametrize(
    ("start", "words", "code"),
    [
        ({**START, "voice": "nosuch"}, "not found", 1008),
        ({**START, "voice": "../../etc/passwd"}, "outside the project", 1008),
        ({**START, "block_time_s": 99}, "block_time_s", 1008),
        ({**START, "f0_method": "crepe"}, "crepe", 1008),
        ({**START, "format": "mp3"}, "pcm_s16le", 1008),
        ({**START, "colour": "blue"}, "unknown field(s) colour", 1008),
        ("not json", "JSON", 1008),
        (b"\x00\x01", "start message", 1008),
    ],
)
def test_bad_start_messages_get_an_error_and_a_close_code(ws_url: str, start: Any, words: str, code: int) -> None:
    error, closed_with = _refusal(ws_url, start)
    assert words in error and closed_with == code


def test_oversized_or_broken_audio_ends_the_stream(ws_url: str) -> None:
    error, code = _refusal(ws_url, START, after_ready=np.zeros(48000 * 10 + 1, np.int16).tobytes())
    assert code == 1009 and "at most 10 s" in error
    error, code = _refusal(ws_url, START, after_ready=b"\x00\x01\x02")
    assert code == 1008 and "whole frames of 2 bytes" in error


def test_a_login_app_wants_its_credentials(project: Path) -> None:
    def basic(user: str, password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    chunk = [np.zeros(BLOCK, np.int16).tobytes()]
    with app_in_thread(project, auth=("alice", "s3cret")) as (url, _ctx):
        ws_url = url.replace("http://", "ws://") + "stream/ws"
        error, code = _refusal(ws_url, START)
        assert code == 1008 and "requires a login" in error
        error, code = _refusal(ws_url, START, headers=basic("alice", "wrong"))
        assert code == 1008 and "wrong user or password" in error
        error, code = _refusal(ws_url, {**START, "user": "bob", "password": "s3cret"})
        assert code == 1008 and "wrong user or password" in error
        ready, received, _ = _stream(ws_url, START, chunk, BLOCK * 2, headers=basic("alice", "s3cret"))
        assert ready["block_samples"] == BLOCK and len(received) == BLOCK * 2
        ready, _, _ = _stream(ws_url, {**START, "user": "alice", "password": "s3cret"}, chunk, BLOCK * 2)
        assert ready["ready"] is True


def _test_client_app(tmp_path: Path, realtime_remote: bool, max_streams: int = 4) -> Any:
    """The stream route alone in a Starlette app; its test client connects from host 'testclient' (not loopback)."""
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from tools.stream_ws import StreamEndpoint
    from tools.web import AppContext

    ctx = AppContext.create(tmp_path, realtime_remote=realtime_remote)
    return TestClient(Starlette(routes=[StreamEndpoint(ctx, None, max_streams=max_streams).route()]))


def _test_client_answer(client: Any, start: dict[str, Any]) -> tuple[str, int]:
    from starlette.websockets import WebSocketDisconnect

    with client.websocket_connect("/stream/ws") as ws:
        ws.send_text(json.dumps(start))
        answer = ws.receive_json()
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    return str(answer["error"]), closed.value.code


def test_other_machines_are_refused_without_realtime_remote(tmp_path: Path) -> None:
    error, code = _test_client_answer(_test_client_app(tmp_path, realtime_remote=False), START)
    assert code == 1008 and "--realtime-remote" in error
    # with the flag the host passes; this project has no voice, so the next check answers
    error, code = _test_client_answer(_test_client_app(tmp_path, realtime_remote=True), START)
    assert code == 1008 and "voice model" in error and "not found" in error


def test_streams_over_the_limit_are_told_to_retry(tmp_path: Path) -> None:
    error, code = _test_client_answer(_test_client_app(tmp_path, realtime_remote=True, max_streams=0), START)
    assert code == 1013 and "0 streams are open already" in error
    # an ended stream gives its place back: one place serves two streams one after the other
    one_place = _test_client_app(tmp_path, realtime_remote=True, max_streams=1)
    for _ in range(2):
        error, code = _test_client_answer(one_place, START)
        assert code == 1008 and "not found" in error


def test_a_converting_stream_does_not_hold_up_other_connections(ws_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """While one stream's conversion is stuck, another connection is answered (the conversion runs off the loop)."""
    import threading

    from websockets.sync.client import connect

    from tools.api.stream_protocol import PcmStream

    release, entered = threading.Event(), threading.Event()

    def stuck_push(self: PcmStream, data: bytes) -> bytes:
        entered.set()
        release.wait(timeout=120)
        return data

    monkeypatch.setattr(PcmStream, "push", stuck_push)
    with connect(ws_url) as ws:
        ws.send(json.dumps(START))
        assert json.loads(ws.recv(timeout=120))["ready"] is True
        ws.send(b"\x01\x00" * BLOCK)
        assert entered.wait(timeout=60)
        try:
            error, code = _refusal(ws_url, {**START, "voice": "nosuch"})
        finally:
            release.set()
        assert code == 1008 and "not found" in error
        assert ws.recv(timeout=60) == b"\x01\x00" * BLOCK


def test_the_python_client_converts_a_file(ws_url: str, tmp_path: Path) -> None:
    import soundfile as sf

    source = write_test_wav(tmp_path / "in.wav", seconds=1.0, sample_rate=16000)
    target = tmp_path / "out" / "converted.wav"
    done = subprocess.run(
        [sys.executable, "-m", "tools.stream_client", "--url", ws_url, "--voice", "ref", "--input-file", str(source),
         "--output-file", str(target), "--f0-method", "pm", "--block-time", "0.1", "--extra-time", "0.2",
         "--as-fast-as-possible"],
        cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    audio, rate = sf.read(str(target), dtype="float32")
    assert rate == 16000 and audio.shape == (16000,) and float(np.sqrt(np.mean(audio**2))) > 0.01
    assert "blocks of 100 ms" in done.stdout

    refused = subprocess.run(
        [sys.executable, "-m", "tools.stream_client", "--url", ws_url, "--voice", "nosuch", "--input-file", str(source),
         "--output-file", str(tmp_path / "no.wav"), "--f0-method", "pm"],
        cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 1 and "not found" in refused.stderr and not (tmp_path / "no.wav").exists()
