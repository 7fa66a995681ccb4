"""Where a UFE feature's leak lives: which coordinates carry a label it should not hold, and how
much of it L_ind's whitening sees with and without per-coordinate standardisation.

    python scripts/ufe_leak.py runs/X/features.npz --feature pose --label identity

``features.npz`` is what ``facefactors ufe experiment world_a`` writes (held-out identities).
Prints the weak-classifier accuracy (the metric of Fig. 2) of the label read from all the
feature's coordinates, from those whose standard deviation is above / at most each threshold,
and the whitened between-class scatter as a share of the whitened total (chance about
(classes - 1) / (n - 1)) for the ridge L_ind uses, without and with ``loss.whiten_std_floor``.

Then the silhouette of the label on the feature (Euclidean, as in the matrices of Fig. 2) and
the same silhouette once each class is moved to the common mean: a positive silhouette that
falls to zero or below is held by a shift of the class means alone, which L_ind (a linear
kernel: the between-class scatter) and the weak classifier both see; one that stays positive is
held by the classes' shapes (one class tighter than another), which neither sees. With
``--within LABEL`` (e.g. camera) also the silhouette inside each class of that label, so a
shift that is only a different mix of that label's classes shows as none.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.metrics import silhouette_score

from facefactors.metrics.features import load_features, within_class_residual
from facefactors.metrics.subspace import cv_accuracy
from facefactors.train.ufe_losses import whitening_matrix
from facefactors.utils.errors import UserError


def between_share(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(between-class scatter, total scatter) of the rows of z grouped by y."""
    z = z - z.mean(0)
    total = float((z**2).sum(1).mean())
    between = float(sum((y == c).mean() * (z[y == c].mean(0) ** 2).sum() for c in np.unique(y)))
    return between, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("features", help="features.npz of a world_a experiment")
    parser.add_argument("--feature", default="pose")
    parser.add_argument("--label", default="identity")
    parser.add_argument("--eps", type=float, default=0.1, help="the whitening's ridge (loss.whiten_eps)")
    parser.add_argument("--std-floor", type=float, default=0.01, help="loss.whiten_std_floor for the standardised whitening")
    parser.add_argument("--within", default=None, help="also the silhouette inside each class of this label (e.g. camera)")
    args = parser.parse_args()
    try:  # a run's features.npz or its folder; one-line errors naming the file and the fix
        features = load_features(args.features)
        f, y = features.pair(args.feature, args.label)
        within = features.pair(args.feature, args.within)[1] if args.within else None
    except UserError as e:
        parser.error(str(e))
    print(f"{args.label} read from the {args.feature} feature: {cv_accuracy(f, y)[0]:.3f} (all {f.shape[1]} coordinates)")
    std = f.std(0)
    for t in (0.01, 0.05, 0.1):
        above = std > t
        parts = [f"{name} {int(k.sum())}: {cv_accuracy(f[:, k], y)[0]:.3f}" for name, k in ((f"std > {t}", above), (f"std <= {t}", ~above)) if k.any()]
        print("  " + "; ".join(parts))
    print(f"whitened between-class share (chance ~{(len(np.unique(y)) - 1) / (len(y) - 1):.3f}):")
    for floor in (0.0, args.std_floor):
        W = whitening_matrix(torch.from_numpy(f), args.eps, floor).numpy()
        b, t = between_share(f @ W, y)
        print(f"  std_floor {floor:g}: between {b:.2f} of {t:.1f} ({b / t:.3f})")
    # every class moved to one point (the silhouette does not depend on which)
    print(f"silhouette of {args.label} on the {args.feature} feature: {silhouette_score(f, y):+.4f}; with the class means removed: {silhouette_score(within_class_residual(f, y), y):+.4f}")
    if within is not None:
        for c in np.unique(within):
            k = within == c
            if len(np.unique(y[k])) >= 2:
                print(f"  inside {args.within} {c} ({int(k.sum())} samples): {silhouette_score(f[k], y[k]):+.4f}")


if __name__ == "__main__":
    main()
