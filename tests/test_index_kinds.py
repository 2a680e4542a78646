"""Every index kind: build, save, load and search with the right neighbours; RVC's kind byte for byte;
file names that cannot be taken for RVC's; diagnostics of the built index."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from infer_pack.retrieval import load_index, normalise_rows
from train.index import (
    INDEX_KINDS,
    build_index_from_features,
    cells_for,
    index_file_name,
    k_factor_for,
    n_list_for,
    pq_subquantizers_for,
)
from train.index_report import FEW_FRAMES

RVC_NAME = re.compile(r"^(added|trained)_IVF\d+_Flat_nprobe_\d+_")


def clustered(n: int, dim: int, n_clusters: int = 30, seed: int = 0) -> np.ndarray:
    """Frames like speech features, [n, dim] float32: cluster centres of different norms (so L2 and
    cosine disagree), a rank-4 spread inside each cluster and a little isotropic noise, so that the
    8 nearest neighbours are well defined (isotropic clusters make all 8 near-ties)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32) * 3.0
    centres *= rng.uniform(0.5, 2.0, (n_clusters, 1)).astype(np.float32)
    basis = rng.standard_normal((n_clusters, 4, dim)).astype(np.float32)  # [C, 4, D]
    labels = rng.integers(0, n_clusters, n)
    spread = np.einsum("nr,nrd->nd", rng.standard_normal((n, 4)).astype(np.float32), basis[labels])
    return (centres[labels] + spread + 0.05 * rng.standard_normal((n, dim)).astype(np.float32)).astype(np.float32)


