"""logs/<exp>/ layout, metadata, filelist.txt and config.json exactly as RVC writes them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from configs import load_config
from infer_pack.errors import ExperimentError, UserInputError
from train.experiment import (
    LATEST_ONLY_STEP,
    Experiment,
    ExperimentMetadata,
    FilelistEntry,
    is_spec_cache,
    rvc_spec_cache_path,
    save_npy,
    spec_cache_path,
)


def _fake_example(exp: Experiment, name: str, version: str = "v2", f0: bool = True, feature: bool = True) -> None:
    exp.gt_wavs_dir.mkdir(parents=True, exist_ok=True)
    wavfile.write(exp.gt_wav_path(name), 40000, np.zeros(4000, np.float32))
    if feature:
        save_npy(exp.feature_path(name, version), np.zeros((10, 768 if version == "v2" else 256), np.float32))
    if f0:
        save_npy(exp.f0_coarse_path(name), np.ones(20, np.int64))
        save_npy(exp.f0_hz_path(name), np.zeros(20, np.float64))


def _mute_features(exp: Experiment, version: str = "v2") -> None:
    save_npy(exp.mute_feature_path(version), np.zeros((149, 768 if version == "v2" else 256), np.float32))


def test_rvc_folder_and_file_names(tmp_path: Path) -> None:
    exp = Experiment.in_logs(tmp_path / "logs", "voice")
    assert exp.root == (tmp_path / "logs" / "voice").absolute()
    assert exp.name == "voice"
    assert exp.gt_wavs_dir.name == "0_gt_wavs" and exp.wavs16k_dir.name == "1_16k_wavs"
    assert exp.f0_coarse_dir.name == "2a_f0" and exp.f0_hz_dir.name == "2b-f0nsf"
    assert exp.feature_dir("v1").name == "3_feature256" and exp.feature_dir("v2").name == "3_feature768"
    assert exp.f0_coarse_path("3_1").name == "3_1.wav.npy"
    assert exp.f0_hz_path("3_1").name == "3_1.wav.npy"
    assert exp.feature_path("3_1", "v2").name == "3_1.npy"
    assert exp.filelist_path.name == "filelist.txt" and exp.config_path.name == "config.json"
    assert exp.train_log_path.name == "train.log"
    assert exp.g_checkpoint_path(1200).name == "G_1200.pth" and exp.d_checkpoint_path(5).name == "D_5.pth"
    assert exp.mute_wav_path("48k") == tmp_path.absolute() / "logs" / "mute" / "0_gt_wavs" / "mute48k.wav"
    assert exp.mute_feature_path("v1").parent.name == "3_feature256"
    assert exp.mute_f0_coarse_path.parts[-2:] == ("2a_f0", "mute.wav.npy")
    assert exp.mute_f0_hz_path.parts[-2:] == ("2b-f0nsf", "mute.wav.npy")
    for bad in ("", "..", "a/b", "mute"):
        with pytest.raises(UserInputError):
            Experiment.in_logs(tmp_path / "logs", bad)


def test_our_file_names_are_pinned(tmp_path: Path) -> None:
    """Existing experiment folders hold files under these names: a rename would orphan them."""
    exp = Experiment.in_logs(tmp_path / "logs", "voice")
    assert exp.metadata_path == exp.root / "experiment.json"
    assert exp.preprocess_state_path == exp.root / "preprocess_state.json"
    assert exp.preprocess_log_path == exp.root / "preprocess.log"
    assert exp.extract_log_path == exp.root / "extract_f0_feature.log"
    assert exp.health_json_path == exp.root / "health.json" and exp.health_text_path == exp.root / "health.txt"
    assert exp.lock_path == exp.root / "train.lock"
    assert exp.metrics_path == exp.root / "metrics.jsonl"
    assert exp.loss_curve_path == exp.root / "loss_curve.png"
    assert exp.tensorboard_dir == exp.root  # RVC's SummaryWriter writes into the experiment folder too
    wav = exp.gt_wav_path("3_1")
    assert spec_cache_path(wav, "head-2048-400-2048") == exp.gt_wavs_dir / "3_1.spec-head-2048-400-2048.pt"
    assert rvc_spec_cache_path(wav) == exp.gt_wavs_dir / "3_1.spec.pt"
    mute = exp.mute_wav_path("40k")
    assert spec_cache_path(mute, "classic-1024-320-1024") == mute.with_name("mute40k.spec-classic-1024-320-1024.pt")


def test_spectrogram_caches_never_count_as_examples(tmp_path: Path) -> None:
    exp = Experiment(tmp_path / "logs" / "voice")
    exp.write_metadata(ExperimentMetadata(sample_rate_tag="40k"))
    for name in ("0_0", "0_1"):
        _fake_example(exp, name)
    # 0_1's wav was removed (a re-cut source) while its caches, features and pitch stayed behind.
    spec_cache_path(exp.gt_wav_path("0_1"), "head-2048-400-2048").write_bytes(b"cache")
    rvc_spec_cache_path(exp.gt_wav_path("0_1")).write_bytes(b"cache")
    exp.gt_wav_path("0_1").unlink()
    assert exp.complete_names("v2", use_f0=True) == ["0_0"]
    assert is_spec_cache("0_1.spec.pt") and is_spec_cache("0_1.spec-head-2048-400-2048.pt")
    assert not any(is_spec_cache(n) for n in ("0_1.wav", "0_1.wav.npy", "0_1.npy", "spec.wav", "0_1.pth"))


def test_checkpoints_sorted_by_step_not_by_text(tmp_path: Path) -> None:
    exp = Experiment(tmp_path / "e")
    exp.root.mkdir()
    for step in (900, 10000, 2000, LATEST_ONLY_STEP):
        exp.g_checkpoint_path(step).write_bytes(b"x")
    exp.d_checkpoint_path(900).write_bytes(b"x")
    (exp.root / "G_best.pth").write_bytes(b"x")
    assert [c.step for c in exp.list_checkpoints("G")] == [900, 2000, 10000, LATEST_ONLY_STEP]
    assert [c.step for c in exp.list_checkpoints("D")] == [900]
    latest = exp.latest_checkpoint("G")
    assert latest is not None and latest.path.name == "G_2333333.pth"


def test_metadata_roundtrip_and_errors(tmp_path: Path) -> None:
    exp = Experiment(tmp_path / "e")
    assert exp.read_metadata() is None
    meta = ExperimentMetadata(sample_rate_tag="48k", version="v1", use_f0=False, speaker_id=3, f0_method=None)
    exp.write_metadata(meta)
    assert exp.read_metadata() == meta
    assert exp.read_metadata().sample_rate == 48000  # type: ignore[union-attr]
    assert not list(exp.root.glob("*.tmp")) and not list(exp.root.glob(".*"))
    exp.metadata_path.write_text("{broken", encoding="utf-8")
    with pytest.raises(ExperimentError, match="experiment.json"):
        exp.read_metadata()
    with pytest.raises(UserInputError):
        ExperimentMetadata(sample_rate_tag="44k")  # type: ignore[arg-type]
    with pytest.raises(UserInputError):
        ExperimentMetadata(sample_rate_tag="40k", speaker_id=109)


def test_metadata_inferred_for_a_folder_rvc_prepared(tmp_path: Path) -> None:
    exp = Experiment(tmp_path / "logs" / "rvc")
    _fake_example(exp, "0_0", version="v1", f0=True)
    meta = exp.infer_metadata()
    assert (meta.sample_rate_tag, meta.version, meta.use_f0) == ("40k", "v1", True)
    (exp.root / "config.json").write_text(json.dumps({"data": {"sampling_rate": 48000}}), encoding="utf-8")
    assert exp.infer_metadata().sample_rate_tag == "48k"


def test_filelist_exactly_as_rvc_writes_it(tmp_path: Path) -> None:
    exp = Experiment(tmp_path / "logs" / "voice")
    exp.write_metadata(ExperimentMetadata(sample_rate_tag="40k"))
    for name in ("0_0", "0_1", "1_0"):
        _fake_example(exp, name)
    _fake_example(exp, "1_1", f0=False)  # incomplete: no pitch -> left out with pitch, kept without
    _fake_example(exp, "2_0", feature=False)  # no features -> always left out
    (exp.gt_wavs_dir / "0_0.spec.pt").write_bytes(b"cache")  # the loader's spectrogram cache is not an example
    _mute_features(exp)

    entries = exp.write_filelist("v2", use_f0=True, speaker_id=4, seed=1)
    text = exp.filelist_path.read_text(encoding="utf-8")
    assert not text.endswith("\n")
    lines = text.split("\n")
    assert len(lines) == 5 and len(entries) == 5
    root = str(exp.root)
    data = sorted(line for line in lines if "/mute/" not in line)
    assert data[0] == (
        f"{root}/0_gt_wavs/0_0.wav|{root}/3_feature768/0_0.npy|{root}/2a_f0/0_0.wav.npy|{root}/2b-f0nsf/0_0.wav.npy|4"
    )
    assert [Path(line.split("|")[0]).name for line in data] == ["0_0.wav", "0_1.wav", "1_0.wav"]
    mute = [line for line in lines if "/mute/" in line]
    logs = str(exp.logs_dir)
    assert mute == [mute[0], mute[0]]
    assert mute[0] == (
        f"{logs}/mute/0_gt_wavs/mute40k.wav|{logs}/mute/3_feature768/mute.npy|"
        f"{logs}/mute/2a_f0/mute.wav.npy|{logs}/mute/2b-f0nsf/mute.wav.npy|4"
    )
    for line in lines:
        fields = line.split("|")
        assert len(fields) == 5 and all(Path(f).is_absolute() and Path(f).exists() for f in fields[:4])

    # Shuffled (RVC uses an unseeded shuffle); a seed makes it repeatable.
    exp.write_filelist("v2", True, 4, seed=1)
    assert exp.filelist_path.read_text() == text
    orders = set()
    for seed in range(2, 12):
        exp.write_filelist("v2", True, 4, seed=seed)
        orders.add(exp.filelist_path.read_text())
    assert len(orders) > 1 and all(sorted(order.split("\n")) == sorted(lines) for order in orders)

    # Without pitch: 3 fields, and the example lacking pitch is in.
    exp.write_filelist("v2", use_f0=False, speaker_id=0)
    lines = exp.filelist_path.read_text(encoding="utf-8").split("\n")
    assert len(lines) == 6 and all(len(line.split("|")) == 3 for line in lines)
    parsed = exp.read_filelist(use_f0=False)
    assert sum(1 for e in parsed if e.gt_wav.name == "mute40k.wav") == 2
    with pytest.raises(ExperimentError, match="fields"):
        exp.read_filelist(use_f0=True)


def test_filelist_needs_examples_and_mute_features(tmp_path: Path) -> None:
    exp = Experiment(tmp_path / "logs" / "voice")
    exp.write_metadata(ExperimentMetadata(sample_rate_tag="32k"))
    with pytest.raises(ExperimentError, match="no complete training example"):
        exp.write_filelist("v1", True, 0)
    _fake_example(exp, "0_0", version="v1")
    with pytest.raises(ExperimentError, match="mute.npy"):
        exp.write_filelist("v1", True, 0)
    _mute_features(exp, "v1")
    exp.write_filelist("v1", True, 0)
    assert "3_feature256/mute.npy" in exp.filelist_path.read_text()


def test_filelist_line_parse_and_format() -> None:
    line = "/a/0_gt_wavs/1_2.wav|/a/3_feature768/1_2.npy|/a/2a_f0/1_2.wav.npy|/a/2b-f0nsf/1_2.wav.npy|7"
    entry = FilelistEntry.parse(line, use_f0=True)
    assert entry.speaker_id == 7 and entry.use_f0 and entry.f0_hz == Path("/a/2b-f0nsf/1_2.wav.npy")
    assert entry.to_line() == line
    short = FilelistEntry.parse("/a/x.wav|/a/x.npy|0")
    assert not short.use_f0 and short.to_line() == "/a/x.wav|/a/x.npy|0"
    with pytest.raises(ExperimentError):
        FilelistEntry.parse("/a/x.wav|/a/x.npy|0", use_f0=True)
    with pytest.raises(ExperimentError):
        FilelistEntry.parse("/a/x.wav|/a/x.npy|zero")
    # RVC doubles backslashes of Windows experiment paths in data lines.
    windows = FilelistEntry(Path("C:\\r\\a.wav"), Path("C:\\r\\a.npy"), None, None, 0)
    assert windows.to_line(escape=True) == "C:\\\\r\\\\a.wav|C:\\\\r\\\\a.npy|0"
    assert windows.to_line(escape=False) == "C:\\r\\a.wav|C:\\r\\a.npy|0"


def test_config_copy_sorted_indent4_written_once(tmp_path: Path) -> None:
    exp = Experiment(tmp_path / "e")
    path = exp.write_config("v2", "40k")
    text = path.read_text(encoding="utf-8")
    raw = json.loads(text)
    expected = load_config("v2", "40k").to_json_dict()
    assert raw == expected
    assert text == json.dumps(expected, ensure_ascii=False, indent=4, sort_keys=True) + "\n"
    assert raw["data"]["sampling_rate"] == 40000  # v2-40k uses v1/40k.json
    path.write_text('{"custom": 1}', encoding="utf-8")
    exp.write_config("v1", "48k")
    assert path.read_text(encoding="utf-8") == '{"custom": 1}'


def test_mute_assets_match_rvc_shipped_files(tmp_path: Path) -> None:
    exp = Experiment(tmp_path / "logs" / "e")
    written = exp.ensure_mute_audio_and_f0("40k")
    assert len(written) == 3
    rate, wav = wavfile.read(exp.mute_wav_path("40k"))
    assert rate == 40000 and wav.dtype == np.int16 and wav.shape == (120000,) and not wav.any()
    coarse = np.load(exp.mute_f0_coarse_path)
    hz = np.load(exp.mute_f0_hz_path)
    assert coarse.shape == (301,) and np.all(coarse == 1) and np.issubdtype(coarse.dtype, np.integer)
    assert hz.shape == (301,) and hz.dtype == np.float64 and not hz.any()
    assert exp.ensure_mute_audio_and_f0("40k") == []  # never rewritten
    assert len(exp.ensure_mute_audio_and_f0("32k")) == 1


def test_our_json_files_carry_a_format_version_and_newer_ones_are_refused(tmp_path: Path) -> None:
    import json

    import numpy as np

    from infer_pack.errors import ExperimentError
    from train.experiment import Experiment, ExperimentMetadata, load_npy, save_npy
    from train.health import read_health_report
    from train.metrics import StepMetrics, read_metrics
    from train.preprocess import read_state

    exp = Experiment(tmp_path / "logs" / "fmt")
    exp.write_metadata(ExperimentMetadata(sample_rate_tag="40k", version="v2", use_f0=True))
    raw = json.loads(exp.metadata_path.read_text())
    assert raw["format_version"] == 1
    del raw["format_version"]  # a file from before versions: read as format 1
    exp.metadata_path.write_text(json.dumps(raw))
    assert exp.read_metadata() is not None
    exp.metadata_path.write_text(json.dumps({**raw, "format_version": 99}))
    with pytest.raises(ExperimentError, match="newer version of this tool .format 99; this one reads up to 1"):
        exp.read_metadata()

    exp.health_json_path.write_text(json.dumps({"format_version": 2, "files_total": 1}))
    with pytest.raises(ExperimentError, match="health report was written by a newer version"):
        read_health_report(exp)

    exp.preprocess_state_path.write_text(json.dumps({"format": 7, "sources": {}}))
    with pytest.raises(ExperimentError, match="preprocessing state was written by a newer version"):
        read_state(exp)

    from dataclasses import MISSING, fields

    required = {f.name: 0 for f in fields(StepMetrics) if f.default is MISSING and f.default_factory is MISSING}
    assert StepMetrics(**required).to_json_dict()["format_version"] == 1
    exp.metrics_path.write_text(json.dumps({"step": 1, "format_version": 5}) + "\n")
    with pytest.raises(ExperimentError, match="metrics record was written by a newer version"):
        read_metrics(exp.metrics_path)

    pickled = tmp_path / "object.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ExperimentError, match="object.npy"):
        load_npy(pickled)
    plain = tmp_path / "plain.npy"
    save_npy(plain, np.arange(3, dtype=np.float32))
    np.testing.assert_array_equal(load_npy(plain), [0, 1, 2])
