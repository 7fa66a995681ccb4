"""Forward rasterisation of height fields by a vectorised z-buffer (pure PyTorch, CPU and GPU).

The surface is Unsup3D's (Wu et al. 2020, sec. 3.3; LatentFace, He et al., supp. D): a canonical
depth map d(u, v) whose grid points ``d * K^-1 (u, v, 1)`` are the vertices of a triangle mesh
(two triangles per grid cell, only where the canonical mask is on). The mesh is posed with
``camera.transform_points`` and projected with ``camera.project``; conventions are those of
``render/camera.py``.

Z-buffer without loops over pixels: every triangle enumerates the pixel centres of its screen
bounding box (triangles are bucketed by box size, so one bucket is one dense tensor op),
keeps the centres that pass the barycentric inside test (inclusive by a small epsilon, so
shared edges never leave holes: the mesh renders watertight), and writes a packed int64 key
``(1/z bits << 32) | triangle`` into its pixel with ``scatter_reduce(..., "amax")`` -- the
nearest surface has the largest 1/z, and 1/z is linear in screen space, so it is evaluated
exactly at the pixel centre. A pixel's winner is then re-evaluated with perspective-correct
barycentrics, which is where gradients enter (``interpolate``): the *choice* of the visible
triangle is not differentiable, the depth and attributes of the chosen point are.

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

_INSIDE_EPS = 1e-4  # barycentric slack: shared edges are covered by both neighbours (watertight)
_MIN_Z = 1e-4  # triangles with a vertex this close to or behind the camera are culled
_BOX_SIZES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024, 2048, 4096)


@dataclass
class Raster:
    """Result of ``rasterize_height_field``; every field is batch-first."""

    image: torch.Tensor  # (B, C, H, W) attributes of the visible surface, premultiplied by coverage
    depth: torch.Tensor  # (B, 1, H, W) camera-space z of the visible surface, 0 where empty
    mask: torch.Tensor  # (B, 1, H, W) coverage in [0, 1]
    canonical_uv: torch.Tensor  # (B, 2, H, W) canonical-grid coordinates (x, y) in [-1, 1], 0 where empty


@dataclass
class Fragments:
    """Per-pixel winners of the z-buffer (no gradient): which triangle each pixel sees."""

    pixel: torch.Tensor  # (P,) flat index b * H * W + y * W + x of every covered pixel
    face: torch.Tensor  # (P,) index into ``faces`` of the triangle it sees
    batch: torch.Tensor  # (P,) batch index of the pixel
    size: tuple[int, int, int]  # (B, H, W) of the raster


def grid_faces(height: int, width: int, device=None) -> torch.Tensor:
    """Triangles of a (height x width) vertex grid in row-major vertex order: (2 (H-1)(W-1), 3).

    Cell (i, j) with corners a=(i, j), b=(i, j+1), c=(i+1, j), d=(i+1, j+1) gives (a, b, c) and
    (b, d, c); the diagonal is fixed, so the same grid always gives the same mesh.
    """
    idx = torch.arange(height * width, device=device).reshape(height, width)
    a, b = idx[:-1, :-1].reshape(-1), idx[:-1, 1:].reshape(-1)
    c, d = idx[1:, :-1].reshape(-1), idx[1:, 1:].reshape(-1)
    return torch.cat([torch.stack([a, b, c], -1), torch.stack([b, d, c], -1)], 0)  # (T, 3)


def to_pixels(xy: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Normalised image coordinates -> pixel units where pixel centre j sits at j (align_corners=False)."""
    scale = xy.new_tensor([width / 2.0, height / 2.0])
    return (xy + 1.0) * scale - 0.5


