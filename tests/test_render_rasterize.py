"""Forward rasteriser: closed-form plane and sphere, convention pins, watertightness."""

import math

import pytest
import torch
from scipy import ndimage

from facefactors.render import camera
from facefactors.render.rasterize import Raster, rasterize_height_field

FOV = camera.DEFAULT_FOV_DEG


def _view(b, yaw=0.0, pitch=0.0, roll=0.0, t=(0.0, 0.0, 0.0), dtype=torch.float32):
    return torch.tensor([[yaw, pitch, roll, *t]], dtype=dtype).expand(b, 6).contiguous()


def test_frontal_plane_reproduces_canonical_exactly():
    h, w, z = 9, 13, 1.05  # H != W
    torch.manual_seed(0)
    attr = torch.rand(2, 3, h, w)
    depth = torch.full((2, 1, h, w), z)
    r = rasterize_height_field(depth, attr, None, _view(2), image_size=(h, w), supersample=1)
    assert isinstance(r, Raster)
    assert r.image.shape == (2, 3, h, w) and r.depth.shape == (2, 1, h, w)
    assert r.mask.shape == (2, 1, h, w) and r.canonical_uv.shape == (2, 2, h, w)
    torch.testing.assert_close(r.image, attr, atol=1e-4, rtol=0)
    torch.testing.assert_close(r.depth, depth, atol=1e-5, rtol=0)
    torch.testing.assert_close(r.mask, torch.ones_like(r.mask))
    grid = camera.image_grid(h, w).permute(2, 0, 1).expand(2, 2, h, w)
    torch.testing.assert_close(r.canonical_uv, grid, atol=1e-5, rtol=0)


def test_supersampled_linear_ramp_interior_and_border_coverage():
    h, w = 10, 14
    ramp = camera.image_grid(h, w).permute(2, 0, 1)[None]  # (1, 2, H, W) linear attributes
    depth = torch.full((1, 1, h, w), 0.95)
    r = rasterize_height_field(depth, ramp, None, _view(1), image_size=(h, w), supersample=2)
    torch.testing.assert_close(r.image[..., 1:-1, 1:-1], ramp[..., 1:-1, 1:-1], atol=1e-4, rtol=0)
    torch.testing.assert_close(r.mask[..., 1:-1, 1:-1], torch.ones(1, 1, h - 2, w - 2))
    # the mesh spans pixel centre to pixel centre: border pixels are half covered, corners a quarter
    assert r.mask[0, 0, 0, 5].item() == pytest.approx(0.5)
    assert r.mask[0, 0, 0, 0].item() == pytest.approx(0.25)


def test_offcentre_mask_not_transposed():
    h, w = 11, 16
    mask = torch.zeros(1, 1, h, w)
    mask[..., 2:5, 9:14] = 1.0  # top-right block
    depth = torch.ones(1, 1, h, w)
    depth[..., 3, 11] = 0.97  # a bump inside the block
    r = rasterize_height_field(depth, depth, mask, _view(1), image_size=(h, w), supersample=1)
    torch.testing.assert_close(r.mask, mask)
    assert r.depth[0, 0, 3, 11].item() == pytest.approx(0.97, abs=1e-5)
    assert (r.depth[r.mask == 0] == 0).all() and (r.image[r.mask.expand_as(r.image) == 0] == 0).all()


def _sphere_depth(h, w, centre_z=1.0, radius=0.07, fov=FOV):
    """Analytic depth of the front of a sphere centred on the optical axis: (1, 1, H, W), 0 = miss."""
    t = math.tan(math.radians(fov / 2))
    g = camera.image_grid(h, w, dtype=torch.float64) * t
    dirs = torch.cat([g, torch.ones_like(g[..., :1])], -1)  # rays with unit z
    dc = dirs[..., 2] * centre_z
    dd = (dirs ** 2).sum(-1)
    disc = dc ** 2 - dd * (centre_z ** 2 - radius ** 2)
    s = (dc - disc.clamp(min=0).sqrt()) / dd
    return torch.where(disc > 0, s, torch.zeros_like(s))[None, None], (disc > 0)[None, None]


@pytest.mark.parametrize("yaw", [0.0, 30.0])
def test_sphere_depth_and_coverage(yaw):
    depth, hit = _sphere_depth(96, 96)
    depth = torch.where(hit, depth, torch.ones_like(depth)).float()
    out_h, out_w = 41, 53  # different resolution and aspect from the canonical grid
    r = rasterize_height_field(depth, depth, hit.float(), _view(1, yaw=yaw), image_size=(out_h, out_w),
                               supersample=1)
    ref, ref_hit = _sphere_depth(out_h, out_w)
    covered = r.mask[0, 0] > 0.5
    # rotating about the sphere's centre (the pivot) leaves the visible surface on the sphere
    err = (r.depth[0, 0] - ref[0, 0].float()).abs()
    inner = torch.from_numpy(ndimage.binary_erosion(covered.numpy(), iterations=3))
    assert err[inner].max() < 2e-4  # chord error of the mesh away from the steep rim
    assert err[covered].mean() < 2e-4
    if yaw == 0.0:
        # coverage agrees with the analytic silhouette except within a pixel of the boundary
        ref_inner = torch.from_numpy(ndimage.binary_erosion(ref_hit[0, 0].numpy(), iterations=2))
        assert covered[ref_inner].all()
        assert not covered[~ref_hit[0, 0]].any()
    else:
        # the far rim of the rotated cap is missing, the near side is covered
        assert covered.sum() < ref_hit.sum()


