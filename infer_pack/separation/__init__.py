"""Vocal/accompaniment separation with RVC's uvr5_weights models.

- `vr`: UVR5 "VR" files (.pth: HP2, HP3, HP5) on a multi-band spectrogram (`bands`, `vr_nets`).
- `mdx`: MDX-Net ONNX files (RVC's onnx_dereverb_By_FoxJoy/vocals.onnx).
- `roformer`: BS-RoFormer checkpoints of MSST (.ckpt, with their .yaml beside them).
`load_separator(path)` picks the family from the file; `Separator.separate(stereo [2, T])` returns
a `StemPair` (vocals, instrumental, sample_rate). Files go in and out through `tools.api.separate`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from infer_pack.errors import AudioLoadError, ModelFileError
from infer_pack.progress import CancelToken, ProgressCallback
from infer_pack.separation.vr import StemPair

MODEL_SUFFIXES: tuple[str, ...] = (".pth", ".onnx", ".ckpt")
MAX_DURATION_S = 3 * 3600.0


class Separator(Protocol):
    kind: str
    path: Path

    @property
    def sample_rate(self) -> int: ...

    def separate(
        self, stereo: np.ndarray, progress: ProgressCallback | None = None, cancel: CancelToken | None = None
    ) -> StemPair: ...


def load_separator(path: str | Path, *, device: str = "cpu", aggressiveness: float = 0.1) -> Separator:
    """A VR (.pth), MDX (.onnx) or BS-RoFormer (.ckpt) separator; `aggressiveness` (0..1): VR models only."""
    path = Path(path)
    if path.suffix.lower() == ".pth":
        from infer_pack.separation.vr import load_vr_separator

        return load_vr_separator(path, device=device, aggressiveness=aggressiveness, half=device.startswith("cuda"),
                                 engine="auto")  # ONNX Runtime on CPU: the same mask, faster
    if path.suffix.lower() == ".onnx":
        from infer_pack.separation.mdx import load_mdx_separator

        return load_mdx_separator(path, device=device)
    if path.suffix.lower() == ".ckpt":
        from infer_pack.separation.roformer import load_roformer_separator

        return load_roformer_separator(path, device=device)
    raise ModelFileError(
        path, "not a separation model file", "pick a UVR5 .pth (HP/DeEcho), an MDX .onnx or a BS-RoFormer .ckpt file"
    )


def load_stereo(path: str | Path, sample_rate: int) -> np.ndarray:
    """Decode any audio file to float32 stereo [2, T] at `sample_rate` (mono is duplicated, more
    channels are mixed down by FFmpeg's matrix). Errors are `AudioLoadError`s naming the file."""
    import av
    import soxr

    from infer_pack.audio import probe

    path = Path(path)
    info = probe(path)  # missing, empty, no audio stream -> AudioLoadError
    if info.duration_s > MAX_DURATION_S:
        raise AudioLoadError(path, f"it lasts {info.duration_s / 3600:.1f} h, more than 3 h", "split it first")
    blocks: list[np.ndarray] = []
    source_rate = 0
    try:
        with av.open(str(path), mode="r", metadata_errors="ignore") as container:
            stream = container.streams.audio[0]
            converter = av.AudioResampler(format="fltp", layout="stereo")
            for frame in container.decode(stream):
                for converted in converter.resample(frame):
                    source_rate = int(converted.sample_rate)
                    blocks.append(converted.to_ndarray().astype(np.float32))
            for converted in converter.resample(None):
                blocks.append(converted.to_ndarray().astype(np.float32))
    except av.FFmpegError as exc:
        raise AudioLoadError(path, f"not decodable audio ({exc})") from None
    if not blocks or sum(b.shape[1] for b in blocks) == 0:
        raise AudioLoadError(path, "it holds no audio samples", "re-export it with some sound in it")
    stereo = np.nan_to_num(np.concatenate(blocks, axis=1), nan=0.0, posinf=0.0, neginf=0.0)
    if source_rate != sample_rate:
        stereo = soxr.resample(np.ascontiguousarray(stereo.T), source_rate, sample_rate, quality="HQ").T
    return np.ascontiguousarray(stereo, dtype=np.float32)
