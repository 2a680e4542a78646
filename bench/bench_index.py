"""Feature index, every kind side by side: cost, search quality, and what it changes in a conversion.

Data: 768-dim clustered vectors (like HuBERT frames: many phone-like clusters, each with a low-rank
spread plus noise); queries are fresh points of the same clusters with extra noise (another
speaker's frames). N = 20k / 100k / 500k rows (`--quick`: 5k, for CI smoke runs). Above 200k rows
every kind holds RVC's 10,000 k-means centres: the reduction runs once (its own row) and each kind
is built from the centres.

Per kind and size:
  build time and peak memory (each build in a fresh process; its input rows are part of the peak),
  file size, search time per 1000 queries (baseline: exact flat search), recall@8 against exact
  search in the kind's own metric, the blend error (mean |retrieved - exact-search retrieved|,
  baseline: mean |query - exact-search retrieved|, what retrieval moves a frame; the ratio is the part
  of retrieval's effect the approximation gets wrong; once against exact L2 search and once against
  exact search in the kind's own metric), and the audio difference: RMS of (conversion
  with this kind - conversion with exact L2 search) over RMS of the exact one, baseline the same for
  a conversion without an index. Cosine kinds are compared with the exact L2 blend (RVC's retrieval),
  so their blend and audio rows include the change of metric.

The conversion: the reference v2-40k voice (random weights from RVC's config when absent), 3 s of a
synthetic voice (quick: 1.5 s), pm, index rate 0.75, seed 0, torch decoder. Its content frames are
held-out frames of the synthetic set in place of HuBERT's: HuBERT with random weights gives frames far
from every synthetic cluster, where no index kind would be searching its data.

    python -m bench --only index [--quick]
    python -m bench.bench_index [--quick] [--sizes 20000 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import BenchRow, in_fresh_process, peak_rss_mb

DIM = 768
N_QUERIES = 2000
K = 8
QUICK_SIZE = 5_000
FULL_SIZES = [20_000, 100_000, 500_000]


def clustered_features(n: int, seed: int, n_clusters: int = 1000, rank: int = 16) -> np.ndarray:
    """[n, 768] float32: cluster centre + low-rank within-cluster spread + isotropic noise."""
    rng = np.random.default_rng(seed)
    # Centres on a 32-dim subspace: their distances vary as between phones, instead of the equal
    # distances of independent random 768-dim points (which make every IVF cell list lopsided).
    latent = rng.standard_normal((n_clusters, 32)).astype(np.float32)
    centres = latent @ (rng.standard_normal((32, DIM)).astype(np.float32) / np.sqrt(32.0)) * 2.0
    basis = rng.standard_normal((n_clusters, rank, DIM)).astype(np.float32) * 0.25
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 50_000):  # blocks keep the temporary [block, rank, DIM] small
        stop = min(start + 50_000, n)
        labels = rng.integers(0, n_clusters, stop - start)
        coef = rng.standard_normal((stop - start, rank)).astype(np.float32)
        spread = np.einsum("nr,nrd->nd", coef, basis[labels])
        out[start:stop] = centres[labels] + spread + 0.1 * rng.standard_normal((stop - start, DIM)).astype(np.float32)
    return out


@dataclass(frozen=True)
class Built:
    kind: str
    added_path: Path
    total_path: Path
    n_vectors: int
    n_list: int
    build_s: float
    peak_mb: float


def _build_child(data_path: str, out_dir: str, kind: str) -> tuple[str, str, int, int, float, float]:
    """In a fresh process: build one kind from the rows in `data_path`; (paths, sizes, seconds, peak MB)."""
    from train.index import build_index_from_features

    data = np.load(data_path)
    started = time.perf_counter()
    result = build_index_from_features(data, out_dir, "bench", "v2", kind=kind)  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    return (str(result.added_path), str(result.total_features_path), result.n_vectors, result.n_list, seconds,
            peak_rss_mb())  # fmt: skip


def _kmeans_child(data_path: str, out_path: str) -> tuple[float, float]:
    """In a fresh process: RVC's reduction (seeded shuffle, 10,000 mini-batch k-means centres)."""
    from train.index import reduce_with_kmeans, shuffle_rows

    data = np.load(data_path)
    started = time.perf_counter()
    np.save(out_path, reduce_with_kmeans(shuffle_rows(data, 0), 0))
    return time.perf_counter() - started, peak_rss_mb()


class FrameEncoder:
    """Stands in for HuBERT: the next held-out frames, as many as HuBERT gives for the samples."""

    def __init__(self, frames: np.ndarray) -> None:
        self.frames = frames  # [T, 768]

    def extract(self, wave_16k: Any, version: str) -> Any:
        import torch

        n_frames = (int(wave_16k.shape[-1]) - 400) // 320 + 1  # HuBERT's convolutional front end
        picked = np.resize(self.frames, (n_frames, DIM))  # repeats the frames if the input is long
        return torch.from_numpy(np.ascontiguousarray(picked))[None]  # [1, T50, 768]


