"""Image tensors to pixels: uint8 conversion, grids and PNG files (written atomically)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from facefactors.utils.io import atomic_path


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(…, C, H, W) float in [0, 1] -> (…, H, W, C) uint8 (clamped, rounded)."""
    return (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).movedim(-3, -1).cpu().numpy()


def make_grid(images: torch.Tensor, nrow: int, pad: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """(N, C, H, W) -> one image (C, H', W') with ``nrow`` images per row, rows top to bottom."""
    n, c, h, w = images.shape
    rows = (n + nrow - 1) // nrow
    grid = torch.full((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), pad_value, dtype=images.dtype)
    for i in range(n):
        r, k = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + k * (w + pad)
        grid[:, y : y + h, x : x + w] = images[i].detach().cpu()
    return grid


def save_png(image: torch.Tensor, path: str | Path) -> Path:
    """Write (C, H, W) in [0, 1] (C = 1 or 3) as an 8-bit PNG, atomically."""
    from PIL import Image

    path = Path(path)
    arr = to_uint8(image)
    with atomic_path(path) as tmp:
        Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(tmp, format="PNG")
    return path


def save_grid(images: torch.Tensor, path: str | Path, pad: int = 2) -> Path:
    """Write a grid PNG: (R, C, 3, H, W) as R rows x C columns, or (N, 3, H, W) as one row."""
    if images.dim() == 4:
        images = images[None]
    rows, cols = images.shape[:2]
    return save_png(make_grid(images.flatten(0, 1), nrow=cols, pad=pad), path)
