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
    screen = posed_grid(canonical_depth, view, fov_deg, height, width)  # (3, B, Hc, Wc)
    if canonical_mask is None:
        on = torch.ones_like(canonical_depth[:, 0], dtype=torch.bool)
    else:
        on = canonical_mask[:, 0].detach() > 0.5
    frags = rasterize_grid(screen, on, height, width)
    z, _, _ = interpolate(frags, screen)  # (P,) posed depth, differentiable

    # Unsup3D eq. 4 on the full posed depth map: unproject, inverse pose, project. Empty pixels
    # get a harmless depth (the pivot's) and are masked out.
    pixel = frags.pixel
    valid = torch.zeros(bsz * height * width, dtype=torch.bool, device=canonical_depth.device)
    valid[pixel] = True
    valid = valid.reshape(bsz, 1, height, width)
    fill = torch.full((bsz * height * width,), camera.PIVOT_DEPTH, dtype=z.dtype, device=z.device)
    posed = fill.index_copy(0, pixel, z).reshape(bsz, 1, height, width)  # (B, 1, H, W)
    points = camera.unproject(posed, fov_deg).reshape(bsz, height * width, 3)
    back = camera.inverse_transform_points(points, view)  # (B, HW, 3) in the canonical frame
    # keep masked-out pixels finite: a NaN there would leak into gradients through torch.where
    back = torch.cat([back[..., :2], back[..., 2:].clamp(min=1e-4)], -1)
    grid = camera.project(back, fov_deg).reshape(bsz, height, width, 2)
    inside = valid & (grid.detach().abs() <= 1.0).all(-1)[:, None]
    mask = inside.to(canonical_depth.dtype)  # (B, 1, H, W)
    grid = torch.where(inside[:, 0, :, :, None], grid, _OUTSIDE)
    depth = torch.where(valid, posed, 0.0)
    return grid, mask, depth


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
