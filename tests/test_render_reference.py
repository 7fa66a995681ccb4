"""The z-buffer against an independent renderer: trimesh ray casting with embree on the same mesh.

One ray per output pixel centre through the same perspective camera (render/camera.py); random
smooth height fields with an off-centre support and poses up to 45 degrees of yaw.
"""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from facefactors.render import camera
from facefactors.render.rasterize import grid_faces, rasterize_height_field

trimesh = pytest.importorskip("trimesh", reason="trimesh is a test-only dependency (pip install -e .[dev])")
if not trimesh.ray.has_embree:
    pytest.skip("embreex is not installed: the reference ray caster needs it (pip install embreex)",
                allow_module_level=True)

HC, WC = 44, 38  # canonical grid, H != W
OUT = (36, 46)  # output image, a different size and aspect


def _surface(seed):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 1, 4, 4, generator=g, dtype=torch.float64)
    depth = 1.0 + 0.04 * torch.nn.functional.interpolate(coarse, size=(HC, WC), mode="bicubic", align_corners=False)
    grid = camera.image_grid(HC, WC, dtype=torch.float64)
    ell = ((grid[..., 0] - 0.1) / 0.75) ** 2 + ((grid[..., 1] + 0.05) / 0.85) ** 2
    mask = (ell < 1.0).to(torch.float64)[None, None]
    return depth, mask


def _ray_cast(depth, mask, view):
    """Depth (H, W) and hit mask of the first intersection along each pixel-centre ray (embree)."""
    pts = camera.unproject(depth).reshape(1, -1, 3)
    posed = camera.transform_points(pts, view)[0].numpy()
    faces = grid_faces(HC, WC).numpy()
    on = mask.reshape(-1).numpy() > 0.5
    faces = faces[on[faces].all(1)]
    mesh = trimesh.Trimesh(vertices=posed, faces=faces, process=False)
    h, w = OUT
    t = math.tan(math.radians(camera.DEFAULT_FOV_DEG / 2))
    xy = camera.image_grid(h, w, dtype=torch.float64).reshape(-1, 2).numpy() * t
    dirs = np.concatenate([xy, np.ones((h * w, 1))], 1)
    locs, ray_idx, _ = mesh.ray.intersects_location(np.zeros_like(dirs), dirs, multiple_hits=False)
    ref = np.zeros(h * w)
    ref[ray_idx] = locs[:, 2]
    return ref.reshape(h, w), (ref > 0).reshape(h, w)


@pytest.mark.parametrize("seed,view", [
    (0, [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
    (1, [45.0, 5.0, 0.0, 0.0, 0.0, 0.0]),
    (2, [-45.0, -10.0, 8.0, 0.003, -0.002, 0.02]),
    (3, [30.0, 15.0, -12.0, -0.004, 0.001, -0.03]),
])
def test_depth_and_coverage_match_embree(seed, view):
    depth, mask = _surface(seed)
    view_t = torch.tensor([view], dtype=torch.float64)
    ref_depth, ref_hit = _ray_cast(depth, mask, view_t)
    r = rasterize_height_field(depth.float(), depth.float(), mask.float(), view_t.float(), image_size=OUT,
                               supersample=1)
    ours_hit = r.mask[0, 0].numpy() > 0.5
    # away from the silhouette: pixels whose 3 x 3 neighbourhood is all hit or all miss in the reference
    interior = ndimage.binary_erosion(ref_hit, np.ones((3, 3)))
    exterior = ndimage.binary_erosion(~ref_hit, np.ones((3, 3)), border_value=1)
    away = interior | exterior
    inter = (ours_hit & ref_hit & away).sum()
    union = ((ours_hit | ref_hit) & away).sum()
    assert ref_hit.sum() > 200
    assert inter / union >= 0.98
    both = ours_hit & ref_hit & away
    ours_depth = r.depth[0, 0].double().numpy()
    rel = np.abs(ours_depth[both] - ref_depth[both]) / ref_depth[both]
    assert rel.mean() < 1e-3
    assert rel.max() < 1e-5  # the same triangles, the same first hit: agreement to float32 precision
