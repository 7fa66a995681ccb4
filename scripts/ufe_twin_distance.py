"""How far each of a UFE run's features moves when one factor of a face alone changes: the
held-out images against their counterfactual twins (``render_twins``: the same draw of the world
with that factor forced to another class), something only a world with ground truth can measure.

    python scripts/ufe_twin_distance.py runs/X                      # pose twins of the held-out set
    python scripts/ufe_twin_distance.py runs/X --factor lighting --split train --people 40

For each subspace: the mean squared distance between an image's feature and its twin's, divided
by the feature's dimension (L_twin's measure, train/ufe_losses.py twin_loss), and for scale the same
between two different images of one person, and the ratio of the two. A disentangled encoder
moves the changed factor's own subspace and holds every other still (ratio 0); "others" holding a
head turn shows as a large ratio there, even where no classifier reads pose from it, because each
person's hair turns its own way.

    python scripts/ufe_twin_distance.py runs/X --silhouette         # and the silhouettes by pose

With ``--silhouette`` (a factor of two classes, as pose): each feature's silhouette by the factor
on the set as the evaluation scores it, next to the same labels shuffled; on the set with every
image encoded at one class (its own image where it has that class, its twin where not), features
that hold nothing of the factor, so what they score is what the set's draw of every other factor
scores against these labels; and on the set joined with its twins, where every draw appears in
both classes and nothing but the factor differs between them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from facefactors.config import load_saved_config
from facefactors.experiments import ufe_eval as ev
from facefactors.train.ufe import UFETrainConfig, load_ufe
from facefactors.train.ufe_data import (
    TWIN_FACTORS,
    FaceTensorSet,
    render_twins,
    render_world_set,
    world_a_config,
)
from facefactors.utils.errors import UserError


def encode_with_twins(run: str | Path, factor: str = "pose", split: str = "test", people: int = 0, progress: bool = True):
    """``split``'s set of the run's config (the held-out set for "test", the training set for
    "train"), its first ``people`` people (0 = all), and its ``factor`` twins, encoded by the run:
    (the set, {subspace: (N, D)} of its images, {subspace: (N, D)} of their twins)."""
    run = Path(run)
    cfg = load_saved_config(UFETrainConfig, run / "config.yaml")
    if factor not in TWIN_FACTORS:
        raise UserError(f"--factor {factor}: one of {sorted(TWIN_FACTORS)}")
    d = cfg.data
    n, per = (d.test_identities, d.test_images_per_identity) if split == "test" else (d.train_identities, d.images_per_identity)
    if people and not 2 <= people <= n:
        raise UserError(f"--people {people}: the run's {split} set has {n} people; ask for 2 to {n}")
    model = load_ufe(run)
    wcfg = world_a_config(d, cfg.model.image_size)
    data = render_world_set(wcfg, split, n, per, d.cache, progress)
    if people:
        data = data.subset(torch.arange(people * per))
    twins = render_twins(wcfg, data, factor, d.cache, progress)
    return data, ev.encode_set(model, data), ev.encode_set(model, FaceTensorSet(twins, data.labels, data.description))


def twin_distances(data: FaceTensorSet, own: dict[str, np.ndarray], moved: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """{subspace: {"twin", "same_person", "ratio"}} of encode_with_twins's output."""
    person = data.labels["identity"].numpy()
    i, j = np.triu_indices(len(person), 1)
    same = person[i] == person[j]
    i, j = i[same], j[same]
    out = {}
    for name, f in own.items():
        dim = f.shape[1]
        twin = float(((f - moved[name]) ** 2).sum(1).mean() / dim)
        pairs = float(((f[i] - f[j]) ** 2).sum(1).mean() / dim)
        out[name] = {"twin": twin, "same_person": pairs, "ratio": twin / pairs if pairs > 0 else float("nan")}
    return out


