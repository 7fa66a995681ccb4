"""Image quality on numpy arrays: L1, PSNR, SSIM (Wang et al. 2004, "Image Quality Assessment:
From Error Visibility to Structural Similarity", eq. 13: Gaussian window sigma 1.5 truncated to
11x11, K1 = 0.01, K2 = 0.03, population (co)variances, mean over valid positions, channels and
images), and distances between feature distributions:

* Frechet distance (Heusel et al. 2017, the FID formula): |mu_a - mu_b|^2
  + tr(S_a + S_b - 2 (S_a S_b)^{1/2}) on feature arrays the caller supplies;
* kernel distance (Binkowski et al. 2018, KID): unbiased MMD^2 with the cubic polynomial kernel
  k(x, y) = (x.y / d + 1)^3, averaged over random subsets.

These are computed on features of a network trained in this project (the caller's choice):
they are NOT comparable to Inception FID/KID numbers in papers (Inception weights cannot be
downloaded here) -- compare only numbers computed with the same feature network.
Images are (N, C, H, W) float in [0, data_range].
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from scipy.ndimage import correlate1d

from facefactors.metrics.registry import register
from facefactors.utils.errors import DataError


def _pair(a: np.ndarray, b: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 4:
        raise DataError(f"{where}: images must be two (N, C, H, W) arrays of one shape; got {a.shape} and {b.shape}")
    return a, b


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size) - (size - 1) / 2
    w = np.exp(-(x**2) / (2 * sigma**2))
    return w / w.sum()


def _filter_valid(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Separable filtering over H, W of (N, C, H, W), keeping only fully-covered ('valid') positions."""
    r = len(w) // 2
    y = correlate1d(correlate1d(x, w, axis=2, mode="constant"), w, axis=3, mode="constant")
    return y[:, :, r : x.shape[2] - r, r : x.shape[3] - r]


def ssim_map(a: np.ndarray, b: np.ndarray, data_range: float = 1.0, window: int = 11, sigma: float = 1.5) -> np.ndarray:
    """(N, C, H, W) pair -> (N, C, H - window + 1, W - window + 1) local SSIM."""
    w = _gaussian_window(window, sigma)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = _filter_valid(a, w), _filter_valid(b, w)
    saa = _filter_valid(a * a, w) - mu_a**2
    sbb = _filter_valid(b * b, w) - mu_b**2
    sab = _filter_valid(a * b, w) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))


@register("image_quality", "other", "Reconstruction quality: L1 (lower better), PSNR in dB and SSIM (higher better, 1 = identical).")
def image_quality(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> dict:
    """(N, C, H, W) pair -> {"l1", "psnr", "ssim"} averaged over images (PSNR per image, then mean)."""
    a, b = _pair(a, b, "image_quality")
    if min(a.shape[2:]) < 11:
        raise DataError(f"image_quality: SSIM needs images of at least 11x11 pixels; got {a.shape[2:]}")
    mse = np.mean((a - b) ** 2, axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        psnr = 10 * np.log10(data_range**2 / mse)
    return {
        "l1": float(np.mean(np.abs(a - b))),
        "psnr": float(np.mean(np.minimum(psnr, 100.0))),  # identical images: capped at 100 dB instead of inf
        "ssim": float(np.mean(ssim_map(a, b, data_range))),
    }


def frechet_from_stats(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    root = np.real(scipy.linalg.sqrtm(cov_a @ cov_b))
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * root))


@register("feature_distance", "other", "Frechet and kernel distance between feature sets of a project network (lower = closer; not comparable to Inception FID/KID).")
def feature_distances(feat_a: np.ndarray, feat_b: np.ndarray, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> dict:
    """feat_a (N, D), feat_b (M, D) -> {"frechet_distance", "kernel_distance", "kernel_distance_std"}."""
    a = np.asarray(feat_a, dtype=np.float64)
    b = np.asarray(feat_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise DataError(f"feature_distances: need two (N >= 2, D) feature arrays of one D; got {a.shape} and {b.shape}")
    fd = frechet_from_stats(a.mean(0), np.atleast_2d(np.cov(a, rowvar=False)), b.mean(0), np.atleast_2d(np.cov(b, rowvar=False)))
    rng = np.random.default_rng(seed)
    m = min(subset_size, len(a), len(b))
    d = a.shape[1]
    mmd = []
    for _ in range(num_subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        mmd.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())
    return {"frechet_distance": fd, "kernel_distance": float(np.mean(mmd)), "kernel_distance_std": float(np.std(mmd))}
