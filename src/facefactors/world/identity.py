"""Identity of the face world: shape and albedo coefficients of a procedural morphable model.

A person is a vector of shape coefficients (z-scores over smooth anatomical bases: head/jaw
width, chin, cheekbones, nose, brow ridge, eyes, lips; the role a 3DMM's identity basis plays
in DiscoFaceGAN, Deng et al. 2020, sec. 3.1, Eq. 1) and albedo coefficients (skin tone, lip,
brow, iris and hair colour, hairline, beard, texture). Three continuous traits are drawn first
and bias the coefficients, so they are recoverable from the face and can be labelled:
age-like (grey hair, wrinkles, receding hairline), gender-like (jaw, brows, beard prior, lip
colour) and skin tone. Everything is a pure function of (world seed, identity id).

``features()`` turns coefficients into the canonical-grid geometry (positions in [-1, 1],
x right, y down) that the surface, the albedo and the 68 landmarks are all built from, so
they agree by construction. Proportions follow an aligned face crop: eyes at ~42% height,
chin at ~90%, jaw ~60% of the width.
"""

from __future__ import annotations

import torch

from facefactors.world.fastmath import powf
from facefactors.world.params import IdentityParams
from facefactors.world.seeding import Draws

SHAPE_COEFFS = (
    "face_width", "face_length", "jaw_square", "chin", "cheekbones", "nose_length", "nose_width",
    "nose_height", "brow_ridge", "eye_spacing", "eye_size", "eye_depth", "mouth_width",
    "lip_thickness", "eye_height", "mouth_height",
)  # fmt: skip
ALBEDO_COEFFS = (
    "skin_tone", "skin_red", "hair_dark", "hair_red", "lip_red", "brow_strength", "iris",
    "beard", "hairline", "texture", "tex_f1", "tex_f2", "tex_p1", "tex_p2", "hair_volume", "hair_length",
)  # fmt: skip
S = {n: i for i, n in enumerate(SHAPE_COEFFS)}
A = {n: i for i, n in enumerate(ALBEDO_COEFFS)}

# how the gender-like trait (centred, in [-1, 1]) biases shape coefficients (z units)
_GENDER_SHAPE = {
    "face_width": 0.7,
    "jaw_square": 1.0,
    "brow_ridge": 1.0,
    "eye_size": -0.6,
    "lip_thickness": -0.8,
    "face_length": 0.4,
}


def sample_identity(seed: int, ids) -> IdentityParams:
    """Identity parameters of global identity ids (B,), a pure function of (seed, id)."""
    ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
    d = Draws(seed, "identity", ids.numpy(), n=96)
    age = d.u(1)[:, 0]
    # bimodal gender-like trait: two overlapping modes, so the class is mostly but not always clear
    male = (d.u(1)[:, 0] < 0.5).float()
    gender = torch.sigmoid((male * 2 - 1) * 2.2 + 0.9 * d.n(1)[:, 0])
    tone = d.u(1)[:, 0]
    g = gender * 2 - 1  # (B,) in [-1, 1]

    shape = d.n(len(SHAPE_COEFFS)) * 0.8  # (B, S)
    for name, w in _GENDER_SHAPE.items():
        shape[:, S[name]] += w * g
    alb = d.n(len(ALBEDO_COEFFS))  # (B, A) z-scores, some overwritten with bounded values below
    alb[:, A["skin_tone"]] = tone
    alb[:, A["lip_red"]] = alb[:, A["lip_red"]] * 0.6 - 0.8 * g
    alb[:, A["brow_strength"]] = alb[:, A["brow_strength"]] * 0.6 + 0.8 * g
    # beard only for clearly male-like faces, with a density in [0, 1]
    beard_on = (d.u(1)[:, 0] < 0.55) & (gender > 0.6)
    alb[:, A["beard"]] = beard_on.float() * (0.35 + 0.65 * d.u(1)[:, 0])
    # hairline recedes with age for male-like faces; in [0, 1], 0 = low (full) hairline
    alb[:, A["hairline"]] = (0.15 * d.u(1)[:, 0] + 0.7 * age * gender * d.u(1)[:, 0]).clamp(0, 1)
    alb[:, A["hair_length"]] = (0.85 * (1 - gender) + 0.35 * d.u(1)[:, 0] - 0.2).clamp(0, 1)
    alb[:, A["hair_volume"]] = d.u(1)[:, 0]
    alb[:, A["tex_f1"]] = d.u(1)[:, 0]
    alb[:, A["tex_f2"]] = d.u(1)[:, 0]
    alb[:, A["tex_p1"]] = d.u(1)[:, 0]
    alb[:, A["tex_p2"]] = d.u(1)[:, 0]
    return IdentityParams(
        identity=ids, shape=shape, albedo=alb, age_value=age, gender_value=gender, skin_tone=tone
    )


