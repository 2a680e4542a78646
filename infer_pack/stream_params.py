"""A stream's settings: each field's default (RVC's realtime GUI), range, unit and help, written once.

The command line (`tools.cli realtime`) and the Realtime tab are built from these specs; the engine
(`infer_pack.realtime`) takes the dataclass. Light on purpose (no numpy) so `--help` stays fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from infer_pack.errors import UserInputError
from infer_pack.specs import ParamSpec, field_specs, spec_field

STREAM_F0_METHODS: tuple[str, ...] = ("rmvpe", "pm", "swift")  # fast enough per block
SILENCE_OFF_DB = -60.0  # RVC gates only above -60 dB
FRAME_S = 0.01  # every duration is a whole number of 10 ms frames (RVC's `zc`)
STREAM_MATCHES: tuple[str, ...] = ("ours", "rvc")
STREAM_PRESETS: tuple[str, ...] = ("as-set", "int8", "fast")
FAST_EXTRA_S = 1.0  # the fast preset's extra context (bench/bench_realtime.py measures its cost)


@dataclass(frozen=True)
class StreamSettings:
    """What the user chose for a stream (durations in seconds, rounded to 10 ms frames).

    Defaults are RVC's realtime GUI defaults; `deterministic` removes the synthesiser's noise.
    """

    block_time_s: float = spec_field(
        0.25, "Block time", "Audio converted per step: shorter is less delay, but each block costs the same "
        "context work, so the machine must keep up.", 0.02, 2.0, 0.01, flag="block-time", unit="s")
    crossfade_time_s: float = spec_field(
        0.05, "Crossfade", "Overlap blended between blocks (not longer than the block).", 0.01, 0.5, 0.01,
        flag="crossfade-time", unit="s")
    extra_time_s: float = spec_field(
        2.5, "Extra context", "Past audio the content encoder sees with each block: more is steadier and slower.",
        0.0, 10.0, 0.1, flag="extra-time", unit="s")
    sola_search_s: float = 0.01
    silence_threshold_db: float = spec_field(
        SILENCE_OFF_DB, "Silence threshold", "Input quieter than this is muted; -60 turns the gate off.",
        -100.0, 0.0, 1.0, flag="silence-threshold", unit="dB")
    pitch_semitones: float = spec_field(
        0.0, "Transpose", "Pitch shift: +12 one octave up, -12 one octave down.", -24.0, 24.0, 1.0, flag="transpose",
        unit="semitones")
    formant_semitones: float = spec_field(
        0.0, "Formant shift", "Moves the voice's timbre up or down without changing the pitch.", -12.0, 12.0, 0.5,
        flag="formant", unit="semitones")
    f0_method: str = spec_field(
        "rmvpe", "Pitch estimator", "pm: fastest. swift: fast neural, offline. rmvpe: best (needs rmvpe.pt).",
        choices=STREAM_F0_METHODS)
    index_rate: float = spec_field(
        0.0, "Index rate", "Share of each frame's content taken from the voice's index (0: index unused).",
        0.0, 1.0, 0.01)
    match: str = spec_field(
        "ours", "Engine", "ours: steadier seams, pitch cache and loudness at the model rate (closer to offline "
        "conversion). rvc: RVC's realtime output exactly (its resampler, pitch cache, pm settings, envelope order).",
        choices=STREAM_MATCHES)
    preset: str = spec_field(
        "as-set", "Preset", "as-set: the settings as chosen. int8: the settings as chosen with the content encoder and the "
        "decoder in int8 (about 2x less CPU per block). fast: int8, extra context at most 1 s and no decoder context "
        "(about 3x less CPU per block). Quality cost in the README.", choices=STREAM_PRESETS)
    encoder_int8: bool = False  # the content encoder's linear layers as int8 (dynamic quantisation, CPU)
    decoder_int8: bool = False  # the decoder as a calibrated int8 ONNX Runtime graph (CPU; infer_pack.decoder_int8)
    protect: float = 0.5  # 0.5 = off (RVC's realtime GUI has no protection)
    rms_mix_rate: float = spec_field(
        0.0, "Volume envelope mix", "Loudness: 0 the input's envelope, 1 the voice's own.", 0.0, 1.0, 0.01,
        flag="rms-mix")
    speaker_id: int = spec_field(0, "Speaker id", "Speaker row of multi-speaker voice models (0 for usual models).",
                                 0, 108, 1)
    # Frames decoded on each side of the returned ones (the decoder's full receptive field: None).
    # 0 as RVC: both edges lie in crossfades; 4 frames cost 22 % more decoder time per block at block
    # 0.25 s and measured no closer to offline conversion (bench/bench_realtime.py).
    decoder_context_frames: int | None = 0
    deterministic: bool = False
    seed: int = 0

    def validated(self) -> StreamSettings:
        """A copy with numbers of the right type; raises UserInputError naming a value out of range."""
        if self.f0_method not in STREAM_F0_METHODS:
            raise UserInputError(
                f"f0 method {self.f0_method!r} is too slow or unknown for streaming; choose one of {', '.join(STREAM_F0_METHODS)}"
            )
        if self.match not in STREAM_MATCHES:
            raise UserInputError(f"match must be one of {', '.join(STREAM_MATCHES)}, got {self.match!r}")
        if self.preset not in STREAM_PRESETS:
            raise UserInputError(f"preset must be one of {', '.join(STREAM_PRESETS)}, got {self.preset!r}")
        specs = stream_param_specs()
        checked = {name: spec.checked(getattr(self, name), upper=name != "speaker_id") for name, spec in specs.items()
                   if spec.minimum is not None}
        if not 0.0 <= self.sola_search_s <= 0.1 or not math.isfinite(self.sola_search_s):
            raise UserInputError(f"sola_search_s must be between 0 and 0.1, got {self.sola_search_s!r}")
        if not 0.0 <= self.protect <= 0.5:
            raise UserInputError(f"protect must be between 0 and 0.5, got {self.protect!r}")
        context = self.decoder_context_frames
        if context is not None and not (isinstance(context, int) and 0 <= context <= 100):
            raise UserInputError(f"decoder_context_frames must be between 0 and 100, got {context!r}")
        if round(self.crossfade_time_s / FRAME_S) > round(self.block_time_s / FRAME_S):
            raise UserInputError(
                f"the crossfade ({self.crossfade_time_s} s) must not be longer than the block ({self.block_time_s} s)"
            )
        if self.preset == "int8":
            return replace(self, **checked, seed=int(self.seed), encoder_int8=True, decoder_int8=True)
        if self.preset == "fast":
            checked["extra_time_s"] = min(checked["extra_time_s"], FAST_EXTRA_S)
            return replace(self, **checked, seed=int(self.seed), encoder_int8=True, decoder_int8=True,
                           decoder_context_frames=0)
        return replace(self, **checked, seed=int(self.seed))


def stream_param_specs() -> dict[str, ParamSpec]:
    """The user-settable StreamSettings fields: name -> default, range, help, flag."""
    return field_specs(StreamSettings)