@torch.no_grad()
def rasterize_triangles(
    screen: torch.Tensor,  # (B, N, 3) vertices: x, y in pixel units (centre j at j), z = depth
    faces: torch.Tensor,  # (T, 3) vertex indices, shared by the batch
    face_valid: torch.Tensor,  # (B, T) bool, which triangles exist in each item
    height: int,  # raster height in pixels
    width: int,  # raster width in pixels
) -> Fragments:
    """Vectorised z-buffer: for each pixel centre, the nearest triangle that covers it."""
    bsz, nv, _ = screen.shape
    dev = screen.device
    v = screen.detach().float().reshape(bsz * nv, 3)
    bi, ti = face_valid.nonzero(as_tuple=True)
    tri = v[bi[:, None] * nv + faces[ti]]  # (M, 3, 3)
    x, y, z = tri.unbind(-1)  # (M, 3) each
    x0, x1, x2 = x.unbind(1)
    y0, y1, y2 = y.unbind(1)
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    xmin = torch.ceil(x.amin(1) - _INSIDE_EPS).clamp(min=0)
    xmax = torch.floor(x.amax(1) + _INSIDE_EPS).clamp(max=width - 1)
    ymin = torch.ceil(y.amin(1) - _INSIDE_EPS).clamp(min=0)
    ymax = torch.floor(y.amax(1) + _INSIDE_EPS).clamp(max=height - 1)
    keep = (z.amin(1) > _MIN_Z) & (area.abs() > 1e-12) & (xmax >= xmin) & (ymax >= ymin)
    inv_area, invz = 1.0 / area, 1.0 / z  # (M,), (M, 3)

    # Barycentrics and 1/z are affine in the pixel position: coefficients (a, b, c) of
    # a * dx + b * dy + c relative to the box corner (xmin, ymin), rows l0, l1, l2, 1/z.
    ex, ey = xmin - x0, ymin - y0
    a1, b1 = (y2 - y0) * inv_area, (x0 - x2) * inv_area
    a2, b2 = (y0 - y1) * inv_area, (x1 - x0) * inv_area
    c1, c2 = a1 * ex + b1 * ey, a2 * ex + b2 * ey
    dz1, dz2 = invz[:, 1] - invz[:, 0], invz[:, 2] - invz[:, 0]
    coef = torch.stack([
        -a1 - a2, -b1 - b2, 1.0 - c1 - c2,
        a1, b1, c1,
        a2, b2, c2,
        a1 * dz1 + a2 * dz2, b1 * dz1 + b2 * dz2, invz[:, 0] + c1 * dz1 + c2 * dz2,
    ], 0).reshape(4, 3, -1)  # (4, 3, M): rows l0, l1, l2, 1/z; columns a, b, c

    # Bucket triangles by box size so each bucket is one dense (Mb, K) tensor op. A box rounded
    # up past the right/bottom border would wrap into the next row or image: those triangles
    # (few) get an explicit range check. Culled triangles go to bucket 0, which is skipped.
    nb = len(_BOX_SIZES)
    sizes = torch.tensor(_BOX_SIZES, device=dev)
    iw = torch.searchsorted(sizes, (xmax - xmin + 1).long().clamp(1, _BOX_SIZES[-1]))
    ih = torch.searchsorted(sizes, (ymax - ymin + 1).long().clamp(1, _BOX_SIZES[-1]))
    xmin, ymin = xmin.long(), ymin.long()
    fits = (xmin + sizes[iw] <= width) & (ymin + sizes[ih] <= height)
    bucket = torch.where(keep, 1 + (iw * nb + ih) * 2 + fits.long(), 0)
    counts = torch.bincount(bucket, minlength=1 + 2 * nb * nb).tolist()
    order = torch.argsort(bucket)
    coef = coef[:, :, order].permute(0, 2, 1).contiguous()  # (4, M, 3) sorted by bucket
    base = ((bi * height + ymin) * width + xmin)[order]  # flat index of each box corner
    xmin, ymin = xmin[order], ymin[order]

    zbuf = torch.full((bsz * height * width,), -1, dtype=torch.int64, device=dev)
    start = counts[0]
    for key in range(1, len(counts)):
        n = counts[key]
        if n == 0:
            continue
        lo, hi, start = start, start + n, start + n
        fit, wh = (key - 1) % 2, (key - 1) // 2
        w_b, h_b = _BOX_SIZES[wh // nb], _BOX_SIZES[wh % nb]
        dy, dx = torch.meshgrid(torch.arange(h_b, device=dev), torch.arange(w_b, device=dev), indexing="ij")
        dx, dy = dx.reshape(-1), dy.reshape(-1)
        offs = torch.stack([dx, dy, torch.ones_like(dx)], 0).float()  # (3, K)
        vals = coef[:, lo:hi] @ offs  # (4, Mb, K): l0, l1, l2, 1/z at each box pixel
        inside = torch.minimum(torch.minimum(vals[0], vals[1]), vals[2]) >= -_INSIDE_EPS
        pix = base[lo:hi, None] + (dy * width + dx)  # (Mb, K)
        if not fit:
            inside &= (xmin[lo:hi, None] + dx < width) & (ymin[lo:hi, None] + dy < height)
            pix = torch.where(inside, pix, 0)
        packed = (vals[3].clamp(min=1e-30).view(torch.int32).to(torch.int64) << 32) | order[lo:hi, None]
        packed = torch.where(inside, packed, -1)
        zbuf.scatter_reduce_(0, pix.reshape(-1), packed.reshape(-1), reduce="amax")

    pixel = (zbuf >= 0).nonzero(as_tuple=True)[0]
    win = zbuf[pixel] & 0xFFFFFFFF
    return Fragments(pixel=pixel, face=ti[win], batch=bi[win], size=(bsz, height, width))


def interpolate(
    frags: Fragments,  # winners of ``rasterize_triangles``
    screen: torch.Tensor,  # (B, N, 3) the same vertices, may carry gradients
    faces: torch.Tensor,  # (T, 3) vertex indices
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Perspective-correct barycentrics of each covered pixel centre in its winning triangle.

    Returns ``vertex`` (P, 3) global vertex ids into ``screen.reshape(B * N, 3)``, ``weight``
    (P, 3) perspective-correct weights (sum to 1; interpolate any vertex attribute with them) and
    ``depth`` (P,) camera-space z. Differentiable w.r.t. ``screen``.
    """
    bsz, nv, _ = screen.shape
    _, height, width = frags.size[0], frags.size[1], frags.size[2]
    vertex = frags.batch[:, None] * nv + faces[frags.face]  # (P, 3)
    tri = screen.reshape(bsz * nv, 3)[vertex]  # (P, 3, 3)
    px = (frags.pixel % width).to(screen.dtype)
    py = ((frags.pixel // width) % height).to(screen.dtype)
    x, y, z = tri[..., 0], tri[..., 1], tri[..., 2]
    area = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
    l1 = ((px - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (py - y[:, 0])) / area
    l2 = ((x[:, 1] - x[:, 0]) * (py - y[:, 0]) - (px - x[:, 0]) * (y[:, 1] - y[:, 0])) / area
    lam = torch.stack([1.0 - l1 - l2, l1, l2], -1)  # (P, 3) screen-space barycentrics
    wz = lam / z  # perspective correction: 1/z and attribute/z are affine on screen
    invz = wz.sum(-1)
    return vertex, wz / invz[:, None], 1.0 / invz


def _scatter_image(values: torch.Tensor, pixel: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """Place per-pixel rows (P, C) into a zero (B, C, H, W) image (differentiable in ``values``)."""
    bsz, height, width = size
    out = values.new_zeros(bsz * height * width, values.shape[1])
    out = out.index_put((pixel,), values)
    return out.reshape(bsz, height, width, -1).permute(0, 3, 1, 2)


def height_field_mesh(
    depth: torch.Tensor,  # (B, 1, Hc, Wc) canonical depth
    mask: torch.Tensor | None,  # (B, 1, Hc, Wc) canonical mask (on where > 0.5) or None for all on
    view: torch.Tensor,  # (B, 6) [yaw, pitch, roll (deg), tx, ty, tz]
    fov_deg: float,  # field of view in degrees
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Posed camera-space vertices (B, N, 3), faces (T, 3) and per-item face validity (B, T)."""
    bsz, _, hc, wc = depth.shape
    points = camera.unproject(depth, fov_deg).reshape(bsz, hc * wc, 3)
    posed = camera.transform_points(points, view)  # (B, N, 3)
    faces = grid_faces(hc, wc, depth.device)
    if mask is None:
        valid = torch.ones(bsz, faces.shape[0], dtype=torch.bool, device=depth.device)
    else:
        on = (mask.detach() > 0.5).reshape(bsz, hc * wc)
        valid = on[:, faces].all(-1)  # (B, T)
    return posed, faces, valid


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
    attributes: torch.Tensor,  # (B, C, Hc, Wc) per-vertex attributes (e.g. shaded albedo)
    mask: torch.Tensor | None,  # (B, 1, Hc, Wc) canonical mask, or None for the whole grid
    view: torch.Tensor,  # (B, 6) [yaw, pitch, roll (deg), tx, ty, tz]
    image_size: tuple[int, int] | int | None = None,  # output (H, W); default the canonical size
    fov_deg: float = camera.DEFAULT_FOV_DEG,  # perspective field of view
    supersample: int = 2,  # sub-samples per pixel and axis (anti-aliasing, coverage mask)
) -> Raster:
    """Render a posed height field: image, depth, coverage mask and canonical coordinates per pixel."""
    _check_inputs(depth, attributes, mask, view)
    bsz, nch, hc, wc = attributes.shape
    if image_size is None:
        image_size = (hc, wc)
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    s = int(supersample)
    if s < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    hs, ws = height * s, width * s

    posed, faces, valid = height_field_mesh(depth, mask, view, fov_deg)
    screen = torch.cat([to_pixels(camera.project(posed, fov_deg), hs, ws), posed[..., 2:]], -1)
    frags = rasterize_triangles(screen, faces, valid, hs, ws)
    vertex, weight, z = interpolate(frags, screen, faces)

    uv = camera.image_grid(hc, wc, depth.device, depth.dtype).reshape(1, hc * wc, 2).expand(bsz, -1, -1)
    attr = attributes.permute(0, 2, 3, 1).reshape(bsz * hc * wc, nch)
    rows = torch.cat([
        (attr[vertex] * weight[..., None]).sum(1),  # (P, C)
        z[:, None],  # (P, 1)
        (uv.reshape(bsz * hc * wc, 2)[vertex] * weight[..., None]).sum(1),  # (P, 2)
        torch.ones_like(z)[:, None],  # (P, 1) coverage
    ], 1)
    full = _scatter_image(rows, frags.pixel, frags.size)  # (B, C + 4, sH, sW)
    if s > 1:
        full = F.avg_pool2d(full, s)  # premultiplied by coverage
    cover = full[:, -1:]
    denom = cover.clamp(min=1e-12)
    return Raster(
        image=full[:, :nch],
        depth=full[:, nch:nch + 1] / denom,
        mask=cover,
        canonical_uv=full[:, nch + 1:nch + 3] / denom,
    )
