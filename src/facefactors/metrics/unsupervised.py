"""Unsupervised scores of a representation (disentanglement_lib ``unsupervised_metrics.py``;
Locatello et al. 2019, sec. 5 / appendix): Gaussian total correlation, Gaussian Wasserstein
correlation, and mean pairwise mutual information between (20-bin discretised) codes.

Gaussian total correlation of N(mu, Sigma) fitted to the codes (unbiased covariance):
TC = KL(N(0, Sigma) || N(0, diag Sigma)) = 1/2 (sum_j log Sigma_jj - log det Sigma)  [nats].
Wasserstein correlation: 2 tr Sigma - 2 tr sqrt(Sigma diag(Sigma)) (the reference multiplies row
i of Sigma by Sigma_ii before the matrix square root; kept), and that divided by tr Sigma.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from facefactors.metrics.discrete import NUM_BINS, histogram_discretize, mutual_info_matrix
from facefactors.metrics.registry import register
from facefactors.utils.errors import DataError


def gaussian_total_correlation(cov: np.ndarray) -> float:
    return float(0.5 * (np.sum(np.log(np.diag(cov))) - np.linalg.slogdet(cov)[1]))


def gaussian_wasserstein_correlation(cov: np.ndarray) -> float:
    root = scipy.linalg.sqrtm(cov * np.diag(cov)[:, None])
    return float(2 * np.trace(cov) - 2 * np.trace(np.real(root)))


@register("total_correlation", "codes", "Gaussian total correlation of the codes in nats (0 = uncorrelated codes); needs no labels.")
def total_correlation(codes: np.ndarray, factors: np.ndarray | None = None, num_bins: int = NUM_BINS) -> dict:
    """codes (N, D) (factors ignored) -> {"gaussian_total_correlation", "gaussian_wasserstein_correlation", ..._norm, "mutual_info_score"}."""
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim != 2 or codes.shape[0] < 3 or codes.shape[1] < 1:
        raise DataError(f"total_correlation: codes must be (N >= 3, D); got {codes.shape}")
    cov = np.atleast_2d(np.cov(codes, rowvar=False))  # (D, D), ddof=1 as np.cov in the reference
    if np.any(np.diag(cov) <= 0):
        raise DataError("total_correlation: some code dimensions are constant (zero variance); drop them first")
    d = codes.shape[1]
    mi = mutual_info_matrix(histogram_discretize(codes, num_bins), histogram_discretize(codes, num_bins))
    np.fill_diagonal(mi, 0.0)
    wc = gaussian_wasserstein_correlation(cov)
    return {
        "gaussian_total_correlation": gaussian_total_correlation(cov),
        "gaussian_wasserstein_correlation": wc,
        "gaussian_wasserstein_correlation_norm": wc / float(np.trace(cov)),
        "mutual_info_score": float(mi.sum() / (d * d - d)) if d > 1 else 0.0,
    }
