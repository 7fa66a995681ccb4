"""Evaluation helpers of the UFE experiments (Banerjee et al., sec. 4.3): features of a set,
the shared ``features.npz`` file, weak-classifier and silhouette matrices, t-SNE figures.

The matrices are taken from :mod:`facefactors.metrics` when it provides them
(``weak_classifier_matrix`` / ``silhouette_matrix``); until then the small scikit-learn
versions below compute the same definitions (logistic regression of label y from feature x on
held-out images; silhouette score of feature x clustered by label y, euclidean).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from facefactors.models.ufe import UFE
from facefactors.train.ufe_data import FaceTensorSet, class_balance
from facefactors.utils.io import atomic_path


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
    desc = data.description.restrict(data.description.names)  # every label of an evaluation set is ground truth
    arrays = {f"features/{k}": v.astype(np.float32) for k, v in features.items()}
    arrays.update({f"labels/{k}": v.numpy() for k, v in data.labels.items()})
    arrays["description"] = np.array(json.dumps(desc.to_dict()))
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return path


def _holdout_split(labels: np.ndarray, identity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Train on even, test on odd images of each identity (every identity is in both halves)."""
    rank = np.zeros(len(identity), dtype=int)
    for i in np.unique(identity):
        m = np.flatnonzero(identity == i)
        rank[m] = np.arange(len(m))
    return rank % 2 == 0, rank % 2 == 1


def weak_classifier_matrix(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], xs: list[str], ys: list[str], identity: np.ndarray, seed: int = 0) -> dict:
    """Accuracy of logistic regression predicting label y from feature x (sec. 4.3, Fig. 2 top)."""
    try:
        from facefactors import metrics

        fn = getattr(metrics, "weak_classifier_matrix", None)
    except ImportError:  # pragma: no cover
        fn = None
    if fn is not None:
        try:
            return _normalise(fn(features={x: features[x] for x in xs}, labels={y: labels[y] for y in ys}), xs, ys, "accuracy")
        except TypeError:
            pass  # a different signature: fall back to the local definition
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    tr, te = _holdout_split(labels[ys[0]], identity)
    acc = np.zeros((len(xs), len(ys)))
    for j, y in enumerate(ys):
        lab = labels[y]
        ok = lab >= 0
        for i, x in enumerate(xs):
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, random_state=seed))
            clf.fit(features[x][tr & ok], lab[tr & ok])
            acc[i, j] = float((clf.predict(features[x][te & ok]) == lab[te & ok]).mean())
    chance = [class_balance(labels[y][te]) for y in ys]
    return {"x": xs, "y": ys, "accuracy": acc.tolist(), "chance": chance}


def silhouette_matrix(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], xs: list[str], ys: list[str], max_samples: int = 2000, seed: int = 0) -> dict:
    """Silhouette score of feature x clustered by label y (sec. 4.3, Fig. 2 bottom)."""
    try:
        from facefactors import metrics

        fn = getattr(metrics, "silhouette_matrix", None)
    except ImportError:  # pragma: no cover
        fn = None
    if fn is not None:
        try:
            return _normalise(fn(features={x: features[x] for x in xs}, labels={y: labels[y] for y in ys}), xs, ys, "silhouette")
        except TypeError:
            pass
    from sklearn.metrics import silhouette_score

    n = len(next(iter(features.values())))
    rng = np.random.default_rng(seed)
    pick = rng.choice(n, size=min(n, max_samples), replace=False)
    sil = np.zeros((len(xs), len(ys)))
    for j, y in enumerate(ys):
        lab = labels[y][pick]
        ok = lab >= 0
        for i, x in enumerate(xs):
            sil[i, j] = float(silhouette_score(features[x][pick][ok], lab[ok])) if len(np.unique(lab[ok])) > 1 else float("nan")
    return {"x": xs, "y": ys, "silhouette": sil.tolist()}


def _normalise(result: dict, xs: list[str], ys: list[str], key: str) -> dict:
    """Accept the metrics package's dict if it carries a matrix under ``key`` (or "matrix")."""
    mat = result.get(key, result.get("matrix"))
    out = dict(result)
    out.update({"x": result.get("x", xs), "y": result.get("y", ys), key: np.asarray(mat).tolist()})
    return out


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
    from sklearn.manifold import TSNE

    ident = labels["identity"]
    keep = np.isin(ident, np.unique(ident)[:identities])
    fig, axes = plt.subplots(len(xs), len(ys), figsize=(2.6 * len(ys), 2.4 * len(xs)), squeeze=False)
    for i, x in enumerate(xs):
        f = features[x][keep]
        emb = TSNE(n_components=2, perplexity=min(30.0, max(5.0, len(f) / 4 - 1)), random_state=seed, init="pca").fit_transform(f)
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
    return {
        "weak_diagonal": diag_acc,
        "weak_diagonal_ok": all(v >= 0.90 for v in diag_acc.values()),
        "weak_offdiag_over_chance_max": max(off_ratio.values()) if off_ratio else float("nan"),
        "weak_offdiag_ok": all(v <= 1.5 for v in off_ratio.values()),
        "silhouette_diagonal": diag_sil,
        "silhouette_diagonal_ok": all(v >= 0.30 for v in diag_sil.values()),
        "silhouette_offdiag_max": max(off_sil.values()) if off_sil else float("nan"),
        "silhouette_offdiag_ok": all(v <= 0.0 for v in off_sil.values()),
    }
