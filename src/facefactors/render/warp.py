"""The differentiable rendering path of Unsup3D: posed depth by forward rasterisation, then inverse warp.

Unsup3D (Wu et al. 2020, sec. 3.3 "Image formation", eqs. 3-4; reused by LatentFace, He et al.,
sec. 3.1 and supp. D): the canonical view is shaded first (albedo x shading, done by the caller);
the posed depth map d' is obtained by rasterising the posed height field (here our z-buffer,
Unsup3D used the Neural Mesh Renderer); every pixel p' of the output is unprojected with its
posed depth, moved back by the inverse pose and projected into the canonical view,

    p = pi( R^T (d'(p') K^-1 p' - c - T) + c ),    (Unsup3D eq. 4, with pivot c)

and the canonical image is bilinearly resampled at p (``grid_sample``). The choice of the
visible triangle is not differentiable; the posed depth is (barycentric interpolation of the
posed vertices), so gradients reach the canonical depth, the canonical image (hence albedo and
light through the caller's shading) and the view.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from facefactors.render import camera
from facefactors.render.rasterize import interpolate, posed_grid, rasterize_grid

_OUTSIDE = -2.0  # grid value of empty pixels: outside [-1, 1], so grid_sample reads zeros there


def warp_grid(
    canonical_depth: torch.Tensor,  # (B, 1, H, W) canonical depth (height field)
    view: torch.Tensor,  # (B, 6) [yaw, pitch, roll (deg), tx, ty, tz]
    fov_deg: float = camera.DEFAULT_FOV_DEG,  # perspective field of view
    canonical_mask: torch.Tensor | None = None,  # (B, 1, H, W) surface support, None for all
    image_size: tuple[int, int] | None = None,  # output (H, W); default the canonical size
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse-warp grid of the posed view: ``grid`` (B, H, W, 2) into the canonical image, ``mask``
    (B, 1, H, W) of pixels that see the surface, and the posed ``depth`` (B, 1, H, W), 0 where empty."""
    if canonical_depth.dim() != 4 or canonical_depth.shape[1] != 1:
        raise ValueError(f"canonical_depth: expected shape (B, 1, H, W), got {tuple(canonical_depth.shape)}")
    bsz, _, hc, wc = canonical_depth.shape
    if tuple(view.shape) != (bsz, 6):
        raise ValueError(f"view: expected shape ({bsz}, 6) = [yaw, pitch, roll, tx, ty, tz], got {tuple(view.shape)}")
    height, width = (hc, wc) if image_size is None else image_size
    screen = posed_grid(canonical_depth, view, fov_deg, height, width)  # (B, Hc, Wc, 3)
    if canonical_mask is None:
        on = torch.ones_like(canonical_depth[:, 0], dtype=torch.bool)
    else:
        on = canonical_mask[:, 0].detach() > 0.5
    frags = rasterize_grid(screen, on, height, width)
    z, _, _ = interpolate(frags, screen)  # (P,) posed depth, differentiable

    # Unsup3D eq. 4 for the covered pixels only: unproject, inverse pose, project.
    dt = canonical_depth.dtype
    px, py = frags.x.to(dt), frags.y.to(dt)
    ray = torch.stack([((2.0 * px + 1.0) / width - 1.0), ((2.0 * py + 1.0) / height - 1.0)], -1)
    points = torch.cat([ray * (z[:, None] * camera.tan_half_fov(fov_deg)), z[:, None]], -1)  # (P, 3)
    rot, trans = camera.rotation_matrix(view[:, 0], view[:, 1], view[:, 2]), view[:, 3:6]
    pivot = points.new_tensor([0.0, 0.0, camera.PIVOT_DEPTH])
    rel = points - pivot - trans[frags.batch]
    back = torch.einsum("pi,pij->pj", rel, rot[frags.batch]) + pivot  # R^T (p - c - t) + c
    uv = camera.project(back, fov_deg)  # (P, 2)

    pixel = frags.pixel
    grid = torch.full((bsz * height * width, 2), _OUTSIDE, dtype=dt, device=canonical_depth.device)
    grid = grid.index_copy(0, pixel, uv).reshape(bsz, height, width, 2)
    depth = z.new_zeros(bsz * height * width).index_copy(0, pixel, z).reshape(bsz, 1, height, width)
    inside = (uv.detach().abs() <= 1.0).all(-1).to(dt)
    mask = inside.new_zeros(bsz * height * width).index_copy(0, pixel, inside)
    return grid, mask.reshape(bsz, 1, height, width), depth


def render_view(
    canonical_image: torch.Tensor,  # (B, C, H, W) shaded canonical image (albedo x shading)
    canonical_depth: torch.Tensor,  # (B, 1, H, W) canonical depth (height field)
    view: torch.Tensor,  # (B, 6) [yaw, pitch, roll (deg), tx, ty, tz]
    fov_deg: float = camera.DEFAULT_FOV_DEG,  # perspective field of view
    canonical_mask: torch.Tensor | None = None,  # (B, 1, H, W) surface support, None for all
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render the canonical image in the posed view: ``image`` (B, C, H, W), 0 where empty, and ``mask`` (B, 1, H, W)."""
    if canonical_image.dim() != 4 or canonical_image.shape[0] != canonical_depth.shape[0] \
            or canonical_image.shape[2:] != canonical_depth.shape[2:]:
        raise ValueError(f"canonical_image: expected shape (B, C, H, W) matching depth "
                         f"{tuple(canonical_depth.shape)}, got {tuple(canonical_image.shape)}")
    grid, mask, _ = warp_grid(canonical_depth, view, fov_deg, canonical_mask)
    image = F.grid_sample(canonical_image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return image * mask, mask
