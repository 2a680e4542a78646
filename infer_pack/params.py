"""The conversion parameters: each one's default, range, unit and help, written once.

`ConversionParams` is what the pipeline takes; its fields carry the specs from which the web tabs
build their widgets, the command line its flags (`PARAM_SPECS`), and the API takes the same names.
This module imports nothing heavy, so that `tools.cli --help` can read it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from infer_pack.errors import UserInputError
from infer_pack.specs import ParamSpec, field_specs, spec_field

# Longest input a conversion decodes by default (the web app sets its own, shorter limit).
MAX_INPUT_SECONDS = 3 * 3600.0

PitchGaps = Literal["keep", "interpolate"]
PITCH_GAP_MODES: tuple[PitchGaps, ...] = ("keep", "interpolate")

# How an input file becomes mono at the pipeline's rate (`infer_pack.audio`): "rvc" as RVC's ffmpeg call
# (libswresample defaults, stereo -> 0.7071 * (L + R)), "soxr" channel mean and soxr "HQ".
Decoder = Literal["rvc", "soxr"]
DECODERS: tuple[Decoder, ...] = ("rvc", "soxr")
DEFAULT_DECODER: Decoder = "rvc"


F0_METHOD_NAMES: tuple[str, ...] = ("pm", "harvest", "dio", "rmvpe", "swift")


_param = spec_field


@dataclass(frozen=True)
class ConversionParams:
    """What the user chose for one conversion: each field's default, range and help are written here only."""

    pitch_semitones: float = _param(
        0.0, "Transpose (semitones)", "Shift the pitch: +12 one octave up, -12 one octave down. "
        "Male to female voice: about +12; female to male: about -12.", -24, 24, 1, flag="transpose")
    f0_method: str = _param(
        "rmvpe", "Pitch estimator", "pm: fast, clean speech. harvest: good low voices, slow. dio: fast, rough. "
        "rmvpe: best for singing and noise (needs rmvpe.pt). swift: fast neural, offline.", choices=F0_METHOD_NAMES)
    index_rate: float = _param(
        0.75, "Index rate", "How much of each frame's content is replaced by the nearest features of the training "
        "voice (0 = index unused). Higher: closer timbre, may blur the words.", 0.0, 1.0, 0.01)
    filter_radius: int = _param(
        3, "Median filter radius", "With harvest, a value of 3 or more median-filters the pitch curve, which removes "
        "breathy pitch glitches. Other estimators ignore it (as in RVC).", 0, 7, 1)
    resample_hz: int = _param(
        0, "Output sample rate (Hz)", "Resample the result to this rate; 0 keeps the voice model's rate. Values below "
        "16000 also keep it.", 0, 48000, 1, flag="resample")
    rms_mix_rate: float = _param(
        0.25, "Volume envelope mix", "1 keeps the converted audio's own loudness curve; 0 imposes the input's loudness "
        "curve (useful against noisy, pumping output).", 0.0, 1.0, 0.01, flag="rms-mix")
    protect: float = _param(
        0.33, "Protect consonants", "Keeps unvoiced consonants and breaths from the unblended features to avoid "
        "tearing artefacts. 0.5 turns it off; lower protects more but weakens the index.", 0.0, 0.5, 0.01)
    pitch_gaps: PitchGaps = _param(
        "keep", "Pitch gaps", "What unvoiced frames (consonants, breaths, silence) get as pitch. keep: no pitch there, "
        "so 'Protect consonants' works (RVC up to its 2024 releases, which most voices were trained with). "
        "interpolate: filled with the pitch of the voiced frames around them (RVC 2026), smoother across short gaps; "
        "protection then has no effect.", choices=PITCH_GAP_MODES)
    decoder: Decoder = _param(
        DEFAULT_DECODER, "Input decoding", "How input audio becomes mono at the working rate. rvc: as RVC's ffmpeg call (FFmpeg's "
        "resampler; stereo mixed as 0.71 x (left + right)), so a conversion matches RVC's. soxr: the channels "
        "averaged (3 dB quieter for stereo) and soxr's resampler (flatter passband, steeper cut-off).",
        choices=DECODERS)
    speaker_id: int = _param(
        0, "Speaker id", "Speaker row of multi-speaker voice models (0 for usual models).", 0, 108, 1)
    seed: int | None = _param(
        0, "Random seed", "Seed of the synthesiser's noise: the same seed gives the same output.", 0, 2**31 - 1, 1)
    f0_override_path: Path | None = None  # RVC's f0 file: "time_s,hz" per line (the API's f0_file)

    def validated(self) -> ConversionParams:
        """A copy with numbers of the right type; raises UserInputError naming any value out of range."""
        if self.f0_method not in F0_METHOD_NAMES:
            raise UserInputError(f"unknown f0 method {self.f0_method!r}; choose one of {', '.join(F0_METHOD_NAMES)}")
        if self.pitch_gaps not in PITCH_GAP_MODES:
            raise UserInputError(f"unknown pitch gaps mode {self.pitch_gaps!r}; choose one of {', '.join(PITCH_GAP_MODES)}")
        if self.decoder not in DECODERS:
            raise UserInputError(f"unknown input decoder {self.decoder!r}; choose one of {', '.join(DECODERS)}")
        if self.f0_override_path is not None and not Path(self.f0_override_path).is_file():
            raise UserInputError(f"f0 file {str(self.f0_override_path)!r} not found; check the path or leave it empty")
        return replace(
            self,
            pitch_semitones=_checked("pitch_semitones", self.pitch_semitones, float),
            index_rate=_checked("index_rate", self.index_rate, float),
            filter_radius=_checked("filter_radius", self.filter_radius, int),
            resample_hz=_checked("resample_hz", self.resample_hz, int),
            rms_mix_rate=_checked("rms_mix_rate", self.rms_mix_rate, float),
            protect=_checked("protect", self.protect, float),
            speaker_id=_checked("speaker_id", self.speaker_id, int, upper=False),
            seed=None if self.seed is None else _checked("seed", self.seed, int),
        )


# name -> spec, in ConversionParams' order (what the UI and the CLI are built from).
PARAM_SPECS: dict[str, ParamSpec] = field_specs(ConversionParams)


def _checked(name: str, value: Any, kind: type, upper: bool = True) -> Any:
    return kind(PARAM_SPECS[name].checked(value, upper=upper))
