"""GroupedBatchSampler guarantees, positive-pair checks, and group-disjoint splits."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from facefactors.data.batching import (
    GroupedBatchSampler,
    missing_positive_pairs,
    positive_pair_counts,
    split_by_group,
)
from facefactors.data.description import DatasetDescription, Factor
from facefactors.utils.errors import DataError, UserError


def _labels(seed=0, n=400, ids=37):
    rng = np.random.default_rng(seed)
    identity = rng.integers(0, ids, n)
    identity[:5] = -1  # missing identity labels never enter a batch
    return {"identity": identity, "expression": rng.integers(0, 6, n)}


def test_every_batch_has_k_groups_with_pairs_and_epoch_covers_all():
    labels = _labels()
    s = GroupedBatchSampler(labels, "identity", groups_per_batch=4, samples_per_group=3, seed=1)
    n = len(s)  # the length of the coming epoch
    batches = list(s)
    assert len(batches) == n > 10
    for b in batches:
        assert len(b) == len(set(b)) <= 12  # distinct indices
        ids, counts = np.unique(labels["identity"][b], return_counts=True)
        assert len(ids) == 4 and counts.min() >= 2 and (ids >= 0).all()
    seen = set().union(*map(set, batches))
    eligible = set(np.flatnonzero(labels["identity"] >= 0).tolist())
    # at most k-1 groups' leftover chunks are dropped at the end of an epoch
    assert len(eligible - seen) <= 3 * 3 and seen <= eligible


def test_deterministic_per_seed_and_epoch():
    labels = _labels()
    a = GroupedBatchSampler(labels, "identity", 4, 3, seed=7)
    b = GroupedBatchSampler(labels, "identity", 4, 3, seed=7)
    e0a, e1a = list(a), list(a)  # the epoch advances after each pass
    e0b = list(b)
    assert e0a == e0b and e0a != e1a
    b.set_epoch(0)
    assert list(b) == e0a
    c = GroupedBatchSampler(labels, "identity", 4, 3, seed=8)
    assert list(c) != e0a


def test_replicas_split_the_epoch():
    labels = _labels()
    full = GroupedBatchSampler(labels, "identity", 4, 3, seed=3).plan(0)
    parts = [list(GroupedBatchSampler(labels, "identity", 4, 3, seed=3, num_replicas=2, rank=r)) for r in range(2)]
    assert len(parts[0]) == len(parts[1])
    assert parts[0] == full[0::2][: len(parts[0])] and parts[1] == full[1::2][: len(parts[1])]


def test_skip_goes_on_with_the_uninterrupted_stream_across_epochs():
    labels = _labels()
    full = GroupedBatchSampler(labels, "identity", 4, 3, seed=2)
    stream = list(full) + list(full) + list(full)  # three epochs
    per_epoch = len(stream) // 3
    for skipped in (0, 5, per_epoch - 1, per_epoch, per_epoch + 3, 2 * per_epoch + 1):
        s = GroupedBatchSampler(labels, "identity", 4, 3, seed=2)
        s.skip(skipped)
        resumed = list(s) + list(s)
        assert resumed[: len(stream) - skipped][:per_epoch] == stream[skipped:][:per_epoch], skipped
    s = GroupedBatchSampler(labels, "identity", 4, 3, seed=2)
    s.skip(3)
    s.skip(per_epoch)  # skips add up
    assert list(s)[0] == stream[per_epoch + 3]
    # by rank: each rank goes on with its own share
    part = GroupedBatchSampler(labels, "identity", 4, 3, seed=2, num_replicas=2, rank=1)
    whole = list(part)
    part = GroupedBatchSampler(labels, "identity", 4, 3, seed=2, num_replicas=2, rank=1)
    part.skip(4)
    assert list(part) == whole[4:]
    with pytest.raises(UserError, match="must be >= 0"):
        part.skip(-1)


def test_singletons_left_out_and_too_few_groups():
    labels = {"identity": np.array([0, 0, 1, 2, 2, 3])}
    with pytest.warns(UserWarning, match="2 identity groups have a single sample"):
        s = GroupedBatchSampler(labels, "identity", 2, 2)
    for b in s:
        assert set(labels["identity"][b]) == {0, 2}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match="only 2 identity groups"):
            GroupedBatchSampler(labels, "identity", 3, 2)
    with pytest.raises(UserError, match="samples_per_group must be >= 2"):
        GroupedBatchSampler(labels, "identity", 2, 1)
    with pytest.raises(UserError, match="no labels for 'person'"):
        GroupedBatchSampler(labels, "person", 2, 2)


def test_lone_leftover_is_padded_within_group():
    labels = {"identity": np.array([0] * 7 + [1] * 7)}  # 7 = 3 + 3 + 1 with m = 3
    for b in GroupedBatchSampler(labels, "identity", 2, 3, seed=0):
        _, counts = np.unique(labels["identity"][b], return_counts=True)
        assert counts.min() >= 2 and len(b) == len(set(b))


def test_works_as_dataloader_batch_sampler():
    labels = _labels(n=60, ids=6)
    ds = torch.utils.data.TensorDataset(torch.arange(60))
    s = GroupedBatchSampler(labels, "identity", 2, 4)
    for (x,) in torch.utils.data.DataLoader(ds, batch_sampler=s):
        assert missing_positive_pairs({"identity": labels["identity"][x.numpy()]}) == []


def test_positive_pair_helper():
    desc = DatasetDescription(
        "t",
        (Factor("identity", class_names=("a", "b", "c")), Factor("expression", class_names=("n", "s")), Factor("age_value", "continuous")),
        labelled=("identity", "expression", "age_value"),
    )
    batch = {
        "identity": torch.tensor([0, 0, 1, 2]),
        "expression": torch.tensor([0, 1, -1, -1]),  # missing labels never pair
        "age_value": torch.tensor([1.0, 1.0, 2.0, 3.0]),
    }
    assert positive_pair_counts(batch, desc) == {"identity": 1, "expression": 0}
    assert missing_positive_pairs(batch, desc) == ["expression"]
    batch["expression"] = torch.tensor([1, 1, -1, -1])
    assert missing_positive_pairs(batch, desc) == []


def test_split_by_group_is_disjoint_and_deterministic():
    labels = _labels(n=500, ids=50)
    with pytest.warns(UserWarning, match="5 samples have no 'identity' label"):
        sp = split_by_group(labels, "identity", {"train": 0.7, "val": 0.1, "test": 0.2}, seed=4)
    ids = {k: set(labels["identity"][v]) for k, v in sp.items()}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    assert sum(len(v) for v in ids.values()) == len(set(labels["identity"][labels["identity"] >= 0]))
    assert (len(ids["train"]), len(ids["val"]), len(ids["test"])) == (35, 5, 10)
    assert sum(len(v) for v in sp.values()) == 495
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = split_by_group(labels, "identity", {"train": 0.7, "val": 0.1, "test": 0.2}, seed=4)
        other = split_by_group(labels, "identity", {"train": 0.7, "val": 0.1, "test": 0.2}, seed=5)
    assert all(np.array_equal(sp[k], again[k]) for k in sp)
    assert not all(np.array_equal(sp[k], other[k]) for k in sp)


def test_split_small_fraction_still_gets_a_group():
    labels = {"identity": np.repeat(np.arange(5), 3)}
    sp = split_by_group(labels, "identity", (0.98, 0.01, 0.01))
    assert all(len(v) > 0 for v in sp.values())
    with pytest.raises(DataError, match="only 2 distinct"):
        split_by_group({"identity": np.array([0, 1])}, "identity", (0.5, 0.3, 0.2))
