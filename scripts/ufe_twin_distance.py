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


def twin_distances(run: str | Path, factor: str = "pose", split: str = "test", people: int = 0, progress: bool = True) -> dict[str, dict[str, float]]:
    """{subspace: {"twin", "same_person", "ratio"}} on ``split``'s set of the run's config (the
    held-out set for "test", the training set for "train"), its first ``people`` people (0 = all)."""
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
    own = ev.encode_set(model, data)
    moved = ev.encode_set(model, FaceTensorSet(twins, data.labels, data.description))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a UFE run directory (config.yaml, description.json, weights.safetensors)")
    parser.add_argument("--factor", default="pose", help=f"the factor the twins change: {', '.join(sorted(TWIN_FACTORS))}")
    parser.add_argument("--split", default="test", choices=("test", "train"), help="held-out people (test) or the training people")
    parser.add_argument("--people", type=int, default=0, help="only the set's first PEOPLE people (0 = all)")
    args = parser.parse_args()
    try:
        result = twin_distances(args.run, args.factor, args.split, args.people)
    except UserError as e:
        parser.error(str(e))
    print(f"{args.factor} twins of the {args.split} set: mean squared distance / dimension, image to twin and between two images of one person")
    for name, r in result.items():
        print(f"  {name:10s}: twin {r['twin']:.4f}   same person {r['same_person']:.4f}   ratio {r['ratio']:.3f}")


if __name__ == "__main__":
    main()
