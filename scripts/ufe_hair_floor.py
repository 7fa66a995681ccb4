"""How well the world's true hair style reads the person: the best any reader can do, next to the
weak classifier of Fig. 2 and a UFE's "others" feature.

    python scripts/ufe_hair_floor.py --preset standard --run runs/X

Hair style is an "others" factor (DESIGN.md) that varies around its person's own: volume and
length are the person's albedo coefficients plus a per-image draw (``FaceWorld.draw_factor``).
So a faithful "others" feature reads identity. ``facefactors ufe experiment world_floor`` measures
how much with two readers (logistic regression and 10 nearest neighbours); here the ceiling of
every reader: the Bayes reader, which knows each held-out person's hair distribution (the
person's own volume and length plus a uniform draw ``HAIR_SPREAD`` wide, clamped, as
``draw_factor`` draws it) and names the person under whose distribution the image's hair is most
likely. Printed beside it: the weak classifier (``metrics.subspace.cv_accuracy``, the metric's own
reader), linear discriminant analysis and 5 nearest neighbours on the same two numbers, and with
``--run`` (a folder holding the features.npz that ``facefactors ufe experiment world_a`` writes,
on the same preset's held-out set) the weak classifier on the run's "others" feature (whether
that feature holds the person through anything but the hair: ``scripts/ufe_others_person.py``).
Last, the same readers on the image's own part of the hair style (volume and length minus the
person's own, the fringe, the parting): what "others" holds if identity keeps the person's own
hair, the split that person twins ask for (``data.twins=person``); only the clamp at 0 and 1
tells people apart there.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from facefactors.config import load_config
from facefactors.metrics.features import load_features
from facefactors.metrics.subspace import cv_accuracy
from facefactors.train.ufe import UFETrainConfig
from facefactors.train.ufe_data import world_a_config, world_set_index
from facefactors.utils.errors import UserError
from facefactors.world.identity import A
from facefactors.world.world import HAIR_SPREAD, FaceWorld


def held_out_hair(cfg: UFETrainConfig) -> tuple[object, np.ndarray]:
    """(parameters, identity labels) of world_a's held-out set (``world_a_sets``' test set)."""
    d = cfg.data
    world = FaceWorld(world_a_config(d, cfg.model.image_size))
    index, ident = world_set_index(d.test_identities, d.test_images_per_identity)
    params = world.sample_params(index, "test", identities=ident)
    return params, world.labels(params)["identity"].numpy()


def hair_likelihood(hair: np.ndarray, centres: np.ndarray, spread: float = HAIR_SPREAD) -> np.ndarray:
    """(N, P) likelihood of each image's hair (N, 2: volume, length) under each person's hair
    distribution (centres (P, 2), the person's albedo coefficients): per coordinate uniform on
    centre +- spread / 2, what falls outside [0, 1] piled on the bound (``draw_factor``'s clamp).
    A coordinate on a bound gets the pile's mass, any other the density: an image compares people
    on the same terms, so the product ranks them as the Bayes reader does."""
    x, c = hair[:, None, :], centres[None, :, :]
    lo, hi = c - spread / 2, c + spread / 2
    density = ((x >= lo) & (x <= hi)) / spread
    at_zero = np.clip(-lo, 0, None) / spread  # mass clamped to 0
    at_one = np.clip(hi - 1, 0, None) / spread  # mass clamped to 1
    per_coordinate = np.where(x <= 0, at_zero, np.where(x >= 1, at_one, density))
    return per_coordinate.prod(-1)


def bayes_accuracy(params, labels: np.ndarray) -> float:
    """Expected accuracy of the reader that knows each held-out person's hair distribution and
    names the person under whose distribution the image's hair is most likely; ties (overlapping
    distributions are flat) split evenly. No reader of hair style alone does better."""
    hair = params.hair[:, :2].double().numpy()
    centres_of = params.albedo[:, [A["hair_volume"], A["hair_length"]]].double().numpy()
    people = np.unique(labels)
    centres = np.stack([centres_of[labels == p][0] for p in people])
    likelihood = hair_likelihood(hair, centres)
    winners = likelihood == likelihood.max(1, keepdims=True)
    truth = people[None, :] == labels[:, None]
    return float(((winners & truth).sum(1) / winners.sum(1)).mean())


def image_own_hair(params) -> np.ndarray:
    """(N, 4) the part of each image's hair style that is not its person's: volume and length
    minus the person's own (albedo coefficients), then the fringe and the parting, drawn per image."""
    hair = params.hair.double().numpy()
    own = params.albedo[:, [A["hair_volume"], A["hair_length"]]].double().numpy()
    return np.concatenate([hair[:, :2] - own, hair[:, 2:4]], 1)


def other_readers(x: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """5-fold accuracy of the weak classifier, LDA and 5-NN reading ``labels`` from ``x``."""
    out = {"weak classifier": cv_accuracy(x, labels)[0]}
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    z = (x - x.mean(0)) / np.maximum(x.std(0), 1e-12)
    for name, reader in (("LDA", LinearDiscriminantAnalysis()), ("5-NN", KNeighborsClassifier(5))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[name] = float(cross_val_score(reader, z, labels, cv=folds).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="standard", help="the UFE preset whose held-out set to read (quick, standard, ...)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="a config override, as for `facefactors ufe`")
    parser.add_argument("--run", help="a run folder (or features.npz) evaluated on the same held-out set: its 'others' feature read as identity")
    args = parser.parse_args()
    try:
        cfg = load_config(UFETrainConfig, "ufe", args.preset, args.overrides)
        params, labels = held_out_hair(cfg)
        others = None
        if args.run:
            feats = load_features(Path(args.run))
            if "others" not in feats.features or not np.array_equal(np.asarray(feats.labels.get("identity")), labels):
                raise UserError(f"{args.run}: no 'others' feature of world_a's held-out set of the {args.preset!r} preset; pass the preset (and --set data.*) it was evaluated with")
            others = feats.features["others"]
    except UserError as e:
        parser.error(str(e))
    people = len(np.unique(labels))
    chance = np.bincount(labels).max() / len(labels)
    print(f"held-out set of {args.preset}: {len(labels)} images of {people} people; majority chance {chance:.4f}")
    print("identity read from the true hair style (volume, length): accuracy, x chance")
    bayes = bayes_accuracy(params, labels)
    print(f"  {'Bayes reader':16s} {bayes:.3f}  {bayes / chance:6.2f}x   (knows each person's hair distribution)")
    hair = params.hair[:, :2].double().numpy()
    for name, acc in other_readers(hair, labels).items():
        print(f"  {name:16s} {acc:.3f}  {acc / chance:6.2f}x")
    print("identity read from the image's own part of the hair style (offsets from the person's own, fringe, parting)")
    for name, acc in other_readers(image_own_hair(params), labels).items():
        print(f"  {name:16s} {acc:.3f}  {acc / chance:6.2f}x")
    if others is not None:
        acc = cv_accuracy(others.astype(np.float64), labels)[0]
        print(f"identity read from {args.run}'s 'others' feature by the weak classifier: {acc:.3f}  {acc / chance:6.2f}x")


if __name__ == "__main__":
    main()
