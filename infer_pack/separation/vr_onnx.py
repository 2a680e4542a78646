"""The VR networks' mask in ONNX Runtime: the same mask (within 1e-6) about 1.6x faster on CPU
(10 s of stereo, HP layout: 11.4 s against 18.4 s; `python -m bench --only separate`).

Only the mask network is exported (one fixed window shape: every call of `VRSeparator.predict` has
the same size, which lets ONNX Runtime plan once); the aggressiveness and the product with the
magnitude stay in torch. The graph is cached under `$RVC_ONNX_CACHE` (as the conversion decoder's),
named by a digest of the weights, the window shape and the torch / onnxruntime versions, so a
changed file or library gets a new graph. CPU and float32 only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infer_pack.onnx_engine import OPSET, default_cache_dir, trace_to_onnx

if TYPE_CHECKING:
    import torch


def _mask_graph(net: torch.nn.Module) -> torch.nn.Module:
    import torch

    class MaskGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net.mask(x)  # type: ignore[operator]

    return MaskGraph().eval()


def mask_key(net: torch.nn.Module, shape: tuple[int, ...]) -> str:
    """Hex digest of the network's weights, the window shape and the library versions."""
    import onnxruntime
    import torch

    digest = hashlib.sha256(
        f"vr|{type(net).__name__}|{shape}|{torch.__version__}|{onnxruntime.__version__}|{OPSET}".encode()
    )
    for name, tensor in net.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


class OnnxMask:
    """`net.mask(window)` for windows of one shape [1, 2, bins, frames], run by ONNX Runtime."""

    def __init__(self, net: torch.nn.Module, shape: tuple[int, int, int, int], *,
                 cache_dir: str | Path | None = None, threads: int | None = None) -> None:  # fmt: skip
        import onnxruntime as ort
        import torch

        folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.shape = shape
        self.path = folder / f"vr_mask_{mask_key(net, shape)}.onnx"
        if not self.path.is_file():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            trace_to_onnx(_mask_graph(net), (torch.zeros(shape),), self.path, input_names=["x"], dynamic_axes={})
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session: Any = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def __call__(self, window: torch.Tensor) -> torch.Tensor:
        import torch

        if tuple(window.shape) != self.shape:
            raise ValueError(f"this graph takes windows of shape {self.shape}, got {tuple(window.shape)}")
        (mask,) = self.session.run(None, {"x": window.detach().to("cpu", torch.float32).contiguous().numpy()})
        return torch.from_numpy(mask)
