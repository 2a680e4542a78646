"""Pitch curve edits (frame-exact, edges included), the edit history, and the curve's files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from infer_pack.f0 import apply_f0_file, apply_f0_override, load_f0_override
from infer_pack.pitch_edit import (
    Draw,
    EditHistory,
    Flatten,
    Octave,
    PitchEditError,
    Restore,
    Shift,
    Unvoice,
    Voice,
    edit_from_dict,
    edit_to_dict,
    replay,
    shift_cents,
    voiced_runs,
)
from infer_pack.pitch_file import (
    PitchFileError,
    grid_times,
    read_curve,
    read_curve_json,
    read_curve_text,
    write_curve_json,
    write_curve_text,
)

TWO_SEMITONES = 2.0 ** (2.0 / 12.0)


def _curve() -> np.ndarray:
    """20 frames: unvoiced 0-2, 200 Hz 3-7, unvoiced 8-9, 300 Hz 10-16, unvoiced 17-19."""
    curve = np.zeros(20)
    curve[3:8] = 200.0
    curve[10:17] = 300.0
    return curve


def test_shift_moves_only_the_voiced_frames_of_the_range() -> None:
    curve = _curve()
    out = replay(curve, [Shift(5, 12, 2.0)])
    expected = curve.copy()
    expected[5:8] = 200.0 * TWO_SEMITONES
    expected[10:12] = 300.0 * TWO_SEMITONES
    np.testing.assert_allclose(out, expected, rtol=1e-15)
    assert out[8] == out[9] == 0.0  # unvoiced stays unvoiced
    np.testing.assert_allclose(replay(curve, [shift_cents(0, 20, -50)])[3], 200.0 * 2 ** (-0.5 / 12), rtol=1e-15)
    np.testing.assert_array_equal(curve, _curve())  # the extracted curve is never changed


@pytest.mark.parametrize("start,end", [(-1, 5), (5, 5), (6, 5), (0, 21), (20, 21)])
def test_ranges_outside_the_curve_are_refused(start: int, end: int) -> None:
    with pytest.raises(PitchEditError, match="does not fit a curve of 20 frames"):
        replay(_curve(), [Shift(start, end, 1.0)])


def test_octave_fix_at_both_edges() -> None:
    curve = np.array([110.0, 440.0, 440.0, 0.0, 110.0])
    np.testing.assert_array_equal(replay(curve, [Octave(0, 1, up=True)]), [220, 440, 440, 0, 110])
    np.testing.assert_array_equal(replay(curve, [Octave(1, 3, up=False)]), [110, 220, 220, 0, 110])
    np.testing.assert_array_equal(replay(curve, [Octave(3, 5, up=True)]), [110, 440, 440, 0, 220])


def test_unvoice_and_voice_with_interior_gap_and_both_edges() -> None:
    curve = _curve()
    np.testing.assert_array_equal(replay(curve, [Unvoice(0, 4)])[:5], [0, 0, 0, 0, 200])
    voiced = replay(curve, [Voice(0, 20)])
    np.testing.assert_array_equal(voiced[:3], [200, 200, 200])  # before the first voiced frame: held
    np.testing.assert_array_equal(voiced[17:], [300, 300, 300])  # after the last: held
    # gap 8, 9 between frame 7 (200 Hz) and frame 10 (300 Hz): linear in Hz
    np.testing.assert_allclose(voiced[8:10], [200 + 100 / 3, 200 + 200 / 3], rtol=1e-15)
    np.testing.assert_array_equal(voiced[3:8], 200.0)  # voiced frames keep their pitch
    # only the range changes, its neighbours outside it still count as the voiced anchors
    part = replay(curve, [Voice(9, 10)])
    assert part[8] == 0.0 and part[9] == pytest.approx(200 + 200 / 3, rel=1e-15)
    # nothing voiced anywhere: nothing to interpolate from, the curve stays unvoiced
    np.testing.assert_array_equal(replay(np.zeros(6), [Voice(0, 6)]), np.zeros(6))
    # unvoice then voice at the first frame: the neighbour's value is held
    np.testing.assert_array_equal(replay(curve, [Unvoice(3, 5), Voice(0, 5)])[:6], [200] * 6)


def test_draw_interpolates_per_frame_in_log_frequency() -> None:
    curve = _curve()
    out = replay(curve, [Draw(((2.0, 100.0), (6.0, 400.0)))])
    np.testing.assert_allclose(out[2:7], [100, 100 * 2**0.5, 200, 200 * 2**0.5, 400], rtol=1e-12)
    np.testing.assert_array_equal(out[:2], curve[:2])
    np.testing.assert_array_equal(out[7:], curve[7:])
    # fractional ends: only the whole frames inside are written, unordered points are sorted
    frac = replay(curve, [Draw(((12.5, 150.0), (10.5, 150.0)))])
    np.testing.assert_allclose(frac[9:14], [0, 300, 150, 150, 300], rtol=1e-14)
    single = replay(curve, [Draw(((19.0, 123.0),))])
    assert single[19] == 123.0 and single[18] == 0.0
    with pytest.raises(PitchEditError, match="above 0 Hz"):
        replay(curve, [Draw(((1.0, 0.0), (2.0, 100.0)))])
    with pytest.raises(PitchEditError, match="holds no whole frame"):
        replay(curve, [Draw(((19.5, 100.0), (25.0, 100.0)))])


def test_flatten_median_and_smooth() -> None:
    frames = np.arange(60)
    vibrato = 220.0 * 2.0 ** (0.5 / 12 * np.sin(2 * np.pi * frames / 15))  # +-50 cents, 15-frame period
    curve = np.concatenate([[0.0, 0.0], vibrato, [0.0]])
    flat = replay(curve, [Flatten(0, curve.size, "median")])
    np.testing.assert_array_equal(flat[2:-1], np.median(vibrato))
    assert flat[0] == flat[1] == flat[-1] == 0.0
    smooth = replay(curve, [Flatten(2, 62, "smooth", window_frames=15)])
    # reference: centred mean of log2 Hz over 15 frames, window cut at the run's ends
    logs = np.log2(vibrato)
    reference = [2 ** logs[max(0, i - 7) : i + 8].mean() for i in range(60)]
    np.testing.assert_allclose(smooth[2:62], reference, rtol=1e-12)
    middle = np.log2(smooth[12:52]) * 12
    assert np.ptp(middle) < 0.05 < np.ptp(np.log2(vibrato[10:50]) * 12)  # a whole period averages out
    # a constant note stays the same; runs are smoothed separately (unvoiced gap kept)
    two = replay(_curve(), [Flatten(0, 20, "smooth", window_frames=5)])
    np.testing.assert_allclose(two, _curve(), rtol=1e-14)
    with pytest.raises(PitchEditError, match="unknown mode"):
        replay(curve, [Flatten(0, 5, "wobble")])  # type: ignore[arg-type]


def test_restore_keeps_the_extracted_stretch() -> None:
    curve = _curve()
    out = replay(curve, [Octave(0, 20, up=True), Restore(10, 12)])
    np.testing.assert_array_equal(out[10:12], curve[10:12])
    np.testing.assert_array_equal(out[12:17], 600.0)


def test_history_undo_redo_and_reset_replay_a_prefix() -> None:
    history = EditHistory(_curve())
    history.push(Shift(3, 8, 12.0))
    history.push(Unvoice(10, 12))
    np.testing.assert_array_equal(history.undo(), replay(_curve(), [Shift(3, 8, 12.0)]))
    np.testing.assert_array_equal(history.undo(), _curve())
    np.testing.assert_array_equal(history.undo(), _curve())  # nothing more to undo
    np.testing.assert_array_equal(history.redo()[3:8], 400.0)
    history.push(Octave(10, 17, up=False))  # a new edit drops the undone one
    assert [type(e) for e in history.edits] == [Shift, Octave]
    np.testing.assert_array_equal(history.reset(), _curve())
    assert history.undo()[10] == 150.0  # reset is an edit: undone, the octave fix is back
    with pytest.raises(PitchEditError):
        history.push(Shift(0, 99, 1.0))
    assert len(history.edits) == 3  # a refused edit changes nothing


def test_edit_records_round_trip() -> None:
    edits = [Shift(1, 2, 2.5), Octave(0, 3, up=False), Unvoice(4, 5), Voice(0, 20), Flatten(2, 9, "smooth", 7),
             Restore(1, 19), Draw(((1.5, 100.0), (3.0, 220.0)))]
    records = json.loads(json.dumps([edit_to_dict(e) for e in edits]))
    assert [edit_from_dict(r) for r in records] == edits
    assert edit_from_dict({"op": "shift", "start": 3.0, "end": 8.0, "semitones": 2}) == Shift(3, 8, 2.0)
    with pytest.raises(PitchEditError, match="'op' must be one of"):
        edit_from_dict({"op": "transpose", "start": 0, "end": 1})
    with pytest.raises(PitchEditError, match="bad shift record"):
        edit_from_dict({"op": "shift", "start": 0, "end": 1, "cents": 5})


def test_voiced_runs() -> None:
    assert voiced_runs(_curve()) == [(3, 8), (10, 17)]
    assert voiced_runs(np.array([1.0, 0.0, 1.0])) == [(0, 1), (2, 3)]
    assert voiced_runs(np.zeros(3)) == []


def test_json_file_round_trip_and_errors(tmp_path: Path) -> None:
    history = EditHistory(_curve(), [Shift(3, 8, 2.0), Unvoice(10, 12)], position=1)
    path = write_curve_json(tmp_path / "curve.json", history, {"input": "song.wav", "f0_method": "pm"})
    data = json.loads(path.read_text())
    assert data["format"] == "rvc-pitch-curve" and data["version"] == 1 and data["hop_seconds"] == 0.01
    assert data["position"] == 1 and len(data["edits"]) == 2
    loaded = read_curve_json(path)
    assert loaded.edits == history.edits and loaded.position == 1
    np.testing.assert_array_equal(loaded.curve(), history.curve())
    np.testing.assert_array_equal(read_curve(path).curve()[3:8], 200.0 * TWO_SEMITONES)

    def broken(name: str, **changes: object) -> Path:
        target = tmp_path / name
        target.write_text(json.dumps({**data, **changes}))
        return target

    with pytest.raises(PitchFileError, match=r"newer\.json.*version 2 is newer"):
        read_curve_json(broken("newer.json", version=2))
    with pytest.raises(PitchFileError, match=r"hop\.json.*hop_seconds"):
        read_curve_json(broken("hop.json", hop_seconds=0.005))
    with pytest.raises(PitchFileError, match=r"differs\.json.*edited_hz differs"):
        read_curve_json(broken("differs.json", edited_hz=list(_curve())))
    with pytest.raises(PitchFileError, match=r"range\.json.*does not fit"):
        read_curve_json(broken("range.json", edits=[{"op": "shift", "start": 0, "end": 99, "semitones": 1}],
                               edited_hz=list(_curve())))
    with pytest.raises(PitchFileError, match=r"other\.json.*not a pitch curve"):
        read_curve_json(broken("other.json", format="something"))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PitchFileError, match=r"bad\.json.*unreadable JSON"):
        read_curve_json(tmp_path / "bad.json")
    with pytest.raises(PitchFileError, match="not found"):
        read_curve_json(tmp_path / "absent.json")


def test_text_times_straddle_each_frame_in_float32() -> None:
    times, frames = grid_times(360_001)  # one hour of frames
    assert times.dtype == np.float32 and np.all(np.diff(times) > 0)
    scaled = (times * np.float32(100)).astype(np.float64)
    assert np.all(np.abs(times - frames / 100) <= 2 * np.spacing(times))  # within 2 float32 steps of k * 10 ms
    single = np.bincount(frames) == 1
    assert single.mean() > 0.8 and np.all(np.bincount(frames) <= 2)
    np.testing.assert_array_equal(scaled[single[frames]], frames[single[frames]])  # one line: exactly k
    pairs = scaled[~single[frames]].reshape(-1, 2)
    k = frames[~single[frames]].reshape(-1, 2)[:, 0]
    assert np.all(pairs[:, 0] < k) and np.all(pairs[:, 1] > k)  # two lines: just below and above k


def test_text_file_applies_frame_exactly_like_rvc(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    curve = np.where(rng.random(30_000) < 0.2, 0.0, rng.uniform(80.0, 900.0, 30_000))  # 5 minutes
    path = write_curve_text(tmp_path / "curve.txt", curve)
    times, hz = load_f0_override(path)
    estimate = np.full(30_000 + 60, 5.0)
    out = apply_f0_override(estimate, times, hz, frame_offset=30)
    np.testing.assert_array_equal(out[30:-30], curve.astype(np.float32))
    np.testing.assert_array_equal(out[:30], 5.0)
    np.testing.assert_array_equal(out[-30:], 5.0)
    np.testing.assert_array_equal(read_curve_text(path), curve.astype(np.float32))
    np.testing.assert_array_equal(apply_f0_file(estimate, path, frame_offset=30), out)


def test_json_file_replaces_the_frames_after_the_padding_exactly(tmp_path: Path) -> None:
    extracted = np.linspace(100.0, 300.0, 50) + 1e-7  # not float32 values: the JSON keeps float64
    history = EditHistory(extracted, [Shift(10, 20, 2.0)])
    path = write_curve_json(tmp_path / "edit.json", history)
    estimate = np.full(70, 7.0)
    out = apply_f0_file(estimate, path, frame_offset=10)
    np.testing.assert_array_equal(out[10:60], history.curve())
    np.testing.assert_array_equal(out[:10], 7.0)
    np.testing.assert_array_equal(out[60:], 7.0)
    np.testing.assert_allclose(out[20:30] / extracted[10:20], TWO_SEMITONES, rtol=1e-15)
    short = apply_f0_file(np.full(30, 7.0), path, frame_offset=10)  # a longer curve is cut at the track's end
    np.testing.assert_array_equal(short[10:], history.curve()[:20])


def test_the_extracted_curve_is_the_conversion_pitch_and_an_edit_reaches_it_exactly(tmp_path: Path) -> None:
    from conftest import synthetic_voice

    from infer_pack.params import ConversionParams
    from infer_pack.pipeline import CPU_WINDOWS, WINDOW, input_pitch_curve, pitch_track, prepared_input

    audio = synthetic_voice(2.0, 16000, f0_hz=200.0)
    params = ConversionParams(f0_method="pm", pitch_semitones=3.0)
    audio_pad = prepared_input(audio, CPU_WINDOWS)
    n_frames = audio_pad.shape[0] // WINDOW
    pad = CPU_WINDOWS.pad_frames
    track = pitch_track(audio_pad, n_frames, params, CPU_WINDOWS)
    extracted = input_pitch_curve(audio, params, CPU_WINDOWS)
    assert extracted.shape == (audio.size // 160,)
    np.testing.assert_array_equal(extracted.astype(np.float32), track.hz[pad : pad + extracted.size])
    assert (extracted > 0).sum() > 100

    history = EditHistory(extracted, [Shift(50, 120, 2.0), Unvoice(130, 140)])
    path = write_curve_json(tmp_path / "edited.json", history)
    edited = pitch_track(audio_pad, n_frames, ConversionParams(f0_method="pm", pitch_semitones=3.0,
                                                               f0_override_path=path), CPU_WINDOWS)
    ratio = edited.hz[pad : pad + extracted.size].astype(np.float64) / np.where(extracted > 0, extracted, 1.0)
    voiced = extracted > 0
    moved = np.flatnonzero(voiced & (np.abs(ratio - TWO_SEMITONES) < 1e-6))
    assert moved.tolist() == [k for k in range(50, 120) if voiced[k]]
    before, after = edited.hz[pad : pad + extracted.size], track.hz[pad : pad + extracted.size]
    outside = np.r_[0:50, 120:130, 140 : extracted.size]
    np.testing.assert_array_equal(before[outside], after[outside])
    assert np.all(before[130:140] == 0.0)
    np.testing.assert_array_equal(edited.hz[:pad], track.hz[:pad])  # the context padding keeps the estimate