def test_yaw_moves_tip_to_documented_side():
    h, w = 40, 48
    g = camera.image_grid(h, w)
    depth = (1.0 - 0.08 * torch.exp(-((g[..., 0] - 0.2) ** 2 + (g[..., 1] + 0.1) ** 2) / 0.02))[None, None]
    tip = torch.nonzero(depth[0, 0] == depth.min())[0]
    for yaw, side in [(25.0, -1), (-25.0, 1)]:
        r = rasterize_height_field(depth, depth, None, _view(1, yaw=yaw), supersample=1)
        d = torch.where(r.mask > 0.5, r.depth, torch.full_like(r.depth, 9.0))
        iy, ix = divmod(int(torch.argmin(d)), w)
        x_before = (2 * tip[1].item() + 1) / w - 1
        x_after = (2 * ix + 1) / w - 1
        assert side * (x_after - x_before) > 0.1
        # and exactly where the camera puts the tip
        p = camera.unproject(depth, FOV)[:, tip[0], tip[1]][:, None]
        xy = camera.project(camera.transform_points(p, _view(1, yaw=yaw)))[0, 0]
        assert abs(xy[0].item() - x_after) <= 2.0 / w and abs(xy[1].item() - ((2 * iy + 1) / h - 1)) <= 2.0 / h


@pytest.mark.parametrize("yaw", [-45.0, 45.0])
def test_watertight_random_smooth_surface(yaw):
    torch.manual_seed(3)
    h, w = 33, 29
    noise = torch.nn.functional.interpolate(torch.randn(2, 1, 5, 4), size=(h, w), mode="bicubic",
                                            align_corners=False)
    depth = 1.0 + 0.03 * noise
    r = rasterize_height_field(depth, depth, None, _view(2, yaw=yaw, pitch=10.0), image_size=(40, 36), supersample=2)
    for m in (r.mask[:, 0] > 0).numpy():
        assert m.sum() > 100
        assert (ndimage.binary_fill_holes(m) == m).all(), "hole in the rendered surface"
    assert torch.isfinite(r.image).all() and torch.isfinite(r.depth).all()


def test_batch_items_independent():
    torch.manual_seed(4)
    depth = 1.0 + 0.02 * torch.rand(3, 1, 12, 10)
    attr = torch.rand(3, 2, 12, 10)
    view = torch.tensor([[10.0, 0, 0, 0, 0, 0], [-20.0, 5, 3, 0.01, 0, 0], [0.0, -8, 0, 0, 0.01, 0.02]])
    full = rasterize_height_field(depth, attr, None, view, image_size=(15, 11))
    for i in range(3):
        one = rasterize_height_field(depth[i:i + 1], attr[i:i + 1], None, view[i:i + 1], image_size=(15, 11))
        torch.testing.assert_close(one.image, full.image[i:i + 1])
        torch.testing.assert_close(one.depth, full.depth[i:i + 1])


def test_empty_mask_and_back_facing_view():
    depth = 1.0 + 0.01 * torch.rand(2, 1, 8, 9)
    attr = torch.rand(2, 3, 8, 9)
    r = rasterize_height_field(depth, attr, torch.zeros(2, 1, 8, 9), _view(2))
    assert r.mask.sum() == 0 and r.image.abs().sum() == 0 and r.depth.abs().sum() == 0
    # seen from behind (yaw 180) the surface is still rendered (no back-face culling), mirrored
    flat = torch.ones(1, 1, 8, 9)
    ramp = camera.image_grid(8, 9).permute(2, 0, 1)[None, :1]  # x coordinate
    r = rasterize_height_field(flat, ramp, None, _view(1, yaw=180.0), supersample=1)
    torch.testing.assert_close(r.image, ramp.flip(-1), atol=1e-4, rtol=0)


def test_bad_shapes_raise():
    d = torch.ones(1, 1, 5, 5)
    with pytest.raises(ValueError, match="attributes"):
        rasterize_height_field(d, torch.ones(1, 3, 5, 4), None, _view(1))
    with pytest.raises(ValueError, match="view"):
        rasterize_height_field(d, d, None, torch.zeros(1, 3))


def test_table_resolve_matches_autograd_interpolation():
    # without gradients the z-buffer's per-triangle tables resolve pixels; with gradients the
    # winners are re-interpolated: both must give the same raster
    torch.manual_seed(5)
    h, w = 21, 17
    noise = torch.nn.functional.interpolate(torch.randn(2, 1, 4, 4), size=(h, w), mode="bicubic", align_corners=False)
    depth = 1.0 + 0.04 * noise
    attr = torch.rand(2, 3, h, w)
    mask = torch.ones(2, 1, h, w)
    mask[0, :, :3] = 0
    view = _view(2, yaw=35.0, pitch=-8.0, roll=4.0, t=(0.002, -0.001, 0.01))
    fast = rasterize_height_field(depth, attr, mask, view, image_size=(19, 23), supersample=2)
    slow = rasterize_height_field(depth.clone().requires_grad_(), attr, mask, view, image_size=(19, 23),
                                  supersample=2)
    torch.testing.assert_close(fast.mask, slow.mask)
    for name in ("image", "depth", "canonical_uv"):
        torch.testing.assert_close(getattr(fast, name), getattr(slow, name).detach(), atol=2e-5, rtol=0)
