"""Evaluation helpers of the UFE experiments (Banerjee et al., sec. 4.3): features of a set,
the shared ``features.npz`` file, weak-classifier and silhouette matrices, t-SNE figures.

The matrices themselves are computed by :mod:`facefactors.metrics.subspace`; this module adapts
UFE features to them and draws the figures.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from facefactors.models.ufe import UFE
from facefactors.train.ufe_data import FaceTensorSet


@torch.no_grad()
def encode_set(model: UFE, data: FaceTensorSet, batch_size: int = 128, device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
    """{subspace: (N, D)} features of every image of ``data``."""
    model = model.to(device).eval()
    out: dict[str, list] = {}
    for s in range(0, len(data), batch_size):
        img = data.batch(range(s, min(len(data), s + batch_size)))["image"].to(device)
        for k, v in model.encode(img).items():
            out.setdefault(k, []).append(v.cpu().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def write_features(path: str | Path, features: dict[str, np.ndarray], data: FaceTensorSet) -> Path:
    """The shared format read by ``facefactors evaluate``: features/<subspace>, labels/<factor>, description."""
    from facefactors.metrics.features import save_features

    desc = data.description.restrict(data.description.names)  # every label of an evaluation set is ground truth
    return save_features(path, {k: v.astype(np.float32) for k, v in features.items()}, {k: v.numpy() for k, v in data.labels.items()}, desc)


def weak_classifier_matrix(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], xs: list[str], ys: list[str], seed: int = 0) -> dict:
    """Accuracy of logistic regression predicting label y from feature x (sec. 4.3, Fig. 2 top),
    by :func:`facefactors.metrics.subspace.weak_classifier_matrix` (stratified 5-fold)."""
    from facefactors.metrics.subspace import weak_classifier_matrix as metric

    r = metric({x: features[x] for x in xs}, {y: labels[y] for y in ys}, seed=seed)
    return {"x": r["rows"], "y": r["cols"], "accuracy": np.asarray(r["accuracy"]).tolist(), "chance": np.asarray(r["chance_majority"]).tolist(),
            "chance_uniform": np.asarray(r["chance_uniform"]).tolist()}


def silhouette_matrix(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], xs: list[str], ys: list[str], seed: int = 0) -> dict:
    """Silhouette score of feature x clustered by label y (sec. 4.3, Fig. 2 bottom), by
    :func:`facefactors.metrics.subspace.silhouette_matrix`."""
    from facefactors.metrics.subspace import silhouette_matrix as metric

    r = metric({x: features[x] for x in xs}, {y: labels[y] for y in ys}, seed=seed)
    return {"x": r["rows"], "y": r["cols"], "silhouette": np.asarray(r["silhouette"]).tolist()}


def silhouette_by_group(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], xs: list[str], ys: list[str], group: str, names: tuple[str, ...] = ()) -> dict[str, dict]:
    """{class of the label ``group``: :func:`silhouette_matrix` of the samples of that class}
    (named by ``names`` where given). Inside one camera domain, say, a camera mixed unevenly over
    another label's classes in this draw of samples no longer moves that label's entries, as it
    moves the whole set's (docs/results.md, "'Others' by pose is the held-out draw's camera mix")."""
    g = np.asarray(labels[group])
    out = {}
    for c in np.unique(g[g >= 0]):
        keep = g == c
        name = names[c] if 0 <= c < len(names) else str(c)
        out[name] = silhouette_matrix({x: np.asarray(features[x])[keep] for x in xs}, {y: np.asarray(labels[y])[keep] for y in ys}, xs, ys)
    return out


def knn_matrix(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], xs: list[str], ys: list[str], k: int = 10, seed: int = 0) -> dict:
    """Accuracy of a k-nearest-neighbour classifier (standardised features, the same stratified
    5 folds as the weak classifiers) reading label y from feature x: what a *nonlinear* reader
    finds, where logistic regression sees only what is linearly separable."""
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    acc = np.zeros((len(xs), len(ys)))
    # Equidistant neighbours (e.g. every neutral face's expression code is 0) are taken in row
    # order, and rows come grouped by identity: a seeded shuffle keeps that order from voting.
    order = np.random.default_rng(seed).permutation(len(next(iter(labels.values()))))
    for j, y in enumerate(ys):
        target = np.asarray(labels[y])[order].astype(np.int64)
        folds_k = int(min(5, np.bincount(target).max()))  # as the weak classifiers' cv_accuracy
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # classes smaller than the folds
            folds = list(StratifiedKFold(n_splits=folds_k, shuffle=True, random_state=seed).split(target, target))
        for i, x in enumerate(xs):
            f = np.asarray(features[x])[order]
            scores = [make_pipeline(StandardScaler(), KNeighborsClassifier(min(k, len(tr)))).fit(f[tr], target[tr]).score(f[te], target[te]) for tr, te in folds]
            acc[i, j] = float(np.mean(scores))
    return {"x": list(xs), "y": list(ys), "accuracy": acc.tolist()}


