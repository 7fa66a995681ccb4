"""Metrics of the seed papers: weak-classifier and silhouette matrices, t-SNE, linear probing,
10-fold verification, image quality and feature distances."""

from __future__ import annotations

import math

import numpy as np
import pytest

from facefactors.metrics import (
    embed_2d,
    feature_distances,
    image_quality,
    linear_probe,
    silhouette_matrix,
    verification_10fold,
    weak_classifier_matrix,
)
from facefactors.metrics.image_quality import frechet_from_stats
from facefactors.metrics.probing import best_threshold
from facefactors.metrics.subspace import chance_levels
from facefactors.utils.errors import DataError


def _ufe_toy(n=360, seed=0, sep=4.0):
    """Two attributes with independent labels; each feature clusters by its own label only."""
    rng = np.random.default_rng(seed)
    labels = {"identity": rng.integers(0, 6, n), "expression": rng.integers(0, 3, n)}
    centres = {k: sep * rng.normal(size=(int(v.max()) + 1, 8)) for k, v in labels.items()}
    features = {k: centres[k][labels[k]] + rng.normal(size=(n, 8)) for k in labels}
    return features, labels


def test_chance_levels_hand_computed():
    assert chance_levels(np.array([0, 0, 0, 1])) == (0.5, 0.75)
    assert chance_levels(np.array([2, 0, 1, 1, 2, 2])) == pytest.approx((1 / 3, 0.5))


def test_weak_classifier_matrix_diagonal_high_off_diagonal_chance():
    features, labels = _ufe_toy()
    labels["expression"][:30] = -1  # missing labels are dropped for that column only
    out = weak_classifier_matrix(features, labels)
    acc = out["accuracy"]
    assert out["rows"] == ["identity", "expression"] and out["cols"] == ["identity", "expression"]
    assert acc.shape == (2, 2) and acc[0, 0] > 0.95 and acc[1, 1] > 0.95
    assert acc[0, 1] < out["chance_majority"][1] + 0.12 and acc[1, 0] < out["chance_majority"][0] + 0.12
    assert out["n"].tolist() == [360, 330]
    assert out["chance_uniform"][0] == pytest.approx(1 / 6)


def _silhouette_by_hand(x, y):
    n = len(x)
    s = []
    for i in range(n):
        own = [math.dist(x[i], x[j]) for j in range(n) if y[j] == y[i] and j != i]
        if not own:
            s.append(0.0)
            continue
        a = sum(own) / len(own)
        b = min(
            sum(math.dist(x[i], x[j]) for j in range(n) if y[j] == c) / sum(1 for j in range(n) if y[j] == c)
            for c in set(y.tolist()) if c != y[i]
        )
        s.append((b - a) / max(a, b))
    return sum(s) / n


def test_silhouette_matrix_matches_hand_loop_and_orders_diagonal():
    features, labels = _ufe_toy(n=60)
    out = silhouette_matrix(features, labels)
    s = out["silhouette"]
    assert s[0, 0] == pytest.approx(_silhouette_by_hand(features["identity"], labels["identity"]), abs=1e-9)
    assert s[1, 0] == pytest.approx(_silhouette_by_hand(features["expression"], labels["identity"]), abs=1e-9)
    assert s[0, 0] > 0.5 and s[1, 1] > 0.5 and s[0, 1] < 0.1 and s[1, 0] < 0.1


