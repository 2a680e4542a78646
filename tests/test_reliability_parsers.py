"""Broken and hostile inputs to the other file readers: faiss indexes, f0 override files, HuBERT and RMVPE weights.

Corrupt faiss indexes are read in a child process with a memory cap, so a file that makes faiss allocate
gigabytes (or crash) costs that process only.
"""

from __future__ import annotations

import io
import json
import os
import random
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, missing_reference, reference_dir
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from infer_pack.errors import AssetMissingError, ModelFileError, UserInputError

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
TORCHIO_ESCAPING = (OSError, IndexError, struct.error, TypeError, AssertionError)  # see test_security.py
MEMORY_CAP_BYTES = 3 * 1024**3

# --- faiss indexes --------------------------------------------------------------------------------

_LOADER = textwrap.dedent(
    """
    import json, resource, sys, time
    resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
    from infer_pack.errors import RVCError
    from infer_pack.retrieval import load_index
    results = {{}}
    for path in sys.argv[1:]:
        start = time.perf_counter()
        try:
            index = load_index(path)
            outcome = "loaded"
        except RVCError as exc:
            outcome = type(exc).__name__ if path in str(exc) else "unnamed " + type(exc).__name__
        except BaseException as exc:
            outcome = "ESCAPED " + type(exc).__name__
        results[path] = [outcome, time.perf_counter() - start]
    print(json.dumps(results))
    """
)


def _load_indexes_in_child(paths: list[Path]) -> dict[str, tuple[str, float]]:
    code = _LOADER.format(cap=MEMORY_CAP_BYTES)
    completed = subprocess.run(
        [sys.executable, "-c", code, *map(str, paths)],
        capture_output=True, text=True, timeout=240, cwd=REPO_ROOT, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"},
    )
    assert completed.returncode == 0, f"the index reader crashed (status {completed.returncode}): {completed.stderr[-2000:]}"
    return {k: (v[0], v[1]) for k, v in json.loads(completed.stdout.strip().splitlines()[-1]).items()}


@pytest.fixture(scope="module")
def ivf_index(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """An IVF-Flat index shaped like RVC's (IVF, flat quantizer), small enough to mutate quickly."""
    faiss = pytest.importorskip("faiss")
    vectors = np.random.default_rng(0).standard_normal((2000, 64)).astype(np.float32)
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(64), 64, 16)
    index.train(vectors)
    index.add(vectors)
    path = tmp_path_factory.mktemp("index") / "ivf.index"
    faiss.write_index(index, str(path))
    return path.read_bytes()


