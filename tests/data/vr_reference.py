"""Makes tests/data/vr_rvc_20240604.npz: UVR5 VR band analysis, synthesis and whole separations computed by
RVC's own code (branch 20240604, commit d60cd3d009b7e438f92f8624fa89b710d10c6a39), for
tests/test_separation_reference.py. Run once; the tests only read the .npz (no librosa needed there).

RVC's numerics run in a throwaway environment that has what RVC's requirements.txt pins for them
(Python 3.10, numpy 1.23.5, librosa 0.9.1, scipy 1.15.3, resampy, soundfile, tqdm); RVC's networks run
in this project's .venv (torch), from the same checkout. Three steps, each reading/writing --work:

    git -C RVC archive d60cd3d009b7e438f92f8624fa89b710d10c6a39 infer | tar -x -C /tmp/rvc20240604
    /tmp/rvcref/bin/python tests/data/vr_reference.py analyse --rvc /tmp/rvc20240604 --work /tmp/vrref
    .venv/bin/python tests/data/vr_reference.py mask --rvc /tmp/rvc20240604 --work /tmp/vrref
    /tmp/rvcref/bin/python tests/data/vr_reference.py stems --rvc /tmp/rvc20240604 --work /tmp/vrref \
        --out tests/data/vr_rvc_20240604.npz

The only change made to RVC's code: `cmb_spectrogram_to_wave` allocates each band with `np.ndarray`
(uninitialised memory) and never writes the top band's Nyquist row; here that buffer is zeroed, as ours is.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 44100
INPUT_SAMPLES = 11025  # 0.25 s: 23 frames in every band, one network window
AGG = 10  # RVC's default aggressiveness (data["agg"], /100 -> 0.1)
# The models: (fixture prefix, RVC file-name hint, weight seed). HP5 predicts the accompaniment with
# nets_61968KB; VR-DeEchoNormal the dry vocals with nets_new (nout 48, 4band_v3 bands).
MODELS = (("hp5", "HP5_only_main_vocal", 5), ("deecho", "VR-DeEchoNormal", 6))


def test_input() -> np.ndarray:
    """Stereo float32 [2, INPUT_SAMPLES]: tones in every band plus white noise up to 22.05 kHz."""
    t = np.arange(INPUT_SAMPLES) / SAMPLE_RATE
    noise = np.random.default_rng(27).random((2, INPUT_SAMPLES)) - 0.5
    left = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 3100 * t) + 0.05 * np.sin(2 * np.pi * 9000 * t)
    right = 0.2 * np.sin(2 * np.pi * 330 * t) + 0.05 * np.sin(2 * np.pi * 17000 * t)
    return (np.stack([left, right]) + 0.05 * noise).astype(np.float32)


def fixed_mask(shape: tuple[int, ...]) -> np.ndarray:
    """A smooth mask [2, rows, frames] in 0.1..0.9 that tests synthesis without a network."""
    rows = np.arange(shape[1])[:, None]
    frames = np.arange(shape[2])[None, :]
    one = 0.5 + 0.4 * np.sin(0.037 * rows + 0.11 * frames)
    return np.stack([one, one[::-1]]).astype(np.float32)


def seeded_weights(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """Float16 weights for a state dict's float tensors, keys in sorted order from default_rng(seed):
    kernels uniform in +-1/sqrt(fan_in), 1-D weights (norm gains) 0.8..1.2, biases +-0.05, BN means
    +-0.1, BN variances 0.5..1.5."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for key in sorted(shapes):
        shape = shapes[key]
        u = rng.random(shape)
        if key.endswith("running_var"):
            value = 0.5 + u
        elif key.endswith("running_mean"):
            value = 0.2 * (u - 0.5)
        elif len(shape) >= 2:
            value = (2 * u - 1) / np.sqrt(np.prod(shape[1:]))
        elif key.endswith("weight"):
            value = 0.8 + 0.4 * u
        else:
            value = 0.1 * (u - 0.5)
        out[key] = value.astype(np.float16)
    return out


def _rvc(root: Path) -> types.SimpleNamespace:
    sys.path.insert(0, str(root))
    from infer.lib.uvr5_pack.lib_v5 import spec_utils
    from infer.lib.uvr5_pack.lib_v5.model_param_init import ModelParameters

    def params(name: str) -> Any:
        return ModelParameters(str(root / "infer/lib/uvr5_pack/lib_v5/modelparams" / name))

    return types.SimpleNamespace(spec_utils=spec_utils, params=params)