class Converter:
    """One voice, one input, one seed: converts with any FeatureIndex (or none)."""

    def __init__(self, frames: np.ndarray, seconds: float) -> None:
        import torch

        from bench.bench_convert import _voice, synthetic_speech
        from infer_pack.checkpoint import build_synthesizer

        self.voice, self.voice_note = _voice()
        self.synthesizer = build_synthesizer(self.voice, "cpu", torch.float32)
        self.encoder = FrameEncoder(frames)
        self.audio = synthetic_speech(seconds, seed=3)

    def convert(self, index: Any) -> np.ndarray:
        import torch

        from infer_pack.pipeline import ConversionParams, VoiceConverter

        converter = VoiceConverter(self.voice, self.encoder, index, "cpu", synthesizer=self.synthesizer,
                                   dtype=torch.float32, engine="torch")  # fmt: skip
        params = ConversionParams(f0_method="pm", index_rate=0.75 if index is not None else 0.0, seed=0)
        return converter.convert(self.audio, params)[0]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x.astype(np.float64)))))


def _recall(truth: np.ndarray, found: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(truth, found)]))


def _mean_norm(x: np.ndarray) -> float:
    return float(np.mean(np.linalg.norm(x.astype(np.float64), axis=1)))


def run(quick: bool, device: str, sizes: list[int] | None = None) -> list[BenchRow]:
    del device  # faiss runs on the CPU here
    with tempfile.TemporaryDirectory() as workdir:
        chosen = sizes or ([QUICK_SIZE] if quick else FULL_SIZES)
        return _measure(chosen, Path(workdir), audio_seconds=1.5 if quick else 3.0)


def _build_all(n: int, data: np.ndarray, workdir: Path) -> tuple[dict[str, Built], list[BenchRow]]:
    from train.index import INDEX_KINDS, KMEANS_ROW_THRESHOLD

    rows: list[BenchRow] = []
    data_path = workdir / f"data_{n}.npy"
    np.save(data_path, data)
    if n > KMEANS_ROW_THRESHOLD:
        centres_path = workdir / f"centres_{n}.npy"
        kmeans_s, kmeans_mb = in_fresh_process(_kmeans_child, str(data_path), str(centres_path))
        rows.append(BenchRow("index", f"k-means N={n // 1000}k -> 10k", "s", kmeans_s, None, True,
                             f"RVC's reduction, shared by every kind; peak {kmeans_mb:.0f} MB"))  # fmt: skip
        data_path = centres_path
    built: dict[str, Built] = {}
    for kind in INDEX_KINDS:
        out_dir = workdir / f"{n}_{kind}"
        added, total, n_vectors, n_list, build_s, peak_mb = in_fresh_process(_build_child, str(data_path), str(out_dir), kind)
        built[kind] = Built(kind, Path(added), Path(total), n_vectors, n_list, build_s, peak_mb)
        print(f"built {kind} N={n}: {build_s:.1f} s", file=sys.stderr, flush=True)
    data_path.unlink()
    return built, rows


