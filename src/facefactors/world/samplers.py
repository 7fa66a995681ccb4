"""Samplers of the face world (DESIGN.md "Samplers"): i.i.d. sets split by identity, factor
interventions, clips, and the label-disjoint data sets of the UFE multi-dataset experiment
(Banerjee et al., sec. 4.1 and 4.7: world A labels identity/expression/lighting/pose, world B labels
age/gender/eyeglasses).

Interventions re-draw one factor from its own stream at a fresh stream index (FaceWorld.draw_factor),
so every other field of the parameters is untouched; categorical factors always change class.
Clips (LatentFace, He et al., sec. 2.3: identity is what stays constant along a video) keep
identity, lighting, background, hair and camera fixed while expression and pose drift smoothly.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from facefactors.data.description import DatasetDescription
from facefactors.world import expression as expr
from facefactors.world.identity import _GENDER_SHAPE, A, S
from facefactors.world.params import FaceParams

# factors an intervention can change, and the FaceParams fields each one owns
INTERVENABLE = {
    "identity": (
        "identity",
        "identity_label",
        "shape",
        "albedo",
        "age_value",
        "gender_value",
        "skin_tone",
    ),
    "expression": ("expression_weights", "expression", "expression_intensity"),
    "lighting": ("light", "light_class", "sh"),
    "pose": ("pose", "pose_bucket"),
    "camera": ("camera",),
    "background": ("background",),
    "hair": ("hair",),
    "eyeglasses": ("eyeglasses", "glasses_style"),
    "noise": ("noise", "noise_seed"),
    "age": ("age_value",),
    "gender": ("gender_value", "shape", "albedo"),
    "skin_tone": ("skin_tone", "albedo"),
}
WORLD_A_LABELS = ("identity", "expression", "lighting", "pose")
WORLD_B_LABELS = ("age", "gender", "eyeglasses")
_NUM_CLASSES = {"camera": 2, "eyeglasses": 2, "expression": len(expr.EXPRESSIONS)}
_FRESH = (
    2**40
)  # stream indices at or above this are reserved for re-draws (never used by i.i.d. sets)


# --- i.i.d. sets -------------------------------------------------------------------------
def iid_params(
    world,
    split: str,
    num_identities: int,
    images_per_identity: int,
    start: int = 0,
    count: int | None = None,
) -> FaceParams:
    """Samples ``start .. start+count`` of the set of ``num_identities`` x ``images_per_identity``:
    sample i shows identity i // images_per_identity of the split."""
    total = num_identities * images_per_identity
    if num_identities > world.config.split_sizes()[split]:
        raise ValueError(
            f"split {split!r} has {world.config.split_sizes()[split]} identities, asked for {num_identities}"
        )
    count = total - start if count is None else count
    idx = torch.arange(start, start + count)
    return world.sample_params(idx, split, identities=idx // images_per_identity)


def iter_iid(
    world,
    split: str,
    num_identities: int,
    images_per_identity: int,
    batch_size: int = 256,
    image_size: int | None = None,
) -> Iterator:
    """Rendered batches (WorldBatch) of the i.i.d. set, in index order."""
    total = num_identities * images_per_identity
    for s in range(0, total, batch_size):
        p = iid_params(
            world, split, num_identities, images_per_identity, s, min(batch_size, total - s)
        )
        yield world.render(p, image_size=image_size)


# --- interventions -----------------------------------------------------------------------
def set_trait(params: FaceParams, name: str, value: torch.Tensor) -> FaceParams:
    """Set an identity trait (age_value, gender_value, skin_tone), with the coefficients it drives."""
    value = torch.as_tensor(value, dtype=torch.float32).reshape(-1).expand(len(params)).clone()
    if name == "age_value":
        return params.replace(age_value=value)
    if name == "skin_tone":
        alb = params.albedo.clone()
        alb[:, A["skin_tone"]] = value
        return params.replace(skin_tone=value, albedo=alb)
    if name == "gender_value":
        dg = (value - params.gender_value) * 2  # change of the centred trait
        shape, alb = params.shape.clone(), params.albedo.clone()
        for coeff, w in _GENDER_SHAPE.items():
            shape[:, S[coeff]] += w * dg
        alb[:, A["lip_red"]] -= 0.8 * dg
        alb[:, A["brow_strength"]] += 0.8 * dg
        alb[:, A["beard"]] = torch.where(value > 0.6, alb[:, A["beard"]], torch.zeros_like(value))
        return params.replace(gender_value=value, shape=shape, albedo=alb)
    raise ValueError(f"unknown trait {name!r}")


def _other_class(old: torch.Tensor, num: int, rng: np.random.Generator) -> torch.Tensor:
    return (old + torch.from_numpy(rng.integers(1, num, size=old.shape[0]))) % num


def intervene(
    world, params: FaceParams, factor: str, rng: np.random.Generator, split: str = "train"
) -> FaceParams:
    """The same samples with exactly ``factor`` changed (categorical factors change class)."""
    if factor not in INTERVENABLE:
        raise ValueError(f"cannot intervene on {factor!r}; one of {sorted(INTERVENABLE)}")
    b = len(params)
    fresh = torch.from_numpy(rng.integers(_FRESH, 2**62, size=b))
    if factor == "identity":
        n_id = world.config.split_sizes()[split]
        local = _other_class(params.identity_label, n_id, rng)
        ident = world.identity(local + world.config.split_offset(split))
        fields = {k: v for k, v in ident.as_dict().items()}
        return params.replace(identity_label=local, **fields)
    if factor == "age":
        old = (params.age_value * 3).long().clamp(0, 2)
        new = _other_class(old, 3, rng)
        return set_trait(
            params,
            "age_value",
            (new.float() + torch.from_numpy(rng.uniform(0.05, 0.95, b)).float()) / 3,
        )
    if factor == "gender":
        male = params.gender_value > 0.5
        u = torch.from_numpy(rng.uniform(0.1, 0.45, b)).float()
        return set_trait(params, "gender_value", torch.where(male, u, 1 - u))
    if factor == "skin_tone":
        return set_trait(params, "skin_tone", torch.from_numpy(rng.uniform(0, 1, b)).float())
    klass = None
    if factor == "expression":
        klass = _other_class(params.expression, len(expr.EXPRESSIONS), rng)
    elif factor == "lighting":
        klass = _other_class(params.light_class, 20, rng)
    elif factor == "pose":
        klass = _other_class(params.pose_bucket, len(world.config.yaw_buckets), rng)
    elif factor in ("camera", "eyeglasses"):
        klass = 1 - getattr(params, factor)
    fields = world.draw_factor(factor, split, fresh, klass=klass, ident=params)
    return params.replace(**fields)


def set_factor(world, params: FaceParams, factor: str, klass, split: str = "train") -> FaceParams:
    """The same samples with a categorical factor forced to class ``klass`` (int or (B,)), e.g. the
    0-degree and 30-degree yaw domains (``pose``) or the NIR camera (``camera``). The factor's other
    fields (jitter, intensity, style) are drawn from the sample's own stream, so they stay put."""
    streams = {
        "expression": "expression",
        "lighting": "lighting",
        "pose": "pose",
        "camera": "camera",
        "eyeglasses": "eyeglasses",
    }
    if factor not in streams:
        raise ValueError(f"set_factor: {factor!r} is not one of {sorted(streams)}")
    k = torch.as_tensor(klass, dtype=torch.long).reshape(-1).expand(len(params))
    return params.replace(
        **world.draw_factor(streams[factor], split, params.sample_index, klass=k, ident=params)
    )


# --- clips -------------------------------------------------------------------------------
def clip_params(
    world, split: str, clip_index: int, length: int = 16, frames_per_key: int = 6
) -> FaceParams:
    """One clip: a fixed identity, light, background, hair and camera; expression and pose drift smoothly.

    The expression blends between key expressions every ``frames_per_key`` frames with a smoothstep
    (the label is the dominant key's class); yaw/pitch/roll follow slow sinusoids (one time unit =
    16 frames) around a base pose, so a longer clip drifts on rather than moving faster.
    """
    from facefactors.world.seeding import Draws

    base_index = _FRESH // 2 + clip_index
    base = world.sample_params([base_index], split)
    keyframes = max(1, -(-(length - 1) // frames_per_key))
    keys = world.draw_factor("expression", split, torch.arange(keyframes + 1) + base_index * 64)
    u = Draws(world.config.seed, f"{split}/clip", [clip_index], 8).u(8)[0]
    frame = torch.arange(length, dtype=torch.float32)
    pos = frame / frames_per_key
    a = pos.floor().long().clamp(max=keyframes - 1)
    s = (pos - a).clamp(0, 1)
    s = s * s * (3 - 2 * s)
    w = (
        keys["expression_weights"][a] * (1 - s[:, None])
        + keys["expression_weights"][a + 1] * s[:, None]
    )
    dominant = torch.where(s < 0.5, a, a + 1)
    inten = keys["expression_intensity"][a] * (1 - s) + keys["expression_intensity"][a + 1] * s
    cfg = world.config
    t = frame / 16
    lo, hi = min(cfg.yaw_buckets) - cfg.yaw_jitter, max(cfg.yaw_buckets) + cfg.yaw_jitter
    amp = 10.0
    yaw0 = base.pose[0, 0].clamp(lo + amp, hi - amp)
    yaw = yaw0 + amp * torch.sin(2 * torch.pi * (0.3 + 0.5 * u[0]) * t + 6.28 * u[1])
    pitch = base.pose[0, 1] * 0.5 + 5 * torch.sin(
        2 * torch.pi * (0.3 + 0.5 * u[2]) * t + 6.28 * u[3]
    )
    roll = base.pose[0, 2] * 0.5 + 4 * torch.sin(
        2 * torch.pi * (0.3 + 0.5 * u[4]) * t + 6.28 * u[5]
    )
    buckets = torch.tensor(cfg.yaw_buckets)
    bucket = (yaw[:, None] - buckets[None]).abs().argmin(1)
    p = FaceParams.cat([base] * length)
    return p.replace(
        sample_index=frame.long() + clip_index * length,
        expression_weights=w,
        expression=keys["expression"][dominant],
        expression_intensity=inten,
        pose=torch.stack([yaw, pitch, roll], -1),
        pose_bucket=bucket,
    )


# --- label-disjoint data sets ------------------------------------------------------------
def world_a_description(
    world, split: str = "train", num_identities: int | None = None
) -> DatasetDescription:
    """World A of the UFE multi-dataset experiment: identity, expression, lighting and pose labelled."""
    return world.describe(split, num_identities).restrict(WORLD_A_LABELS, name=f"world-a-{split}")


def world_b_description(
    world, split: str = "train", num_identities: int | None = None
) -> DatasetDescription:
    """World B: only age, gender and eyeglasses labelled."""
    return world.describe(split, num_identities).restrict(WORLD_B_LABELS, name=f"world-b-{split}")


def mask_labels(
    labels: dict[str, torch.Tensor], description: DatasetDescription
) -> dict[str, torch.Tensor]:
    """Labels with every factor the description does not label set to missing (-1 or NaN)."""
    out = {}
    for name, v in labels.items():
        if name in description and not description.is_labelled(name):
            v = (
                torch.full_like(v, -1)
                if description[name].is_categorical
                else torch.full_like(v, float("nan"))
            )
        out[name] = v
    return out
