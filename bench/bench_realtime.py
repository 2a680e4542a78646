"""Streaming conversion: ours vs RVC's realtime algorithm, per stage, per block, in one run.

RVC side: `infer_pack.rvc_realtime.RVCRealtimeStream`, RVC main's `realtime_gui.py` audio_callback +
`infer/rtrvc.py` RVC.infer (commit 4338f12c, see that module; tests/test_rvc_realtime.py checks it
against a straight-line transcription of the callback) on the same networks.

Models: the v2 / 40k / f0 voice (reference file, else random weights of that size) and a full-size
HuBERT Base with random weights (as bench_convert); pm, index off, device rate 48 kHz, one torch
thread (CPU time per block is then the figure to compare on a shared machine; the load average is
printed beside every timing). Settings:

  * "RVC defaults": block 0.25 s, crossfade 0.05 s, extra 2.5 s, SOLA search 0.01 s, both engines;
  * "RVC defaults + int8": ours at RVC's settings with the int8 content encoder and decoder (`preset="int8"`);
  * "fast preset": ours with `preset="fast"` (extra 1.0 s, int8 content encoder, int8 decoder, no
    decoder context) against RVC's engine at its defaults.

The int8 stages' own cost: the fast preset's output against the same settings in float32 (log-spectral
distance, and the median pitch difference in cents of the two outputs measured by pm), and the fast
preset's CPU per block against the block's length at several block sizes (which block keeps up on a
free core).

Rows: CPU ms per block per stage (ours vs RVC), total CPU and wall per block, late blocks (wall
time over the block's duration) over a stream, algorithmic latency, and the log-spectral distance
(dB) of each stream to the offline conversion of the same input with noise off everywhere.

--quick: 6 blocks for the stage figures, a 10 s stream for late blocks, 6 s for the distances;
the full run uses 40 blocks, a 10-minute stream for the fast preset and a 1-minute stream at RVC's
defaults (where every block takes about twice its length on one core, so all are late).

    python -m bench.bench_realtime [--quick] [--device cpu]
"""

from __future__ import annotations

import os
import statistics
from typing import Any

import numpy as np

from bench.common import BenchRow, area_main

DEVICE_RATE = 48000
STAGE_ROWS = ("resample_in", "content", "f0", "prior", "decoder", "resample_out", "envelope", "sola")


def _converter(device: str) -> tuple[Any, str]:
    import torch

    from bench.bench_convert import _random_hubert, _voice
    from infer_pack.pipeline import VoiceConverter

    voice, note = _voice()
    return VoiceConverter(voice, _random_hubert(device), None, device, dtype=torch.float32), note


def rvc_settings(block_s: float = 0.25, **overrides: Any) -> Any:
    from infer_pack.realtime import StreamSettings

    values = {"block_time_s": block_s, "crossfade_time_s": 0.05, "extra_time_s": 2.5, "sola_search_s": 0.01,
              "f0_method": "pm"} | overrides  # fmt: skip
    return StreamSettings(**values)


def _stream(converter: Any, settings: Any, rvc: bool) -> Any:
    from infer_pack.realtime import StreamingConverter
    from infer_pack.rvc_realtime import RVCRealtimeStream

    engine = RVCRealtimeStream if rvc else StreamingConverter
    return engine(converter, settings, input_rate=DEVICE_RATE)


def _load() -> str:
    return f"load avg {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def _per_stage(stream: Any, audio: np.ndarray, blocks: int) -> dict[str, list[float]]:
    """CPU seconds per stage per block (plus 'total_cpu' and 'total_wall'); the first block is a warm-up."""
    figures: dict[str, list[float]] = {}
    for number in range(blocks + 1):
        start = number * stream.block_size % (audio.shape[0] - stream.block_size)
        stream.process(audio[start : start + stream.block_size])
        if number == 0:
            continue
        times = stream.last_times
        for name, seconds in times.cpu.items():
            figures.setdefault(name, []).append(seconds)
        figures.setdefault("total_cpu", []).append(times.total_cpu)
        figures.setdefault("total_wall", []).append(times.total)
    return figures


def _stage_rows(label: str, ours: dict[str, list[float]], rvc: dict[str, list[float]], note: str) -> list[BenchRow]:
    def ms(values: dict[str, list[float]], name: str) -> float:
        return statistics.median(values.get(name, [0.0])) * 1000

    rows = [BenchRow("realtime", f"{label}: CPU per block, {stage}", "ms", ms(ours, stage), ms(rvc, stage), True, note)
            for stage in STAGE_ROWS]  # fmt: skip
    rows.append(BenchRow("realtime", f"{label}: CPU per block, total", "ms", ms(ours, "total_cpu"), ms(rvc, "total_cpu"),
                         True, f"{note}; {_load()}"))  # fmt: skip
    rows.append(BenchRow("realtime", f"{label}: wall per block, total", "ms", ms(ours, "total_wall"), ms(rvc, "total_wall"),
                         True, f"{note}; {_load()}"))  # fmt: skip
    return rows


