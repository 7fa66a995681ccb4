"""Forward rasterisation of height fields by a vectorised z-buffer (pure PyTorch, CPU and GPU).

The surface is Unsup3D's (Wu et al. 2020, sec. 3.3; LatentFace, He et al., supp. D): a canonical
depth map d(u, v) whose grid points ``d * K^-1 (u, v, 1)`` are the vertices of a triangle mesh
(two triangles per grid cell, only where the canonical mask is on). The mesh is posed with
``camera.transform_points`` and projected with ``camera.project``; conventions are those of
``render/camera.py``.

Z-buffer without loops over pixels (``zbuffer.py``): every triangle enumerates the pixel centres
of its screen bounding box (triangles are bucketed by box size, so one bucket is one dense tensor op),
keeps the centres that pass the barycentric inside test (inclusive by a small epsilon, so
shared edges never leave holes: the mesh renders watertight), and writes a packed int64 key
``(1/z bits << 32) | triangle`` into its pixel with ``scatter_reduce(..., "amax")`` -- the
nearest surface has the largest 1/z, and 1/z is linear in screen space, so it is evaluated
exactly at the pixel centre. Triangles lie on the innermost (contiguous) axis of every tensor
op, so each op is one long vector op. Without gradients a pixel's winner is resolved from
per-triangle affine tables in one gather (``zbuffer.resolve``); with gradients w.r.t. depth or
view it is re-evaluated with perspective-correct barycentrics (``interpolate``): the
*choice* of the visible triangle is not differentiable, the depth and canonical coordinates of
the chosen point are. Attributes are a texture on the canonical grid, read bilinearly at those
canonical coordinates (``grid_sample``), as the inverse warp of ``warp.py`` reads them.
There is no back-face culling: a surface seen from behind renders mirrored.

Supersampling renders at ``s H x s W`` and average-pools; ``mask`` is the fraction of covered
sub-samples (coverage), ``image`` is premultiplied by coverage (empty sub-samples count as 0,
so ``image + (1 - mask) * background`` composites), ``depth`` and ``canonical_uv`` are the mean
over the covered sub-samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from facefactors.render import camera
from facefactors.render.zbuffer import ZBuffer, resolve, zbuffer


@dataclass
class Raster:
    """Result of ``rasterize_height_field``; every field is batch-first."""

    image: torch.Tensor  # (B, C, H, W) attributes of the visible surface, premultiplied by coverage
    depth: torch.Tensor  # (B, 1, H, W) camera-space z of the visible surface, 0 where empty
    mask: torch.Tensor  # (B, 1, H, W) coverage in [0, 1]
    canonical_uv: torch.Tensor  # (B, 2, H, W) canonical-grid coordinates (x, y) in [-1, 1], 0 where empty


@dataclass
class Fragments:
    """Per-pixel winners of the z-buffer (no gradient): which grid triangle each covered pixel sees.

    A triangle is named by its cell's top-left vertex ``corner`` (global id ``(b Hc + i) Wc + j``)
    and ``second`` (0: triangle (a, b, c), 1: triangle (b, d, c); see ``grid_faces``).
    """

    batch: torch.Tensor  # (P,) batch index of every covered pixel
    y: torch.Tensor  # (P,) pixel row
    x: torch.Tensor  # (P,) pixel column
    corner: torch.Tensor  # (P,) global id of the top-left vertex of the cell of the visible triangle
    second: torch.Tensor  # (P,) long, 1 for the second triangle of the cell
    size: tuple[int, int, int]  # (B, H, W) of the raster

    @property
    def pixel(self) -> torch.Tensor:
        """(P,) flat index ``(b H + y) W + x``."""
        _, height, width = self.size
        return (self.batch * height + self.y) * width + self.x


def grid_faces(height: int, width: int, device=None) -> torch.Tensor:
    """Triangles of a (height x width) vertex grid in row-major vertex order: (2 (H-1)(W-1), 3).

    Cell (i, j) with corners a=(i, j), b=(i, j+1), c=(i+1, j), d=(i+1, j+1) gives (a, b, c) and
    (b, d, c); all first triangles come first, then all second ones. The diagonal is fixed, so
    the same grid always gives the same mesh (the reference test builds it in trimesh).
    """
    idx = torch.arange(height * width, device=device).reshape(height, width)
    a, b = idx[:-1, :-1].reshape(-1), idx[:-1, 1:].reshape(-1)
    c, d = idx[1:, :-1].reshape(-1), idx[1:, 1:].reshape(-1)
    return torch.cat([torch.stack([a, b, c], -1), torch.stack([b, d, c], -1)], 0)  # (T, 3)


def to_pixels(xy: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Normalised image coordinates -> pixel units where pixel centre j sits at j (align_corners=False)."""
    scale = xy.new_tensor([width / 2.0, height / 2.0])
    return (xy + 1.0) * scale - 0.5


