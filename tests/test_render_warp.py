"""Differentiable inverse-warp path (Unsup3D): identity, agreement with the forward rasteriser, gradients."""

import pytest
import torch

from facefactors.render import camera
from facefactors.render.rasterize import rasterize_height_field
from facefactors.render.shading import depth_to_normal, lambertian
from facefactors.render.warp import render_view, warp_grid


def _smooth_depth(b, h, w, amp=0.03, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(b, 1, 3, 4, generator=g, dtype=torch.float64)
    d = 1.0 + amp * torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    return d.to(dtype)


def _view(rows, dtype=torch.float32):
    return torch.tensor(rows, dtype=dtype)


def test_identity_view_reproduces_canonical_image():
    h, w = 9, 14
    depth = _smooth_depth(2, h, w)
    img = torch.rand(2, 3, h, w)
    out, mask = render_view(img, depth, torch.zeros(2, 6))
    assert out.shape == (2, 3, h, w) and mask.shape == (2, 1, h, w)
    torch.testing.assert_close(mask, torch.ones_like(mask))
    torch.testing.assert_close(out, img, atol=1e-4, rtol=0)


def test_translation_shifts_image_the_documented_way():
    # a frontal plane at the pivot depth moved right by one pixel's worth: content moves right
    h, w = 8, 12
    depth = torch.ones(1, 1, h, w)
    img = torch.rand(1, 1, h, w)
    shift = 2.0 / w * camera.tan_half_fov(camera.DEFAULT_FOV_DEG)  # one pixel at depth 1
    out, mask = render_view(img, depth, _view([[0, 0, 0, shift, 0, 0]]))
    torch.testing.assert_close(out[..., 1:], img[..., :-1], atol=1e-4, rtol=0)
    assert mask[..., 0].sum() == 0 and mask[..., 1:].min() == 1


@pytest.mark.parametrize("yaw,pitch", [(20.0, 0.0), (-35.0, 10.0)])
def test_agrees_with_forward_rasteriser(yaw, pitch):
    h, w = 24, 20
    depth = _smooth_depth(1, h, w, amp=0.02, seed=1)
    img = torch.rand(1, 3, h, w)
    view = _view([[yaw, pitch, 5.0, 0.002, -0.001, 0.01]])
    out, mask = render_view(img, depth, view)
    ras = rasterize_height_field(depth, img, None, view, supersample=1)
    both = (mask > 0) & (ras.mask > 0)
    assert both.sum() > 0.5 * h * w
    assert ((mask > 0) == (ras.mask > 0)).float().mean() > 0.98
    diff = (out - ras.image).abs()[both.expand_as(out)]
    assert diff.max() < 1e-3


def test_posed_depth_of_plane():
    # a frontal plane at depth 1.1 translated by tz keeps its depth + tz everywhere it is seen
    depth = torch.full((1, 1, 6, 9), 1.1)
    _, mask, posed = warp_grid(depth, _view([[0, 0, 0, 0, 0, 0.05]]))
    torch.testing.assert_close(posed[mask > 0], torch.full_like(posed[mask > 0], 1.15))


def test_gradcheck_depth_image_view():
    h, w = 6, 7
    depth = _smooth_depth(1, h, w, amp=0.02, seed=3, dtype=torch.float64).requires_grad_()
    img = torch.rand(1, 2, h, w, dtype=torch.float64, requires_grad=True)
    view = torch.tensor([[7.0, -4.0, 3.0, 0.001, 0.002, 0.01]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda d, i, v: render_view(i, d, v)[0], (depth, img, view),
                                    eps=1e-6, atol=1e-5)


def test_every_input_gets_a_gradient_no_nan():
    b, h, w = 2, 16, 18
    depth = _smooth_depth(b, h, w, seed=4).requires_grad_()
    albedo = torch.rand(b, 3, h, w, requires_grad=True)
    light = torch.tensor([[0.3, 0.6, 0.2, -0.1], [0.5, 0.4, -0.3, 0.2]], requires_grad=True)
    view = torch.tensor([[15.0, 5.0, -3.0, 0.01, 0.0, 0.02], [-30.0, 0.0, 2.0, 0.0, 0.01, 0.0]], requires_grad=True)
    shaded = albedo * lambertian(depth_to_normal(depth), light)
    mask = torch.ones(b, 1, h, w)
    mask[..., :2, :] = 0  # a partial support must not break gradients
    out, vis = render_view(shaded, depth, view, canonical_mask=mask)
    (out * torch.rand_like(out)).sum().backward()
    for name, t in [("depth", depth), ("albedo", albedo), ("light", light), ("view", view)]:
        assert t.grad is not None, name
        assert torch.isfinite(t.grad).all(), name
        assert t.grad.abs().sum() > 0, name
    assert torch.isfinite(out).all() and vis.sum() > 0
