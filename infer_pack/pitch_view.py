"""What the pitch editor draws under the curve: a log-frequency spectrogram image and a waveform strip.

Both are on the f0 grid (frame k at k * 10 ms of 16 kHz input). The spectrogram's rows are spaced
evenly in semitones (MIDI note numbers `low_midi` .. `high_midi`, `ROWS_PER_SEMITONE` rows each,
row 0 at the top = highest note), so the editor's pitch axis and note names line up with it. Long
inputs get at most `MAX_COLUMNS` columns (every n-th frame), which keeps a 5-minute song's image
small; the browser stretches it along time.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000
HOP = 160
FFT_SIZE = 2048  # 128 ms: 7.8 Hz bins, enough to tell low harmonics apart
ROWS_PER_SEMITONE = 4
LOW_MIDI = 28  # E1, 41.2 Hz
HIGH_MIDI = 96  # C7, 2093 Hz
MAX_COLUMNS = 6000
FLOOR_DB = -80.0


def midi_to_hz(midi: np.ndarray | float) -> np.ndarray:
    return np.asarray(440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0))


@dataclass(frozen=True)
class SpectrogramImage:
    pixels: np.ndarray  # uint8 [rows, columns], 255 = loudest; row 0 = HIGH_MIDI
    frame_step: int  # column c shows frame c * frame_step
    low_midi: int
    high_midi: int


def log_spectrogram(audio_16k: np.ndarray, n_frames: int, *, low_midi: int = LOW_MIDI, high_midi: int = HIGH_MIDI,
                    max_columns: int = MAX_COLUMNS) -> SpectrogramImage:
    """dB magnitude (Hann window of FFT_SIZE centred on each shown frame) sampled at semitone-spaced rows."""
    audio = np.nan_to_num(np.asarray(audio_16k, dtype=np.float32))
    step = max(1, -(-n_frames // max_columns))
    frames = np.arange(0, n_frames, step)
    half = FFT_SIZE // 2
    padded = np.pad(audio, (half, half + FFT_SIZE))
    window = np.hanning(FFT_SIZE).astype(np.float32)
    rows = np.arange(high_midi * ROWS_PER_SEMITONE, low_midi * ROWS_PER_SEMITONE - 1, -1) / ROWS_PER_SEMITONE
    bins = midi_to_hz(rows) * FFT_SIZE / SAMPLE_RATE  # fractional FFT bin of each row
    below = np.floor(bins).astype(int)
    weight = (bins - below).astype(np.float32)[:, None]
    columns = np.empty((rows.size, frames.size), dtype=np.float32)  # [rows, columns] dB
    for begin in range(0, frames.size, 512):  # blocks of columns bound the memory
        starts = frames[begin : begin + 512] * HOP
        block = padded[starts[:, None] + np.arange(FFT_SIZE)[None, :]] * window  # [B, FFT]
        db = 20.0 * np.log10(np.abs(np.fft.rfft(block, axis=1)).T + 1e-6)  # [bins, B]
        columns[:, begin : begin + starts.size] = db[below] * (1 - weight) + db[below + 1] * weight
    top = float(columns.max()) if columns.size else 0.0
    scaled = np.clip((columns - top - FLOOR_DB) / -FLOOR_DB, 0.0, 1.0)
    return SpectrogramImage((scaled * 255).round().astype(np.uint8), step, low_midi, high_midi)


def waveform_peaks(audio_16k: np.ndarray, n_frames: int) -> np.ndarray:
    """Peak |sample| of each 10 ms frame (samples k*160 .. k*160+159), scaled so the loudest is 1. float32 [n_frames]."""
    audio = np.abs(np.nan_to_num(np.asarray(audio_16k, dtype=np.float32)))
    padded = np.pad(audio, (0, max(0, n_frames * HOP - audio.size)))[: n_frames * HOP]
    peaks = padded.reshape(n_frames, HOP).max(axis=1) if n_frames else np.zeros(0, np.float32)
    top = float(peaks.max()) if peaks.size else 0.0
    return (peaks / top).astype(np.float32) if top > 0 else peaks.astype(np.float32)


def png_bytes(gray: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG of `gray` (uint8 [rows, columns])."""
    image = np.ascontiguousarray(gray, dtype=np.uint8)
    height, width = image.shape
    raw = np.concatenate([np.zeros((height, 1), np.uint8), image], axis=1).tobytes()  # filter byte 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
