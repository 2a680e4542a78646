"""UVR5 "VR" separation (RVC's uvr5_weights HP2 / HP3 / HP5 and VR-DeEcho* files): a mask over a
multi-band spectrogram.

A file is a plain state dict (usually fp16) of `vr_nets.CascadedASPPNet` (HP2/HP3/HP5) or of
`vr_nets_new.CascadedNet` (VR-DeEcho*: an LSTM inside, sized by the file). The network predicts the
magnitude of the stem it was trained on; that stem keeps the mixture's phase and the other stem is
the mixture minus it, in the spectrogram, as RVC does. HP2/HP5 predict the accompaniment; HP3 the
vocals; DeEcho/DeReverb the dry vocals, with the echo and reverb as the other stem (`predicts_vocals`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from infer_pack.errors import ModelFileError
from infer_pack.progress import CancelToken, ProgressCallback, check, report
from infer_pack.separation import bands
from infer_pack.separation.bands import BandParams

if TYPE_CHECKING:
    import torch

    from infer_pack.separation.vr_nets import CascadedASPPNet
    from infer_pack.separation.vr_nets_new import CascadedNet
    from infer_pack.separation.vr_onnx import OnnxMask

log = logging.getLogger(__name__)
Engine = Literal["auto", "torch", "onnx"]

# A stem's length. The bands give back the input up to the top band's last whole hop (RVC's output:
# 440,640 samples for 441,000). "input" (ours, the default) pads that with zeros to the input's length
# so stems line up with the file they came from; "whole_hops" returns RVC's length.
OutputLength = Literal["input", "whole_hops"]
OUTPUT_LENGTH: OutputLength = "input"
WINDOW_FRAMES = 512  # RVC's data["window_size"]: frames per network call, including 2 * offset context
# A key only the VR-DeEcho layout (nets_new) has.
_NETS_NEW_MARKER = "stg3_full_band_net.lstm_dec2.lstm.weight_ih_l0"


@dataclass(frozen=True)
class StemPair:
    """Both stems as stereo float32 [2, T] at `sample_rate` (VR: T as `OUTPUT_LENGTH` chooses)."""

    vocals: np.ndarray
    instrumental: np.ndarray
    sample_rate: int


def predicts_vocals(path: str | Path, deecho: bool) -> bool:
    """RVC's rule: HP3* files and the DeEcho layout predict the (dry) vocals; HP2/HP5 the accompaniment."""
    return deecho or "HP3" in Path(path).name


def is_deecho(state: Mapping[str, Any]) -> bool:
    return _NETS_NEW_MARKER in state


def _build(
    state: Mapping[str, Any], params: BandParams, path: Path, *, meta: bool = False
) -> CascadedASPPNet | CascadedNet:
    """The empty network the file's layout calls for (on the meta device: shapes only)."""
    import torch

    from infer_pack.separation import vr_nets, vr_nets_new

    with torch.device("meta" if meta else "cpu"):
        if not is_deecho(state):
            return vr_nets.CascadedASPPNet(params.n_fft)
        n_fft, nout, nout_lstm = vr_nets_new.layout_of(dict(state))
        if n_fft != params.n_fft:
            raise ModelFileError(path, f"its LSTM layers are sized for n_fft {n_fft}, the bands {params.name} give "
                                 f"{params.n_fft}", "use it with the model params it was trained with")  # fmt: skip
        return vr_nets_new.CascadedNet(n_fft, nout, nout_lstm)


def _check_layout(state: Mapping[str, Any], path: Path, params: BandParams) -> None:
    import torch

    if not isinstance(state, Mapping) or not state:
        raise ModelFileError(path, "it is not a state dict of a VR separation model")
    if is_deecho(state):
        for key in ("out.weight", _NETS_NEW_MARKER):
            if not isinstance(state.get(key), torch.Tensor) or state[key].dim() < 2:
                raise ModelFileError(path, f"{key} is not a weight tensor", "pick one of RVC's uvr5_weights .pth files")
    try:
        expected = _build(state, params, path, meta=True).state_dict()
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # impossible sizes in a broken file
        raise ModelFileError(path, f"its tensor shapes describe no VR-DeEcho network ({exc})") from None
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    layout = "VR-DeEcho" if is_deecho(state) else "VR (HP2/HP3/HP5)"
    if missing or unexpected:
        raise ModelFileError(
            path,
            f"it does not have the {layout} layout: {len(missing)} key(s) missing (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})",
            "pick one of RVC's uvr5_weights .pth files",
        )
    for key, ref in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(ref.shape):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ModelFileError(path, f"{key} has shape {shape}, the {layout} layout needs {tuple(ref.shape)}")


