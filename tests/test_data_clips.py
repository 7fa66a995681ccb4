"""ClipFolderDataset: frame order, windows, clip labels, and bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from facefactors.data.clips import ClipFolderDataset
from facefactors.data.collate import collate
from facefactors.utils.errors import DataError


def _frame(path, value, size=(6, 6)):
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.full((size[0], size[1], 3), value, dtype=np.uint8)
    Image.fromarray(a).save(path)


@pytest.fixture
def clips(tmp_path):
    # frame names need natural sorting: 2 before 10
    for n, v in [(1, 10), (2, 20), (10, 100)]:
        _frame(tmp_path / "clip_b" / f"f{n}.png", v)
    for n in range(5):
        _frame(tmp_path / "clip_a" / f"{n:03d}.png", 50 + n)
    return tmp_path


def test_whole_clips_in_natural_order(clips):
    ds = ClipFolderDataset(clips, image_size=6)
    assert ds.clip_names == ["clip_a", "clip_b"] and len(ds) == 2
    b = ds[1]
    assert b["image"].shape == (3, 3, 6, 6)
    vals = (b["image"][:, 0, 0, 0] * 255).round().tolist()
    assert vals == [10, 20, 100]
    assert ds.description.factors == ()


def test_windows_and_short_clips(clips):
    with pytest.warns(UserWarning, match="1 clips are shorter than clip_length=4"):
        ds = ClipFolderDataset(clips, image_size=6, clip_length=4, stride=1)
    assert len(ds) == 2  # clip_a (5 frames) gives windows at 0 and 1
    assert ds[1]["frames"].tolist() == [1, 2, 3, 4]
    assert (ds[1]["image"][:, 0, 0, 0] * 255).round().tolist() == [51, 52, 53, 54]
    batch = collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 4, 3, 6, 6)
    with pytest.raises(DataError, match="every clip is shorter"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ClipFolderDataset(clips, image_size=6, clip_length=9)


def test_collate_refuses_different_lengths(clips):
    ds = ClipFolderDataset(clips, image_size=6)
    with pytest.raises(DataError, match="different shapes in one batch"):
        collate([ds[0], ds[1]])


def test_clip_labels(clips):
    (clips / "labels.csv").write_text("clip,person\nclip_b,bob\nclip_a,\n")
    (clips / "labels.yaml").write_text("factors:\n  person: {kind: categorical, classes: [ann, bob], group: identity}\n")
    ds = ClipFolderDataset(clips, image_size=6, clip_length=2)
    np.testing.assert_array_equal(ds.labels["person"], [-1, -1, 1])  # clip_a: 2 windows, clip_b: 1
    assert ds[2]["labels"]["person"].item() == 1 and ds[2]["clip"].item() == 1
    (clips / "labels.csv").write_text("clip,person\nclip_b,bob\n")
    with pytest.raises(DataError, match=r"clip folders \['clip_a'\] have no row"):
        ClipFolderDataset(clips, image_size=6)
    (clips / "labels.csv").write_text("clip,person\nclip_b,bob\nclip_a,ann\nclip_z,ann\n")
    with pytest.raises(DataError, match=r"clips \['clip_z'\] are not sub-folders"):
        ClipFolderDataset(clips, image_size=6)


def test_empty_clip_and_no_clips(tmp_path):
    _frame(tmp_path / "loose.png", 1)
    with pytest.raises(DataError, match="no clip folders found .*loose images"):
        ClipFolderDataset(tmp_path)
    (tmp_path / "c0").mkdir()
    (tmp_path / "c0" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="c0: empty clip"):
        ClipFolderDataset(tmp_path)


def test_mixed_sizes_resized_or_rejected(clips):
    _frame(clips / "clip_b" / "f2.png", 20, size=(12, 12))
    ds = ClipFolderDataset(clips, image_size=6)
    with pytest.warns(UserWarning, match="f2.png: image 12x12 centre-cropped and resized"):
        x = ds[1]["image"]
    assert x.shape == (3, 3, 6, 6) and torch.allclose(x[1], torch.full_like(x[1], 20 / 255), atol=1 / 255)
    strict = ClipFolderDataset(clips, image_size=6, on_wrong_size="error")
    with pytest.raises(DataError, match="f2.png: image is 12x12"):
        strict[1]
