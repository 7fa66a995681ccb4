"""Frozen-feature evaluations of LatentFace (He et al., /work/shared/papers/002_*.txt, sec. 3.4-3.5):

Linear probing (sec. 3.4, "Evaluation Protocol"): the paper trains a batch-norm layer followed by
a linear layer on frozen features with Adam. At inference a batch-norm layer is a per-dimension
affine map, so BN + linear is an affine classifier on standardised features; we fit that same
function class in closed form -- standardise with the training mean/std, then an L2-regularised
multinomial logistic regression (convex, so no learning rate or epochs to tune). Reported:
accuracy, macro-F1, confusion matrix, and chance levels.

Face verification, 10-fold (sec. 3.5, Table 2; the LFW protocol): pairs of embeddings with a
same/different label, split into 10 folds (LFW: consecutive blocks of 600 pairs); for each fold
the decision rule is fitted on the other 9 and scored on it; mean accuracy +- standard error
(std / sqrt(10)). ``method="threshold"`` (LFW's unsupervised protocol): cosine similarity with
the accuracy-maximising threshold on the 9 folds. ``method="linear"`` (the paper's "train the
linear model"): logistic regression on [|a - b|, a * b] of L2-normalised embeddings.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix, f1_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from facefactors.metrics.registry import register
from facefactors.metrics.subspace import chance_levels
from facefactors.utils.errors import DataError


@register("linear_probe", "features", "Linear probing (LatentFace): standardise + linear classifier on frozen features; accuracy and macro-F1 against chance.")
def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray | None = None,
    test_y: np.ndarray | None = None,
    c: float = 1.0,
    seed: int = 0,
    test_size: float = 0.25,
) -> dict:
    """-> {"accuracy", "macro_f1", "confusion" (C, C) counts (rows = true), "classes", "chance_uniform", "chance_majority"}.

    Without a test set, a seeded stratified split of ``test_size`` is held out. Missing labels
    (-1) are dropped.
    """
    x = np.asarray(train_x, dtype=np.float64)
    y = np.asarray(train_y)
    if x.ndim != 2 or len(x) != len(y):
        raise DataError(f"linear_probe: features must be (N, D) with one label each; got {x.shape} and {y.shape}")
    keep = y >= 0
    x, y = x[keep], y[keep].astype(np.int64)
    if test_x is None:
        _, counts = np.unique(y, return_counts=True)
        x, test_x, y, test_y = train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y if counts.min() >= 2 else None)
    else:
        test_x = np.asarray(test_x, dtype=np.float64)
        test_y = np.asarray(test_y)
        keep = test_y >= 0
        test_x, test_y = test_x[keep], test_y[keep].astype(np.int64)
    if len(np.unique(y)) < 2:
        raise DataError("linear_probe: the training labels have a single class; nothing to learn")
    scaler = StandardScaler().fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = LogisticRegression(C=c, max_iter=1000).fit(scaler.transform(x), y)
    pred = clf.predict(scaler.transform(test_x))
    classes = np.union1d(clf.classes_, np.unique(test_y))
    uni, maj = chance_levels(test_y)
    return {
        "accuracy": float(np.mean(pred == test_y)),
        "macro_f1": float(f1_score(test_y, pred, labels=classes, average="macro", zero_division=0)),
        "confusion": confusion_matrix(test_y, pred, labels=classes),
        "classes": classes,
        "chance_uniform": uni,
        "chance_majority": maj,
        "num_train": len(y),
        "num_test": len(test_y),
    }


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """Threshold t maximising accuracy of ``score >= t`` (candidates: midpoints of sorted scores)."""
    s = np.sort(np.unique(scores))
    candidates = np.concatenate([[s[0] - 1e-9], (s[:-1] + s[1:]) / 2, [s[-1] + 1e-9]])
    acc = [(np.mean((scores >= t) == same), -abs(t)) for t in candidates]
    return float(candidates[max(range(len(acc)), key=lambda i: acc[i])])


@register("verification", "other", "10-fold verification (LFW protocol): mean accuracy +- standard error of same/different decisions on held-out folds (chance 0.5 on balanced pairs).")
def verification_10fold(
    emb_a: np.ndarray,
    emb_b: np.ndarray,
    same: np.ndarray,
    folds: np.ndarray | None = None,
    num_folds: int = 10,
    method: str = "threshold",
) -> dict:
    """emb_a, emb_b (P, D) paired embeddings, same (P,) bool -> {"accuracy", "std_error", "fold_accuracy", "thresholds"}."""
    a = np.asarray(emb_a, dtype=np.float64)
    b = np.asarray(emb_b, dtype=np.float64)
    same = np.asarray(same).astype(bool)
    if a.shape != b.shape or a.ndim != 2 or len(same) != len(a):
        raise DataError(f"verification: pairs must be two (P, D) arrays and P labels; got {a.shape}, {b.shape}, {same.shape}")
    folds = np.arange(len(a)) * num_folds // len(a) if folds is None else np.asarray(folds)  # LFW: consecutive blocks
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    cos = np.sum(a * b, axis=1)
    pair_feats = np.concatenate([np.abs(a - b), a * b], axis=1)
    accs, thresholds = [], []
    for k in np.unique(folds):
        test, train = folds == k, folds != k
        if method == "threshold":
            t = best_threshold(cos[train], same[train])
            thresholds.append(t)
            accs.append(float(np.mean((cos[test] >= t) == same[test])))
        elif method == "linear":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                clf = LogisticRegression(max_iter=1000).fit(pair_feats[train], same[train])
            accs.append(float(clf.score(pair_feats[test], same[test])))
        else:
            raise DataError(f"verification: unknown method {method!r}; use 'threshold' or 'linear'")
    accs = np.array(accs)
    return {
        "accuracy": float(accs.mean()),
        "std_error": float(accs.std(ddof=1) / np.sqrt(len(accs))) if len(accs) > 1 else 0.0,
        "fold_accuracy": accs,
        "thresholds": np.array(thresholds),
        "chance": float(max(same.mean(), 1 - same.mean())),
        "method": method,
    }
