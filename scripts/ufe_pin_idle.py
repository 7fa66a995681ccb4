"""Pin a trained UFE's idle units and evaluate it again: a new run directory whose features
have every coordinate that hardly moves over the training images made exactly constant
(``pin_idle_units`` in train/ufe.py; not in the paper).

    python scripts/ufe_pin_idle.py runs/X --out runs/X-pinned            # units with std <= 1e-3
    python scripts/ufe_pin_idle.py runs/X --out runs/X-pinned --max-std 1e-2 --images 4000

The spread is measured on IMAGES random training images of the run's own world set (cached like
training's). OUT gets the run's config.yaml and description.json, the pinned
weights.safetensors, and, on the held-out set as `facefactors ufe train` writes them,
features.npz, the two matrices (figures and metrics.json: "held_out", "held_out_matrices") and
"pinned" ({subspace: coordinates}). Every `facefactors ufe experiment ... --run OUT` reads it as
a run (the user study, the composites).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from facefactors.config import load_saved_config
from facefactors.train.common import RunDir
from facefactors.train.ufe import UFETrainConfig, load_ufe, pin_idle_units
from facefactors.train.ufe_data import render_world_set, world_a_config
from facefactors.utils.errors import UserError
from facefactors.utils.io import save_module


def pin_run(run: str | Path, out: str | Path, max_std: float = 1e-3, images: int = 2000, progress: bool = True) -> dict:
    """Pin ``run``'s idle units into the new run directory ``out``; returns its metrics."""
    from facefactors.experiments.ufe import evaluate_matrices, held_out_metrics

    run, out = Path(run), Path(out)
    if max_std <= 0:
        raise UserError(f"--max-std {max_std}: must be > 0 (a coordinate's standard deviation over the training images)")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: exists and is not empty; choose another --out (the pinned run is written afresh)")
    cfg = load_saved_config(UFETrainConfig, run / "config.yaml")
    model = load_ufe(run)
    d = cfg.data
    wcfg = world_a_config(d, cfg.model.image_size)
    train = render_world_set(wcfg, "train", d.train_identities, d.images_per_identity, d.cache, progress)
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[: max(2, images)]
    batches = (train.batch(pick[s : s + 250])["image"] for s in range(0, len(pick), 250))
    pinned = pin_idle_units(model, batches, max_std)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "description.json"):
        shutil.copyfile(run / name, out / name)
    save_module(out / "weights.safetensors", model, metadata={"class": type(model).__name__, "pinned_from": str(run)})
    test = render_world_set(wcfg, "test", d.test_identities, d.test_images_per_identity, d.cache, progress)
    res = evaluate_matrices(model, test, out, tsne=False)
    metrics = {**held_out_metrics(res), "pinned": pinned, "pinned_from": str(run), "pinned_max_std": max_std}
    RunDir(out).update_metrics(metrics)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a UFE run directory (config.yaml, description.json, weights.safetensors)")
    parser.add_argument("--out", required=True, help="the new run directory for the pinned model")
    parser.add_argument("--max-std", type=float, default=1e-3, help="pin coordinates whose standard deviation over the training images is at most this")
    parser.add_argument("--images", type=int, default=2000, help="training images the spread is measured on")
    args = parser.parse_args()
    try:
        metrics = pin_run(args.run, args.out, args.max_std, args.images)
    except UserError as e:
        parser.error(str(e))
    pinned = metrics["pinned"]
    print("pinned:", ", ".join(f"{name} {coords}" for name, coords in pinned.items()) or "no unit is that still")
    t = metrics["held_out"]
    over = t.get("weak_offdiag_over_limit", {})
    print(f"held-out: {len(over)} off-diagonal weak entries over the limit ({', '.join(f'{k} {v:.2f}x' for k, v in over.items())}); "
          f"largest off-diagonal silhouette {t['silhouette_offdiag_max']:+.4f}")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
