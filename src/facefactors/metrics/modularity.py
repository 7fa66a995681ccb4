"""Modularity and explicitness (Ridgeway & Zemel 2018, "Learning Deep Disentangled Embeddings
with the F-Statistic Loss", sec. 3), as computed by disentanglement_lib
``modularity_explicitness.py``.

Modularity (paper eq. 2): per code i, with theta_i = max_k I(z_i; v_k),
delta_i = sum_{k != argmax} I(z_i; v_k)^2 / (theta_i^2 (K - 1)), modularity = mean_i (1 - delta_i).
Mutual information from 20-bin histogram discretisation (reference). Reference quirk kept:
a code with zero information about every factor scores 0 (not 1).

Explicitness: a one-vs-rest logistic regression (sklearn ``LogisticRegression()`` defaults)
predicts each factor from all codes, standardised with the train mean/std; score = macro ROC AUC
of the predicted class probabilities, averaged over factors. Reference quirk *not* kept: the
reference refits the label binariser on the test labels, which misaligns columns when a class is
absent from the test split; we binarise against the classifier's classes (identical otherwise).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from facefactors.metrics.discrete import (
    NUM_BINS,
    check_codes_factors,
    histogram_discretize,
    mutual_info_matrix,
    split_train_test,
)
from facefactors.metrics.registry import register


def modularity_from_mi(mi: np.ndarray) -> tuple[float, np.ndarray]:
    """(D, K) mutual information -> (mean modularity, per-code modularity (D,))."""
    sq = np.square(mi)
    best = sq.max(axis=1)
    k = sq.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = (sq.sum(axis=1) - best) / (best * (k - 1.0))
    per_code = 1.0 - delta
    per_code[best == 0.0] = 0.0
    return float(np.mean(per_code)), per_code


@register("modularity", "codes", "Modularity: does each code carry information about one factor only (1 = yes)?")
def modularity(codes: np.ndarray, factors: np.ndarray, num_bins: int = NUM_BINS) -> dict:
    """codes (N, D), factors (N, K) -> {"modularity", "modularity_per_code" (D,)}."""
    codes, factors = check_codes_factors(codes, factors, "modularity")
    mi = mutual_info_matrix(histogram_discretize(codes, num_bins), factors)
    score, per_code = modularity_from_mi(mi)
    return {"modularity": score, "modularity_per_code": per_code}


def _macro_auc(y: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float:
    onehot = (y[:, None] == classes[None, :]).astype(np.int64)  # (N, C)
    keep = (onehot.sum(0) > 0) & (onehot.sum(0) < len(y))  # AUC undefined for a column with one class
    return float(roc_auc_score(onehot[:, keep], proba[:, keep], average="macro"))


@register("explicitness", "codes", "Explicitness: ROC AUC of a linear classifier predicting each factor from the codes (1 = linearly decodable, 0.5 = chance).")
def explicitness(
    codes: np.ndarray,
    factors: np.ndarray,
    codes_test: np.ndarray | None = None,
    factors_test: np.ndarray | None = None,
    seed: int = 0,
) -> dict:
    """-> {"explicitness_train", "explicitness_test", "explicitness_per_factor" (K,) test AUCs}."""
    codes, factors = check_codes_factors(codes, factors, "explicitness")
    if codes_test is None:
        tr, te = split_train_test(len(codes), 10000, 5000, seed)
        codes, factors, codes_test, factors_test = codes[tr], factors[tr], codes[te], factors[te]
    else:
        codes_test, factors_test = check_codes_factors(codes_test, factors_test, "explicitness (test)")
    mean, std = codes.mean(0), codes.std(0)
    std = np.where(std > 0, std, 1.0)  # a constant code would divide by zero; it carries nothing anyway
    xtr, xte = (codes - mean) / std, (codes_test - mean) / std
    train, test = [], []
    for k in range(factors.shape[1]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # lbfgs convergence chatter on separable data
            clf = LogisticRegression().fit(xtr, factors[:, k])
        train.append(_macro_auc(factors[:, k], clf.predict_proba(xtr), clf.classes_))
        test.append(_macro_auc(factors_test[:, k], clf.predict_proba(xte), clf.classes_))
    return {"explicitness_train": float(np.mean(train)), "explicitness_test": float(np.mean(test)), "explicitness_per_factor": np.array(test)}
