"""The int8 decoder of the fast stream preset: calibrated once per voice, cached, close to float32."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import reference_file
from test_realtime import tiny_voice

from infer_pack.pipeline import VoiceConverter, Windows
from infer_pack.realtime import StreamingConverter, StreamSettings, convert_stream
from infer_pack.synthetic import synthetic_speech


@pytest.fixture(scope="module")
def converter(reference: Path) -> VoiceConverter:
    from test_pipeline import ProjectedEncoder

    encoder = ProjectedEncoder(reference_file(reference, "tiny_hubert.pt"), 768)
    return VoiceConverter(tiny_voice(), encoder, windows=Windows(x_pad=1, x_query=6, x_center=38, x_max=41))


@pytest.fixture()
def onnx_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RVC_ONNX_CACHE", str(tmp_path / "onnx"))
    return tmp_path / "onnx"


def settings(**values: object) -> StreamSettings:
    base = StreamSettings(block_time_s=0.1, crossfade_time_s=0.04, extra_time_s=0.3, f0_method="pm", deterministic=True)
    return replace(base, **values)  # type: ignore[arg-type]


def test_fast_preset_decodes_with_the_cached_int8_graph(
    converter: VoiceConverter, onnx_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from infer_pack import decoder_int8

    fast = StreamingConverter(converter, settings(preset="fast"), input_rate=16000)
    assert isinstance(fast.decode, decoder_int8.Int8Decoder)
    graphs = sorted(onnx_cache.glob(f"decoder_*_{decoder_int8.QUANT_VERSION}.onnx"))
    assert len(graphs) == 1 and fast.decode.path == graphs[0]

    # Quantised for real: QDQ nodes around integer weights, not a float graph under another name.
    import onnx

    graph = onnx.load(str(graphs[0])).graph
    assert sum(node.op_type == "DequantizeLinear" for node in graph.node) > 10
    assert any(init.data_type == onnx.TensorProto.INT8 for init in graph.initializer)

    # A second stream reuses the cached graph: no calibration, no quantisation.
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached int8 decoder should have been reused")

    monkeypatch.setattr(decoder_int8, "quantize_decoder", refuse)
    monkeypatch.setattr(decoder_int8, "calibration_feeds", refuse)
    again = StreamingConverter(converter, settings(preset="fast", pitch_semitones=3.0), input_rate=48000)
    assert isinstance(again.decode, decoder_int8.Int8Decoder) and again.decode.path == graphs[0]


def test_int8_stream_is_close_to_the_float_stream(converter: VoiceConverter, onnx_cache: Path) -> None:
    audio = synthetic_speech(3.0, seed=4)
    plain = convert_stream(StreamingConverter(converter, settings(), input_rate=16000), audio).audio
    int8 = convert_stream(StreamingConverter(converter, settings(decoder_int8=True), input_rate=16000), audio).audio
    assert plain.shape == int8.shape
    error = float(np.linalg.norm(plain - int8) / np.linalg.norm(plain))
    # Quantised (not equal to float32), and near it: calibrated ranges keep the error at a few percent.
    assert 1e-4 < error < 0.2, error


def test_the_float_decoder_is_kept_where_int8_cannot_run(converter: VoiceConverter, onnx_cache: Path) -> None:
    from infer_pack.decoder_int8 import int8_decoder_problem, stream_decoder

    assert stream_decoder(converter, settings()) == converter.synthesizer.dec.decode  # not asked for
    assert int8_decoder_problem(converter.synthesizer) is None
    unfolded = tiny_voice()
    from infer_pack.checkpoint import build_synthesizer

    net = build_synthesizer(unfolded, fold_weight_norm=False)
    problem = int8_decoder_problem(net)
    assert problem is not None and "weight norm" in problem
    half = build_synthesizer(unfolded, dtype=torch.float16)
    problem = int8_decoder_problem(half)
    assert problem is not None and "float32" in problem
    assert not list(onnx_cache.glob("*.onnx"))


def test_quantisation_refuses_an_empty_calibration(converter: VoiceConverter, tmp_path: Path) -> None:
    from infer_pack.decoder_int8 import quantize_decoder
    from infer_pack.errors import UserInputError

    with pytest.raises(UserInputError, match="calibration"):
        quantize_decoder(converter.synthesizer, [], tmp_path / "q.onnx")
    assert not (tmp_path / "q.onnx").exists()


def test_a_file_stream_with_an_int8_preset_says_it_prepares_the_decoder_before_opening(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tools.api import realtime

    messages: list[str] = []

    class Opened(Exception):
        pass

    def open_stream(**kwargs: object) -> None:  # the message must come before the (long) first opening
        raise Opened(list(messages))

    monkeypatch.setattr(realtime, "open_stream", open_stream)
    for preset, said in (("fast", True), ("int8", True), ("as-set", False)):
        messages.clear()
        with pytest.raises(Opened) as opened:
            realtime.stream_file(project=tmp_path, model="ref.pth", input_path=tmp_path / "in.wav",
                                 output_path=tmp_path / "out.wav", settings=StreamSettings(preset=preset),
                                 progress=lambda done, total, message: messages.append(message))  # fmt: skip
        seen = opened.value.args[0]
        assert any("int8 decoder" in m for m in seen) is said, (preset, seen)
