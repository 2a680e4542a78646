"""The command line: fast --help, one-line errors with a non-zero exit, conversions through the API."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO_ROOT


def run_cli(*args: str, root: Path | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "tools.cli"]
    if root is not None:
        command += ["--root", str(root)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [*command, *args], cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=timeout, check=False, env=env
    )


def test_help_is_fast_and_lists_every_subcommand() -> None:
    start = time.perf_counter()
    done = run_cli("--help")
    elapsed = time.perf_counter() - start
    assert done.returncode == 0, done.stderr
    for command in ("convert", "batch", "preprocess", "extract", "train", "index", "one-click", "info",
                    "change-info", "merge", "extract-model", "export-onnx", "download", "assets"):
        assert command in done.stdout
    assert elapsed < 5.0, f"--help took {elapsed:.1f} s"


def test_help_imports_no_heavy_module() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from tools import cli\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    cli.main(['convert', '--help'])\n"
        "heavy = sorted({'torch', 'gradio', 'faiss', 'onnxruntime', 'numpy', 'scipy'} & set(sys.modules))\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_convert_help_shows_rvc_defaults() -> None:
    done = run_cli("convert", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for flag, default in (("--index-rate", "0.75"), ("--filter-radius", "3"), ("--rms-mix", "0.25"),
                          ("--protect", "0.33"), ("--f0-method", "rmvpe"), ("--transpose", "0")):
        assert flag in text and f"default: {default}" in text, flag


def test_unknown_pitch_gaps_mode_is_a_usage_error() -> None:
    done = run_cli("convert", "--model", "x", "--input", "y.wav", "--pitch-gaps", "fill")
    assert done.returncode == 2 and "--pitch-gaps" in done.stderr and "interpolate" in done.stderr


def test_usage_error_exits_2() -> None:
    done = run_cli("convert", "--model", "x")
    assert done.returncode == 2
    assert "--input" in done.stderr


def test_bad_experiment_name_is_one_clear_line(project_root: Path) -> None:
    done = run_cli("train", "--experiment", "../escape", root=project_root)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid experiment name '../escape'")
    assert "Traceback" not in done.stderr


def test_unknown_asset_name_is_refused(project_root: Path) -> None:
    done = run_cli("download", "hubertt", root=project_root)
    assert done.returncode == 1
    assert "unknown asset name(s) hubertt" in done.stderr
    assert "Traceback" not in done.stderr


def test_assets_lists_missing_files(project_root: Path) -> None:
    (project_root / "rmvpe.pt").write_bytes(b"x")  # wrong size: not counted as present
    done = run_cli("assets", root=project_root)
    assert done.returncode == 0
    lines = {line.split()[1]: line.split()[0] for line in done.stdout.splitlines() if line.strip() and
             line.split()[0] in ("ok", "missing", "partial", "unpublished")}
    assert lines["hubert"] == "missing" and lines["rmvpe"] == "unpublished"
    # one wording: missing only for absent files; the other-size file is present, not the published one
    assert "missing: hubert, " in done.stdout and "missing: hubert, rmvpe" not in done.stdout
    assert "present, not the published file: rmvpe" in done.stdout


@pytest.fixture(scope="module")
def voice_project(reference: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpers_app import make_project, shared_test_hubert

    hubert = shared_test_hubert(tmp_path_factory, reference)
    return make_project(tmp_path_factory.mktemp("cli") / "project", reference, hubert)


@pytest.mark.slow
def test_convert_with_the_reference_voice(voice_project: Path, tmp_path: Path) -> None:
    from helpers_app import audio_rms

    output = tmp_path / "out.flac"
    done = run_cli("convert", "--model", "ref", "--input", str(voice_project / "inputs" / "b.wav"),
                   "--output", str(output), "--f0-method", "pm", "--transpose", "-5", "--pitch-gaps", "interpolate",
                   root=voice_project)
    assert done.returncode == 0, done.stderr
    assert "converted 1.0 s of audio" in done.stdout and "at 40000 Hz" in done.stdout
    rms, rate, samples = audio_rms(output)
    assert rate == 40000 and abs(samples - 40000) <= 800 and rms > 1e-3
    assert "it/s" in done.stderr or "s/it" in done.stderr, "tqdm progress goes to stderr"


def test_convert_without_rmvpe_defaults_to_swift(voice_project: Path, tmp_path: Path) -> None:
    """A fresh install has no rmvpe.pt: the default pitch method is then one that needs no file."""
    assert not (voice_project / "rmvpe.pt").exists()
    output = tmp_path / "out.wav"
    done = run_cli("convert", "--model", "ref", "--input", str(voice_project / "inputs" / "b.wav"),
                   "--output", str(output), root=voice_project)
    assert done.returncode == 0, done.stderr
    assert output.is_file() and "converted 1.0 s of audio" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "missing.wav", "--f0-method", "pm"], "cannot load audio"),
        (["--input", "inputs/a.wav", "--f0-method", "rmvpe"], "missing asset"),
        (["--input", "inputs/a.wav", "--f0-method", "pm", "--index-rate", "1.5"], "index_rate"),
    ],
)
def test_convert_bad_input_is_one_clear_line(voice_project: Path, tmp_path: Path, args: list[str], message: str) -> None:
    args = [str(voice_project / a) if a.startswith(("inputs/", "missing")) else a for a in args]
    done = run_cli("convert", "--model", "ref", "--output", str(tmp_path / "x.wav"), *args, root=voice_project)
    assert done.returncode == 1, done.stdout
    error_lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and message in error_lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "x.wav").exists()


def test_cli_choices_match_the_api() -> None:
    from infer_pack.pipeline import F0_METHOD_NAMES, PITCH_GAP_MODES
    from tools import cli
    from tools.api.convert import OUTPUT_FORMATS

    assert sorted(cli.F0_METHODS) == sorted(F0_METHOD_NAMES)
    assert cli.PITCH_GAPS == PITCH_GAP_MODES
    assert cli.OUTPUT_FORMATS == OUTPUT_FORMATS


@pytest.mark.parametrize(("flag", "interpolate"), [([], True), (["--pitch-gaps", "keep"], False)])
def test_extract_pitch_gaps_flag_reaches_the_api(
    monkeypatch: pytest.MonkeyPatch, project_root: Path, flag: list[str], interpolate: bool
) -> None:
    from tools import api, cli

    seen: dict[str, Any] = {}

    def fake_extract(**kwargs: Any) -> str:
        seen.update(kwargs)
        return "extracted"

    monkeypatch.setattr(api, "extract_features", fake_extract, raising=False)
    status = cli.main(["--root", str(project_root), "extract", "-e", "alice", "--f0-method", "pm", *flag])
    assert status == 0 and seen["interpolate_unvoiced"] is interpolate and seen["f0_method"] == "pm"


def test_output_cut_short_by_head_exits_quietly(project_root: Path) -> None:
    """`tools.cli assets | head -1` shows the first line and no BrokenPipe error."""
    command = f"'{sys.executable}' -m tools.cli --root '{project_root}' assets | head -1"
    done = subprocess.run(["bash", "-c", command], cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.stdout.count("\n") == 1 and "missing" in done.stdout, done.stdout
    assert done.stderr == "", done.stderr
    # The same with the reader certainly gone before anything is written (head can win or lose that race).
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        closed = subprocess.run([sys.executable, "-m", "tools.cli", "--root", str(project_root), "assets"],
                                cwd=str(REPO_ROOT), stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60,
                                check=False)
    finally:
        os.close(write_end)
    assert closed.stderr == "", closed.stderr
    assert closed.returncode == 141, "like a tool killed by SIGPIPE (128 + 13), so `set -o pipefail` sees it"


def test_missing_packages_point_to_the_venv(project_root: Path) -> None:
    """Run by a Python without the project's packages (-S: no site-packages), the error says what to run."""
    done = subprocess.run([sys.executable, "-S", "-m", "tools.cli", "--root", str(project_root), "assets"],
                          cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert ".venv/bin/python -m tools.cli" in lines[0] and "make cli ARGS=" in lines[0], lines[0]


def test_make_cli_runs_the_cli_with_the_venv_python() -> None:
    # Under `make test` the outer make's flags (-w: "Leaving directory ...") reach this make through MAKEFLAGS.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    dry = subprocess.run(["make", "--no-print-directory", "-n", "cli", "ARGS=assets --root x"], cwd=str(REPO_ROOT),
                         capture_output=True, text=True, timeout=60, check=False, env=env)
    assert dry.returncode == 0, dry.stderr
    commands = [line for line in dry.stdout.splitlines() if "tools.cli" in line]
    assert commands and ".venv/bin/python -m tools.cli assets --root x" in commands[-1], dry.stdout


