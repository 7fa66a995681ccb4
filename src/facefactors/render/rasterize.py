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
exactly at the pixel centre. Triangles lie on the innermost (contiguous) axis of every tensor
op, so each op is one long vector op. A pixel's winner is then re-evaluated with
perspective-correct barycentrics, which is where gradients enter (``interpolate``): the
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


def _corner_views(planes: torch.Tensor) -> list[list[list[torch.Tensor]]]:
    """Strided views of (P, B, Hc, Wc) vertex planes at the corners of the two triangles of every
    cell: ``[type][corner][plane]`` -> (B, Hc-1, Wc-1), type 0 = (a, b, c), type 1 = (b, d, c).

    Slicing instead of gathering: the mesh is a regular grid, so no index tensor is needed.
    """
    if planes.dim() == 3:
        planes = planes[None]
    a = [p[:, :-1, :-1] for p in planes]
    b = [p[:, :-1, 1:] for p in planes]
    c = [p[:, 1:, :-1] for p in planes]
    d = [p[:, 1:, 1:] for p in planes]
    return [[a, b, c], [b, d, c]]


def to_pixels(xy: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Normalised image coordinates -> pixel units where pixel centre j sits at j (align_corners=False)."""
    scale = xy.new_tensor([width / 2.0, height / 2.0])
    return (xy + 1.0) * scale - 0.5


def _bucket_table(device) -> torch.Tensor:
    """Lookup table box size -> index of the smallest ``_BOX_SIZES`` entry that holds it."""
    sizes = torch.tensor(_BOX_SIZES, device=device)
    return torch.searchsorted(sizes, torch.arange(_BOX_SIZES[-1] + 1, device=device))


@torch.no_grad()
def rasterize_grid(
    screen: torch.Tensor,  # (3, B, Hc, Wc) grid vertex planes: x, y in pixel units (centre j at j), z = depth
    on: torch.Tensor,  # (B, Hc, Wc) bool, vertices that exist (a triangle needs all three)
    height: int,  # raster height in pixels
    width: int,  # raster width in pixels
) -> Fragments:
    """Vectorised z-buffer: for each pixel centre, the nearest grid triangle that covers it."""
    _, bsz, hc, wc = screen.shape
    dev = screen.device
    v = screen.detach().float()
    nb, big = len(_BOX_SIZES), _BOX_SIZES[-1]
    lut = _bucket_table(dev)
    sizes = torch.tensor(_BOX_SIZES, device=dev)

    # Bucket triangles by box size so each bucket is one dense (K, Mb) tensor op. A box rounded
    # up past the right/bottom border would wrap into the next row or image: those triangles
    # (few) get an explicit range check. Culled triangles go to bucket 0, which is skipped.
    # Computed on strided views of the grid, one triangle type at a time (no copies of corners).
    buckets = []
    for tri, mtri in zip(_corner_views(v), _corner_views(on)):
        (x0, y0, z0), (x1, y1, z1), (x2, y2, z2) = tri
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        xmin = torch.ceil(torch.minimum(torch.minimum(x0, x1), x2) - _INSIDE_EPS).clamp(min=0)
        xmax = torch.floor(torch.maximum(torch.maximum(x0, x1), x2) + _INSIDE_EPS).clamp(max=width - 1)
        ymin = torch.ceil(torch.minimum(torch.minimum(y0, y1), y2) - _INSIDE_EPS).clamp(min=0)
        ymax = torch.floor(torch.maximum(torch.maximum(y0, y1), y2) + _INSIDE_EPS).clamp(max=height - 1)
        zmin = torch.minimum(torch.minimum(z0, z1), z2)
        keep = mtri[0][0] & mtri[1][0] & mtri[2][0] & (zmin > _MIN_Z) & (area.abs() > 1e-12)
        keep &= (xmax >= xmin) & (ymax >= ymin)
        iw = torch.take(lut, (xmax - xmin + 1).clamp(1, big).long())
        ih = torch.take(lut, (ymax - ymin + 1).clamp(1, big).long())
        fits = (xmin + torch.take(sizes, iw) <= width) & (ymin + torch.take(sizes, ih) <= height)
        buckets.append(torch.where(keep, 1 + (iw * nb + ih) * 2 + fits.long(), 0).to(torch.int16))
    bucket = torch.stack(buckets, 1).reshape(-1)  # (B, 2, Hc-1, Wc-1): ``grid_faces`` order per item
    counts = torch.bincount(bucket, minlength=1 + 2 * nb * nb).tolist()
    # int16 keys make torch's stable sort a cheap radix-style sort (bucket ids < 2 * 23^2 + 1)
    order = torch.argsort(bucket, stable=True)[counts[0]:]  # kept triangles
    # name each triangle by its cell corner and which of the two it is (low bits of the z-key)
    corner = torch.arange(bsz * hc * wc, device=dev).reshape(bsz, hc, wc)[:, :-1, :-1]
    ident = (corner[:, None] * 2 + torch.arange(2, device=dev).view(1, 2, 1, 1)).reshape(-1)
    ident = ident.index_select(0, order)
    corner, sec = ident >> 1, ident & 1
    i0, i1, i2 = corner + sec, corner + 1 + sec * wc, corner + wc  # (a, b, c) or (b, d, c)
    sx, sy, sz = (plane.reshape(-1) for plane in v.unbind(0))
    x0, x1, x2 = sx.index_select(0, i0), sx.index_select(0, i1), sx.index_select(0, i2)
    y0, y1, y2 = sy.index_select(0, i0), sy.index_select(0, i1), sy.index_select(0, i2)
    z0, z1, z2 = sz.index_select(0, i0), sz.index_select(0, i1), sz.index_select(0, i2)
    xmin = torch.ceil(torch.minimum(torch.minimum(x0, x1), x2) - _INSIDE_EPS).clamp(min=0)
    ymin = torch.ceil(torch.minimum(torch.minimum(y0, y1), y2) - _INSIDE_EPS).clamp(min=0)

    # Barycentrics and 1/z are affine in the pixel position: coefficients (a, b, c) of
    # a * dx + b * dy + c relative to the box corner (xmin, ymin), rows l0, l1, l2, 1/z.
    inv_area = 1.0 / ((x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0))
    ex, ey = xmin - x0, ymin - y0
    a1, b1 = (y2 - y0) * inv_area, (x0 - x2) * inv_area
    a2, b2 = (y0 - y1) * inv_area, (x1 - x0) * inv_area
    c1, c2 = a1 * ex + b1 * ey, a2 * ex + b2 * ey
    iz0 = 1.0 / z0
    dz1, dz2 = 1.0 / z1 - iz0, 1.0 / z2 - iz0
    coef = torch.stack([
        -a1 - a2, a1, a2, a1 * dz1 + a2 * dz2,  # d/dx of l0, l1, l2, 1/z
        -b1 - b2, b1, b2, b1 * dz1 + b2 * dz2,  # d/dy
        1.0 - c1 - c2, c1, c2, iz0 + c1 * dz1 + c2 * dz2,  # value at the box corner
    ], 0).reshape(3, 4, -1)  # (3, 4, M)
    xmin, ymin = xmin.long(), ymin.long()
    base = ((corner // (hc * wc)) * height + ymin) * width + xmin  # flat index of each box corner

    zbuf = torch.full((bsz * height * width,), -1, dtype=torch.int64, device=dev)
    start = 0
    for key in range(1, len(counts)):
        n = counts[key]
        if n == 0:
            continue
        lo, hi, start = start, start + n, start + n
        fit, wh = (key - 1) % 2, (key - 1) // 2
        w_b, h_b = _BOX_SIZES[wh // nb], _BOX_SIZES[wh % nb]
        dy, dx = torch.meshgrid(torch.arange(h_b, device=dev), torch.arange(w_b, device=dev), indexing="ij")
        dx, dy = dx.reshape(-1, 1), dy.reshape(-1, 1)  # (K, 1) box offsets
        a, b, c = coef[:, :, None, lo:hi].unbind(0)  # (4, 1, Mb) each
        # triangles on the innermost (contiguous) axis: every op is a long vector op
        vals = torch.addcmul(c, a, dx.float()).addcmul_(b, dy.float())  # (4, K, Mb): l0, l1, l2, 1/z
        inside = torch.minimum(torch.minimum(vals[0], vals[1]), vals[2]) >= -_INSIDE_EPS  # (K, Mb)
        pix = base[lo:hi] + (dy * width + dx)  # (K, Mb)
        if not fit:
            inside &= (xmin[lo:hi] + dx < width) & (ymin[lo:hi] + dy < height)
            pix = torch.where(inside, pix, 0)
        # nearest = largest 1/z: positive floats order like their int32 bit patterns, and a
        # negative value (outside) stays negative as a key, so amax never picks it
        iz = torch.where(inside, vals[3], -1.0)
        packed = (iz.view(torch.int32).to(torch.int64) << 32) | ident[lo:hi]
        zbuf.scatter_reduce_(0, pix.reshape(-1), packed.reshape(-1), reduce="amax")

    covered = zbuf >= 0
    low = zbuf.masked_select(covered) & 0xFFFFFFFF  # in the row-major order of nonzero below
    b, y, x = covered.reshape(bsz, height, width).nonzero(as_tuple=True)
    return Fragments(batch=b, y=y, x=x, corner=low >> 1, second=low & 1, size=(bsz, height, width))


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
    """Posed grid vertices in screen space as planes (3, B, Hc, Wc): pixel x, pixel y, camera-space z."""
    bsz, _, hc, wc = depth.shape
    points = camera.unproject(depth, fov_deg).reshape(bsz, hc * wc, 3)
    posed = camera.transform_points(points, view)  # (B, N, 3)
    x, y, z = posed.unbind(-1)
    t = camera.tan_half_fov(fov_deg)
    inv = 1.0 / (z * t)  # camera.project, then to_pixels, plane by plane
    px = (x * inv + 1.0) * (width / 2.0) - 0.5
    py = (y * inv + 1.0) * (height / 2.0) - 0.5
    return torch.stack([px, py, z], 0).reshape(3, bsz, hc, wc)


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
    frags = rasterize_grid(screen, on, hs, ws)
    z, u, v = interpolate(frags, screen, depth[:, 0])
    pixel, n = frags.pixel, bsz * hs * ws
    # canonical coordinates straight into grid_sample's (B, sH, sW, 2) layout
    uv = z.new_zeros(n, 2).index_copy(0, pixel, torch.stack([u, v], -1)).reshape(bsz, hs, ws, 2)
    zc = z.new_zeros(2, n)
    zc = zc.index_copy(1, pixel, torch.stack([z, torch.ones_like(z)], 0)).reshape(2, bsz, 1, hs, ws)
    texel = F.grid_sample(attributes, uv, mode="bilinear", padding_mode="border",
                          align_corners=False) * zc[1]  # (B, C, sH, sW), premultiplied by coverage
    if s > 1:
        texel, zc, uv = _pool(texel, s), _pool(zc, s), _pool(uv.permute(0, 3, 1, 2), s)
    else:
        uv = uv.permute(0, 3, 1, 2)
    cover = zc[1]
    denom = cover.clamp(min=1e-12)
    return Raster(image=texel, depth=zc[0] / denom, mask=cover, canonical_uv=uv / denom)
