"""Typed training/model configurations, read from RVC's JSON files in this folder.

Which file serves which (version, sample rate) is RVC's rule: v1 files for every v1 model and
also for v2-40k (RVC has no v2/40k.json); v2 files for v2-32k and v2-48k.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Version = Literal["v1", "v2"]
SampleRateTag = Literal["32k", "40k", "48k"]

VERSIONS: tuple[Version, ...] = ("v1", "v2")
SAMPLE_RATE_TAGS: tuple[SampleRateTag, ...] = ("32k", "40k", "48k")
SAMPLE_RATE_HZ: dict[str, int] = {"32k": 32000, "40k": 40000, "48k": 48000}
CONTENT_DIM: dict[str, int] = {"v1": 256, "v2": 768}

CONFIG_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class TrainSection:
    log_interval: int
    seed: int
    epochs: int
    learning_rate: float
    betas: tuple[float, float]
    eps: float
    batch_size: int
    lr_decay: float
    segment_size: int  # samples at the model rate
    init_lr_ratio: float
    warmup_epochs: int
    c_mel: float
    c_kl: float


@dataclass(frozen=True)
class DataSection:
    max_wav_value: float
    sampling_rate: int  # Hz
    filter_length: int
    hop_length: int
    win_length: int
    n_mel_channels: int
    mel_fmin: float
    mel_fmax: float | None


@dataclass(frozen=True)
class ModelSection:
    inter_channels: int
    hidden_channels: int
    filter_channels: int
    n_heads: int
    n_layers: int
    kernel_size: int
    p_dropout: float
    resblock: str
    resblock_kernel_sizes: tuple[int, ...]
    resblock_dilation_sizes: tuple[tuple[int, ...], ...]
    upsample_rates: tuple[int, ...]
    upsample_initial_channel: int
    upsample_kernel_sizes: tuple[int, ...]
    use_spectral_norm: bool
    gin_channels: int
    spk_embed_dim: int


@dataclass(frozen=True)
class RVCConfig:
    """One of RVC's training configurations, plus the version it is used for."""

    version: Version
    sample_rate_tag: SampleRateTag
    train: TrainSection
    data: DataSection
    model: ModelSection
    source_file: Path

    @property
    def sample_rate(self) -> int:
        return self.data.sampling_rate

    @property
    def content_dim(self) -> int:
        return CONTENT_DIM[self.version]

    @property
    def spec_channels(self) -> int:
        return self.data.filter_length // 2 + 1

    @property
    def segment_frames(self) -> int:
        return self.train.segment_size // self.data.hop_length

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON layout RVC copies to logs/<exp>/config.json."""
        return json.loads(self.source_file.read_text(encoding="utf-8"))


def config_file(version: Version, sample_rate_tag: SampleRateTag) -> Path:
    if version not in VERSIONS:
        raise ValueError(f"unknown model version {version!r}; expected one of {VERSIONS}")
    if sample_rate_tag not in SAMPLE_RATE_TAGS:
        raise ValueError(f"unknown sample rate {sample_rate_tag!r}; expected one of {SAMPLE_RATE_TAGS}")
    folder = "v1" if version == "v1" or sample_rate_tag == "40k" else "v2"
    return CONFIG_DIR / folder / f"{sample_rate_tag}.json"


def _tuple(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuple(v) for v in value)
    return value


def parse_config(raw: dict[str, Any], version: Version, sample_rate_tag: SampleRateTag, source: Path) -> RVCConfig:
    train = dict(raw["train"])
    train["betas"] = tuple(train["betas"])
    model = {k: _tuple(v) for k, v in raw["model"].items()}
    train_fields = TrainSection.__dataclass_fields__
    data_fields = DataSection.__dataclass_fields__
    model_fields = ModelSection.__dataclass_fields__
    return RVCConfig(
        version=version,
        sample_rate_tag=sample_rate_tag,
        train=TrainSection(**{k: v for k, v in train.items() if k in train_fields}),
        data=DataSection(**{k: v for k, v in raw["data"].items() if k in data_fields}),
        model=ModelSection(**{k: v for k, v in model.items() if k in model_fields}),
        source_file=source,
    )


def load_config(version: Version, sample_rate_tag: SampleRateTag) -> RVCConfig:
    """The configuration RVC uses to train a `version` model at `sample_rate_tag`."""
    path = config_file(version, sample_rate_tag)
    return parse_config(json.loads(path.read_text(encoding="utf-8")), version, sample_rate_tag, path)


def sample_rate_tag_from_hz(sample_rate: int) -> SampleRateTag:
    for tag, hz in SAMPLE_RATE_HZ.items():
        if hz == sample_rate:
            return tag  # type: ignore[return-value]
    raise ValueError(f"unsupported model sample rate {sample_rate} Hz; expected 32000, 40000 or 48000")
