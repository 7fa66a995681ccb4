"""Shading: normals of closed-form surfaces, Lambertian conventions, SH basis and the Lambertian -> SH map."""

import math

import numpy as np
import pytest
import torch

from facefactors.render import camera
from facefactors.render.shading import (
    depth_to_normal,
    lambertian,
    lambertian_to_sh,
    sh_basis,
    sh_shading,
)


def _sphere_quadrature(n_theta=64, n_phi=128):
    """Gauss-Legendre in cos(theta) x uniform phi: exact for polynomials of high degree on the sphere."""
    x, w = np.polynomial.legendre.leggauss(n_theta)
    phi = (np.arange(n_phi) + 0.5) * 2 * np.pi / n_phi
    ct, ph = np.meshgrid(x, phi, indexing="ij")
    st = np.sqrt(1 - ct ** 2)
    n = np.stack([st * np.cos(ph), st * np.sin(ph), ct], 0)  # (3, T, P)
    weights = np.repeat(w[:, None], n_phi, 1) * (2 * np.pi / n_phi)
    return torch.from_numpy(n)[None].double(), torch.from_numpy(weights).double()


def test_frontal_plane_normal_faces_camera():
    n = depth_to_normal(torch.full((2, 1, 5, 8), 1.3))
    assert n.shape == (2, 3, 5, 8)
    torch.testing.assert_close(n, torch.tensor([0.0, 0.0, -1.0]).view(1, 3, 1, 1).expand(2, 3, 5, 8))


def test_tilted_plane_normal_direction():
    # a plane z = 1 + a X (farther on the right) faces the image's right: n ~ (a, 0, -1)
    h, w, a = 6, 9, 0.5
    t = math.tan(math.radians(camera.DEFAULT_FOV_DEG / 2))
    u = camera.image_grid(h, w, dtype=torch.float64)[..., 0]
    depth = (1.0 / (1.0 - a * u * t))[None, None]  # solves z = 1 + a * (u t z)
    n = depth_to_normal(depth)
    expect = torch.tensor([a, 0.0, -1.0], dtype=torch.float64) / math.sqrt(1 + a * a)
    torch.testing.assert_close(n, expect.view(1, 3, 1, 1).expand_as(n))


def test_sphere_normals_match_analytic():
    h, w, r, cz = 80, 88, 0.06, 1.0
    t = math.tan(math.radians(camera.DEFAULT_FOV_DEG / 2))
    g = camera.image_grid(h, w, dtype=torch.float64) * t
    dirs = torch.cat([g, torch.ones_like(g[..., :1])], -1)
    dd = (dirs ** 2).sum(-1)
    disc = cz ** 2 - dd * (cz ** 2 - r ** 2)
    s = (cz - disc.clamp(min=0).sqrt()) / dd
    n = depth_to_normal(s[None, None])[0]
    pts = camera.unproject(s[None, None])[0]
    ref = (pts - torch.tensor([0, 0, cz], dtype=torch.float64)) / r  # outward = toward camera
    inner = ref[..., 2] < -0.5  # stay clear of the steep rim, where differences span the silhouette
    err = (n.permute(1, 2, 0)[inner] - ref[inner]).norm(dim=-1)
    assert inner.sum() > 100 and err.max() < 0.02


def test_lambertian_conventions():
    normal = torch.tensor([0.0, 0.0, -1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 3)
    light = torch.tensor([[0.2, 0.7, 0.0, 0.0]])
    torch.testing.assert_close(lambertian(normal, light), torch.full((1, 1, 2, 3), 0.9))
    # light from the right (lx > 0) brightens a normal facing right, not one facing left
    right = torch.tensor([0.6, 0.0, -0.8]).view(1, 3, 1, 1)
    left = torch.tensor([-0.6, 0.0, -0.8]).view(1, 3, 1, 1)
    lit = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    assert lambertian(right, lit).item() > lambertian(left, lit).item()
    # ly > 0 lights the bottom (y down); a normal facing away from the light gets ambient only
    down = torch.tensor([0.0, 0.6, -0.8]).view(1, 3, 1, 1)
    up = torch.tensor([0.0, -1.0, 0.0]).view(1, 3, 1, 1)
    lit = torch.tensor([[0.1, 1.0, 0.0, 2.0]])
    assert lambertian(down, lit).item() > 0.9
    assert lambertian(up, lit).item() == pytest.approx(0.1)


def test_sh_basis_is_orthonormal():
    n, w = _sphere_quadrature()
    y = sh_basis(n)[0]  # (9, T, P)
    gram = torch.einsum("itp,jtp,tp->ij", y, y, w)
    torch.testing.assert_close(gram, torch.eye(9, dtype=torch.float64), atol=1e-10, rtol=0)


def test_lambertian_to_sh_equals_sh_projection_of_lambertian():
    torch.manual_seed(0)
    light = torch.cat([torch.rand(4, 2), torch.randn(4, 2)], 1).double()
    n, w = _sphere_quadrature(256, 256)  # the clamped cosine is not smooth: integrate finely
    shade = lambertian(n.expand(4, -1, -1, -1), light)[:, 0]  # (B, T, P)
    proj = torch.einsum("bkt p,btp,tp->bk".replace(" ", ""), sh_basis(n)[0:1].expand(4, -1, -1, -1), shade, w)
    sh = lambertian_to_sh(light)
    assert sh.shape == (4, 27)
    for c in range(3):
        torch.testing.assert_close(sh.view(4, 3, 9)[:, c], proj, atol=2e-4, rtol=0)


def test_sh_shading_approximates_lambertian_where_lit():
    torch.manual_seed(1)
    light = torch.cat([torch.rand(3, 2), 0.5 * torch.randn(3, 2)], 1).double()
    n, _ = _sphere_quadrature(32, 64)
    n = n.expand(3, -1, -1, -1)
    exact = lambertian(n, light)
    approx = sh_shading(n, lambertian_to_sh(light))
    assert approx.shape == (3, 3, 32, 64)
    # order-2 approximation of the clamped cosine: error within ~0.1 of the diffuse strength
    # (Ramamoorthi & Hanrahan 2001 report < 3% average, ~9% worst case)
    err = (approx - exact).abs().amax(dim=(1, 2, 3))
    assert (err <= 0.1 * light[:, 1] + 1e-9).all()


def test_sh_shading_channels_and_gradients():
    torch.manual_seed(2)
    normal = torch.nn.functional.normalize(torch.randn(2, 3, 4, 5, dtype=torch.float64), dim=1)
    sh = torch.randn(2, 27, dtype=torch.float64, requires_grad=True)
    out = sh_shading(normal, sh)
    ref = (sh.view(2, 3, 9)[:, :, :, None, None] * sh_basis(normal)[:, None]).sum(2)
    torch.testing.assert_close(out, ref)
    depth = (1.0 + 0.05 * torch.rand(1, 1, 5, 6, dtype=torch.float64)).requires_grad_()
    light = torch.tensor([[0.3, 0.6, 0.2, -0.1]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda d, l: lambertian(depth_to_normal(d), l), (depth, light))
