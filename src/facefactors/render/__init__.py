"""The pure-PyTorch renderer of facefactors: camera conventions, height-field z-buffer, shading, inverse warp.

Conventions live in ``render/camera.py`` (read its docstring); everything here follows them.
"""

from facefactors.render.camera import (
    DEFAULT_FOV_DEG,
    PIVOT_DEPTH,
    image_grid,
    inverse_transform_points,
    project,
    rotation_matrix,
    transform_points,
    unproject,
)
from facefactors.render.rasterize import Raster, rasterize_height_field
from facefactors.render.shading import (
    depth_to_normal,
    lambertian,
    lambertian_to_sh,
    sh_basis,
    sh_shading,
)
from facefactors.render.warp import render_view, warp_grid

__all__ = [
    "DEFAULT_FOV_DEG",
    "PIVOT_DEPTH",
    "Raster",
    "depth_to_normal",
    "image_grid",
    "inverse_transform_points",
    "lambertian",
    "lambertian_to_sh",
    "project",
    "rasterize_height_field",
    "render_view",
    "rotation_matrix",
    "sh_basis",
    "sh_shading",
    "transform_points",
    "unproject",
    "warp_grid",
]
