"""Vocal separation speed: a UVR5 VR model (HP2/HP3/HP5 layout, "61968KB", RVC's 4band_v2 bands)
with its mask network in ONNX Runtime (what the app runs on CPU) vs in torch (as RVC runs it).

Model: the real-size network with random weights (the real files cannot be downloaded here; the speed
does not depend on the weights). Input: stereo 44.1 kHz tones; 10 s (quick: 3 s). Both engines get
the same input in the same time window; the row notes their largest stem difference.

    python -m bench.bench_separate [--quick] [--device cpu]
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import BenchRow, area_main, interleaved


def _hp_file(folder: Path) -> Path:
    """A random-weight HP file saved as RVC's uvr5_weights are (fp16 state dict, real BN statistics range)."""
    import torch

    from infer_pack.separation import bands
    from infer_pack.separation.vr_nets import CascadedASPPNet

    torch.manual_seed(0)
    net = CascadedASPPNet(bands.PARAMS_4BAND_V2.n_fft)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = folder / "HP5_only_main_vocal.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}, path)
    return path


def _stereo(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    left = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.sin(2 * np.pi * 3300 * t)
    right = 0.2 * np.sin(2 * np.pi * 330 * t) + 0.01 * np.random.default_rng(0).standard_normal(t.size)
    return np.stack([left, right]).astype(np.float32)


def run(quick: bool, device: str) -> list[BenchRow]:
    from infer_pack.separation.vr import load_vr_separator

    seconds = 3.0 if quick else 10.0
    if device != "cpu":
        return [BenchRow("separate", f"VR HP onnx engine {seconds:.0f} s", "x realtime", float("nan"), None, True,
                         "the onnx engine runs on CPU only")]  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        os.environ.setdefault("RVC_ONNX_CACHE", str(Path(scratch) / "onnx"))
        path = _hp_file(Path(scratch))
        fast = load_vr_separator(path, engine="onnx")
        reference = load_vr_separator(path, engine="torch")
        stereo = _stereo(seconds, fast.sample_rate)
        fast.separate(stereo[:, : fast.sample_rate])  # the one-off export (cached per model file) is not timed
        results: dict[str, Any] = {}

        def with_onnx() -> None:
            results["onnx"] = fast.separate(stereo)

        def with_torch() -> None:
            results["torch"] = reference.separate(stereo)

        onnx_s, torch_s = interleaved(with_onnx, with_torch, repeats=1 if quick else 2, warmup=not quick)
        diff = float(np.abs(results["onnx"].vocals - results["torch"].vocals).max())
        note = (f"real-size 61968KB network, random weights; engine onnx vs torch; max |stem difference| = {diff:.1e}; "
                f"load avg {os.getloadavg()[0]:.1f}")  # fmt: skip
        return [BenchRow("separate", f"VR HP onnx engine {seconds:.0f} s", "x realtime", onnx_s / seconds,
                         (torch_s or 0.0) / seconds, True, note, {"max_abs_diff": diff, "engine": fast.engine})]  # fmt: skip


def main() -> None:
    area_main(run, __doc__)


if __name__ == "__main__":
    main()
