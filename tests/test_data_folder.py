"""ImageFolderDataset + labels.csv/labels.yaml: conventions and one test per bad-input case."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from facefactors.data.collate import collate
from facefactors.data.folder import ImageFolderDataset
from facefactors.utils.errors import DataError

YAML = """\
name: toy
factors:
  expression:
    kind: categorical
    classes: [neutral, smile, anger]
  person:
    kind: categorical
    classes: auto
    group: identity
  age_value:
    kind: continuous
    group: identity
"""


def _img(path, value, size=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.zeros((size, size, 3), dtype=np.uint8)
    a[..., 0] = value
    a[0, -1] = (1, 2, 3)  # asymmetric marker
    Image.fromarray(a).save(path)


@pytest.fixture
def folder(tmp_path):
    _img(tmp_path / "alice" / "1.png", 10)
    _img(tmp_path / "alice" / "2.png", 20)
    _img(tmp_path / "bob" / "1.png", 30)
    (tmp_path / "labels.csv").write_text(
        "file,expression,person,age_value\n"
        "alice/1.png,smile,alice,31.5\n"
        "alice/2.png,,alice,\n"
        "bob/1.png,anger,bob,-2e-1\n"
    )
    (tmp_path / "labels.yaml").write_text(YAML)
    return tmp_path


def test_labels_and_missing_cells(folder):
    ds = ImageFolderDataset(folder, image_size=8)
    assert len(ds) == 3
    d = ds.description
    assert d.name == "toy" and d.names == ["expression", "person", "age_value"]
    assert d["person"].class_names == ("alice", "bob") and d["person"].group == "identity"
    assert d["age_value"].kind == "continuous"
    np.testing.assert_array_equal(ds.labels["expression"], [1, -1, 2])  # missing -> -1
    np.testing.assert_array_equal(ds.labels["person"], [0, 0, 1])
    assert ds.labels["age_value"][0] == np.float32(31.5) and math.isnan(ds.labels["age_value"][1])
    item = ds[2]
    assert item["image"].shape == (3, 8, 8) and item["image"].dtype == torch.float32
    assert abs(item["image"][0, 4, 4].item() - 30 / 255) < 1e-6
    assert item["image"][:, 0, -1].tolist() == pytest.approx([1 / 255, 2 / 255, 3 / 255])
    assert item["labels"]["expression"].dtype == torch.long and item["labels"]["expression"].item() == 2
    assert item["labels"]["age_value"].dtype == torch.float32
    assert item["index"].item() == 2


def test_collate_batches_follow_shared_convention(folder):
    ds = ImageFolderDataset(folder, image_size=8)
    b = collate([ds[i] for i in range(3)])
    assert b["image"].shape == (3, 3, 8, 8)
    assert b["labels"]["expression"].tolist() == [1, -1, 2]
    assert torch.isnan(b["labels"]["age_value"][1])
    assert b["index"].tolist() == [0, 1, 2]
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate)
    first = next(iter(loader))
    assert first["image"].shape == (2, 3, 8, 8) and set(first["labels"]) == set(ds.description.names)


def test_unlabelled_folder_is_allowed(tmp_path):
    _img(tmp_path / "a.png", 1)
    _img(tmp_path / "deep" / "er" / "b.jpg", 2)
    _img(tmp_path / ".hidden" / "c.png", 3)
    ds = ImageFolderDataset(tmp_path, image_size=8)
    assert ds.files == ["a.png", "deep/er/b.jpg"]
    assert ds.description.factors == () and ds[1]["labels"] == {}


def test_cache_returns_same_image(folder):
    ds = ImageFolderDataset(folder, image_size=8, cache=True)
    x = ds[0]["image"]
    (folder / "alice" / "1.png").unlink()  # served from the cache now
    assert torch.equal(ds[0]["image"], x)


def test_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="no images found"):
        ImageFolderDataset(tmp_path)
    with pytest.raises(DataError, match="not a folder"):
        ImageFolderDataset(tmp_path / "nope")


def test_explicit_labels_file_missing(folder):
    with pytest.raises(DataError, match="other.csv: labels file not found"):
        ImageFolderDataset(folder, labels="other.csv")


def test_yaml_without_csv_is_an_error(folder):
    (folder / "labels.csv").unlink()
    with pytest.raises(DataError, match="labels.csv: labels file not found"):
        ImageFolderDataset(folder)


def test_no_file_column(folder):
    (folder / "labels.csv").write_text("path,expression\nalice/1.png,smile\n")
    with pytest.raises(DataError, match="labels.csv: no 'file' column"):
        ImageFolderDataset(folder)


def test_ragged_row(folder):
    (folder / "labels.csv").write_text("file,expression,person,age_value\nalice/1.png,smile,alice\n")
    with pytest.raises(DataError, match="labels.csv: line 2 has 3 cells but the header has 4"):
        ImageFolderDataset(folder)


def test_duplicate_file(folder):
    (folder / "labels.csv").write_text("file,expression,person,age_value\nalice/1.png,smile,alice,1\nalice/1.png,smile,alice,1\n")
    with pytest.raises(DataError, match="'alice/1.png' is listed twice \\(lines 2 and 3\\)"):
        ImageFolderDataset(folder)


def test_listed_file_missing_on_disk(folder):
    (folder / "labels.csv").write_text("file,expression,person,age_value\nalice/1.png,smile,alice,1\ncarol/9.png,smile,alice,1\n")
    with pytest.raises(DataError, match="1 listed files are not images.*carol/9.png"):
        ImageFolderDataset(folder)


def test_unlisted_images_warn_and_skip(folder):
    (folder / "labels.csv").write_text("file,expression,person,age_value\n./alice/1.png,smile,alice,1\n")
    with pytest.warns(UserWarning, match="2 images .* are not in the table and are skipped"):
        ds = ImageFolderDataset(folder)
    assert ds.files == ["alice/1.png"]


def test_yaml_missing(folder):
    (folder / "labels.yaml").unlink()
    with pytest.raises(DataError, match="labels.yaml: missing"):
        ImageFolderDataset(folder)


def test_yaml_malformed(folder):
    (folder / "labels.yaml").write_text("factors: [unclosed\n")
    with pytest.raises(DataError, match="labels.yaml: not valid YAML"):
        ImageFolderDataset(folder)
    (folder / "labels.yaml").write_text("- just a list\n")
    with pytest.raises(DataError, match="labels.yaml: expected a mapping with a 'factors:'"):
        ImageFolderDataset(folder)
    (folder / "labels.yaml").write_text("factors:\n  expression: {kind: ordinal}\n")
    with pytest.raises(DataError, match="kind 'ordinal'"):
        ImageFolderDataset(folder)
    (folder / "labels.yaml").write_text("factors:\n  expression: {kind: categorical}\n")
    with pytest.raises(DataError, match="needs 'classes"):
        ImageFolderDataset(folder)


def test_column_not_declared(folder):
    (folder / "labels.yaml").write_text(YAML.replace("  age_value:\n    kind: continuous\n    group: identity\n", ""))
    with pytest.raises(DataError, match=r"columns \['age_value'\] of labels.csv are not declared"):
        ImageFolderDataset(folder)


def test_declared_but_absent(folder):
    (folder / "labels.yaml").write_text(YAML + "  lighting:\n    kind: categorical\n    classes: [a, b]\n")
    with pytest.raises(DataError, match=r"factors \['lighting'\] are declared but labels.csv has no such column"):
        ImageFolderDataset(folder)


def test_declared_unlabelled_factor_is_all_missing(folder):
    (folder / "labels.yaml").write_text(YAML + "  lighting:\n    kind: categorical\n    classes: [a, b]\n    labelled: false\n")
    ds = ImageFolderDataset(folder, image_size=8)
    assert "lighting" in ds.description and not ds.description.is_labelled("lighting")
    assert ds.description.is_labelled("expression")
    assert (ds.labels["lighting"] == -1).all() and ds[0]["labels"]["lighting"].item() == -1


def test_unknown_categorical_value(folder):
    (folder / "labels.csv").write_text("file,expression,person,age_value\nalice/1.png,happy,alice,1\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match=r"line 2, column 'expression': unknown value 'happy' \(allowed: neutral, smile, anger\)"):
            ImageFolderDataset(folder)


def test_non_numeric_continuous_value(folder):
    (folder / "labels.csv").write_text("file,expression,person,age_value\nalice/1.png,smile,alice,thirty\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match=r"line 2, column 'age_value': 'thirty' is not a number"):
            ImageFolderDataset(folder)


def test_wrong_size_resize_or_error(folder):
    _img(folder / "alice" / "1.png", 10, size=12)
    with pytest.warns(UserWarning, match=r"alice/1.png: image 12x12 centre-cropped and resized to 8x8"):
        assert ImageFolderDataset(folder, image_size=8)[0]["image"].shape == (3, 8, 8)
    ds = ImageFolderDataset(folder, image_size=8, on_wrong_size="error")
    with pytest.raises(DataError, match=r"alice/1.png: image is 12x12 \(WxH\), expected 8x8"):
        ds[0]
    ds[1]  # the right-sized ones still load


def test_check_lists_every_bad_file(folder):
    (folder / "bob" / "1.png").write_bytes(b"\x89PNG broken")
    problems = ImageFolderDataset(folder, image_size=8).check(progress=False)
    assert len(problems) == 1 and "bob/1.png: cannot decode" in problems[0]


def test_excel_style_csv_bom_crlf_quotes_backslashes(folder):
    (folder / "labels.csv").write_bytes(
        "\ufefffile,expression,person,age_value\r\n"
        '"alice\\1.png", smile ,alice,1\r\n'
        "\r\n"
        "bob/1.png,anger,bob,2\r\n".encode("utf-8")
    )
    with pytest.warns(UserWarning, match="1 images .* not in the table"):
        ds = ImageFolderDataset(folder, image_size=8)
    assert ds.files == ["alice/1.png", "bob/1.png"]
    np.testing.assert_array_equal(ds.labels["expression"], [1, 2])
