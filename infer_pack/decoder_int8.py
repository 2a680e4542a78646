"""The synthesiser's decoder in int8 (ONNX Runtime static quantisation) for streaming on a CPU.

A stream block's decoder (NSF/HiFi-GAN: transposed convolutions and dilated residual blocks) is the
floor of realtime conversion on a CPU: about 0.85 s of CPU per second of audio in float32 at one
thread. Static int8 quantisation (ONNX Runtime QDQ: per-channel int8 weights, uint8 activations with
ranges calibrated on the voice's own decoder inputs) runs the same graph about 3x faster on x86 CPUs.
Its quality cost, measured in bench/bench_realtime.py, is a log-spectral distance of about 0.5 dB to
the float32 stream's output (the stream itself is about 9 dB from the offline conversion).

Calibration: a built-in harmonic test signal (`infer_pack.synthetic.synthetic_speech`) streamed
through the float32 decoder with the stream's own settings; the decoder inputs of each block (latent
frames, excitation, speaker vector) give the activation ranges. The quantised graph is cached on disk
beside the float32 one (`infer_pack.onnx_engine.default_cache_dir`), keyed by the decoder's weights and
the versions, so a voice is calibrated once (about 20 s) and then opens at once.
"""

from __future__ import annotations

import functools
import logging
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from infer_pack.errors import UserInputError
from infer_pack.fileio import atomic_path

if TYPE_CHECKING:
    import torch

    from infer_pack.models import Synthesizer
    from infer_pack.pipeline import VoiceConverter
    from infer_pack.stream_params import StreamSettings

log = logging.getLogger(__name__)

QUANT_VERSION = "qdq-minmax-pc-2"  # part of the cache key: bump when the recipe changes
CALIBRATION_SECONDS = 3.0  # of the built-in test signal, at the stream's block size
Feed = dict[str, np.ndarray]
DecodeFn = Callable[["torch.Tensor", "torch.Tensor | None", "torch.Tensor"], "torch.Tensor"]


def int8_decoder_path(net: Synthesizer, cache_dir: str | Path | None = None) -> Path:
    """Where the quantised decoder of `net` is cached."""
    from infer_pack.onnx_engine import decoder_key, default_cache_dir

    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder / f"decoder_{decoder_key(net)}_{QUANT_VERSION}.onnx"


class _Feeds:
    """ONNX Runtime's CalibrationDataReader over recorded decoder inputs."""

    def __init__(self, feeds: Sequence[Feed]) -> None:
        self._items = iter(feeds)

    def get_next(self) -> Feed | None:
        return next(self._items, None)

    def rewind(self) -> None:  # the reader protocol asks for it; one pass is all the calibrator makes
        pass


def quantize_decoder(net: Synthesizer, feeds: Sequence[Feed], output: Path) -> Path:
    """Export the float32 decoder of `net`, quantise it statically on `feeds`, write it to `output`."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from infer_pack.onnx_engine import export_decoder

    if not feeds:
        raise UserInputError("the int8 decoder needs calibration inputs; none were recorded")
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rvc_int8_") as scratch:
        plain = export_decoder(net, Path(scratch) / "decoder.onnx")
        prepared = Path(scratch) / "prepared.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the quantiser's advice on pre-processing, done here
            quant_pre_process(str(plain), str(prepared), skip_symbolic_shape=True)
            with atomic_path(output) as tmp:
                quantize_static(
                    str(prepared), str(tmp), _Feeds(feeds),  # type: ignore[arg-type]
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=True, calibrate_method=CalibrationMethod.MinMax,
                )  # fmt: skip
    return output


class Int8Decoder:
    """`Generator.decode(x, har, g)` through the quantised graph (CPU, float32 in and out)."""

    def __init__(self, path: Path, threads: int) -> None:
        from infer_pack.onnx_engine import decoder_session

        self.path = path
        self.session = decoder_session(path, threads)

    def __call__(self, x: torch.Tensor, har: torch.Tensor | None, g: torch.Tensor) -> torch.Tensor:
        import torch

        from infer_pack.onnx_engine import decoder_feed

        return torch.from_numpy(self.session.run(None, decoder_feed(x, har, g))[0])


def int8_decoder_problem(net: Synthesizer) -> str | None:
    """Why `net`'s decoder cannot run as the int8 graph (not on a CPU in float32, weight norm not folded), or None."""
    from infer_pack.onnx_engine import onnx_decoder_problem

    return onnx_decoder_problem(net, "the int8 decoder")


def recording_decoder(decode: DecodeFn, feeds: list[Feed]) -> DecodeFn:
    """`decode` that also records each call's inputs as an ONNX feed."""

    def record(x: torch.Tensor, har: torch.Tensor | None, g: torch.Tensor) -> torch.Tensor:
        feed = {"x": x.detach().numpy().copy(), "g": g.detach().numpy().copy()}
        if har is not None:
            feed["har"] = har.detach().numpy().copy()
        feeds.append(feed)
        return decode(x, har, g)

    return record


def _return_freed_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's malloc_trim; elsewhere nothing to do)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:
        pass


@functools.lru_cache(maxsize=4)
def _session(path: str, threads: int) -> Int8Decoder:
    """One ONNX Runtime session per cached graph and thread count (a new stream reuses it)."""
    return Int8Decoder(Path(path), threads)


def calibration_feeds(converter: VoiceConverter, settings: StreamSettings) -> list[Feed]:
    """Decoder inputs of the built-in test signal streamed with neutral settings (no transpose, no index).

    pm pitch and the stream's block and context sizes; the float32 decoder decodes as usual.
    """
    from dataclasses import replace

    from infer_pack.realtime import StreamingConverter, convert_stream
    from infer_pack.stream_params import SILENCE_OFF_DB
    from infer_pack.synthetic import SAMPLE_RATE, synthetic_speech

    neutral = replace(settings.validated(), preset="as-set", encoder_int8=False, decoder_int8=False, deterministic=True, f0_method="pm", pitch_semitones=0.0,
                      formant_semitones=0.0, index_rate=0.0, silence_threshold_db=SILENCE_OFF_DB, match="ours")  # fmt: skip
    stream = StreamingConverter(converter, neutral, input_rate=SAMPLE_RATE)
    feeds: list[Feed] = []
    stream.decode = recording_decoder(stream.decode, feeds)
    convert_stream(stream, synthetic_speech(CALIBRATION_SECONDS, seed=0))
    return feeds


def stream_decoder(converter: VoiceConverter, settings: StreamSettings) -> DecodeFn:
    """The decode function a stream uses: the voice's float32 decoder, or its int8 graph (`decoder_int8`)."""
    import torch

    net = converter.synthesizer
    if not settings.decoder_int8:
        return net.dec.decode
    problem = int8_decoder_problem(net)
    if problem is not None:  # the fast preset on a GPU: the float decoder is fast there
        log.info("%s; decoding in float", problem)
        return net.dec.decode
    path = int8_decoder_path(net)
    if not path.is_file():
        log.info("preparing the int8 decoder of this voice (once; cached in %s)", path.parent)
        quantize_decoder(net, calibration_feeds(converter, settings), path)
        _return_freed_memory()  # calibration's buffers (about 200 MB) would otherwise stay with the process
    return _session(str(path), torch.get_num_threads())
