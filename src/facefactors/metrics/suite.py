"""Metric suites: the standard disentanglement suite on (codes, factors) and the UFE suite on
per-attribute features, with timings and progress bars; ``evaluate_feature_set`` picks what
applies to a features file. Results are plain dicts (numpy arrays inside; ``report.to_jsonable``
turns them into JSON).
"""

from __future__ import annotations

import time

import numpy as np

from facefactors.metrics.dci import dci
from facefactors.metrics.discrete import check_codes_factors, split_train_test
from facefactors.metrics.embedding import embed_2d
from facefactors.metrics.irs import irs
from facefactors.metrics.mig import mig
from facefactors.metrics.modularity import explicitness, modularity
from facefactors.metrics.probing import linear_probe
from facefactors.metrics.progress import progress_bar as _progress
from facefactors.metrics.sap import sap
from facefactors.metrics.subspace import silhouette_matrix, weak_classifier_matrix
from facefactors.metrics.unsupervised import total_correlation
from facefactors.utils.errors import DataError, UserError

STANDARD = ("mig", "dci", "sap", "modularity", "explicitness", "irs", "total_correlation")
FEATURE_METRICS = ("weak_classifier", "silhouette", "tsne", "linear_probe")


def standard_suite(
    codes: np.ndarray,
    factors: np.ndarray,
    factor_names: list[str] | None = None,
    metrics: tuple[str, ...] | list[str] = STANDARD,
    num_train: int = 10000,
    num_test: int = 5000,
    dci_estimator: str = "hist",
    seed: int = 0,
    progress: bool = True,
    dci_threads: int | None = 1,
) -> dict:
    """codes (N, D), factors (N, K) int -> {metric: result dict, "timings": {metric: s}, "split": {...}}.

    One seeded train/test split (``num_train``/``num_test``, scaled down 2:1 for smaller arrays)
    serves every metric; train-only metrics (MIG, modularity, IRS, TC) use the train part, as the
    reference draws ``num_train`` points for them. Constant factors are dropped (listed).
    """
    unknown = sorted(set(metrics) - set(STANDARD))
    if unknown:
        raise UserError(f"unknown standard metrics {unknown}; choose from {', '.join(STANDARD)}")
    codes, factors = check_codes_factors(codes, factors, "standard suite")
    names = list(factor_names or [f"factor_{k}" for k in range(factors.shape[1])])
    if len(names) != factors.shape[1]:
        raise DataError(f"standard suite: {len(names)} factor names for {factors.shape[1]} factor columns")
    varying = [k for k in range(factors.shape[1]) if len(np.unique(factors[:, k])) > 1]
    dropped = [names[k] for k in range(factors.shape[1]) if k not in varying]
    if not varying:
        raise DataError("standard suite: every factor is constant in this set; nothing to measure")
    factors, names = factors[:, varying], [names[k] for k in varying]
    tr, te = split_train_test(len(codes), num_train, num_test, seed)
    ctr, ftr, cte, fte = codes[tr], factors[tr], codes[te], factors[te]
    calls = {
        "mig": lambda: mig(ctr, ftr),
        "dci": lambda: dci(ctr, ftr, cte, fte, estimator=dci_estimator, seed=seed, threads=dci_threads),
        "sap": lambda: sap(ctr, ftr, cte, fte),
        "modularity": lambda: modularity(ctr, ftr),
        "explicitness": lambda: explicitness(ctr, ftr, cte, fte),
        "irs": lambda: irs(ctr, ftr),
        "total_correlation": lambda: total_correlation(ctr),
    }
    out: dict = {"factor_names": names, "dropped_factors": dropped, "timings": {}}
    out["split"] = {"num_train": len(tr), "num_test": len(te), "seed": seed, "num_codes": int(codes.shape[1])}
    chance = [np.unique(fte[:, k], return_counts=True)[1] for k in range(factors.shape[1])]
    out["chance"] = {  # of the classifiers behind DCI informativeness, averaged over factors like it
        "uniform": float(np.mean([1.0 / len(np.unique(factors[:, k])) for k in range(factors.shape[1])])),
        "majority": float(np.mean([c.max() / c.sum() for c in chance])),
    }
    with _progress(len(metrics), "standard metrics", progress) as step:
        for name in metrics:
            t0 = time.perf_counter()
            out[name] = calls[name]()
            out["timings"][name] = time.perf_counter() - t0
            step(f"standard metrics: {name} done")
    return out


