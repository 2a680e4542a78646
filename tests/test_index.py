"""Index building: RVC's file names, recipe (order, shuffle, k-means, IVF size), atomic files, cancel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import train.index as index_mod
from infer_pack.errors import CancelledError, ExperimentError, UserInputError
from infer_pack.progress import CancelToken
from infer_pack.retrieval import load_index
from train.experiment import Experiment
from train.index import (
    INDEX_KINDS,
    added_index_for,
    build_index,
    build_index_from_features,
    index_file_name,
    n_list_for,
    parse_index_file_name,
)


def clustered(n: int, dim: int, n_clusters: int = 20, seed: int = 0) -> np.ndarray:
    """Points around `n_clusters` random centres (float32 [n, dim])."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32) * 3.0
    labels = rng.integers(0, n_clusters, n)
    return (centres[labels] + rng.standard_normal((n, dim)).astype(np.float32)).astype(np.float32)


def make_experiment(root: Path, name: str, version: str, blocks: list[np.ndarray]) -> Experiment:
    exp = Experiment(root / "logs" / name)
    folder = exp.feature_dir(version)  # type: ignore[arg-type]
    folder.mkdir(parents=True)
    for i, block in enumerate(blocks):
        np.save(folder / f"0_{i}.npy", block)
    return exp


def test_index_file_names_are_rvcs() -> None:
    assert index_file_name(256, "alice", "v2") == "added_IVF256_Flat_nprobe_1_alice_v2.index"
    assert index_file_name(51, "my voice", "v1", stage="trained") == "trained_IVF51_Flat_nprobe_1_my voice_v1.index"
    assert parse_index_file_name("added_IVF256_Flat_nprobe_1_alice_v2.index") == {
        "stage": "added",
        "n_list": 256,
        "version": "v2",
    }
    assert parse_index_file_name("something.index") is None
    trained = Path("/x/trained_IVF9_Flat_nprobe_1_a_v2.index")
    assert added_index_for(trained) == Path("/x/added_IVF9_Flat_nprobe_1_a_v2.index")
    for kind in INDEX_KINDS:
        name = index_file_name(100, "e", "v2", kind=kind)  # type: ignore[arg-type]
        assert name.startswith("added_") and name.endswith("_e_v2.index")
    with pytest.raises(UserInputError):
        index_file_name(1, "e", "v3")  # type: ignore[arg-type]


def test_ivf_size_is_rvcs_formula() -> None:
    # min(int(16 * sqrt(N)), N // 39)
    assert n_list_for(10_000) == 256
    assert n_list_for(10_000_000 // 1000) == 256
    assert n_list_for(200_000) == min(int(16 * 200_000**0.5), 200_000 // 39) == 5128
    assert n_list_for(40) == 1
    assert n_list_for(3_000_000) == int(16 * 3_000_000**0.5)


def test_build_from_experiment(tmp_path: Path) -> None:
    data = clustered(2400, 768, seed=1)
    exp = make_experiment(tmp_path, "alice", "v2", [data[:1000], data[1000:1900], data[1900:]])
    messages: list[str] = []
    result = build_index(exp, "v2", progress=lambda d, t, m: messages.append(m), seed=7)

    n_list = min(int(16 * 2400**0.5), 2400 // 39)
    assert result.n_list == n_list and result.n_rows == 2400 and result.n_vectors == 2400 and not result.used_kmeans
    assert result.added_path == exp.root / f"added_IVF{n_list}_Flat_nprobe_1_alice_v2.index"
    assert result.trained_path == exp.root / f"trained_IVF{n_list}_Flat_nprobe_1_alice_v2.index"
    assert result.added_path.is_file() and result.trained_path.is_file()
    assert not list(exp.root.glob(".*.tmp")), "temporary files left behind"
    assert messages and "index written" in messages[-1]

    import faiss

    trained = faiss.read_index(str(result.trained_path))
    assert trained.ntotal == 0 and trained.is_trained
    added = faiss.read_index(str(result.added_path))
    assert added.ntotal == 2400 and faiss.extract_index_ivf(added).nprobe == 1
    assert faiss.extract_index_ivf(added).nlist == n_list

    # Rows: the file-name-order concatenation, permuted by the seeded shuffle.
    total = np.load(result.total_features_path)
    expected = data[np.random.default_rng(7).permutation(2400)]
    np.testing.assert_array_equal(total, expected)
    loaded = load_index(result.added_path)
    np.testing.assert_array_equal(np.sort(loaded.vectors(), axis=0), np.sort(data, axis=0))

    # Same seed, same file, byte for byte.
    first = result.added_path.read_bytes()
    build_index(exp.root, "v2", seed=7)
    assert result.added_path.read_bytes() == first


def test_large_sets_are_reduced_with_kmeans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_mod, "KMEANS_ROW_THRESHOLD", 1000)
    monkeypatch.setattr(index_mod, "KMEANS_CENTRES", 80)
    data = clustered(1200, 256, n_clusters=10, seed=2)
    result = build_index_from_features(data, tmp_path, "big", "v1", seed=0)
    assert result.used_kmeans and result.n_vectors == 80
    assert result.n_list == n_list_for(80) == 2
    assert load_index(result.added_path).size == 80


def test_cancel_stops_before_the_added_file(tmp_path: Path) -> None:
    token = CancelToken()
    calls = 0

    def progress(done: int, total: int, message: str) -> None:
        nonlocal calls
        calls += 1
        if message.startswith("adding"):
            token.cancel()

    with pytest.raises(CancelledError):
        build_index_from_features(clustered(1000, 256), tmp_path, "c", "v1", progress=progress, cancel=token)
    assert calls > 0
    assert not list(tmp_path.glob("added_*.index"))


def test_missing_or_bad_features_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ExperimentError, match="feature extraction"):
        build_index(tmp_path / "logs" / "none", "v2")
    exp = make_experiment(tmp_path, "wrongdim", "v2", [np.zeros((100, 256), np.float32)])
    with pytest.raises(ExperimentError, match="rerun feature extraction"):
        build_index(exp, "v2")
    with pytest.raises(ExperimentError, match="at least 39"):
        build_index_from_features(np.zeros((10, 768), np.float32), tmp_path, "x", "v2")


@pytest.mark.parametrize("kind", ["ivf_flat_probe8", "hnsw"])
def test_other_kinds_load_and_find_neighbours(tmp_path: Path, kind: str) -> None:
    import faiss

    data = clustered(3000, 256, n_clusters=30, seed=3)
    result = build_index_from_features(data, tmp_path, "k", "v1", kind=kind)  # type: ignore[arg-type]
    assert result.added_path.name == index_file_name(result.n_list, "k", "v1", kind=kind)  # type: ignore[arg-type]
    index = load_index(result.added_path)
    queries = data[:200] + 0.1 * np.random.default_rng(0).standard_normal((200, 256)).astype(np.float32)
    order = np.load(result.total_features_path)  # index ids count rows of the shuffled set
    exact = faiss.IndexFlatL2(256)
    exact.add(order)
    _, truth = exact.search(queries, 8)
    _, found = index.search(queries, 8)
    recall = np.mean([len(set(a) & set(b)) / 8 for a, b in zip(truth, found)])
    assert recall > 0.9, recall
    # Vectors come back exactly (refine/flat storage), so retrieval weights use the true features.
    ids = np.array([0, 17, 2999])
    stored = index.index.reconstruct_batch(ids)
    np.testing.assert_array_equal(stored, order[ids])
