"""Figures of the evaluation report (matplotlib, Agg backend): heatmaps with the value written
in every cell, t-SNE scatter grids, confusion matrices. Each function returns PNG bytes."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def heatmap(matrix: np.ndarray, rows: list[str], cols: list[str], title: str, xlabel: str = "", ylabel: str = "", fmt: str = "{:.2f}", vmin=None, vmax=None, cmap: str = "viridis") -> bytes:
    m = np.asarray(matrix, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * max(len(cols), 2), 1.0 + 0.6 * max(len(rows), 2)))
    im = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    lo, hi = (np.nanmin(m), np.nanmax(m)) if np.isfinite(m).any() else (0.0, 1.0)
    lo, hi = vmin if vmin is not None else lo, vmax if vmax is not None else hi
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            v = m[i, j]
            text = "n/a" if not np.isfinite(v) else fmt.format(v)
            bright = np.isfinite(v) and (v - lo) > 0.6 * (hi - lo + 1e-12)
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="black" if bright else "white")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return _png(fig)


def confusion(conf: np.ndarray, classes: list[str], title: str) -> bytes:
    conf = np.asarray(conf)
    rate = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.5 + 0.45 * len(classes), 1.2 + 0.45 * len(classes)))
    ax.imshow(rate, cmap="Blues", vmin=0, vmax=1)
    if len(classes) <= 25:  # beyond that the numbers are unreadable; the colour still tells
        for i in range(conf.shape[0]):
            for j in range(conf.shape[1]):
                ax.text(j, i, str(conf[i, j]), ha="center", va="center", fontsize=7, color="white" if rate[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _png(fig)


def scatter_grid(embeddings: dict[str, tuple[np.ndarray, np.ndarray]], labels: dict[str, np.ndarray], title: str) -> bytes:
    """Rows = features (their 2-D embedding, rows ``index`` of the data), columns = labels colouring them."""
    rows, cols = list(embeddings), list(labels)
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.6 * len(cols), 2.6 * len(rows)), squeeze=False)
    for i, r in enumerate(rows):
        emb, index = embeddings[r]
        for j, c in enumerate(cols):
            ax = axes[i, j]
            y = np.asarray(labels[c])[index]
            missing = y < 0
            ax.scatter(emb[missing, 0], emb[missing, 1], s=3, c="lightgrey")
            ax.scatter(emb[~missing, 0], emb[~missing, 1], s=3, c=y[~missing], cmap="tab20")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"coloured by {c}", fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{r} feature", fontsize=9)
    fig.suptitle(title)
    return _png(fig)
