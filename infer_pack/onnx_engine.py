"""ONNX Runtime engine for the synthesiser's decoder (CPU, float32).

The decoder (the NSF/HiFi-GAN generator) is almost all of a conversion's time on CPU. This engine
runs only that part in ONNX Runtime; the text encoder, the flow and the NSF excitation stay in
torch, so every random draw (prior noise, excitation noise) comes from the same generator in the
same order as `Synthesizer.infer`, and the audio matches the torch path to float32 rounding.

The exported graph is cached on disk, keyed by a hash of the decoder's weights (so a voice passed
in memory, or a file that changed in place, never reuses a stale graph) and of the versions involved.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from infer_pack.errors import UserInputError
from infer_pack.fileio import atomic_path

if TYPE_CHECKING:
    import torch

    from infer_pack.models import Synthesizer

OPSET = 17
CACHE_ENV = "RVC_ONNX_CACHE"


def default_cache_dir() -> Path:
    """$RVC_ONNX_CACHE, else <temp>/rvc_onnx_cache."""
    return Path(
        os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "rvc_onnx_cache"
    )


def _decoder_graph(net: Synthesizer) -> torch.nn.Module:
    """The decoder as a pure function: (x [1, inter, T], g [1, gin, 1], har [1, 1, T*upp]) -> audio [1, 1, T*upp].

    Generator.decode itself, after the excitation is made (which stays in torch).
    """
    import torch

    dec = net.dec

    class DecoderGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dec = dec

        def forward(self, x, g, har=None):  # type: ignore[no-untyped-def]
            return self.dec.decode(x, har, g)

    return DecoderGraph().eval()


def decoder_key(net: Synthesizer) -> str:
    """Hex digest of the decoder's weights, its config and the torch / onnxruntime versions."""
    import onnxruntime
    import torch

    digest = hashlib.sha256()
    digest.update(
        f"{torch.__version__}|{onnxruntime.__version__}|{OPSET}|{net.dec.upp}|{net.use_f0}".encode()
    )
    for name, tensor in net.dec.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(
            tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
        )
    return digest.hexdigest()[:32]


def trace_to_onnx(
    graph: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    output: Path,
    *,
    input_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
    opset: int = OPSET,
) -> None:
    """Trace `graph` (one output, named "audio") to `output` atomically with the legacy exporter."""
    import torch

    with (
        atomic_path(output) as tmp,
        torch.inference_mode(False),
        torch.no_grad(),
        warnings.catch_warnings(),
    ):
        # The tracer's notes (TorchScript deprecation, constant folding) are noise here; the
        # tests compare every exported graph with torch.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            args,
            str(tmp),
            input_names=input_names,
            output_names=["audio"],
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            dynamo=False,
        )


def export_decoder(net: Synthesizer, output: Path) -> Path:
    """Write the decoder of `net` (float32, weight norm folded) to `output` atomically."""
    import torch

    frames, upp = 32, net.dec.upp
    inter = int(net.dec.conv_pre.in_channels)
    gin = int(net.dec.cond.in_channels) if hasattr(net.dec, "cond") else 1
    x = torch.zeros(1, inter, frames)
    g = torch.zeros(1, gin, 1)
    args: tuple[torch.Tensor, ...] = (x, g)
    names = ["x", "g"]
    axes: dict[str, dict[int, str]] = {"x": {2: "frames"}, "audio": {2: "samples"}}
    if net.use_f0:
        args = (x, g, torch.zeros(1, 1, frames * upp))
        names.append("har")
        axes["har"] = {2: "samples"}
    output.parent.mkdir(parents=True, exist_ok=True)
    trace_to_onnx(_decoder_graph(net), args, output, input_names=names, dynamic_axes=axes, opset=OPSET)
    return output


def onnx_decoder_problem(net: Synthesizer, engine: str) -> str | None:
    """Why `net`'s decoder cannot run as an ONNX graph (`engine` names who asks), or None.

    The graphs take float32 on the CPU, with weight norm folded into the weights.
    """
    import torch

    param = next(net.dec.parameters())
    if param.device.type != "cpu" or param.dtype != torch.float32:
        return f"{engine} runs on CPU in float32; this synthesiser is on {param.device} in {param.dtype}"
    if any("weight_g" in name or "parametrizations" in name for name in net.dec.state_dict()):
        return f"{engine} needs weight norm folded (build_synthesizer(..., fold_weight_norm=True))"
    return None


def decoder_session(path: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session for a decoder graph: `threads` intra-op threads, one inter-op, sequential."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def decoder_feed(x: torch.Tensor, har: torch.Tensor | None, g: torch.Tensor) -> dict[str, np.ndarray]:
    """The decoder graph's inputs from `Generator.decode`'s arguments (har only for pitch voices)."""
    feed = {"x": x.detach().contiguous().numpy(), "g": g.detach().contiguous().numpy()}
    if har is not None:
        feed["har"] = har.detach().contiguous().numpy()
    return feed


class OnnxSynthesizer:
    """`Synthesizer.infer` with the decoder in ONNX Runtime. CPU and float32 only.

    `threads` (default: torch's intra-op thread count) sets ONNX Runtime's intra-op threads.
    """

    def __init__(
        self,
        net: Synthesizer,
        *,
        cache_dir: str | Path | None = None,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort
        import torch

        problem = onnx_decoder_problem(net, "the onnx engine")
        if problem is not None:
            raise UserInputError(f"{problem} (use engine='torch' there)")
        self.net = net
        folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.path = folder / f"decoder_{decoder_key(net)}.onnx"
        if not self.path.is_file():
            export_decoder(net, self.path)
        self.session = decoder_session(self.path, int(threads or torch.get_num_threads()))
        # Give the arena's free blocks back after each run: windows and chunks of other lengths would
        # otherwise grow it run after run (about 0.9 GB more peak memory on 2 minutes of audio), at
        # no measurable cost in speed.
        self._run_options = ort.RunOptions()
        self._run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def infer(
        self,
        phone: torch.Tensor,
        phone_lengths: torch.Tensor,
        pitch: torch.Tensor | None,
        pitchf: torch.Tensor | None,
        sid: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        keep: tuple[int, int] | None = None,
        window: int | None = None,
    ) -> np.ndarray:
        """Same inputs as Synthesizer.infer (batch 1, default noise scale) -> audio [T*hop] float32.

        `keep=(start, stop)`: only frames start..stop-1; `window`: at most this many frames decoded
        at a time; both as in Synthesizer.infer.
        """
        import torch

        with torch.inference_mode():
            audio = self.net.infer(
                phone, phone_lengths, pitch, pitchf, sid,
                generator=generator, keep=keep, window=window, decode=self._decode,
            )[0]  # fmt: skip
        return np.ascontiguousarray(audio[0, 0].numpy(), dtype=np.float32)

    def _decode(self, x: torch.Tensor, har: torch.Tensor | None, g: torch.Tensor) -> torch.Tensor:
        """One ONNX Runtime run of the decoder graph."""
        import torch

        return torch.from_numpy(self.session.run(None, decoder_feed(x, har, g), self._run_options)[0])
