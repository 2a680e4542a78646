"""Export a voice model to ONNX.

Graph inputs: `phone` [1, T, 256|768] float32, `phone_lengths` [1] int64, `pitch` [1, T] int64 and
`pitchf` [1, T] float32 Hz (pitch models only), `sid` [1] int64, `rnd` [1, 192, T] float32.
Output: `audio` [1, 1, T * hop] float32. T is dynamic.

`rnd` is the prior noise already scaled: z_p = m_p + exp(logs_p) * rnd. Pass
`0.66666 * standard normal` for RVC's sampling, or zeros for a deterministic result. The NSF
excitation in the graph has no random part (RVC adds a small noise there), so the exported model
is a pure function of its inputs; its sine phase is accumulated in float64 (see nsf.SineGen.exact_phase).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from infer_pack.checkpoint import VoiceModel, build_synthesizer, load_voice
from infer_pack.errors import ModelFileError
from infer_pack.onnx_engine import trace_to_onnx

if TYPE_CHECKING:
    import torch

    from infer_pack.models import Synthesizer

DEFAULT_OPSET = 17


@dataclass(frozen=True)
class OnnxExportResult:
    path: Path
    input_names: list[str]
    output_names: list[str]
    opset: int


def _wrapper(net: Synthesizer) -> torch.nn.Module:
    import torch

    class PitchGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, phone, phone_lengths, pitch, pitchf, sid, rnd):  # type: ignore[no-untyped-def]
            return self.net.infer(
                phone,
                phone_lengths,
                pitch,
                pitchf,
                sid,
                1.0,
                noise=rnd,
                excitation_noise=False,
            )[0]

    class PlainGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, phone, phone_lengths, sid, rnd):  # type: ignore[no-untyped-def]
            return self.net.infer(
                phone, phone_lengths, None, None, sid, 1.0, noise=rnd
            )[0]

    return PitchGraph() if net.use_f0 else PlainGraph()


def example_inputs(
    voice: VoiceModel, frames: int = 64, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Inputs of the exported graph for `frames` frames (random features, a vibrato f0, zero noise)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    inputs = {
        "phone": torch.randn(1, frames, voice.content_dim, generator=gen),
        "phone_lengths": torch.tensor([frames], dtype=torch.long),
    }
    if voice.use_f0:
        # A sung-like contour: vibrato around 200 Hz with unvoiced stretches (0 Hz, coarse 1).
        t = torch.arange(frames, dtype=torch.float64)
        f0 = (
            200
            + 85 * torch.sin(2 * math.pi * t / 120)
            + 12 * torch.sin(2 * math.pi * t / 37)
        )
        f0[(t < 8) | ((t >= frames // 2) & (t < frames // 2 + 10))] = 0.0
        mel = 1127 * torch.log1p(f0 / 700)
        mel_min, mel_max = 1127 * math.log1p(50 / 700), 1127 * math.log1p(1100 / 700)
        coarse = torch.where(
            f0 > 0,
            (mel - mel_min) * 254 / (mel_max - mel_min) + 1,
            torch.ones_like(mel),
        )
        inputs["pitch"] = torch.clamp(coarse, 1, 255).round().long().unsqueeze(0)
        f0 = f0.float().unsqueeze(0)
        inputs["pitchf"] = f0
    inputs["sid"] = torch.tensor([0], dtype=torch.long)
    inputs["rnd"] = torch.zeros(1, int(voice.config[2]), frames)
    return inputs


def export_onnx(
    voice: VoiceModel | str | Path,
    output: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
) -> OnnxExportResult:
    """Write `output` (.onnx) atomically. Uses the voice's fp32 weights with weight norm folded."""
    import torch

    if not isinstance(voice, VoiceModel):
        voice = load_voice(voice)
    net = build_synthesizer(voice, "cpu", torch.float32, fold_weight_norm=True)
    if net.use_f0:
        net.dec.m_source.l_sin_gen.exact_phase = True
    graph = _wrapper(net).eval()
    inputs = example_inputs(voice)
    names = list(inputs)
    dynamic_axes = {
        "phone": {1: "frames"},
        "rnd": {2: "frames"},
        "audio": {2: "samples"},
    }
    if voice.use_f0:
        dynamic_axes |= {"pitch": {1: "frames"}, "pitchf": {1: "frames"}}
    output = Path(output)
    try:
        trace_to_onnx(
            graph, tuple(inputs.values()), output, input_names=names, dynamic_axes=dynamic_axes, opset=opset
        )
    except (RuntimeError, torch.onnx.errors.OnnxExporterError) as exc:  # type: ignore[attr-defined]
        raise ModelFileError(
            voice.path or output, f"ONNX export failed ({type(exc).__name__}: {exc})"
        ) from None
    return OnnxExportResult(
        path=output, input_names=names, output_names=["audio"], opset=opset
    )
