"""End-to-end conversion speed: our pipeline vs an RVC-style path, same models, same input.

Models: the real-size v2 / 40k / f0 voice (the reference file when present, else random weights
from RVC's config) and a real-size HuBERT Base with random weights; a 768-dim IVF index of
random features (index rate 0.75). Input: a synthetic voice of 10 s and 60 s (quick: 5 s only),
f0 by pm and swift.

The baseline re-implements RVC's `Pipeline.pipeline` / `Pipeline.vc` steps as RVC orders them
(sum of absolute values by 160 shifted adds, whole-index `reconstruct_n` at load, `F.interpolate`, weight norm
kept in the synthesiser, envelope mix through torch interpolation) on the same networks. Both runs
seed the synthesiser noise the same way, so the outputs are compared sample by sample.

Ours runs as the application does: the decoder in ONNX Runtime on a CPU ("onnx engine" rows compare
it with our torch decoder). Full runs add peak memory, each conversion in a fresh process: 60 s ours
vs RVC-style, and ours on 180 s (bounded by the chunk and decoder-window sizes, not the input).

    python -m bench.bench_convert [--quick] [--device cpu]
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import BenchRow, area_main, in_fresh_process, interleaved, peak_rss_mb
from infer_pack.synthetic import synthetic_speech

SAMPLE_RATE = 16000


def _voice() -> Any:
    """The reference v2-40k-f0 voice file, or the same architecture with random weights."""
    import torch

    from configs import load_config
    from infer_pack.checkpoint import load_voice, voice_from_state_dict
    from infer_pack.models import Synthesizer

    candidates = [os.environ.get("RVC_REFERENCE_DIR", ""), str(Path(__file__).resolve().parents[2] / "shared" / "reference")]
    for folder in candidates:
        path = Path(folder) / "ref_v2_40k_f0.pth" if folder else None
        if path is not None and path.is_file():
            return load_voice(path), "reference ref_v2_40k_f0.pth"
    torch.manual_seed(1234)
    cfg = load_config("v2", "40k")
    net = Synthesizer.from_rvc_config(cfg, use_f0=True, posterior=False)
    state = {k: v.half() for k, v in net.state_dict().items()}
    return voice_from_state_dict(state, cfg, True, "bench", "v2"), "random weights (v2 40k)"


def _index(folder: Path) -> Path:
    from train.index import build_index_from_features

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((200, 768)).astype(np.float32)
    data = centres[rng.integers(0, 200, 20_000)] + 0.3 * rng.standard_normal((20_000, 768)).astype(np.float32)
    return build_index_from_features(data, folder, "bench", "v2").added_path


def rvc_style(
    voice: Any, net_g: Any, encoder: Any, index_path: Path, device: str
) -> Callable[[np.ndarray, str, int], tuple[np.ndarray, int]]:
    """RVC's offline conversion steps, written out (CPU windows: x_pad 1, x_query 6, x_center 38, x_max 41)."""
    import faiss
    import parselmouth
    import torch
    import torch.nn.functional as F
    from scipy import signal

    from infer_pack.f0 import estimate_f0, f0_to_coarse

    sr, window, x_pad, x_query, x_center, x_max = 16000, 160, 1, 6, 38, 41
    t_pad, t_pad_tgt, t_query, t_center, t_max = sr * x_pad, voice.sample_rate * x_pad, sr * x_query, sr * x_center, sr * x_max
    bh, ah = signal.butter(N=5, Wn=48, btype="high", fs=16000)
    index = faiss.read_index(str(index_path))
    big_npy = index.reconstruct_n(0, index.ntotal)
    version, tgt_sr = voice.version, voice.sample_rate

    def get_f0(x: np.ndarray, p_len: int, method: str) -> tuple[np.ndarray, np.ndarray]:
        if method == "pm":
            f0 = parselmouth.Sound(x, sr).to_pitch_ac(time_step=0.01, voicing_threshold=0.6, pitch_floor=50,
                                                      pitch_ceiling=1100).selected_array["frequency"]  # fmt: skip
            pad_size = (p_len - len(f0) + 1) // 2
            if pad_size > 0 or p_len - len(f0) - pad_size > 0:
                f0 = np.pad(f0, [[pad_size, p_len - len(f0) - pad_size]], mode="constant")
        else:
            f0 = estimate_f0(x, method, n_frames=p_len)
        return f0_to_coarse(f0), f0.copy()

    def vc(audio0: np.ndarray, pitch: Any, pitchf: Any, number: int, seed: int) -> np.ndarray:
        feats = torch.from_numpy(audio0).float().view(1, -1)
        feats = encoder.extract(feats, version)
        feats0 = feats.clone()
        npy = feats[0].cpu().numpy()
        score, ix = index.search(npy, k=8)
        weight = np.square(1 / score)
        weight /= weight.sum(axis=1, keepdims=True)
        npy = np.sum(big_npy[ix] * np.expand_dims(weight, axis=2), axis=1)
        feats = torch.from_numpy(npy).unsqueeze(0) * 0.75 + 0.25 * feats
        feats = F.interpolate(feats.permute(0, 2, 1), scale_factor=2).permute(0, 2, 1)
        feats0 = F.interpolate(feats0.permute(0, 2, 1), scale_factor=2).permute(0, 2, 1)
        p_len = audio0.shape[0] // window
        if feats.shape[1] < p_len:
            p_len = feats.shape[1]
            pitch, pitchf = pitch[:, :p_len], pitchf[:, :p_len]
        pitchff = pitchf.clone()
        pitchff[pitchf > 0] = 1
        pitchff[pitchf < 1] = 0.33
        feats = feats * pitchff.unsqueeze(-1) + feats0 * (1 - pitchff.unsqueeze(-1))
        with torch.inference_mode(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + number)
            out = net_g.infer(feats.to(device), torch.tensor([p_len], device=device), pitch.to(device),
                              pitchf.to(device), torch.tensor([0], device=device))[0][0, 0]  # fmt: skip
        return out.float().cpu().numpy()

    def change_rms(data1: np.ndarray, data2: np.ndarray, rate: float) -> np.ndarray:
        def rms(y: np.ndarray, frame: int, hop: int) -> torch.Tensor:
            padded = np.pad(y, frame // 2)
            frames = np.lib.stride_tricks.sliding_window_view(padded, frame)[::hop]
            return torch.from_numpy(np.sqrt(np.mean(np.abs(frames) ** 2, axis=-1)))[None]

        rms1 = F.interpolate(rms(data1, 16000, 8000).unsqueeze(0), size=data2.shape[0], mode="linear").squeeze()
        rms2 = F.interpolate(rms(data2, tgt_sr // 2 * 2, tgt_sr // 2).unsqueeze(0), size=data2.shape[0], mode="linear").squeeze()
        rms2 = torch.max(rms2, torch.zeros_like(rms2) + 1e-6)
        return data2 * (torch.pow(rms1, torch.tensor(1 - rate)) * torch.pow(rms2, torch.tensor(rate - 1))).numpy()

    def convert(audio: np.ndarray, method: str, seed: int) -> tuple[np.ndarray, int]:
        audio_max = np.abs(audio).max() / 0.95
        if audio_max > 1:
            audio = audio / audio_max
        audio = signal.filtfilt(bh, ah, audio)
        audio_pad = np.pad(audio, (window // 2, window // 2), mode="reflect")
        opt_ts = []
        if audio_pad.shape[0] > t_max:
            audio_sum = np.zeros_like(audio)
            for i in range(window):
                audio_sum += np.abs(audio_pad[i : i - window])
            for t in range(t_center, audio.shape[0], t_center):
                region = audio_sum[t - t_query : t + t_query]
                opt_ts.append(t - t_query + np.where(region == region.min())[0][0])
        audio_pad = np.pad(audio, (t_pad, t_pad), mode="reflect")
        p_len = audio_pad.shape[0] // window
        coarse, f0 = get_f0(audio_pad, p_len, method)
        pitch = torch.tensor(coarse[:p_len]).unsqueeze(0).long()
        pitchf = torch.tensor(f0[:p_len]).unsqueeze(0).float()
        s, t, pieces = 0, None, []
        for number, t in enumerate(opt_ts):
            t = t // window * window
            pieces.append(vc(audio_pad[s : t + 2 * t_pad + window], pitch[:, s // window : (t + 2 * t_pad) // window],
                             pitchf[:, s // window : (t + 2 * t_pad) // window], number, seed)[t_pad_tgt:-t_pad_tgt])  # fmt: skip
            s = t
        last = len(opt_ts)
        tail = (pitch[:, t // window :], pitchf[:, t // window :]) if t is not None else (pitch, pitchf)
        pieces.append(vc(audio_pad[t:] if t is not None else audio_pad, *tail, last, seed)[t_pad_tgt:-t_pad_tgt])
        out = np.concatenate(pieces)
        out = change_rms(audio, out, 0.25)
        peak = np.abs(out).max() / 0.99
        return (out / peak if peak > 1 else out).astype(np.float32), tgt_sr

    return convert


def _random_hubert(device: str) -> Any:
    import torch

    from bench.bench_hubert import _random_base_model
    from infer_pack.hubert import ContentEncoder

    return ContentEncoder(_random_base_model(device), device, torch.float32)


def _engine_row(torch_conv: Any, onnx_conv: Any, audio: np.ndarray, params: Any, seconds: float, voice_note: str) -> BenchRow:
    """engine="onnx" (ours) vs engine="torch" (baseline): same converter settings, same seed."""
    if torch_conv is None or onnx_conv.engine != "onnx":
        return BenchRow("convert", f"onnx engine pm {seconds:.0f} s", "x realtime (RTF)", float("nan"), None, True,
                        "onnx engine runs on CPU only")  # fmt: skip
    results: dict[str, np.ndarray] = {}

    def with_onnx() -> None:
        results["onnx"] = onnx_conv.convert(audio, params)[0]

    def with_torch() -> None:
        results["torch"] = torch_conv.convert(audio, params)[0]

    onnx_s, torch_s = interleaved(with_onnx, with_torch, repeats=1 if seconds > 30 else 2, warmup=seconds <= 30)
    diff = float(np.abs(results["onnx"] - results["torch"]).max())
    note = f"{voice_note}; engine onnx vs torch; max |onnx - torch| = {diff:.2e}; load avg {os.getloadavg()[0]:.1f}"
    extra = {"synthesis_s": onnx_conv.last_times.synthesis, "torch_synthesis_s": torch_conv.last_times.synthesis,
             "max_abs_diff": diff}  # fmt: skip
    return BenchRow("convert", f"onnx engine pm {seconds:.0f} s", "x realtime (RTF)", onnx_s / seconds,
                    (torch_s or 0.0) / seconds, True, note, extra)  # fmt: skip


def _converters(voice: Any, device: str, folder: Path) -> tuple[Any, Any, Any]:
    """(ours with the default engine, ours with the torch decoder or None, the RVC-style function)."""
    import torch

    from infer_pack.checkpoint import build_synthesizer
    from infer_pack.pipeline import VoiceConverter
    from infer_pack.retrieval import load_index

    encoder = _random_hubert(device)
    index_path = _index(folder)
    # The application's default: the decoder in ONNX Runtime on a CPU, torch elsewhere.
    engine = "onnx" if device == "cpu" else "torch"
    ours = VoiceConverter(voice, encoder, load_index(index_path), device, dtype=torch.float32, engine=engine,
                          onnx_cache_dir=folder / "onnx")  # fmt: skip
    torch_engine = None
    if engine != "torch":
        torch_engine = VoiceConverter(voice, encoder, ours.index, device, dtype=torch.float32,
                                      synthesizer=ours.synthesizer, engine="torch")  # fmt: skip
    baseline = rvc_style(voice, build_synthesizer(voice, device, torch.float32, fold_weight_norm=False), encoder,
                         index_path, device)  # fmt: skip
    return ours, torch_engine, baseline


def _peak_rss_child(kind: str, seconds: float, device: str) -> tuple[float, float]:
    """(peak RSS MB, wall s) of one pm conversion of `seconds` of audio by `kind` in this fresh process."""
    import tempfile
    import time

    from infer_pack.pipeline import ConversionParams

    voice, _ = _voice()
    with tempfile.TemporaryDirectory() as folder:
        ours, _, baseline = _converters(voice, device, Path(folder))
        audio = synthetic_speech(seconds, seed=7)
        started = time.perf_counter()
        if kind == "ours":
            ours.convert(audio, ConversionParams(f0_method="pm", index_rate=0.75, seed=0))
        else:
            baseline(audio, "pm", 0)
        return peak_rss_mb(), time.perf_counter() - started


def _memory_rows(device: str) -> list[BenchRow]:
    """Peak memory of a 60 s conversion, ours vs RVC-style, and of ours on 180 s (bounded by the chunk size)."""
    rows = []
    ours_mb, _ = in_fresh_process(_peak_rss_child, "ours", 60.0, device)
    base_mb, _ = in_fresh_process(_peak_rss_child, "rvc", 60.0, device)
    rows.append(BenchRow("convert", "peak RSS pm 60 s", "MB", ours_mb, base_mb, True,
                         "one conversion per fresh process (models, index and audio included)"))  # fmt: skip
    long_mb, long_s = in_fresh_process(_peak_rss_child, "ours", 180.0, device)
    rows.append(BenchRow("convert", "peak RSS pm 180 s (ours)", "MB", long_mb, None, True,
                         f"vs ours on 60 s: {long_mb / ours_mb:.2f}x; RTF {long_s / 180:.2f}",
                         {"rtf": long_s / 180}))  # fmt: skip
    return rows


def run(quick: bool, device: str) -> list[BenchRow]:
    import tempfile

    from infer_pack.pipeline import ConversionParams

    voice, voice_note = _voice()
    rows: list[BenchRow] = []
    with tempfile.TemporaryDirectory() as folder:
        converter, torch_converter, baseline = _converters(voice, device, Path(folder))
        durations = [5.0] if quick else [10.0, 60.0]  # quick fits the smoke run's time budget
        methods = ["pm"] if quick else ["pm", "swift"]
        for seconds in durations:
            audio = synthetic_speech(seconds, seed=int(seconds))
            for method in methods:
                params = ConversionParams(f0_method=method, index_rate=0.75, seed=0)
                results: dict[str, np.ndarray] = {}

                def ours(params: ConversionParams = params, audio: np.ndarray = audio, results: dict = results) -> None:
                    results["ours"] = converter.convert(audio, params)[0]

                def base(method: str = method, audio: np.ndarray = audio, results: dict = results) -> None:
                    results["base"] = baseline(audio, method, 0)[0]

                ours_s, base_s = interleaved(ours, base, repeats=1 if quick or seconds > 30 else 2, warmup=seconds <= 30)
                diff = float(np.abs(results["ours"] - results["base"]).max()) if results["ours"].shape == results["base"].shape else float("nan")
                load = os.getloadavg()[0]
                note = f"{voice_note}; decoder engine {converter.engine}; max |ours - RVC-style| = {diff:.2e}; load avg {load:.1f}"
                times = converter.last_times
                extra = {"device": device, "engine": converter.engine, "features_s": times.features, "f0_s": times.f0,
                         "synthesis_s": times.synthesis, "max_abs_diff": diff}  # fmt: skip
                rows.append(BenchRow("convert", f"{method} {seconds:.0f} s", "x realtime (RTF)", ours_s / seconds,
                                     (base_s or 0.0) / seconds, True, note, extra))  # fmt: skip
                if method == "pm":
                    rows.append(_engine_row(torch_converter, converter, audio, params, seconds, voice_note))
    if not quick:
        rows.extend(_memory_rows(device))
    return rows


def main() -> None:
    area_main(run, __doc__)


if __name__ == "__main__":
    main()
