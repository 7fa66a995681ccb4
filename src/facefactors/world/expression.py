"""Expressions of the face world: blendshape weights realised as a 2-D flow on the canonical
grid, depth offsets and albedo effects.

Classes follow the UFE paper (Banerjee et al., sec. 4.1: neutral, smile, sadness, surprise,
anger, disgust); each class is a prototype blend of blendshapes (in the spirit of FACS action
units) scaled by a per-sample intensity, like the expression coefficients of a 3DMM
(DiscoFaceGAN, Deng et al. 2020, Eq. 1).

The flow is defined *backward*, from an expressed canonical point p to the neutral point n it
shows, so the neutral albedo and relief are evaluated directly at n (no resampling):

    m = p + S(p)              smooth part: Gaussian handles, S(p) = -sum_j d_j G_j(p - c_j - d_j)
    n = open^-1(m)            mouth opening: a monotone, piecewise-linear vertical map per
                              column whose gap (the open mouth) has no neutral pre-image

Points move forward (landmarks, flow between two expressions) by ``open`` in closed form and a
fixed-point solve of p + S(p) = m (S is a contraction: handles move less than their width).
"""

from __future__ import annotations

import torch

from facefactors.world.fastmath import expn, gauss1

BLENDSHAPES = (
    "smile", "mouth_open", "lip_corner_down", "brow_raise", "inner_brow_raise", "brow_lower",
    "eye_widen", "eye_squint", "nose_wrinkle", "upper_lip_raise", "lip_press",
)  # fmt: skip
W = {n: i for i, n in enumerate(BLENDSHAPES)}
EXPRESSIONS = ("neutral", "smile", "sadness", "surprise", "anger", "disgust")

_PROTOTYPES = {
    "neutral": {},
    "smile": {"smile": 1.0, "mouth_open": 0.35, "eye_squint": 0.35},
    "sadness": {"lip_corner_down": 1.0, "inner_brow_raise": 1.0, "eye_squint": 0.25},
    "surprise": {"brow_raise": 1.0, "eye_widen": 1.0, "mouth_open": 0.9},
    "anger": {"brow_lower": 1.0, "eye_squint": 0.45, "lip_press": 1.0},
    "disgust": {
        "nose_wrinkle": 1.0,
        "upper_lip_raise": 1.0,
        "brow_lower": 0.5,
        "eye_squint": 0.4,
        "lip_corner_down": 0.3,
    },
}


def prototypes() -> torch.Tensor:
    """(num classes, num blendshapes) prototype weights."""
    p = torch.zeros(len(EXPRESSIONS), len(BLENDSHAPES))
    for c, name in enumerate(EXPRESSIONS):
        for k, v in _PROTOTYPES[name].items():
            p[c, W[k]] = v
    return p


_UPPER_SHIFT = 0.03  # how far the upper lip rises at full mouth opening
_LOWER_SHIFT = 0.15  # how far the lower lip and jaw drop
_UPPER_REACH = 0.14  # the upper-lip shift fades out this far above the lip line


def handles(w: torch.Tensor, f: dict[str, torch.Tensor]):
    """Gaussian handles of the smooth flow: centres, forward displacements and widths, each (B, J, 2).

    Handles at the same place are shared by several blendshapes (their displacements add).
    """
    b = w.shape[0]
    g = lambda name: w[:, W[name]]
    z = torch.zeros(b, device=w.device)
    ex, ey, eh, mw, my = f["eye_x"], f["eye_y"], f["eye_h"], f["mouth_w"], f["mouth_y"]
    rows = []  # (cx, cy, dx, dy, sx, sy) for the image-right side; mirrored ones get s = -1

    def add(cx, cy, dx, dy, sx, sy, mirror=True):
        for s in (-1.0, 1.0) if mirror else (1.0,):
            rows.append((s * cx, cy, s * dx, dy, sx + z, sy + z))

    smile, down, press = g("smile"), g("lip_corner_down"), g("lip_press")
    add(
        mw, my, 0.06 * smile + 0.005 * down, -0.075 * smile + 0.06 * down, 0.10, 0.09
    )  # lip corners
    add(0.30 + z, 0.16 + z, 0.01 * smile, -0.04 * smile, 0.13, 0.10)  # cheeks
    add(ex, ey - 0.16, z, -0.07 * g("brow_raise"), 0.20, 0.12)  # brows
    add(
        ex - 0.13,
        ey - 0.14,
        -0.02 * g("brow_lower"),
        -0.06 * g("inner_brow_raise") + 0.045 * g("brow_lower"),
        0.09,
        0.09,
    )
    add(
        ex, ey - eh, z, -0.022 * g("eye_widen") + 0.016 * g("eye_squint"), 0.11, 0.035
    )  # upper lids
    add(
        ex,
        ey + 0.8 * eh,
        z,
        0.008 * g("eye_widen") - 0.012 * g("eye_squint") - 0.008 * smile,
        0.11,
        0.03,
    )
    add(0.06 + z, f["nose_tip_y"] - 0.08, z, -0.02 * g("nose_wrinkle"), 0.06, 0.08)  # nose sides
    add(
        z,
        my - f["lip_u"],
        z,
        -0.03 * g("upper_lip_raise") + 0.012 * press,
        0.16,
        0.05,
        mirror=False,
    )
    add(z, my + f["lip_l"], z, -0.015 * press, 0.16, 0.05, mirror=False)
    t = [torch.stack([r[k] for r in rows], dim=1) for k in range(6)]  # each (B, J)
    return torch.stack(t[0:2], -1), torch.stack(t[2:4], -1), torch.stack(t[4:6], -1)


