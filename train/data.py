"""Training data: one item per filelist line, RVC's collate, and the length-bucket sampler.

Items follow RVC's `TextAudioLoaderMultiNSFsid` / `TextAudioLoader`: float32 audio at the model
rate (not rescaled), content features repeated x2 in time (50 Hz -> 100 Hz) and capped at 900
frames, coarse and fine pitch cut to the same frame count, everything cut to the shortest.
The linear spectrogram is cached beside the wav under a name that carries the epsilon mode and
STFT sizes (`train.experiment.spec_cache_path`), and it is recomputed when the wav is newer than
the cache, so a cache can never be silently stale (RVC's cache name records neither).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from infer_pack.errors import AudioLoadError, ExperimentError
from infer_pack.torchio import torch_save_atomic
from train.experiment import FilelistEntry, load_npy, spec_cache_path
from train.mel import MelTransform

MAX_FEATURE_FRAMES = 900  # frames at 100 Hz kept per item (RVC's cap, 9 s)
BUCKET_BOUNDARIES: tuple[int, ...] = (100, 200, 300, 400, 500, 600, 700, 800, 900)


@dataclass
class Sample:
    spec: torch.Tensor  # [F, frames]
    wave: torch.Tensor  # [1, samples]
    phone: torch.Tensor  # [frames, content_dim]
    pitch: torch.Tensor | None  # [frames] int64
    pitchf: torch.Tensor | None  # [frames] float32 Hz
    speaker_id: int


@dataclass
class Batch:
    """A padded batch, longest spectrogram first."""

    phone: torch.Tensor  # [B, T, content_dim]
    phone_lengths: torch.Tensor  # [B]
    pitch: torch.Tensor | None  # [B, T] int64
    pitchf: torch.Tensor | None  # [B, T] float32
    spec: torch.Tensor  # [B, F, T]
    spec_lengths: torch.Tensor  # [B]
    wave: torch.Tensor  # [B, 1, T * hop]
    wave_lengths: torch.Tensor  # [B]
    speaker_id: torch.Tensor  # [B] int64

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        moved: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            moved[f.name] = None if value is None else value.to(device, non_blocking=non_blocking)
        return Batch(**moved)

    def pin_memory(self) -> Batch:
        pinned: dict[str, Any] = {
            f.name: None if getattr(self, f.name) is None else getattr(self, f.name).pin_memory() for f in fields(self)
        }
        return Batch(**pinned)


def read_wav_float32(path: Path, expected_rate: int) -> np.ndarray:
    """The wav's samples as float32, unscaled (RVC's `load_wav_to_torch`), mono."""
    from scipy.io import wavfile

    try:
        rate, data = wavfile.read(path)
    except (OSError, ValueError) as exc:
        raise AudioLoadError(path, f"unreadable wav ({exc})", "run the preprocessing step again") from None
    if rate != expected_rate:
        raise AudioLoadError(
            path,
            f"sample rate {rate} Hz, but the model trains at {expected_rate} Hz",
            "preprocess the dataset again at the experiment's sample rate",
        )
    data = np.asarray(data, dtype=np.float32)
    if data.ndim > 1:
        data = data.mean(axis=1)
    return data


def bucket_length(wav_path: Path, hop_length: int) -> int:
    """RVC's size proxy used for bucketing (bytes // (3 * hop)), not a frame count."""
    return os.path.getsize(wav_path) // (3 * hop_length)


