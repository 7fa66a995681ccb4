"""Albedo of the face world on the canonical grid: skin, eyes, brows, lips, nostrils, hair,
beard, wrinkles, and the expression's albedo effects (open mouth, teeth, folds) and eyeglasses.

Unsup3D (Wu et al. 2020, sec. 3.1) factors an image into albedo x shading; this module is the
albedo a(u, v). Features are painted with soft masks over the neutral point n, so they move
with the expression flow; the mouth interior and eyeglasses are painted in the expressed frame
(the first has no neutral pre-image, the second is rigid).
"""

from __future__ import annotations

import torch

from facefactors.world.expression import W, _mouth
from facefactors.world.fastmath import gauss, gauss1, soft
from facefactors.world.identity import A, jaw_half_width
from facefactors.world.landmarks import lower_lid, lower_lip, upper_lid, upper_lip
from facefactors.world.surface import col, windows

_SKIN_LIGHT = torch.tensor([0.96, 0.80, 0.70])
_SKIN_DARK = torch.tensor([0.30, 0.19, 0.13])
_HAIR = torch.tensor(
    [[0.06, 0.05, 0.045], [0.30, 0.19, 0.11], [0.72, 0.58, 0.36], [0.50, 0.20, 0.09]]
)  # black, brown, blond, red
_GREY = torch.tensor([0.78, 0.78, 0.78])
_IRIS = torch.tensor(
    [[0.22, 0.12, 0.06], [0.35, 0.30, 0.12], [0.25, 0.40, 0.55]]
)  # brown, hazel, blue


def _rgb(c: torch.Tensor) -> torch.Tensor:
    """(B, 3) colour -> (B, 3, 1, 1)."""
    return c[:, :, None, None]


def _mix(base, colour, weight):
    """Alpha-blend a (B, 3, 1, 1) or (B, 3, H, W) colour into base with weight (B, H, W)."""
    return torch.lerp(base, colour, weight[:, None])  # one pass: base + w (colour - base)


def skin_colour(albedo: torch.Tensor) -> torch.Tensor:
    """(B, A) -> (B, 3): skin tone interpolates light..dark (gamma makes the middle tones common)."""
    t = albedo[:, A["skin_tone"]].clamp(0, 1)[:, None]
    c = _SKIN_LIGHT * (1 - t) + _SKIN_DARK * t
    red = 0.04 * albedo[:, A["skin_red"]].clamp(-2, 2)[:, None]
    return (c + red * torch.tensor([1.0, -0.4, -0.6])).clamp(0.05, 1)


def hair_colour(albedo: torch.Tensor, age: torch.Tensor) -> torch.Tensor:
    """(B, A), (B,) -> (B, 3): mostly dark hair, some brown, blond and red; greys with age."""
    dark = torch.sigmoid(1.3 * albedo[:, A["hair_dark"]] + 0.7)
    red = torch.sigmoid(2 * albedo[:, A["hair_red"]] - 2.5)
    light = _HAIR[2] * (1 - red[:, None]) + _HAIR[3] * red[:, None]
    mid = _HAIR[1] * (1 - red[:, None]) + _HAIR[3] * red[:, None]
    c = torch.where(
        dark[:, None] > 0.5,
        _HAIR[0] + (mid - _HAIR[0]) * (2 - 2 * dark[:, None]),
        mid + (light - mid) * (1 - 2 * dark[:, None]),
    )
    grey = ((age - 0.6) * 2.5).clamp(0, 1)[:, None]  # greying starts in the oldest third
    return c * (1 - grey) + _GREY * grey