def analyse(rvc: Path, work: Path) -> None:
    """RVC's AudioPre._path_audio_ up to the network (input already at 44.1 kHz, as librosa.load gives it)."""
    import librosa

    r = _rvc(rvc)
    mp = r.params("4band_v2.json")
    x_wave: dict[int, np.ndarray] = {}
    x_spec: dict[int, np.ndarray] = {}
    bands_n = len(mp.param["band"])
    for d in range(bands_n, 0, -1):
        bp = mp.param["band"][d]
        if d == bands_n:
            x_wave[d] = np.asfortranarray(test_input())
        else:
            x_wave[d] = librosa.resample(x_wave[d + 1], orig_sr=mp.param["band"][d + 1]["sr"], target_sr=bp["sr"],
                                         res_type=bp["res_type"])  # fmt: skip
        x_spec[d] = r.spec_utils.wave_to_spectrogram_mt(x_wave[d], bp["hl"], bp["n_fft"], mp.param["mid_side"],
                                                        mp.param["mid_side_b2"], mp.param["reverse"])  # fmt: skip
        if d == bands_n:
            pre_filter = mp.param["pre_filter_stop"] - mp.param["pre_filter_start"]
            high_end_h = (bp["n_fft"] // 2 - bp["crop_stop"]) + pre_filter
            high_end = x_spec[d][:, bp["n_fft"] // 2 - high_end_h : bp["n_fft"] // 2, :]
    combined = r.spec_utils.combine_spectrograms(x_spec, mp)
    work.mkdir(parents=True, exist_ok=True)
    np.savez(work / "analysis.npz", combined=combined, high_end=high_end, high_end_h=high_end_h,
             band_lengths=np.array([x_wave[d].shape[-1] for d in range(1, bands_n + 1)]))  # fmt: skip


def mask(rvc: Path, work: Path) -> None:
    """RVC's `inference` (lib/uvr5_pack/utils.py) with each model on the combined spectrogram, CPU float32."""
    import torch

    sys.path.insert(0, str(rvc))
    for unused in ("librosa", "soundfile"):  # the layers import spec_utils for crop_center only
        sys.modules.setdefault(unused, types.ModuleType(unused))
    from infer.lib.uvr5_pack.lib_v5 import nets_61968KB
    from infer.lib.uvr5_pack.lib_v5.nets_new import CascadedNet
    from infer.lib.uvr5_pack.utils import inference

    combined = np.load(work / "analysis.npz")["combined"]
    preds = {}
    for prefix, name, seed in MODELS:
        model = CascadedNet(672 * 2, 48) if "DeEcho" in name else nets_61968KB.CascadedASPPNet(672 * 2)
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if v.is_floating_point()}
        state = {k: torch.from_numpy(v.astype(np.float32)) for k, v in seeded_weights(shapes, seed).items()}
        model.load_state_dict(state, strict=False)
        model.eval()
        data = {"postprocess": False, "tta": False, "window_size": 512, "agg": AGG, "high_end_process": "mirroring"}
        aggressiveness = {"value": AGG / 100, "split_bin": 85}
        with torch.no_grad():
            pred, _, _ = inference(combined, "cpu", model, aggressiveness, data)
        preds[prefix] = pred
    np.savez(work / "masks.npz", **preds)


def stems(rvc: Path, work: Path, out: Path) -> None:
    """RVC's mirroring and cmb_spectrogram_to_wave: a fixed mask, then each model's two stems."""
    import librosa

    r = _rvc(rvc)
    spec_utils = r.spec_utils
    zeroed = {k: getattr(np, k) for k in dir(np) if not k.startswith("__")}
    zeroed["ndarray"] = lambda shape, dtype: np.zeros(shape, dtype)
    spec_utils.np = types.SimpleNamespace(**zeroed)
    mp = r.params("4band_v2.json")
    analysis = np.load(work / "analysis.npz")
    combined, high_end, high_end_h = analysis["combined"], analysis["high_end"], int(analysis["high_end_h"])

    def to_wave(spec: np.ndarray, params: Any) -> np.ndarray:
        mirrored = spec_utils.mirroring("mirroring", spec, high_end, params)
        return spec_utils.cmb_spectrogram_to_wave(spec, params, high_end_h, mirrored).T.astype(np.float32)

    masked = combined * fixed_mask(combined.shape)
    fixtures = {"input": test_input(), "combined": combined, "band_lengths": analysis["band_lengths"],
                "masked_wave": to_wave(masked, mp)}  # fmt: skip
    masks = np.load(work / "masks.npz")
    phase = np.exp(1.0j * np.angle(combined))
    for prefix, name, _ in MODELS:
        predicted = masks[prefix] * phase  # AudioPre: y_spec_m (HP5: instrument; DeEcho: dry vocals)
        params = r.params("4band_v3.json" if "DeEcho" in name else "4band_v2.json")
        fixtures[f"{prefix}_predicted"] = to_wave(predicted, params)
        fixtures[f"{prefix}_rest"] = to_wave(combined - predicted, params)
    fixtures["librosa_version"] = np.array(librosa.__version__)
    np.savez_compressed(out, **fixtures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("analyse", "mask", "stems"))
    parser.add_argument("--rvc", type=Path, required=True, help="an RVC checkout at the commit above")
    parser.add_argument("--work", type=Path, required=True, help="a scratch folder shared by the steps")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("vr_rvc_20240604.npz"))
    args = parser.parse_args()
    if args.step == "analyse":
        analyse(args.rvc, args.work)
    elif args.step == "mask":
        mask(args.rvc, args.work)
    else:
        stems(args.rvc, args.work, args.out)


if __name__ == "__main__":
    main()
