"""A full disk while writing a voice model, a training checkpoint or an index.

Expected: `DiskFullError` naming the file, the previous file byte-for-byte intact, no temp file left.

Three ways to run out of space:
* "rename": the final os.replace fails with ENOSPC (the atomic writer's own error path);
* "write": the atomic writer's temp file is a link to /dev/full, so the real writer (torch.save,
  numpy, Python's write) gets exactly the error it gets on a full disk, wherever it raises it;
* "tmpfs": the real writers on a tiny, really full tmpfs mounted in a private mount namespace
  (needs `unshare -m` and mount rights, as root in a container; skipped otherwise).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import reference_file
from fault_helpers import DRIVER_PRELUDE, REPO_ROOT, leftovers

from infer_pack.errors import DiskFullError
from train.experiment import Experiment, save_npy

EXP = "singer"
DEV_FULL = Path("/dev/full")



def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the three writes, each over a previous good file ---------------------------------------------
# Each case: (the previous file, the write over it, the part of temp-file names the "write" mode fills).
Case = tuple[Path, Callable[[], object], str]


def _voice_case(tmp_path: Path, reference: Path) -> Case:
    from tools.api.models import change_voice_info

    target = tmp_path / "weights" / "singer.pth"
    target.parent.mkdir(parents=True)
    shutil.copyfile(reference_file(reference, "ref_v1_32k_nof0_slim.pth"), target)
    return target, lambda: change_voice_info(path=target, info="renamed"), target.name


def _checkpoint_case(tmp_path: Path, reference: Path) -> Case:
    import torch

    from infer_pack.checkpoint import save_training_checkpoint

    target = tmp_path / "logs" / EXP / "G_2333333.pth"  # "latest only": overwritten at every save
    save_training_checkpoint(target, model={"w": torch.ones(50_000)}, optimizer=None, learning_rate=1e-4, iteration=1)
    return target, lambda: save_training_checkpoint(
        target, model={"w": torch.zeros(50_000)}, optimizer=None, learning_rate=1e-4, iteration=2
    ), target.name


def _index_case(tmp_path: Path, reference: Path) -> Case:
    pytest.importorskip("faiss")
    from tools.api.index import train_index

    experiment = Experiment(tmp_path / "logs" / EXP)
    rng = np.random.default_rng(0)
    for i in range(4):
        save_npy(experiment.feature_path(f"0_{i}", "v2"), rng.standard_normal((100, 768)).astype(np.float32))
    target = train_index(project=tmp_path, experiment=EXP, version="v2").added_path
    # total_fea.npy goes through; the first .index write (trained_*) meets the full disk.
    return target, lambda: train_index(project=tmp_path, experiment=EXP, version="v2"), ".index"


CASES = {"voice": _voice_case, "checkpoint": _checkpoint_case, "index": _index_case}


def _no_space_on_rename(monkeypatch: pytest.MonkeyPatch) -> None:
    from infer_pack import fileio

    def replace(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(fileio.os, "replace", replace)


def _no_space_in_writers(monkeypatch: pytest.MonkeyPatch, name_part: str) -> None:
    """Temp files of the atomic writer whose name holds `name_part` are links to /dev/full: whatever
    opens one and writes (torch's C++ writer, numpy, Python's file objects) gets a full disk's error."""
    from infer_pack import fileio

    real_mkstemp = fileio.tempfile.mkstemp
    real_chmod = fileio.os.chmod

    def mkstemp(*args: object, **kwargs: object) -> tuple[int, str]:
        fd, name = real_mkstemp(*args, **kwargs)
        if name_part not in Path(name).name:
            return fd, name
        os.close(fd)
        os.unlink(name)
        os.symlink(DEV_FULL, name)
        return os.open(DEV_FULL, os.O_WRONLY), name

    def chmod(path: object, mode: int, *args: object, **kwargs: object) -> None:
        if not Path(path).is_symlink():  # never change /dev/full itself
            real_chmod(path, mode, *args, **kwargs)

    monkeypatch.setattr(fileio.tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(fileio.os, "chmod", chmod)


@pytest.mark.parametrize(
    "case, mode",
    [
        ("voice", "rename"),
        ("checkpoint", "rename"),
        ("index", "rename"),
        ("voice", "write"),
        ("checkpoint", "write"),
        ("index", "write"),
    ],
)
def test_disk_full_raises_disk_full_error_and_keeps_the_previous_file(
    case: str, mode: str, tmp_path: Path, reference: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if mode == "write" and not DEV_FULL.exists():
        pytest.skip("/dev/full is absent on this system")
    target, write, name_part = CASES[case](tmp_path, reference)
    before = _sha(target)
    if mode == "rename":
        _no_space_on_rename(monkeypatch)
    else:
        _no_space_in_writers(monkeypatch, name_part)
    with pytest.raises(DiskFullError) as info:
        write()
    assert str(target.parent) in str(info.value) and "free some disk space" in str(info.value)
    monkeypatch.undo()
    assert _sha(target) == before, f"{target.name} changed after a failed write"
    assert leftovers(target.parent) == []


# -- a real full file system -----------------------------------------------------------------------
TMPFS_DRIVER = r"""
import errno, hashlib, json, shutil
import numpy as np, torch
from infer_pack.checkpoint import load_voice, save_voice, save_training_checkpoint, load_training_checkpoint
from infer_pack.errors import DiskFullError
from train.index import _write_index, build_index_from_features, make_empty_index

disk = Path(sys.argv[1])
reference_voice = Path(sys.argv[2])

def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()

def fill():
    # Take every free block of the tmpfs.
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for size in (1 << 20, 1 << 12):
            try:
                while True:
                    handle.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return filler

def attempt(name, target, write):
    before = sha(target)
    filler = fill()
    try:
        write()
        outcome = {"error": None}
    except Exception as exc:
        outcome = {"error": type(exc).__name__, "disk_full": isinstance(exc, DiskFullError), "message": str(exc)[:300]}
    filler.unlink()
    outcome["intact"] = sha(target) == before
    outcome["leftovers"] = sorted(p.name for p in target.parent.iterdir() if p.name.startswith("."))
    results[name] = outcome

results = {}
voice = load_voice(reference_voice)
(disk / "weights").mkdir()
voice_path = save_voice(disk / "weights" / "singer.pth", voice)
voice.info = "renamed"
attempt("voice", voice_path, lambda: save_voice(voice_path, voice))

ckpt = disk / "logs" / "G_2333333.pth"
save_training_checkpoint(ckpt, model={"w": torch.ones(50_000)}, optimizer=None, learning_rate=1e-4, iteration=1)
attempt("checkpoint", ckpt, lambda: save_training_checkpoint(ckpt, model={"w": torch.zeros(50_000)}, optimizer=None, learning_rate=1e-4, iteration=2))

# The disk fills in the middle of a checkpoint larger than the free space (no filler: torch's own
# archive writer meets ENOSPC, which it used to report as "unexpected pos").
big = disk / "logs" / "D_2333333.pth"
save_training_checkpoint(big, model={"w": torch.ones(1000)}, optimizer=None, learning_rate=1e-4, iteration=1)
before_big = sha(big)
try:
    save_training_checkpoint(big, model={"w": torch.ones(20_000_000)}, optimizer=None, learning_rate=1e-4, iteration=2)
    results["checkpoint-midwrite"] = {"error": None}
except Exception as exc:
    results["checkpoint-midwrite"] = {"error": type(exc).__name__, "disk_full": isinstance(exc, DiskFullError), "message": str(exc)[:300]}
results["checkpoint-midwrite"]["intact"] = sha(big) == before_big
results["checkpoint-midwrite"]["leftovers"] = sorted(p.name for p in big.parent.iterdir() if p.name.startswith("."))

features = np.random.default_rng(0).standard_normal((400, 768)).astype(np.float32)
result = build_index_from_features(features, disk / "logs", "singer", "v2")
attempt("index-rebuild", result.added_path, lambda: build_index_from_features(features, disk / "logs", "singer", "v2"))
index = make_empty_index("ivf_flat", 768, 8)
index.train(features)
index.add(features)
attempt("index-file", result.added_path, lambda: _write_index(index, result.added_path))
print("RESULTS " + json.dumps(results))
"""


@pytest.fixture(scope="module")
def tmpfs_results(reference: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed: no private tmpfs to fill")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a private mount namespace here ({probe.stderr.decode().strip()})")
    folder = tmp_path_factory.mktemp("tmpfs")
    disk = folder / "disk"
    disk.mkdir()
    script = folder / "driver.py"
    script.write_text(DRIVER_PRELUDE + TMPFS_DRIVER, encoding="utf-8")
    voice = reference_file(reference, "ref_v1_32k_nof0_slim.pth")
    command = f'mount -t tmpfs -o size=48m tmpfs "{disk}" && exec "{sys.executable}" "{script}" "{disk}" "{voice}"'
    done = subprocess.run(["unshare", "-m", "sh", "-c", command], check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and "mount" in done.stderr and "RESULTS" not in done.stdout:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()[-300:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULTS ")]
    assert lines, f"driver failed (rc {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULTS ") :])


@pytest.mark.parametrize(
    "case",
    [
        "voice",
        "checkpoint",
        "index-rebuild",  # total_fea.npy is written first (np.save on an open file): DiskFullError
        "index-file",
        "checkpoint-midwrite",
    ],
)
def test_really_full_tmpfs(case: str, tmpfs_results: dict[str, dict]) -> None:
    outcome = tmpfs_results[case]
    assert outcome["intact"], f"{case}: the previous file changed"
    assert outcome["leftovers"] == [], f"{case}: temp files left: {outcome['leftovers']}"
    assert outcome["error"] is not None, f"{case}: the write claimed success on a full disk"
    assert outcome["disk_full"], f"{case}: {outcome['error']} instead of DiskFullError: {outcome['message']}"
    assert "free some disk space" in outcome["message"]


FSIZE_DRIVER = """
import resource, sys
from pathlib import Path
import torch
from infer_pack.errors import DiskFullError
from infer_pack.checkpoint import save_training_checkpoint

target = Path(sys.argv[1])
save_training_checkpoint(target, model={"w": torch.ones(1000)}, optimizer=None, learning_rate=1e-4, iteration=1)
before = target.read_bytes()
resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, resource.RLIM_INFINITY))  # what `ulimit -f 2048` sets
try:
    save_training_checkpoint(target, model={"w": torch.ones(5_000_000)}, optimizer=None, learning_rate=1e-4, iteration=2)
    print("NO ERROR")
except DiskFullError as exc:
    print("DISKFULL", exc)
print("INTACT", target.read_bytes() == before)
print("LEFTOVERS", sorted(p.name for p in target.parent.iterdir() if p.name.startswith(".")))
"""


def test_file_size_limit_is_a_clear_error_not_a_signal(tmp_path: Path) -> None:
    """`ulimit -f`: the write fails with EFBIG (SIGXFSZ is ignored), reported as DiskFullError naming the file."""
    script = tmp_path / "driver.py"
    script.write_text(FSIZE_DRIVER, encoding="utf-8")
    target = tmp_path / "G_5.pth"
    done = subprocess.run([sys.executable, str(script), str(target)], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120, check=False, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 0, f"killed or crashed (rc {done.returncode}): {done.stderr[-2000:]}"
    assert f"DISKFULL the file-size limit (ulimit -f) was reached while writing {str(target)!r}" in done.stdout, done.stdout
    assert "INTACT True" in done.stdout and "LEFTOVERS []" in done.stdout
