"""Image formation after shading: background, camera domain (RGB vs NIR-like), blur and noise.

The NIR-like camera is a grey image with a different spectral weighting (skin and lips look
alike, eyes and hair stay dark) and a flatter tone curve, the domain gap of VIS/NIR face data.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from facefactors.render.camera import image_grid
from facefactors.world.fastmath import powf


def background(bg: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 10) [c1 rgb, c2 rgb, angle, texture amplitude, frequency, phase] -> (B, 3, H, W)."""
    grid = image_grid(height, width, bg.device)  # (H, W, 2)
    ang = bg[:, 6, None, None] * 2 * math.pi
    t = 0.5 + 0.5 * (
        grid[None, ..., 0] * torch.cos(ang) + grid[None, ..., 1] * torch.sin(ang)
    ) / math.sqrt(2)
    img = bg[:, 0:3, None, None] * (1 - t[:, None]) + bg[:, 3:6, None, None] * t[:, None]
    freq = (2 + 10 * bg[:, 8])[:, None, None]
    pattern = torch.sin(grid[None, ..., 0] * freq + bg[:, 9, None, None] * 6.28) * torch.sin(
        grid[None, ..., 1] * freq * 0.7 + 1.3
    )
    return (img * (1 + (0.25 * bg[:, 7, None, None] * pattern)[:, None])).clamp(0, 1)


def sample_background(u: torch.Tensor) -> torch.Tensor:
    """Uniforms (B, 10) -> background parameters (B, 10): two colours of similar hue, a gradient, a texture."""
    c1 = u[:, 0:3] * 0.85 + 0.05
    c2 = (c1 + (u[:, 3:6] - 0.5) * 0.5).clamp(0.02, 0.98)
    amp = u[:, 7] * (u[:, 7] > 0.4).float()
    return torch.cat([c1, c2, u[:, 6:7], amp[:, None], u[:, 8:10]], -1)


def tone(image: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
    """Camera domain: RGB keeps a mild gamma; NIR-like becomes grey with a flatter curve. (B,3,H,W)."""
    rgb = powf(image.clamp(0, 1), 1 / 1.1)
    grey = (0.6 * image[:, 0:1] + 0.3 * image[:, 1:2] + 0.1 * image[:, 2:3]).clamp(0, 1)
    nir = (0.12 + 0.85 * powf(grey, 0.75)).expand(-1, 3, -1, -1)
    return torch.where(camera[:, None, None, None] == 1, nir, rgb)


def blur(image: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample separable Gaussian blur, sigma (B,) in pixels (0 = unchanged). (B, C, H, W)."""
    b, c, h, w = image.shape
    if float(sigma.max()) < 0.05:
        return image
    radius = max(1, math.ceil(3 * float(sigma.max())))
    k = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    s = sigma.clamp_min(1e-3)[:, None]
    ker = torch.exp(-0.5 * (k[None] / s) ** 2)
    ker = ker / ker.sum(1, keepdim=True)  # (B, K)
    ker = ker.repeat_interleave(c, 0)  # (B*C, K)
    x = F.pad(image.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, ker[:, None, None, :], groups=b * c)
    x = F.conv2d(x, ker[:, None, :, None], groups=b * c)
    return x.reshape(b, c, h, w)


def add_noise(
    image: torch.Tensor, std: torch.Tensor, seed: torch.Tensor, camera: torch.Tensor | None = None
) -> torch.Tensor:
    """Additive Gaussian noise whose pattern is a pure function of the per-sample seed; one
    pattern shared by the three channels of a (single-sensor, grey) NIR image."""
    out = image.clone()
    for i in torch.nonzero(std > 1e-4).flatten().tolist():
        g = torch.Generator().manual_seed(int(seed[i]))
        grey = camera is not None and int(camera[i]) == 1
        shape = (1, *image.shape[2:]) if grey else image.shape[1:]
        out[i] += std[i] * torch.randn(shape, generator=g).to(image.device)
    return out
