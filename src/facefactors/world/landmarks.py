"""The 68 facial landmarks (iBUG 300-W semantics and order) on the canonical grid.

Order: jaw 0-16 (image-left to image-right), brows 17-21 and 22-26, nose bridge 27-30,
nostril base 31-35, eyes 36-41 (image-left: outer corner, upper lid, inner corner, lower lid)
and 42-47 (image-right: inner corner, upper lid, outer corner, lower lid), outer lips 48-59
(from the image-left corner clockwise), inner lips 60-67.

The landmarks sit on the same outline curves that paint the face (``upper_lid``,
``upper_lip`` ...), so a detector's landmarks can be compared with them. They are neutral
positions; expression.forward_points moves them with the expression flow.
"""

from __future__ import annotations

import torch

from facefactors.world.fastmath import gauss1, powf
from facefactors.world.identity import jaw_half_width

LIP_GAP = 0.004  # inner lip landmarks sit this far off the lip line, on their own lip (corners on the upper one)

# jaw points: fraction of the way from the jaw top to the chin (left half, 0..8)
_JAW_S = (0.0, 0.165, 0.33, 0.49, 0.64, 0.77, 0.88, 0.965, 1.0)
# brow points of the image-left brow relative to its eye centre, (dx toward the nose, dy), in eye half-widths
_BROW = ((-2.15, -1.05), (-1.45, -1.6), (-0.45, -1.8), (0.55, -1.65), (1.45, -1.3))


def lid_profile(r: torch.Tensor) -> torch.Tensor:
    """Opening profile of the lids along the eye, r = (x - centre) / half-width in [-1, 1]."""
    return (1 - r * r).clamp_min(0)


def upper_lid(r, eye_y, eye_h):
    return eye_y - eye_h * powf(lid_profile(r), 0.7)


def lower_lid(r, eye_y, eye_h):
    return eye_y + 0.8 * eye_h * powf(lid_profile(r), 0.9)


def upper_lip(r, mouth_y, lip_u):
    """Outer edge of the upper lip, r = x / mouth half-width; a dip at the centre (Cupid's bow)."""
    base = powf((1 - r * r).clamp_min(0), 0.6)
    return mouth_y - lip_u * base * (1 - 0.2 * gauss1(r, 0, 0.16))


def lower_lip(r, mouth_y, lip_l):
    return mouth_y + lip_l * powf((1 - r * r).clamp_min(0), 0.7)


def canonical_landmarks(f: dict[str, torch.Tensor]) -> torch.Tensor:
    """Neutral canonical landmarks from the face features: (B, 68, 2), x right, y down, in [-1, 1]."""
    b = f["eye_y"].shape[0]
    dev = f["eye_y"].device
    col = lambda v: v.reshape(b, 1)
    pts = torch.zeros(b, 68, 2, device=dev)

    # jaw: left half top-down, then the right half mirrored bottom-up
    s = torch.tensor(_JAW_S, device=dev)[None]  # (1, 9)
    top, chin = col(f["jaw_top"]), col(f["chin_y"])
    y = top + s * (chin - top) * 0.999  # stay just inside the outline at the chin
    x = jaw_half_width(y, f)
    pts[:, 0:9, 0], pts[:, 0:9, 1] = -x, y
    pts[:, 8, 0] = 0.0
    pts[:, 9:17, 0], pts[:, 9:17, 1] = x[:, :8].flip(1), y[:, :8].flip(1)

    ex, ey, ew, eh = (col(f[k]) for k in ("eye_x", "eye_y", "eye_w", "eye_h"))
    brow = torch.tensor(_BROW, device=dev)  # (5, 2)
    pts[:, 17:22, 0] = -ex + brow[None, :, 0] * ew
    pts[:, 17:22, 1] = ey + brow[None, :, 1] * ew
    pts[:, 22:27, 0] = -pts[:, 17:22, 0].flip(1)
    pts[:, 22:27, 1] = pts[:, 17:22, 1].flip(1)

    frac = torch.linspace(0, 1, 4, device=dev)[None]
    pts[:, 27:31, 1] = (ey - 0.02) + frac * (col(f["nose_tip_y"]) - (ey - 0.02))
    nw, base = col(f["nose_w"]), col(f["nose_base_y"])
    pts[:, 31:36, 0] = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0], device=dev)[None] * nw
    pts[:, 31:36, 1] = base - torch.tensor([0.04, 0.015, 0.0, 0.015, 0.04], device=dev)[None]

    third = torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0], device=dev)[
        None
    ]  # outer .. inner for the left eye
    lx = -ex + third * ew  # left eye, x increasing toward the nose
    r = third.expand(b, 4)
    pts[:, 36:40, 0] = lx
    pts[:, 36:40, 1] = upper_lid(r, ey, eh)
    pts[:, 40, 0], pts[:, 40, 1] = lx[:, 2], lower_lid(r[:, 2], ey[:, 0], eh[:, 0])
    pts[:, 41, 0], pts[:, 41, 1] = lx[:, 1], lower_lid(r[:, 1], ey[:, 0], eh[:, 0])
    # right eye mirrors the left: 42 <- 39, 43 <- 38, 44 <- 37, 45 <- 36, 46 <- 41, 47 <- 40
    for dst, src in zip(range(42, 48), (39, 38, 37, 36, 41, 40)):
        pts[:, dst, 0], pts[:, dst, 1] = -pts[:, src, 0], pts[:, src, 1]

    my, mw = col(f["mouth_y"]), col(f["mouth_w"])
    ro = torch.tensor([-1.0, -0.6, -0.25, 0.0, 0.25, 0.6, 1.0], device=dev)[None].expand(b, 7)
    pts[:, 48:55, 0] = ro * mw
    pts[:, 48:55, 1] = upper_lip(ro, my, col(f["lip_u"]))
    rl = torch.tensor([0.6, 0.25, 0.0, -0.25, -0.6], device=dev)[None].expand(b, 5)
    pts[:, 55:60, 0] = rl * mw
    pts[:, 55:60, 1] = lower_lip(rl, my, col(f["lip_l"]))
    ri = torch.tensor([-0.8, -0.35, 0.0, 0.35, 0.8, 0.35, 0.0, -0.35], device=dev)[None]
    pts[:, 60:68, 0] = ri * mw
    off = (
        torch.tensor([-1, -1, -1, -1, -1, 1, 1, 1], device=dev, dtype=torch.float32)[None] * LIP_GAP
    )
    pts[:, 60:68, 1] = my + off
    return pts