def test_readme_commands_use_the_venv_python() -> None:
    """A bare `python -m tools.cli` outside .venv fails with ModuleNotFoundError: the README must not suggest it."""
    import re

    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    bare = [line for line in text.splitlines() if re.search(r"(?<![/\w.])python3? -m (tools|bench|train)\b", line)]
    assert not bare, bare


@pytest.mark.parametrize(("flag", "interval", "cached"),
                         [([], None, False), (["--log-interval", "10"], 10, False), (["--cache-on-device"], None, True)])
def test_train_log_interval_flag_reaches_the_api(
    monkeypatch: pytest.MonkeyPatch, project_root: Path, flag: list[str], interval: int | None, cached: bool
) -> None:
    from tools import api, cli

    seen: dict[str, Any] = {}

    def fake_train(*args: Any, **kwargs: Any) -> Any:
        from types import SimpleNamespace

        seen.update(kwargs)
        return SimpleNamespace(cancelled=False, summary=lambda: "trained")

    monkeypatch.setattr(api, "train_model", fake_train, raising=False)
    status = cli.main(["--root", str(project_root), "train", "-e", "alice", *flag])
    assert status == 0 and seen["log_interval"] == interval and seen["cache_batches"] is cached


@pytest.mark.parametrize(("flag", "zipped"), [([], False), (["--zip"], True)])
def test_batch_zip_flag_reaches_the_api(
    monkeypatch: pytest.MonkeyPatch, project_root: Path, flag: list[str], zipped: bool
) -> None:
    from types import SimpleNamespace

    from tools import api, cli

    seen: dict[str, Any] = {}

    def fake_batch(**kwargs: Any) -> Any:
        seen.update(kwargs)
        return SimpleNamespace(failed=[], summary=lambda: "converted")

    monkeypatch.setattr(api, "convert_batch", fake_batch, raising=False)
    (project_root / "weights").mkdir()
    (project_root / "weights" / "v.pth").write_bytes(b"x")
    status = cli.main(["--root", str(project_root), "batch", "-m", "v", "--input-dir", "in", "--output-dir", "out",
                       *flag])
    assert status == 0 and seen["zip_results"] is zipped


