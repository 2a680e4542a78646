"""Retrieval per metric on hand-made vectors, and index files that must be refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from infer_pack.errors import IndexFileError
from infer_pack.retrieval import FeatureIndex, load_index, normalise_rows


def _flat(vectors: np.ndarray, metric: str) -> FeatureIndex:
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1]) if metric == "cosine" else faiss.IndexFlatL2(vectors.shape[1])
    index.add(normalise_rows(vectors) if metric == "cosine" else vectors)
    return FeatureIndex(index=index, metric=metric)  # type: ignore[arg-type]


def _write(index: object, path: Path) -> Path:
    import faiss

    faiss.write_index(index, str(path))
    return path


# Two stored frames in a 4-dim space: a loud one along x, a quiet one on the diagonal.
LOUD_X = np.array([10.0, 0.0, 0.0, 0.0], np.float32)
QUIET_DIAG = np.array([1.0, 1.0, 0.0, 0.0], np.float32)
STORED = np.stack([LOUD_X, QUIET_DIAG])


def test_l2_and_cosine_order_hand_made_neighbours() -> None:
    query = np.array([[2.0, 0.1, 0.0, 0.0]], np.float32)
    # L2: |q - diag|^2 = 1 + 0.81 = 1.81 < |q - x|^2 = 64 + 0.01; cosine: q points almost along x.
    scores, ids = _flat(STORED, "l2").search(query, 2)
    assert ids.tolist() == [[1, 0]]
    np.testing.assert_allclose(scores, [[1.81, 64.01]], rtol=1e-5)
    distances, ids = _flat(STORED, "cosine").search(query, 2)
    assert ids.tolist() == [[0, 1]]
    q = query[0] / np.linalg.norm(query[0])
    cos_x, cos_diag = q[0], (q[0] + q[1]) / np.sqrt(2.0)
    np.testing.assert_allclose(distances, [[2 - 2 * cos_x, 2 - 2 * cos_diag]], rtol=1e-5)


def test_cosine_weights_use_the_unit_sphere_distance() -> None:
    query = np.array([[3.0, 1.0, 0.0, 0.0]], np.float32)
    u = STORED / np.linalg.norm(STORED, axis=1, keepdims=True)  # [2, 4] unit rows
    q_unit = query[0] / np.linalg.norm(query[0])
    d2 = np.sum((u - q_unit) ** 2, axis=1)  # squared L2 between unit vectors = 2 - 2 cos
    weights = 1.0 / d2**2
    weights /= weights.sum()
    expected = np.linalg.norm(query[0]) * (weights @ u)  # blended on the sphere, at the query's norm
    out = _flat(STORED, "cosine").retrieve(query, k=2)
    np.testing.assert_allclose(out[0], expected, rtol=1e-5)
    # L2 keeps RVC's weights on the raw vectors.
    d2_raw = np.sum((STORED - query[0]) ** 2, axis=1)
    w_raw = 1.0 / d2_raw**2
    np.testing.assert_allclose(_flat(STORED, "l2").retrieve(query, k=2)[0], (w_raw / w_raw.sum()) @ STORED, rtol=1e-5)


def test_cosine_ignores_the_query_scale_but_keeps_it() -> None:
    index = _flat(STORED, "cosine")
    query = np.array([[3.0, 1.0, 0.0, 0.0]], np.float32)
    np.testing.assert_allclose(index.retrieve(5.0 * query), 5.0 * index.retrieve(query), rtol=1e-5)
    silent = np.zeros((1, 4), np.float32)
    assert np.all(np.isfinite(index.retrieve(silent))) and np.allclose(index.retrieve(silent), 0.0)


def test_metric_is_read_from_the_file_not_the_name(tmp_path: Path) -> None:
    import faiss

    ip = faiss.IndexFlatIP(4)
    ip.add(normalise_rows(STORED))
    # An inner-product index under RVC's L2 file name is still searched as cosine.
    path = _write(ip, tmp_path / "added_IVF1_Flat_nprobe_1_x_v1.index")
    assert load_index(path).metric == "cosine"
    l2 = faiss.IndexFlatL2(4)
    l2.add(STORED)
    assert load_index(_write(l2, tmp_path / "added_HNSW32_Flat_cos_x_v1.index")).metric == "l2"


def test_mismatched_indexes_are_refused_naming_the_file(tmp_path: Path) -> None:
    import faiss

    raw_ip = faiss.IndexFlatIP(4)
    raw_ip.add(STORED)  # inner product over vectors that are not unit length: not cosine
    path = _write(raw_ip, tmp_path / "raw_ip.index")
    with pytest.raises(IndexFileError, match=r"raw_ip\.index.*not L2-normalised"):
        load_index(path)

    l1 = faiss.IndexFlat(4, faiss.METRIC_L1)
    l1.add(STORED)
    with pytest.raises(IndexFileError, match=r"l1\.index.*metric"):
        load_index(_write(l1, tmp_path / "l1.index"))

    l2 = faiss.IndexFlatL2(256)
    l2.add(np.zeros((3, 256), np.float32))
    wrong_dim = _write(l2, tmp_path / "v1_index.index")
    with pytest.raises(IndexFileError, match=r"v1_index\.index.*256-dim.*768-dim"):
        load_index(wrong_dim, expected_dim=768)
    with pytest.raises(IndexFileError, match=r"v1_index\.index.*256-dim"):
        load_index(wrong_dim).blend(np.zeros((2, 768), np.float32), 0.5)

    not_faiss = tmp_path / "voice.index"
    not_faiss.write_bytes(b"PK\x03\x04" + b"\x00" * 200)  # a zip (a .pth renamed), not a faiss file
    with pytest.raises(IndexFileError, match=r"voice\.index.*not a readable faiss index"):
        load_index(not_faiss)
