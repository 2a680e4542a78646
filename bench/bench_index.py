"""Feature index: build time, search latency and recall@8 against exact search, per index kind.

Data: 768-dim clustered vectors (like HuBERT frames: many phone-like clusters, each with a
low-rank spread plus noise); queries are fresh points of the same clusters with extra noise (another
speaker's frames). N = 20k / 100k / 500k (quick: 20k). Above 200k rows the build reduces to
10,000 k-means centres first, as RVC does, so recall is measured against exact search over the
vectors the index holds.

    python -m bench.bench_index [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import BenchRow

DIM = 768
N_QUERIES = 2000
K = 8


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


def _recall(truth: np.ndarray, found: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(truth, found)]))


def run(quick: bool, device: str, sizes: list[int] | None = None) -> list[BenchRow]:
    with tempfile.TemporaryDirectory() as workdir:
        return _measure(sizes or ([20_000] if quick else [20_000, 100_000, 500_000]), Path(workdir))


def _measure(sizes: list[int], workdir: Path) -> list[BenchRow]:
    import faiss

    from infer_pack.retrieval import load_index
    from train.index import INDEX_KINDS, IndexResult, build_index_from_features

    rows: list[BenchRow] = []
    for n in sizes:
        data = clustered_features(n + N_QUERIES, seed=n)
        queries = data[n:] + 0.3 * np.random.default_rng(1).standard_normal((N_QUERIES, DIM)).astype(np.float32)
        data = data[:n]
        kinds = list(INDEX_KINDS) if n <= 100_000 else ["ivf_flat", "ivf_flat_probe8", "hnsw"]
        exact_ms: float | None = None
        truth: np.ndarray | None = None
        built: dict[str, tuple[float, IndexResult]] = {}
        for kind in kinds:
            if kind == "ivf_flat_probe8" and "ivf_flat" in built:
                # The same trained index as ivf_flat; only the number of probed cells differs.
                build_s, result = built["ivf_flat"]
                index = load_index(result.added_path, nprobe=8)
            else:
                started = time.perf_counter()
                result = build_index_from_features(data, workdir / f"{n}_{kind}", "bench", "v2", kind=kind)  # type: ignore[arg-type]
                build_s = time.perf_counter() - started
                index = load_index(result.added_path)
                built[kind] = (build_s, result)
            if truth is None:
                # Exact search over the vectors the index holds (in its id order).
                flat = faiss.IndexFlatL2(DIM)
                flat.add(index.vectors())
                started = time.perf_counter()
                _, truth = flat.search(queries, K)
                exact_ms = (time.perf_counter() - started) * 1000.0 * 1000 / N_QUERIES
            index.search(queries[:100], K)  # warm-up
            started = time.perf_counter()
            _, found = index.search(queries, K)
            search_ms = (time.perf_counter() - started) * 1000.0 * 1000 / N_QUERIES
            size_mb = result.added_path.stat().st_size / 1e6
            name = f"{kind} N={n // 1000}k"
            note = f"{result.n_vectors} vectors, {result.n_list} lists, {size_mb:.0f} MB, load avg {os.getloadavg()[0]:.1f}"
            rows.append(BenchRow("index", f"{name} recall@8", "recall@8", _recall(truth, found), 1.0, False,
                                 "baseline: exact search"))  # fmt: skip
            rows.append(BenchRow("index", f"{name} search", "ms/1k queries", search_ms, exact_ms, True,
                                 "baseline: exact (flat) search; " + note))  # fmt: skip
            rows.append(BenchRow("index", f"{name} build", "s", build_s, None, True, note))
            for row in rows[-3:]:  # partial results stay visible when a long run is stopped
                print(json.dumps(row.to_dict()), file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="*", help="N values to measure (default: 20k 100k 500k)")
    args = parser.parse_args()
    for row in run(args.quick, args.device, args.sizes):
        print(json.dumps(row.to_dict()))


if __name__ == "__main__":
    main()