def test_flags_are_made_from_the_request_specs() -> None:
    """Each action's flags come from its request's specs: same names (dest), same defaults, same choices."""
    from tools.api.specs import conversion_param_specs, separation_param_specs, stream_param_specs, training_param_specs
    from tools.cli import build_parser

    parser = build_parser()
    required = {
        "convert": ["--model", "m", "--input", "i", "--output", "o.wav"],
        "train": ["--experiment", "e"],
        "realtime": [],
        "separate": ["--model", "m", "--input", "i"],
    }
    specs = {"convert": conversion_param_specs(), "train": training_param_specs(), "realtime": stream_param_specs(),
             "separate": separation_param_specs()}
    # None: chosen at run time (rmvpe when rmvpe.pt is there, else swift)
    run_time = {("convert", "f0_method"), ("realtime", "f0_method")}
    for command, spec_map in specs.items():
        args = vars(parser.parse_args([command, *required[command]]))
        for name, spec in spec_map.items():
            assert name in args, f"{command}: no flag for {name}"
            expected = None if (command, name) in run_time else spec.default
            assert args[name] == expected, (command, name, args[name], spec.default)
        with pytest.raises(SystemExit):  # choices are the spec's
            choice_name = next((n for n, s in spec_map.items() if s.choices), None)
            if choice_name is None:
                raise SystemExit(2)
            parser.parse_args([command, *required[command], f"--{spec_map[choice_name].flag}", "not-a-choice"])