class VRSeparator:
    """A loaded VR model; `separate(stereo)` gives both stems. `params` sets the spectrogram bands:
    RVC reads HP files with 4band_v2 and DeEcho files with 4band_v3, whose bands are the same."""

    kind = "vr"

    def __init__(self, net: CascadedASPPNet | CascadedNet, path: Path, *, params: BandParams, device: str,
                 aggressiveness: float, vocals_first: bool, window_frames: int = WINDOW_FRAMES,
                 engine: Engine = "torch", output_length: OutputLength = OUTPUT_LENGTH) -> None:  # fmt: skip
        """`output_length`: see `OUTPUT_LENGTH`. `engine`: "onnx" runs the mask network in ONNX Runtime (CPU, float32; the same mask within 1e-6,
        about 1.6x faster); "auto" picks it there and torch elsewhere; a failed export falls back to torch."""
        if window_frames <= 2 * net.offset:
            raise ValueError(f"window_frames must exceed {2 * net.offset}, got {window_frames}")
        if engine not in ("auto", "torch", "onnx"):
            raise ValueError(f"engine must be auto, torch or onnx, not {engine!r}")
        if output_length not in ("input", "whole_hops"):
            raise ValueError(f"output_length must be input or whole_hops, not {output_length!r}")
        self.output_length: OutputLength = output_length
        self.net = net
        self.path = path
        self.params = params
        self.device = device
        self.aggressiveness = aggressiveness
        self.vocals_first = vocals_first
        self.window_frames = window_frames
        import torch

        on_cpu_fp32 = device == "cpu" and next(net.parameters()).dtype == torch.float32
        if engine == "onnx" and not on_cpu_fp32:
            raise ValueError("the onnx engine runs on CPU in float32 only")
        self.engine: Literal["torch", "onnx"] = "onnx" if engine == "onnx" or (engine == "auto" and on_cpu_fp32) else "torch"
        self._onnx: OnnxMask | None = None  # built on the first window (its shape is known then)

    @property
    def sample_rate(self) -> int:
        return self.params.sample_rate

    def windows(self, frames: int) -> int:
        """How many network calls a spectrogram of `frames` frames takes (the progress total)."""
        return math.ceil(frames / (self.window_frames - 2 * self.net.offset))

    def predict(self, magnitude: np.ndarray, progress: ProgressCallback | None = None,
                cancel: CancelToken | None = None) -> np.ndarray:  # fmt: skip
        """|X| [2, bins+1, frames] -> predicted stem magnitude, same shape (RVC's windowed inference:
        each window sees `offset` frames of context on both sides that its output drops)."""
        import torch

        offset = self.net.offset
        roi = self.window_frames - 2 * offset
        frames = magnitude.shape[2]
        scale = float(magnitude.max()) or 1.0
        n_windows = self.windows(frames)
        padded = np.pad(magnitude / scale, ((0, 0), (0, 0), (offset, n_windows * roi - frames + offset)))
        dtype = next(self.net.parameters()).dtype
        pieces = []
        with torch.inference_mode():
            for index in range(n_windows):
                check(cancel)
                window = torch.from_numpy(padded[None, :, :, index * roi : index * roi + self.window_frames])
                onnx = self._onnx_mask(tuple(window.shape)) if self.engine == "onnx" else None
                if onnx is not None:
                    out = self._sharpen(onnx(window)) * window
                else:
                    out = self.net(window.to(self.device, dtype), self.aggressiveness, self.params.split_bin)
                pieces.append(out[0, :, :, offset:-offset].float().cpu().numpy())
                report(progress, index + 1, n_windows, f"window {index + 1}/{n_windows}")
        return np.concatenate(pieces, axis=2)[:, :, :frames] * scale

    def _onnx_mask(self, shape: tuple[int, ...]) -> OnnxMask | None:
        """The ONNX Runtime mask for windows of `shape`; None (torch from then on) when it cannot be made."""
        from infer_pack.separation.vr_onnx import OnnxMask

        if self._onnx is None or self._onnx.shape != shape:
            try:
                self._onnx = OnnxMask(self.net, (shape[0], shape[1], shape[2], shape[3]))
            except (ImportError, OSError, RuntimeError) as exc:
                log.warning("ONNX Runtime unavailable for %s (%s); separating with torch", self.path.name, exc)
                self.engine = "torch"
                return None
        return self._onnx

    def _sharpen(self, mask: torch.Tensor) -> torch.Tensor:
        """The aggressiveness, as the network's own forward applies it (the DeEcho layout has none)."""
        from infer_pack.separation.vr_nets import CascadedASPPNet, sharpen_mask

        if isinstance(self.net, CascadedASPPNet):
            return sharpen_mask(mask, self.aggressiveness, self.params.split_bin)
        return mask

    def separate(self, stereo: np.ndarray, progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None) -> StemPair:  # fmt: skip
        """Stereo float32 [2, T] at `sample_rate` -> both stems [2, T] ("input") or [2, T'] ("whole_hops":
        T' = `bands.whole_hop_length(T)`), see `OUTPUT_LENGTH`."""
        length = stereo.shape[1]
        if self.output_length == "whole_hops":
            length = bands.whole_hop_length(length, self.params)
        specs = bands.band_spectrograms(stereo, self.params)
        mix = bands.combine(specs, self.params)  # [2, bins+1, frames] complex
        high_end = bands.input_high_end(specs[-1], self.params)
        predicted = self.predict(np.abs(mix), progress, cancel) * np.exp(1.0j * np.angle(mix))
        rest = mix - predicted
        waves = []
        for spec in (predicted, rest):
            check(cancel)
            mirrored = bands.mirror_high_end(spec, high_end, self.params)
            waves.append(_fit(bands.to_wave(spec, self.params, mirrored), length))
        vocals, instrumental = (waves[0], waves[1]) if self.vocals_first else (waves[1], waves[0])
        return StemPair(vocals=vocals, instrumental=instrumental, sample_rate=self.sample_rate)


