"""Through what does a UFE run's "others" feature know the person? The held-out set rendered again
with the person's hair taken away step by step, encoded by the run, and identity read from each
feature by the weak classifier of Fig. 2.

    python scripts/ufe_others_person.py runs/X

Hair is the one "others" factor the world ties to its person (``FaceWorld.draw_factor``: each
image's volume and length vary around the person's own), and the hair as drawn carries more of
the person: its outline follows the face and the albedo's hairline, its colour the albedo's hair
colour coefficients (``world.surface.hair_regions``, ``world.albedo.hair_colour``). Each row
renders every held-out image with one more of these set to the held-out set's median, every other
draw of the world kept:

* ``as drawn``: the held-out set itself (the row the evaluation reads);
* ``hair style fixed``: volume, length, fringe and parting the same for every image;
* ``+ hairline fixed``: the albedo's hairline coefficient too;
* ``+ hair colour fixed``: the albedo's hair colour coefficients too (greying with age stays);
* ``+ face shape fixed``: the shape coefficients too, so the hair's outline, which follows the
  head, is the same for everyone: people then differ in their face's colours and texture alone.

Identity that "others" still holds once nothing of the hair tells people apart is the encoder's
leak of the face into "others"; what goes away row by row is the hair's. The identity feature's
row is printed for scale (it should keep the person throughout).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from facefactors.config import load_saved_config
from facefactors.experiments import ufe_eval as ev
from facefactors.metrics.subspace import cv_accuracy
from facefactors.train.ufe import UFETrainConfig, load_ufe
from facefactors.train.ufe_data import FaceTensorSet, render_world_set, world_a_config
from facefactors.utils.errors import UserError
from facefactors.world.identity import A
from facefactors.world.world import FaceWorld

# Each row fixes these (field, albedo coefficients or hair columns) on top of the rows before it.
STEPS = {
    "as drawn": [],
    "hair style fixed": [("hair", None)],
    "+ hairline fixed": [("albedo", ("hairline",))],
    "+ hair colour fixed": [("albedo", ("hair_dark", "hair_red"))],
    "+ face shape fixed": [("shape", None)],
}


def fixed_params(params, fixes: list[tuple[str, tuple[str, ...] | None]], reference):
    """``params`` with each fix applied: a whole field (``None``) or the named albedo coefficients
    set to ``reference``'s median over the set (one value for every image)."""
    replaced = {}
    for field, names in fixes:
        value = replaced.get(field, getattr(params, field)).clone()
        ref = getattr(reference, field)
        if names is None:
            value[:] = ref.median(0).values
        else:
            for name in names:
                value[:, A[name]] = ref[:, A[name]].median()
        replaced[field] = value
    return params.replace(**replaced) if replaced else params


def render_steps(run: str | Path, progress: bool = True, chunk: int = 64):
    """(the held-out set, {row: {subspace: (N, D) features}}) of :data:`STEPS`, cumulative."""
    from facefactors.data.progress import progress_bar

    run = Path(run)
    cfg = load_saved_config(UFETrainConfig, run / "config.yaml")
    model = load_ufe(run)
    d = cfg.data
    wcfg = world_a_config(d, cfg.model.image_size)
    data = render_world_set(wcfg, "test", d.test_identities, d.test_images_per_identity, d.cache, progress)
    world = FaceWorld(wcfg)
    everyone = world.sample_params(data.index, "test", identities=data.labels["identity"])
    out, fixes = {}, []
    with progress_bar(progress) as bar:
        for row, more in STEPS.items():
            fixes = [*fixes, *more]
            if not fixes:
                out[row] = ev.encode_set(model, data)
                continue
            task = bar.add_task(f"rendering: {row}", total=len(data))
            images = []
            for s in range(0, len(data), chunk):
                p = everyone.index(slice(s, s + chunk))  # the set's own draw, sampled once above
                images.append((world.render(fixed_params(p, fixes, everyone)).image * 255).round().to(torch.uint8))
                bar.advance(task, len(p))
            out[row] = ev.encode_set(model, FaceTensorSet(torch.cat(images), data.labels, data.description))
    return data, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a UFE run directory (config.yaml, description.json, weights.safetensors)")
    parser.add_argument("--features", default="others,identity", help="comma-separated subspaces to read identity from")
    args = parser.parse_args()
    try:
        data, rows = render_steps(args.run)
        wanted = [f.strip() for f in args.features.split(",") if f.strip()]
        unknown = [f for f in wanted if f not in rows["as drawn"]]
        if unknown:
            raise UserError(f"--features {','.join(unknown)}: the run has no such subspace; known: {', '.join(rows['as drawn'])}")
    except UserError as e:
        parser.error(str(e))
    person = data.labels["identity"].numpy()
    chance = np.bincount(person).max() / len(person)
    print(f"identity read from each feature of {args.run} on the held-out set ({len(person)} images, {len(np.unique(person))} people), x majority chance {chance:.4f}")
    print(f"{'':22s}" + "".join(f"{f:>12s}" for f in wanted))
    for row, feats in rows.items():
        print(f"{row:22s}" + "".join(f"{cv_accuracy(feats[f].astype(np.float64), person)[0] / chance:11.2f}x" for f in wanted))


if __name__ == "__main__":
    main()
