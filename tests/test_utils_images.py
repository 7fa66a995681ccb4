"""Image helpers: uint8 conversion, grid layout, PNG round trip."""

import numpy as np
import torch
from PIL import Image

from facefactors.utils.images import make_grid, save_grid, save_png, to_uint8


def test_to_uint8_clamps_rounds_and_moves_channels_last():
    x = torch.tensor([-0.5, 0.0, 0.5, 1.0, 2.0]).view(1, 1, 5).expand(3, 1, 5)  # (3, 1, 5)
    out = to_uint8(x)
    assert out.shape == (1, 5, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, :, 0], [0, 0, 128, 255, 255])


def test_grid_places_images_row_major_with_padding():
    images = torch.stack([torch.full((1, 2, 3), v / 10) for v in range(5)])  # (5, 1, 2, 3), asymmetric H != W
    grid = make_grid(images, nrow=3, pad=1, pad_value=1.0)
    assert grid.shape == (1, 2 * (2 + 1) + 1, 3 * (3 + 1) + 1)
    assert torch.allclose(grid[0, 1, 1], torch.tensor(0.0))  # image 0 at the top left
    assert torch.allclose(grid[0, 1, 1 + 2 * 4], torch.tensor(0.2))  # image 2 ends the first row
    assert torch.allclose(grid[0, 1 + 3, 1 + 4], torch.tensor(0.4))  # image 4 second in the second row
    assert torch.allclose(grid[0, 1 + 3, 1 + 2 * 4], torch.tensor(1.0))  # empty slot keeps the pad value


def test_png_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 3, 4, 5, generator=g)  # (R, C, 3, H, W)
    path = save_grid(images, tmp_path / "grid.png", pad=2)
    arr = np.asarray(Image.open(path))
    assert arr.shape == (2 * 6 + 2, 3 * 7 + 2, 3)
    np.testing.assert_array_equal(arr[2:6, 2:7], to_uint8(images[0, 0]))
    np.testing.assert_array_equal(arr[8:12, 16:21], to_uint8(images[1, 2]))
    grey = save_png(torch.rand(1, 4, 4, generator=g), tmp_path / "grey.png")
    assert np.asarray(Image.open(grey)).shape == (4, 4)
