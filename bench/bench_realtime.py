"""Streaming conversion: latency and compute per block, ours vs RVC's realtime recipe, and drift.

Models: the real-size v2 / 40k / f0 voice (reference file, else random weights) and a real-size
HuBERT Base with random weights (as bench_convert); pm f0, no index; device rate 48 kHz.

RVC's realtime recipe (`gui_v1.py` + `rtrvc.py`, written out here on the same networks): block
0.25 s, crossfade 0.05 s (fade min(crossfade, 40 ms)), extra context 2.5 s, SOLA search 0.01 s; the
content encoder over the whole window; f0 over the newest block + 50 ms into a sliding cache; the
synthesiser's flow from 24 frames before the returned ones, its decoder over the returned frames
only (zero padding at both edges), a fresh prior-noise draw every block. Algorithmic latency
2 x block + crossfade + search = 0.56 s at its defaults.

Ours: the same 2.5 s of extra context (what keeps the quality: see the "context" rows), a 40 ms
crossfade (= the fade, so no unused frames between the fade and the window's end), the decoder with
4 frames of left context, the prior noise drawn once per stream frame (consecutive blocks agree
where they overlap). The lower latency comes from the smaller blocks; the work per block is the
content encoder over the whole window plus the decoder over the block, so small blocks need a
machine that does that work within the block's duration.

Quality proxy (random weights: no listening test is possible): with noise off in both, the log
spectral distance (dB) of the streamed output to the offline conversion of the same input, which
sees all the context; and the largest sample step at block seams relative to the largest one
inside blocks (1 = no audible click).

--quick: compute per block and latency for blocks of 0.25 and 0.1 s only (about 30 s here); the
full run adds 0.15 s, the distances to offline, the seam steps and a 120 s drift stream.

    python -m bench.bench_realtime [--quick] [--device cpu]
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import numpy as np

from bench.common import BenchRow, area_main

DEVICE_RATE = 48000
BLOCKS_S = (0.25, 0.15, 0.1)


def _converter(device: str) -> tuple[Any, str]:
    import torch

    from bench.bench_convert import _random_hubert, _voice
    from infer_pack.pipeline import VoiceConverter

    voice, note = _voice()
    return VoiceConverter(voice, _random_hubert(device), None, device, dtype=torch.float32), note


def ours_settings(block_s: float, **overrides: Any) -> Any:
    from infer_pack.realtime import StreamSettings

    values = {"block_time_s": block_s, "crossfade_time_s": 0.04, "extra_time_s": 2.5, "f0_method": "pm"} | overrides
    return StreamSettings(**values)


def rvc_settings(block_s: float = 0.25, **overrides: Any) -> Any:
    from infer_pack.realtime import StreamSettings

    values = {"block_time_s": block_s, "crossfade_time_s": 0.05, "extra_time_s": 2.5, "sola_search_s": 0.01,
              "f0_method": "pm", "decoder_context_frames": 0} | overrides  # fmt: skip
    return StreamSettings(**values)


def rvc_recipe(converter: Any, settings: Any) -> Any:
    """A stream that synthesises as rtrvc.py does (see the module doc); input handling and SOLA as ours."""
    import torch

    from infer_pack.realtime import StreamingConverter

    class RVCRecipe(StreamingConverter):
        def _synthesize(self, phone: np.ndarray, coarse: np.ndarray | None, hz: np.ndarray | None) -> np.ndarray:
            g = self.geometry
            net = self.converter.synthesizer
            dev = torch.device(self.converter.device)
            with torch.inference_mode():
                phone_t = torch.from_numpy(np.ascontiguousarray(phone, dtype=np.float32))[None].to(dev)
                lengths = torch.tensor([phone.shape[0]], device=dev)
                sid = torch.tensor([0], device=dev)
                pitch_t = None if coarse is None else torch.from_numpy(coarse)[None].to(dev)
                gvec = net.emb_g(sid).unsqueeze(-1)
                m_p, logs_p, x_mask = net.enc_p(phone_t, pitch_t, lengths)
                flow_head = max(g.extra - 24, 0)
                dec_head = g.extra - flow_head
                m_p, logs_p, x_mask = m_p[:, :, flow_head:], logs_p[:, :, flow_head:], x_mask[:, :, flow_head:]
                noise = 0.0 if self.settings.deterministic else torch.randn_like(m_p) * 0.66666
                z_p = (m_p + torch.exp(logs_p) * noise) * x_mask
                z = net.flow(z_p, x_mask, g=gvec, reverse=True)[:, :, dec_head : dec_head + g.returned]
                f0 = None if hz is None else torch.from_numpy(hz[g.extra : g.extra + g.returned])[None].to(dev)
                audio = net.dec(z * x_mask[:, :, dec_head : dec_head + g.returned], f0, g=gvec,
                                excitation_noise=not self.settings.deterministic)[0, 0].float().cpu().numpy()  # fmt: skip
            return audio

        def _slide_noise(self) -> None:
            return None

    return RVCRecipe(converter, settings, input_rate=DEVICE_RATE)


def _stream(converter: Any, settings: Any, rvc: bool) -> Any:
    from infer_pack.realtime import StreamingConverter

    if rvc:
        return rvc_recipe(converter, settings)
    return StreamingConverter(converter, settings, input_rate=DEVICE_RATE)


def _block_times(stream: Any, audio: np.ndarray, blocks: int) -> list[float]:
    times = []
    for number in range(blocks):
        start = number * stream.block_size % (audio.shape[0] - stream.block_size)
        began = time.perf_counter()
        stream.process(audio[start : start + stream.block_size])
        times.append(time.perf_counter() - began)
    return times[1:]  # the first block warms caches up


def _compute_rows(converter: Any, audio: np.ndarray, quick: bool, note: str) -> list[BenchRow]:
    rows = []
    blocks = 2 if quick else 40
    for block_s in (0.25, 0.1) if quick else BLOCKS_S:
        ours = _stream(converter, ours_settings(block_s), rvc=False)
        base = _stream(converter, rvc_settings(block_s), rvc=True)
        ours_t, base_t = [], []
        for _ in range(2):  # interleaved halves: both see the same machine load
            ours_t += _block_times(ours, audio, blocks // 2 + 1)
            base_t += _block_times(base, audio, blocks // 2 + 1)
        ours_ms, base_ms = statistics.median(ours_t) * 1000, statistics.median(base_t) * 1000
        budget_ms = block_s * 1000
        extra = {"block_s": block_s, "latency_ours_s": ours.latency_s, "latency_rvc_s": base.latency_s,
                 "keeps_up_ours": ours_ms < budget_ms, "keeps_up_rvc": base_ms < budget_ms,
                 "p95_ours_ms": float(np.percentile(ours_t, 95) * 1000), "p95_rvc_ms": float(np.percentile(base_t, 95) * 1000)}  # fmt: skip
        rows.append(BenchRow(
            "realtime", f"compute per block, block {block_s:g} s", "ms", ours_ms, base_ms, True,
            f"{note}; latency ours {ours.latency_s:.2f} s vs RVC recipe {base.latency_s:.2f} s; ours {_verdict(ours_ms, budget_ms)}, "
            f"RVC recipe {_verdict(base_ms, budget_ms)} on this device ({os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})", extra,
        ))  # fmt: skip
        rows.append(BenchRow("realtime", f"algorithmic latency, block {block_s:g} s", "s", ours.latency_s, base.latency_s,
                             True, "2 x block + crossfade + SOLA search"))  # fmt: skip
    return rows


def _verdict(ms: float, budget_ms: float) -> str:
    return "keeps up" if ms < budget_ms else "too slow"


def _log_spectral_distance(a: np.ndarray, b: np.ndarray, rate: int) -> float:
    """Mean |20 log10 |STFT a| - 20 log10 |STFT b|| over 32 ms frames (dB), floor -80 dB."""
    from scipy import signal

    n = min(a.shape[0], b.shape[0])
    _, _, sa = signal.stft(a[:n], fs=rate, nperseg=rate // 31)
    _, _, sb = signal.stft(b[:n], fs=rate, nperseg=rate // 31)
    floor = 1e-4
    return float(np.mean(np.abs(20 * np.log10(np.abs(sa) + floor) - 20 * np.log10(np.abs(sb) + floor))))


def _seam_ratio(out: np.ndarray, block: int) -> float:
    steps = np.abs(np.diff(out))
    seams = np.arange(1, out.shape[0] // block) * block - 1
    inside = np.delete(steps, seams)
    return float(steps[seams].max() / inside.max())


def _quality_rows(converter: Any, note: str) -> list[BenchRow]:
    """Distance to the offline conversion (noise off everywhere), ours vs RVC's recipe, and context."""
    from bench.bench_convert import synthetic_speech
    from infer_pack.pipeline import ConversionParams, VoiceConverter, resample
    from infer_pack.realtime import convert_stream

    class NoNoise:
        def __init__(self, net: Any) -> None:
            self.net = net

        def infer(self, *args: Any, **kwargs: Any) -> Any:
            return self.net.infer(*args, noise_scale=0.0, excitation_noise=False, **kwargs)

    seconds = 8.0
    audio16 = synthetic_speech(seconds, seed=11)
    offline = VoiceConverter(converter.voice, converter.encoder, None, synthesizer=NoNoise(converter.synthesizer))  # type: ignore[arg-type]
    reference, rate = offline.convert(audio16, ConversionParams(f0_method="pm", index_rate=0.0, rms_mix_rate=1.0, protect=0.5))
    reference = resample(reference, rate, DEVICE_RATE)
    audio = resample(audio16, 16000, DEVICE_RATE)
    skip = DEVICE_RATE // 2  # the stream starts from silence: compare from 0.5 s on

    def measure(settings: Any, rvc: bool) -> tuple[float, float]:
        stream = _stream(converter, settings, rvc)
        run = convert_stream(stream, audio)
        return _log_spectral_distance(run.audio[skip:], reference[skip:], DEVICE_RATE), _seam_ratio(run.audio, stream.output_block_size)

    det = {"deterministic": True, "rms_mix_rate": 1.0}
    rows = []
    base_lsd, base_seam = measure(rvc_settings(0.25, **det), rvc=True)
    for block_s in BLOCKS_S:
        lsd, seam = measure(ours_settings(block_s, **det), rvc=False)
        rows.append(BenchRow("realtime", f"distance to offline, block {block_s:g} s", "dB (log spectral)", lsd, base_lsd,
                             True, f"{note}; baseline: RVC recipe at its defaults (block 0.25 s); noise off; lower = "
                             "closer to the conversion that sees all context"))  # fmt: skip
        rows.append(BenchRow("realtime", f"seam step / largest inner step, block {block_s:g} s", "ratio", seam, base_seam,
                             True, "largest sample step at block seams over the largest inside blocks"))  # fmt: skip
    for extra_s in (1.0, 0.5):
        lsd, _ = measure(ours_settings(0.25, extra_time_s=extra_s, **det), rvc=False)
        rows.append(BenchRow("realtime", f"context: distance to offline, extra {extra_s:g} s (ours, block 0.25 s)",
                             "dB (log spectral)", lsd, None, True, "what the extra context buys"))  # fmt: skip
    return rows


