"""Feature retrieval: pull content features towards the training voice's own features.

An index file is a faiss index over the HuBERT features of the training set (RVC's
`added_IVF*_Flat_nprobe_1_<exp>_<ver>.index`, or one of the other kinds `train.index` builds).
For every frame the k nearest training vectors are averaged with weights 1/d^2 and blended with
the frame by `index_rate`.

The metric is read from the file (`index.metric_type`), never from its name:
  - L2 (RVC's): d^2 is faiss's squared L2 distance, exactly as RVC weights them.
  - inner product (cosine kinds): the file holds L2-normalised training vectors. A query is
    normalised, searched, and its similarity s turned into the squared L2 distance between the two
    unit vectors, d^2 = 2 - 2 s, so the inverse-square weights mean what they mean for L2 (a
    neighbour half as far away weighs 16 times as much). The weighted mean of the unit neighbours
    is scaled back by the query frame's own norm: cosine search ignores magnitude and the file has
    none to give back, so the retrieved frame keeps the input frame's.

faiss is imported only inside functions, so importing this module stays cheap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from infer_pack.errors import IndexFileError

# A neighbour at distance 0 would get an infinite weight; clamping its score keeps the
# weights finite (that neighbour then takes practically all of the weight, which is the limit).
_MIN_SCORE = 1e-12
# A normalised query is x / max(|x|, eps), as RVC's faiss tips write it: a silent (zero) frame stays zero.
_NORM_EPS = 1e-12
# An inner-product file must hold unit vectors: the tolerance on |x| of a sample of them.
_UNIT_NORM_TOLERANCE = 1e-3
_UNIT_SAMPLE = 256

Metric = Literal["l2", "cosine"]

# Queries per faiss call: bounds the [n, k, D] neighbour block to ~50 MB for D=768, k=8.
_QUERY_BATCH = 2048


# A child process reads the index first under this memory cap (plus a few times the file size), so a
# corrupt or hostile size field fails there instead of making this process allocate gigabytes.
_PROBE_BASE_BYTES = 3 << 30
_PROBE_SCRIPT = """
import resource, sys
cap = int(sys.argv[2])
hard = resource.getrlimit(resource.RLIMIT_AS)[1]
if hard != resource.RLIM_INFINITY:
    cap = min(cap, hard)
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
import faiss, numpy as np
try:
    faiss.deserialize_index(np.fromfile(sys.argv[1], dtype=np.uint8))
except MemoryError:
    print("claims more memory than the file can hold"); sys.exit(3)
except Exception as exc:
    text = str(exc).strip().splitlines()
    print(text[-1] if text else type(exc).__name__); sys.exit(4)
