"""Interventional Robustness Score (Suter et al. 2019, "Robustly Disentangled Causal Mechanisms",
sec. 4, "scalable" estimator), as computed by disentanglement_lib ``irs.py``.

For code j and factor i: the mean over values g of factor i of the 99th percentile of
|z_j - E[z_j | v_i = g]|, divided by the code's maximal deviation max |z_j - E z_j|;
IRS_matrix = 1 - that; a code's score is its best factor; IRS = average of code scores weighted
by the codes' maximal deviations.

Reference vs paper: the paper's score uses the maximum (quantile 1.0); the reference defaults to
the 0.99 quantile, followed here. The reference also discretises the *factors* with the same
20-bin histogram as codes (order-preserving relabelling for factors with <= 20 values) and drops
constant codes first; both kept. Reference quirk not kept: its ``num_active_dims`` is the sum of
the active codes' values; ours is their count.
"""

from __future__ import annotations

import numpy as np

from facefactors.metrics.discrete import NUM_BINS, check_codes_factors, histogram_discretize
from facefactors.metrics.registry import register


def irs_matrix(factors: np.ndarray, codes: np.ndarray, diff_quantile: float = 0.99) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) discrete factors, (N, D) non-constant codes -> (IRS matrix (D, K), max deviations (D,))."""
    max_dev = np.max(np.abs(codes - codes.mean(0)), axis=0)  # (D,)
    cum = np.zeros((codes.shape[1], factors.shape[1]))
    for i in range(factors.shape[1]):
        values = np.unique(factors[:, i])
        for g in values:
            group = codes[factors[:, i] == g]  # (n_g, D)
            cum[:, i] += np.percentile(np.abs(group - group.mean(0)), diff_quantile * 100, axis=0)
        cum[:, i] /= len(values)
    return 1.0 - cum / max_dev[:, None], max_dev


@register("irs", "codes", "IRS: how robust each code is to changes of the other factors (1 = robust).")
def irs(codes: np.ndarray, factors: np.ndarray, diff_quantile: float = 0.99, num_bins: int = NUM_BINS) -> dict:
    """codes (N, D), factors (N, K) -> {"irs", "irs_per_code", "irs_matrix" (D_active, K), "num_active_dims"}."""
    codes, factors = check_codes_factors(codes, factors, "irs")
    active = codes.var(axis=0) > 0.0
    if not active.any():
        return {"irs": 0.0, "num_active_dims": 0}
    mat, max_dev = irs_matrix(histogram_discretize(factors, num_bins), codes[:, active], diff_quantile)
    per_code = mat.max(axis=1)
    score = np.average(per_code, weights=max_dev) if max_dev.sum() > 0 else np.mean(per_code)
    return {"irs": float(score), "irs_per_code": per_code, "irs_matrix": mat, "num_active_dims": int(active.sum())}