def features_suite(
    features: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    metrics: tuple[str, ...] | list[str] = FEATURE_METRICS,
    groups: dict[str, str] | None = None,
    seed: int = 0,
    tsne_max_samples: int = 1000,
    progress: bool = True,
    embedding: str = "tsne",
) -> dict:
    """UFE-style evaluation of per-attribute features against categorical labels.

    ``groups`` maps a label name to the attribute it belongs to (DatasetDescription's
    Factor.group, e.g. age -> identity); linear probing runs for each feature on the labels of
    its own attribute, with a confusion matrix.
    """
    unknown = sorted(set(metrics) - set(FEATURE_METRICS))
    if unknown:
        raise UserError(f"unknown feature metrics {unknown}; choose from {', '.join(FEATURE_METRICS)}")
    groups = groups or {}
    out: dict = {"timings": {}, "rows": list(features), "cols": list(labels)}
    own = [(f, y) for y in labels for f in features if (groups.get(y) or y) == f]
    steps = len(features) * len(labels) * ("weak_classifier" in metrics) + ("silhouette" in metrics) + len(features) * ("tsne" in metrics) + len(own) * ("linear_probe" in metrics)
    with _progress(max(steps, 1), "feature metrics", progress) as step:
        if "weak_classifier" in metrics:
            t0 = time.perf_counter()
            out["weak_classifier"] = weak_classifier_matrix(features, labels, seed=seed, progress=lambda: step("weak classifiers"))
            out["timings"]["weak_classifier"] = time.perf_counter() - t0
        if "silhouette" in metrics:
            t0 = time.perf_counter()
            out["silhouette"] = silhouette_matrix(features, labels, seed=seed)
            out["timings"]["silhouette"] = time.perf_counter() - t0
            step("silhouette")
        if "tsne" in metrics:
            t0 = time.perf_counter()
            out["tsne"] = {}
            for f, x in features.items():
                if len(x) >= 5:
                    out["tsne"][f] = embed_2d(x, method=embedding, max_samples=tsne_max_samples, seed=seed)
                step(f"t-SNE of {f}")
            out["timings"]["tsne"] = time.perf_counter() - t0
        if "linear_probe" in metrics and own:
            t0 = time.perf_counter()
            out["linear_probe"] = {}
            for f, y in own:
                try:
                    out["linear_probe"][f"{f}->{y}"] = linear_probe(features[f], labels[y], seed=seed)
                except (DataError, ValueError):
                    pass  # too few labelled samples of some class to split; the weak classifier still covers it
                step(f"linear probe {f}->{y}")
            out["timings"]["linear_probe"] = time.perf_counter() - t0
    return out


def evaluate_feature_set(
    fs,
    metrics: list[str] | None = None,
    seed: int = 0,
    progress: bool = True,
    dci_estimator: str = "hist",
    embedding: str = "tsne",
    tsne_max_samples: int = 1000,
) -> dict:
    """Run every applicable metric on a :class:`~facefactors.metrics.features.FeatureSet`.

    Per-attribute features -> weak-classifier, silhouette, t-SNE, linear probing; a ``codes``
    array plus discrete labels -> the standard suite (rows with any missing label dropped).
    """
    labels = fs.categorical_labels()
    if not labels:
        raise DataError(f"{fs.source}: no categorical labels with at least two classes; add labels/<factor> arrays (int class indices)")
    groups = {f.name: f.group for f in fs.description.factors} if fs.description is not None else {}
    wanted = set(metrics) if metrics else None
    if wanted:
        unknown = sorted(wanted - set(FEATURE_METRICS) - set(STANDARD))
        if unknown:
            raise UserError(f"--metrics: {unknown} cannot run from a features file; choose from {', '.join(FEATURE_METRICS + STANDARD)}")
    result: dict = {"num_samples": fs.num_samples, "labels": list(labels), "features": {k: list(v.shape) for k, v in fs.features.items()}}
    attr_features = {k: v for k, v in fs.features.items() if k != "codes"} or dict(fs.features)
    feat_metrics = [m for m in FEATURE_METRICS if wanted is None or m in wanted]
    if feat_metrics:
        result["features_suite"] = features_suite(attr_features, labels, feat_metrics, groups, seed, tsne_max_samples, progress, embedding)
    std_metrics = [m for m in STANDARD if wanted is None or m in wanted]
    if "codes" in fs.features and std_metrics:
        names = list(labels)
        factors = np.stack([labels[n] for n in names], 1)
        keep = np.all(factors >= 0, axis=1)
        result["standard"] = standard_suite(fs.features["codes"][keep], factors[keep], names, std_metrics, seed=seed, progress=progress, dci_estimator=dci_estimator)
        result["standard"]["rows_dropped_for_missing_labels"] = int((~keep).sum())
    return result
