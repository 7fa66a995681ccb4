"""Feature composites of the UFE (Banerjee et al., sec. 4.6 and Fig. 4; sec. 4.7 and Fig. 6).

"Take chosen attribute features of B into A and decode": the decoder renders the mixed
features; switching only the pose feature reposes the face ("gen_30"). Also the measures we
add because the world knows the true composite: L1 and SSIM between a decoded composite and
the ground-truth render. Inference only: models and tensors in, tensors out (DESIGN.md).
"""

from __future__ import annotations

import torch

from facefactors.models.ufe import UFE, mix_features
from facefactors.utils.images import save_grid, to_uint8  # noqa: F401 (part of this module's API)


@torch.no_grad()
def composite(model: UFE, image_a: torch.Tensor, image_b: torch.Tensor, take: list[str] | tuple[str, ...]) -> torch.Tensor:
    """D(mix(E(A), E(B))): A (B, 3, H, W) with the subspaces ``take`` from B; clamped to [0, 1]."""
    unknown = [t for t in take if t not in model.feature_names]
    if unknown:
        raise ValueError(f"cannot take {unknown} from B: the model's subspaces are {model.feature_names}")
    fa, fb = model.encode(image_a), model.encode(image_b)
    return model.decode(mix_features(fa, fb, list(take)), "const").clamp(0, 1)


@torch.no_grad()
def reconstruct(model: UFE, image: torch.Tensor) -> torch.Tensor:
    return model.decode(model.encode(image), "const").clamp(0, 1)


@torch.no_grad()
def repose(model: UFE, image: torch.Tensor, pose_source: torch.Tensor, pose_attribute: str = "pose") -> torch.Tensor:
    """Switch only the pose feature ("gen_30" of Fig. 4): ``image`` in the pose of ``pose_source``."""
    return composite(model, image, pose_source, [pose_attribute])


@torch.no_grad()
def composite_grid(model: UFE, sources: dict[str, torch.Tensor], base: str, repose_to: torch.Tensor | None = None) -> torch.Tensor:
    """The rows of Fig. 4: each row takes each attribute from its own source image.

    ``sources[name]`` (R, 3, H, W) gives, per row, the image the subspace ``name`` is taken from
    (``base`` supplies every subspace not in ``sources``). Returns (R, n_cols, 3, H, W): the source
    columns, then the decoded composite, then (if ``repose_to`` (R, 3, H, W) is given) the composite
    with the pose feature of ``repose_to``.
    """
    feats = model.encode(sources[base])
    for name, img in sources.items():
        if name != base:
            feats = mix_features(feats, model.encode(img), [name])
    cols = [sources[n] for n in sources]
    cols.append(model.decode(feats, "const").clamp(0, 1))
    if repose_to is not None:
        feats = mix_features(feats, model.encode(repose_to), ["pose"])
        cols.append(model.decode(feats, "const").clamp(0, 1))
    return torch.stack(cols, 1)


def composite_error(decoded: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Mean L1 and SSIM (11x11 Gaussian window, kornia) between two image batches in [0, 1]."""
    import kornia

    l1 = float((decoded - truth).abs().mean())
    ssim = float(kornia.metrics.ssim(decoded.float(), truth.float(), window_size=11).mean())
    return {"l1": l1, "ssim": ssim}
