"""Index building killed with SIGKILL mid-write, then run again: no half-written .index is ever in place."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from fault_helpers import leftovers, start_driver

from train.experiment import Experiment, save_npy

EXP = "singer"
N_FILES, FRAMES = 20, 100  # 2,000 rows of 768 values: IVF51


@pytest.fixture
def project(tmp_path: Path) -> Path:
    pytest.importorskip("faiss")
    root = tmp_path / "project"
    experiment = Experiment(root / "logs" / EXP)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((16, 768)).astype(np.float32)
    for i in range(N_FILES):
        rows = centres[rng.integers(0, 16, FRAMES)] + 0.1 * rng.standard_normal((FRAMES, 768)).astype(np.float32)
        save_npy(experiment.feature_path(f"0_{i}", "v2"), rows.astype(np.float32))
    return root


INDEX_DRIVER = """
{hooks}
from tools.api.index import train_index
train_index(project={root!r}, experiment={exp!r}, version="v2")
touch({root!r} + "/finished")
"""


def _all_indexes_load(folder: Path) -> dict[str, int]:
    """{name: vectors} of every .index in place; each must be a whole faiss file."""
    import faiss

    found = {}
    for path in sorted(folder.glob("*.index")):
        index = faiss.read_index(str(path))
        found[path.name] = int(index.ntotal)
    return found


def _rerun_and_check(root: Path) -> None:
    from infer_pack.retrieval import load_index
    from tools.api.index import train_index

    result = train_index(project=root, experiment=EXP, version="v2")
    folder = root / "logs" / EXP
    loaded = _all_indexes_load(folder)
    assert loaded[result.added_path.name] == N_FILES * FRAMES
    assert loaded[result.index.trained_path.name] == 0
    index = load_index(result.added_path)
    assert index.size == N_FILES * FRAMES and index.dim == 768
    assert np.load(folder / "total_fea.npy").shape == (N_FILES * FRAMES, 768)


@pytest.mark.parametrize("stage", ["trained", "added"])
def test_index_killed_mid_write_leaves_only_whole_index_files(stage: str, project: Path, tmp_path: Path) -> None:
    folder = project / "logs" / EXP
    marker = tmp_path / "paused"
    previous: bytes | None = None
    if stage == "added":
        # A complete index of the same name exists already (an earlier build): it must survive.
        from tools.api.index import train_index

        previous = train_index(project=project, experiment=EXP, version="v2").added_path.read_bytes()
    # Pause with the temp file complete, before its rename onto the .index name.
    hooks = f"block_on_replace(lambda dst: Path(dst).name.startswith({stage + '_'!r}) and dst.endswith('.index'), {str(marker)!r})"
    driver = start_driver(tmp_path, "index", INDEX_DRIVER.format(hooks=hooks, root=str(project), exp=EXP))
    driver.wait_until(marker.exists, f"write of the {stage} index paused before its rename")
    driver.kill()

    assert any(name.endswith(".tmp") and stage in name for name in leftovers(folder)), "kill point missed"
    loaded = _all_indexes_load(folder)  # never a truncated .index in place
    if previous is None:
        assert loaded == {}  # the first build never got as far as a finished file
    else:
        added = [name for name in loaded if name.startswith("added_")]
        assert len(added) == 1
        assert hashlib.sha256((folder / added[0]).read_bytes()).digest() == hashlib.sha256(previous).digest()
    _rerun_and_check(project)
