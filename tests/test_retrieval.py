"""Feature retrieval: RVC-made index files load unchanged and the blend computes RVC's formula."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from infer_pack.errors import IndexFileError
from infer_pack.retrieval import load_index


def rvc_style_index(path: Path, data: np.ndarray) -> None:
    """An index written the way RVC's train_index writes it (faiss.write_index on IVF<n>,Flat, nprobe 1)."""
    import faiss

    n_ivf = min(int(16 * np.sqrt(data.shape[0])), data.shape[0] // 39)
    index = faiss.index_factory(data.shape[1], f"IVF{n_ivf},Flat")
    faiss.extract_index_ivf(index).nprobe = 1
    index.train(data)
    for i in range(0, data.shape[0], 8192):
        index.add(data[i : i + 8192])
    faiss.write_index(index, str(path))


def rvc_blend(path: Path, feats: np.ndarray, index_rate: float) -> np.ndarray:
    """RVC's Pipeline.vc retrieval step, written out with faiss and numpy (float32 throughout)."""
    import faiss

    index = faiss.read_index(str(path))
    big_npy = index.reconstruct_n(0, index.ntotal)
    score, ix = index.search(feats, k=8)
    weight = np.square(1 / score)
    weight /= weight.sum(axis=1, keepdims=True)
    npy = np.sum(big_npy[ix] * np.expand_dims(weight, axis=2), axis=1)
    return npy * index_rate + (1 - index_rate) * feats


@pytest.fixture(scope="module")
def rvc_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((12, 256)).astype(np.float32) * 2
    data = (centres[rng.integers(0, 12, 4000)] + rng.standard_normal((4000, 256)).astype(np.float32)).astype(np.float32)
    path = tmp_path_factory.mktemp("rvc") / "added_IVF102_Flat_nprobe_1_rvc_v1.index"
    rvc_style_index(path, data)
    return path, data


def test_rvc_index_loads_and_blends_like_rvc(rvc_index: tuple[Path, np.ndarray]) -> None:
    path, data = rvc_index
    index = load_index(path)
    assert index.dim == 256 and index.size == 4000
    np.testing.assert_array_equal(np.sort(index.vectors(), axis=0), np.sort(data, axis=0))
    feats = (data[:300] + 0.3 * np.random.default_rng(1).standard_normal((300, 256))).astype(np.float32)
    for rate in (0.3, 1.0):
        ours = index.blend(feats, rate)
        np.testing.assert_allclose(ours, rvc_blend(path, feats, rate), atol=1e-5, rtol=1e-5)
    # nprobe is the stored one (1) unless overridden
    import faiss

    assert faiss.extract_index_ivf(index.index).nprobe == 1
    assert faiss.extract_index_ivf(load_index(path, nprobe=4).index).nprobe == 4


def test_index_rate_zero_is_identity(rvc_index: tuple[Path, np.ndarray]) -> None:
    index = load_index(rvc_index[0])
    feats = np.random.default_rng(2).standard_normal((50, 256)).astype(np.float32)
    assert index.blend(feats, 0.0) is feats
    assert not np.allclose(index.blend(feats, 0.5), feats)


def test_zero_distance_gives_the_stored_vector(rvc_index: tuple[Path, np.ndarray]) -> None:
    path, data = rvc_index
    index = load_index(path)
    queries = data[:20].copy()  # every query is exactly in the index: score 0
    out = index.blend(queries, 1.0)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, queries, atol=1e-5)


def test_too_few_neighbours_do_not_make_nan(tmp_path: Path) -> None:
    data = np.random.default_rng(3).standard_normal((45, 256)).astype(np.float32)
    path = tmp_path / "tiny.index"
    rvc_style_index(path, data)
    index = load_index(path)
    out = index.blend(np.random.default_rng(4).standard_normal((10, 256)).astype(np.float32), 1.0, k=64)
    assert np.isfinite(out).all()


def test_wrong_dim_and_bad_files_raise_index_errors(rvc_index: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    index = load_index(rvc_index[0])
    with pytest.raises(IndexFileError, match="256-dim"):
        index.blend(np.zeros((4, 768), np.float32), 0.5)
    empty = tmp_path / "empty.index"
    empty.write_bytes(b"")
    with pytest.raises(IndexFileError, match="empty"):
        load_index(empty)
    junk = tmp_path / "junk.index"
    junk.write_bytes(b"not an index at all" * 10)
    with pytest.raises(IndexFileError, match="junk.index"):
        load_index(junk)
    with pytest.raises(IndexFileError, match="not found"):
        load_index(tmp_path / "missing.index")
