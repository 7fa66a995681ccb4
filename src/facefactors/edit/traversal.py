"""Latent traversals, reconstructions and random samples of a VAE (inference only).

A traversal decodes z with one dimension d swept over a range while the others stay fixed —
the standard picture of what each latent dimension of a β-VAE controls (Higgins et al. 2017,
Fig. 1/7). Dimensions are ordered by their mean KL (paper 004's L2 term, per dimension): inactive
("collapsed") dimensions, whose posterior equals the prior, come last and decode to no change.

Pipelines take a loaded model and tensors; :func:`save_png` is the one helper that writes files.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from facefactors.data.collate import collate
from facefactors.models.vae import VAE
from facefactors.models.vae_losses import kl_divergence, kl_per_dim, reconstruction_loss
from facefactors.utils.images import make_grid, save_png  # noqa: F401 (part of this module's API)


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def encode(model: VAE, images: torch.Tensor, labels: dict[str, torch.Tensor] | None = None, batch_size: int = 256) -> torch.Tensor:
    """Posterior means mu (N, D) of images (N, C, H, W), in batches."""
    device = _model_device(model)
    out = []
    for s in range(0, len(images), batch_size):
        lab = {k: v[s : s + batch_size] for k, v in labels.items()} if labels and model.is_conditional else None
        out.append(model.encode(images[s : s + batch_size].to(device), lab)[0].cpu())
    return torch.cat(out)


@torch.no_grad()
def decode(model: VAE, z: torch.Tensor, labels: dict[str, torch.Tensor] | None = None, batch_size: int = 256) -> torch.Tensor:
    """Images (N, C, H, W) in [0, 1] decoded from z (N, D), in batches."""
    device = _model_device(model)
    out = []
    for s in range(0, len(z), batch_size):
        lab = {k: v[s : s + batch_size] for k, v in labels.items()} if labels and model.is_conditional else None
        out.append(torch.sigmoid(model.decode(z[s : s + batch_size].to(device), lab)).cpu())
    return torch.cat(out)


@torch.no_grad()
def encode_dataset(
    model: VAE,
    dataset: Dataset,
    batch_size: int = 256,
    max_items: int = 4096,
    reconstruction: str = "bernoulli",
    sigma: float = 0.5**0.5,
) -> tuple[np.ndarray, dict[str, np.ndarray], float, float]:
    """Posterior means (N, D), labels {name: (N,)}, mean reconstruction loss and KL (nats / image)
    over the first ``max_items`` items of ``dataset``."""
    device = _model_device(model)
    n = min(len(dataset), max_items)
    # A batch built by the data set's own __getitems__ (dict) passes through; item lists are collated.
    loader = DataLoader(torch.utils.data.Subset(dataset, range(n)), batch_size=batch_size, shuffle=False, collate_fn=lambda b: b if isinstance(b, dict) else collate(b))
    codes, labels, rec, kl = [], {}, 0.0, 0.0
    for batch in loader:
        x = batch["image"].to(device)
        lab = batch["labels"] if model.is_conditional else None
        mu, logvar = model.encode(x, lab)
        rec += float(reconstruction_loss(model.decode(mu, lab), x, reconstruction, sigma).sum())
        kl += float(kl_divergence(mu, logvar).sum())
        codes.append(mu.cpu().numpy())
        for k, v in batch["labels"].items():
            labels.setdefault(k, []).append(v.numpy())
    return np.concatenate(codes), {k: np.concatenate(v) for k, v in labels.items()}, rec / n, kl / n


@torch.no_grad()
def dimension_kl(model: VAE, images: torch.Tensor, labels: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Mean KL per latent dimension (D,) over ``images``: near 0 = an unused dimension."""
    device = _model_device(model)
    lab = labels if model.is_conditional else None
    mu, logvar = model.encode(images.to(device), lab)
    return kl_per_dim(mu, logvar).mean(0).cpu()


@torch.no_grad()
def traverse(
    model: VAE,
    z: torch.Tensor,
    values: torch.Tensor,
    dims: list[int] | None = None,
    labels: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Decode z (D,) with dimension d set to each of ``values`` (K,), for every d in ``dims``.

    Returns images (len(dims), K, C, H, W) in [0, 1]: row d is the traversal of dimension d.
    ``labels`` (each (1,)) condition a conditional VAE.
    """
    dims = list(range(model.latent_dim)) if dims is None else list(dims)
    k = len(values)
    codes = z.detach().cpu().reshape(1, 1, -1).repeat(len(dims), k, 1)  # (len(dims), K, D)
    for row, d in enumerate(dims):
        codes[row, :, d] = values
    flat = codes.reshape(-1, z.numel())
    lab = {n: v.reshape(1).repeat(len(flat)) for n, v in labels.items()} if labels else None
    images = decode(model, flat, lab)
    return images.reshape(len(dims), k, *images.shape[1:])


def traversal_grid(
    model: VAE,
    image: torch.Tensor,
    limit: float = 3.0,
    steps: int = 9,
    order_by_kl: torch.Tensor | None = None,
    labels: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, list[int]]:
    """Traversal of every dimension around the posterior mean of ``image`` (1, C, H, W): values
    from -limit to +limit (prior standard deviations). Rows are ordered by ``order_by_kl`` (D,)
    if given (most informative first). Returns (grid image (C, H', W'), row order)."""
    z = encode(model, image, labels)[0]
    dims = list(range(model.latent_dim))
    if order_by_kl is not None:
        dims = [int(i) for i in torch.argsort(order_by_kl, descending=True)]
    values = torch.linspace(-limit, limit, steps)
    imgs = traverse(model, z, values, dims, labels)  # (D, K, C, H, W)
    return make_grid(imgs.flatten(0, 1), nrow=steps), dims


@torch.no_grad()
def reconstruction_grid(model: VAE, images: torch.Tensor, labels: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Inputs (top row) above their reconstructions from the posterior mean (bottom row)."""
    rec = decode(model, encode(model, images, labels), labels)
    return make_grid(torch.cat([images.cpu(), rec]), nrow=len(images))


@torch.no_grad()
def sample_grid(model: VAE, n: int = 32, nrow: int = 8, seed: int = 0, labels: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Decodes of z ~ N(0, I) (a conditional VAE with no labels: every label unknown)."""
    z = torch.randn(n, model.latent_dim, generator=torch.Generator().manual_seed(seed))
    return make_grid(decode(model, z, labels), nrow=nrow)
