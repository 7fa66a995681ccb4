"""Shading of height fields: normals, Lambertian (Unsup3D) and spherical-harmonics (DiscoFaceGAN) lighting.

* ``depth_to_normal``: Unsup3D (Wu et al. 2020, sec. 3.3, "the normal n is computed from the
  depth map d by finite differences of the 3-D points d K^-1 p") -- central differences of the
  unprojected grid, one-sided at the border.
* ``lambertian``: Unsup3D's shading ``k_s + k_d max(0, <l, n>)`` with light = [ambient k_s,
  diffuse k_d, l_x, l_y] (LatentFace supp. D uses the same four numbers).
* ``sh_basis`` / ``sh_shading``: the 9 real spherical harmonics of orders 0-2 (DiscoFaceGAN,
  Deng et al. 2020, sec. 3.1: illumination approximated by SH with a 27-number vector gamma,
  9 per RGB channel, as in Ramamoorthi & Hanrahan 2001).
* ``lambertian_to_sh``: the SH equivalent of ambient + directional light: the order-2 SH
  projection of the clamped cosine (Ramamoorthi & Hanrahan 2001, eqs. 8-9: zonal coefficients
  pi, 2 pi / 3, pi / 4 for orders 0, 1, 2).

Conventions (camera.py): camera space x right, y down, z away from the camera; normals are
unit vectors pointing TOWARD the camera side of the surface, so a surface facing the camera
has n_z < 0. The light direction of ``lambertian`` points from the surface toward the light:
``l = normalize(l_x, l_y, -1)`` -- Unsup3D's ``(l_x, l_y, 1)`` written in our z-away camera
frame, so ``l_x = l_y = 0`` is a light at the camera, ``l_x > 0`` lights the image's right
side and ``l_y > 0`` lights the bottom (y down).

SH coefficients here are coefficients of the *shading function* (irradiance) in the standard
orthonormal real SH basis: ``shading_c(n) = sum_k sh[c, k] Y_k(n)``, ``sh.view(B, 3, 9)``
channel-major (R, G, B). (DiscoFaceGAN/Deep3DFaceRecon fold the Lambertian constants and signs
into their basis; multiply their gamma by those constants to get these coefficients.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from facefactors.render import camera

# Normalisation constants of the real spherical harmonics of orders 0-2.
_C0 = 0.5 * math.sqrt(1.0 / math.pi)  # 0.282095, Y_00
_C1 = math.sqrt(3.0 / (4.0 * math.pi))  # 0.488603, Y_1m
_C2 = 0.5 * math.sqrt(15.0 / math.pi)  # 1.092548, Y_2,-2 Y_2,-1 Y_2,1
_C20 = 0.25 * math.sqrt(5.0 / math.pi)  # 0.315392, Y_20
_C22 = 0.25 * math.sqrt(15.0 / math.pi)  # 0.546274, Y_22
# Clamped-cosine zonal coefficients A_l (Ramamoorthi & Hanrahan 2001): max(0, n.l) has SH
# coefficients A_l Y_lm(l).
_A = (math.pi, 2.0 * math.pi / 3.0, math.pi / 4.0)
_SH_ORDER = (0, 1, 1, 1, 2, 2, 2, 2, 2)  # order l of each of the 9 basis functions


def depth_to_normal(depth: torch.Tensor, fov_deg: float = camera.DEFAULT_FOV_DEG) -> torch.Tensor:
    """Unit camera-space normals of a depth map: (B, 1, H, W) -> (B, 3, H, W), facing the camera: n_z < 0."""
    pts = camera.unproject(depth, fov_deg).permute(0, 3, 1, 2).contiguous()  # (B, 3, H, W)
    # replicate padding makes the border differences one-sided (same direction, half length)
    pad = F.pad(pts, (1, 1, 1, 1), mode="replicate")
    du = pad[:, :, 1:-1, 2:] - pad[:, :, 1:-1, :-2]  # along +x (columns)
    dv = pad[:, :, 2:, 1:-1] - pad[:, :, :-2, 1:-1]  # along +y (rows, down)
    # dv x du faces the camera (-z for a frontal plane; du x dv would point away). Written out
    # per component: torch.cross and norm over the channel dim are several times slower on CPU.
    ux, uy, uz = du.unbind(1)
    vx, vy, vz = dv.unbind(1)
    nx, ny, nz = vy * uz - vz * uy, vz * ux - vx * uz, vx * uy - vy * ux
    inv = torch.rsqrt((nx * nx + ny * ny + nz * nz).clamp(min=1e-24))
    return torch.stack([nx * inv, ny * inv, nz * inv], 1)


def light_direction(light: torch.Tensor) -> torch.Tensor:
    """Unit direction toward the light from Unsup3D's light (B, 4) = [ambient, diffuse, lx, ly]: (B, 3)."""
    if light.dim() != 2 or light.shape[1] != 4:
        raise ValueError(f"light: expected shape (B, 4) = [ambient, diffuse, lx, ly], got {tuple(light.shape)}")
    d = torch.stack([light[:, 2], light[:, 3], -torch.ones_like(light[:, 2])], -1)
    return d / d.norm(dim=-1, keepdim=True)


