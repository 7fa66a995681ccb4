"""World data sets: stream determinism, write -> read round trip, memory mapping, validation.

Runs against a tiny fake world with FaceWorld's API (description, config, sample_params, render)
so these tests stay fast; tests/test_data_world_real.py repeats the round trip with the real world.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from facefactors.data.batching import missing_positive_pairs
from facefactors.data.collate import collate
from facefactors.data.description import DatasetDescription, Factor
from facefactors.data.world import WorldArrayDataset, WorldStream, write_world_set
from facefactors.utils.errors import DataError, UserError


@dataclass
class FakeConfig:
    seed: int = 3
    image_size: int = 8
    yaw_buckets: tuple = (-30.0, 0.0, 30.0)

    def split_sizes(self):
        return {"train": 20, "val": 15, "test": 15}


@dataclass
class FakeParams:
    index: torch.Tensor
    identity: torch.Tensor


@dataclass
class FakeBatch:
    image: torch.Tensor
    labels: dict = field(default_factory=dict)
    params: object = None


class FakeWorld:
    """Sample i: identity i // images_per_identity (or i % 5), pixels a hash of (seed, split, i)."""

    def __init__(self, seed=3):
        self.config = FakeConfig(seed=seed)
        self.description = DatasetDescription(
            "fake",
            (
                Factor("identity", class_names=tuple(f"id{i}" for i in range(50)), group="identity"),
                Factor("expression", class_names=("neutral", "smile", "anger")),
                Factor("yaw", "continuous", group="pose"),
            ),
        )

    def sample_params(self, indices, split="train", identities=None):
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        ident = torch.as_tensor(np.asarray(identities), dtype=torch.long) if identities is not None else idx % 5
        offset = {"train": 0, "val": 20, "test": 35}[split]
        return FakeParams(index=idx, identity=ident + offset)

    def render(self, params, image_size=None, ground_truth=False):
        s = image_size or self.config.image_size
        g = torch.Generator().manual_seed(self.config.seed)
        base = torch.rand(3, s, s, generator=g)
        idx = params.index.double()
        image = (base[None] + torch.frac(idx * 0.6180339887)[:, None, None, None].float()) % 1.0
        labels = {
            "identity": params.identity.clone(),
            "expression": params.index % 3,
            "yaw": (params.index.float() * 0.37) % 60 - 30,
        }
        out = FakeBatch(image=image, labels=labels, params=params)
        if ground_truth:
            out.landmarks = torch.zeros(len(idx), 68, 2)
        return out


def test_stream_batches_follow_convention_and_are_deterministic():
    w = FakeWorld()
    s = WorldStream(w, "train", batch_size=4)
    it = iter(s)
    b0, b1 = next(it), next(it)
    assert b0["image"].shape == (4, 3, 8, 8) and b0["index"].tolist() == [0, 1, 2, 3]
    assert b1["index"].tolist() == [4, 5, 6, 7]
    assert set(b0["labels"]) == {"identity", "expression", "yaw"} and b0["labels"]["identity"].dtype == torch.long
    again = next(iter(WorldStream(w, "train", batch_size=4)))
    assert torch.equal(again["image"], b0["image"])
    other = next(iter(WorldStream(w, "train", batch_size=4, start=1000)))
    assert not torch.equal(other["image"], b0["image"])
    resumed = next(iter(WorldStream(w, "train", batch_size=4, start_step=1)))
    assert torch.equal(resumed["index"], b1["index"])


def test_stream_workers_and_ranks_get_disjoint_slices():
    w = FakeWorld()
    s = WorldStream(w, batch_size=3)
    seen = [s.indices(step, worker, 2) for step in range(3) for worker in range(2)]
    flat = np.concatenate(seen)
    assert len(set(flat.tolist())) == len(flat) and sorted(flat.tolist()) == list(range(18))
    r0 = WorldStream(w, batch_size=3, rank=0, num_ranks=2).indices(0)
    r1 = WorldStream(w, batch_size=3, rank=1, num_ranks=2).indices(0)
    assert not set(r0) & set(r1)


def test_stream_with_dataloader_workers_is_deterministic():
    w = FakeWorld()
    loader = WorldStream(w, batch_size=2, max_steps=3).loader(num_workers=2)
    indices = [b["index"].tolist() for b in loader]
    assert sorted(i for b in indices for i in b) == list(range(12))  # 2 workers x 3 steps x 2, no repeats
    again = [b["index"].tolist() for b in loader]
    assert again == indices