def paint(x, y, px, f, p, regions, gap, m):
    """Albedo (B, 3, H, W) at neutral points (x, y) (B, H, W) for the parameters ``p`` (FaceParams).

    ``gap`` (B, H, W) marks the open mouth; ``m`` (B, H, W, 2) are the points before the mouth
    opening (where the teeth are placed); ``px`` is the canonical pixel size. Local features are
    painted in their windows of the grid only (surface.Window).
    """
    b = x.shape[0]
    win = windows(x.shape[-1])
    alb, age = p.albedo, p.age_value
    ex, ey, ew, eh = col(f, "eye_x"), col(f, "eye_y"), col(f, "eye_w"), col(f, "eye_h")
    my, mw = col(f, "mouth_y"), col(f, "mouth_w")

    skin = _rgb(skin_colour(alb))
    tex = 1 + 0.025 * (0.5 + 0.5 * alb[:, A["texture"]].clamp(-2, 2))[:, None, None] * (
        torch.sin(
            x * (40 + 30 * alb[:, A["tex_f1"]])[:, None, None]
            + 6.3 * alb[:, A["tex_p1"]][:, None, None]
        )
        * torch.sin(
            y * (37 + 30 * alb[:, A["tex_f2"]])[:, None, None]
            + 6.3 * alb[:, A["tex_p2"]][:, None, None]
        )
    )
    out = skin * (tex * (1 - 0.15 * regions["neck"]))[:, None]  # the neck is in shadow
    old = ((age - 0.3) * 1.6).clamp(0, 1)[:, None, None]  # wrinkles deepen from early middle age on

    # around the eyes: darker sockets, lid crease, then the eyes and the brows
    k = win["eyes"]
    xe, ye = k(x), k(y)
    axe = xe.abs()
    re = (axe - ex) / ew
    shade = 1 - 0.22 * gauss(axe, ye, ex, ey - 0.01, 0.13, 0.07)
    crease = gauss1(ye - upper_lid(re, ey, eh), -0.028, 0.012) * soft(
        1 - re.abs(), 0.1
    )
    shade = shade - 0.25 * crease
    k.mul_(out, shade[:, None])
    sub = k(out)
    opening = (
        soft(ye - upper_lid(re, ey, eh), 0.004)
        * soft(lower_lid(re, ey, eh) - ye, 0.004)
        * soft(1 - re.abs(), 0.03)
    )
    d_iris = torch.sqrt((axe - ex) ** 2 + (ye - ey) ** 2)
    iris_k = alb[:, A["iris"]]
    iris_c = torch.where(
        (iris_k > 0.6)[:, None], _IRIS[2], torch.where((iris_k > -0.3)[:, None], _IRIS[1], _IRIS[0])
    )
    eye = _mix(
        torch.tensor([0.93, 0.91, 0.88])[None, :, None, None].expand(b, 3, 1, 1),
        _rgb(iris_c),
        soft(0.44 * ew - d_iris, 0.004),
    )
    eye = _mix(eye, torch.full((b, 3, 1, 1), 0.03), soft(0.17 * ew - d_iris, 0.003))
    sub = _mix(sub, eye, opening)
    lid_line = gauss1(ye - upper_lid(re, ey, eh), -0.005, 0.011) * soft(
        1.15 - re.abs(), 0.03
    )
    low_line = gauss1(ye - lower_lid(re, ey, eh), 0, 0.006) * soft(1 - re.abs(), 0.03)
    sub = sub * (1 - 0.92 * lid_line - 0.4 * low_line).clamp(min=0.05)[:, None]
    # brows: a band along the quadratic through the outer, peak and inner brow points
    bx0, bx1, bx2 = ex + 2.15 * ew, ex + 0.45 * ew, ex - 1.45 * ew
    by0, by1, by2 = ey - 1.05 * ew, ey - 1.8 * ew, ey - 1.3 * ew
    yb = (by0 * (axe - bx1) * (axe - bx2) / ((bx0 - bx1) * (bx0 - bx2)) + by1 * (axe - bx0) * (axe - bx2) / ((bx1 - bx0) * (bx1 - bx2))
          + by2 * (axe - bx0) * (axe - bx1) / ((bx2 - bx0) * (bx2 - bx1)))  # fmt: skip
    strength = alb[:, A["brow_strength"]][:, None, None]
    along = ((bx0 - axe) / (bx0 - bx2)).clamp(0, 1)  # 0 outer .. 1 inner
    thick = (0.017 + 0.013 * along) * (1 + 0.25 * strength.clamp(-1.5, 2))
    brow = soft(thick - (ye - yb).abs(), 0.005) * soft(bx0 - axe, 0.01) * soft(axe - bx2, 0.01)
    brow_c = hair_colour(alb, age * 0.4) * 0.5  # brows stay darker than the hair and grey later
    sub = _mix(sub, _rgb(brow_c), (0.85 + 0.1 * strength.clamp(-1, 1)) * brow)
    out[..., k.rows, k.cols] = sub

    if bool((old > 0).any()):  # age-like forehead lines
        k = win["forehead"]
        yf = k(y)
        forehead = (
            soft(ey - 0.24 - yf, 0.01)
            * soft(yf - (ey - 0.45), 0.01)
            * soft(0.32 - k(x).abs(), 0.03)
        )
        k.mul_(out, (1 - 0.15 * old * forehead * (0.5 + 0.5 * torch.sin(yf * 95.0)) ** 6)[:, None])

    # nostrils, nasolabial folds (age, smile), lips, lip line
    k = win["nose"]
    k.mul_(
        out,
        (
            1
            - 0.75
            * gauss(
                k(x).abs(),
                k(y),
                0.45 * col(f, "nose_w"),
                col(f, "nose_base_y") - 0.012,
                0.028,
                0.013,
            )
        )[:, None],
    )
    k = win["mouth"]
    xm, ym = k(x), k(y)
    fold_d = _segment_distance(
        xm.abs(), ym, col(f, "nose_w") + 0.01, col(f, "nose_base_y") - 0.05, mw + 0.035, my + 0.04
    )
    fold = gauss1(fold_d, 0, 0.012) * (
        old + 0.8 * p.expression_weights[:, W["smile"]][:, None, None]
    )
    r = xm / mw
    lip = (
        soft(ym - upper_lip(r, my, col(f, "lip_u")), 0.006)
        * soft(lower_lip(r, my, col(f, "lip_l")) - ym, 0.006)
        * (r.abs() < 1).float()
    )
    lip_red = torch.sigmoid(alb[:, A["lip_red"]])[:, None]
    lip_c = skin[:, :, 0, 0] * (
        torch.tensor([0.78, 0.48, 0.48]) - 0.12 * lip_red * torch.tensor([-0.3, 1.0, 0.8])
    )
    sub = k(out) * (1 - 0.18 * fold.clamp(max=1))[:, None]
    sub = _mix(sub, _rgb(lip_c), 0.9 * lip)
    sub = (
        sub * (1 - 0.55 * gauss1(ym, my, 0.007) * soft(1 - r.abs(), 0.05))[:, None]
    )
    out[..., k.rows, k.cols] = sub

    hair_c = _rgb(hair_colour(alb, age))
    dens = alb[:, A["beard"]][:, None, None]
    rows = torch.nonzero(dens.flatten() > 0).flatten()
    if len(rows):  # beard and moustache, painted on the bearded faces only
        k = win["lower"]
        on = lambda t: k(t[rows])  # noqa: E731  (window of the bearded rows)
        fb = lambda key: col(f, key)[rows]  # noqa: E731
        mwb, myb = mw[rows], my[rows]
        xl, yl = on(x), on(y)
        axl = xl.abs()
        w = on(regions["outline"])
        rl = xl / mwb
        lip_l = (
            soft(yl - upper_lip(rl, myb, fb("lip_u")), 0.006)
            * soft(lower_lip(rl, myb, fb("lip_l")) - yl, 0.006)
            * (rl.abs() < 1).float()
        )
        beard = (soft(yl - (fb("nose_base_y") + 0.015), 0.01)
                 * (1 - 0.6 * soft(0.8 * mwb - axl, 0.02) * soft(yl - (myb - fb("lip_u") * 0.3), 0.01) * soft(myb + fb("lip_l") - yl, 0.01))
                 + soft(axl - 0.78 * w, 0.02) * soft(yl - (ey[rows] + 0.12), 0.02))  # fmt: skip
        beard = beard.clamp(max=1) * (1 - lip_l * 0.7) * on(regions["face"]) * dens[rows]
        stubble = hair_c[rows] * (0.9 + 0.2 * (torch.sin(xl * 210) * torch.sin(yl * 190))[:, None])
        out[rows, :, k.rows, k.cols] = _mix(on(out), stubble, 0.8 * beard)

    # hair: over the face above the hairline and outside the face
    hair_w = torch.maximum(
        regions["hair_over"] * regions["face"], regions["hair_out"] * (1 - regions["face"])
    )
    strands = 1 + 0.12 * torch.sin(x * 90 + 4 * torch.sin(y * 9)) * torch.sin(y * 23 + x * 3)
    out = _mix(out, hair_c * strands[:, None], hair_w)

    if bool(
        (gap > 0).any()
    ):  # open mouth: dark interior, upper teeth below the upper lip (expressed frame)
        k = win["mouth"]
        mx, mt = k(m[..., 0]), k(m[..., 1]) - my
        au, al, _ = _mouth(p.expression_weights, f, mx.reshape(b, -1))
        au, al = au.reshape_as(mx), al.reshape_as(mx)
        teeth = (
            soft(mt + au, 0.004)
            * soft(-au + (0.6 * (au + al)).clamp(max=0.03) - mt, 0.004)
            * soft(0.6 * mw - mx.abs(), 0.02)
        )
        interior = _mix(
            torch.tensor([0.32, 0.08, 0.08])[None, :, None, None].expand(b, 3, 1, 1),
            torch.full((b, 3, 1, 1), 0.92),
            teeth,
        )
        out[..., k.rows, k.cols] = _mix(k(out), interior, k(gap))

    return out.clamp(0, 1)


