"""The pitch editor's actions: the extracted curve is the conversion's pitch; an edited curve saved as a
file reaches the synthesiser exactly (only the edited frames move); the JSON and text files agree."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers_app import make_project, shared_test_hubert

from infer_pack.cache import ModelCache
from infer_pack.pitch_edit import EditHistory, Shift, Unvoice, edit_to_dict
from infer_pack.pitch_file import curve_json, read_curve_json
from tools.api import convert_voice, extract_pitch_curve, save_pitch_curve

PAD = 100  # CPU context padding: x_pad 1 s = 100 frames in front of the input's frame 0
TWO_SEMITONES = 2.0 ** (2.0 / 12.0)


@pytest.fixture(scope="module")
def project(reference: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModelCache]:
    root = make_project(tmp_path_factory.mktemp("pitch-api") / "project", reference,
                        shared_test_hubert(tmp_path_factory, reference))
    return root, ModelCache()


def record_synth_pitch(monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray]:
    """Record the Hz track each synthesiser call gets."""
    from infer_pack.pipeline import VoiceConverter

    seen: list[np.ndarray] = []
    real = VoiceConverter._synthesize

    def spy(self: VoiceConverter, phone: Any, coarse: Any, hz: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(np.array(hz, dtype=np.float32))
        return real(self, phone, coarse, hz, *args, **kwargs)

    monkeypatch.setattr(VoiceConverter, "_synthesize", spy)
    return seen


def test_extracted_curve_is_what_the_synthesiser_gets(
    project: tuple[Path, ModelCache], monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, cache = project
    source = root / "inputs" / "a.wav"  # 1.5 s: one chunk
    extracted = extract_pitch_curve(project=root, input_path=source, f0_method="pm", pitch_semitones=3.0, device="cpu")
    curve = extracted.extracted_hz
    assert curve.shape == (150,) and (curve > 0).sum() > 60
    assert extracted.waveform.shape == (150,) and extracted.waveform.max() == 1.0
    png = extracted.spectrogram_png
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (150, (extracted.high_midi - extracted.low_midi) * 4 + 1)
    assert len(zlib.decompress(png[41:-12])) == height * (width + 1)
    editor = json.loads(extracted.editor_json())
    assert editor["curve"]["extracted_hz"] == curve.tolist() and editor["view"]["spectrogram"].startswith("data:")

    seen = record_synth_pitch(monkeypatch)
    convert_voice(project=root, model=root / "weights" / "ref.pth", input_path=source, f0_method="pm", pitch_semitones=3.0,
                  device="cpu", cache=cache, output_path=root / "outputs" / "plain.wav")
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0][PAD : PAD + curve.size], curve.astype(np.float32))


def test_edited_curve_moves_exactly_the_edited_frames(
    project: tuple[Path, ModelCache], monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, cache = project
    source = root / "inputs" / "a.wav"
    extracted = extract_pitch_curve(project=root, input_path=source, f0_method="pm", device="cpu")
    edited = extracted.curve_json()
    edited["edits"] = [edit_to_dict(Shift(40, 90, 2.0)), edit_to_dict(Unvoice(100, 110))]
    edited["position"] = 2
    saved = save_pitch_curve(project=root, curve=json.dumps(edited))
    assert saved.path == root / "outputs" / "pitch" / "a-pitch.json"
    assert saved.edits == 2 and saved.frames == 150
    assert save_pitch_curve(project=root, curve=edited).path.name == "a-pitch-2.json"  # never replaces a curve
    text = save_pitch_curve(project=root, curve=edited, output_format="txt")
    assert text.path.name == "a-pitch.txt"
    history = read_curve_json(saved.path)
    assert history.edits == [Shift(40, 90, 2.0), Unvoice(100, 110)]

    seen = record_synth_pitch(monkeypatch)
    for f0_file in (saved.path, text.path):
        convert_voice(project=root, model=root / "weights" / "ref.pth", input_path=source, f0_method="pm", f0_file=f0_file,
                      device="cpu", cache=cache, output_path=root / "outputs" / f"edited-{f0_file.suffix[1:]}.wav")
    from_json, from_text = (track[PAD : PAD + 150].astype(np.float64) for track in seen)
    np.testing.assert_array_equal(from_json, from_text)
    curve = extracted.extracted_hz
    voiced = curve > 0
    ratio = np.divide(from_json, curve, out=np.ones_like(curve), where=voiced)
    moved = np.flatnonzero(voiced & (np.abs(ratio - 1.0) > 1e-6))
    assert moved.tolist() == [k for k in range(40, 90) if voiced[k]] + [k for k in range(100, 110) if voiced[k]]
    np.testing.assert_allclose(ratio[40:90][voiced[40:90]], TWO_SEMITONES, rtol=1e-6)
    assert np.all(from_json[100:110] == 0.0)
    outside = np.r_[0:40, 90:100, 110:150]
    np.testing.assert_array_equal(from_json[outside], curve[outside].astype(np.float32))


def test_save_refuses_a_broken_curve(project: tuple[Path, ModelCache]) -> None:
    from infer_pack.errors import UserInputError

    root, _cache = project
    good = curve_json(EditHistory(np.full(10, 100.0)), {"input": "x.wav"})
    with pytest.raises(UserInputError, match="not JSON"):
        save_pitch_curve(project=root, curve="{")
    with pytest.raises(UserInputError, match="does not fit"):
        save_pitch_curve(project=root, curve={**good, "edits": [edit_to_dict(Shift(5, 20, 1.0))], "position": 1,
                                              "edited_hz": good["extracted_hz"]})
    with pytest.raises(UserInputError, match="choose json or txt"):
        save_pitch_curve(project=root, curve=good, output_format="csv")  # type: ignore[arg-type]