def _late_blocks(stream: Any, audio: np.ndarray, seconds: float) -> tuple[int, int]:
    """(late blocks, blocks) over a stream of `seconds`: a block is late when its wall time exceeds its duration."""
    budget = stream.block_size / DEVICE_RATE
    blocks = int(seconds / budget)
    late = 0
    for number in range(blocks):
        start = number * stream.block_size % (audio.shape[0] - stream.block_size)
        stream.process(audio[start : start + stream.block_size])
        late += stream.last_times.total > budget
    return late, blocks


def _log_spectral_distance(a: np.ndarray, b: np.ndarray, rate: int) -> float:
    """Mean |20 log10 |STFT a| - 20 log10 |STFT b|| over 32 ms frames (dB), floor -80 dB."""
    from scipy import signal

    n = min(a.shape[0], b.shape[0])
    _, _, sa = signal.stft(a[:n], fs=rate, nperseg=rate // 31)
    _, _, sb = signal.stft(b[:n], fs=rate, nperseg=rate // 31)
    floor = 1e-4
    return float(np.mean(np.abs(20 * np.log10(np.abs(sa) + floor) - 20 * np.log10(np.abs(sb) + floor))))


def _distances(converter: Any, configs: dict[str, tuple[Any, bool]], seconds: float) -> dict[str, float]:
    """Log-spectral distance of each stream (noise off) to the offline conversion (noise off)."""
    from dataclasses import replace

    from infer_pack.pipeline import ConversionParams, VoiceConverter, resample
    from infer_pack.realtime import convert_stream
    from infer_pack.synthetic import synthetic_speech

    class NoNoise:
        def __init__(self, net: Any) -> None:
            self.net = net

        def infer(self, *args: Any, **kwargs: Any) -> Any:
            return self.net.infer(*args, noise_scale=0.0, excitation_noise=False, **kwargs)

    audio16 = synthetic_speech(seconds, seed=11)
    offline = VoiceConverter(converter.voice, converter.encoder, None, synthesizer=NoNoise(converter.synthesizer))  # type: ignore[arg-type]
    reference, rate = offline.convert(audio16, ConversionParams(f0_method="pm", index_rate=0.0, rms_mix_rate=1.0, protect=0.5))
    reference = resample(reference, rate, DEVICE_RATE)
    audio = resample(audio16, 16000, DEVICE_RATE)
    skip = DEVICE_RATE * 3  # from 3 s on: the streams' context has filled up
    out = {}
    for name, (settings, rvc) in configs.items():
        run = convert_stream(_stream(converter, replace(settings, deterministic=True), rvc), audio)
        out[name] = _log_spectral_distance(run.audio[skip:], reference[skip:], DEVICE_RATE)
    return out


def _late_blocks_all_threads(converter: Any, settings: Any, audio: np.ndarray, threads: int, seconds: float) -> BenchRow:
    """Late blocks of a stream with `threads` torch threads (the app's default), the other rows use one."""
    import torch

    torch.set_num_threads(threads)
    try:
        late, blocks = _late_blocks(_stream(converter, settings, rvc=False), audio, seconds)
    finally:
        torch.set_num_threads(1)
    return BenchRow("realtime", f"late blocks over {seconds:.0f} s, fast (block 0.25 s), {threads} torch threads", "blocks",
                    late, None, True, f"of {blocks} blocks; wall time per block over 0.25 s; {_load()}")  # fmt: skip


def _keeping_up(converter: Any, audio: np.ndarray, blocks_s: tuple[float, ...], blocks: int) -> list[BenchRow]:
    """The fast preset's CPU per block over the block's length, per block size (below 1 keeps up on a free core)."""
    rows = []
    for block_s in blocks_s:
        stream = _stream(converter, rvc_settings(block_s, crossfade_time_s=min(0.05, block_s), preset="fast"), rvc=False)
        cpu = statistics.median(_per_stage(stream, audio, blocks)["total_cpu"])
        rows.append(BenchRow("realtime", f"fast preset, block {block_s:g} s: CPU per block / block length", "ratio",
                             cpu / block_s, None, True,
                             f"{cpu * 1000:.0f} ms per block; latency {stream.latency_s:.2f} s; {_load()}"))  # fmt: skip
    return rows


def _pitch_cents(a: np.ndarray, b: np.ndarray, rate: int) -> float:
    """Median |pitch(a) - pitch(b)| in cents over frames voiced in both (pm, 10 ms)."""
    from infer_pack.f0 import estimate_f0
    from infer_pack.pipeline import resample

    fa = estimate_f0(resample(a, rate, 16000), "pm")
    fb = estimate_f0(resample(b, rate, 16000), "pm")
    n = min(fa.shape[0], fb.shape[0])
    voiced = (fa[:n] > 0) & (fb[:n] > 0)
    if not voiced.any():
        return float("nan")
    return float(np.median(np.abs(1200 * np.log2(fa[:n][voiced] / fb[:n][voiced]))))


def _int8_cost(converter: Any, fast: Any, seconds: float) -> list[BenchRow]:
    """The fast preset (int8 encoder and decoder) against the same settings in float32: spectrum and pitch."""
    from dataclasses import replace

    from infer_pack.pipeline import resample
    from infer_pack.realtime import convert_stream
    from infer_pack.synthetic import synthetic_speech

    audio = resample(synthetic_speech(seconds, seed=11), 16000, DEVICE_RATE)
    int8 = replace(fast, deterministic=True).validated()
    plain = replace(int8, preset="as-set", encoder_int8=False, decoder_int8=False)
    skip = DEVICE_RATE * 3
    out = {name: convert_stream(_stream(converter, s, rvc=False), audio).audio[skip:]
           for name, s in (("int8", int8), ("float", plain))}  # fmt: skip
    note = "fast preset vs the same settings in float32; noise off"
    return [
        BenchRow("realtime", "int8 cost: distance to float32", "dB (log spectral)",
                 _log_spectral_distance(out["int8"], out["float"], DEVICE_RATE), None, True, note),
        BenchRow("realtime", "int8 cost: pitch difference", "cents (median)",
                 _pitch_cents(out["int8"], out["float"], DEVICE_RATE), None, True, f"{note}; pm on both outputs"),
    ]  # fmt: skip


def run(quick: bool, device: str) -> list[BenchRow]:
    import torch

    from infer_pack.pipeline import resample
    from infer_pack.synthetic import synthetic_speech

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        converter, voice_note = _converter(device)
        note = f"{voice_note}; pm, index off, 48 kHz device, 1 torch thread"
        audio = resample(synthetic_speech(10.0, seed=5), 16000, DEVICE_RATE)
        blocks, stream_s = (6, 10.0) if quick else (40, 600.0)
        defaults, fast = rvc_settings(), rvc_settings(preset="fast")
        rvc_stats = _per_stage(_stream(converter, defaults, rvc=True), audio, blocks)
        rows = _stage_rows("RVC defaults", _per_stage(_stream(converter, defaults, rvc=False), audio, blocks), rvc_stats, note)
        rows += _stage_rows("RVC defaults + int8",
                            _per_stage(_stream(converter, rvc_settings(preset="int8"), rvc=False), audio, blocks), rvc_stats,
                            f"{note}; ours at RVC's settings, int8 encoder and decoder")  # fmt: skip
        rows += _stage_rows("fast preset", _per_stage(_stream(converter, fast, rvc=False), audio, blocks), rvc_stats,
                            f"{note}; baseline: RVC at its defaults")  # fmt: skip
        configs = {"ours": (defaults, False), "fast": (fast, False), "rvc": (defaults, True)}
        seconds = {"ours": 10.0, "fast": 10.0, "rvc": 10.0} if quick else {"ours": 60.0, "fast": 600.0, "rvc": 60.0}
        late = {name: _late_blocks(_stream(converter, s, rvc), audio, seconds[name]) for name, (s, rvc) in configs.items()}
        for name in ("ours", "fast"):
            rows.append(BenchRow("realtime", f"late blocks over {seconds[name]:.0f} s, {name} (block 0.25 s)", "blocks",
                                 late[name][0], late["rvc"][0], True,
                                 f"of {late[name][1]} blocks (RVC: of {late['rvc'][1]} over {seconds['rvc']:.0f} s); "
                                 f"wall time per block over 0.25 s; {_load()}"))  # fmt: skip
        if not quick:  # as the CLI and the tab run: torch's default threads (one per core)
            rows.append(_late_blocks_all_threads(converter, fast, audio, threads, 600.0))
        rows += _keeping_up(converter, audio, (0.1, 0.25, 0.5), 4 if quick else 20)
        latency = _stream(converter, defaults, rvc=False).latency_s
        rows.append(BenchRow("realtime", "algorithmic latency, block 0.25 s", "s", latency,
                             _stream(converter, defaults, rvc=True).latency_s, True, "2 x block + crossfade + SOLA search"))  # fmt: skip
        lsd = _distances(converter, configs, 6.0 if quick else 20.0)
        for name in ("ours", "fast"):
            rows.append(BenchRow("realtime", f"distance to offline, {name}", "dB (log spectral)", lsd[name], lsd["rvc"],
                                 True, "noise off everywhere; baseline RVC's algorithm at its defaults"))  # fmt: skip
        rows += _int8_cost(converter, fast, 6.0 if quick else 20.0)
        return rows
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    area_main(run, __doc__)


if __name__ == "__main__":
    main()
