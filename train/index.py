"""Building the feature index of an experiment; the one owner of index file names.

RVC's recipe (kept so that indexes are interchangeable with RVC's):
  1. load every `3_feature256|768/*.npy` in file-name order and concatenate them;
  2. shuffle the rows (seeded here, so a rebuild gives the same file);
  3. above 200,000 rows, replace them by 10,000 mini-batch k-means centres;
  4. save them as `total_fea.npy`;
  5. `IVF<n>,Flat` with n = min(int(16 * sqrt(N)), N // 39), nprobe 1; train, write
     `trained_IVF<n>_Flat_nprobe_1_<exp>_<ver>.index`; add in batches of 8192, write
     `added_IVF<n>_Flat_nprobe_1_<exp>_<ver>.index`.
Other kinds (`INDEX_KINDS`) trade build time and memory for a better search: IVF Flat searched in
8 cells, an HNSW graph, and the recipe of RVC's own faiss tips (docs/faiss_tips_en.md, read at
RVC-Project/Retrieval-based-Voice-Conversion-WebUI 50409832069f6e007a60bef2109bc735f3ffd7bd):
`IVF<n>,PQ<m>x4fs,RFlat`, 4-bit PQ FastScan codes whose k * k_factor best candidates are re-ranked
with the exact vectors. Cosine variants store L2-normalised rows in an inner-product index (the metric
is in the file; `total_fea.npy` keeps the rows as extracted). Every kind loads with
`infer_pack.retrieval.load_index`, and every build measures itself (`train.index_report`).
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from infer_pack.errors import ExperimentError, UserInputError
from infer_pack.fileio import atomic_path
from infer_pack.progress import CancelToken, ProgressCallback, check, report
from train.experiment import Experiment, load_npy, stem
from train.index_report import IndexDiagnostics, build_warnings, self_recall

Version = Literal["v1", "v2"]
IndexKind = Literal[
    "ivf_flat", "ivf_flat_probe8", "hnsw", "ivf_pqfs", "ivf_flat_probe8_cos", "hnsw_cos", "ivf_pqfs_cos"
]
Family = Literal["ivf_flat", "hnsw", "ivf_pqfs"]
Metric = Literal["l2", "cosine"]

KMEANS_ROW_THRESHOLD = 200_000  # RVC: `if big_npy.shape[0] > 2e5`
KMEANS_CENTRES = 10_000
ADD_BATCH = 8192
FEATURE_DIM: dict[str, int] = {"v1": 256, "v2": 768}
TOTAL_FEATURES_NAME = "total_fea.npy"
HNSW_LINKS = 32
HNSW_EF_SEARCH = 64


@dataclass(frozen=True)
class IndexKindInfo:
    """What an index kind is and what it costs (shown by the UI next to the choice)."""

    kind: IndexKind
    family: Family
    metric: Metric
    nprobe: int  # IVF cells visited per query (0: not an IVF index)
    label: str
    help: str


# Costs measured with bench/bench_index.py (`python -m bench --only index`, 2026-12-06; 2 CPU cores shared with
# other work; 768-dim synthetic clustered frames at 20k / 100k / 500k rows, 500k reduced to 10k k-means
# centres first): recall@8 against exact search over the same vectors, and the converted audio's RMS
# difference to a conversion with exact L2 search (the same voice and input without an index: 10-11%).
_COSINE_NOTE = (
    " Its search is as exact as its L2 twin's, but cosine neighbours are not RVC's L2 ones: the converted "
    "audio differs from an L2 conversion by 4-5% RMS. For experiments; RVC's own code would misweight it."
)
INDEX_KINDS: dict[str, IndexKindInfo] = {
    info.kind: info
    for info in (
        IndexKindInfo(
            "ivf_flat", "ivf_flat", "l2", 1,
            "IVF Flat, nprobe 1 (RVC)",
            "RVC's index and file names; RVC loads it. Looks into one cell only: 97-99% of the 8 true "
            "neighbours at 20k frames and after k-means, 71% at 100k, where the audio is 5.4% off an exact "
            "search. Build 2 s at 20k, 79 s at 100k frames.",
        ),
        IndexKindInfo(
            "ivf_flat_probe8", "ivf_flat", "l2", 8,
            "IVF Flat, nprobe 8",
            "RVC's vectors, cells and file size, searched in 8 cells: 99-100% of the true neighbours, audio "
            "within 0.2% of an exact search; search 59-118 ms per 1000 frames. RVC loads it.",
        ),
        IndexKindInfo(
            "hnsw", "hnsw", "l2", 0,
            "HNSW graph (32 links)",
            "A graph index: 93% of the true neighbours at 100k frames (audio 3.1% off an exact search), 100% "
            "at 20k; the fastest build at 100k (20 s), a 6% larger file.",
        ),
        IndexKindInfo(
            "ivf_pqfs", "ivf_pqfs", "l2", 8,
            "IVF + 4-bit PQ FastScan, exact re-ranking (RVC's faiss tips)",
            "RVC's faiss tips recipe (IVF,PQ<d/4>x4fs,RFlat): 4-bit codes pick candidates, the exact vectors "
            "rank them. 99-100% of the true neighbours and audio within 0.2% of an exact search, like nprobe 8, "
            "with the fastest search of those (39-60 ms per 1000 frames). Build 2.4 / 38 s at 20k / 100k "
            "frames (RVC's 2.1 / 79 s), 26 s on 10k k-means centres (RVC's 3 s); a 2-5% larger file. RVC loads it.",
        ),
        IndexKindInfo(
            "ivf_flat_probe8_cos", "ivf_flat", "cosine", 8,
            "IVF Flat, nprobe 8, cosine",
            "IVF Flat nprobe 8 over L2-normalised frames (inner product): neighbours by direction only; the "
            "retrieved frame keeps the input frame's norm." + _COSINE_NOTE,
        ),
        IndexKindInfo(
            "hnsw_cos", "hnsw", "cosine", 0,
            "HNSW graph (32 links), cosine",
            "HNSW over L2-normalised frames (inner product): 93-100% of the true cosine neighbours." + _COSINE_NOTE,
        ),
        IndexKindInfo(
            "ivf_pqfs_cos", "ivf_pqfs", "cosine", 8,
            "IVF + 4-bit PQ FastScan, exact re-ranking, cosine",
            "RVC's faiss tips recipe over L2-normalised frames (inner product), as the tips suggest."
            + _COSINE_NOTE,
        ),
    )
}
# The recommended kind: RVC's tips recipe matched exact search (recall 0.99-1.00, audio within 0.2%) at
# every size and searched fastest among the kinds that did; it built faster than RVC's at 100k frames and
# slower on 10k k-means centres.
RECOMMENDED_KIND: IndexKind = "ivf_pqfs"


def _kind_info(kind: str) -> IndexKindInfo:
    info = INDEX_KINDS.get(kind)
    if info is None:
        raise UserInputError(f"unknown index kind {kind!r}; choose one of {', '.join(INDEX_KINDS)}")
    return info


def n_list_for(n_rows: int) -> int:
    """RVC's number of IVF cells: min(int(16 * sqrt(N)), N // 39), at least 1."""
    return max(1, min(int(16 * math.sqrt(n_rows)), n_rows // 39))


def cells_for(kind: IndexKind, n_rows: int) -> int:
    """IVF cells of a kind for N vectors (0 for HNSW).

    IVF Flat: RVC's formula. IVF-PQ FastScan: 4 * sqrt(N), the low end of the tips' 4-16 sqrt(N):
    exact re-ranking repairs what the codes confuse, and fuller cells miss fewer neighbours at a
    given nprobe. Both keep at least 39 vectors per cell (faiss's k-means minimum).
    """
    family = _kind_info(kind).family
    if family == "hnsw":
        return 0
    if family == "ivf_pqfs":
        return max(1, min(int(4 * math.sqrt(n_rows)), n_rows // 39))
    return n_list_for(n_rows)


def pq_subquantizers_for(dim: int) -> int:
    """PQ sub-quantizers: one per 4 dimensions (256 -> 64, 768 -> 192).

    RVC's tips advise one per 2 dimensions; here that trains 20x slower (21 s against 0.9 s for 5,000
    768-dim rows) and, once the candidates are re-ranked exactly, finds no more neighbours
    (bench/bench_index.py). RVC's own, commented-out line uses PQ128 at 768 dimensions (6 per code).
    """
    return max(2, dim // 4)


def k_factor_for(n_vectors: int) -> float:
    """Candidates re-ranked exactly per neighbour asked for (8 neighbours: 64 or 128 candidates).

    Denser sets (more vectors) put more near-ties inside the 4-bit codes' error, so they re-rank
    more: 8 below 25,000 vectors, else 16. Re-ranking reads k * k_factor exact vectors per query,
    little next to scanning the probed cells.
    """
    return 8.0 if n_vectors < 25_000 else 16.0


def _kind_tag(kind: IndexKind, n_list: int, dim: int) -> str:
    info = _kind_info(kind)
    if kind == "ivf_flat":
        return f"IVF{n_list}_Flat_nprobe_1"  # RVC's, exactly
    # Every other kind avoids RVC's `_Flat_nprobe_<n>_` so that no one takes it for RVC's file.
    metric = "_cos" if info.metric == "cosine" else ""
    if info.family == "ivf_flat":
        return f"IVF{n_list}_Flat_probe{info.nprobe}{metric}"
    if info.family == "hnsw":
        return f"HNSW{HNSW_LINKS}_Flat{metric}"
    return f"IVF{n_list}_PQ{pq_subquantizers_for(dim)}x4fs_RFlat_probe{info.nprobe}{metric}"


def index_file_name(
    n_list: int,
    exp_name: str,
    version: Version,
    *,
    stage: Literal["added", "trained"] = "added",
    kind: IndexKind = "ivf_flat",
) -> str:
    """`added_IVF<n>_Flat_nprobe_1_<exp>_<ver>.index` (RVC's name for the default kind).

    Other kinds: `added_IVF<n>_Flat_probe8_...`, `added_HNSW32_Flat_...`,
    `added_IVF<n>_PQ<m>x4fs_RFlat_probe8_...`, with `_cos` before the experiment name for cosine.
    """
    if stage not in ("added", "trained"):
        raise UserInputError(f"unknown index stage {stage!r}; expected 'added' or 'trained'")
    if version not in FEATURE_DIM:
        raise UserInputError(f"unknown model version {version!r}; expected 'v1' or 'v2'")
    return f"{stage}_{_kind_tag(kind, n_list, FEATURE_DIM[version])}_{exp_name}_{version}.index"


_NAME_RE = re.compile(r"^(?P<stage>added|trained)_IVF(?P<n_list>\d+)_.*?_(?P<version>v[12])\.index$")


def parse_index_file_name(name: str) -> dict[str, Any] | None:
    """{'stage', 'n_list', 'version'} from an RVC-style IVF index file name, or None."""
    match = _NAME_RE.match(Path(name).name)
    if match is None:
        return None
    return {"stage": match["stage"], "n_list": int(match["n_list"]), "version": match["version"]}


def added_index_for(trained_path: str | Path) -> Path:
    """RVC's convention: a `trained_*` path picked by the user means the matching `added_*` file."""
    path = Path(trained_path)
    if path.name.startswith("trained_"):
        return path.with_name("added_" + path.name[len("trained_") :])
    return path


def find_indexes(folder: str | Path) -> list[Path]:
    """The usable (`added_*` or foreign-named) .index files in a folder, newest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob("*.index") if p.is_file() and not p.name.startswith("trained_")]
    return sorted(found, key=lambda p: p.stat().st_mtime_ns, reverse=True)


@dataclass(frozen=True)
class IndexResult:
    added_path: Path
    trained_path: Path
    total_features_path: Path
    kind: IndexKind
    n_rows: int  # feature rows read from the experiment
    n_vectors: int  # rows in the index (10,000 after k-means)
    n_list: int  # IVF cells (0 for HNSW)
    used_kmeans: bool
    seconds: float
    diagnostics: IndexDiagnostics

    def message(self) -> str:
        """What the Train tab and the CLI print: the file, then the diagnostics' lines."""
        reduced = f", reduced to {self.n_vectors} k-means centres" if self.used_kmeans else ""
        head = f"index built from {self.n_rows} feature frames{reduced}: {self.added_path.name}"
        return "\n".join([head, *self.diagnostics.lines()])


def list_feature_files(feature_dir: Path) -> list[Path]:
    """The .npy files of a feature folder in RVC's (file-name) order."""
    return sorted((p for p in feature_dir.iterdir() if p.suffix == ".npy" and p.is_file()), key=lambda p: p.name)


def load_features(
    feature_dir: str | Path,
    version: Version,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    exclude: frozenset[str] = frozenset(),
) -> np.ndarray:
    """Concatenate every .npy of `feature_dir` in file-name order -> [N, 256|768] float32.

    `exclude`: clip names left out (the held-out validation clips never reach the index)."""
    feature_dir = Path(feature_dir)
    dim = FEATURE_DIM[version]
    if not feature_dir.is_dir():
        raise ExperimentError(
            f"feature folder {str(feature_dir)!r} does not exist; run feature extraction (Train tab, step 2b) first"
        )
    files = [p for p in list_feature_files(feature_dir) if stem(p.name) not in exclude]
    if not files:
        raise ExperimentError(
            f"feature folder {str(feature_dir)!r} holds no .npy files; run feature extraction (Train tab, step 2b) first"
        )
    blocks: list[np.ndarray] = []
    for i, path in enumerate(files):
        check(cancel)
        block = load_npy(path)
        if block.ndim != 2 or block.shape[1] != dim:
            raise ExperimentError(
                f"feature file {str(path)!r} has shape {block.shape}, expected [frames, {dim}] for a {version} "
                "model; rerun feature extraction with the right version"
            )
        blocks.append(block.astype(np.float32, copy=False))
        report(progress, i + 1, len(files), f"loading features {i + 1}/{len(files)}")
    return np.concatenate(blocks, axis=0)


def shuffle_rows(features: np.ndarray, seed: int) -> np.ndarray:
    """RVC shuffles before training the index; a seeded permutation makes rebuilds repeatable."""
    return features[np.random.default_rng(seed).permutation(features.shape[0])]


def reduce_with_kmeans(features: np.ndarray, seed: int, n_centres: int | None = None) -> np.ndarray:
    """RVC's reduction of large sets: MiniBatchKMeans(10,000, init='random', batch 256 x CPUs)."""
    from sklearn.cluster import MiniBatchKMeans

    n_centres = KMEANS_CENTRES if n_centres is None else n_centres
    n_cpu = os.cpu_count() or 1
    kmeans = MiniBatchKMeans(
        n_clusters=n_centres,
        batch_size=256 * n_cpu,
        compute_labels=False,
        init="random",
        random_state=seed,
    )
    return np.ascontiguousarray(kmeans.fit(features).cluster_centers_, dtype=np.float32)


def make_empty_index(kind: IndexKind, dim: int, n_list: int, n_vectors: int = 0) -> Any:
    """An untrained faiss index of `kind` with its search settings (nprobe, efSearch, k_factor) stored in it."""
    import faiss

    info = _kind_info(kind)
    metric = faiss.METRIC_INNER_PRODUCT if info.metric == "cosine" else faiss.METRIC_L2
    if info.family == "hnsw":
        index = faiss.index_factory(dim, f"HNSW{HNSW_LINKS},Flat", metric)
        graph: Any = faiss.downcast_index(index)  # IndexHNSWFlat, which the bindings do not type
        graph.hnsw.efSearch = HNSW_EF_SEARCH
        return index
    if info.family == "ivf_pqfs":
        index = faiss.index_factory(dim, f"IVF{n_list},PQ{pq_subquantizers_for(dim)}x4fs,RFlat", metric)
        refine: Any = faiss.downcast_index(index)  # IndexRefineFlat
        refine.k_factor = k_factor_for(n_vectors)
    else:
        index = faiss.index_factory(dim, f"IVF{n_list},Flat", metric)
    faiss.extract_index_ivf(index).nprobe = info.nprobe
    return index


def _stored_vectors(kind: IndexKind, data: np.ndarray) -> np.ndarray:
    """The rows as the index stores them: as extracted (L2), or L2-normalised (cosine)."""
    if _kind_info(kind).metric == "cosine":
        from infer_pack.retrieval import normalise_rows

        return normalise_rows(data)
    return data


def _write_index(index: Any, target: Path) -> None:
    import faiss

    # Serialised in memory and written through atomic_path: an interrupted write never leaves a
    # truncated .index, and paths faiss's fopen cannot open (non-ASCII on Windows) still work.
    # Python's own write() is used because it reports a full disk as ENOSPC (ndarray.tofile does not).
    data = faiss.serialize_index(index)
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        handle.write(data.data)  # the array's own buffer, not a copy


class _ChunkedWriter:
    """A file wrapper numpy does not treat as a real file, so np.save writes through write() in chunks."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def write(self, data: bytes) -> int:
        return self._handle.write(data)


def _write_npy(array: np.ndarray, target: Path) -> None:
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        np.save(_ChunkedWriter(handle), array)  # type: ignore[arg-type]


def build_index_from_features(
    features: np.ndarray,
    out_dir: str | Path,
    exp_name: str,
    version: Version,
    *,
    kind: IndexKind = "ivf_flat",
    seed: int = 0,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> IndexResult:
    """Shuffle, reduce (above 200k rows), train and fill an index; write it into `out_dir`."""
    import faiss

    start = time.perf_counter()
    _kind_info(kind)
    out_dir = Path(out_dir)
    dim = FEATURE_DIM[version]
    if features.ndim != 2 or features.shape[1] != dim:
        raise UserInputError(f"features have shape {features.shape}; a {version} index needs [N, {dim}]")
    n_rows = int(features.shape[0])
    if n_rows < 39:
        raise ExperimentError(
            f"only {n_rows} feature frames in {str(out_dir)!r}; an index needs at least 39 "
            "(under a second of audio): add training audio and rerun feature extraction"
        )
    steps = 5
    report(progress, 0, steps, "shuffling features")
    data = shuffle_rows(np.ascontiguousarray(features, dtype=np.float32), seed)
    check(cancel)
    used_kmeans = n_rows > KMEANS_ROW_THRESHOLD
    if used_kmeans:
        report(progress, 1, steps, f"k-means: {n_rows} rows to {KMEANS_CENTRES} centres (this takes minutes)")
        data = reduce_with_kmeans(data, seed)
        check(cancel)
    total_path = out_dir / TOTAL_FEATURES_NAME
    _write_npy(data, total_path)

    n_vectors = int(data.shape[0])
    n_list = cells_for(kind, n_vectors)
    info = INDEX_KINDS[kind]
    stored = _stored_vectors(kind, data)  # [N, D]; unit rows for cosine kinds
    # faiss and torch share OpenMP: restore the thread count afterwards so a build inside the app
    # does not change how (and how reproducibly) conversions run.
    saved_threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, os.cpu_count() or 1))
    try:
        index = make_empty_index(kind, dim, n_list, n_vectors)
        report(progress, 2, steps, f"training {info.label} on {n_vectors} vectors")
        index.train(stored)
        check(cancel)
        trained_path = out_dir / index_file_name(n_list, exp_name, version, stage="trained", kind=kind)
        _write_index(index, trained_path)

        report(progress, 3, steps, "adding vectors")
        for offset in range(0, n_vectors, ADD_BATCH):
            check(cancel)
            index.add(stored[offset : offset + ADD_BATCH])
            done = min(offset + ADD_BATCH, n_vectors)
            report(progress, 3, steps, f"adding vectors {done}/{n_vectors}")
        added_path = out_dir / index_file_name(n_list, exp_name, version, stage="added", kind=kind)
        _write_index(index, added_path)
        build_seconds = time.perf_counter() - start
        report(progress, 4, steps, "measuring recall on the index's own vectors")
        recall, sample = self_recall(index, stored, info.metric, seed)
    finally:
        faiss.omp_set_num_threads(saved_threads)
    diagnostics = IndexDiagnostics(
        kind=kind,
        label=info.label,
        metric=info.metric,
        rows=n_rows,
        vectors=n_vectors,
        cells=n_list,
        nprobe=info.nprobe,
        recall_at_8=recall,
        recall_sample=sample,
        build_seconds=build_seconds,
        warnings=build_warnings(n_rows, recall, INDEX_KINDS[RECOMMENDED_KIND].label),
    )
    report(progress, steps, steps, f"index written: {added_path.name}")
    return IndexResult(
        added_path=added_path,
        trained_path=trained_path,
        total_features_path=total_path,
        kind=kind,
        n_rows=n_rows,
        n_vectors=n_vectors,
        n_list=n_list,
        used_kmeans=used_kmeans,
        seconds=time.perf_counter() - start,
        diagnostics=diagnostics,
    )


def _as_experiment(experiment: Experiment | str | Path) -> Experiment:
    return experiment if isinstance(experiment, Experiment) else Experiment(experiment)


def build_index(
    experiment: Experiment | str | Path,
    version: Version,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    *,
    kind: IndexKind = "ivf_flat",
    seed: int = 0,
) -> IndexResult:
    """Build the index of an experiment (a `train.experiment.Experiment` or its folder) into its folder."""
    exp = _as_experiment(experiment)
    features = load_features(exp.feature_dir(version), version, progress, cancel, exclude=exp.held_out_names())
    return build_index_from_features(
        features, exp.root, exp.name, version, kind=kind, seed=seed, progress=progress, cancel=cancel
    )
