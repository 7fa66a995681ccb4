"""2-D embeddings of attribute features for the t-SNE plots of the Universal Face Encoder
(/work/shared/papers/000_*.txt, Figs. 2 and 3): scikit-learn t-SNE (van der Maaten & Hinton
2008), or UMAP when ``umap-learn`` is importable and asked for. Features are standardised and a
seeded subsample of at most ``max_samples`` points is embedded (t-SNE is O(N log N) per step).
"""

from __future__ import annotations

import numpy as np
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits

from facefactors.metrics.registry import register
from facefactors.utils.errors import UserError


def umap_available() -> bool:
    try:
        import umap  # noqa: F401
    except Exception:
        return False
    return True


@register("tsne", "features", "t-SNE (UFE Figs. 2/3): each attribute's features in 2-D, coloured by each label; tight same-colour clusters only on the diagonal = disentangled.")
def embed_2d(features: np.ndarray, method: str = "tsne", max_samples: int = 2000, seed: int = 0, perplexity: float = 30.0, threads: int | None = 1) -> dict:
    """features (N, D) -> {"embedding" (n, 2), "index" (n,) rows of the input that were embedded, "method"}."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 5:
        raise UserError(f"embed_2d: features must be (N >= 5, D); got {x.shape}")
    index = np.arange(len(x))
    if len(x) > max_samples:
        index = np.sort(np.random.default_rng(seed).choice(len(x), max_samples, replace=False))
    x = x[index]
    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    if method == "umap":
        if not umap_available():
            raise UserError("embed_2d: method='umap' needs the umap-learn package; use method='tsne'")
        import umap

        emb = umap.UMAP(n_components=2, random_state=seed).fit_transform(x)
    elif method == "tsne":
        # one OpenMP thread: on a shared, oversubscribed machine spinning threads cost 10x (see dci.py)
        with threadpool_limits(limits=threads, user_api="openmp"):
            emb = TSNE(n_components=2, perplexity=min(perplexity, (len(x) - 1) / 3.0), init="pca", random_state=seed).fit_transform(x)
    else:
        raise UserError(f"embed_2d: unknown method {method!r}; use 'tsne' or 'umap'")
    return {"embedding": np.asarray(emb, dtype=np.float64), "index": index, "method": method}
