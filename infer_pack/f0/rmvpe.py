"""RMVPE pitch estimation: load rmvpe.pt, log-mel, network, decode. Long audio runs in chunks.

Audio up to `SINGLE_PASS_FRAMES` frames (about 41 s) runs in one pass exactly like RVC. Longer audio
is cut into windows of `CHUNK_FRAMES` frames with `CONTEXT_FRAMES` of real signal on each side
(starts on the network's 32-frame pooling grid, so the inner frames see the same alignment as one
pass would); only the inner frames of each window are kept. Memory then stays bounded (the
U-Net's activations grow with the frame count) whatever the audio length.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from infer_pack.errors import AssetMissingError, ModelFileError
from infer_pack.f0.filters import fit_to_frames
from infer_pack.f0.rmvpe_decode import RVC_THRESHOLD, decode_salience
from infer_pack.f0.rmvpe_mel import HOP, N_FFT
from infer_pack.progress import CancelToken, ProgressCallback, check, report

if TYPE_CHECKING:
    import torch

    from infer_pack.cache import ModelCache

PAD_MULTIPLE = 32  # five 2x poolings
SINGLE_PASS_FRAMES = 4096
CHUNK_FRAMES = 3072
CONTEXT_FRAMES = 256
DEFAULT_ASSET = "rmvpe"


class RMVPE:
    """A loaded RMVPE model on one device: `salience(audio_16k)` and `f0(audio_16k)`."""

    def __init__(self, model: Any, device: str) -> None:
        import torch

        from infer_pack.f0.rmvpe_mel import mel_filterbank

        self.model = model
        self.device = torch.device(device)
        self.mel_basis = torch.from_numpy(mel_filterbank()).to(self.device)  # [128, 513]

    def log_mel(self, audio_16k: np.ndarray) -> torch.Tensor:
        """RVC's log-mel of the whole signal (center=True): [1, 128, len // 160 + 1]."""
        import torch

        from infer_pack.f0.rmvpe_mel import log_mel, stft_magnitude

        wave = torch.from_numpy(np.ascontiguousarray(audio_16k, dtype=np.float32)).to(self.device)
        return log_mel(stft_magnitude(wave.unsqueeze(0)), self.mel_basis)

    def mel_to_salience(self, mel: torch.Tensor) -> torch.Tensor:
        """Pad the mel with 0.0 to a multiple of 32 frames, run the network, cut back: [1, T, 360]."""
        import torch

        frames = mel.shape[-1]
        n_pad = PAD_MULTIPLE * ((frames - 1) // PAD_MULTIPLE + 1) - frames
        if n_pad > 0:
            mel = torch.nn.functional.pad(mel, (0, n_pad), mode="constant", value=0.0)
        with torch.inference_mode():
            hidden = self.model(mel)  # [1, T + n_pad, 360]
        return hidden[:, :frames]

    def salience(self, audio_16k: np.ndarray) -> np.ndarray:
        """float32 [len // 160 + 1, 360]."""
        return np.concatenate([hidden for _, hidden in self._salience_pieces(audio_16k)])

    def f0(
        self,
        audio_16k: np.ndarray,
        threshold: float = RVC_THRESHOLD,
        *,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> np.ndarray:
        """f0 in Hz, float64 [len // 160 + 1]; each piece is decoded as soon as it is computed, so
        only the f0 track (not the [T, 360] salience) is kept for long audio. `cancel` is checked
        and `progress` called (in frames) between pieces."""
        frames = audio_16k.size // HOP + 1
        tracks: list[np.ndarray] = []
        for first, hidden in self._salience_pieces(audio_16k, cancel):
            tracks.append(decode_salience(hidden, threshold))
            report(progress, first + hidden.shape[0], frames, "pitch (rmvpe)")
        return np.concatenate(tracks)

    def _salience_pieces(
        self, audio_16k: np.ndarray, cancel: CancelToken | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """(first frame, salience float32 [frames, 360]) pieces covering the whole signal in order."""
        frames = audio_16k.size // HOP + 1
        if frames <= SINGLE_PASS_FRAMES:
            check(cancel)
            yield 0, self._to_numpy(self.mel_to_salience(self.log_mel(audio_16k)))
            return
        import torch

        from infer_pack.f0.rmvpe_mel import log_mel, stft_magnitude

        half = N_FFT // 2
        # The reflect padding of the whole signal, so that every window's frames equal a single pass's.
        padded = np.pad(np.asarray(audio_16k, dtype=np.float32), (half, half), mode="reflect")
        for core_start in range(0, frames, CHUNK_FRAMES):
            check(cancel)
            core_end = min(frames, core_start + CHUNK_FRAMES)
            start = max(0, core_start - CONTEXT_FRAMES)
            end = min(frames, core_end + CONTEXT_FRAMES)
            piece = padded[start * HOP : (end - 1) * HOP + N_FFT]
            wave = torch.from_numpy(np.ascontiguousarray(piece)).to(self.device).unsqueeze(0)
            mel = log_mel(stft_magnitude(wave, center=False), self.mel_basis)  # [1, 128, end - start]
            hidden = self._to_numpy(self.mel_to_salience(mel))
            yield core_start, hidden[core_start - start : core_end - start]

    @staticmethod
    def _to_numpy(hidden: torch.Tensor) -> np.ndarray:
        return hidden.squeeze(0).float().cpu().numpy()


def build_model(*, empty: bool = False) -> Any:
    """RVC's E2E(4, 1, (2, 2)); `empty=True` builds it without memory (weights come from a file)."""
    import torch

    from infer_pack.f0.rmvpe_net import E2E

    if empty:
        with torch.device("meta"):
            return E2E(4, 1, (2, 2))
    return E2E(4, 1, (2, 2))


def load_rmvpe(path: str | Path, device: str = "cpu") -> RMVPE:
    """Load RVC's rmvpe.pt (a bare state_dict, fp16 or fp32). Missing -> AssetMissingError."""
    from infer_pack.torchio import safe_torch_load

    path = Path(path)
    if not path.is_file():
        raise AssetMissingError(path, DEFAULT_ASSET)
    state = safe_torch_load(path)
    if not isinstance(state, dict):
        raise ModelFileError(
            path, f"expected a state_dict (dict of tensors), found {type(state).__name__}", "use RVC's rmvpe.pt"
        )
    model = build_model(empty=True)  # skips initialising 90 M parameters that the file overwrites
    missing, unexpected = _key_differences(model.state_dict(), state)
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise ModelFileError(path, f"not an RMVPE state_dict ({detail})", "use RVC's rmvpe.pt")
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise ModelFileError(path, f"tensor shapes do not fit RMVPE ({first})", "use RVC's rmvpe.pt") from None
    model = model.eval().float()
    fold_batchnorm(model)
    return RMVPE(model.to(device), device)


def fold_batchnorm(model: Any) -> None:
    """Fold each eval-mode BatchNorm into the convolution before it (inference only, in place).

    conv -> BN is one affine map per output channel, so the U-Net computes the same function with
    about a quarter fewer passes over its largest tensors. The folded weights are computed in
    float64; the result differs from the unfolded network by float32 rounding only (~1e-6).
    """
    import torch
    from torch import nn

    for sequential in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        layers = list(sequential)
        for index in range(len(layers) - 1):
            conv, norm = layers[index], layers[index + 1]
            if not isinstance(norm, nn.BatchNorm2d) or not isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)):
                continue
            if norm.running_var is None or norm.running_mean is None:  # no running statistics: nothing to fold
                continue
            scale = norm.weight.double() / torch.sqrt(norm.running_var.double() + norm.eps)  # [C_out]
            shift = norm.bias.double() - norm.running_mean.double() * scale
            weight = conv.weight.double()
            # Conv2d weights are [C_out, C_in, kh, kw]; ConvTranspose2d weights are [C_in, C_out, kh, kw].
            shape = (1, -1, 1, 1) if isinstance(conv, nn.ConvTranspose2d) else (-1, 1, 1, 1)
            bias = conv.bias.double() * scale + shift if conv.bias is not None else shift
            conv.weight = nn.Parameter((weight * scale.view(shape)).float(), requires_grad=False)
            conv.bias = nn.Parameter(bias.float(), requires_grad=False)
            sequential[index + 1] = nn.Identity()


def _key_differences(expected: dict[str, Any], found: dict[str, Any]) -> tuple[list[str], list[str]]:
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    return missing, unexpected


def get_rmvpe(path: str | Path, device: str = "cpu", cache: ModelCache | None = None) -> RMVPE:
    """The model for `path` on `device`, through `cache` when given (reloaded if the file changes)."""
    from infer_pack.cache import file_key

    path = Path(path)
    if not path.is_file():
        raise AssetMissingError(path, DEFAULT_ASSET)
    if cache is None:
        return load_rmvpe(path, device)
    return cache.get_or_load(("rmvpe", file_key(path), str(device)), lambda: load_rmvpe(path, device))


def estimate_rmvpe(
    audio_16k: np.ndarray,
    n_frames: int,
    *,
    rmvpe_path: str | Path | None,
    cache: ModelCache | None = None,
    device: str = "cpu",
    threshold: float = RVC_THRESHOLD,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> np.ndarray:
    """f0 [n_frames] float64 Hz (0 = unvoiced) with RVC's threshold 0.03."""
    if rmvpe_path is None:
        raise AssetMissingError("rmvpe.pt", DEFAULT_ASSET)
    model = get_rmvpe(rmvpe_path, device, cache)
    return fit_to_frames(model.f0(audio_16k, threshold, progress=progress, cancel=cancel), n_frames)