def test_random_and_truncated_indexes_raise_index_file_error(tmp_path: Path, ivf_index: bytes) -> None:
    rng = random.Random(3)
    files: list[Path] = []
    for n in range(12):
        path = tmp_path / f"noise{n}.index"
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.choice((4, 64, 1000, 20_000)))))
        files.append(path)
    for cut in (8, 40, 100, 5_000, len(ivf_index) // 2, len(ivf_index) - 1):
        path = tmp_path / f"cut{cut}.index"
        path.write_bytes(ivf_index[:cut])
        files.append(path)
    text = tmp_path / "notes.index"
    text.write_text("not an index\n")
    files.append(text)
    results = _load_indexes_in_child(files)
    assert {outcome for outcome, _ in results.values()} == {"IndexFileError"}, results


def test_corrupt_index_header_fails_fast_without_huge_allocations(tmp_path: Path, ivf_index: bytes) -> None:
    files = []
    for value in (245, 51):  # byte 93 lies in the quantizer's vector-size field
        mutated = bytearray(ivf_index)
        mutated[93] = value
        path = tmp_path / f"header{value}.index"
        path.write_bytes(bytes(mutated))
        files.append(path)
    results = _load_indexes_in_child(files)
    assert all(outcome == "IndexFileError" and seconds < 5 for outcome, seconds in results.values()), results


@pytest.mark.timeout(300)
def test_mutated_indexes_load_or_raise_index_file_error(tmp_path: Path, ivf_index: bytes) -> None:
    """Seeded flips, cuts and header hits; outcomes outside our errors are counted and must be none
    besides the memory failures pinned by the xfail test above."""
    rng = random.Random(11)
    files = []
    for n in range(60):
        mutated = bytearray(ivf_index)
        kind = rng.choice(("flip", "cut", "header"))
        if kind == "flip":
            for _ in range(rng.randint(1, 8)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        elif kind == "cut":
            mutated = mutated[: rng.randrange(1, len(mutated))]
        else:
            for _ in range(rng.randint(1, 4)):
                mutated[rng.randrange(200)] = rng.randrange(256)
        path = tmp_path / f"m{n}.index"
        path.write_bytes(bytes(mutated))
        files.append(path)
    results = _load_indexes_in_child(files)
    unexpected = {p: r for p, r in results.items() if r[0] not in ("loaded", "IndexFileError", "ESCAPED MemoryError")}
    assert not unexpected, unexpected


# --- f0 override files ----------------------------------------------------------------------------


def test_f0_override_reads_rvc_format(tmp_path: Path) -> None:
    from infer_pack.f0 import load_f0_override

    path = tmp_path / "f0.txt"
    path.write_text("\ufeff0.5,220\n\n0.0,110.5\n1.25,0\n", encoding="utf-8")
    times, hz = load_f0_override(path)
    assert times.tolist() == [0.0, 0.5, 1.25] and hz.tolist() == [110.5, 220.0, 0.0]


@FUZZ
@given(text=st.text(alphabet=st.sampled_from(list("0123456789.,-+eEinfaINFAN \t\r\n\x00;x")), max_size=200))
def test_f0_override_text_gives_values_or_user_input_error(tmp_path: Path, text: str) -> None:
    from infer_pack.f0 import load_f0_override

    path = tmp_path / "f0.txt"
    path.write_text(text, encoding="utf-8")
    try:
        times, hz = load_f0_override(path)
    except UserInputError as exc:
        assert str(path) in str(exc)
        return
    assert times.shape == hz.shape and times.size > 0
    assert np.all(np.isfinite(times)) and np.all(np.isfinite(hz)) and times.min() >= 0 and hz.min() >= 0
    assert np.all(np.diff(times) >= 0)


@FUZZ
@given(content=st.binary(max_size=300))
def test_f0_override_binary_gives_values_or_user_input_error(tmp_path: Path, content: bytes) -> None:
    from infer_pack.f0 import load_f0_override

    path = tmp_path / "f0.bin"
    path.write_bytes(content)
    try:
        load_f0_override(path)
    except UserInputError:
        pass


# --- HuBERT and RMVPE weights -----------------------------------------------------------------------


def _torchio_escapes(path: Path) -> bool:
    from infer_pack.torchio import safe_torch_load

    try:
        safe_torch_load(path)
    except TORCHIO_ESCAPING:
        return True
    except ModelFileError:
        return False
    return False


def _mutate_pickle(content: bytes, data: st.DataObject) -> bytes:
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        infos = archive.infolist()
        members = {info.filename: archive.read(info.filename) for info in infos}
    name = next(n for n in members if n.endswith("data.pkl"))
    pickled = bytearray(members[name])
    for _ in range(data.draw(st.integers(1, 6))):
        pickled[data.draw(st.integers(0, len(pickled) - 1))] = data.draw(st.integers(0, 255))
    members[name] = bytes(pickled)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for info in infos:
            archive.writestr(info, members[info.filename])
    return buffer.getvalue()


def _tiny_hubert() -> bytes:
    found = reference_dir()
    path = None if found is None else found / "tiny_hubert.pt"
    if path is None or not path.is_file():
        missing_reference("reference tiny_hubert.pt is absent")
    return path.read_bytes()


def test_missing_weights_name_the_download_command(tmp_path: Path) -> None:
    from infer_pack.f0.rmvpe import load_rmvpe
    from infer_pack.hubert import load_content_encoder

    with pytest.raises(AssetMissingError, match="python -m tools.cli download hubert"):
        load_content_encoder(tmp_path / "hubert_base.pt")
    with pytest.raises(AssetMissingError, match="python -m tools.cli download rmvpe"):
        load_rmvpe(tmp_path / "rmvpe.pt")


@pytest.mark.timeout(180)
@settings(FUZZ, max_examples=25)
@given(data=st.data())
def test_mutated_hubert_checkpoints_raise_model_file_error(tmp_path: Path, data: st.DataObject) -> None:
    from infer_pack.hubert import load_content_encoder

    original = _tiny_hubert()
    path = tmp_path / "hubert_base.pt"
    if data.draw(st.booleans(), label="cut"):
        path.write_bytes(original[: data.draw(st.integers(1, len(original) - 1))])
    else:
        path.write_bytes(_mutate_pickle(original, data))
    assume(not _torchio_escapes(path))
    try:
        load_content_encoder(path)
    except ModelFileError as exc:
        assert str(path) in str(exc)


@pytest.mark.parametrize(
    "state",
    [
        [1, 2, 3],
        {"weight": "not a tensor"},
        {},
        "a string",
    ],
    ids=["list", "wrong-keys", "empty-dict", "string"],
)
def test_rmvpe_wrong_structures_raise_model_file_error(tmp_path: Path, state: object) -> None:
    import torch

    from infer_pack.f0.rmvpe import load_rmvpe

    path = tmp_path / "rmvpe.pt"
    torch.save(state, path)
    with pytest.raises(ModelFileError):
        load_rmvpe(path)


def test_rmvpe_right_keys_wrong_values_raise_model_file_error(tmp_path: Path) -> None:
    import torch

    from infer_pack.f0.rmvpe import build_model, load_rmvpe

    keys = list(build_model(empty=True).state_dict())
    for name, value in (("scalars", torch.zeros(1)), ("strings", "x"), ("ints", 3)):
        path = tmp_path / f"rmvpe-{name}.pt"
        torch.save({key: value for key in keys}, path)
        with pytest.raises(ModelFileError):
            load_rmvpe(path)