def _fit(wave: np.ndarray, length: int) -> np.ndarray:
    """Pad with zeros or cut [C, T'] to `length` (the bands' inversion stops at the last whole hop)."""
    if wave.shape[1] >= length:
        return np.ascontiguousarray(wave[:, :length], dtype=np.float32)
    return np.pad(wave, ((0, 0), (0, length - wave.shape[1]))).astype(np.float32)


def load_vr_state(path: str | Path, params: BandParams = bands.PARAMS_4BAND_V2) -> dict[str, torch.Tensor]:
    """The checked state dict of a VR file; hostile pickles -> UnsafeFileError, wrong layout -> ModelFileError."""
    from infer_pack.torchio import safe_torch_load

    path = Path(path)
    state = safe_torch_load(path)
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]  # some tools wrap the weights; RVC's files are the bare dict
    _check_layout(state, path, params)
    return dict(state)


def load_vr_separator(path: str | Path, *, device: str = "cpu", aggressiveness: float = 0.1,
                      params: BandParams = bands.PARAMS_4BAND_V2, window_frames: int = WINDOW_FRAMES,
                      half: bool = False, engine: Engine = "torch",
                      output_length: OutputLength = OUTPUT_LENGTH) -> VRSeparator:  # fmt: skip
    """Build the network of a VR file (RVC's uvr5_weights HP2/HP3/HP5, VR-DeEcho*). `aggressiveness`
    0..1 (RVC's "agg" / 100, default 10; the DeEcho layout ignores it, as RVC)."""
    import torch

    if not 0.0 <= aggressiveness <= 1.0:
        raise ValueError(f"aggressiveness must be between 0 and 1, got {aggressiveness}")
    path = Path(path)
    state = load_vr_state(path, params)
    net = _build(state, params, path)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    net = net.eval().to(device, torch.float16 if half else torch.float32)
    return VRSeparator(net, path, params=params, device=device, aggressiveness=aggressiveness,
                       vocals_first=predicts_vocals(path, is_deecho(state)), window_frames=window_frames,
                       engine=engine, output_length=output_length)  # fmt: skip