def features(shape: torch.Tensor) -> dict[str, torch.Tensor]:
    """Canonical geometry of each face from its shape coefficients: (B, S) -> dict of (B,) tensors.

    Units are canonical image coordinates ([-1, 1], y down); relief heights are in the same
    units (a bump of 0.2 stands as far out of the face as 0.2 is wide; see surface.py).
    """
    z = {n: shape[:, i] for n, i in S.items()}
    f: dict[str, torch.Tensor] = {}
    f["eye_y"] = -0.15 + 0.018 * z["eye_height"]
    f["eye_x"] = 0.245 * (1 + 0.05 * z["eye_spacing"])  # eye centre, |x|
    f["eye_w"] = 0.10 * (1 + 0.06 * z["eye_size"])  # half-width, corner to centre
    f["eye_h"] = 0.034 * (1 + 0.10 * z["eye_size"])  # half-opening of the lids
    f["eye_depth"] = 0.05 * (1 + 0.2 * z["eye_depth"])
    f["jaw_w"] = 0.57 * (1 + 0.045 * z["face_width"])  # face half-width at eye level
    f["jaw_top"] = f["eye_y"] + 0.01
    f["chin_y"] = 0.80 + 0.03 * z["face_length"]
    f["jaw_p"] = 2.0 + 0.35 * z["jaw_square"]  # superellipse exponent of the lower face outline
    f["chin"] = 0.03 * (1 + 0.4 * z["chin"])
    f["cheek"] = 0.035 * (1 + 0.4 * z["cheekbones"])
    f["nose_tip_y"] = 0.14 + 0.025 * z["nose_length"]
    f["nose_base_y"] = f["nose_tip_y"] + 0.10
    f["nose_w"] = 0.105 * (1 + 0.08 * z["nose_width"])
    f["nose_h"] = 0.20 * (1 + 0.15 * z["nose_height"])
    f["brow_ridge"] = 0.03 * (1 + 0.4 * z["brow_ridge"])
    f["mouth_y"] = 0.405 + 0.02 * z["mouth_height"]  # the lip line
    f["mouth_w"] = 0.215 * (1 + 0.06 * z["mouth_width"])  # half-width, corner to centre
    f["lip_u"] = 0.052 * (1 + 0.15 * z["lip_thickness"])
    f["lip_l"] = 0.072 * (1 + 0.15 * z["lip_thickness"])
    f["head_depth"] = 0.85 * f["jaw_w"]
    return f


def jaw_half_width(y: torch.Tensor, f: dict[str, torch.Tensor], parts: bool = False):
    """Half-width of the face outline at height ``y``: cranium ellipse above the eyes,
    a superellipse from the jaw top down to the chin (0 beyond). Broadcasts ``y`` with (B,...).

    ``parts=True`` also returns what surface.relief reuses: the mask y < jaw top, the cranium
    profile sqrt(1 - up^2) and the jaw parameter s in [0, 1] (computed once, not twice).
    """
    shp = (-1,) + (1,) * (y.dim() - 1)
    jaw_w, top, chin, p = (f[k].reshape(shp) for k in ("jaw_w", "jaw_top", "chin_y", "jaw_p"))
    s = ((y - top) / (chin - top)).clamp_(0, 1)
    lower = powf((1 - powf(s, p)).clamp_min_(0), 1 / p).mul_(jaw_w)
    lower.masked_fill_(y > chin, 0.0)
    up = ((top - y) / 1.05).clamp_(0, 1)
    cranium = (1 - up * up).clamp_min_(0).sqrt_()
    above = y < top
    w = torch.where(above, cranium * (jaw_w * 1.03), lower)
    return (w, above, cranium, s) if parts else w