def twin_silhouettes(labels: np.ndarray, own: dict[str, np.ndarray], moved: dict[str, np.ndarray], shuffles: int = 30, seed: int = 0) -> dict[str, dict[str, float]]:
    """{subspace: silhouettes by a two-class factor's ``labels`` (N,) of 0 and 1, whose twins
    (``moved``) have the other class}: "set" (the images as they are), "shuffled_mean",
    "shuffled_sd", "shuffled_max" (``labels`` permuted ``shuffles`` times), "at_0" and "at_1"
    (every image encoded at that class: its own feature where its label is it, its twin's where
    not; labelled as the set), "with_twins" (images and twins together, each with its class)."""
    from sklearn.metrics import silhouette_score

    labels = np.asarray(labels)
    if not set(np.unique(labels)) <= {0, 1} or len(np.unique(labels)) < 2:
        raise UserError(f"--silhouette needs a factor of two classes, both in the set; its labels hold {sorted(np.unique(labels).tolist())}")
    rng = np.random.default_rng(seed)
    permuted = [rng.permutation(labels) for _ in range(shuffles)]
    at = {c: (labels == c)[:, None] for c in (0, 1)}
    out = {}
    for name, f in own.items():
        g = moved[name]
        null = [silhouette_score(f, p) for p in permuted]
        out[name] = {
            "set": float(silhouette_score(f, labels)),
            "shuffled_mean": float(np.mean(null)) if null else float("nan"),
            "shuffled_sd": float(np.std(null)) if null else float("nan"),
            "shuffled_max": float(np.max(null)) if null else float("nan"),
            "at_0": float(silhouette_score(np.where(at[0], f, g), labels)),
            "at_1": float(silhouette_score(np.where(at[1], f, g), labels)),
            "with_twins": float(silhouette_score(np.concatenate([f, g]), np.concatenate([labels, 1 - labels]))),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a UFE run directory (config.yaml, description.json, weights.safetensors)")
    parser.add_argument("--factor", default="pose", help=f"the factor the twins change: {', '.join(sorted(TWIN_FACTORS))}")
    parser.add_argument("--split", default="test", choices=("test", "train"), help="held-out people (test) or the training people")
    parser.add_argument("--people", type=int, default=0, help="only the set's first PEOPLE people (0 = all)")
    parser.add_argument("--silhouette", action="store_true", help="also each feature's silhouette by the factor (two classes): the set, shuffled, encoded at one class, with its twins")
    parser.add_argument("--shuffles", type=int, default=30, help="with --silhouette: how many shuffles of the labels")
    args = parser.parse_args()
    if args.shuffles < 0:
        parser.error(f"--shuffles {args.shuffles}: give 0 or more")
    try:
        data, own, moved = encode_with_twins(args.run, args.factor, args.split, args.people)
        sil = twin_silhouettes(data.labels[TWIN_FACTORS[args.factor]].numpy(), own, moved, args.shuffles) if args.silhouette else None
    except UserError as e:
        parser.error(str(e))
    print(f"{args.factor} twins of the {args.split} set: mean squared distance / dimension, image to twin and between two images of one person")
    for name, r in twin_distances(data, own, moved).items():
        print(f"  {name:10s}: twin {r['twin']:.4f}   same person {r['same_person']:.4f}   ratio {r['ratio']:.3f}")
    if sil:
        print(f"silhouette by {args.factor}: the set (its labels shuffled {args.shuffles} times: mean, sd, largest); every image encoded at class 0 / class 1; the set with its twins")
        for name, r in sil.items():
            print(f"  {name:10s}: set {r['set']:+.4f}   shuffled {r['shuffled_mean']:+.4f} sd {r['shuffled_sd']:.4f} max {r['shuffled_max']:+.4f}"
                  f"   at 0 {r['at_0']:+.4f}   at 1 {r['at_1']:+.4f}   with twins {r['with_twins']:+.4f}")


if __name__ == "__main__":
    main()
