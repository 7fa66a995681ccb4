"""Mutual Information Gap (Chen et al. 2018, "Isolating Sources of Disentanglement in VAEs",
eq. 7), as computed by disentanglement_lib ``mig.py`` (Locatello et al. 2019 defaults).

MIG = 1/K sum_k (I(z_{j(k)}; v_k) - I(z_{j'(k)}; v_k)) / H(v_k), with j(k), j'(k) the codes of
highest and second-highest mutual information with factor k.

Reference vs paper: the paper estimates I(z; v) from the encoder's posterior; the reference
code (followed here) instead discretises the *mean* codes into 20 equal-width bins per dimension
and uses the plug-in estimate of discrete mutual information (nats), normalised by the plug-in
factor entropy.
"""

from __future__ import annotations

import numpy as np

from facefactors.metrics.discrete import (
    NUM_BINS,
    check_codes_factors,
    factor_entropies,
    histogram_discretize,
    mutual_info_matrix,
)
from facefactors.metrics.registry import register
from facefactors.utils.errors import DataError


@register("mig", "codes", "MIG: gap in normalised mutual information between the best and second-best code per factor (1 = each factor in one code).")
def mig(codes: np.ndarray, factors: np.ndarray, num_bins: int = NUM_BINS) -> dict:
    """codes (N, D), factors (N, K) int -> {"mig", "mig_per_factor" (K,), "mutual_information" (D, K)}."""
    codes, factors = check_codes_factors(codes, factors, "mig")
    m = mutual_info_matrix(histogram_discretize(codes, num_bins), factors)  # (D, K) nats
    h = factor_entropies(factors)  # (K,)
    if np.any(h <= 0):
        raise DataError(f"mig: factor columns {np.flatnonzero(h <= 0).tolist()} are constant (entropy 0); drop them")
    top = np.sort(m, axis=0)[::-1]  # (D, K), descending per factor
    second = top[1] if m.shape[0] > 1 else np.zeros(m.shape[1])  # one code: the gap is its whole MI
    per_factor = (top[0] - second) / h
    return {"mig": float(np.mean(per_factor)), "mig_per_factor": per_factor, "mutual_information": m, "factor_entropy": h}