def _best_reading(codes: dict[str, np.ndarray], labels: dict[str, np.ndarray], xs: list[str], ys: list[str], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logistic, 10-NN, larger of the two) accuracies, each (len(xs), len(ys))."""
    linear = np.asarray(weak_classifier_matrix(codes, labels, xs, ys, seed)["accuracy"])
    knn = np.asarray(knn_matrix(codes, labels, xs, ys, seed=seed)["accuracy"])
    return linear, knn, np.maximum(linear, knn)


def world_floor(
    codes: dict[str, np.ndarray],  # {subspace: (N, D)} the world's true factors (world.ground_truth.factor_codes)
    labels: dict[str, np.ndarray],
    xs: list[str],  # rows (subspaces)
    ys: list[str],  # columns (labels)
    parts: dict[str, dict[str, np.ndarray]] | None = None,  # {row: {name: (N, d)}}: a row's fields one by one
    limit: float = 1.5,  # the leakage target, x majority chance
    permutations: int = 10,  # shuffles of the labels, for the readers' own noise
    seed: int = 0,
) -> dict:
    """The leakage the world itself puts into the matrices of sec. 4.3: the weak-classifier and
    silhouette matrices of the world's *true* factor codes, read by logistic regression (the
    metric itself) and by 10 nearest neighbours (what a nonlinear feature could expose). An
    encoder holding exactly the true factors in each subspace would score this floor: the larger
    reading of the row's whole code and of each of its ``parts`` (a reader of the whole can read
    any part, but ten neighbours in many irrelevant dimensions see less than in the one that
    matters). ``null_over_chance`` is the largest floor of any row once the labels are shuffled:
    the readers' noise, below which an entry says nothing. An off-diagonal entry whose floor is
    over ``limit`` x chance and over that noise cannot meet the target by faithful features."""
    from facefactors.metrics.subspace import chance_levels

    linear, knn, floor = _best_reading(codes, labels, xs, ys, seed)
    part_rows = {}
    for i, x in enumerate(xs):
        if parts and parts.get(x):
            names = list(parts[x])
            _, _, f = _best_reading(parts[x], labels, names, ys, seed)
            part_rows.update({f"{x}: {n}": f[k] for k, n in enumerate(names)})
            floor[i] = np.maximum(floor[i], f.max(0))
    rng = np.random.default_rng(seed)
    null = np.zeros(len(ys))
    for _ in range(permutations):
        shuffled = {y: rng.permutation(np.asarray(labels[y])) for y in ys}
        null = np.maximum(null, _best_reading(codes, shuffled, xs, ys, seed)[2].max(0))
    chance = np.asarray([chance_levels(np.asarray(labels[y]))[1] for y in ys])  # majority class, as the weak classifiers
    ratio = floor / np.maximum(chance, 1e-9)
    null_ratio = null / np.maximum(chance, 1e-9)
    standardised = {x: (c - c.mean(0)) / np.maximum(c.std(0), 1e-12) for x, c in codes.items()}
    sil = silhouette_matrix(standardised, labels, xs, ys, seed)
    over = {f"{x}->{y}": round(float(ratio[i, j]), 2) for i, x in enumerate(xs) for j, y in enumerate(ys)
            if x != y and ratio[i, j] > limit and ratio[i, j] > null_ratio[j]}
    return {"x": list(xs), "y": list(ys), "chance": chance.tolist(), "linear": linear.tolist(), "knn": knn.tolist(), "floor": floor.tolist(),
            "floor_over_chance": ratio.tolist(), "null_over_chance": null_ratio.tolist(), "silhouette": sil["silhouette"],
            "parts_over_chance": {k: (v / np.maximum(chance, 1e-9)).tolist() for k, v in part_rows.items()},
            "floor_over_limit": dict(sorted(over.items(), key=lambda kv: -kv[1]))}


def matrix_markdown(m: dict, key: str, fmt: str = "{:.2f}") -> str:
    rows = ["| x \\ y | " + " | ".join(m["y"]) + " |", "|---" * (len(m["y"]) + 1) + "|"]
    for i, x in enumerate(m["x"]):
        rows.append(f"| {x} | " + " | ".join(fmt.format(v) for v in m[key][i]) + " |")
    if "chance" in m:
        rows.append("| chance (majority) | " + " | ".join(fmt.format(v) for v in m["chance"]) + " |")
    return "\n".join(rows)


def _draw_matrix(ax, m: dict, key: str, vmin: float, vmax: float, fontsize: int):
    """A matrix as a heatmap with its values written in the cells; returns the image."""
    a = np.asarray(m[key])
    im = ax.imshow(a, vmin=vmin, vmax=vmax, cmap="RdBu_r" if vmin < 0 else "viridis")
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            ax.text(j, i, f"{a[i, j]:.2f}", ha="center", va="center", fontsize=fontsize, color="k")
    return im


def matrix_figure(m: dict, key: str, path: str | Path, title: str, vmin: float = -1.0, vmax: float = 1.0) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.1 * len(m["y"]) + 2, 0.8 * len(m["x"]) + 1.5))
    im = _draw_matrix(ax, m, key, vmin, vmax, fontsize=8)
    ax.set_xticks(range(len(m["y"])), [f"y={y}" for y in m["y"]], rotation=30)
    ax.set_yticks(range(len(m["x"])), [f"x={x}" for x in m["x"]])
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def matrices_side_by_side(matrices: dict[str, dict], key: str, path: str | Path, vmin: float = -1.0, vmax: float = 1.0) -> Path:
    """One figure with a heatmap per named matrix in a row (Fig. 7's layout): the ablations'
    silhouettes on one colour scale, so an entry that moved is seen at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(matrices)
    first = matrices[names[0]]
    fig, axes = plt.subplots(1, len(names), figsize=(0.9 * len(first["y"]) * len(names) + 2, 0.7 * len(first["x"]) + 1.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        m = matrices[name]
        im = _draw_matrix(ax, m, key, vmin, vmax, fontsize=6)
        ax.set_xticks(range(len(m["y"])), m["y"], rotation=45, fontsize=7)
        ax.set_yticks(range(len(m["x"])), m["x"] if ax is axes[0][0] else [""] * len(m["x"]), fontsize=7)
        ax.set_title(name, fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    path = Path(path)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def tsne_figure(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], xs: list[str], ys: list[str], path: str | Path, identities: int = 6, seed: int = 0) -> Path:
    """t-SNE of each feature x (rows) coloured by each label y (columns), on ``identities``
    held-out identities (6 in the paper's Fig. 2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from facefactors.metrics.embedding import embed_2d

    ident = labels["identity"]
    keep = np.isin(ident, np.unique(ident)[:identities])
    fig, axes = plt.subplots(len(xs), len(ys), figsize=(2.6 * len(ys), 2.4 * len(xs)), squeeze=False)
    for i, x in enumerate(xs):
        f = features[x][keep]
        emb = embed_2d(f, "tsne", seed=seed, perplexity=min(30.0, max(2.0, len(f) / 4 - 1)))["embedding"]  # all rows (< max_samples)
        for j, y in enumerate(ys):
            ax = axes[i, j]
            ax.scatter(emb[:, 0], emb[:, 1], c=labels[y][keep], cmap="tab20", s=6)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"y={y}", fontsize=9)
            if j == 0:
                ax.set_ylabel(f"x={x}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def target_check(weak: dict, sil: dict) -> dict:
    """The issue's targets on the matrices: diagonals and off-diagonals of the labelled attributes."""
    xs, ys = weak["x"], weak["y"]
    acc, s, chance = np.asarray(weak["accuracy"]), np.asarray(sil["silhouette"]), weak["chance"]
    diag_acc = {y: float(acc[xs.index(y), j]) for j, y in enumerate(ys) if y in xs}
    diag_sil = {y: float(s[xs.index(y), j]) for j, y in enumerate(ys) if y in xs}
    off_ratio = {f"{x}->{y}": float(acc[i, j] / max(chance[j], 1e-9)) for i, x in enumerate(xs) for j, y in enumerate(ys) if x != y}
    off_sil = {f"{x}->{y}": float(s[i, j]) for i, x in enumerate(xs) for j, y in enumerate(ys) if x != y}
    over = sorted((k for k, v in off_ratio.items() if v > 1.5), key=lambda k: -off_ratio[k])
    return {
        "weak_diagonal": diag_acc,
        "weak_diagonal_ok": all(v >= 0.90 for v in diag_acc.values()),
        "weak_offdiag_over_chance_max": max(off_ratio.values()) if off_ratio else float("nan"),
        # how far from the target: the entries over 1.5x chance (largest first) and the summed ratios
        "weak_offdiag_over_limit": {k: round(off_ratio[k], 2) for k in over},
        "weak_offdiag_ratio_sum": float(sum(off_ratio.values())),
        "weak_offdiag_ok": not over,
        "silhouette_diagonal": diag_sil,
        "silhouette_diagonal_ok": all(v >= 0.30 for v in diag_sil.values()),
        "silhouette_offdiag_max": max(off_sil.values()) if off_sil else float("nan"),
        "silhouette_offdiag_ok": all(v <= 0.0 for v in off_sil.values()),
    }
