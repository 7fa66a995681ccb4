"""Picture grids of the face world for ``facefactors world show``: identities x expressions x
lights x poses, and one traversal strip per factor (one factor changes along a row)."""

from __future__ import annotations

import numpy as np
import torch

from facefactors.world import samplers
from facefactors.world.params import FaceParams


def _tile(images: torch.Tensor, cols: int, pad: int = 2) -> np.ndarray:
    """(N, 3, H, W) in [0, 1] -> uint8 (rows*(H+pad), cols*(W+pad), 3) with white gutters."""
    n, _, h, w = images.shape
    rows = -(-n // cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    arr = (images.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        out[
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + c * (w + pad) : pad + c * (w + pad) + w,
        ] = arr[i]
    return out


def factor_grid(
    world, identities: int = 4, image_size: int = 64, split: str = "train"
) -> np.ndarray:
    """Rows: identities x lights (3); columns: expressions (6) x poses (3). Noise-free, RGB camera."""
    from facefactors.world.expression import EXPRESSIONS

    base = world.sample_params(range(identities), split, identities=range(identities))
    lights = (7, 12, 9)  # left, front, right, all from slightly above
    nb = len(world.config.yaw_buckets)
    poses = (0, nb // 2, nb - 1)
    rows = []
    for i in range(identities):
        for lc in lights:
            for e in range(len(EXPRESSIONS)):
                for pb in poses:
                    rows.append((i, lc, e, pb))
    n = len(rows)
    p = FaceParams.cat([base.index(r[0]) for r in rows])
    idx = torch.arange(n)
    p = p.replace(
        **world.draw_factor(
            "lighting", split, idx * 0 + 1, klass=torch.tensor([r[1] for r in rows])
        )
    )
    p = p.replace(
        **world.draw_factor(
            "expression", split, idx * 0 + 2, klass=torch.tensor([r[2] for r in rows])
        )
    )
    p = p.replace(
        **world.draw_factor("pose", split, idx * 0 + 3, klass=torch.tensor([r[3] for r in rows]))
    )
    p = p.replace(camera=torch.zeros(n, dtype=torch.long), noise=torch.zeros(n, 2))
    images = torch.cat(
        [
            world.render(p.index(slice(s, s + 64)), image_size=image_size).image
            for s in range(0, n, 64)
        ]
    )
    return _tile(images, len(EXPRESSIONS) * len(poses))


def traversal_strips(
    world, steps: int = 8, image_size: int = 64, split: str = "train", seed: int = 0
) -> np.ndarray:
    """One row per factor: the same sample with only that factor changed, ``steps`` times."""
    rng = np.random.default_rng(seed)
    base = world.sample_params([0], split, identities=[0])
    base = base.replace(noise=torch.zeros(1, 2), camera=torch.zeros(1, dtype=torch.long))
    factors = (
        "identity",
        "expression",
        "lighting",
        "pose",
        "age",
        "gender",
        "skin_tone",
        "eyeglasses",
        "hair",
        "background",
        "camera",
    )
    rows = []
    for factor in factors:
        cur = base
        row = [cur]
        for _ in range(steps - 1):
            if factor in ("age", "gender", "skin_tone"):
                name = {"age": "age_value", "gender": "gender_value", "skin_tone": "skin_tone"}[
                    factor
                ]
                v = torch.tensor([len(row) / (steps - 1)])
                cur = samplers.set_trait(base, name, v)
            else:
                cur = samplers.intervene(world, cur, factor, rng, split)
            row.append(cur)
        rows.extend(row)
    p = FaceParams.cat(rows)
    images = torch.cat(
        [
            world.render(p.index(slice(s, s + 64)), image_size=image_size).image
            for s in range(0, len(p), 64)
        ]
    )
    return _tile(images, steps)
