"""The web server's memory over a user's sequence at real model sizes: jobs in their own processes or not.

The sequence (what a user does in one sitting): train the real v2-40k networks from scratch (one short
epoch), build the index, then convert 10 s of audio three times with the real-size reference voice and
a HuBERT Base of real size (random weights), as the app runs them:

* ours: `JobRunner(isolate=True)` + `ConversionWorkers`: every step in its own spawned process, the
  conversions in a worker process (the app's design);
* baseline: the same API calls inside the server's process (`JobRunner(isolate=False)`, conversions
  with the server's model cache): how the app ran before, and how RVC's WebUI runs its inference.

Each variant runs in a fresh process. Rows: the server's peak RSS, its settled RSS after the sequence
(what it keeps holding), and the largest RSS seen in any child process (sampled every 0.1 s).

    python -m bench.bench_memory [--quick]
"""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import BenchRow, area_main, in_fresh_process, peak_rss_mb

EXPERIMENT = "memory"
RATE = 40000


def _rss_mb(pid: int | str = "self") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return 0.0
    return 0.0


def _write_real_size_hubert(path: Path) -> None:
    """HuBERT Base (95 M weights, random) with a 256-dim final_proj, in s3prl's fairseq-free layout."""
    import torch
    from transformers import HubertConfig, HubertModel

    from infer_pack.hubert_format import transformers_to_fairseq_name

    torch.manual_seed(0)
    model = HubertModel(HubertConfig())
    state = {}
    for name, tensor in model.state_dict().items():
        renamed = transformers_to_fairseq_name(name)
        if renamed is not None:
            state[renamed] = tensor.clone()
    state["final_proj.weight"] = torch.randn(256, 768) * 0.02
    state["final_proj.bias"] = torch.zeros(256)
    cfg = {"encoder_embed_dim": 768, "encoder_ffn_embed_dim": 3072, "encoder_attention_heads": 12,
           "encoder_layers": 12, "conv_pos": 128, "conv_pos_groups": 16, "extractor_mode": "default"}
    torch.save({"model_weight": state, "model_cfg": cfg}, path)