def paint_eyeglasses(out, px_, py_, f, glasses, style, px):
    """Rigid eyeglasses in the expressed frame: dark rims around the eyes, tinted lenses, bridge, temples."""
    rows = torch.nonzero(glasses > 0).flatten()
    if not len(rows):
        return out
    out = out.clone()
    # only the faces that wear glasses are painted (each row depends on its own face only)
    out[rows] = _eyeglasses(
        out[rows], px_[rows], py_[rows], {k: v[rows] for k, v in f.items()}, style[rows], px
    )
    return out


def _eyeglasses(out, px_, py_, f, style, px):
    """paint_eyeglasses on the rows that wear glasses."""
    k = windows(px_.shape[-1])["eyes"]
    px_, py_ = k(px_), k(py_)
    size = (1 + 0.1 * style[:, 2])[:, None, None]
    ex, ey, ew = col(f, "eye_x"), col(f, "eye_y"), col(f, "eye_w")
    ax = px_.abs()
    rx, ry = 1.45 * ew * size, 1.0 * ew * size
    cy = ey + 0.012
    rho = torch.sqrt(((ax - ex) / rx) ** 2 + ((py_ - cy) / ry) ** 2)
    rim = soft(0.022 / ry - (rho - 1).abs(), 0.5 * px / ry)
    bridge = soft(0.012 - (py_ - (cy - 0.3 * ry)).abs(), px) * soft(ex - rx - ax + 0.01, px)
    temple = (
        soft(0.01 - (py_ - (cy - 0.2 * ry)).abs(), px)
        * soft(ax - (ex + rx) + 0.01, px)
        * soft(jaw_half_width(py_, f) - ax, px)
    )
    lens = soft(1 - rho, 0.5 * px / ry)
    dark = (0.05 + 0.15 * style[:, 0].clamp(0, 1))[:, None]
    tint = (0.1 + 0.25 * style[:, 1].clamp(0, 1))[:, None, None]
    sub = (
        k(out) * (1 - tint * lens)[:, None]
        + (tint * lens)[:, None] * torch.tensor([0.25, 0.3, 0.35])[None, :, None, None]
    )
    frame = torch.maximum(torch.maximum(rim, bridge), temple)
    out[..., k.rows, k.cols] = _mix(sub, _rgb(dark.expand(-1, 3)), frame)
    return out


def _segment_distance(x, y, x0, y0, x1, y1):
    """Distance from (x, y) to the segment (x0, y0)-(x1, y1), broadcasting."""
    dx, dy = x1 - x0, y1 - y0
    t = (((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy)).clamp(0, 1)
    return torch.sqrt((x - x0 - t * dx) ** 2 + (y - y0 - t * dy) ** 2)
