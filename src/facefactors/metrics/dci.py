"""DCI: disentanglement, completeness, informativeness (Eastwood & Williams 2018, "A Framework for
the Quantitative Evaluation of Disentangled Representations", sec. 3), as computed by
disentanglement_lib ``dci.py`` (Locatello et al. 2019 defaults).

A gradient-boosted tree classifier per factor predicts the factor from all codes; its feature
importances form the importance matrix R (D codes x K factors), R_ik >= 0.
* Disentanglement (paper eq. 2): D_i = 1 - H_K(P_i.) with P_ik = R_ik / sum_k R_ik (entropy in
  base K), weighted by rho_i = sum_k R_ik / sum R.
* Completeness (eq. 3): C_k = 1 - H_D(P~_.k), P~_ik = R_ik / sum_i R_ik, weighted by factor
  importance sum_i R_ik / sum R.
* Informativeness: the reference (followed here) reports prediction *accuracy* on train and
  test points (the paper uses prediction error); higher is better.
Entropies add 1e-11 to R before normalising, as the reference's ``scipy.stats.entropy(R + 1e-11)``.

Estimators (``estimator=``):
* ``"hist"`` (default, fast): sklearn ``HistGradientBoostingClassifier`` with the reference's
  boosting settings (100 iterations, learning rate 0.1, depth-3 trees, no early stopping); the
  importance of a code is its total split gain over all trees, normalised to sum 1 -- the
  gain-based importance of the same model family (features binned into 255 quantiles).
  About 40x faster than the reference on 10,000 points with a 20-class factor (3 s vs 143 s per
  factor, 2 loaded cores). Measured agreement with ``"gbt"`` (3,000 points, 10 codes, factors of
  6/5/2/10 classes): disentanglement 0.742 vs 0.723, completeness 0.749 vs 0.739,
  informativeness 0.889 vs 0.882; on entangled codes 0.295 vs 0.280, 0.361 vs 0.350.
* ``"gbt"`` (exact reference): sklearn ``GradientBoostingClassifier()`` with default settings and
  ``feature_importances_`` (mean impurity decrease), as disentanglement_lib; ~2 min per
  20-class factor on 10,000 points on our 2-core machine.

Threads: ``threads=1`` by default. HistGradientBoosting parallelises with OpenMP, and on a
shared, oversubscribed machine its spinning threads made one fit ~40x slower (66 s vs 1.7 s on
900 points, load average 7 on 2 cores); pass ``threads=None`` (all cores) on a quiet machine.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.stats import entropy as scipy_entropy
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from facefactors.metrics.discrete import check_codes_factors, split_train_test
from facefactors.metrics.registry import register
from facefactors.utils.errors import UserError

Estimator = Literal["hist", "gbt"]


def disentanglement_from_importance(r: np.ndarray) -> tuple[float, np.ndarray]:
    """(D, K) importance -> (weighted disentanglement, per-code D_i (D,))."""
    per_code = 1.0 - scipy_entropy(r.T + 1e-11, base=r.shape[1])  # entropy over factors, per code
    if r.sum() == 0.0:
        r = np.ones_like(r)
    weight = r.sum(axis=1) / r.sum()
    return float(np.sum(per_code * weight)), per_code


def completeness_from_importance(r: np.ndarray) -> tuple[float, np.ndarray]:
    """(D, K) importance -> (weighted completeness, per-factor C_k (K,))."""
    per_factor = 1.0 - scipy_entropy(r + 1e-11, base=r.shape[0])  # entropy over codes, per factor
    if r.sum() == 0.0:
        r = np.ones_like(r)
    weight = r.sum(axis=0) / r.sum()
    return float(np.sum(per_factor * weight)), per_factor


def _hist_gain_importance(model: HistGradientBoostingClassifier, num_features: int) -> np.ndarray:
    """Total split gain per feature over every tree of a fitted HistGradientBoostingClassifier."""
    imp = np.zeros(num_features)
    for iteration in model._predictors:  # one tree per class (one for binary) per iteration
        for tree in iteration:
            nodes = tree.nodes
            split = ~nodes["is_leaf"].astype(bool)
            np.add.at(imp, nodes["feature_idx"][split].astype(np.int64), nodes["gain"][split])
    total = imp.sum()
    return imp / total if total > 0 else imp


def fit_importance(x: np.ndarray, y: np.ndarray, estimator: Estimator, seed: int):
    """Fit one boosted classifier; return (importance (D,), fitted model)."""
    if estimator == "gbt":
        model = GradientBoostingClassifier(random_state=seed).fit(x, y)
        return np.abs(model.feature_importances_), model
    if estimator == "hist":
        model = HistGradientBoostingClassifier(
            max_iter=100, learning_rate=0.1, max_depth=3, max_leaf_nodes=8, early_stopping=False, random_state=seed
        ).fit(x, y)
        return _hist_gain_importance(model, x.shape[1]), model
    raise UserError(f"dci: unknown estimator {estimator!r}; use 'hist' (fast) or 'gbt' (exact reference)")


def importance_matrix(codes, factors, codes_test, factors_test, estimator: Estimator = "hist", seed: int = 0, progress=None):
    """-> (R (D, K), train accuracy, test accuracy) averaged over factors."""
    d, k = codes.shape[1], factors.shape[1]
    r = np.zeros((d, k))
    train_acc, test_acc = [], []
    for j in range(k):
        if len(np.unique(factors[:, j])) < 2:  # nothing to predict; importance stays 0
            train_acc.append(1.0)
            test_acc.append(float(np.mean(factors_test[:, j] == factors[0, j])))
            continue
        r[:, j], model = fit_importance(codes, factors[:, j], estimator, seed)
        train_acc.append(float(np.mean(model.predict(codes) == factors[:, j])))
        test_acc.append(float(np.mean(model.predict(codes_test) == factors_test[:, j])))
        if progress is not None:
            progress()
    return r, float(np.mean(train_acc)), float(np.mean(test_acc))


@register("dci", "codes", "DCI: disentanglement (each code predicts one factor), completeness (each factor from one code), informativeness (test accuracy of boosted trees).")
def dci(
    codes: np.ndarray,
    factors: np.ndarray,
    codes_test: np.ndarray | None = None,
    factors_test: np.ndarray | None = None,
    estimator: Estimator = "hist",
    seed: int = 0,
    num_train: int = 10000,
    num_test: int = 5000,
    threads: int | None = 1,
) -> dict:
    """codes (N, D), factors (N, K) (+ optional held-out test arrays; otherwise a seeded 2:1 split)."""
    codes, factors = check_codes_factors(codes, factors, "dci")
    if codes_test is None:
        tr, te = split_train_test(len(codes), num_train, num_test, seed)
        codes, factors, codes_test, factors_test = codes[tr], factors[tr], codes[te], factors[te]
    else:
        codes_test, factors_test = check_codes_factors(codes_test, factors_test, "dci (test)")
    with threadpool_limits(limits=threads, user_api="openmp"):
        r, acc_train, acc_test = importance_matrix(codes, factors, codes_test, factors_test, estimator, seed)
    dis, per_code = disentanglement_from_importance(r)
    com, per_factor = completeness_from_importance(r)
    return {
        "disentanglement": dis,
        "completeness": com,
        "informativeness_train": acc_train,
        "informativeness_test": acc_test,
        "importance_matrix": r,
        "disentanglement_per_code": per_code,
        "completeness_per_factor": per_factor,
        "estimator": estimator,
    }
