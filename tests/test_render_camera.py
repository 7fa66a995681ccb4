"""Convention pins for render/camera.py (asymmetric inputs so a transposed or flipped grid fails)."""

import math

import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.transform import Rotation

from facefactors.render import camera


def test_constants():
    assert camera.DEFAULT_FOV_DEG == 10.0
    assert camera.PIVOT_DEPTH == 1.0


def test_rotation_matches_scipy_intrinsic_zyx():
    torch.manual_seed(0)
    ang = torch.rand(5, 3, dtype=torch.float64) * 120 - 60  # yaw, pitch, roll
    rot = camera.rotation_matrix(ang[:, 0], ang[:, 1], ang[:, 2])
    # R = Rz(roll) Ry(yaw) Rx(pitch): scipy's intrinsic "ZYX" with angles (roll, yaw, pitch)
    ref = Rotation.from_euler("ZYX", ang[:, [2, 0, 1]].numpy(), degrees=True).as_matrix()
    assert rot.shape == (5, 3, 3)
    torch.testing.assert_close(rot, torch.from_numpy(ref))
    torch.testing.assert_close(rot @ rot.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(5, 3, 3))


def _nose_image_xy(yaw=0.0, pitch=0.0, roll=0.0, nose=(0.0, 0.0, 0.9)):
    p = torch.tensor([[nose]], dtype=torch.float64)
    view = torch.tensor([[yaw, pitch, roll, 0.0, 0.0, 0.0]], dtype=torch.float64)
    return camera.project(camera.transform_points(p, view))[0, 0]


def test_positive_yaw_turns_face_to_image_left():
    x, y = _nose_image_xy(yaw=30.0)
    assert x < -0.5 and abs(y) < 1e-12
    x, _ = _nose_image_xy(yaw=-30.0)
    assert x > 0.5


def test_positive_pitch_turns_face_down():
    x, y = _nose_image_xy(pitch=20.0)
    assert y > 0.3 and abs(x) < 1e-12


def test_positive_roll_is_clockwise_on_screen():
    # a point to the right of the pivot moves down the image (y down) under positive roll
    x, y = _nose_image_xy(roll=30.0, nose=(0.05, 0.0, 1.0))
    assert y > 0 and x > 0
    assert math.isclose(math.atan2(y, x), math.radians(30.0), rel_tol=1e-9)


def test_unproject_asymmetric_pixel_centres():
    h, w, fov = 3, 5, 10.0
    depth = torch.arange(h * w, dtype=torch.float64).reshape(1, 1, h, w) + 1.0
    pts = camera.unproject(depth, fov)
    assert pts.shape == (1, h, w, 3)
    t = math.tan(math.radians(fov / 2))
    i, j = 2, 1  # bottom row, second column: x < 0, y > 0
    d = depth[0, 0, i, j].item()
    expect = [d * ((2 * j + 1) / w - 1) * t, d * ((2 * i + 1) / h - 1) * t, d]
    torch.testing.assert_close(pts[0, i, j], torch.tensor(expect, dtype=torch.float64))


def test_project_inverts_unproject_and_plugs_into_grid_sample():
    h, w = 4, 7
    torch.manual_seed(1)
    depth = 0.9 + 0.2 * torch.rand(2, 1, h, w, dtype=torch.float64)
    xy = camera.project(camera.unproject(depth, 13.0), 13.0)  # (B, H, W, 2)
    torch.testing.assert_close(xy, camera.image_grid(h, w, dtype=torch.float64).expand(2, h, w, 2))
    img = torch.rand(2, 3, h, w, dtype=torch.float64)
    out = F.grid_sample(img, xy, align_corners=False)
    torch.testing.assert_close(out, img)


def test_transform_rotates_about_pivot_and_inverse():
    torch.manual_seed(2)
    pts = torch.rand(3, 10, 3, dtype=torch.float64) + torch.tensor([0, 0, 0.5], dtype=torch.float64)
    view = torch.tensor([[20.0, -10.0, 5.0, 0.01, -0.02, 0.03]], dtype=torch.float64).expand(3, 6)
    out = camera.transform_points(pts, view)
    back = camera.inverse_transform_points(out, view)
    torch.testing.assert_close(back, pts)
    pivot = torch.tensor([[[0.0, 0.0, camera.PIVOT_DEPTH]]], dtype=torch.float64).expand(3, 1, 3)
    moved = camera.transform_points(pivot, view)
    torch.testing.assert_close(moved, pivot + view[:, None, 3:])
    # rigid: distances preserved
    torch.testing.assert_close(torch.cdist(out, out), torch.cdist(pts, pts))


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        camera.unproject(torch.ones(1, 2, 3, 3))
    with pytest.raises(ValueError):
        camera.transform_points(torch.ones(1, 4, 3), torch.zeros(1, 5))
