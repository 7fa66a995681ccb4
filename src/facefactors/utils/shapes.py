"""The tiny shape-assert helper of DESIGN.md's style section."""

from __future__ import annotations

import torch


def check_shape(x: torch.Tensor, shape: tuple, name: str = "tensor") -> torch.Tensor:
    """Assert ``x.shape`` matches ``shape``, where ``None`` (or -1) in ``shape`` matches any size."""
    if x.dim() != len(shape) or any(s not in (None, -1) and s != d for s, d in zip(shape, x.shape)):
        want = tuple("*" if s in (None, -1) else s for s in shape)
        raise ValueError(f"{name}: expected shape {want}, got {tuple(x.shape)}")
    return x
