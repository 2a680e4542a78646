"""Building the feature index of an experiment; the one owner of index file names.

RVC's recipe (kept so that indexes are interchangeable with RVC's):
  1. load every `3_feature256|768/*.npy` in file-name order and concatenate them;
  2. shuffle the rows (seeded here, so a rebuild gives the same file);
  3. above 200,000 rows, replace them by 10,000 mini-batch k-means centres;
  4. save them as `total_fea.npy`;
  5. `IVF<n>,Flat` with n = min(int(16 * sqrt(N)), N // 39), nprobe 1; train, write
     `trained_IVF<n>_Flat_nprobe_1_<exp>_<ver>.index`; add in batches of 8192, write
     `added_IVF<n>_Flat_nprobe_1_<exp>_<ver>.index`.
Other kinds (`INDEX_KINDS`) trade build time and memory for a better search; every kind loads
with `infer_pack.retrieval.load_index`.
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
from train.experiment import Experiment, load_npy

Version = Literal["v1", "v2"]
IndexKind = Literal["ivf_flat", "ivf_flat_probe8", "hnsw"]

KMEANS_ROW_THRESHOLD = 200_000  # RVC: `if big_npy.shape[0] > 2e5`
KMEANS_CENTRES = 10_000
ADD_BATCH = 8192
FEATURE_DIM: dict[str, int] = {"v1": 256, "v2": 768}
TOTAL_FEATURES_NAME = "total_fea.npy"


@dataclass(frozen=True)
class IndexKindInfo:
    """What an index kind is and what it costs (shown by the UI next to the choice)."""

    kind: IndexKind
    label: str
    help: str


# Costs measured with bench/bench_index.py (2 CPU cores, 768-dim synthetic clustered frames, recall@8
# against exact search over the same vectors). Recall depends on how clustered the frames are, so the
# help gives the range seen on two synthetic sets.
INDEX_KINDS: dict[str, IndexKindInfo] = {
    "ivf_flat": IndexKindInfo(
        "ivf_flat",
        "IVF Flat, nprobe 1 (RVC)",
        "RVC's index and file names; RVC loads it. Fast search (1/25 to 1/35 of an exact search) but it "
        "looks into one cell only: it finds 89-99% of the 8 true nearest training features at 20k frames "
        "and about 71% at 100k. Build: about 15 s at 20k frames, 4-5 min at 100k.",
    ),
    "ivf_flat_probe8": IndexKindInfo(
        "ivf_flat_probe8",
        "IVF Flat, nprobe 8 (recommended)",
        "The same vectors, size and build time as RVC's index, searched in 8 cells: 99.9-100% of the true "
        "neighbours at 20k and 100k frames, for a search 1.3x (100k) to 5x (20k) that of nprobe 1, a small "
        "part of a conversion either way. RVC loads it too.",
    ),
    "hnsw": IndexKindInfo(
        "hnsw",
        "HNSW graph (32 links)",
        "A graph index: 97-100% of the true neighbours at 20k frames, 93% at 100k, with the fastest search "
        "at 100k; builds much faster than IVF for large sets (13 s vs 4-5 min at 100k) and is about 6% larger.",
    ),
}


def n_list_for(n_rows: int) -> int:
    """RVC's number of IVF cells: min(int(16 * sqrt(N)), N // 39), at least 1."""
    return max(1, min(int(16 * math.sqrt(n_rows)), n_rows // 39))


def _kind_tag(kind: IndexKind, n_list: int) -> str:
    if kind in ("ivf_flat", "ivf_flat_probe8"):
        return f"IVF{n_list}_Flat_nprobe_{_nprobe_for(kind)}"
    if kind == "hnsw":
        return "HNSW32_Flat"
    raise UserInputError(f"unknown index kind {kind!r}; choose one of {sorted(INDEX_KINDS)}")


def _nprobe_for(kind: IndexKind) -> int:
    return {"ivf_flat": 1, "ivf_flat_probe8": 8, "hnsw": 0}[kind]


def index_file_name(
    n_list: int,
    exp_name: str,
    version: Version,
    *,
    stage: Literal["added", "trained"] = "added",
    kind: IndexKind = "ivf_flat",
) -> str:
    """`added_IVF<n>_Flat_nprobe_1_<exp>_<ver>.index` (RVC's name for the default kind)."""
    if stage not in ("added", "trained"):
        raise UserInputError(f"unknown index stage {stage!r}; expected 'added' or 'trained'")
    if version not in FEATURE_DIM:
        raise UserInputError(f"unknown model version {version!r}; expected 'v1' or 'v2'")
    return f"{stage}_{_kind_tag(kind, n_list)}_{exp_name}_{version}.index"


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
    n_list: int
    used_kmeans: bool
    seconds: float


def list_feature_files(feature_dir: Path) -> list[Path]:
    """The .npy files of a feature folder in RVC's (file-name) order."""
    return sorted((p for p in feature_dir.iterdir() if p.suffix == ".npy" and p.is_file()), key=lambda p: p.name)


def load_features(
    feature_dir: str | Path,
    version: Version,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> np.ndarray:
    """Concatenate every .npy of `feature_dir` in file-name order -> [N, 256|768] float32."""
    feature_dir = Path(feature_dir)
    dim = FEATURE_DIM[version]
    if not feature_dir.is_dir():
        raise ExperimentError(
            f"feature folder {str(feature_dir)!r} does not exist; run feature extraction (Train tab, step 2b) first"
        )
    files = list_feature_files(feature_dir)
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


def make_empty_index(kind: IndexKind, dim: int, n_list: int) -> Any:
    """An untrained faiss index of `kind` with its search settings stored in it."""
    import faiss

    if kind in ("ivf_flat", "ivf_flat_probe8"):
        index = faiss.index_factory(dim, f"IVF{n_list},Flat")
        faiss.extract_index_ivf(index).nprobe = _nprobe_for(kind)
        return index
    if kind == "hnsw":
        index = faiss.index_factory(dim, "HNSW32,Flat")
        graph: Any = faiss.downcast_index(index)  # IndexHNSWFlat, which the bindings do not type
        graph.hnsw.efSearch = 64
        return index
    raise UserInputError(f"unknown index kind {kind!r}; choose one of {sorted(INDEX_KINDS)}")


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
    if kind not in INDEX_KINDS:
        raise UserInputError(f"unknown index kind {kind!r}; choose one of {sorted(INDEX_KINDS)}")
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
    n_list = n_list_for(n_vectors)
    # faiss and torch share OpenMP: restore the thread count afterwards so a build inside the app
    # does not change how (and how reproducibly) conversions run.
    saved_threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, os.cpu_count() or 1))
    try:
        index = make_empty_index(kind, dim, n_list)
        report(progress, 2, steps, f"training {INDEX_KINDS[kind].label} on {n_vectors} vectors")
        index.train(data)
        check(cancel)
        trained_path = out_dir / index_file_name(n_list, exp_name, version, stage="trained", kind=kind)
        _write_index(index, trained_path)

        report(progress, 3, steps, "adding vectors")
        for offset in range(0, n_vectors, ADD_BATCH):
            check(cancel)
            index.add(data[offset : offset + ADD_BATCH])
            done = min(offset + ADD_BATCH, n_vectors)
            report(progress, 3, steps, f"adding vectors {done}/{n_vectors}")
        added_path = out_dir / index_file_name(n_list, exp_name, version, stage="added", kind=kind)
        _write_index(index, added_path)
    finally:
        faiss.omp_set_num_threads(saved_threads)
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
    features = load_features(exp.feature_dir(version), version, progress, cancel)
    return build_index_from_features(
        features, exp.root, exp.name, version, kind=kind, seed=seed, progress=progress, cancel=cancel
    )
