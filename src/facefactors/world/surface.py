"""The face surface as a height field on the canonical frontal grid (Unsup3D, Wu et al. 2020,
sec. 3.1: depth d(u, v) over the canonical view) and its mask.

The relief R (toward the camera) is a head superellipsoid plus anatomical bumps (nose bridge
and tip, alae, brow ridge, eye sockets and eyeballs, cheekbones, muzzle, lips, chin), all
smooth analytic functions of the neutral canonical point n, so an expression only has to move
n (expression.py). Depth is ``Z0 - tan(fov/2) * R``: R is in canonical image units, so a bump
of height 0.2 stands out as far as 0.2 of the image is wide at depth 1.
"""

from __future__ import annotations

import math

import torch

from facefactors.world.fastmath import expn, gauss, gauss1, soft  # noqa: F401  (gauss, soft re-exported)
from facefactors.world.identity import jaw_half_width

Z0 = 1.02  # depth of the head silhouette, just behind the pivot (1.0) so heads turn about their middle; nose tip ~0.96
NECK_W = 0.31  # neck half-width, canonical units




class Window:
    """The rows and columns of the canonical grid that can hold a local feature.

    Features live at known places of the neutral face ([x0, x1] x [y0, y1] covers every identity);
    the expression flow moves points by less than ``FLOW_MARGIN``, so evaluating a feature only in
    this window of the expressed grid is exact and several times cheaper than the full grid.
    """

    FLOW_MARGIN = 0.15

    def __init__(self, size: int, x0: float, x1: float, y0: float, y1: float):
        def sl(a, b):
            m = self.FLOW_MARGIN
            return slice(
                max(0, int((a - m + 1) / 2 * size)), min(size, int((b + m + 1) / 2 * size) + 1)
            )

        self.cols, self.rows = sl(x0, x1), sl(y0, y1)

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        """The window of a (..., H, W) map (a view)."""
        return t[..., self.rows, self.cols]

    def add_(self, full: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
        full[..., self.rows, self.cols] += part
        return full

    def mul_(self, full: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
        full[..., self.rows, self.cols] *= part
        return full


def windows(size: int) -> dict[str, Window]:
    return {
        "eyes": Window(size, -0.66, 0.66, -0.62, 0.1),
        "nose": Window(size, -0.3, 0.3, -0.3, 0.4),
        "mouth": Window(size, -0.45, 0.45, 0.12, 0.75),
        "lower": Window(size, -0.8, 0.8, -0.05, 1.0),
        "forehead": Window(size, -0.4, 0.4, -0.8, -0.25),
    }


def col(f: dict, key: str) -> torch.Tensor:
    """A per-face feature as (B, 1, 1) for broadcasting against (B, H, W) grids."""
    return f[key][:, None, None]


def hair_regions(x, y, f, hair, albedo_hairline, px, w=None):
    """Soft masks (B, H, W) of hair outside the face (volume, long hair) and of hair over the face
    (above the hairline, at the temples). ``hair`` (B, 4) = volume, length, fringe, part."""
    w = jaw_half_width(y, f) if w is None else w  # face outline half-width per point
    ax = x.abs()
    vol = (0.03 + 0.09 * hair[:, 0])[:, None, None]
    length = hair[:, 1][:, None, None]
    fringe = hair[:, 2][:, None, None]
    top, ey = col(f, "jaw_top"), col(f, "eye_y")
    jaw_w = col(f, "jaw_w")
    # outside the face: a cap around the cranium, straight down the sides as far as the length says
    bottom = top + 0.12 + 0.95 * length
    cap_w = torch.where(y < top, w + vol, jaw_w * 1.03 + vol * (1 - 0.3 * length))
    cap_w = torch.where(y < top, cap_w, cap_w * soft(bottom - y, 0.03))
    outer = soft(cap_w - ax, px) * soft(y - (top - 1.05 - vol), px)
    # over the face: above the hairline (recedes with the hairline coefficient, comes down with a fringe)
    recede = albedo_hairline[:, None, None]
    # a fringe sweeps toward one side of the parting (hair[:, 3]: where the hair is parted)
    part = (hair[:, 3] - 0.5)[:, None, None] * 0.6
    sweep = 0.5 - 0.5 * torch.tanh((x - part) / 0.15) * torch.sign(
        part + 1e-6
    )  # toward the wide side
    hl = ey - 0.44 - 0.22 * recede + 0.14 * fringe * sweep + 0.10 * (ax / jaw_w) ** 2
    over = soft(hl - y, 0.012) + soft(ax - (w - 0.045), px) * soft(ey + 0.02 - y, 0.02)
    return outer, over.clamp(max=1)


def relief(x, y, f, hair, albedo_hairline, px):
    """Relief R (B, H, W), mask (B, H, W), and region masks (face, hair, neck) at neutral points (x, y)."""
    w, above, cranium, s = jaw_half_width(y, f, parts=True)
    ax = x.abs()
    chin = col(f, "chin_y")
    hd = col(f, "head_depth")
    front = torch.where(above, cranium, (s * s).mul_(-0.3).add_(1)).mul_(hd)
    q = (ax / w.clamp_min(1e-4)).clamp_(0, 1)
    r = front.mul_((1 - q * q * q.sqrt()).clamp_min_(0).sqrt_())  # superellipse, exponent 2.5

    win = windows(x.shape[-1])
    ex, ey, tip = col(f, "eye_x"), col(f, "eye_y"), col(f, "nose_tip_y")
    k = win["nose"]
    xn, yn = k(x), k(y)
    bridge = ey - 0.03
    tt = ((yn - bridge) / (tip - bridge)).clamp(0, 1)
    below = gauss1((yn - tip).clamp_min(0), 0, 0.055)
    nose_prof = (0.22 + 0.78 * tt * tt * (3 - 2 * tt)) * below * soft(yn - bridge + 0.02, 0.02)
    sig = 0.03 + 0.035 * tt
    nose = col(f, "nose_h") * nose_prof * gauss1(xn, 0, sig)
    nose = nose + 0.05 * gauss(
        xn.abs(), yn, 0.7 * col(f, "nose_w"), tip + 0.035, 0.045, 0.035
    )  # alae
    k.add_(r, nose)
    k = win["eyes"]
    xe, ye = k(x), k(y)
    axe = xe.abs()
    eyes = -col(f, "eye_depth") * gauss(axe, ye, ex, ey, 0.12, 0.075)  # sockets
    eyes = eyes + 0.03 * gauss(axe, ye, ex, ey, 0.07, 0.035)  # eyeballs
    eyes = eyes + col(f, "brow_ridge") * gauss(xe, ye, 0, ey - 0.13, 0.38, 0.05)
    k.add_(r, eyes)
    k = win["lower"]
    xl, yl = k(x), k(y)
    my, mw = col(f, "mouth_y"), col(f, "mouth_w")
    low = col(f, "cheek") * gauss(xl.abs(), yl, 0.33, 0.06, 0.12, 0.10)
    low = low + 0.05 * gauss(xl, yl, 0, my - 0.03, 0.25, 0.2)  # muzzle
    low = low + 0.022 * gauss(xl, yl, 0, my - col(f, "lip_u") * 0.5, 0.9 * mw, 0.03)
    low = low + 0.028 * gauss(xl, yl, 0, my + col(f, "lip_l") * 0.5, 0.75 * mw, 0.035)
    low = low - 0.015 * gauss(
        xl, yl, 0, my + col(f, "lip_l") + 0.035, 0.14, 0.025
    )  # crease under the lip
    low = low + col(f, "chin") * gauss(xl, yl, 0, chin - 0.1, 0.13, 0.08)
    k.add_(r, low)

    face = soft(w - ax, px)
    hair_out, hair_over = hair_regions(x, y, f, hair, albedo_hairline, px, w)
    # hair lies on the head; outside the face it stands behind the face's front (frames it)
    hq = (ax / (col(f, "jaw_w") + 0.15)).clamp_(0, 1)
    hair_r = (1 - hq * hq).mul_(0.35 * hd)
    nq = (ax * (1 / NECK_W)).clamp_(0, 1)
    neck_r = (1 - nq * nq).sqrt_().mul_(0.45 * hd).sub_(0.05)
    neck = soft(NECK_W - ax, px) * soft(y - 0.2, px)
    big = -1.0  # below every surface: "no surface here" (becomes relief 0 outside the mask)
    r_all = r.add_(hair_over, alpha=0.02).masked_fill_(face <= 0.5, big)
    r_all = torch.maximum(r_all, hair_r.masked_fill_(hair_out <= 0.5, big))
    r_all = torch.maximum(r_all, neck_r.masked_fill_(neck <= 0.5, big))
    mask = torch.maximum(torch.maximum(face, hair_out), neck)
    r_all.masked_fill_(r_all <= big, 0.0)
    return (
        r_all,
        mask,
        {
            "face": face,
            "hair_out": hair_out,
            "hair_over": hair_over,
            "neck": neck * (1 - face),
            "outline": w,
        },
    )


def to_depth(r: torch.Tensor, fov_deg: float) -> torch.Tensor:
    """Relief (B, H, W) in canonical units -> depth (B, 1, H, W) in camera units."""
    return (Z0 - math.tan(math.radians(fov_deg) / 2) * r)[:, None]
