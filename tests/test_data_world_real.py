"""The world data sets against the real FaceWorld (tiny sizes): stream determinism and the
write -> memory-mapped read round trip (images and labels identical)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facefactors.data.world import WorldArrayDataset, WorldStream, write_world_set

world_mod = pytest.importorskip("facefactors.world.world", reason="facefactors.world not importable yet")


@pytest.fixture(scope="module")
def world():
    from facefactors.world.config import WorldConfig

    return world_mod.FaceWorld(WorldConfig(seed=5, image_size=32))


def test_real_world_round_trip(world, tmp_path):
    out = write_world_set(world, tmp_path / "s", split="test", num_identities=2, images_per_identity=3, chunk_size=4, progress=False)
    ds = WorldArrayDataset(out)
    idx = np.arange(6)
    ref = world.render(world.sample_params(idx, split="test", identities=idx // 3))
    got = torch.stack([ds[i]["image"] for i in range(6)])
    assert torch.equal((got * 255).round().to(torch.uint8), (ref.image.clamp(0, 1) * 255).round().to(torch.uint8))
    for name in ds.description.names:
        np.testing.assert_array_equal(ds.labels[name], ref.labels[name].numpy(), err_msg=name)
    assert ds.labels["identity"].tolist() == [0, 0, 0, 1, 1, 1]
    # identity classes name the test split's global ids
    off = world.config.split_offset("test")
    assert ds.description["identity"].class_names[:2] == (str(off), str(off + 1))
    assert ds.split == "test" and ds.world_config["seed"] == 5


def test_real_world_stream_is_deterministic(world):
    a = next(iter(WorldStream(world, "train", batch_size=3)))
    b = next(iter(WorldStream(world, "train", batch_size=3)))
    assert a["image"].shape == (3, 3, 32, 32)
    assert torch.equal(a["image"], b["image"])
    assert all(torch.equal(a["labels"][k], b["labels"][k]) or torch.isnan(a["labels"][k]).all() for k in a["labels"])
    c = next(iter(WorldStream(world, "train", batch_size=3, start_step=1)))
    assert not torch.equal(a["image"], c["image"])
