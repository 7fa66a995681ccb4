"""Parameter records of the face world: batch-first tensors, one row per sample.

``IdentityParams`` is what stays fixed for a person; ``FaceParams`` is everything a render
depends on (a render is a pure function of a ``FaceParams``), so it doubles as the ground
truth of every coefficient.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


class _Batch:
    """Batch helpers shared by the parameter records (every field is a tensor with batch dim 0)."""

    def __len__(self) -> int:
        return int(getattr(self, dataclasses.fields(self)[0].name).shape[0])

    def index(self, i) -> _Batch:
        """Rows ``i`` (an int, a slice, a list or a tensor of indices) as a new record."""
        if isinstance(i, int):
            i = slice(i, i + 1)
        return type(self)(**{f.name: getattr(self, f.name)[i] for f in dataclasses.fields(self)})

    @classmethod
    def cat(cls, items: list) -> _Batch:
        return cls(
            **{
                f.name: torch.cat([getattr(p, f.name) for p in items])
                for f in dataclasses.fields(cls)
            }
        )

    def replace(self, **fields) -> _Batch:
        return dataclasses.replace(self, **fields)

    def to(self, device) -> _Batch:
        return type(self)(
            **{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)}
        )

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass
class IdentityParams(_Batch):
    identity: torch.Tensor  # (B,) long, global identity id
    shape: torch.Tensor  # (B, S) shape coefficients (z-scores), see identity.SHAPE_COEFFS
    albedo: torch.Tensor  # (B, A) albedo coefficients, see identity.ALBEDO_COEFFS
    age_value: torch.Tensor  # (B,) in [0, 1]
    gender_value: torch.Tensor  # (B,) in [0, 1]: 0 female-like .. 1 male-like
    skin_tone: torch.Tensor  # (B,) in [0, 1]: 0 light .. 1 dark


@dataclass
class FaceParams(_Batch):
    sample_index: torch.Tensor  # (B,) long, sample index in its split
    identity: torch.Tensor  # (B,) long, global identity id
    identity_label: torch.Tensor  # (B,) long, identity class within the split
    shape: torch.Tensor  # (B, S)
    albedo: torch.Tensor  # (B, A)
    age_value: torch.Tensor  # (B,)
    gender_value: torch.Tensor  # (B,)
    skin_tone: torch.Tensor  # (B,)
    expression_weights: torch.Tensor  # (B, E) blendshape weights, see expression.BLENDSHAPES
    expression: torch.Tensor  # (B,) long class, see expression.EXPRESSIONS
    expression_intensity: torch.Tensor  # (B,) 0 for neutral
    light: torch.Tensor  # (B, 4) Unsup3D [ambient, diffuse, light_x, light_y]
    light_class: torch.Tensor  # (B,) long, one of 20 directions
    sh: torch.Tensor  # (B, 27) spherical-harmonics equivalent of ``light``
    pose: torch.Tensor  # (B, 3) yaw, pitch, roll in degrees
    pose_bucket: torch.Tensor  # (B,) long, yaw bucket
    camera: torch.Tensor  # (B,) long, 0 rgb, 1 nir
    background: (
        torch.Tensor
    )  # (B, 10) two colours, gradient angle, texture amplitude/frequency/phase
    hair: torch.Tensor  # (B, 4) hair style: volume, length, fringe, part
    eyeglasses: torch.Tensor  # (B,) long, 0 no, 1 yes
    glasses_style: torch.Tensor  # (B, 3) rim darkness, lens tint, size
    noise: torch.Tensor  # (B, 2) pixel noise std, blur std (pixels at 64x64)
    noise_seed: torch.Tensor  # (B,) long, seed of the pixel noise pattern
