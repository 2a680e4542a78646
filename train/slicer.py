"""Cut a recording at its silences: RVC's slicer (same decisions, same cut points), in linear time.

RVC frames the signal with a window of `min(min_interval, 4 * hop)` samples every `hop` samples
(zero padding of half a window at both ends, like librosa's RMS), calls a frame silent when its RMS
is below the threshold, and cuts inside silent runs that are long enough, keeping at most
`max_sil_kept` of silence next to each cut. Here the RMS comes from a running sum of squares
(O(n) instead of O(n * window)) and the decision loop visits one silent run at a time instead of
every frame; the cut positions are the ones RVC's frame-by-frame loop produces.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SlicerSettings:
    """RVC's training-set defaults (preprocess step): -42 dB, 1.5 s clips, 0.4 s gaps, 15 ms hop, 0.5 s kept."""

    threshold_db: float = -42.0
    min_length_ms: int = 1500
    min_interval_ms: int = 400
    hop_ms: int = 15
    max_sil_kept_ms: int = 500


class Slicer:
    """Split mono audio at silences. Frame quantities are in hops (RVC's rounding)."""

    def __init__(self, sample_rate: int, settings: SlicerSettings = SlicerSettings()) -> None:
        s = settings
        if not s.min_length_ms >= s.min_interval_ms >= s.hop_ms:
            raise ValueError("slicer settings need min_length_ms >= min_interval_ms >= hop_ms")
        if not s.max_sil_kept_ms >= s.hop_ms:
            raise ValueError("slicer settings need max_sil_kept_ms >= hop_ms")
        min_interval_samples = sample_rate * s.min_interval_ms / 1000
        self.threshold = 10 ** (s.threshold_db / 20.0)  # linear RMS
        self.hop = round(sample_rate * s.hop_ms / 1000)
        self.win = min(round(min_interval_samples), 4 * self.hop)
        self.min_length = round(sample_rate * s.min_length_ms / 1000 / self.hop)  # frames
        self.min_interval = round(min_interval_samples / self.hop)  # frames
        self.max_sil_kept = round(sample_rate * s.max_sil_kept_ms / 1000 / self.hop)  # frames

    def rms(self, audio: np.ndarray) -> np.ndarray:
        """Frame RMS [frames]: window `win`, hop `hop`, zero padding win // 2 at both ends (librosa framing)."""
        half = self.win // 2
        n_frames = 1 + (audio.size + 2 * half - self.win) // self.hop
        padded = np.zeros(max(audio.size + 2 * half, (n_frames - 1) * self.hop + self.win), dtype=np.float64)
        padded[half : half + audio.size] = audio
        squares = np.square(padded)  # [T + win]
        if self.win % self.hop == 0:
            # Sums per hop-sized block, then per window of win/hop blocks. Unlike a running sum over
            # the whole file, each sum is exact relative to its own size, so the minima the cut
            # positions are chosen from (silence, often digital zeros) come out as in RVC.
            per_window = self.win // self.hop
            n_blocks = n_frames - 1 + per_window
            blocks = squares[: n_blocks * self.hop].reshape(n_blocks, self.hop).sum(axis=1)  # [n_blocks]
            window_sums = blocks[:n_frames].copy()
            for k in range(1, per_window):
                window_sums += blocks[k : k + n_frames]
            power = window_sums / self.win
        else:
            frames = np.lib.stride_tricks.sliding_window_view(squares, self.win)[:: self.hop][:n_frames]  # [F, win]
            power = frames.mean(axis=1)
        return np.sqrt(power)

    def silent_cuts(self, rms: np.ndarray) -> list[tuple[int, int]]:
        """Ranges of frames to remove, `(first, last)` per cut, in order (RVC's `sil_tags`)."""
        silent = rms < self.threshold
        total = rms.size
        # Runs of silent frames: [start, end) with end = the first loud frame after them (or total).
        edges = np.flatnonzero(np.diff(np.concatenate(([0], silent.view(np.int8), [0]))))
        runs = edges.reshape(-1, 2)
        tags: list[tuple[int, int]] = []
        clip_start = 0
        kept = self.max_sil_kept
        for silence_start, i in runs.tolist():
            if i >= total:
                # Trailing silence: RVC handles it after the loop.
                if total - silence_start >= self.min_interval:
                    silence_end = min(total, silence_start + kept)
                    pos = int(rms[silence_start : silence_end + 1].argmin()) + silence_start
                    tags.append((pos, total + 1))
                break
            is_leading = silence_start == 0 and i > kept
            needs_middle_cut = i - silence_start >= self.min_interval and i - clip_start >= self.min_length
            if not is_leading and not needs_middle_cut:
                continue
            if i - silence_start <= kept:
                pos = int(rms[silence_start : i + 1].argmin()) + silence_start
                tags.append((0, pos) if silence_start == 0 else (pos, pos))
                clip_start = pos
            elif i - silence_start <= kept * 2:
                pos = int(rms[i - kept : silence_start + kept + 1].argmin()) + i - kept
                pos_l = int(rms[silence_start : silence_start + kept + 1].argmin()) + silence_start
                pos_r = int(rms[i - kept : i + 1].argmin()) + i - kept
                if silence_start == 0:
                    tags.append((0, pos_r))
                    clip_start = pos_r
                else:
                    tags.append((min(pos_l, pos), max(pos_r, pos)))
                    clip_start = max(pos_r, pos)
            else:
                pos_l = int(rms[silence_start : silence_start + kept + 1].argmin()) + silence_start
                pos_r = int(rms[i - kept : i + 1].argmin()) + i - kept
                tags.append((0, pos_r) if silence_start == 0 else (pos_l, pos_r))
                clip_start = pos_r
        return tags

    def slice_ranges(self, audio: np.ndarray) -> list[tuple[int, int]]:
        """Sample ranges `[begin, end)` of the sounding parts of mono `audio` [T]."""
        n = int(audio.shape[0])
        # RVC compares the sample count with a frame count here; kept so short files behave the same.
        if n <= self.min_length:
            return [(0, n)]
        rms = self.rms(audio)
        tags = self.silent_cuts(rms)
        if not tags:
            return [(0, n)]
        total = rms.size
        frame_ranges: list[tuple[int, int]] = []
        if tags[0][0] > 0:
            frame_ranges.append((0, tags[0][0]))
        for (_, begin), (end, _) in itertools.pairwise(tags):
            frame_ranges.append((begin, end))
        if tags[-1][1] < total:
            frame_ranges.append((tags[-1][1], total))
        return [(begin * self.hop, min(n, end * self.hop)) for begin, end in frame_ranges]

    def slice(self, audio: np.ndarray) -> list[np.ndarray]:
        """The sounding parts of mono `audio` [T] as views, in order."""
        return [audio[begin:end] for begin, end in self.slice_ranges(audio)]