def test_stream_masks_unlabelled_factors_and_yields_ground_truth():
    w = FakeWorld()
    world_b = w.description.restrict(["expression"], name="b")
    b = next(iter(WorldStream(w, batch_size=2, description=world_b, ground_truth=True)))
    assert (b["labels"]["identity"] == -1).all() and torch.isnan(b["labels"]["yaw"]).all()
    assert b["labels"]["expression"].tolist() == [0, 1]
    assert b["landmarks"].shape == (2, 68, 2) and b["params"].index.tolist() == [0, 1]


def test_grouped_stream_has_identity_pairs_and_is_deterministic():
    w = FakeWorld()
    s = WorldStream(w, batch_size=7, samples_per_identity=3)
    it = iter(s)
    for _ in range(3):
        b = next(it)
        _, counts = np.unique(b["labels"]["identity"].numpy(), return_counts=True)
        assert len(counts) == 2 and counts.min() >= 2  # 7 = 3 + 4: the lone leftover joined a group
        assert missing_positive_pairs({"identity": b["labels"]["identity"]}) == []
    again = next(iter(WorldStream(w, batch_size=7, samples_per_identity=3)))
    first = next(iter(s))
    assert torch.equal(again["labels"]["identity"], first["labels"]["identity"])
    with pytest.raises(UserError, match="samples_per_identity must be in"):
        WorldStream(w, batch_size=4, samples_per_identity=1)


def test_write_read_round_trip(tmp_path):
    w = FakeWorld()
    out = write_world_set(w, tmp_path / "set", split="val", num_identities=3, images_per_identity=4, chunk_size=5, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["images.npy", "labels.csv", "labels.yaml", "world.json"]
    ds = WorldArrayDataset(out)
    assert len(ds) == 12 and isinstance(ds.images, np.memmap)
    ref = w.render(w.sample_params(np.arange(12), "val", identities=np.arange(12) // 4))
    want = ref.image.clamp(0, 1).mul(255).round().to(torch.uint8)
    got = torch.stack([ds[i]["image"] for i in range(12)])
    assert torch.equal(got.mul(255).round().to(torch.uint8), want)  # images identical
    for name, v in ref.labels.items():
        np.testing.assert_array_equal(ds.labels[name], v.numpy())  # labels identical (floats bit-exact)
    meta = json.loads((out / "world.json").read_text())
    assert meta["split"] == "val" and meta["world"]["seed"] == 3 and meta["identity_ranges"] == [[20, 22]]
    assert ds.description.names == w.description.names and ds.description.image_size == 8
    b = collate(ds.__getitems__([3, 1]))
    assert b["index"].tolist() == [3, 1] and torch.equal(b["image"][0], ds[3]["image"])


def test_write_restricted_description_leaves_cells_empty(tmp_path):
    w = FakeWorld()
    desc = w.description.restrict(["identity", "yaw"], name="a")
    out = write_world_set(w, tmp_path / "a", num_identities=2, images_per_identity=2, description=desc, progress=False)
    assert (out / "labels.csv").read_text().splitlines()[0] == "index,identity,yaw"
    ds = WorldArrayDataset(out)
    assert not ds.description.is_labelled("expression") and (ds.labels["expression"] == -1).all()
    assert not math.isnan(ds.labels["yaw"][0])


def test_refuses_to_overwrite(tmp_path):
    w = FakeWorld()
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="folder is not empty"):
        write_world_set(w, tmp_path / "x", num_identities=1, images_per_identity=2, progress=False)
    write_world_set(w, tmp_path / "x", num_identities=1, images_per_identity=2, progress=False, overwrite=True)
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"
    assert len(WorldArrayDataset(tmp_path / "x")) == 2


@pytest.fixture
def written(tmp_path):
    return write_world_set(FakeWorld(), tmp_path / "s", num_identities=2, images_per_identity=3, progress=False)


def test_validation_missing_world_json(written):
    (written / "world.json").unlink()
    with pytest.raises(DataError, match="world.json: missing"):
        WorldArrayDataset(written)


def test_validation_bad_array(written):
    np.save(written / "images.npy", np.zeros((6, 8, 8), dtype=np.uint8))
    with pytest.raises(DataError, match=r"images.npy: expected uint8 \(N, H, W, 3\)"):
        WorldArrayDataset(written)
    np.save(written / "images.npy", np.zeros((5, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(DataError, match="holds 5 images of 8x8 but world.json says 6"):
        WorldArrayDataset(written)
    (written / "images.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match="images.npy: not a readable .npy"):
        WorldArrayDataset(written)


def test_validation_labels_length(written):
    lines = (written / "labels.csv").read_text().splitlines()
    (written / "labels.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match="labels.csv: has 5 rows but images.npy holds 6"):
        WorldArrayDataset(written)