def _speech(seconds: float, rate: int, f0: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(f0 * (1.0 + 0.03 * np.sin(2 * np.pi * 5.0 * t))) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 9))
    envelope = np.clip(np.sin(2 * np.pi * 1.5 * t), 0.0, None) ** 0.5
    return (0.3 * voice * envelope + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def _project(root: Path, items: int, quick: bool) -> Path:
    """A project with the reference voice, a real-size HuBERT and an experiment ready to train."""
    import soundfile as sf

    from bench.bench_convert import _voice
    from infer_pack.checkpoint import save_voice
    from train.experiment import Experiment, ExperimentMetadata, save_npy

    (root / "weights").mkdir(parents=True)
    voice, _note = _voice()
    save_voice(root / "weights" / "voice.pth", voice)
    _write_real_size_hubert(root / "hubert_base.pt")
    (root / "inputs").mkdir()
    sf.write(str(root / "inputs" / "take.wav"), _speech(5.0 if quick else 10.0, 16000, 160.0, 9), 16000)

    experiment = Experiment(root / "logs" / EXPERIMENT)
    experiment.write_metadata(ExperimentMetadata(sample_rate_tag="40k", version="v2", use_f0=True))
    rng = np.random.default_rng(7)
    seconds = 3.0
    for i in range(items):
        segment = Experiment.segment_name(0, i)
        path = experiment.gt_wav_path(segment)
        path.parent.mkdir(parents=True, exist_ok=True)
        f0_hz = 120.0 + 20.0 * i
        sf.write(str(path), _speech(seconds, RATE, f0_hz, i), RATE, subtype="FLOAT")
        frames = int(seconds * 100) + 1
        f0 = np.full(frames, f0_hz)
        save_npy(experiment.f0_hz_path(segment), f0)
        mel = 1127.0 * np.log(1.0 + f0 / 700.0)
        lo, hi = 1127.0 * np.log(1.0 + 50.0 / 700.0), 1127.0 * np.log(1.0 + 1100.0 / 700.0)
        save_npy(experiment.f0_coarse_path(segment),
                 np.clip(np.rint((mel - lo) * 254.0 / (hi - lo) + 1.0), 1, 255).astype(np.int64))
        save_npy(experiment.feature_path(segment, "v2"),
                 (rng.standard_normal((int(seconds * 50), 768)) * 0.1).astype(np.float32))
    experiment.ensure_mute_audio_and_f0("40k")
    save_npy(experiment.mute_feature_path("v2"), np.zeros((149, 768), dtype=np.float32))
    return root


class _ChildSampler:
    """Polls the RSS of the given processes every 0.1 s and keeps the largest."""

    def __init__(self, pids: Any) -> None:
        self._pids = pids
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            for pid in self._pids():
                self.peak_mb = max(self.peak_mb, _rss_mb(pid))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_mb


def prepare(folder: str, quick: bool) -> None:
    """Build the project (run in its own process, so that its memory is not counted for the server)."""
    _project(Path(folder), items=2 if quick else 4, quick=quick)


def sequence(folder: str, isolate: bool, quick: bool) -> dict[str, float]:
    """Run the sequence as the app's server would; returns its memory figures (MB) and the time taken."""
    from infer_pack.cache import ModelCache
    from infer_pack.progress import CancelToken
    from tools.jobproc import ConversionWorkers, JobCall
    from tools.jobs import JobRunner
    from tools.project import Project

    project = Project.at(folder)
    started_rss = _rss_mb()
    cache = ModelCache(max_items=4)
    runner = JobRunner(isolate=isolate, cache=cache)
    workers = ConversionWorkers(size=1)
    sampler = _ChildSampler(lambda: [j.pid for j in runner.running() if j.pid] + workers.pids())
    started = time.perf_counter()
    try:
        train = JobCall("train_model", dict(root=project, experiment=EXPERIMENT, epochs=1, batch_size=2,
                                            save_every_epochs=1, use_pretrained=False, device="cpu"),
                        inject=("progress", "cancel", "on_metrics"))
        index = JobCall("train_index", dict(project=project, experiment=EXPERIMENT))
        for kind, call in (("train", train), ("index", index)):
            snapshot = runner.wait(runner.start(kind, call).job_id)
            if snapshot.state != "done":
                raise RuntimeError(f"{kind} ended {snapshot.state}: {snapshot.error}")
        for _ in range(1 if quick else 3):
            convert = JobCall("convert_voice", dict(project=project, model=project.root / "weights" / "voice.pth",
                                                    input_path=project.root / "inputs" / "take.wav",
                                                    f0_method="pm", device="cpu"), inject=("cache", "progress"))
            if isolate:
                workers.call(convert)
            else:
                convert.invoke(progress=lambda *_: None, cancel=CancelToken(), on_metrics=lambda *_: None,
                               cache=cache)
    finally:
        seconds = time.perf_counter() - started
        child_peak = sampler.stop()
        workers.close()
    gc.collect()
    time.sleep(1.0)
    return {"start": started_rss, "peak": peak_rss_mb(), "settled": _rss_mb(), "child_peak": child_peak,
            "seconds": seconds}


def run(quick: bool = False, device: str = "cpu") -> list[BenchRow]:
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-memory-") as folder:
        ours_root, base_root = Path(folder) / "ours", Path(folder) / "baseline"
        in_fresh_process(prepare, str(ours_root), quick)
        shutil.copytree(ours_root, base_root, symlinks=True)
        ours = in_fresh_process(sequence, str(ours_root), True, quick)
        base = in_fresh_process(sequence, str(base_root), False, quick)
    what = "train (v2-40k real size, 1 epoch) + index + " + ("1 conversion of 5 s" if quick else "3 conversions of 10 s")
    notes = (f"{what}; the server here is the job machinery alone (the app adds Gradio, about 330 MB); "
             "baseline: the same calls in the server's process")
    return [
        BenchRow("memory", "server peak RSS over the sequence", "MB", ours["peak"], base["peak"], notes=notes),
        BenchRow("memory", "server settled RSS after the sequence", "MB", ours["settled"], base["settled"],
                 notes=f"at start {ours['start']:.0f} / {base['start']:.0f} MB"),
        BenchRow("memory", "largest child process RSS (sampled)", "MB", ours["child_peak"], None,
                 notes="the job or worker process; its memory is returned when it ends"),
        BenchRow("memory", "sequence wall time", "s", ours["seconds"], base["seconds"],
                 notes="includes starting the job and worker processes"),
    ]


def main() -> None:
    area_main(run, __doc__)


if __name__ == "__main__":
    main()