def lambertian(normal: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """Unsup3D shading ``ambient + diffuse * max(0, <n, l>)``: normals (B, 3, H, W) -> (B, 1, H, W)."""
    d = light_direction(light)  # (B, 3)
    cos = (normal * d[:, :, None, None]).sum(1, keepdim=True)  # (B, 1, H, W)
    return light[:, 0, None, None, None] + light[:, 1, None, None, None] * cos.clamp(min=0.0)


def sh_basis(normal: torch.Tensor) -> torch.Tensor:
    """The 9 real SH of orders 0-2 at unit normals: (B, 3, H, W) -> (B, 9, H, W).

    Order: Y_00, Y_1-1 (y), Y_10 (z), Y_11 (x), Y_2-2 (xy), Y_2-1 (yz), Y_20 (3z^2 - 1),
    Y_21 (xz), Y_22 (x^2 - y^2), orthonormal on the unit sphere.
    """
    x, y, z = normal[:, 0], normal[:, 1], normal[:, 2]
    return torch.stack([
        torch.full_like(x, _C0),
        _C1 * y, _C1 * z, _C1 * x,
        _C2 * x * y, _C2 * y * z, _C20 * (3.0 * z * z - 1.0), _C2 * x * z, _C22 * (x * x - y * y),
    ], 1)


def sh_shading(normal: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
    """RGB shading ``sum_k sh[c, k] Y_k(n)``: normals (B, 3, H, W), sh (B, 27) -> (B, 3, H, W)."""
    if sh.dim() != 2 or sh.shape[1] != 27:
        raise ValueError(f"sh: expected shape (B, 27) (9 coefficients per RGB channel), got {tuple(sh.shape)}")
    return torch.einsum("bck,bkhw->bchw", sh.view(-1, 3, 9), sh_basis(normal))


def lambertian_to_sh(light: torch.Tensor) -> torch.Tensor:
    """SH coefficients (B, 27) of Unsup3D's ambient + directional light, the same for R, G, B.

    ``sh_shading(n, lambertian_to_sh(light))`` is exactly the order-2 SH projection of
    ``lambertian(n, light)`` over the sphere of normals: the ambient term is a constant
    (coefficient ``ambient * sqrt(4 pi)`` on Y_00) and the clamped cosine ``max(0, <n, l>)``
    projects to ``A_l Y_lm(l)``.
    """
    d = light_direction(light)  # (B, 3)
    y_l = sh_basis(d[:, :, None, None])[:, :, 0, 0]  # (B, 9)
    a = y_l.new_tensor([_A[o] for o in _SH_ORDER])
    coeff = light[:, 1:2] * a * y_l
    coeff = coeff + torch.cat([light[:, :1] * math.sqrt(4.0 * math.pi), torch.zeros_like(coeff[:, 1:])], 1)
    return coeff[:, None, :].expand(-1, 3, 9).reshape(-1, 27)
