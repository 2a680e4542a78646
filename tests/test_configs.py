from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import reference_file

from configs import SAMPLE_RATE_TAGS, VERSIONS, config_file, load_config


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("tag", SAMPLE_RATE_TAGS)
def test_configs_equal_rvc(reference: Path, version: str, tag: str) -> None:
    ref = json.loads(reference_file(reference, "train/train_configs.json").read_text())[f"{version}_{tag}"]
    cfg = load_config(version, tag)  # type: ignore[arg-type]
    assert cfg.source_file.as_posix().endswith(ref["config_file"])
    ours = json.loads(config_file(version, tag).read_text())  # type: ignore[arg-type]
    for section in ("train", "data", "model"):
        assert ours[section] == ref[section], section
    assert cfg.spec_channels == ref["derived"]["spec_channels"]
    assert cfg.segment_frames == ref["derived"]["segment_frames"]
    assert cfg.content_dim == ref["derived"]["content_dim"]


def test_unknown_version_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown model version"):
        config_file("v3", "40k")  # type: ignore[arg-type]
