"""How a feature's own clusters spread: where the within-class distances that hold its
silhouette down live, and whether other labels explain them.

    python scripts/ufe_spread.py runs/X --feature identity --label identity

``runs/X`` is a run folder (or its ``features.npz``) of ``facefactors ufe train`` or ``ufe
experiment world_a``: held-out identities. Prints the silhouette (Euclidean, as the matrices of
Fig. 2) of the label on the whole feature, on its leading k principal components, the
per-class silhouettes' range, and the share of the within-class spread (each sample minus its
class mean) that each other label explains by least squares (one-hot classes; a continuous label
as one column). A silhouette much higher on the leading components says the feature separates
the classes there and spreads each class over the remaining directions; a small explained share
says that spread is not one of the labelled attributes.
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.metrics import silhouette_samples

from facefactors.metrics.features import load_features
from facefactors.utils.errors import UserError


def within_class_residual(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each row of f minus the mean of its class."""
    r = f.astype(np.float64).copy()
    for c in np.unique(y):
        r[y == c] -= r[y == c].mean(0)
    return r


def explained_share(residual: np.ndarray, label: np.ndarray) -> float:
    """The share of the residual's summed squares a least-squares fit on the label explains."""
    if label.dtype.kind == "f":
        design = label[:, None].astype(np.float64)
    else:
        _, codes = np.unique(label, return_inverse=True)
        design = np.eye(codes.max() + 1)[codes]
    design = design - design.mean(0)
    beta, *_ = np.linalg.lstsq(design, residual, rcond=None)
    return float(((design @ beta) ** 2).sum() / max((residual**2).sum(), 1e-12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("features", help="a run folder or its features.npz")
    parser.add_argument("--feature", default="identity")
    parser.add_argument("--label", default="identity")
    parser.add_argument("--components", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    parser.add_argument("--explain", nargs="+", default=["expression", "lighting", "pose", "camera", "eyeglasses", "yaw", "ambient"], help="labels to fit the within-class spread with (those the file lacks are skipped)")
    args = parser.parse_args()
    try:  # one-line errors naming the file and the fix
        data = load_features(args.features)
        f, y = data.pair(args.feature, args.label)
    except UserError as e:
        parser.error(str(e))
    if len(np.unique(y)) < 2:
        parser.error(f"{data.source}: labels/{args.label} has one class; a silhouette needs two")
    per_sample = silhouette_samples(f, y)
    per_class = np.array([per_sample[y == c].mean() for c in np.unique(y)])
    print(f"{args.label} on the {args.feature} feature ({f.shape[1]} coordinates, {len(y)} samples, {len(per_class)} classes): silhouette {per_sample.mean():.3f}; per class {per_class.min():.2f} / {np.median(per_class):.2f} / {per_class.max():.2f} (min / median / max)")
    centred = f - f.mean(0)
    _, singular, directions = np.linalg.svd(centred, full_matrices=False)
    variance = singular**2 / (singular**2).sum()
    for k in sorted(k for k in args.components if 0 < k < f.shape[1]):
        print(f"  leading {k:3d} principal components ({variance[:k].sum():.0%} of the variance): silhouette {silhouette_samples(centred @ directions[:k].T, y).mean():.3f}")
    residual = within_class_residual(f, y)
    shares = [f"{name} {explained_share(residual, data.labels[name]):.3f}" for name in args.explain if name in data.labels and name != args.label]
    print("within-class spread explained by: " + (", ".join(shares) if shares else "(none of the --explain labels is in the file)"))


if __name__ == "__main__":
    main()
