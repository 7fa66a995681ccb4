"""The z-buffer of a posed height-field mesh: enumerate (triangle, pixel) candidates, keep the nearest.

Used by ``rasterize.py`` (forward rendering, Unsup3D sec. 3.3 / LatentFace supp. D) and, through
it, by ``warp.py``. Pure PyTorch, no gradients, device-agnostic.

Every triangle of the grid (two per cell, see ``rasterize.grid_faces``) enumerates the pixel
centres of its screen bounding box. Triangles are bucketed by box size (exact sizes up to
``_EXACT`` pixels, powers of two above), so one bucket is one dense (K offsets, M triangles)
tensor op and a height-field mesh -- whose cells cover a few pixels each -- enumerates almost
no pixel outside its boxes. A centre is inside when its three barycentrics are >= -eps
(inclusive, so shared edges are covered by both neighbours and the mesh renders watertight).
The nearest surface has the largest 1/z, which is affine in screen space and so evaluated
exactly at the centre; an int64 key ``(1/z bits << 32) | triangle`` (positive floats order
like their bit patterns) goes through one ``scatter_reduce(..., "amax")`` per bucket.

Why it is fast on a CPU: the setup runs on strided views of the grid (no corner index
tensors), the triangles are sorted once by an int16 bucket id, the candidate values of a
bucket are a single batched matmul of the per-triangle affine coefficients with the box
offsets, and the key is packed by viewing an (int32 triangle, float32 1/z) pair as int64.
Per triangle the buffer also keeps the affine maps of the canonical coordinates, so the
winner of a pixel is resolved by one row gather (``resolve``) instead of re-interpolation.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

INSIDE_EPS = 1e-4  # barycentric slack: shared edges are covered by both neighbours (watertight)
MIN_Z = 1e-4  # triangles with a vertex this close to or behind the camera are culled
_EXACT = 8  # box sides up to this many pixels are bucketed exactly, larger ones by powers of two
_NCLS = _EXACT + 10  # size classes per axis: 1..8 exact, then 16, 32, ..., 8192
_LITTLE = sys.byteorder == "little"


def _class_size(q: int) -> int:
    """Box side of size class ``q`` (1-based)."""
    return q if q <= _EXACT else _EXACT << (q - _EXACT)


def _size_class(n: torch.Tensor) -> torch.Tensor:
    """Size class of box sides ``n`` >= 1 (float): n itself up to ``_EXACT``, then log2 steps."""
    return n.clamp(max=_EXACT) + torch.ceil(torch.log2(n.clamp(min=_EXACT) * (1.0 / _EXACT))).clamp_(max=_NCLS - _EXACT)


@dataclass
class ZBuffer:
    """Winners of the z-buffer and the per-triangle tables to resolve them.

    ``key`` holds, per pixel, ``(1/z bits << 32) | m`` for the nearest triangle ``m`` (index into
    the per-triangle tables), or -1 where no triangle covers the pixel.
    """

    key: torch.Tensor  # (B H W,) int64 packed winners, -1 where empty
    ident: torch.Tensor  # (M,) global triangle id ``2 corner + second`` of every kept triangle
    table: torch.Tensor | None  # (11, M) [xmin, ymin, Dx, Dy, D0, Ux, Uy, U0, Vx, Vy, V0] or None
    size: tuple[int, int, int]  # (B, H, W)


def _pack(ident: torch.Tensor, inv_z: torch.Tensor) -> torch.Tensor:
    """int64 keys ``(bits(inv_z) << 32) | ident`` for int32 ``ident`` >= 0 and float32 ``inv_z``."""
    if _LITTLE:  # an (int32 low word, int32 high word) pair is one little-endian int64
        return torch.stack([ident.expand_as(inv_z), inv_z.view(torch.int32)], -1).view(torch.int64)[..., 0]
    return (inv_z.view(torch.int32).to(torch.int64) << 32) | ident.to(torch.int64)


def _triangle_views(planes: torch.Tensor) -> list[list[torch.Tensor]]:
    """Strided corner views ``[type][corner]`` -> (..., Hc-1, Wc-1) of a (..., Hc, Wc) grid tensor;
    type 0 = (a, b, c), type 1 = (b, d, c) with a, b, c, d the cell's corners (``grid_faces``)."""
    a, b = planes[..., :-1, :-1], planes[..., :-1, 1:]
    c, d = planes[..., 1:, :-1], planes[..., 1:, 1:]
    return [[a, b, c], [b, d, c]]