def exact_neighbours(stored: np.ndarray, queries: np.ndarray, metric: str, k: int = 8) -> np.ndarray:
    """Brute force in numpy: ids [Q, k] by squared L2 (metric 'l2') or by cosine similarity."""
    if metric == "cosine":
        scores = -(normalise_rows(queries) @ normalise_rows(stored).T)
    else:
        scores = (queries**2).sum(1)[:, None] - 2.0 * queries @ stored.T + (stored**2).sum(1)[None, :]
    return np.argsort(scores, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("kind", list(INDEX_KINDS))
def test_each_kind_round_trips_with_the_right_neighbours(tmp_path: Path, kind: str) -> None:
    info = INDEX_KINDS[kind]
    data = clustered(2000, 256, seed=3)
    result = build_index_from_features(data, tmp_path, "k", "v1", kind=kind)  # type: ignore[arg-type]
    assert result.added_path.name == index_file_name(result.n_list, "k", "v1", kind=kind)  # type: ignore[arg-type]
    assert result.added_path.is_file() and result.trained_path.is_file()
    index = load_index(result.added_path)
    assert index.metric == info.metric and index.dim == 256 and index.size == 2000

    order = np.load(result.total_features_path)  # ids count rows of the shuffled set, as extracted
    rng = np.random.default_rng(0)
    queries = (order[:200] + 0.02 * rng.standard_normal((200, 256))).astype(np.float32)  # near frames 0..199
    truth = exact_neighbours(order, queries, info.metric)
    _, found = index.search(queries, 8)
    recall = np.mean([len(set(a) & set(b)) / 8 for a, b in zip(truth, found)])
    assert recall > (0.6 if kind == "ivf_flat" else 0.9), recall  # RVC's nprobe 1 looks into one cell
    assert (truth[:, 0] == np.arange(200)).all()
    assert (found[:, 0] == np.arange(200)).mean() >= (0.95 if kind == "ivf_flat" else 1.0)

    # Stored vectors come back exactly (unit rows for cosine), so the weights use the true features.
    ids = np.array([0, 17, 1999])
    stored = index.index.reconstruct_batch(ids)
    expected = normalise_rows(order[ids]) if info.metric == "cosine" else order[ids]
    np.testing.assert_allclose(stored, expected, rtol=1e-6, atol=1e-6)
    # A training frame retrieves itself (distance 0 takes the weight), at its own scale for both metrics.
    np.testing.assert_allclose(index.retrieve(order[:50]), order[:50], rtol=1e-4, atol=1e-4)
    assert result.diagnostics.recall_at_8 > (0.6 if kind == "ivf_flat" else 0.9)


def test_fastscan_kind_is_rvcs_tips_recipe_at_768_dims(tmp_path: Path) -> None:
    import faiss

    data = clustered(1600, 768, seed=4)
    result = build_index_from_features(data, tmp_path, "tips", "v2", kind="ivf_pqfs")
    n_cells = min(int(4 * 1600**0.5), 1600 // 39)
    assert result.n_list == cells_for("ivf_pqfs", 1600) == n_cells
    assert result.added_path.name == f"added_IVF{n_cells}_PQ192x4fs_RFlat_probe8_tips_v2.index"
    loaded = load_index(result.added_path)  # owns the faiss objects the views below point into
    refine = faiss.downcast_index(loaded.index)
    assert isinstance(refine, faiss.IndexRefineFlat)
    assert refine.k_factor == k_factor_for(1600) == 8.0
    base = faiss.downcast_index(refine.base_index)
    assert isinstance(base, faiss.IndexIVFPQFastScan)
    assert (base.nlist, base.nprobe, base.pq.M, base.pq.nbits) == (n_cells, 8, 192, 4)
    assert result.diagnostics.recall_at_8 > 0.9
    assert pq_subquantizers_for(256) == 64 and k_factor_for(100_000) == 16.0


def test_rvc_kind_is_byte_for_byte_rvcs_recipe(tmp_path: Path) -> None:
    """RVC's train_index (infer-web.py) steps on our total_fea.npy give the same two files, same names."""
    import faiss

    data = clustered(2400, 768, seed=1)
    result = build_index_from_features(data, tmp_path / "ours", "alice", "v2", seed=7)
    big_npy = np.load(result.total_features_path)
    n_ivf = min(int(16 * np.sqrt(big_npy.shape[0])), big_npy.shape[0] // 39)
    index = faiss.index_factory(768, f"IVF{n_ivf},Flat")
    index_ivf = faiss.extract_index_ivf(index)
    index_ivf.nprobe = 1
    index.train(big_npy)
    rvc_dir = tmp_path / "rvc"
    rvc_dir.mkdir()
    trained = rvc_dir / f"trained_IVF{n_ivf}_Flat_nprobe_{index_ivf.nprobe}_alice_v2.index"
    faiss.write_index(index, str(trained))
    for i in range(0, big_npy.shape[0], 8192):
        index.add(big_npy[i : i + 8192])
    added = rvc_dir / f"added_IVF{n_ivf}_Flat_nprobe_{index_ivf.nprobe}_alice_v2.index"
    faiss.write_index(index, str(added))

    assert result.added_path.name == added.name and result.trained_path.name == trained.name
    assert result.added_path.read_bytes() == added.read_bytes()
    assert result.trained_path.read_bytes() == trained.read_bytes()
    # An RVC-made file loads through the same function, as L2.
    assert load_index(added).metric == "l2"


def test_only_rvcs_kind_carries_rvcs_name_pattern() -> None:
    for kind in INDEX_KINDS:
        for stage in ("added", "trained"):
            name = index_file_name(512, "exp", "v2", stage=stage, kind=kind)  # type: ignore[arg-type]
            assert name.startswith(f"{stage}_") and name.endswith("_exp_v2.index")
            assert bool(RVC_NAME.match(name)) == (kind == "ivf_flat"), name
            assert ("_cos_" in name) == (INDEX_KINDS[kind].metric == "cosine"), name
    names = {index_file_name(512, "exp", "v2", kind=kind) for kind in INDEX_KINDS}  # type: ignore[arg-type]
    assert len(names) == len(INDEX_KINDS)


def test_cells_follow_rvc_and_the_tips() -> None:
    assert cells_for("ivf_flat", 100_000) == n_list_for(100_000) == min(int(16 * 100_000**0.5), 100_000 // 39)
    assert cells_for("ivf_pqfs_cos", 100_000) == int(4 * 100_000**0.5)
    assert cells_for("ivf_pqfs", 1000) == 1000 // 39  # at least 39 vectors per cell
    assert cells_for("hnsw", 100_000) == 0


def test_diagnostics_of_a_small_set_warn_and_are_printed(tmp_path: Path) -> None:
    data = clustered(800, 256, seed=5)
    result = build_index_from_features(data, tmp_path, "tiny", "v1", kind="ivf_flat")
    diag = result.diagnostics
    assert (diag.rows, diag.vectors, diag.cells, diag.nprobe) == (800, 800, n_list_for(800), 1)
    assert diag.kind == "ivf_flat" and diag.metric == "l2" and diag.recall_sample == 256
    assert 0.0 < diag.recall_at_8 <= 1.0 and diag.build_seconds > 0.0
    assert 800 < FEW_FRAMES and any("only 800 feature frames" in w for w in diag.warnings)
    message = result.message()
    assert result.added_path.name in message and "recall@8" in message and "warning: only 800" in message

    # The recall is this index's own: searching its sample exhaustively finds all of them.
    big = clustered(FEW_FRAMES + 100, 256, seed=6)
    flat_like = build_index_from_features(big, tmp_path / "big", "big", "v1", kind="ivf_flat_probe8")
    assert not any("feature frames" in w for w in flat_like.diagnostics.warnings)


def test_low_recall_is_measured_not_assumed(tmp_path: Path) -> None:
    """Uniform noise spreads every neighbourhood over many cells: nprobe 1 misses most of them."""
    data = np.random.default_rng(9).standard_normal((4000, 256)).astype(np.float32)
    result = build_index_from_features(data, tmp_path, "noise", "v1", kind="ivf_flat")
    import faiss

    index = load_index(result.added_path)
    stored = np.load(result.total_features_path)
    picks = np.sort(np.random.default_rng(0).choice(4000, 256, replace=False))
    _, truth = faiss.knn(stored[picks], stored, 8)
    _, found = index.search(stored[picks], 8)
    recall = np.mean([len(set(a) & set(b)) / 8 for a, b in zip(truth, found)])
    assert result.diagnostics.recall_at_8 == pytest.approx(recall)
    assert recall < 0.8 and any("finds only" in w for w in result.diagnostics.warnings)


def test_api_offers_every_kind_and_prints_the_diagnostics(tmp_path: Path) -> None:
    from tools.api.index import index_kind_choices, index_kind_help, train_index
    from train.experiment import Experiment, save_npy
    from train.index import RECOMMENDED_KIND

    choices = index_kind_choices()
    assert [kind for _, kind in choices] == list(INDEX_KINDS)
    assert [label for label, kind in choices if label.endswith("(recommended)")] == [
        INDEX_KINDS[RECOMMENDED_KIND].label + " (recommended)"
    ]
    assert INDEX_KINDS[RECOMMENDED_KIND].help in index_kind_help()

    experiment = Experiment(tmp_path / "logs" / "demo")
    data = clustered(1000, 256, seed=8)
    save_npy(experiment.feature_path("0_0", "v1"), data[:600])
    save_npy(experiment.feature_path("0_1", "v1"), data[600:])
    result = train_index(project=tmp_path, experiment="demo", version="v1", kind="hnsw_cos")
    lines = result.summary().splitlines()
    assert lines[0] == f"index built from 1000 feature frames: {result.added_path.name}"
    assert result.added_path.name == "added_HNSW32_Flat_cos_demo_v1.index"
    assert lines[1].startswith("kind: HNSW graph (32 links), cosine [hnsw_cos], metric cosine")
    assert any(line.startswith("recall@8 on 256 of its own vectors: ") for line in lines)
    assert any(line.startswith("warning: only 1000 feature frames") for line in lines)


def test_rvcs_own_retrieval_reads_the_fastscan_file_as_we_do(tmp_path: Path) -> None:
    """RVC's Pipeline.vc steps (read_index, reconstruct_n, search, 1/score^2) on an ivf_pqfs file."""
    import faiss

    data = clustered(2000, 256, seed=11)
    path = build_index_from_features(data, tmp_path, "rvc", "v1", kind="ivf_pqfs").added_path
    feats = (data[:300] + 0.3 * np.random.default_rng(1).standard_normal((300, 256))).astype(np.float32)
    index = faiss.read_index(str(path))
    big_npy = index.reconstruct_n(0, index.ntotal)
    score, ix = index.search(feats, k=8)
    weight = np.square(1 / score)
    weight /= weight.sum(axis=1, keepdims=True)
    rvc = np.sum(big_npy[ix] * np.expand_dims(weight, axis=2), axis=1) * 0.75 + 0.25 * feats
    np.testing.assert_allclose(load_index(path).blend(feats, 0.75), rvc, rtol=1e-5, atol=1e-5)
