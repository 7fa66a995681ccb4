"""Attribute vectors by latent arithmetic (paper 004, "Manipulating Face Attributes", Figs. 9-11).

Z_s = mean posterior code of the faces with the attribute (e.g. smiling), Z_n = mean code of
those without; Delta Z = Z_s - Z_n, and a face is edited by Z_new = Z_original + alpha * Delta Z
(the study's only equation on this slide). Works for any labelled attribute:

* binary / categorical: "with" = one class (default: the second class, e.g. ``yes``), "without"
  = the other classes (or a named one, e.g. ``--without neutral``);
* continuous: "with" = above the median, "without" = at or below it.

Missing labels (-1 / NaN, see ``data/description.py``) are left out of both means.
Pipelines take a loaded model and tensors (codes, labels, images), never paths.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from facefactors.data.description import DatasetDescription
from facefactors.edit.traversal import decode, encode, make_grid
from facefactors.models.vae import VAE
from facefactors.utils.errors import UserError


@dataclass
class AttributeVector:
    attribute: str  # factor name, e.g. "eyeglasses"
    with_name: str  # what "with" means, e.g. "yes" or "> 0.31"
    without_name: str  # what "without" means, e.g. "no" or "not smile"
    delta: np.ndarray  # (D,) Delta Z = mean z(with) - mean z(without)
    mean_with: np.ndarray  # (D,)
    mean_without: np.ndarray  # (D,)
    n_with: int
    n_without: int

    def to_dict(self) -> dict:
        return {
            "attribute": self.attribute,
            "with": self.with_name,
            "without": self.without_name,
            "n_with": self.n_with,
            "n_without": self.n_without,
            "norm": float(np.linalg.norm(self.delta)),
            "delta": self.delta.tolist(),
        }


def split_by_attribute(
    description: DatasetDescription,
    attribute: str,
    values: np.ndarray,
    with_class: str | None = None,
    without_class: str | None = None,
) -> tuple[np.ndarray, np.ndarray, str, str]:
    """Boolean masks (N,) of "with" and "without" items, and their names (see module doc)."""
    if attribute not in description:
        raise UserError(f"attribute {attribute!r} is not a factor of data set {description.name!r}; choose from {description.names}")
    if not description.is_labelled(attribute):
        raise UserError(f"attribute {attribute!r} is not labelled in data set {description.name!r}; labelled: {list(description.labelled)}")
    f = description[attribute]
    values = np.asarray(values)
    known = ~description.missing_mask(attribute, values)
    if f.is_categorical:
        names = list(f.class_names)

        def index(name: str) -> int:
            if name not in names:
                raise UserError(f"attribute {attribute!r} has no class {name!r}; its classes are {names}")
            return names.index(name)

        pos = index(with_class) if with_class is not None else 1
        with_mask = known & (values == pos)
        if without_class is not None:
            without_mask = known & (values == index(without_class))
            without_name = without_class
        else:
            without_mask = known & (values != pos)
            without_name = names[0] if len(names) == 2 else f"not {names[pos]}"
        with_name = names[pos]
    else:
        if with_class is not None or without_class is not None:
            raise UserError(f"attribute {attribute!r} is continuous; it is split at its median, so leave --with/--without out")
        med = float(np.median(values[known])) if known.any() else 0.0
        with_mask, without_mask = known & (values > med), known & (values <= med)
        with_name, without_name = f"> {med:.3g}", f"<= {med:.3g}"
    return with_mask, without_mask, with_name, without_name


def attribute_vector(
    codes: np.ndarray,
    description: DatasetDescription,
    attribute: str,
    values: np.ndarray,
    with_class: str | None = None,
    without_class: str | None = None,
    min_count: int = 2,
) -> AttributeVector:
    """Delta Z = mean z(with) - mean z(without) over codes (N, D) labelled by ``values`` (N,)."""
    codes = np.asarray(codes, dtype=np.float64)
    if len(codes) != len(values):
        raise UserError(f"{len(codes)} codes but {len(values)} labels of {attribute!r}; pass the labels of the same images")
    w, wo, wn, won = split_by_attribute(description, attribute, values, with_class, without_class)
    if w.sum() < min_count or wo.sum() < min_count:
        raise UserError(
            f"attribute {attribute!r}: {int(w.sum())} images with {wn!r} and {int(wo.sum())} without; "
            f"need at least {min_count} of each; use more images or another class"
        )
    mw, mwo = codes[w].mean(0), codes[wo].mean(0)
    return AttributeVector(attribute, wn, won, mw - mwo, mw, mwo, int(w.sum()), int(wo.sum()))


def apply_vector(z: torch.Tensor, delta: torch.Tensor | np.ndarray, alphas: torch.Tensor | list[float]) -> torch.Tensor:
    """z (B, D) -> edited codes (B, K, D): z + alpha_k * delta for each alpha."""
    delta = torch.as_tensor(delta, dtype=z.dtype)
    alphas = torch.as_tensor(alphas, dtype=z.dtype)
    return z[:, None, :] + alphas[None, :, None] * delta[None, None, :]


@torch.no_grad()
def edit_images(
    model: VAE,
    images: torch.Tensor,
    delta: torch.Tensor | np.ndarray,
    alphas: torch.Tensor | list[float],
    labels: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Images (B, C, H, W) -> edited images (B, K, C, H, W), one per alpha (alpha 0 = reconstruction)."""
    z = encode(model, images, labels)  # (B, D)
    codes = apply_vector(z, delta, alphas)  # (B, K, D)
    b, k, d = codes.shape
    lab = {n: v.repeat_interleave(k) for n, v in labels.items()} if labels else None
    out = decode(model, codes.reshape(b * k, d), lab)
    return out.reshape(b, k, *out.shape[1:])


def attribute_strip(model: VAE, image: torch.Tensor, delta, alphas, labels=None) -> torch.Tensor:
    """One face edited for a range of alpha, as one image (the study's Fig. 10 rows)."""
    edited = edit_images(model, image[:1], delta, alphas, labels)[0]  # (K, C, H, W)
    return make_grid(torch.cat([image[:1].cpu(), edited]), nrow=len(edited) + 1)


def attribute_grid(model: VAE, images: torch.Tensor, delta, alphas, labels=None) -> torch.Tensor:
    """Several faces (rows): the original, then one column per alpha (the study's Figs. 10-11)."""
    edited = edit_images(model, images, delta, alphas, labels)  # (B, K, C, H, W)
    rows = torch.cat([images.cpu()[:, None], edited], dim=1)  # (B, 1 + K, C, H, W)
    return make_grid(rows.flatten(0, 1), nrow=rows.shape[1])
