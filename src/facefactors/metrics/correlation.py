"""Projection-vs-ground-truth correlation table (Zheng et al., "Unsupervised Disentanglement of
Linear-Encoded Facial Semantics", /work/shared/papers/001_*.txt, sec. 4.2, Table 2).

For latent codes w (N, D) and semantic directions v_m (D,), the projection length w^T v_m is
correlated (Pearson) with each ground-truth semantic g (N,) (e.g. yaw, pitch). The table is
|rho| (the paper reports magnitudes, bold above 0.5); the signed values are returned too.
"""

from __future__ import annotations

import numpy as np

from facefactors.metrics.registry import register
from facefactors.utils.errors import DataError


def pearson_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, P), (N, Q) -> (P, Q) Pearson correlations (0 where a column is constant)."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    na = np.sqrt((a**2).sum(0))
    nb = np.sqrt((b**2).sum(0))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (a.T @ b) / (na[:, None] * nb[None, :])
    return np.nan_to_num(r)


@register("projection_correlation", "other", "Projection-vs-ground-truth table: |Pearson r| between each direction's projection length and each ground-truth semantic (diagonal high, rest low).")
def projection_correlation(latents: np.ndarray, directions: dict[str, np.ndarray], ground_truth: dict[str, np.ndarray]) -> dict:
    """latents (N, D), directions {name: (D,)}, ground_truth {name: (N,)} -> {"table" |r| (M, G), "signed", "rows", "cols"}."""
    latents = np.asarray(latents, dtype=np.float64)
    if latents.ndim != 2:
        raise DataError(f"projection_correlation: latents must be (N, D); got {latents.shape}")
    rows, cols = list(directions), list(ground_truth)
    v = np.stack([np.asarray(directions[k], dtype=np.float64).reshape(-1) for k in rows], 1)  # (D, M)
    if v.shape[0] != latents.shape[1]:
        raise DataError(f"projection_correlation: directions have {v.shape[0]} dims but latents {latents.shape[1]}")
    g = np.stack([np.asarray(ground_truth[k], dtype=np.float64).reshape(-1) for k in cols], 1)  # (N, G)
    if len(g) != len(latents):
        raise DataError(f"projection_correlation: {len(g)} ground-truth rows for {len(latents)} latents")
    signed = pearson_matrix(latents @ v, g)
    return {"table": np.abs(signed), "signed": signed, "rows": rows, "cols": cols}
