"""The ONNX Runtime engine (decoder in ONNX) against the torch path, on the reference voices.

Content encoder: the tiny reference HuBERT followed by a fixed random projection to the voice's
content width (as in test_pipeline.py); the engines get the same features, pitch and seed, so the
audio must agree sample by sample.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import reference_file, synthetic_voice

from infer_pack.errors import UserInputError
from infer_pack.pipeline import ConversionParams, VoiceConverter, Windows

SHORT_WINDOWS = Windows(x_pad=0.1, x_query=6, x_center=38, x_max=41)
TOLERANCE = 1e-4  # max |onnx - torch| on audio in [-1, 1]


class ProjectedEncoder:
    """tiny_hubert.pt's last layer times a fixed random [64, dim] matrix (seeded)."""

    def __init__(self, path: Path, dim: int) -> None:
        from infer_pack.hubert import load_content_encoder

        self.encoder = load_content_encoder(path)
        generator = torch.Generator().manual_seed(1234)
        self.projection = (
            torch.randn(self.encoder.feature_dim("v2"), dim, generator=generator) / 8.0
        )

    def extract(self, wave_16k: torch.Tensor, version: str) -> torch.Tensor:
        return self.encoder.extract(wave_16k, "v2") @ self.projection  # [B, T, dim]


def _converters(
    reference: Path, name: str, dim: int, cache: Path
) -> tuple[VoiceConverter, VoiceConverter]:
    from infer_pack.checkpoint import build_synthesizer, load_voice

    voice = load_voice(reference_file(reference, name))
    encoder = ProjectedEncoder(reference_file(reference, "tiny_hubert.pt"), dim)
    net = build_synthesizer(voice, "cpu", torch.float32)
    plain = VoiceConverter(voice, encoder, windows=SHORT_WINDOWS, synthesizer=net)
    onnx = VoiceConverter(
        voice,
        encoder,
        windows=SHORT_WINDOWS,
        synthesizer=net,
        engine="onnx",
        onnx_cache_dir=cache,
    )
    return plain, onnx


@pytest.mark.parametrize(
    ("name", "dim", "method"),
    [("ref_v2_40k_f0.pth", 768, "pm"), ("ref_v1_32k_nof0_slim.pth", 256, "pm")],
)
def test_onnx_engine_matches_torch(
    reference: Path, tmp_path: Path, name: str, dim: int, method: str
) -> None:
    plain, onnx = _converters(reference, name, dim, tmp_path)
    audio = synthetic_voice(1.2, 16000, seed=5)
    params = ConversionParams(f0_method=method, seed=7)
    expected, rate = plain.convert(audio, params)
    got, onnx_rate = onnx.convert(audio, params)
    assert onnx_rate == rate
    assert got.shape == expected.shape
    assert np.abs(expected).max() > 1e-2  # a real signal, not silence on both sides
    assert float(np.abs(got - expected).max()) <= TOLERANCE
    # Another seed changes the output in both engines the same way (the random draws are shared).
    other = ConversionParams(f0_method=method, seed=8)
    assert (
        float(
            np.abs(onnx.convert(audio, other)[0] - plain.convert(audio, other)[0]).max()
        )
        <= TOLERANCE
    )
    assert float(np.abs(onnx.convert(audio, other)[0] - got).max()) > 1e-3


def test_exported_graph_is_cached_by_weights(reference: Path, tmp_path: Path) -> None:
    from infer_pack.checkpoint import build_synthesizer, load_voice
    from infer_pack.onnx_engine import OnnxSynthesizer, decoder_key

    voice = load_voice(reference_file(reference, "ref_v1_32k_nof0_slim.pth"))
    net = build_synthesizer(voice, "cpu", torch.float32)
    first = OnnxSynthesizer(net, cache_dir=tmp_path)
    stamp = first.path.stat().st_mtime_ns
    again = OnnxSynthesizer(net, cache_dir=tmp_path)
    assert (
        again.path == first.path and again.path.stat().st_mtime_ns == stamp
    )  # reused, not exported again
    assert list(tmp_path.glob("*.onnx")) == [first.path]
    key = decoder_key(net)
    with torch.no_grad():
        net.dec.conv_post.weight.mul_(1.001)
    assert decoder_key(net) != key  # changed weights never reuse a stale graph


def test_onnx_engine_refuses_what_it_cannot_run(
    reference: Path, tmp_path: Path
) -> None:
    from infer_pack.checkpoint import build_synthesizer, load_voice
    from infer_pack.onnx_engine import OnnxSynthesizer

    voice = load_voice(reference_file(reference, "ref_v1_32k_nof0_slim.pth"))
    with pytest.raises(UserInputError, match="float32"):
        OnnxSynthesizer(
            build_synthesizer(voice, "cpu", torch.float64), cache_dir=tmp_path
        )
    with pytest.raises(UserInputError, match="weight norm"):
        OnnxSynthesizer(
            build_synthesizer(voice, "cpu", torch.float32, fold_weight_norm=False),
            cache_dir=tmp_path,
        )
    with pytest.raises(UserInputError, match="engine"):
        VoiceConverter(voice, object(), engine="tensorrt")  # type: ignore[arg-type]
    assert not list(tmp_path.glob("*.onnx"))
