"""Camera conventions of facefactors, fixed once here and pinned by tests/test_render_camera.py.

The camera is Unsup3D's (Wu et al. 2020, sec. 3.3 "Image formation"; LatentFace, He et al.,
supplementary D "Rendering Pipeline"): a perspective camera at the origin looking down +z,
with ``1/f = 2 tan(fov/2)`` (fov = 10 degrees by default) and poses that rotate the surface
about a pivot in front of the camera, then translate it.

Conventions
-----------
* Angles are in DEGREES at the API and radians inside.
* Image coordinates are normalised to [-1, 1], x to the right, y DOWN, with pixel centres at
  ``(2 j + 1) / W - 1`` -- exactly the convention of ``F.grid_sample(align_corners=False)``,
  so a grid produced here plugs straight into it.
* Camera space: x right, y down, z forward (away from the camera); depth = z > 0.
* Projection: ``x_img = X / (Z tan(fov/2))`` and ``y_img = Y / (Z tan(fov/2))``. The field of
  view spans the full [-1, 1] range on BOTH axes (for H != W pixels are non-square); this keeps
  the camera independent of the pixel resolution, so one height field renders consistently at
  any image size.
* A *height field* is a canonical (frontal) depth map d(u, v): pixel (u, v) of the canonical
  view sees the 3-D point ``d(u, v) * (u tan(fov/2), v tan(fov/2), 1)`` (``unproject``).
* A view is ``[yaw, pitch, roll (degrees), tx, ty, tz]``. Points are rotated about the pivot
  ``(0, 0, PIVOT_DEPTH)`` and then translated: ``p' = R (p - c) + c + t``.
* ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)`` (pitch applied first, then yaw, then roll; the order
  of Unsup3D's ``get_rotation_matrix``), all right-handed rotations in camera space:

  - yaw about the y axis: positive yaw turns the face toward the image's LEFT (a nose tip in
    front of the pivot moves to smaller x);
  - pitch about the x axis: positive pitch turns the face DOWN (the nose tip moves to larger
    y, i.e. down the image);
  - roll about the z axis: positive roll turns the image content CLOCKWISE as displayed
    (+x goes to +y, which is down).
"""

from __future__ import annotations

import math

import torch

DEFAULT_FOV_DEG = 10.0  # Unsup3D / LatentFace field of view
PIVOT_DEPTH = 1.0  # faces live at depth ~0.9..1.1; poses rotate about (0, 0, PIVOT_DEPTH)


def tan_half_fov(fov_deg: float) -> float:
    """``tan(fov / 2)``: the half-extent of the image plane at depth 1 (the inverse focal length, x2)."""
    if not 0.0 < float(fov_deg) < 180.0:
        raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
    return math.tan(math.radians(float(fov_deg)) / 2.0)


def pixel_centers(size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised coordinates of ``size`` pixel centres, ``(2 j + 1) / size - 1`` (align_corners=False)."""
    return (torch.arange(size, device=device, dtype=dtype) * 2.0 + 1.0) / size - 1.0


def image_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """The (H, W, 2) grid of pixel-centre coordinates (x, y), the identity grid of ``grid_sample``."""
    ys = pixel_centers(height, device, dtype)
    xs = pixel_centers(width, device, dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1)  # (H, W, 2)


def rotation_matrix(yaw_deg: torch.Tensor, pitch_deg: torch.Tensor, roll_deg: torch.Tensor) -> torch.Tensor:
    """Rotation ``Rz(roll) @ Ry(yaw) @ Rx(pitch)`` from angles in degrees, each (B,) -> (B, 3, 3)."""
    yaw = torch.deg2rad(torch.as_tensor(yaw_deg)).reshape(-1)
    pitch = torch.deg2rad(torch.as_tensor(pitch_deg, dtype=yaw.dtype, device=yaw.device)).reshape(-1)
    roll = torch.deg2rad(torch.as_tensor(roll_deg, dtype=yaw.dtype, device=yaw.device)).reshape(-1)
    zero, one = torch.zeros_like(yaw), torch.ones_like(yaw)

    def mat(rows):
        return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)

    cy, sy = torch.cos(yaw), torch.sin(yaw)
    cp, sp = torch.cos(pitch), torch.sin(pitch)
    cr, sr = torch.cos(roll), torch.sin(roll)
    rx = mat([[one, zero, zero], [zero, cp, -sp], [zero, sp, cp]])
    ry = mat([[cy, zero, sy], [zero, one, zero], [-sy, zero, cy]])
    rz = mat([[cr, -sr, zero], [sr, cr, zero], [zero, zero, one]])
    return rz @ ry @ rx  # (B, 3, 3)


def unproject(depth: torch.Tensor, fov_deg: float = DEFAULT_FOV_DEG) -> torch.Tensor:
    """Camera-space points seen by each pixel: (B, 1, H, W) depth -> (B, H, W, 3), ``d * K^-1 (u, v, 1)``."""
    if depth.dim() != 4 or depth.shape[1] != 1:
        raise ValueError(f"depth: expected shape (B, 1, H, W), got {tuple(depth.shape)}")
    _, _, h, w = depth.shape
    t = tan_half_fov(fov_deg)
    grid = image_grid(h, w, depth.device, depth.dtype) * t  # (H, W, 2)
    rays = torch.cat([grid, torch.ones_like(grid[..., :1])], dim=-1)  # (H, W, 3)
    return depth[:, 0, :, :, None] * rays  # (B, H, W, 3)


def project(points: torch.Tensor, fov_deg: float = DEFAULT_FOV_DEG) -> torch.Tensor:
    """Normalised image coordinates of camera-space points: (B, ..., 3) -> (B, ..., 2) in [-1, 1] on screen.

    Points behind or at the camera (z <= 0) have no valid projection; callers mask them.
    """
    t = tan_half_fov(fov_deg)
    return points[..., :2] / (points[..., 2:3] * t)


def _split_view(view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if view.dim() != 2 or view.shape[1] != 6:
        raise ValueError(f"view: expected shape (B, 6) = [yaw, pitch, roll, tx, ty, tz], got {tuple(view.shape)}")
    rot = rotation_matrix(view[:, 0], view[:, 1], view[:, 2])  # (B, 3, 3)
    return rot, view[:, 3:6]


def transform_points(points: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
    """Pose camera-space points: ``R (p - c) + c + t`` with c = (0, 0, PIVOT_DEPTH); (B, N, 3) -> (B, N, 3)."""
    rot, trans = _split_view(view)
    pivot = points.new_tensor([0.0, 0.0, PIVOT_DEPTH])
    return (points - pivot) @ rot.transpose(1, 2) + pivot + trans[:, None, :]


def inverse_transform_points(points: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
    """Undo ``transform_points``: ``R^T (p - c - t) + c``; (B, N, 3) -> (B, N, 3)."""
    rot, trans = _split_view(view)
    pivot = points.new_tensor([0.0, 0.0, PIVOT_DEPTH])
    return (points - pivot - trans[:, None, :]) @ rot + pivot