"""


def _probe_index_in_child(path: Path) -> None:
    """Read the index once in a memory-capped child; raise IndexFileError if that fails."""
    import subprocess
    import sys

    cap = _PROBE_BASE_BYTES + 4 * path.stat().st_size
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE_SCRIPT, str(path), str(cap)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    except subprocess.TimeoutExpired:
        raise IndexFileError(path, "reading it did not finish in 10 minutes", "rebuild the index") from None
    if done.returncode != 0:
        reason = (done.stdout.strip().splitlines() or [f"the reader stopped with status {done.returncode}"])[-1]
        raise IndexFileError(
            path, f"not a readable faiss index ({reason})", "rebuild the index (Train tab: 'Train feature index')"
        )


def read_faiss_index(path: str | Path, *, probe: bool = True) -> Any:
    """faiss.read_index with errors that name the file (also reads paths faiss's C++ can't open).

    With `probe` (the default) the file is first read in a memory-capped child process, so a
    damaged or hostile file cannot exhaust this process's memory; pass False for files this
    process has just written itself.
    """
    import faiss

    path = Path(path)
    if not path.is_file():
        raise IndexFileError(path, "file not found", "pick an existing .index file or build one in the Train tab")
    if path.stat().st_size == 0:
        raise IndexFileError(path, "the file is empty", "rebuild the index (Train tab: 'Train feature index')")
    if probe:
        _probe_index_in_child(path)
    try:
        return faiss.read_index(str(path))
    except RuntimeError:
        pass
    # faiss's fopen fails on some non-ASCII paths (Windows); reading the bytes ourselves avoids that.
    try:
        return faiss.deserialize_index(np.fromfile(path, dtype=np.uint8))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise IndexFileError(
            path, f"not a readable faiss index ({first})", "rebuild the index (Train tab: 'Train feature index')"
        ) from None


def _prepare_lookup(index: Any) -> None:
    """Make `reconstruct_batch` work on `index` without holding a second copy of its vectors.

    IVF indexes need a direct map (8 bytes per vector); flat, HNSW and refine indexes
    reconstruct directly from their flat storage.
    """
    import faiss

    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return
    if isinstance(index, faiss.IndexRefine):
        return  # the refine index holds the exact vectors; its IVF part is never asked
    ivf.make_direct_map()


def set_nprobe(index: Any, nprobe: int) -> None:
    """Set how many IVF lists a search visits (no effect on non-IVF indexes)."""
    import faiss

    try:
        faiss.extract_index_ivf(index).nprobe = int(nprobe)
    except RuntimeError:
        return


def normalise_rows(features: np.ndarray) -> np.ndarray:
    """Each row divided by its L2 norm (rows of norm 0 stay 0); [N, D] float32."""
    data = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(data, axis=-1, keepdims=True)
    return (data / np.maximum(norms, _NORM_EPS)).astype(np.float32, copy=False)


@dataclass
class FeatureIndex:
    """A loaded feature index. `dim` is 256 (v1 voices) or 768 (v2 voices).

    `metric` comes from the file: "l2" (RVC's) or "cosine" (inner product over unit vectors).
    """

    index: Any  # faiss.Index
    path: Path | None = None
    metric: Metric = "l2"

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def vectors(self) -> np.ndarray:
        """All stored vectors [N, D] float32 (RVC's `big_npy`; unit vectors for cosine); built on demand."""
        return np.ascontiguousarray(self.index.reconstruct_n(0, self.size), dtype=np.float32)

    def search(self, features: np.ndarray, k: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """(squared distances [T, k], ids [T, k]; -1 where fewer than k were found).

        L2: faiss's squared L2 distances. Cosine: the query is normalised and each similarity s
        becomes 2 - 2 s, the squared L2 distance between the two unit vectors.
        """
        if self.metric == "cosine":
            scores, ids = self.index.search(normalise_rows(features), k)
            distances = np.maximum(2.0 - 2.0 * scores.astype(np.float64), 0.0)
            return np.where(ids >= 0, distances, np.inf).astype(np.float32), ids
        query = np.ascontiguousarray(features, dtype=np.float32)
        scores, ids = self.index.search(query, k)
        return scores, ids

    def retrieve(self, features: np.ndarray, k: int = 8) -> np.ndarray:
        """The 1/d^2-weighted mean of the k nearest stored vectors for each frame, [T, D] float32.

        Cosine: the mean of the unit neighbours times the frame's own norm (see the module doc).
        """
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise IndexFileError(
                self.path or "<index>",
                f"it holds {self.dim}-dim features but the voice gives {features.shape[-1]}-dim ones",
                "pick the index built for this voice (v1 voices use 256-dim, v2 voices 768-dim indexes)",
            )
        if self.size == 0:
            raise IndexFileError(self.path or "<index>", "the index is empty", "rebuild it from the experiment")
        out = np.empty(features.shape, dtype=np.float32)
        for start in range(0, features.shape[0], _QUERY_BATCH):
            block = features[start : start + _QUERY_BATCH]  # [n, D]
            scores, ids = self.search(block, k)  # [n, k] squared distances
            found = ids >= 0
            with np.errstate(divide="ignore", over="ignore"):
                weights = np.square(1.0 / np.maximum(scores.astype(np.float64), _MIN_SCORE))
            weights = np.where(found, weights, 0.0)
            total = weights.sum(axis=1, keepdims=True)
            # A frame with no neighbour at all (only possible with an empty probed list) keeps itself.
            lonely = total[:, 0] <= 0.0
            weights = weights / np.where(total > 0.0, total, 1.0)
            neighbours = self.index.reconstruct_batch(np.where(found, ids, 0).reshape(-1))  # [n*k, D]
            neighbours = neighbours.reshape(ids.shape[0], k, self.dim)
            mixed = np.einsum("nk,nkd->nd", weights.astype(np.float32), neighbours)  # [n, D]
            if self.metric == "cosine":
                mixed *= np.linalg.norm(block.astype(np.float32), axis=1, keepdims=True)
            mixed[lonely] = block[lonely]
            out[start : start + block.shape[0]] = mixed
        return out

    def blend(self, features: np.ndarray, index_rate: float, k: int = 8) -> np.ndarray:
        """`index_rate * retrieved + (1 - index_rate) * features`; index_rate 0 returns `features` itself."""
        if index_rate <= 0.0:
            return features
        retrieved = self.retrieve(np.asarray(features, dtype=np.float32), k)
        if index_rate >= 1.0:
            return retrieved.astype(features.dtype, copy=False)
        mixed = retrieved * np.float32(index_rate) + (1.0 - np.float32(index_rate)) * features.astype(np.float32)
        return mixed.astype(features.dtype, copy=False)


def _metric_of(index: Any, path: Path) -> Metric:
    """The file's own metric: L2, or inner product (cosine over unit vectors); others are refused."""
    import faiss

    metric = int(index.metric_type)
    if metric == faiss.METRIC_L2:
        return "l2"
    if metric == faiss.METRIC_INNER_PRODUCT:
        return "cosine"
    raise IndexFileError(
        path,
        f"it searches with faiss metric {metric}; retrieval weights need L2 (RVC's) or inner product (cosine)",
        "rebuild the index in the Train tab",
    )


def _check_unit_vectors(index: Any, path: Path) -> None:
    """An inner-product index is cosine only over unit vectors; a spread sample of them is checked."""
    ids = np.unique(np.linspace(0, index.ntotal - 1, min(_UNIT_SAMPLE, index.ntotal)).astype(np.int64))
    norms = np.linalg.norm(index.reconstruct_batch(ids), axis=1)
    worst = float(np.max(np.abs(norms - 1.0)))
    if worst > _UNIT_NORM_TOLERANCE:
        raise IndexFileError(
            path,
            f"it is an inner-product index over vectors that are not L2-normalised (a norm of {1.0 + worst:.3g} "
            "or less was found), so its scores are not cosine similarities",
            "rebuild it with a cosine kind (Train tab, index type '... cosine') or an L2 kind",
        )


def load_index(path: str | Path, *, nprobe: int | None = None, expected_dim: int | None = None) -> FeatureIndex:
    """Load an RVC or project-built .index file; `nprobe` overrides the stored value (IVF only).

    `expected_dim` (256 for v1 voices, 768 for v2) refuses an index of another dimension here, with
    an error naming the file, instead of at the first conversion.
    """
    path = Path(path)
    index = read_faiss_index(path)
    if expected_dim is not None and int(index.d) != expected_dim:
        raise IndexFileError(
            path,
            f"it holds {int(index.d)}-dim features but {expected_dim}-dim ones are needed",
            "pick the index built for this voice (v1 voices use 256-dim, v2 voices 768-dim indexes)",
        )
    metric = _metric_of(index, path)
    if nprobe is not None:
        set_nprobe(index, nprobe)
    try:
        _prepare_lookup(index)
        if index.ntotal > 0:
            index.reconstruct_batch(np.zeros(1, dtype=np.int64))
    except RuntimeError as exc:
        raise IndexFileError(
            path,
            f"its vectors cannot be read back ({str(exc).strip().splitlines()[-1]})",
            "use a Flat, refine (RFlat) or HNSW index; rebuild it in the Train tab",
        ) from None
    if metric == "cosine" and index.ntotal > 0:
        _check_unit_vectors(index, path)
    return FeatureIndex(index=index, path=path, metric=metric)
