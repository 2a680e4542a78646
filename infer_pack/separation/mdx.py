"""MDX-Net separation from an ONNX file (RVC's onnx_dereverb_By_FoxJoy/vocals.onnx and files like it).

The ONNX graph maps a stacked STFT chunk [N, 4 (L re, L im, R re, R im), dim_f, dim_t] to the
target stem's STFT of the same shape; everything around it (chunking, STFT, the sign-flip
denoise average, overlap trimming) is here. As in RVC the graph's output is the "other" stem and
the vocals are the mixture minus it, so the two stems always sum to the input exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infer_pack.errors import ModelFileError
from infer_pack.progress import CancelToken, ProgressCallback, check, report
from infer_pack.separation.vr import StemPair

SAMPLE_RATE = 44100


@dataclass(frozen=True)
class MdxParams:
    """What the ONNX file does not record about its STFT (RVC's values for the FoxJoy dereverb model)."""

    n_fft: int = 6144
    hop_length: int = 1024
    dim_f: int = 3072  # frequency rows the graph sees (the rest are zeros on the way back)
    dim_t: int = 512  # frames per chunk (RVC's dim_t = 9 means 2**9)
    segment_seconds: float = 15.0  # RVC's `chunks`: audio cut into segments this long ...
    margin_samples: int = 44100  # ... with this much overlap on each side, dropped after the model
    denoise: bool = True  # average f(x) and -f(-x): cancels the graph's sign-independent noise

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def chunk_samples(self) -> int:
        return self.hop_length * (self.dim_t - 1)

    def validate(self, path: Path) -> MdxParams:
        if self.dim_f > self.n_bins or self.dim_t < 2 or self.chunk_samples <= self.n_fft:
            raise ModelFileError(
                path,
                f"its input shape (dim_f={self.dim_f}, dim_t={self.dim_t}) does not fit n_fft={self.n_fft}, "
                f"hop={self.hop_length}",
                "give the n_fft and hop length the model was trained with",
            )
        return self


class MdxSeparator:
    """A loaded MDX ONNX model; `separate(stereo)` gives both stems."""

    kind = "mdx"
    sample_rate = SAMPLE_RATE

    def __init__(self, session: Any, path: Path, params: MdxParams) -> None:
        self.session = session
        self.path = path
        self.params = params
        self.input_name = session.get_inputs()[0].name

    def _stft(self, waves: np.ndarray) -> np.ndarray:
        """[N, 2, chunk] -> float32 [N, 4, dim_f, dim_t]."""
        import torch

        p = self.params
        x = torch.from_numpy(waves.reshape(-1, p.chunk_samples).astype(np.float32))
        spec = torch.stft(x, p.n_fft, p.hop_length, window=torch.hann_window(p.n_fft), center=True,
                          return_complex=True)  # fmt: skip  # [N*2, bins, dim_t]
        stacked = torch.view_as_real(spec).permute(0, 3, 1, 2).reshape(-1, 4, p.n_bins, p.dim_t)
        return stacked[:, :, : p.dim_f].numpy()

    def _istft(self, stacked: np.ndarray) -> np.ndarray:
        """[N, 4, dim_f, dim_t] -> float32 [N, 2, chunk]."""
        import torch

        p = self.params
        x = torch.from_numpy(np.ascontiguousarray(stacked, dtype=np.float32))
        x = torch.nn.functional.pad(x, (0, 0, 0, p.n_bins - p.dim_f))
        x = x.reshape(-1, 2, p.n_bins, p.dim_t).permute(0, 2, 3, 1).contiguous()
        wave = torch.istft(torch.view_as_complex(x), p.n_fft, p.hop_length, window=torch.hann_window(p.n_fft),
                           center=True, length=p.chunk_samples)  # fmt: skip
        return wave.reshape(-1, 2, p.chunk_samples).numpy()

    def _run(self, spec: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self.input_name: spec})[0]
        if out.shape != spec.shape:
            raise ModelFileError(self.path, f"the graph returned shape {out.shape} for input {spec.shape}",
                                 "use an MDX-Net ONNX file whose output has its input's shape")  # fmt: skip
        if self.params.denoise:
            out = 0.5 * out - 0.5 * self.session.run(None, {self.input_name: -spec})[0]
        return out

    def _segment_model_windows(self, n_samples: int) -> int:
        p = self.params
        step = p.chunk_samples - p.n_fft
        return math.ceil(n_samples / step) if n_samples % step else n_samples // step + 1

    def _segments(self, total: int) -> list[tuple[int, int, int, int]]:
        """(start, end, keep_from, keep_to) per segment: RVC's cut with margins on inner edges."""
        p = self.params
        size = max(1, round(p.segment_seconds * SAMPLE_RATE))
        margin = min(p.margin_samples, size)
        if total <= size:
            return [(0, total, 0, total)]
        out = []
        for skip in range(0, total, size):
            start = max(0, skip - margin)
            end = min(skip + size + margin, total)
            out.append((start, end, skip - start, skip - start + min(size, total - skip)))
            if end == total:
                # what the last segment holds past its own stretch belongs to it as well
                last = out[-1]
                out[-1] = (last[0], last[1], last[2], end - last[0])
                break
        return out

    def _separate_segment(self, mix: np.ndarray, progress: ProgressCallback | None, cancel: CancelToken | None,
                          done: int, total: int) -> tuple[np.ndarray, int]:  # fmt: skip
        """One segment [2, n] -> the graph's stem [2, n]; windows of `chunk` overlap by n_fft."""
        p = self.params
        trim = p.n_fft // 2
        step = p.chunk_samples - 2 * trim
        n = mix.shape[1]
        n_windows = self._segment_model_windows(n)
        padded = np.zeros((2, trim + n_windows * step + trim), dtype=np.float32)
        padded[:, trim : trim + n] = mix
        pieces = []
        for index in range(n_windows):
            check(cancel)
            window = padded[None, :, index * step : index * step + p.chunk_samples]
            out = self._istft(self._run(self._stft(window)))
            pieces.append(out[0, :, trim:-trim])
            done += 1
            report(progress, done, total, f"window {done}/{total}")
        return np.concatenate(pieces, axis=1)[:, :n], done

    def separate(self, stereo: np.ndarray, progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None) -> StemPair:  # fmt: skip
        """Stereo float32 [2, T] at 44.1 kHz -> vocals = input - graph output, instrumental = graph output."""
        mix = np.ascontiguousarray(stereo, dtype=np.float32)
        segments = self._segments(mix.shape[1])
        total = sum(self._segment_model_windows(end - start) for start, end, _, _ in segments)
        other = np.zeros_like(mix)
        done = 0
        for start, end, keep_from, keep_to in segments:
            stem, done = self._separate_segment(mix[:, start:end], progress, cancel, done, total)
            other[:, start + keep_from : start + keep_to] = stem[:, keep_from:keep_to]
        return StemPair(vocals=mix - other, instrumental=other, sample_rate=SAMPLE_RATE)


