"""A UFE run's features on images of its own training identities, in the features.npz format that
``scripts/ufe_leak.py`` and ``facefactors evaluate`` read: what the losses achieved on the people
they saw, next to the held-out identities' ``features.npz`` that the train command writes.

    python scripts/ufe_training_features.py runs/X --n 800            # writes runs/X/training_features.npz
    python scripts/ufe_leak.py runs/X/training_features.npz --feature others --label pose --within camera
    python scripts/ufe_training_features.py runs/X --people 40 --per-person 20   # laid out as the held-out set
    python scripts/ufe_compare.py runs/X/training_features.npz runs/X             # its matrices against the held-out ones

A leak (or a silhouette) that differs between the two is one the encoder fits to the people its
losses act on and not to new people: pressing harder on training batches (a larger L_ind
weight) acts where there is less of it. Silhouettes depend on how many images of each person a
sample holds, so compare like with like: ``--people 40 --per-person 20`` is the standard
preset's held-out layout.

The images are ``--n`` drawn at random (``--seed``) from the run's training set (or ``--people``
random people with ``--per-person`` random images each), rendered from
the world with the run's own config.yaml, every factor labelled (also those the run trained
without), so the two files are read alike.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from facefactors.config import load_saved_config
from facefactors.experiments import ufe_eval as ev
from facefactors.train.ufe import UFETrainConfig, load_ufe
from facefactors.train.ufe_data import render_world_set, world_a_config
from facefactors.utils.errors import UserError


def training_features(run: str | Path, n: int = 800, seed: int = 0, out: str | Path | None = None, progress: bool = True, people: int = 0, per_person: int = 20) -> Path:
    """Encode ``n`` random images of ``run``'s training identities, or with ``people`` > 0 that
    many random people with ``per_person`` random images each (the layout of the held-out set,
    so that identity is read from the features alike); returns the written file."""
    run = Path(run)
    cfg = load_saved_config(UFETrainConfig, run / "config.yaml")
    model = load_ufe(run)
    d = cfg.data
    if people and not (2 <= people <= d.train_identities and 1 <= per_person <= d.images_per_identity):
        raise UserError(f"--people {people} --per-person {per_person}: the run trained on {d.train_identities} people with {d.images_per_identity} images each; ask for 2 to {d.train_identities} people and 1 to {d.images_per_identity} images")
    size = d.train_identities * d.images_per_identity
    if not people and not 2 <= n <= size:  # checked before minutes of rendering
        raise UserError(f"--n {n}: the run's training set has {size} images; ask for 2 to {size}")
    train = render_world_set(world_a_config(d, cfg.model.image_size), "train", d.train_identities, d.images_per_identity, d.cache, progress)
    generator = torch.Generator().manual_seed(seed)
    if people:  # image j of the set is person j // images_per_identity's
        chosen = torch.randperm(d.train_identities, generator=generator)[:people]
        idx = torch.cat([p * d.images_per_identity + torch.randperm(d.images_per_identity, generator=generator)[:per_person] for p in chosen.tolist()]).sort().values
    else:
        idx = torch.randperm(len(train), generator=generator)[:n].sort().values
    subset = train.subset(idx)
    return ev.write_features(out or run / "training_features.npz", ev.encode_set(model, subset), subset)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a UFE run directory (config.yaml, description.json, weights.safetensors)")
    parser.add_argument("--n", type=int, default=800, help="images to encode (the standard preset's held-out set has 800)")
    parser.add_argument("--people", type=int, default=0, help="instead of --n: this many random people (the standard held-out set has 40) ...")
    parser.add_argument("--per-person", type=int, default=20, help="... with this many random images each")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="default: RUN/training_features.npz")
    args = parser.parse_args()
    try:
        path = training_features(args.run, args.n, args.seed, args.out, people=args.people, per_person=args.per_person)
    except UserError as e:
        parser.error(str(e))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