def _drift_row(converter: Any, audio: np.ndarray, quick: bool) -> BenchRow:
    """Per-block time over a long stream: the last tenth's median over the first tenth's."""
    stream_s = 120.0  # 480 blocks of the real-size voice; tests/test_realtime.py runs 30 minutes on a tiny one
    block_s = 0.25
    stream = _stream(converter, ours_settings(block_s), rvc=False)
    state_before = stream.state_nbytes()
    times = _block_times(stream, audio, int(stream_s / block_s) + 1)
    tenth = max(1, len(times) // 10)
    first, last = statistics.median(times[:tenth]), statistics.median(times[-tenth:])
    return BenchRow("realtime", f"per-block time drift over {stream_s:.0f} s of stream", "last/first tenth", last / first,
                    None, True, f"median block {first * 1000:.0f} -> {last * 1000:.0f} ms; state {state_before} -> "
                    f"{stream.state_nbytes()} bytes (fixed by the settings)",
                    {"first_ms": first * 1000, "last_ms": last * 1000, "blocks": len(times)})  # fmt: skip


def run(quick: bool, device: str) -> list[BenchRow]:
    import torch

    from bench.bench_convert import synthetic_speech
    from infer_pack.pipeline import resample

    threads = torch.get_num_threads()  # torch's default, one per core: 1.6x faster per block than 1 thread here
    try:
        converter, note = _converter(device)
        note = f"{note}; torch threads {torch.get_num_threads()}"
        audio = resample(synthetic_speech(10.0, seed=5), 16000, DEVICE_RATE)
        rows = _compute_rows(converter, audio, quick, note)
        if not quick:  # on a short clip the start-up (context not yet filled) dominates the distance
            rows += _quality_rows(converter, note)
        if not quick:
            rows.append(_drift_row(converter, audio, quick))
        return rows
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    area_main(run, __doc__)


if __name__ == "__main__":
    main()
