"""Lighting of the face world: Unsup3D's ambient + directional Lambertian light (Wu et al. 2020,
sec. 3.1/3.3: light = [k_s ambient, k_d diffuse, l_x, l_y], direction (l_x, l_y, 1) normalised),
its 27-number spherical-harmonics equivalent (DiscoFaceGAN, Deng et al. 2020, sec. 3.1: 9 SH
coefficients per colour channel), and 20 categorical directions like Multi-PIE's 20 flashes:
5 horizontal x 4 vertical positions around the camera.
"""

from __future__ import annotations

import torch

LIGHT_X = (-1.1, -0.55, 0.0, 0.55, 1.1)  # tan of the horizontal angle: about -48..48 degrees
LIGHT_Y = (-0.55, -0.2, 0.15, 0.5)  # mostly from above (negative y is up)
LIGHT_DIRECTIONS = torch.tensor([[lx, ly] for ly in LIGHT_Y for lx in LIGHT_X])  # (20, 2)
LIGHT_NAMES = tuple(f"x{lx:+.2f}_y{ly:+.2f}" for ly in LIGHT_Y for lx in LIGHT_X)


def is_extreme(light_class: torch.Tensor) -> torch.Tensor:
    """Classes lit from the far sides (|l_x| > 1, ~48 degrees): the 'extreme' lights of the detector check."""
    return LIGHT_DIRECTIONS[light_class, 0].abs() > 1.0


def sample_light(
    u: torch.Tensor, klass: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniforms (B, 5) [and forced classes (B,)] -> light (B, 4), class (B,).

    Ambient 0.3..0.55 and diffuse 0.45..0.8 so a frontal face is neither black nor burnt; the
    direction jitters a little around its class centre.
    """
    if klass is None:
        klass = (u[:, 0] * len(LIGHT_NAMES)).long().clamp(max=len(LIGHT_NAMES) - 1)
    d = LIGHT_DIRECTIONS[klass] + (u[:, 1:3] - 0.5) * 0.12
    amb = 0.30 + 0.25 * u[:, 3]
    dif = 0.45 + 0.35 * u[:, 4]
    return torch.stack([amb, dif, d[:, 0], d[:, 1]], -1), klass


def light_to_sh(light: torch.Tensor) -> torch.Tensor:
    from facefactors.render.shading import lambertian_to_sh

    return lambertian_to_sh(light)
