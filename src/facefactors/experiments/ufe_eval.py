"""Evaluation helpers of the UFE experiments (Banerjee et al., sec. 4.3): features of a set,
the shared ``features.npz`` file, weak-classifier and silhouette matrices, t-SNE figures.

The matrices themselves are computed by :mod:`facefactors.metrics.subspace`; this module adapts
UFE features to them and draws the figures.
"""

from __future__ import annotations

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


def matrix_markdown(m: dict, key: str, fmt: str = "{:.2f}") -> str:
    rows = ["| x \\ y | " + " | ".join(m["y"]) + " |", "|---" * (len(m["y"]) + 1) + "|"]
    for i, x in enumerate(m["x"]):
        rows.append(f"| {x} | " + " | ".join(fmt.format(v) for v in m[key][i]) + " |")
    if "chance" in m:
        rows.append("| chance (majority) | " + " | ".join(fmt.format(v) for v in m["chance"]) + " |")
    return "\n".join(rows)


def matrix_figure(m: dict, key: str, path: str | Path, title: str, vmin: float = -1.0, vmax: float = 1.0) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = np.asarray(m[key])
    fig, ax = plt.subplots(figsize=(1.1 * len(m["y"]) + 2, 0.8 * len(m["x"]) + 1.5))
    im = ax.imshow(a, vmin=vmin, vmax=vmax, cmap="RdBu_r" if vmin < 0 else "viridis")
    ax.set_xticks(range(len(m["y"])), [f"y={y}" for y in m["y"]], rotation=30)
    ax.set_yticks(range(len(m["x"])), [f"x={x}" for x in m["x"]])
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            ax.text(j, i, f"{a[i, j]:.2f}", ha="center", va="center", fontsize=8, color="k")
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
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
