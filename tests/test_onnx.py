"""ONNX export: the graph computes what torch computes, for any number of frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort  # a requirement: its absence must fail, not skip
import torch
from test_checkpoint import tiny_voice

from infer_pack.checkpoint import (
    VoiceModel,
    build_synthesizer,
    save_voice,
    voice_from_state_dict,
)
from infer_pack.models import Synthesizer
from tools import api
from train.onnx_export import example_inputs, export_onnx


def hop400_voice() -> VoiceModel:
    """A narrow pitch voice with the real 40k upsampling (hop 400): long excitations, as in use."""
    config = [
        1025,
        32,
        8,
        16,
        32,
        2,
        1,
        3,
        0,
        "1",
        [3],
        [[1, 3, 5]],
        [10, 10, 2, 2],
        16,
        [16, 16, 4, 4],
        4,
        8,
        40000,
    ]
    torch.manual_seed(0)
    net = Synthesizer(*config, content_dim=768, use_f0=True, posterior=False)
    with torch.no_grad():
        net.dec.m_source.l_linear.weight.fill_(6.0)  # make the sine excitation matter
    return voice_from_state_dict(net.state_dict(), config, True, "", "v2", "40k")


def assert_graph_matches_torch(
    onnx_path: Path,
    voice: VoiceModel,
    expected_inputs: list[str],
    lengths: tuple[int, ...] = (64, 9, 150),
) -> None:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == expected_inputs
    net = build_synthesizer(voice)
    hop = int(np.prod(voice.config[12]))
    for frames in lengths:  # the export used 64 frames; the time axis is dynamic
        inputs = example_inputs(voice, frames, seed=frames)
        inputs["rnd"] = 0.66666 * torch.randn(
            inputs["rnd"].shape, generator=torch.Generator().manual_seed(1)
        )
        feed = {k: v.numpy() for k, v in inputs.items()}
        (audio,) = session.run(None, feed)
        with torch.inference_mode():
            ref, _, _ = net.infer(
                inputs["phone"],
                inputs["phone_lengths"],
                inputs.get("pitch"),
                inputs.get("pitchf"),
                inputs["sid"],
                1.0,
                noise=inputs["rnd"],
                excitation_noise=False,
            )
        assert audio.shape == (1, 1, frames * hop)
        assert float(np.abs(ref.numpy()).max()) > 1e-3
        np.testing.assert_allclose(audio, ref.numpy(), atol=1e-4)
        (again,) = session.run(None, feed)
        assert np.array_equal(audio, again)  # deterministic: noise is an input


def test_pitch_model_graph_matches_torch(tmp_path: Path) -> None:
    voice = tiny_voice("v2", use_f0=True)
    result = export_onnx(voice, tmp_path / "voice.onnx", opset=17)
    names = ["phone", "phone_lengths", "pitch", "pitchf", "sid", "rnd"]
    assert result.input_names == names and result.opset == 17
    assert_graph_matches_torch(result.path, voice, names)


def test_pitch_graph_keeps_the_sine_phase_over_long_inputs(tmp_path: Path) -> None:
    # 300 frames at hop 400 = 120,000 excitation samples: RVC's float32 wrap detection breaks
    # under ONNX Runtime's interpolation rounding; the exported graph must not drift.
    voice = hop400_voice()
    result = export_onnx(voice, tmp_path / "voice.onnx")
    assert_graph_matches_torch(result.path, voice, result.input_names, lengths=(300,))


def test_api_export_of_a_model_without_pitch(tmp_path: Path) -> None:
    voice = tiny_voice("v1", use_f0=False)
    path = save_voice(tmp_path / "v.pth", voice)
    result = api.export_onnx(path=path)
    assert result.path == tmp_path / "v.onnx"
    assert "rnd" in result.summary()
    assert_graph_matches_torch(
        result.path, voice, ["phone", "phone_lengths", "sid", "rnd"]
    )
