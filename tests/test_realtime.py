"""Streaming conversion without sound hardware: a signal is fed block by block, as a sound card would.

Voice: a tiny random-weight v2 synthesiser (hop 320 at 32 kHz, so every length is RVC's) and the
tiny reference HuBERT with a fixed random projection (see tests/test_pipeline.py), so the tests
check the stream's mechanics (sizes, rates, alignment, seams, bounded state), not a voice's sound.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import reference_file, synthetic_voice

from infer_pack.checkpoint import VoiceModel, voice_from_state_dict
from infer_pack.errors import UserInputError
from infer_pack.models import Synthesizer
from infer_pack.pipeline import ConversionParams, VoiceConverter, Windows
from infer_pack.realtime import (
    StreamGeometry,
    StreamingConverter,
    StreamSettings,
    convert_stream,
    fade_in_window,
    sola_offset,
    stream_delay_frames,
)

TINY_CONFIG: list[Any] = [33, 8, 8, 16, 32, 2, 1, 3, 0, "1", [3], [[1, 3, 5]], [10, 8, 4], 32, [20, 16, 8], 4, 8, 32000]


def tiny_voice() -> VoiceModel:
    torch.manual_seed(7)
    net = Synthesizer(*TINY_CONFIG, content_dim=768, use_f0=True, posterior=False)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".post." in name:
                p.normal_(0, 0.05)  # a flow that is not the identity
    return voice_from_state_dict(net.state_dict(), TINY_CONFIG, True, "tiny", "v2", "32k")


class DeterministicSynth:
    """The offline converter's synthesiser with both noise sources off (for comparisons)."""

    def __init__(self, net: Synthesizer) -> None:
        self.net = net

    def infer(self, *args: Any, **kwargs: Any) -> Any:
        return self.net.infer(*args, noise_scale=0.0, excitation_noise=False, **kwargs)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    """Blocks are small: on a shared 2-core machine torch's second thread mostly waits (10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def converter(reference: Path) -> VoiceConverter:
    from test_pipeline import ProjectedEncoder

    encoder = ProjectedEncoder(reference_file(reference, "tiny_hubert.pt"), 768)
    return VoiceConverter(tiny_voice(), encoder, windows=Windows(x_pad=1, x_query=6, x_center=38, x_max=41))


def tone(seconds: float, rate: int = 16000, f0_hz: float = 150.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.2 * sum(np.sin(2 * np.pi * k * f0_hz * t) / k for k in range(1, 9))).astype(np.float32)


def test_geometry_and_latency_of_rvc_defaults() -> None:
    g = StreamGeometry.of(StreamSettings())
    assert (g.block, g.crossfade, g.fade, g.search, g.extra) == (25, 5, 4, 1, 250)
    assert g.window == 281 and g.returned == 30
    assert g.algorithmic_latency_s == pytest.approx(0.56)
    assert StreamGeometry.of(StreamSettings(block_time_s=0.1, crossfade_time_s=0.04)).algorithmic_latency_s == pytest.approx(0.25)


def test_settings_errors_name_the_value(converter: VoiceConverter) -> None:
    with pytest.raises(UserInputError, match="f0 method"):
        StreamSettings(f0_method="harvest").validated()
    with pytest.raises(UserInputError, match="block_time_s"):
        StreamSettings(block_time_s=5.0).validated()
    with pytest.raises(UserInputError, match="crossfade"):
        StreamSettings(block_time_s=0.05, crossfade_time_s=0.1).validated()
    with pytest.raises(UserInputError, match="sample rate"):
        StreamingConverter(converter, StreamSettings(f0_method="pm"), input_rate=44101)
    stream = StreamingConverter(converter, StreamSettings(f0_method="pm", extra_time_s=0.3))
    with pytest.raises(UserInputError, match="4000 samples"):
        stream.process(np.zeros(100, np.float32))


def test_sola_finds_the_shift_and_fades_sum_to_one() -> None:
    rng = np.random.default_rng(0)
    signal = rng.standard_normal(400).astype(np.float32)
    assert sola_offset(signal[:140], signal[37:77]) == 37
    fade = fade_in_window(64)
    assert fade[0] == 0.0 and fade[-1] == pytest.approx(1.0)
    assert np.allclose(fade + (1.0 - fade), 1.0) and np.all(np.diff(fade) >= 0)


@pytest.mark.parametrize(("input_rate", "output_rate"), [(48000, 48000), (44100, 24000), (16000, 32000)])
def test_block_sizes_and_rates(converter: VoiceConverter, input_rate: int, output_rate: int) -> None:
    settings = StreamSettings(block_time_s=0.1, crossfade_time_s=0.04, extra_time_s=0.3, f0_method="pm")
    stream = StreamingConverter(converter, settings, input_rate=input_rate, output_rate=output_rate)
    assert stream.block_size == input_rate // 10 and stream.output_block_size == output_rate // 10
    audio = synthetic_voice(0.75, input_rate, seed=2)
    run = convert_stream(stream, audio)
    assert run.sample_rate == output_rate
    assert run.audio.shape == (round(0.75 * output_rate),) and run.audio.dtype == np.float32
    assert np.isfinite(run.audio).all() and np.abs(run.audio).max() > 1e-3
    assert run.blocks == len(run.block_seconds) >= 8


def test_no_jumps_at_block_seams(converter: VoiceConverter) -> None:
    """Sample-to-sample steps at the seams are no larger than the steps inside the blocks."""
    settings = StreamSettings(block_time_s=0.1, crossfade_time_s=0.05, extra_time_s=0.5, f0_method="pm")
    stream = StreamingConverter(converter, settings, input_rate=16000, output_rate=32000)
    pieces = [stream.process(block) for block in np.split(synthetic_voice(2.0, 16000, seed=5), 20)]
    out = np.concatenate(pieces)
    steps = np.abs(np.diff(out))
    seams = np.arange(1, len(pieces)) * stream.output_block_size - 1  # step from a block's last sample
    inside = np.delete(steps, seams)
    assert steps[seams].max() <= 1.5 * np.percentile(inside, 99.9)
    assert steps.max() <= 1.5 * inside.max()


def test_stream_matches_offline_conversion_away_from_seams(converter: VoiceConverter) -> None:
    """Deterministic synthesis, the same input: the stream is the offline result within 25 % RMS.

    The residue comes from context only: the stream's encoders see no future and `extra_time_s`
    of past, pm sees the newest 60 ms, and the offline input is high-passed; measured 0.09-0.12
    (correlation 0.96) on this tone with the reference voice. A frame (10 ms) of misalignment or
    pitch cache slip gives an error near 1.4 and a correlation near 0.
    """
    offline = VoiceConverter(converter.voice, converter.encoder, windows=converter.windows,
                             synthesizer=DeterministicSynth(converter.synthesizer))  # type: ignore[arg-type]  # fmt: skip
    audio = tone(2.0)
    expected, rate = offline.convert(audio, ConversionParams(f0_method="pm", index_rate=0.0, rms_mix_rate=1.0,
                                                             protect=0.5))  # fmt: skip
    settings = StreamSettings(block_time_s=0.25, extra_time_s=1.0, f0_method="pm", rms_mix_rate=1.0,
                              deterministic=True, decoder_context_frames=None)  # fmt: skip
    stream = StreamingConverter(converter, settings, input_rate=16000, output_rate=rate)
    run = convert_stream(stream, audio)
    assert run.delay_samples == stream_delay_frames(stream.geometry) * rate // 100
    segment = rate // 4
    errors, correlations = [], []
    for start in range(rate // 2, expected.shape[0] - segment, segment):  # after the first 0.5 s
        a, b = run.audio[start : start + segment], expected[start : start + segment]
        errors.append(float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b**2))))
        correlations.append(float(np.corrcoef(a, b)[0, 1]))
    assert max(errors) < 0.25, errors
    assert min(correlations) > 0.9, correlations
    assert StreamingConverter(converter, settings, input_rate=16000, output_rate=rate).process(audio[:4000]).size


def test_silence_gate_zeroes_quiet_frames(converter: VoiceConverter) -> None:
    settings = StreamSettings(block_time_s=0.1, extra_time_s=0.2, f0_method="pm", silence_threshold_db=-40.0)
    stream = StreamingConverter(converter, settings, input_rate=16000)
    quiet = np.full(1600, 1e-3, np.float32)  # -60 dB
    assert not stream._gate(quiet).any()
    loud = tone(0.1)
    assert np.array_equal(stream._gate(loud)[640:], loud[640:])


def test_formant_and_pitch_settings_keep_block_sizes(converter: VoiceConverter) -> None:
    audio = tone(0.8)
    outputs = {}
    for formant in (0.0, 3.0):
        settings = StreamSettings(block_time_s=0.2, extra_time_s=0.3, f0_method="pm", pitch_semitones=2.0,
                                  formant_semitones=formant, deterministic=True)  # fmt: skip
        stream = StreamingConverter(converter, settings, input_rate=16000, output_rate=32000)
        outputs[formant] = convert_stream(stream, audio).audio
        assert outputs[formant].shape == (25600,) and np.isfinite(outputs[formant]).all()
    assert not np.allclose(outputs[0.0], outputs[3.0])


def _simulate(converter: VoiceConverter, seconds_of_stream: float, block_time_s: float) -> tuple[list[int], list[float], int]:
    """(state bytes per block, seconds per block, traced memory growth in bytes) over a stream.

    Memory is traced over the first 60 blocks after a warm-up (tracing slows every allocation, so
    the per-block times of the whole stream are taken without it).
    """
    settings = StreamSettings(block_time_s=block_time_s, extra_time_s=0.2, f0_method="pm")
    stream = StreamingConverter(converter, settings, input_rate=16000)
    source = synthetic_voice(10.0, 16000, seed=9)
    blocks = round(seconds_of_stream / block_time_s)

    def block(number: int) -> np.ndarray:
        start = number * stream.block_size % (source.shape[0] - stream.block_size)
        return source[start : start + stream.block_size]

    for number in range(10):
        stream.process(block(number))
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for number in range(10, 70):
            stream.process(block(number))
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    states, seconds = [], []
    for number in range(70, blocks):
        began = time.perf_counter()
        stream.process(block(number))
        seconds.append(time.perf_counter() - began)
        states.append(stream.state_nbytes())
    return states, seconds, after - before


def _assert_flat(states: list[int], seconds: list[float], growth: int) -> None:
    assert len(set(states)) == 1
    assert growth < 200_000, f"traced memory grew by {growth} bytes over 60 blocks"
    tenth = len(seconds) // 10
    early, late = np.median(seconds[:tenth]), np.median(seconds[-tenth:])
    assert late < 1.5 * early + 0.01, (early, late)


def test_state_and_block_time_stay_flat(converter: VoiceConverter) -> None:
    """A 20 s stream of 0.1 s blocks: fixed state size, no memory growth, no per-block slowdown."""
    _assert_flat(*_simulate(converter, 20.0, 0.1))


@pytest.mark.slow
def test_thirty_minute_stream_stays_flat(converter: VoiceConverter) -> None:
    """30 minutes of stream in 0.25 s blocks (7200 blocks; about 10 ms each on an idle 2-core CPU)."""
    _assert_flat(*_simulate(converter, 30 * 60.0, 0.25))


# -- the command line (subprocess) and the sound card callback -------------------------------------


@pytest.fixture(scope="module")
def voice_project(reference: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpers_app import make_project, shared_test_hubert

    hubert = shared_test_hubert(tmp_path_factory, reference)
    return make_project(tmp_path_factory.mktemp("realtime") / "project", reference, hubert)


def test_cli_streams_a_file_block_by_block(voice_project: Path, tmp_path: Path) -> None:
    import soundfile
    from test_cli import run_cli

    output = tmp_path / "live.wav"
    done = run_cli("realtime", "--model", "ref", "--input-file", str(voice_project / "inputs" / "b.wav"),
                   "--output-file", str(output), "--f0-method", "pm", "--block-time", "0.2", "--extra-time", "0.5",
                   "--sample-rate", "48000", "--threads", "1", root=voice_project)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "streamed 1.0 s" in done.stdout and "at 48000 Hz" in done.stdout
    assert "blocks of 200 ms; algorithmic latency 460 ms" in done.stdout
    data, rate = soundfile.read(str(output))
    assert rate == 48000 and data.shape == (48000,) and np.abs(data).max() > 1e-3


def test_cli_devices_and_errors(voice_project: Path) -> None:
    from test_cli import run_cli

    listed = run_cli("realtime", "--list-devices")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip(), "prints the devices or says there are none"
    no_model = run_cli("realtime")
    assert no_model.returncode == 1 and "--model" in no_model.stderr
    bad = run_cli("realtime", "--model", "ref", "--input-device", "no-such-microphone", "--f0-method", "pm",
                  root=voice_project)  # fmt: skip
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
    assert "no input device matches 'no-such-microphone'" in bad.stderr or "PortAudio" in bad.stderr


def test_missing_portaudio_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from infer_pack.errors import AudioDeviceError
    from tools.api import realtime

    real_import = builtins.__import__

    def without_portaudio(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_portaudio)
    with pytest.raises(AudioDeviceError, match="apt-get install libportaudio2"):
        realtime.list_audio_devices()


def test_duplex_callback_converts_each_block_and_survives_errors(converter: VoiceConverter) -> None:
    from tools.api.realtime import DuplexCallback

    settings = StreamSettings(block_time_s=0.1, extra_time_s=0.2, f0_method="pm")
    stream = StreamingConverter(converter, settings, input_rate=48000)
    handler = DuplexCallback(stream)
    indata = np.repeat(synthetic_voice(0.1, 48000)[:, None], 2, axis=1)  # a stereo microphone
    outdata = np.zeros((4800, 2), np.float32)
    handler(indata, outdata, 4800, None, None)
    handler(indata, outdata, 4800, None, "input overflow")
    assert handler.stats.blocks == 2 and handler.overruns == 1 and handler.error is None
    assert np.array_equal(outdata[:, 0], outdata[:, 1]) and np.abs(outdata).max() > 0
    handler(indata[:100], outdata, 100, None, None)  # a wrong block size: silence, error kept
    assert handler.failed.is_set() and isinstance(handler.error, UserInputError) and not outdata.any()


class FakeSoundDevice:
    """sounddevice's surface used by run_realtime: one duplex device; the stream calls back `blocks` times."""

    class PortAudioError(Exception):
        pass

    def __init__(self, blocks: int, cancel: Any) -> None:
        self.blocks, self.cancel, self.opened = blocks, cancel, {}
        self.default = type("Default", (), {"device": [0, 0]})()

    def query_hostapis(self) -> list[dict]:
        return [{"name": "ALSA"}]

    def query_devices(self) -> list[dict]:
        return [{"name": "USB mic+speaker", "hostapi": 0, "max_input_channels": 1, "max_output_channels": 2,
                 "default_samplerate": 48000.0}]  # fmt: skip

    def Stream(self, **kwargs: Any) -> Any:
        import contextlib
        import threading

        self.opened = kwargs
        outputs = self.outputs = []

        def play() -> None:
            for _ in range(self.blocks):
                indata = synthetic_voice(kwargs["blocksize"] / 48000, 48000)[:, None]
                outdata = np.zeros((kwargs["blocksize"], kwargs["channels"][1]), np.float32)
                kwargs["callback"](indata, outdata, kwargs["blocksize"], None, None)
                outputs.append(outdata)
            self.cancel.cancel()

        @contextlib.contextmanager
        def running() -> Iterator[None]:
            thread = threading.Thread(target=play)
            thread.start()
            yield
            thread.join()

        return running()


