"""SAP score, Separated Attribute Predictability (Kumar et al. 2018, "Variational Inference of
Disentangled Latent Concepts from Unlabeled Observations", sec. 3), as computed by
disentanglement_lib ``sap_score.py``.

Score matrix S (D codes x K factors); SAP = mean over factors of the gap between the largest and
second-largest entry of its column.
* continuous factors: S_ij = Cov(z_i, v_j)^2 / (Var z_i Var v_j), the squared Pearson correlation
  = R^2 of a 1-D linear regression (unbiased covariances; 0 where Var z_i <= 1e-12);
* discrete factors (Locatello et al. default): S_ij = test accuracy of a linear SVM
  ``LinearSVC(C=0.01, class_weight="balanced")`` trained on the single code z_i.
The paper uses a balanced-accuracy threshold classifier for discrete factors; the reference's
linear SVM is followed.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.svm import LinearSVC

from facefactors.metrics.discrete import check_codes_factors, split_train_test
from facefactors.metrics.registry import register


def sap_score_matrix(codes, factors, codes_test, factors_test, continuous: bool) -> np.ndarray:
    d, k = codes.shape[1], factors.shape[1]
    s = np.zeros((d, k))
    if continuous:
        zc = codes - codes.mean(0)
        vc = factors - factors.mean(0)
        n = len(codes)
        cov = zc.T @ vc / (n - 1)  # (D, K)
        var_z = (zc**2).sum(0) / (n - 1)
        var_v = (vc**2).sum(0) / (n - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            s = cov**2 / (var_z[:, None] * var_v[None, :])
        s[var_z <= 1e-12, :] = 0.0
        return s
    for i in range(d):
        for j in range(k):
            if len(np.unique(factors[:, j])) < 2:
                continue  # a constant factor: no classifier, no gap
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # liblinear convergence chatter at C=0.01
                clf = LinearSVC(C=0.01, class_weight="balanced").fit(codes[:, i : i + 1], factors[:, j])
            s[i, j] = np.mean(clf.predict(codes_test[:, i : i + 1]) == factors_test[:, j])
    return s


@register("sap", "codes", "SAP: per factor, the accuracy gap between the best and second-best single code (high = one code per factor).")
def sap(
    codes: np.ndarray,
    factors: np.ndarray,
    codes_test: np.ndarray | None = None,
    factors_test: np.ndarray | None = None,
    continuous_factors: bool = False,
    seed: int = 0,
    num_train: int = 10000,
    num_test: int = 5000,
) -> dict:
    """-> {"sap", "sap_per_factor" (K,), "sap_score_matrix" (D, K)}."""
    if continuous_factors:
        codes = np.asarray(codes, dtype=np.float64)
        factors = np.asarray(factors, dtype=np.float64).reshape(len(codes), -1)
    else:
        codes, factors = check_codes_factors(codes, factors, "sap")
    if codes_test is None and not continuous_factors:
        tr, te = split_train_test(len(codes), num_train, num_test, seed)
        codes, factors, codes_test, factors_test = codes[tr], factors[tr], codes[te], factors[te]
    elif not continuous_factors:
        codes_test, factors_test = check_codes_factors(codes_test, factors_test, "sap (test)")
    s = sap_score_matrix(codes, factors, codes_test, factors_test, continuous_factors)
    top = np.sort(s, axis=0)
    gaps = top[-1] - (top[-2] if s.shape[0] > 1 else 0.0)
    return {"sap": float(np.mean(gaps)), "sap_per_factor": gaps, "sap_score_matrix": s}