def _buckets(v: torch.Tensor, on: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """int16 bucket id per triangle, (B, 2, Hc-1, Wc-1) in ``grid_faces`` order per item: 0 for
    culled triangles, else ``1 + (qw - 1) _NCLS + (qh - 1)`` with (qw, qh) the box size classes."""
    (xa, xb, xc, xd), (ya, yb, yc, yd), (za, zb, zc, zd), (ma, mb, mc, md) = (
        (p[..., :-1, :-1], p[..., :-1, 1:], p[..., 1:, :-1], p[..., 1:, 1:]) for p in (v[0], v[1], v[2], on))
    # corners b and c are shared by both triangles of a cell
    xlo, xhi = torch.minimum(xb, xc), torch.maximum(xb, xc)
    ylo, yhi = torch.minimum(yb, yc), torch.maximum(yb, yc)
    zlo, mbc = torch.minimum(zb, zc), mb & mc
    out = []
    for x0, y0, z0, m0, x1, y1, x2, y2 in ((xa, ya, za, ma, xb, yb, xc, yc), (xd, yd, zd, md, xc, yc, xb, yb)):
        xmin = torch.ceil(torch.minimum(xlo, x0).sub_(INSIDE_EPS)).clamp_(min=0)
        xmax = torch.floor(torch.maximum(xhi, x0).add_(INSIDE_EPS)).clamp_(max=width - 1)
        ymin = torch.ceil(torch.minimum(ylo, y0).sub_(INSIDE_EPS)).clamp_(min=0)
        ymax = torch.floor(torch.maximum(yhi, y0).add_(INSIDE_EPS)).clamp_(max=height - 1)
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)  # sign differs between types: only |area| used
        bw, bh = xmax.sub_(xmin).add_(1.0), ymax.sub_(ymin).add_(1.0)
        keep = (m0 & mbc) & (torch.minimum(zlo, z0) > MIN_Z) & (area.abs_() > 1e-12) & (bw >= 1.0) & (bh >= 1.0)
        ident = (_size_class(bw.clamp_(min=1.0)) - 1.0).mul_(_NCLS).add_(_size_class(bh.clamp_(min=1.0)))
        out.append(ident.masked_fill_(~keep, 0.0).to(torch.int16))
    return torch.stack(out, 1)


