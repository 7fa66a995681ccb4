"""Latent traversals, grids, PNG output."""

import numpy as np
import pytest
import torch
from PIL import Image

from facefactors.edit.traversal import (
    decode,
    dimension_kl,
    encode,
    make_grid,
    save_png,
    traversal_grid,
    traverse,
)
from facefactors.models.vae import VAE, VAEModelConfig


@pytest.fixture
def model():
    torch.manual_seed(0)
    return VAE(VAEModelConfig(latent_dim=3, channels=(8, 8), hidden=16, image_size=16)).eval()


def test_make_grid_is_row_major_with_padding():
    images = torch.stack([torch.full((1, 2, 3), float(i) / 10) for i in range(5)])  # (5, 1, 2, 3): H != W
    grid = make_grid(images, nrow=3, pad=1, pad_value=1.0)
    assert grid.shape == (1, 2 * (2 + 1) + 1, 3 * (3 + 1) + 1)
    assert grid[0, 1, 1].item() == pytest.approx(0.0)  # image 0 top-left
    assert grid[0, 1, 1 + 2 * 4].item() == pytest.approx(0.2)  # image 2: first row, third column
    assert grid[0, 1 + 3, 1 + 4].item() == pytest.approx(0.4)  # image 4: second row, second column
    assert grid[0, 1 + 3, 1 + 2 * 4].item() == 1.0  # empty slot keeps the pad value


def test_save_png_round_trip(tmp_path):
    img = torch.zeros(3, 4, 5)
    img[0, 1, 3] = 1.0  # one red pixel at row 1, column 3
    path = save_png(img, tmp_path / "a" / "x.png")
    arr = np.asarray(Image.open(path))
    assert arr.shape == (4, 5, 3) and arr[1, 3].tolist() == [255, 0, 0] and arr.sum() == 255


def test_traverse_sets_one_dimension_at_a_time(model):
    z = torch.tensor([0.5, -1.0, 2.0])
    values = torch.tensor([-2.0, 0.0, 2.0])
    imgs = traverse(model, z, values, dims=[2, 0])
    assert imgs.shape == (2, 3, 3, 16, 16)
    for row, d in enumerate([2, 0]):
        for k, v in enumerate(values):
            code = z.clone()
            code[d] = v
            torch.testing.assert_close(imgs[row, k], decode(model, code[None])[0])


def test_traversal_grid_orders_rows_by_kl(model):
    x = torch.rand(1, 3, 16, 16)
    kl = torch.tensor([0.1, 5.0, 1.0])
    grid, order = traversal_grid(model, x, limit=2.0, steps=4, order_by_kl=kl)
    assert order == [1, 2, 0]
    assert grid.shape == (3, 3 * 18 + 2, 4 * 18 + 2)
    z = encode(model, x)[0]
    first = traverse(model, z, torch.linspace(-2, 2, 4), [1])[0, 0]
    torch.testing.assert_close(grid[:, 2:18, 2:18], first)
    assert dimension_kl(model, torch.rand(4, 3, 16, 16)).shape == (3,)
