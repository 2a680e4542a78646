"""Coarse pitch, f0 post-processing and the estimators that need no weights file (pm, harvest, dio,
swift) on signals with a known f0. RMVPE is checked against RVC's outputs in test_rmvpe.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from infer_pack.errors import UserInputError
from infer_pack.f0 import (
    F0_METHODS,
    apply_f0_override,
    estimate_f0,
    f0_to_coarse,
    fit_to_frames,
    interpolate_unvoiced,
    load_f0_override,
    median_filter_f0,
    shift_f0,
)
from infer_pack.f0.evaluation import (
    raw_pitch_accuracy,
    synthetic_pitch_signal,
    voicing_error,
)
from tests.conftest import reference_file


def test_coarse_matches_rvc_table_exactly(reference: Path) -> None:
    data = np.load(reference_file(reference, "coarse_pitch_ref.npz"))
    coarse = f0_to_coarse(data["f0_hz"])
    assert coarse.dtype == np.int64
    np.testing.assert_array_equal(coarse, data["coarse"])
    assert list(f0_to_coarse(np.array([0.0, 50.0, 100.0, 200.0, 300.0, 1100.0, 5000.0]))) == [
        1,
        1,
        20,
        54,
        84,
        255,
        255,
    ]


def test_uv_example_interpolation_and_coarse(reference: Path) -> None:
    data = np.load(reference_file(reference, "coarse_pitch_ref.npz"))
    filled = interpolate_unvoiced(data["uv_example_f0_in"])
    np.testing.assert_allclose(filled, data["uv_example_f0_out"], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(f0_to_coarse(filled), data["uv_example_coarse_out"])
    assert interpolate_unvoiced(np.zeros(5)).tolist() == [0.0] * 5


def test_shift_and_fit() -> None:
    np.testing.assert_allclose(shift_f0(np.array([0.0, 220.0]), 12), [0.0, 440.0])
    np.testing.assert_allclose(shift_f0(np.array([440.0]), -7), [440.0 * 2 ** (-7 / 12)])
    assert fit_to_frames(np.array([1.0, 2.0, 3.0]), 6, centered=True).tolist() == [0, 0, 1, 2, 3, 0]
    assert fit_to_frames(np.array([1.0, 2.0, 3.0]), 5).tolist() == [1, 2, 3, 0, 0]
    assert fit_to_frames(np.array([1.0, 2.0, 3.0]), 2).tolist() == [1, 2]


def test_median_filter_follows_rvc_switch() -> None:
    track = np.array([100.0, 100.0, 400.0, 100.0, 100.0, 0.0, 100.0])
    np.testing.assert_array_equal(median_filter_f0(track, 2), track)  # radius < 3: RVC leaves it alone
    np.testing.assert_array_equal(median_filter_f0(track, 3), [100, 100, 100, 100, 100, 100, 0])
    np.testing.assert_array_equal(median_filter_f0(track, 7), median_filter_f0(track, 3))
    wide = median_filter_f0(np.array([1.0, 9.0, 9.0, 1.0, 1.0]), 2, rvc_compatible=False)
    np.testing.assert_array_equal(wide, [1.0, 1.0, 1.0, 1.0, 1.0])


def test_f0_override_file_and_application(tmp_path: Path) -> None:
    path = tmp_path / "curve.txt"
    path.write_text("0.00,100\n0.05,200\n\n0.10,200\n", encoding="utf-8")
    times, hz = load_f0_override(path)
    np.testing.assert_allclose(times, [0.0, 0.05, 0.1], rtol=1e-6)
    f0 = np.full(20, 300.0)
    out = apply_f0_override(f0, times, hz, frame_offset=3)
    # RVC: frames offset .. offset + round(0.1 * 100 + 1) take np.interp(range, t * 100, hz)
    expected = f0.copy()
    expected[3:14] = np.interp(np.arange(11), times * 100, hz)
    np.testing.assert_allclose(out, expected)
    assert out[3] == 100.0 and out[8] == pytest.approx(200.0) and out[14] == 300.0
    # RVC's own arithmetic on a table starting at 0 s (float32 table, x_pad frames in front)
    table = np.array([[0.0, 110.0], [0.333, 220.0], [1.237, 180.0]], dtype=np.float32)
    span = np.round((table[:, 0].max() - table[:, 0].min()) * 100 + 1).astype("int16")
    rvc = np.interp(list(range(span)), table[:, 0] * 100, table[:, 1])
    expected = np.full(300, 100.0)
    expected[30 : 30 + len(rvc)] = rvc
    ours = apply_f0_override(
        np.full(300, 100.0), table[:, 0].astype(np.float64), table[:, 1].astype(np.float64), frame_offset=30
    )
    np.testing.assert_array_equal(ours, expected)
    late = apply_f0_override(np.zeros(50), np.array([0.2, 0.3]), np.array([150.0, 150.0]))
    assert np.flatnonzero(late).tolist() == list(range(20, 31))
    bad = tmp_path / "bad.txt"
    bad.write_text("0.1;200\n")
    with pytest.raises(UserInputError, match="line 1"):
        load_f0_override(bad)
    with pytest.raises(UserInputError, match="not found"):
        load_f0_override(tmp_path / "nope.txt")


def test_registry_and_argument_checks() -> None:
    assert list(F0_METHODS) == ["pm", "harvest", "dio", "rmvpe", "swift"]
    with pytest.raises(ValueError, match="unknown f0 method"):
        estimate_f0(np.zeros(1600, np.float32), "crepe")
    with pytest.raises(ValueError):
        estimate_f0(np.zeros((2, 1600), np.float32), "pm")


@pytest.mark.parametrize("method", ["pm", "harvest", "dio", "swift"])
def test_frame_grid_silence_and_short_input(method: str) -> None:
    silence = np.zeros(16000, np.float32)
    f0 = estimate_f0(silence, method)
    assert f0.shape == (101,) and f0.dtype == np.float64 and not f0.any()
    assert estimate_f0(silence, method, n_frames=100).shape == (100,)
    assert estimate_f0(np.zeros(400, np.float32), method).shape == (3,)
    nan_audio = np.full(8000, np.nan, np.float32)
    assert not estimate_f0(nan_audio, method).any()


# Floors chosen so that a broken estimator (octave errors, wrong frame rate, wrong shift) fails:
# (method, snr_db, minimum raw pitch accuracy within 50 cents, maximum voicing error)
CASES = [
    ("pm", None, 0.97, 0.05),
    ("pm", 20.0, 0.97, 0.05),
    ("pm", 10.0, 0.95, 0.08),
    ("dio", None, 0.97, 0.05),
    ("dio", 10.0, 0.95, 0.08),
    ("dio", 0.0, 0.75, 0.2),
    ("harvest", None, 0.97, 0.05),
    ("harvest", 10.0, 0.95, 0.15),
    ("harvest", 0.0, 0.85, 0.2),
    ("swift", None, 0.97, 0.05),
    ("swift", 10.0, 0.97, 0.05),
    ("swift", 0.0, 0.9, 0.1),
]


@pytest.fixture(scope="module")
def signals() -> dict[float | None, object]:
    return {snr: synthetic_pitch_signal(3.0, snr_db=snr, seed=7) for snr in (None, 20.0, 10.0, 0.0)}


@pytest.mark.parametrize(("method", "snr_db", "min_rpa", "max_voicing_error"), CASES)
def test_accuracy_on_synthetic_notes(
    signals, method: str, snr_db: float | None, min_rpa: float, max_voicing_error: float
) -> None:
    signal = signals[snr_db]
    f0 = estimate_f0(signal.audio, method)
    assert f0.shape == signal.f0_true.shape
    assert raw_pitch_accuracy(f0, signal.f0_true, signal.scored) >= min_rpa
    assert voicing_error(f0, signal.f0_true, signal.scored) <= max_voicing_error


def test_pm_padding_matches_rvc_centering() -> None:
    import parselmouth

    signal = synthetic_pitch_signal(1.0, seed=3)
    # float64 input (RVC's pipeline passes its high-passed float64 signal) must reach Praat unrounded
    audio = signal.audio.astype(np.float64) + 1e-9 * np.random.default_rng(0).standard_normal(signal.audio.size)
    raw = (
        parselmouth.Sound(audio, 16000)
        .to_pitch_ac(time_step=0.01, voicing_threshold=0.6, pitch_floor=50, pitch_ceiling=1100)
        .selected_array["frequency"]
    )
    n = audio.size // 160  # RVC's p_len
    ours = estimate_f0(audio, "pm", n_frames=n)
    pad = (n - len(raw) + 1) // 2
    np.testing.assert_array_equal(ours, np.pad(raw, (pad, n - len(raw) - pad)))


def test_metric_floors_catch_an_octave_error(signals) -> None:
    signal = signals[None]
    f0 = estimate_f0(signal.audio, "dio")
    assert raw_pitch_accuracy(f0 * 2, signal.f0_true, signal.scored) < 0.05
    assert raw_pitch_accuracy(np.roll(f0, 8), signal.f0_true, signal.scored) < 0.9


def test_swift_uses_the_cache_and_clamps_the_range() -> None:
    from infer_pack.cache import ModelCache

    cache = ModelCache()
    signal = synthetic_pitch_signal(1.0, seed=5)
    first = estimate_f0(signal.audio, "swift", cache=cache)
    again = estimate_f0(signal.audio, "swift", cache=cache, f0_min=1.0, f0_max=5000.0)
    assert len(cache) == 1
    np.testing.assert_allclose(first[first > 0], again[first > 0], rtol=1e-6)


@pytest.fixture(scope="module")
def deep_vibrato():
    return synthetic_pitch_signal(4.0, seed=3, vibrato_depth=0.06)


@pytest.mark.parametrize("method", ["pm", "dio", "swift"])
def test_frames_sit_on_the_10ms_grid(deep_vibrato, method: str) -> None:
    """With a 6 % vibrato a track shifted by one frame misses by > 15 cents on most frames."""
    signal = deep_vibrato
    f0 = estimate_f0(signal.audio, method)
    scores = {lag: raw_pitch_accuracy(np.roll(f0, lag), signal.f0_true, signal.scored, cents=15) for lag in (-1, 0, 1)}
    assert scores[0] >= 0.9
    assert scores[0] > scores[-1] + 0.4 and scores[0] > scores[1] + 0.4


def test_progress_and_cancel() -> None:
    from infer_pack.errors import CancelledError
    from infer_pack.progress import CancelToken

    calls: list[tuple[int, int]] = []
    estimate_f0(np.zeros(1600, np.float32), "dio", progress=lambda done, total, message: calls.append((done, total)))
    assert calls[-1] == (11, 11)
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        estimate_f0(np.zeros(1600, np.float32), "pm", cancel=token)