def test_live_stream_runs_the_callback_until_stopped(voice_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from infer_pack.progress import CancelToken
    from tools.api import realtime

    cancel = CancelToken()
    fake = FakeSoundDevice(3, cancel)
    monkeypatch.setattr(realtime, "_sounddevice", lambda: fake)
    settings = realtime.stream_settings(block_time_s=0.1, extra_time_s=0.2, f0_method="pm")
    result = realtime.run_realtime(project=voice_project, model=voice_project / "weights" / "ref.pth",
                                   settings=settings, input_device="usb", cancel=cancel, device="cpu")  # fmt: skip
    assert fake.opened["blocksize"] == 4800 and fake.opened["samplerate"] == 48000 and fake.opened["device"] == (0, 0)
    assert result.stats.blocks == 3 and result.overruns == 0 and result.input_device == "USB mic+speaker"
    assert all(np.abs(o).max() > 0 and np.array_equal(o[:, 0], o[:, 1]) for o in fake.outputs)
    assert "3 blocks of 100 ms" in result.summary()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is False)")
def test_stream_on_cuda_matches_the_cpu(converter: VoiceConverter) -> None:
    """The same deterministic stream on the GPU in float32: the CPU's samples within 1e-3."""
    from infer_pack.checkpoint import build_synthesizer

    gpu = VoiceConverter(converter.voice, converter.encoder, device="cuda", dtype=torch.float32,
                         synthesizer=build_synthesizer(converter.voice, "cuda", torch.float32))  # fmt: skip
    settings = StreamSettings(block_time_s=0.1, extra_time_s=0.3, f0_method="pm", deterministic=True)
    audio = synthetic_voice(1.0, 16000, seed=4)
    on_cpu = convert_stream(StreamingConverter(converter, settings), audio).audio
    on_gpu = convert_stream(StreamingConverter(gpu, settings), audio).audio
    assert np.abs(on_cpu - on_gpu).max() < 1e-3
    noisy = StreamingConverter(gpu, StreamSettings(block_time_s=0.1, extra_time_s=0.3, f0_method="pm"))
    assert np.isfinite(convert_stream(noisy, audio).audio).all()