def fragments(zb: ZBuffer) -> Fragments:
    """The covered pixels of a ``zbuffer`` and their winning triangles, as a sparse ``Fragments``."""
    bsz, height, width = zb.size
    covered = zb.key >= 0
    pixel = covered.nonzero().squeeze(1)  # (P,) row-major
    ident = zb.ident.index_select(0, (zb.key.index_select(0, pixel) & 0xFFFFFFFF))
    x = pixel % width
    rows = pixel // width
    return Fragments(batch=rows // height, y=rows % height, x=x, corner=ident >> 1, second=ident & 1,
                     size=(bsz, height, width))


@torch.no_grad()
def rasterize_grid(
    screen: torch.Tensor,  # (3, B, Hc, Wc) grid vertex planes: x, y in pixel units (centre j at j), z = depth
    on: torch.Tensor,  # (B, Hc, Wc) bool, vertices that exist (a triangle needs all three)
    height: int,  # raster height in pixels
    width: int,  # raster width in pixels
) -> Fragments:
    """Vectorised z-buffer (``zbuffer.py``): for each pixel centre, the nearest grid triangle that covers it."""
    return fragments(zbuffer(screen, on, height, width))


def interpolate(
    frags: Fragments,  # winners of ``rasterize_grid``
    screen: torch.Tensor,  # (3, B, Hc, Wc) the same vertex planes, may carry gradients
    canonical_depth: torch.Tensor | None = None,  # (B, Hc, Wc) depth of the vertices in the canonical view
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Perspective-correct interpolation at each covered pixel centre of its winning triangle.

    Returns ``depth`` (P,) camera-space z of the surface point ``sum_k w_k V_k`` (w_k the
    perspective-correct barycentrics) and, when ``canonical_depth`` is given, ``u`` and ``v``
    (P,): the canonical-view image coordinates of that point (its projection: the corner
    coordinates weighted by ``w_k d_k``, the perspective correction of the canonical view).
    Differentiable w.r.t. ``screen`` and ``canonical_depth``; the choice of triangle is not.
    """
    _, _, hc, wc = screen.shape
    dt = screen.dtype
    corner, sec = frags.corner, frags.second
    i0, i1, i2 = corner + sec, corner + 1 + sec * wc, corner + wc  # (a, b, c) or (b, d, c)
    # 1-D gathers per coordinate plane: cheap forward, and a cheap index_add backward
    sx, sy, sz = (plane.reshape(-1) for plane in screen.unbind(0))
    x0, x1, x2 = sx.index_select(0, i0), sx.index_select(0, i1), sx.index_select(0, i2)
    y0, y1, y2 = sy.index_select(0, i0), sy.index_select(0, i1), sy.index_select(0, i2)
    z0, z1, z2 = sz.index_select(0, i0), sz.index_select(0, i1), sz.index_select(0, i2)
    ux, uy, vx, vy = x1 - x0, y1 - y0, x2 - x0, y2 - y0
    qx, qy = frags.x.to(dt) - x0, frags.y.to(dt) - y0
    inv_area = 1.0 / (ux * vy - vx * uy)
    l1 = (qx * vy - vx * qy) * inv_area
    l2 = (ux * qy - qx * uy) * inv_area
    # perspective correction: 1/z and attribute/z are affine in screen space
    w0, w1, w2 = (1.0 - l1 - l2) / z0, l1 / z1, l2 / z2
    z = 1.0 / (w0 + w1 + w2)
    if canonical_depth is None:
        return z, None, None
    flat = canonical_depth.reshape(-1)
    c0, c1, c2 = w0 * flat.index_select(0, i0), w1 * flat.index_select(0, i1), w2 * flat.index_select(0, i2)
    norm = 1.0 / (c0 + c1 + c2)
    # grid (row, col) of the corner in float64 (exact here, and vectorised unlike int64 division)
    cf = corner.double()
    row = torch.floor(cf / wc)
    j = (cf - row * wc).to(dt)
    i = (row - torch.floor(row / hc) * hc).to(dt)
    s = sec.to(dt)
    # corner columns j + sec, j + 1, j and rows i, i + sec, i + 1
    u = ((j + 0.5) + (c0 * s + c1) * norm) * (2.0 / wc) - 1.0
    v = ((i + 0.5) + (c1 * s + c2) * norm) * (2.0 / hc) - 1.0
    return z, u, v


def _pool(x: torch.Tensor, s: int) -> torch.Tensor:
    """Mean over s x s blocks (strided slices are faster than avg_pool2d on CPU)."""
    out = sum(x[..., a::s, b::s] for a in range(s) for b in range(s))
    return out / float(s * s)


def posed_grid(
    depth: torch.Tensor,  # (B, 1, Hc, Wc) canonical depth
    view: torch.Tensor,  # (B, 6) [yaw, pitch, roll (deg), tx, ty, tz]
    fov_deg: float,  # field of view in degrees
    height: int,  # raster height in pixels
    width: int,  # raster width in pixels
) -> torch.Tensor:
    """Posed grid vertices in screen space as planes (3, B, Hc, Wc): pixel x, pixel y, camera-space z.

    ``camera.unproject``, ``camera.transform_points`` and ``camera.project`` written plane by
    plane: ``R (d K^-1 p - c) + c + t`` with the rays ``K^-1 p`` separable in (row, column), so
    no (B, N, 3) point tensor and no tiny batched matmul.
    """
    bsz, _, hc, wc = depth.shape
    t = camera.tan_half_fov(fov_deg)
    rot = camera.rotation_matrix(view[:, 0], view[:, 1], view[:, 2]).to(depth.dtype)  # (B, 3, 3)
    r = rot.reshape(bsz, 9, 1, 1).unbind(1)
    shift = view[:, 3:6].to(depth.dtype).reshape(bsz, 3, 1, 1).unbind(1)
    rx = camera.pixel_centers(wc, depth.device, depth.dtype)[None, None, :] * t  # (1, 1, Wc)
    ry = camera.pixel_centers(hc, depth.device, depth.dtype)[None, :, None] * t  # (1, Hc, 1)
    d = depth[:, 0]  # (B, Hc, Wc)
    # p - c = d (rx, ry, 1) - (0, 0, c): each posed coordinate is d (r0 rx + r1 ry + r2) - r2 c + c_k + t_k
    x, y, z = (d * (r[3 * k] * rx + r[3 * k + 1] * ry + r[3 * k + 2]) + (
        shift[k] - r[3 * k + 2] * camera.PIVOT_DEPTH + (camera.PIVOT_DEPTH if k == 2 else 0.0))
        for k in range(3))
    inv = 1.0 / (z * t)  # camera.project, then to_pixels
    px = (x * inv + 1.0) * (width / 2.0) - 0.5
    py = (y * inv + 1.0) * (height / 2.0) - 0.5
    return torch.stack([px, py, z], 0)  # (3, B, Hc, Wc)


def _check_inputs(depth, attributes, mask, view):
    if depth.dim() != 4 or depth.shape[1] != 1:
        raise ValueError(f"depth: expected shape (B, 1, H, W), got {tuple(depth.shape)}")
    bsz, _, hc, wc = depth.shape
    if hc < 2 or wc < 2:
        raise ValueError(f"depth: a height field needs at least 2 x 2 grid points, got {hc} x {wc}")
    if attributes.dim() != 4 or attributes.shape[0] != bsz or attributes.shape[2:] != depth.shape[2:]:
        raise ValueError(f"attributes: expected shape ({bsz}, C, {hc}, {wc}), got {tuple(attributes.shape)}")
    if mask is not None and tuple(mask.shape) != (bsz, 1, hc, wc):
        raise ValueError(f"mask: expected shape ({bsz}, 1, {hc}, {wc}), got {tuple(mask.shape)}")
    if tuple(view.shape) != (bsz, 6):
        raise ValueError(f"view: expected shape ({bsz}, 6), got {tuple(view.shape)}")


def rasterize_height_field(
    depth: torch.Tensor,  # (B, 1, Hc, Wc) canonical depth map (height field), > 0
    attributes: torch.Tensor,  # (B, C, Hc, Wc) attributes on the canonical grid (e.g. shaded albedo)
    mask: torch.Tensor | None,  # (B, 1, Hc, Wc) canonical mask (on where > 0.5), or None for all on
    view: torch.Tensor,  # (B, 6) [yaw, pitch, roll (deg), tx, ty, tz]
    image_size: tuple[int, int] | int | None = None,  # output (H, W); default the canonical size
    fov_deg: float = camera.DEFAULT_FOV_DEG,  # perspective field of view
    supersample: int = 2,  # sub-samples per pixel and axis (anti-aliasing, coverage mask)
) -> Raster:
    """Render a posed height field: image, depth, coverage mask and canonical coordinates per pixel.

    Attributes are looked up at the visible point's canonical coordinates by bilinear
    ``grid_sample`` (the canonical grid is the texture), which equals the vertex values at
    vertices and is exact for attributes linear in (u, v).
    """
    _check_inputs(depth, attributes, mask, view)
    bsz, _, hc, wc = attributes.shape
    if image_size is None:
        image_size = (hc, wc)
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    s = int(supersample)
    if s < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    hs, ws = height * s, width * s

    screen = posed_grid(depth, view, fov_deg, hs, ws)  # (3, B, Hc, Wc)
    on = torch.ones_like(depth[:, 0], dtype=torch.bool) if mask is None else mask[:, 0].detach() > 0.5
    if torch.is_grad_enabled() and (depth.requires_grad or view.requires_grad):
        # differentiable depth and canonical coordinates: re-interpolate the winners with autograd
        frags = rasterize_grid(screen, on, hs, ws)
        z, u, v = interpolate(frags, screen, depth[:, 0])
        pixel, n = frags.pixel, bsz * hs * ws
        uv = z.new_zeros(n, 2).index_put((pixel,), torch.stack([u, v], -1)).reshape(bsz, hs, ws, 2)
        zc = z.new_zeros(2, n).index_put((torch.arange(2, device=z.device)[:, None], pixel[None]),
                                         torch.stack([z, torch.ones_like(z)], 0))
        zc = zc.reshape(2, bsz, 1, hs, ws)
    else:
        # no gradient wanted through the geometry: the z-buffer's tables resolve every pixel directly
        covered, z, u, v = resolve(zbuffer(screen, on, hs, ws, depth[:, 0]))  # (B, sH, sW) each
        uv = torch.stack([u, v], -1).to(attributes.dtype)  # grid_sample layout (B, sH, sW, 2)
        zc = torch.stack([z, covered.to(z.dtype)], 0).to(attributes.dtype)[:, :, None]  # (2, B, 1, sH, sW)
    texel = F.grid_sample(attributes, uv, mode="bilinear", padding_mode="border",
                          align_corners=False) * zc[1]  # (B, C, sH, sW), premultiplied by coverage
    if s > 1:
        texel, zc, uv = _pool(texel, s), _pool(zc, s), _pool(uv.permute(0, 3, 1, 2), s)
    else:
        uv = uv.permute(0, 3, 1, 2)
    cover = zc[1]
    denom = cover.clamp(min=1e-12)
    return Raster(image=texel, depth=zc[0] / denom, mask=cover, canonical_uv=uv / denom)
