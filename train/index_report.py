"""What a freshly built feature index is: its size, cells, and how well it finds its own vectors.

The Train tab and the CLI print these lines after "Train feature index"; `train.index` fills them in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FRAMES_PER_SECOND = 50  # HuBERT features: one frame per 20 ms of 16 kHz audio
# Below about a minute of audio, a frame's 8 neighbours come from a few hundred frames: retrieval
# keeps returning the same few, and a high index rate smears every sound towards them.
FEW_FRAMES = 60 * FRAMES_PER_SECOND
LOW_RECALL = 0.8
RECALL_SAMPLE = 256
RECALL_K = 8  # the pipeline's RETRIEVAL_K


@dataclass(frozen=True)
class IndexDiagnostics:
    """Measured right after building; `recall_at_8` is this index's own, on `recall_sample` of its vectors."""

    kind: str
    label: str
    metric: str  # "l2" or "cosine"
    rows: int  # feature frames read from the experiment
    vectors: int  # vectors in the index (10,000 k-means centres above 200,000 rows)
    cells: int  # IVF cells (0: not an IVF index)
    nprobe: int  # cells visited per query (0: not an IVF index)
    recall_at_8: float
    recall_sample: int
    build_seconds: float
    warnings: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        """Human-readable lines: kind, size, recall, time, then each warning."""
        metric = "cosine (inner product, normalised)" if self.metric == "cosine" else "L2"
        layout = f"{self.cells} IVF cells (about {self.vectors // max(self.cells, 1)} vectors each), nprobe {self.nprobe}"
        if self.cells == 0:
            layout = "a graph (no cells)"
        return [
            f"kind: {self.label} [{self.kind}], metric {metric}",
            f"size: {self.rows} frames -> {self.vectors} vectors in {layout}",
            f"recall@{RECALL_K} on {self.recall_sample} of its own vectors: {100.0 * self.recall_at_8:.1f}% "
            "of the exact nearest neighbours found",
            f"build time: {self.build_seconds:.1f} s",
            *(f"warning: {text}" for text in self.warnings),
        ]


def self_recall(index: Any, stored: np.ndarray, metric: str, seed: int = 0) -> tuple[float, int]:
    """(recall@8, queries): a seeded sample of the vectors `index` holds, searched in it and exactly.

    `stored` [N, D] float32 are the vectors as added (unit rows for cosine), in id order.
    """
    import faiss

    n = int(stored.shape[0])
    k = min(RECALL_K, n)
    picks = np.random.default_rng(seed).choice(n, size=min(RECALL_SAMPLE, n), replace=False)
    queries = np.ascontiguousarray(stored[np.sort(picks)])  # [S, D]
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    _, truth = faiss.knn(queries, stored, k, metric=faiss_metric)  # [S, k]
    _, found = index.search(queries, k)  # [S, k]
    hits = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(truth, found)]
    return float(np.mean(hits)) / k, int(queries.shape[0])


def build_warnings(rows: int, recall_at_8: float, recommended_label: str) -> tuple[str, ...]:
    """Warnings for a dataset too small to retrieve from and for an index that misses neighbours."""
    found: list[str] = []
    if rows < FEW_FRAMES:
        found.append(
            f"only {rows} feature frames (about {rows / FRAMES_PER_SECOND:.0f} s of audio): every frame's "
            f"{RECALL_K} neighbours come from the same few frames, so retrieval repeats them; keep the index "
            "rate low (0.3 or less) or train with at least 10 minutes of audio"
        )
    if recall_at_8 < LOW_RECALL:
        found.append(
            f"this index finds only {100.0 * recall_at_8:.0f}% of the true nearest neighbours of its own "
            f"vectors; rebuild it with the index type '{recommended_label}'"
        )
    return tuple(found)
