"""Shared numerics of the standard disentanglement metrics (Locatello et al. 2019, sec. 3 and
appendix; disentanglement_lib ``evaluation/metrics/utils.py``).

Conventions of this package (differ from disentanglement_lib only in layout): codes are
``(N, D)`` and factors ``(N, K)`` -- samples first -- where the reference stores them transposed.
Mutual information and entropy are in nats. Codes are discretised per dimension into 20
equal-width bins spanning [min, max] of that dimension (``np.histogram`` edges, bin index
1..20 as ``np.digitize`` returns it), exactly as the reference's ``_histogram_discretize``.
"""

from __future__ import annotations

import numpy as np

from facefactors.utils.errors import DataError

NUM_BINS = 20  # Locatello et al. 2019 default for MIG, modularity and IRS


def check_codes_factors(codes: np.ndarray, factors: np.ndarray, where: str = "codes/factors") -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert: codes float64 (N, D) finite, factors int64 (N, K) without missing labels."""
    codes = np.asarray(codes)
    factors = np.asarray(factors)
    if codes.ndim == 1:
        codes = codes[:, None]
    if factors.ndim == 1:
        factors = factors[:, None]
    if codes.ndim != 2 or factors.ndim != 2:
        raise DataError(f"{where}: codes must be (N, D) and factors (N, K); got {codes.shape} and {factors.shape}")
    if codes.shape[0] != factors.shape[0]:
        raise DataError(f"{where}: {codes.shape[0]} codes but {factors.shape[0]} factor rows; pass one factor row per code")
    if codes.shape[0] < 2:
        raise DataError(f"{where}: need at least 2 samples, got {codes.shape[0]}")
    codes = codes.astype(np.float64)
    if not np.all(np.isfinite(codes)):
        raise DataError(f"{where}: codes contain NaN/inf; fix the model output or drop those rows")
    if not np.issubdtype(factors.dtype, np.integer) and (not np.all(np.isfinite(factors)) or np.any(factors != np.round(factors))):
        raise DataError(f"{where}: factors must be discrete integer class indices; discretise continuous factors first")
    factors = factors.astype(np.int64)
    if np.any(factors < 0):
        raise DataError(f"{where}: factors contain missing labels (-1); drop those rows before computing the metric")
    return codes, factors


def histogram_discretize(x: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
    """(N, D) float -> (N, D) int in [1, num_bins]: equal-width bins per column (reference semantics).

    The loop is over columns only (D is small); per column the edges are ``np.histogram``'s, so
    boundary cases round exactly as in disentanglement_lib.
    """
    x = np.asarray(x, dtype=np.float64)
    out = np.empty(x.shape, dtype=np.int64)
    for j in range(x.shape[1]):
        edges = np.histogram_bin_edges(x[:, j], bins=num_bins)
        out[:, j] = np.digitize(x[:, j], edges[:-1])
    return out


def _relabel(v: np.ndarray) -> tuple[np.ndarray, int]:
    """Arbitrary integer labels -> 0..C-1 (C = number of distinct values)."""
    uniq, inv = np.unique(v, return_inverse=True)
    return inv.reshape(-1), len(uniq)


def mutual_info(a: np.ndarray, b: np.ndarray) -> float:
    """I(a; b) in nats of two discrete label vectors (plug-in estimate, = sklearn mutual_info_score)."""
    ai, na = _relabel(a)
    bi, nb = _relabel(b)
    joint = np.bincount(ai * nb + bi, minlength=na * nb).reshape(na, nb).astype(np.float64)
    n = joint.sum()
    pa = joint.sum(1, keepdims=True) / n
    pb = joint.sum(0, keepdims=True) / n
    pab = joint / n
    nz = pab > 0
    return float(np.sum(pab[nz] * (np.log(pab[nz]) - np.log((pa @ pb)[nz]))))


def entropy(a: np.ndarray) -> float:
    """H(a) in nats of a discrete label vector."""
    _, counts = np.unique(a, return_counts=True)
    p = counts / counts.sum()
    return float(-np.sum(p * np.log(p)))


def mutual_info_matrix(discrete_codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """(N, D) discrete codes, (N, K) factors -> (D, K) mutual information in nats."""
    d, k = discrete_codes.shape[1], factors.shape[1]
    m = np.zeros((d, k))
    for i in range(d):
        for j in range(k):
            m[i, j] = mutual_info(discrete_codes[:, i], factors[:, j])
    return m


def factor_entropies(factors: np.ndarray) -> np.ndarray:
    """(N, K) -> (K,) entropies in nats."""
    return np.array([entropy(factors[:, j]) for j in range(factors.shape[1])])


def split_train_test(n: int, num_train: int, num_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a disjoint train/test split of n points (a seeded permutation).

    disentanglement_lib draws ``num_train`` and ``num_test`` fresh points from the sampler; with a
    fixed array we split it instead. If the array is smaller than ``num_train + num_test`` the
    two are scaled down in the same 2:1 proportion.
    """
    if num_train + num_test > n:
        num_train = round(n * num_train / (num_train + num_test))
        num_test = n - num_train
    if num_train < 2 or num_test < 1:
        raise DataError(f"only {n} samples: too few to split into train/test; pass more samples")
    perm = np.random.default_rng(seed).permutation(n)
    return perm[:num_train], perm[num_train : num_train + num_test]