class TrainingDataset(torch.utils.data.Dataset[Sample]):
    def __init__(self, items: Sequence[FilelistEntry], mel: MelTransform, use_f0: bool) -> None:
        if not items:
            raise ExperimentError("the filelist has no usable lines; run feature extraction first")
        self.items = list(items)
        self.mel = mel
        self.use_f0 = use_f0
        for item in self.items:
            if use_f0 and (item.f0_coarse is None or item.f0_hz is None):
                raise ExperimentError(
                    f"{item.gt_wav}: the file list has no pitch files for an f0 model; run feature extraction again"
                )
        self.lengths = [bucket_length(item.gt_wav, mel.hop_length) for item in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def spec_cache_path(self, wav_path: Path) -> Path:
        """Where this dataset's spectrogram of `wav_path` is cached (named for its STFT settings)."""
        return spec_cache_path(wav_path, self.mel.cache_tag)

    def spectrogram(self, wav_path: Path, wave: torch.Tensor) -> torch.Tensor:
        """[F, frames], from the cache when it is at least as new as the wav."""
        cache = self.spec_cache_path(wav_path)
        try:
            if cache.stat().st_mtime_ns >= wav_path.stat().st_mtime_ns:
                spec = torch.load(cache, map_location="cpu", weights_only=True)
                if (
                    isinstance(spec, torch.Tensor)
                    and spec.dim() == 2
                    and spec.shape[1] == wave.shape[-1] // self.mel.hop_length
                ):
                    return spec
        except (OSError, RuntimeError, EOFError, ValueError):
            pass  # absent or damaged cache: recompute below
        spec = self.mel.spectrogram(wave).squeeze(0)  # [F, frames]
        try:
            torch_save_atomic(spec, cache)
        except OSError:
            pass  # a read-only dataset still trains, just without the cache
        return spec

    def __getitem__(self, index: int) -> Sample:
        item = self.items[index]
        audio = torch.from_numpy(read_wav_float32(item.gt_wav, self.mel.sample_rate)).unsqueeze(0)  # [1, samples]
        spec = self.spectrogram(item.gt_wav, audio)
        phone = np.repeat(load_npy(item.feature), 2, axis=0)[:MAX_FEATURE_FRAMES]  # [frames, D] at 100 Hz
        frames = min(phone.shape[0], spec.shape[1])
        pitch = pitchf = None
        if self.use_f0:
            assert item.f0_coarse is not None and item.f0_hz is not None
            coarse = load_npy(item.f0_coarse)
            hz = load_npy(item.f0_hz)
            frames = min(frames, coarse.shape[0], hz.shape[0])
            pitch = torch.from_numpy(coarse[:frames].astype(np.int64))
            pitchf = torch.from_numpy(hz[:frames].astype(np.float32))
        if spec.shape[1] != frames or phone.shape[0] != frames:
            spec = spec[:, :frames]
            audio = audio[:, : frames * self.mel.hop_length]
        return Sample(
            spec=spec,
            wave=audio,
            phone=torch.from_numpy(phone[:frames].astype(np.float32)),
            pitch=pitch,
            pitchf=pitchf,
            speaker_id=item.speaker_id,
        )


def collate(samples: Sequence[Sample]) -> Batch:
    """Zero-pad a list of samples; order by spectrogram length, longest first."""
    order = sorted(range(len(samples)), key=lambda i: samples[i].spec.shape[1], reverse=True)
    batch_size = len(samples)
    use_f0 = samples[0].pitch is not None
    max_spec = max(s.spec.shape[1] for s in samples)
    max_wave = max(s.wave.shape[1] for s in samples)
    max_phone = max(s.phone.shape[0] for s in samples)
    spec = torch.zeros(batch_size, samples[0].spec.shape[0], max_spec)
    wave = torch.zeros(batch_size, 1, max_wave)
    phone = torch.zeros(batch_size, max_phone, samples[0].phone.shape[1])
    pitch = torch.zeros(batch_size, max_phone, dtype=torch.long) if use_f0 else None
    pitchf = torch.zeros(batch_size, max_phone) if use_f0 else None
    spec_lengths = torch.zeros(batch_size, dtype=torch.long)
    wave_lengths = torch.zeros(batch_size, dtype=torch.long)
    phone_lengths = torch.zeros(batch_size, dtype=torch.long)
    speaker_id = torch.zeros(batch_size, dtype=torch.long)
    for row, index in enumerate(order):
        s = samples[index]
        spec[row, :, : s.spec.shape[1]] = s.spec
        spec_lengths[row] = s.spec.shape[1]
        wave[row, :, : s.wave.shape[1]] = s.wave
        wave_lengths[row] = s.wave.shape[1]
        phone[row, : s.phone.shape[0]] = s.phone
        phone_lengths[row] = s.phone.shape[0]
        if pitch is not None and pitchf is not None and s.pitch is not None and s.pitchf is not None:
            pitch[row, : s.pitch.shape[0]] = s.pitch
            pitchf[row, : s.pitchf.shape[0]] = s.pitchf
        speaker_id[row] = s.speaker_id
    return Batch(
        phone,
        phone_lengths,
        pitch,
        pitchf,
        spec,
        spec_lengths,
        wave,
        wave_lengths,
        speaker_id,
    )


class DistributedBucketSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of items of similar length, reshuffled every epoch, split across replicas.

    Item i goes to bucket k when boundaries[k] < length <= boundaries[k+1]; shorter or longer
    items are left out. Each bucket is padded (with its own shuffled indices) to a multiple of
    `num_replicas * batch_size`; every epoch a generator seeded with the epoch number shuffles
    the buckets and the final batch order. `batch_size` is the size of each emitted batch.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        boundaries: Sequence[int] = BUCKET_BOUNDARIES,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside 0..{num_replicas - 1}")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.epoch = 0
        self.start_batch = 0
        self.boundaries = list(boundaries)
        self.buckets, self.num_samples_per_bucket = self._create_buckets()
        self.total_size = sum(self.num_samples_per_bucket)
        self.num_samples = self.total_size // self.num_replicas

    def _bucket_of(self, length: int) -> int:
        for k in range(len(self.boundaries) - 1):
            if self.boundaries[k] < length <= self.boundaries[k + 1]:
                return k
        return -1

    def _create_buckets(self) -> tuple[list[list[int]], list[int]]:
        buckets: list[list[int]] = [[] for _ in range(len(self.boundaries) - 1)]
        for index, length in enumerate(self.lengths):
            k = self._bucket_of(length)
            if k != -1:
                buckets[k].append(index)
        for k in range(len(buckets) - 1, -1, -1):
            if not buckets[k]:
                buckets.pop(k)
                self.boundaries.pop(k + 1)
        per_step = self.num_replicas * self.batch_size
        padded = [len(b) + (per_step - len(b) % per_step) % per_step for b in buckets]
        return buckets, padded

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Epoch `epoch`'s order (the same for every run), yielded from its batch `start_batch` on
        (a run resumed mid-epoch skips the batches already trained, without loading them)."""
        self.epoch = epoch
        self.start_batch = start_batch

    def batches(self) -> list[list[int]]:
        generator = torch.Generator()
        generator.manual_seed(self.epoch)
        batches: list[list[int]] = []
        for bucket, padded_size in zip(self.buckets, self.num_samples_per_bucket):
            if self.shuffle:
                order = torch.randperm(len(bucket), generator=generator).tolist()
            else:
                order = list(range(len(bucket)))
            extra = padded_size - len(bucket)
            order = order + order * (extra // len(bucket)) + order[: extra % len(bucket)]
            mine = order[self.rank :: self.num_replicas]
            for j in range(len(mine) // self.batch_size):
                batches.append([bucket[i] for i in mine[j * self.batch_size : (j + 1) * self.batch_size]])
        if self.shuffle:
            permutation = torch.randperm(len(batches), generator=generator).tolist()
            batches = [batches[i] for i in permutation]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches()[self.start_batch :])

    def __len__(self) -> int:
        return self.num_samples // self.batch_size
