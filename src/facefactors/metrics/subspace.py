"""Subspace-separation metrics of the Universal Face Encoder (Banerjee et al.,
/work/shared/papers/000_*.txt, sec. 4.3, Fig. 2, Table 1):

* weak-classifier matrix: entry (x, y) is the accuracy of a logistic regression predicting the
  label of attribute y from the feature of attribute x, trained and scored by stratified k-fold
  cross-validation; each column comes with its chance levels (1/#classes and the majority-class
  rate). Diagonal high and off-diagonal near chance = disentangled subspaces.
* silhouette matrix: scikit-learn's silhouette score (b - a) / max(a, b) of the features of
  attribute x clustered by the labels of attribute y (1 = tight, well-separated clusters,
  ~0 = overlapping, < 0 = the labels cut across the feature's structure).

Inputs: ``features`` {attribute: (N, D)} and ``labels`` {factor: (N,)} with the package's label
conventions (categorical = int class index, missing = -1; rows with a missing label are dropped
for that column). Features are standardised inside each training fold before the regression.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import silhouette_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from facefactors.metrics.registry import register
from facefactors.utils.errors import DataError


def _check_features_labels(features: dict, labels: dict, where: str) -> int:
    if not features or not labels:
        raise DataError(f"{where}: needs at least one feature array and one label array; got {list(features)} / {list(labels)}")
    sizes = {k: np.asarray(v).shape[0] for k, v in {**features, **labels}.items()}
    if len(set(sizes.values())) != 1:
        raise DataError(f"{where}: features and labels disagree on the number of samples: {sizes}")
    for k, v in features.items():
        if np.asarray(v).ndim != 2:
            raise DataError(f"{where}: feature {k!r} must be (N, D); got shape {np.asarray(v).shape}")
    return next(iter(sizes.values()))


def _labelled(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    return y >= 0 if np.issubdtype(y.dtype, np.integer) else np.isfinite(y) & (y >= 0)


def chance_levels(y: np.ndarray) -> tuple[float, float]:
    """(1 / #classes, majority-class rate) of a labelled vector."""
    _, counts = np.unique(y, return_counts=True)
    return 1.0 / len(counts), float(counts.max() / counts.sum())


def cv_accuracy(x: np.ndarray, y: np.ndarray, n_splits: int = 5, seed: int = 0, max_iter: int = 500) -> tuple[float, float]:
    """Mean and std of stratified k-fold accuracy of standardise + logistic regression."""
    _, counts = np.unique(y, return_counts=True)
    k = int(min(n_splits, counts.max()))
    if k < 2:
        raise DataError("weak classifier: every class has a single sample; cannot cross-validate")
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    accs = []
    for tr, te in folds.split(x, y):
        if len(np.unique(y[tr])) < 2:
            accs.append(float(np.mean(y[te] == y[tr][0])))
            continue
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter; small-class fold warnings
            model.fit(x[tr], y[tr])
        accs.append(float(model.score(x[te], y[te])))
    return float(np.mean(accs)), float(np.std(accs))


@register("weak_classifier", "features", "Weak-classifier matrix (UFE): logistic-regression accuracy of feature x (row) predicting label y (column); compare each column with its chance levels.")
def weak_classifier_matrix(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], n_splits: int = 5, seed: int = 0, progress=None) -> dict:
    """-> {"accuracy" (A, F), "std" (A, F), "rows", "cols", "chance_uniform" (F,), "chance_majority" (F,), "n" (F,)}."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # StratifiedKFold warns about classes smaller than n_splits
        _check_features_labels(features, labels, "weak_classifier")
        rows, cols = list(features), list(labels)
        acc = np.full((len(rows), len(cols)), np.nan)
        std = np.full_like(acc, np.nan)
        uni, maj, count = np.zeros(len(cols)), np.zeros(len(cols)), np.zeros(len(cols), dtype=np.int64)
        for j, name in enumerate(cols):
            y = np.asarray(labels[name])
            keep = _labelled(y)
            if keep.sum() < 2 or len(np.unique(y[keep])) < 2:
                continue  # nothing to predict in this evaluation set
            yk = y[keep].astype(np.int64)
            uni[j], maj[j] = chance_levels(yk)
            count[j] = int(keep.sum())
            for i, feat in enumerate(rows):
                acc[i, j], std[i, j] = cv_accuracy(np.asarray(features[feat], dtype=np.float64)[keep], yk, n_splits, seed)
                if progress is not None:
                    progress()
    return {"accuracy": acc, "std": std, "rows": rows, "cols": cols, "chance_uniform": uni, "chance_majority": maj, "n": count}


@register("silhouette", "features", "Silhouette matrix (UFE): scikit-learn silhouette of feature x (row) clustered by label y (column); 1 = tight clusters, ~0 = no structure.")
def silhouette_matrix(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], max_samples: int = 4000, seed: int = 0, metric: str = "euclidean") -> dict:
    """-> {"silhouette" (A, F), "rows", "cols"}. O(N^2): a seeded subsample of ``max_samples`` rows."""
    _check_features_labels(features, labels, "silhouette")
    rows, cols = list(features), list(labels)
    out = np.full((len(rows), len(cols)), np.nan)
    rng = np.random.default_rng(seed)
    for j, name in enumerate(cols):
        y = np.asarray(labels[name])
        idx = np.flatnonzero(_labelled(y))
        if len(idx) > max_samples:
            idx = np.sort(rng.choice(idx, max_samples, replace=False))
        k = len(np.unique(y[idx]))
        if k < 2 or k >= len(idx):
            continue  # silhouette is defined for 2 <= #labels <= n - 1
        for i, feat in enumerate(rows):
            out[i, j] = float(silhouette_score(np.asarray(features[feat], dtype=np.float64)[idx], y[idx], metric=metric))
    return {"silhouette": out, "rows": rows, "cols": cols}
