"""Attribute vectors by latent arithmetic: Delta z, class selection, missing labels, edits."""

import numpy as np
import pytest
import torch

from facefactors.data.description import DatasetDescription, Factor
from facefactors.edit.attribute_vectors import (
    apply_vector,
    attribute_grid,
    attribute_strip,
    attribute_vector,
    edit_images,
    split_by_attribute,
)
from facefactors.models.vae import VAE, VAEModelConfig
from facefactors.utils.errors import UserError

DESC = DatasetDescription(
    "toy",
    (
        Factor("eyeglasses", "categorical", ("no", "yes")),
        Factor("expression", "categorical", ("neutral", "smile", "sadness")),
        Factor("age_value", "continuous"),
        Factor("hat", "categorical", ("no", "yes")),
    ),
    labelled=("eyeglasses", "expression", "age_value"),
)


def test_delta_is_the_difference_of_class_means_and_ignores_missing():
    rng = np.random.default_rng(0)
    n, d = 400, 6
    glasses = rng.integers(0, 2, n)
    codes = rng.normal(size=(n, d)) * 0.1
    codes[:, 3] += 2.0 * glasses  # the attribute lives in dimension 3
    labels = glasses.copy()
    labels[:50] = -1  # missing labels...
    codes[:50] += 100.0  # ...with wild codes that must not enter either mean
    vec = attribute_vector(codes, DESC, "eyeglasses", labels)
    known = labels >= 0
    expected = codes[known & (labels == 1)].mean(0) - codes[known & (labels == 0)].mean(0)
    np.testing.assert_allclose(vec.delta, expected)
    assert vec.delta[3] == pytest.approx(2.0, abs=0.05) and np.abs(np.delete(vec.delta, 3)).max() < 0.05
    assert vec.n_with + vec.n_without == known.sum() and (vec.with_name, vec.without_name) == ("yes", "no")
    assert vec.to_dict()["norm"] == pytest.approx(np.linalg.norm(expected))


def test_categorical_with_and_without_classes():
    values = np.array([0, 1, 2, 1, 0, 2, -1])
    w, wo, wn, won = split_by_attribute(DESC, "expression", values, "smile")
    assert w.tolist() == [False, True, False, True, False, False, False]
    assert wo.tolist() == [True, False, True, False, True, True, False] and won == "not smile"
    w, wo, _, won = split_by_attribute(DESC, "expression", values, "smile", "neutral")
    assert wo.tolist() == [True, False, False, False, True, False, False] and won == "neutral"
    with pytest.raises(UserError, match="no class 'grin'"):
        split_by_attribute(DESC, "expression", values, "grin")


def test_continuous_attribute_splits_at_the_median():
    values = np.array([0.1, 0.9, 0.5, np.nan, 0.7, 0.2])
    w, wo, wn, _ = split_by_attribute(DESC, "age_value", values)
    assert w.tolist() == [False, True, False, False, True, False] and wo.tolist() == [True, False, True, False, False, True]
    assert wn == "> 0.5"


def test_clear_errors():
    codes = np.zeros((4, 2))
    with pytest.raises(UserError, match="not a factor"):
        attribute_vector(codes, DESC, "beard", np.zeros(4))
    with pytest.raises(UserError, match="not labelled"):
        attribute_vector(codes, DESC, "hat", np.zeros(4))
    with pytest.raises(UserError, match="need at least 2"):
        attribute_vector(codes, DESC, "eyeglasses", np.array([0, 0, 0, 1]))
    with pytest.raises(UserError, match="4 codes but 3 labels"):
        attribute_vector(codes, DESC, "eyeglasses", np.array([0, 1, 1]))


def test_apply_vector():
    z = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    out = apply_vector(z, np.array([1.0, -2.0]), [0.0, 0.5, 2.0])
    assert out.shape == (2, 3, 2)
    torch.testing.assert_close(out[:, 0], z)
    torch.testing.assert_close(out[1, 2], torch.tensor([4.0, -5.0]))


def test_edits_decode_the_shifted_codes():
    torch.manual_seed(0)
    model = VAE(VAEModelConfig(latent_dim=3, channels=(8, 8), hidden=16, image_size=16)).eval()
    x = torch.rand(2, 3, 16, 16)
    delta = torch.tensor([0.0, 3.0, 0.0])
    edited = edit_images(model, x, delta, [0.0, 1.0])
    assert edited.shape == (2, 2, 3, 16, 16)
    torch.testing.assert_close(edited[:, 0], model.reconstruct(x))  # alpha 0 = reconstruction
    mu, _ = model.encode(x)
    torch.testing.assert_close(edited[:, 1], torch.sigmoid(model.decode(mu + delta)))
    strip = attribute_strip(model, x, delta, [0.0, 1.0, 2.0])
    grid = attribute_grid(model, x, delta, [0.0, 1.0, 2.0])
    pad = 2
    assert strip.shape == (3, 16 + 2 * pad, 4 * (16 + pad) + pad)  # original + 3 alphas
    assert grid.shape == (3, 2 * (16 + pad) + pad, 4 * (16 + pad) + pad)
    # The first column of the grid is the original input, untouched.
    torch.testing.assert_close(grid[:, pad : pad + 16, pad : pad + 16], x[0])