def smooth_backward(p: torch.Tensor, hs) -> torch.Tensor:
    """S(p): backward displacement of the smooth part. p (B, N, 2) -> (B, N, 2)."""
    c, d, s = hs  # (B, J, 2)
    diff = (p[:, :, None, :] - (c + d)[:, None]) / s[:, None]  # (B, N, J, 2)
    g = expn(-(diff * diff).sum(-1))  # (B, N, J)
    return -torch.einsum("bnj,bjk->bnk", g, d)


def smooth_backward_grid(size: int, hs) -> torch.Tensor:
    """S(p) on the regular canonical grid (size x size) -> (B, size*size, 2).

    A Gaussian handle is separable, G(x, y) = Gx(x) Gy(y), so on a grid the sum over handles is
    a batched (H x J) @ (J x W) product per displacement component instead of a (B, N, J) tensor.
    """
    from facefactors.render.camera import pixel_centers

    c, d, s = hs  # (B, J, 2)
    t = pixel_centers(size, device=c.device)  # (S,)
    cd = c + d
    gx = gauss1(t[None, None, :], cd[..., 0:1], s[..., 0:1])  # (B, J, W)
    gy = gauss1(t[None, None, :], cd[..., 1:2], s[..., 1:2])  # (B, J, H)
    out = [-(gy * d[..., k : k + 1]).transpose(1, 2) @ gx for k in range(2)]  # each (B, H, W)
    return torch.stack(out, -1).reshape(c.shape[0], size * size, 2)


def _mouth(w: torch.Tensor, f, x: torch.Tensor):
    """Upper and lower shifts of the mouth opening at column x (B, N) and the reach below the lips."""
    o = w[:, W["mouth_open"]][:, None]
    q = x / (0.8 * f["mouth_w"][:, None])
    q = q * q
    prof = expn(-(q * q))
    reach_l = (f["chin_y"] - f["mouth_y"] + 0.15)[:, None]
    return o * _UPPER_SHIFT * prof, o * _LOWER_SHIFT * prof, reach_l


def open_inverse(m: torch.Tensor, w: torch.Tensor, f):
    """open^-1: (B, N, 2) -> neutral points (B, N, 2) and the gap weight (B, N) (1 inside the open mouth)."""
    x, y = m[..., 0], m[..., 1]
    au, al, ll = _mouth(w, f, x)
    lu = _UPPER_REACH
    t = y - f["mouth_y"][:, None]
    up = torch.where(t < -lu, t, (t + au) / (1 - au / lu))
    lo = torch.where(t > ll, t, (t - al) / (1 - al / ll))
    tn = torch.where(t < -au, up, torch.where(t > al, lo, torch.zeros_like(t)))
    gap = ((t > -au + 1e-5) & (t < al - 1e-5)).float()  # the lip edges themselves are lip
    return torch.stack([x, tn + f["mouth_y"][:, None]], -1), gap


def open_forward(n: torch.Tensor, w: torch.Tensor, f) -> torch.Tensor:
    """open: neutral points (B, N, 2) -> (B, N, 2); the lip line (t = 0) goes with the upper lip."""
    x, y = n[..., 0], n[..., 1]
    au, al, ll = _mouth(w, f, x)
    lu = _UPPER_REACH
    t = y - f["mouth_y"][:, None]
    up = torch.where(t < -lu, t, t * (1 - au / lu) - au)
    lo = torch.where(t > ll, t, t * (1 - al / ll) + al)
    return torch.stack([x, torch.where(t <= 0, up, lo) + f["mouth_y"][:, None]], -1)


def backward_points(p: torch.Tensor, w: torch.Tensor, f, grid_size: int | None = None):
    """Expressed canonical points (B, N, 2) -> neutral points (B, N, 2), gap weight (B, N), intermediate m.

    ``grid_size`` says p is the full canonical grid of that size (then the separable fast path is used).
    """
    hs = handles(w, f)
    m = p + (smooth_backward_grid(grid_size, hs) if grid_size else smooth_backward(p, hs))
    n, gap = open_inverse(m, w, f)
    return n, gap, m


def forward_points(n: torch.Tensor, w: torch.Tensor, f, iterations: int = 30) -> torch.Tensor:
    """Neutral canonical points (B, N, 2) -> expressed points (B, N, 2) (the inverse of backward_points)."""
    hs = handles(w, f)
    m = open_forward(n, w, f)
    p = m.clone()
    for _ in range(iterations):  # fixed point of p = m - S(p); S is a contraction
        p = m - smooth_backward(p, hs)
    return p


def canonical_flow(p: torch.Tensor, w_a: torch.Tensor, w_b: torch.Tensor, f) -> torch.Tensor:
    """Flow from expression a to expression b of the same face at canonical points p (B, N, 2) of a."""
    n, _, _ = backward_points(p, w_a, f)
    return forward_points(n, w_b, f) - p