def _static_dim(value: Any) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


def load_mdx_separator(path: str | Path, *, device: str = "cpu", params: MdxParams | None = None) -> MdxSeparator:
    """Open an MDX-Net ONNX file; dim_f/dim_t come from its input shape when the graph fixes them."""
    import onnxruntime

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, "file not found", "check the path or download the model")
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.startswith("cuda") else ["CPUExecutionProvider"]
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    state = onnxruntime.capi.onnxruntime_pybind11_state
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=providers)
    except (RuntimeError, ValueError, state.Fail, state.InvalidProtobuf, state.InvalidGraph, state.NoSuchFile,
            state.InvalidArgument, state.NotImplemented) as exc:  # fmt: skip
        raise ModelFileError(path, f"not a readable ONNX model ({str(exc).splitlines()[0][:200]})") from None
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise ModelFileError(path, f"an MDX-Net graph has one 4-D input; this one has {[i.shape for i in inputs]}")
    shape = inputs[0].shape
    if _static_dim(shape[1]) not in (None, 4):
        raise ModelFileError(path, f"its input has {shape[1]} channels; MDX-Net stereo models take 4")
    base = params or MdxParams()
    dim_f = _static_dim(shape[2]) or base.dim_f
    dim_t = _static_dim(shape[3]) or base.dim_t
    chosen = MdxParams(base.n_fft, base.hop_length, dim_f, dim_t, base.segment_seconds, base.margin_samples,
                       base.denoise).validate(path)  # fmt: skip
    return MdxSeparator(session, path, chosen)
