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

With ``--world PRESET`` (the UFE preset, and any ``--set data.*``, the features were evaluated
with: world_a's held-out set) the spread is also fitted with the world's true per-image factors
(hair, background, camera, expression weights, light, pose, ...; each centred within the class):
linearly in-sample per factor and all together, and by an RBF kernel ridge cross-validated over
whole classes (5 folds), whose R^2 says how much of the spread a function of those factors
predicts for classes it has not seen.
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.kernel_ridge import KernelRidge
from sklearn.metrics import silhouette_samples
from sklearn.model_selection import GroupKFold, cross_val_predict

from facefactors.metrics.features import load_features, within_class_residual
from facefactors.utils.errors import UserError


def fit_share(design: np.ndarray, residual: np.ndarray) -> float:
    """In-sample least-squares share of the residual's summed squares."""
    if design.shape[1] == 0:
        return 0.0
    beta, *_ = np.linalg.lstsq(design, residual, rcond=None)
    return float(((design @ beta) ** 2).sum() / max((residual**2).sum(), 1e-12))


def explained_share(residual: np.ndarray, label: np.ndarray) -> float:
    """The share of the residual's summed squares a least-squares fit on the label explains
    (one-hot classes; a continuous label as one column)."""
    if label.dtype.kind == "f":
        design = label[:, None].astype(np.float64)
    else:
        _, codes = np.unique(label, return_inverse=True)
        design = np.eye(codes.max() + 1)[codes]
    return fit_share(design - design.mean(0), residual)


def centred_within(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x minus its class means, without the columns that are constant within every class."""
    r = within_class_residual(x, y)
    return r[:, r.std(0) > 1e-9]


def held_out_r2(design: np.ndarray, residual: np.ndarray, groups: np.ndarray) -> float:
    """R^2 of an RBF kernel ridge predicting the residual for whole classes it was not fitted on
    (the best of a small grid; standardised inputs)."""
    x = (design - design.mean(0)) / design.std(0)
    folds = GroupKFold(min(5, len(np.unique(groups))))
    best = -np.inf
    for gamma in (0.3 / x.shape[1], 1.0 / x.shape[1]):
        for alpha in (0.1, 1.0):
            pred = cross_val_predict(KernelRidge(kernel="rbf", gamma=gamma, alpha=alpha), x, residual, cv=folds, groups=groups)
            best = max(best, 1.0 - float(((residual - pred) ** 2).sum() / max((residual**2).sum(), 1e-12)))
    return best


WORLD_FIELDS = ("hair", "background", "eyeglasses", "glasses_style", "noise", "camera", "expression_weights", "light", "pose")


def world_codes(preset: str, overrides: list[str], labels: np.ndarray) -> dict[str, np.ndarray]:
    """The true per-image factors of world_a's held-out set for a UFE preset (nothing rendered)."""
    from facefactors.config import load_config
    from facefactors.experiments.ufe import world_a_config
    from facefactors.train.ufe import UFETrainConfig
    from facefactors.train.ufe_data import world_set_index
    from facefactors.world.ground_truth import factor_codes
    from facefactors.world.world import FaceWorld

    cfg = load_config(UFETrainConfig, "ufe", preset, overrides)
    world = FaceWorld(world_a_config(cfg.data, cfg.model.image_size))
    index, ident = world_set_index(cfg.data.test_identities, cfg.data.test_images_per_identity)
    params = world.sample_params(index, "test", identities=ident)
    if not np.array_equal(world.labels(params)["identity"].numpy(), labels):
        raise UserError(f"the features are not world_a's held-out set of the {preset!r} preset; pass the --world preset (and --set data.*) they were evaluated with")
    return factor_codes(params, {name: (name,) for name in WORLD_FIELDS})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("features", help="a run folder or its features.npz")
    parser.add_argument("--feature", default="identity")
    parser.add_argument("--label", default="identity")
    parser.add_argument("--components", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    parser.add_argument("--explain", nargs="+", default=["expression", "lighting", "pose", "camera", "eyeglasses", "yaw", "ambient"], help="labels to fit the within-class spread with (those the file lacks are skipped)")
    parser.add_argument("--world", metavar="PRESET", help="also fit the spread with the world's true factors of this UFE preset's held-out set")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="the preset's overrides the features were evaluated with (data.*)")
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
    if args.world:
        try:
            codes = world_codes(args.world, args.overrides, y)
        except UserError as e:
            parser.error(f"{data.source}: {e}")
        parts = {name: centred_within(code, y) for name, code in codes.items()}
        together = np.concatenate(list(parts.values()), 1)
        print("the world's true factors, within each class, linearly (in-sample): " + ", ".join(f"{name} {fit_share(part, residual):.3f}" for name, part in parts.items()) + f"; all {together.shape[1]} together {fit_share(together, residual):.3f}")
        print(f"  all together, kernel ridge on classes held out (R^2): {held_out_r2(together, residual, y):.3f}")


if __name__ == "__main__":
    main()