@torch.no_grad()
def zbuffer(
    screen: torch.Tensor,  # (3, B, Hc, Wc) grid vertex planes: x, y in pixel units (centre j at j), z = depth
    on: torch.Tensor,  # (B, Hc, Wc) bool, vertices that exist (a triangle needs all three)
    height: int,  # raster height in pixels
    width: int,  # raster width in pixels
    canonical_depth: torch.Tensor | None = None,  # (B, Hc, Wc): also build the canonical-coordinate table
) -> ZBuffer:
    """Nearest grid triangle per pixel centre (packed keys) and the tables to resolve it."""
    _, bsz, hc, wc = screen.shape
    dev = screen.device
    v = screen.detach().float()
    if bsz * 2 * (hc - 1) * (wc - 1) >= 2**31:
        raise ValueError("zbuffer: more than 2^31 triangles in one call; render a smaller batch")

    bucket = _buckets(v, on, height, width).reshape(-1)  # (T,) T = B 2 (Hc-1) (Wc-1)
    counts = torch.bincount(bucket, minlength=1 + _NCLS * _NCLS).tolist()
    # int16 keys make torch's stable sort a cheap radix-style sort; stable keeps grid order
    # inside a bucket (coherent gathers and scatters)
    order = torch.argsort(bucket, stable=True)[counts[0]:]  # (M,) kept triangles
    cells = (hc - 1) * (wc - 1)
    # global triangle id 2 corner + second from the position in the (B, 2, Hc-1, Wc-1) layout
    item, rest = order // (2 * cells), order % (2 * cells)
    sec, cell = rest // cells, rest % cells
    corner = item * (hc * wc) + (cell // (wc - 1)) * wc + cell % (wc - 1)
    ident = corner * 2 + sec
    i0, i1, i2 = corner + sec, corner + 1 + sec * wc, corner + wc  # (a, b, c) or (b, d, c)
    sx, sy, sz = (plane.reshape(-1) for plane in v.unbind(0))
    x0, x1, x2 = sx.index_select(0, i0), sx.index_select(0, i1), sx.index_select(0, i2)
    y0, y1, y2 = sy.index_select(0, i0), sy.index_select(0, i1), sy.index_select(0, i2)
    z0, z1, z2 = sz.index_select(0, i0), sz.index_select(0, i1), sz.index_select(0, i2)
    xmin = torch.ceil(torch.minimum(torch.minimum(x0, x1), x2) - INSIDE_EPS).clamp_(min=0)
    ymin = torch.ceil(torch.minimum(torch.minimum(y0, y1), y2) - INSIDE_EPS).clamp_(min=0)

    # Barycentrics l0, l1, l2 and 1/z are affine in the pixel position: coefficients
    # (d/dx, d/dy, value) relative to the box corner (xmin, ymin).
    inv_area = 1.0 / ((x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0))
    ex, ey = xmin - x0, ymin - y0
    a1, b1 = (y2 - y0) * inv_area, (x0 - x2) * inv_area
    a2, b2 = (y0 - y1) * inv_area, (x1 - x0) * inv_area
    c1, c2 = a1 * ex + b1 * ey, a2 * ex + b2 * ey
    iz0 = 1.0 / z0
    dz1, dz2 = 1.0 / z1 - iz0, 1.0 / z2 - iz0
    coef = torch.stack([
        torch.stack([-a1 - a2, -b1 - b2, 1.0 - c1 - c2], 0),  # l0
        torch.stack([a1, b1, c1], 0),  # l1
        torch.stack([a2, b2, c2], 0),  # l2
        torch.stack([a1 * dz1 + a2 * dz2, b1 * dz1 + b2 * dz2, iz0 + c1 * dz1 + c2 * dz2], 0),  # 1/z
    ], 0)  # (4, 3, M)

    table = None
    if canonical_depth is not None:
        # The canonical coordinates of the visible point are sum_k c_k u_k / sum_k c_k with
        # c_k = l_k d_k / z_k (perspective-correct weights times canonical depth): numerator and
        # denominator are affine in the pixel position too.
        d = canonical_depth.detach().float().reshape(-1)
        r0, r1, r2 = d.index_select(0, i0) / z0, d.index_select(0, i1) / z1, d.index_select(0, i2) / z2
        col = (cell % (wc - 1)).float()
        row = (cell // (wc - 1)).float()
        s = sec.float()
        su, sv = 2.0 / wc, 2.0 / hc
        u0 = (col + s + 0.5) * su - 1.0  # vertex columns j + sec, j + 1, j; rows i, i + sec, i + 1
        v0 = (row + 0.5) * sv - 1.0
        cols = []
        # q = sum_k r_k w_k l_k = q0 + (q1 - q0) l1 + (q2 - q0) l2 with w = 1, u_k, v_k
        for q0, q1, q2 in ((r0, r1, r2), (r0 * u0, r1 * (u0 + (1.0 - s) * su), r2 * (u0 - s * su)),
                           (r0 * v0, r1 * (v0 + s * sv), r2 * (v0 + sv))):
            e1, e2 = q1 - q0, q2 - q0
            cols += [e1 * a1 + e2 * a2, e1 * b1 + e2 * b2, q0 + e1 * c1 + e2 * c2]
        # rows: xmin, ymin, D (d/dx, d/dy, value), U (...), V (...)
        table = torch.stack([xmin, ymin, *cols], 0)  # (11, M)

    key = torch.full((bsz * height * width,), -1, dtype=torch.int64, device=dev)
    m_ids = torch.arange(len(order), dtype=torch.int32, device=dev)
    base = (item * height + ymin.long()) * width + xmin.long()  # flat index of each box corner
    start = 0
    for b_id in range(1, len(counts)):
        n = counts[b_id]
        if n == 0:
            continue
        lo, hi, start = start, start + n, start + n
        w_b, h_b = _class_size((b_id - 1) // _NCLS + 1), _class_size((b_id - 1) % _NCLS + 1)
        fits = w_b <= _EXACT and h_b <= _EXACT  # exact boxes are clamped to the raster; larger may cross it
        dy, dx = torch.meshgrid(torch.arange(h_b, device=dev), torch.arange(w_b, device=dev), indexing="ij")
        dx, dy = dx.reshape(-1), dy.reshape(-1)  # (K,) box offsets
        offs = torch.stack([dx, dy, torch.ones_like(dx)], 1).float()  # (K, 3)
        # (4, K, Mb): triangles on the innermost (contiguous) axis, one batched matmul
        vals = torch.matmul(offs, coef[:, :, lo:hi])
        outside = torch.amin(vals[:3], 0) < -INSIDE_EPS  # (K, Mb)
        pix = base[lo:hi] + (dy * width + dx)[:, None]  # (K, Mb)
        if not fits:
            outside |= (xmin[lo:hi] + dx[:, None] >= width) | (ymin[lo:hi] + dy[:, None] >= height)
            pix.masked_fill_(outside, 0)
        # a negative key (outside) never wins the amax against the empty value -1... and is
        # never written over a real one
        inv_z = vals[3].masked_fill_(outside, -1.0)
        key.scatter_reduce_(0, pix.reshape(-1), _pack(m_ids[lo:hi], inv_z).reshape(-1), reduce="amax")
    return ZBuffer(key=key, ident=ident, table=table, size=(bsz, height, width))


def resolve(zb: ZBuffer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dense per-pixel results of a ``zbuffer`` built with ``canonical_depth``: ``covered`` (B, H, W)
    bool, camera-space ``depth`` (B, H, W) and canonical ``u``, ``v`` (B, H, W) -- all 0 where empty."""
    bsz, height, width = zb.size
    dev = zb.key.device
    covered = zb.key >= 0
    if zb.ident.numel() == 0:
        zero = torch.zeros(bsz, height, width, device=dev)
        return covered.reshape(bsz, height, width), zero, zero, zero
    if _LITTLE:
        halves = zb.key.view(torch.int32).view(-1, 2)
        m, inv_z = halves[:, 0].clamp(min=0), halves[:, 1].view(torch.float32)
    else:
        m = (zb.key & 0xFFFFFFFF).clamp(min=0)
        inv_z = (zb.key >> 32).to(torch.int32).view(torch.float32)
    t = [row.index_select(0, m).reshape(bsz, height, width) for row in zb.table]  # winners' table rows
    xs = torch.arange(width, device=dev, dtype=torch.float32)
    ys = torch.arange(height, device=dev, dtype=torch.float32)[:, None]
    dx, dy = xs - t[0], ys - t[1]
    den, num_u, num_v = (t[k + 2].addcmul_(t[k], dx).addcmul_(t[k + 1], dy) for k in (2, 5, 8))  # at the centre
    cov = covered.reshape(bsz, height, width)
    inv_den = torch.where(cov, 1.0 / den, 0.0)
    depth = torch.where(cov, 1.0 / inv_z.reshape(bsz, height, width), 0.0)
    return cov, depth, num_u * inv_den, num_v * inv_den
