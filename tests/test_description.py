"""The dataset description: label conventions, labelled subsets, serialisation."""

import numpy as np
import pytest

from facefactors.data.description import DatasetDescription, Factor


def make(labelled=None):
    factors = (
        Factor("identity", "categorical", ("a", "b", "c")),
        Factor("expression", "categorical", ("neutral", "smile")),
        Factor("yaw", "continuous"),
    )
    return DatasetDescription("toy", factors, labelled, image_size=32)


def test_none_means_all_labelled_and_empty_means_none():
    assert make().labelled == ("identity", "expression", "yaw")
    assert make(()).labelled == ()
    assert make(("expression",)).labelled_factors == [make()["expression"]]


def test_lookups_and_errors():
    d = make()
    assert d["identity"].num_classes == 3 and d["yaw"].num_classes == 0
    assert "yaw" in d and "age" not in d
    with pytest.raises(KeyError, match="no factor 'age'"):
        d["age"]
    with pytest.raises(ValueError, match="not among the factors"):
        make(("age",))
    with pytest.raises(ValueError, match="at least 2 class names"):
        Factor("x", "categorical", ("only",))
    with pytest.raises(ValueError, match="duplicate factor"):
        DatasetDescription("dup", (Factor("a", "continuous"), Factor("a", "continuous")))


def test_missing_mask_follows_the_conventions():
    d = make()
    np.testing.assert_array_equal(d.missing_mask("identity", np.array([0, -1, 2])), [False, True, False])
    np.testing.assert_array_equal(d.missing_mask("yaw", np.array([0.5, np.nan])), [False, True])


def test_round_trip_keeps_labelled_subsets(tmp_path):
    for labelled in (None, (), ("identity", "yaw")):
        d = make(labelled)
        d.save(tmp_path / "d.json")
        assert DatasetDescription.load(tmp_path / "d.json") == d


def test_restrict_and_union():
    a = make().restrict(("identity", "expression"), name="A")
    b = DatasetDescription("B", (Factor("age", "continuous"),))
    u = a.union(b, "AB")
    assert u.names == ["identity", "expression", "yaw", "age"]
    assert u.labelled == ("identity", "expression", "age")


def test_bad_file_is_named(tmp_path):
    bad = tmp_path / "desc.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="desc.json: not a valid data set description"):
        DatasetDescription.load(bad)
