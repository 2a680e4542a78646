"""The length-bucket sampler reproduces RVC's exact batches and splits work across replicas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import reference_file

from train.data import BUCKET_BOUNDARIES, DistributedBucketSampler


@pytest.fixture(scope="module")
def case(reference: Path) -> dict:
    return json.loads(reference_file(reference, "train/ref_train_numeric.json").read_text())["sampler"]


def test_buckets_and_batches_match_rvc(case: dict) -> None:
    sampler = DistributedBucketSampler(case["lengths"], case["batch_size"], case["boundaries_in"])
    assert sampler.boundaries == case["boundaries_after"]
    assert sampler.buckets == case["buckets"]
    assert sampler.num_samples_per_bucket == case["num_samples_per_bucket"]
    assert len(sampler) == case["len_batches"]
    for epoch in ("1", "2"):
        sampler.set_epoch(int(epoch))
        assert list(sampler) == case["epochs"][epoch]
    assert list(BUCKET_BOUNDARIES) == case["boundaries_in"]


def test_replicas_get_disjoint_halves_of_each_epoch(case: dict) -> None:
    lengths = case["lengths"]
    ranks = [DistributedBucketSampler(lengths, 2, num_replicas=2, rank=r) for r in range(2)]
    for sampler in ranks:
        sampler.set_epoch(3)
    batches = [list(s) for s in ranks]
    assert len(batches[0]) == len(batches[1]) == len(ranks[0])
    seen = [i for b in batches for batch in b for i in batch]
    kept = {i for i, n in enumerate(lengths) if 100 < n <= 900}
    assert set(seen) == kept  # every usable item once or more, nothing too short/long
    assert all(len(batch) == 2 for b in batches for batch in b)