def test_tsne_embedding_keeps_clusters_apart():
    features, labels = _ufe_toy(n=300)
    out = embed_2d(features["expression"], max_samples=120)
    emb, idx = out["embedding"], out["index"]
    assert emb.shape == (120, 2) and len(np.unique(idx)) == 120
    y = labels["expression"][idx]
    d = np.linalg.norm(emb[:, None] - emb[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert np.mean(y[d.argmin(1)] == y) > 0.95  # nearest neighbour in 2-D shares the label
    with pytest.raises(Exception, match="umap|unknown"):
        embed_2d(features["expression"], method="nope")


def test_linear_probe_separable_and_random():
    features, labels = _ufe_toy()
    good = linear_probe(features["identity"], labels["identity"])
    assert good["accuracy"] > 0.95 and good["macro_f1"] > 0.95
    conf = good["confusion"]
    assert conf.sum() == good["num_test"] == 90 and np.trace(conf) / conf.sum() == pytest.approx(good["accuracy"])
    # macro-F1 recomputed from the confusion matrix by hand
    f1 = [2 * conf[c, c] / (conf[c].sum() + conf[:, c].sum()) for c in range(len(conf))]
    assert good["macro_f1"] == pytest.approx(np.mean(f1))
    bad = linear_probe(features["expression"], labels["identity"])
    assert bad["accuracy"] < bad["chance_majority"] + 0.15


def test_best_threshold_and_verification_protocol():
    assert best_threshold(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1], bool)) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    ids = rng.normal(size=(50, 16))
    p = 600
    left = rng.integers(0, 50, p)
    same = np.arange(p) % 2 == 0
    right = np.where(same, left, (left + rng.integers(1, 50, p)) % 50)
    a = ids[left] + 0.3 * rng.normal(size=(p, 16))
    b = ids[right] + 0.3 * rng.normal(size=(p, 16))
    out = verification_10fold(a, b, same)
    assert len(out["fold_accuracy"]) == 10 and out["accuracy"] > 0.95
    assert out["std_error"] == pytest.approx(np.std(out["fold_accuracy"], ddof=1) / math.sqrt(10))
    assert verification_10fold(a, b, same, method="linear")["accuracy"] > 0.9
    noise = verification_10fold(rng.normal(size=(p, 16)), rng.normal(size=(p, 16)), same)
    assert abs(noise["accuracy"] - 0.5) < 0.1


def test_image_quality_hand_cases_and_kornia_ssim():
    a = np.zeros((2, 3, 16, 16))
    b = a + 0.1
    out = image_quality(a, b)
    assert out["l1"] == pytest.approx(0.1) and out["psnr"] == pytest.approx(20.0)
    c1 = 0.01**2
    assert out["ssim"] == pytest.approx((0 + c1) / (0 + 0.01 + c1))  # constant images: luminance term only
    assert image_quality(a + 0.3, a + 0.3)["ssim"] == pytest.approx(1.0)
    torch = pytest.importorskip("torch")
    from kornia.metrics import ssim as kornia_ssim

    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 24, 20))
    y = np.clip(x + 0.1 * rng.normal(size=x.shape), 0, 1)
    ref = kornia_ssim(torch.from_numpy(x), torch.from_numpy(y), 11, max_val=1.0, padding="valid").mean().item()
    assert image_quality(x, y)["ssim"] == pytest.approx(ref, abs=1e-6)
    with pytest.raises(DataError, match="shape"):
        image_quality(x, y[:, :2])


def test_frechet_and_kernel_distance():
    mu_a, mu_b = np.array([0.0, 1.0]), np.array([1.0, 3.0])
    va, vb = np.array([1.0, 4.0]), np.array([4.0, 9.0])
    # diagonal covariances: |mu_a - mu_b|^2 + sum (sqrt va - sqrt vb)^2 = 5 + (1 + 1) = 7
    assert frechet_from_stats(mu_a, np.diag(va), mu_b, np.diag(vb)) == pytest.approx(7.0)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(800, 4)), rng.normal(size=(800, 4))
    same = feature_distances(x, y, num_subsets=10, subset_size=200)
    shifted = feature_distances(x, y + 1.0, num_subsets=10, subset_size=200)
    assert same["frechet_distance"] < 0.1 and abs(same["kernel_distance"]) < 0.05
    expected = frechet_from_stats(x.mean(0), np.cov(x, rowvar=False), (y + 1.0).mean(0), np.cov(y + 1.0, rowvar=False))
    assert shifted["frechet_distance"] == pytest.approx(expected) and shifted["frechet_distance"] == pytest.approx(4.0, abs=0.8)
    assert shifted["kernel_distance"] > 0.5