def _measure(sizes: list[int], workdir: Path, audio_seconds: float) -> list[BenchRow]:
    import faiss

    from infer_pack.retrieval import FeatureIndex, load_index, normalise_rows
    from train.index import INDEX_KINDS

    rows: list[BenchRow] = []
    for n in sizes:
        data = clustered_features(n + N_QUERIES, seed=n)
        queries = data[n:] + 0.3 * np.random.default_rng(1).standard_normal((N_QUERIES, DIM)).astype(np.float32)
        built, kmeans_rows = _build_all(n, data[:n], workdir)
        rows.extend(kmeans_rows)
        del data
        stored = np.load(built["ivf_flat"].total_path)  # [V, 768] every kind's rows, in the same order
        exact_l2 = faiss.IndexFlatL2(DIM)
        exact_l2.add(stored)
        exact = FeatureIndex(index=exact_l2, metric="l2")
        started = time.perf_counter()
        _, truth_l2 = exact.search(queries, K)
        exact_ms = (time.perf_counter() - started) * 1e6 / N_QUERIES
        _, truth_cos = faiss.knn(normalise_rows(queries), normalise_rows(stored), K, metric=faiss.METRIC_INNER_PRODUCT)
        exact_retrieved = exact.retrieve(queries)  # [Q, 768]
        exact_ip = faiss.IndexFlatIP(DIM)
        exact_ip.add(normalise_rows(stored))
        exact_cos_retrieved = FeatureIndex(index=exact_ip, metric="cosine").retrieve(queries)  # [Q, 768]
        shift = _mean_norm(queries - exact_retrieved)
        converter = Converter(queries, audio_seconds)
        exact_audio = converter.convert(exact)
        plain_diff = _rms(converter.convert(None) - exact_audio) / _rms(exact_audio)
        for kind, info in INDEX_KINDS.items():
            b = built[kind]
            if not np.array_equal(np.load(b.total_path), stored):
                raise RuntimeError(f"{kind} holds other rows than ivf_flat; the comparison would be unfair")
            index = load_index(b.added_path)
            index.search(queries[:100], K)  # warm-up
            started = time.perf_counter()
            _, found = index.search(queries, K)
            search_ms = (time.perf_counter() - started) * 1e6 / N_QUERIES
            recall = _recall(truth_cos if info.metric == "cosine" else truth_l2, found)
            retrieved = index.retrieve(queries)
            blend_err = _mean_norm(retrieved - exact_retrieved)
            own_exact = exact_cos_retrieved if info.metric == "cosine" else exact_retrieved
            blend_err_own = _mean_norm(retrieved - own_exact)  # the search's own error, metric aside
            audio = converter.convert(index)
            audio_diff = _rms(audio - exact_audio) / _rms(exact_audio)
            size_mb = b.added_path.stat().st_size / 1e6
            name = f"{kind} N={n // 1000}k"
            layout = f"{b.n_vectors} vectors, {b.n_list} cells" if b.n_list else f"{b.n_vectors} vectors"
            note = f"{layout}; load avg {os.getloadavg()[0]:.1f}"
            extra = {"kind": kind, "n_rows": n, "n_vectors": b.n_vectors, "cells": b.n_list, "build_s": b.build_s,
                     "peak_mb": b.peak_mb, "file_mb": size_mb, "search_ms_per_1k": search_ms, "recall_at_8": recall,
                     "blend_error": blend_err, "blend_error_own_metric": blend_err_own, "blend_shift": shift, "audio_diff": audio_diff,
                     "audio_diff_no_index": plain_diff}  # fmt: skip
            kind_rows = [
                BenchRow("index", f"{name} build", "s", b.build_s, None, True, note, extra),
                BenchRow("index", f"{name} file", "MB", size_mb, stored.nbytes / 1e6, True, "baseline: the raw vectors"),
                BenchRow("index", f"{name} build peak", "MB", b.peak_mb, None, True, "fresh process, input rows included"),
                BenchRow("index", f"{name} search", "ms/1k queries", search_ms, exact_ms, True, "baseline: exact search"),
                BenchRow("index", f"{name} recall@8", "recall@8", recall, 1.0, False,
                         "baseline: exact search, " + ("cosine" if info.metric == "cosine" else "L2")),
                BenchRow("index", f"{name} blend error", "mean L2", blend_err, shift, True,
                         "vs exact L2 blend; baseline: how far retrieval moves a frame"),
                BenchRow("index", f"{name} blend error, own metric", "mean L2", blend_err_own, shift, True,
                         "vs exact search in the kind's metric (cosine: the exact cosine blend)"),
                BenchRow("index", f"{name} audio diff", "rel. RMS", audio_diff, plain_diff, True,
                         f"vs exact-L2-search conversion; baseline: no index; {converter.voice_note}"),
            ]  # fmt: skip
            rows.extend(kind_rows)
            for row in kind_rows:  # partial results stay visible when a long run is stopped
                print(json.dumps(row.to_dict()), file=sys.stderr, flush=True)
            del index
    return rows


def summary_table(rows: list[BenchRow]) -> str:
    """One line per kind and size (markdown), from the build rows' extra fields."""
    head = ("| N | kind | build s | peak MB | file MB | ms/1k queries | recall@8 | blend error (own metric) | audio diff |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")  # fmt: skip
    lines = [head]
    for row in rows:
        e = row.extra
        if not row.name.endswith(" build") or "recall_at_8" not in e:
            continue
        lines.append(
            f"| {e['n_rows'] // 1000}k | {e['kind']} | {e['build_s']:.1f} | {e['peak_mb']:.0f} | {e['file_mb']:.0f} | "
            f"{e['search_ms_per_1k']:.0f} | {e['recall_at_8']:.3f} | {e['blend_error'] / e['blend_shift']:.3f} "
            f"({e['blend_error_own_metric'] / e['blend_shift']:.3f}) | "
            f"{e['audio_diff']:.4f} (no index {e['audio_diff_no_index']:.3f}) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="*", help="N values to measure (default: 20k 100k 500k)")
    args = parser.parse_args()
    rows = run(args.quick, args.device, args.sizes)
    for row in rows:
        print(json.dumps(row.to_dict()))
    print(summary_table(rows))


if __name__ == "__main__":
    main()
