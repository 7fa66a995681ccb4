"""The UFE training step of two versions of the losses, timed in one process, steps interleaved.

Run-to-run timings on a shared VM drift by 10-20%, which hides a change of that size; steps of
the two versions taken in turn, on the same batches, share whatever the machine does. Version A
is the ``train/ufe_losses.py`` of another checkout (e.g. an older commit: ``git worktree add
/tmp/old COMMIT``), version B is this tree's; each gets its own model and optimiser, with the
preset's settings plus the overrides of its side. Prints seconds per step in each phase of the
preset's schedule (before L_ind, L_ind alone, L_ind with L_dis every ``dis_every``-th step).

    python bench/ufe_ab.py --a /tmp/old/src/facefactors/train/ufe_losses.py [--preset quick] [--set-b loss.dis_pairs=16] [--steps 40]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from dataclasses import fields, replace

import torch
from ufe import world_a_description

import facefactors.train.ufe_losses as this_version
from facefactors.config import load_config
from facefactors.models.ufe import UFE
from facefactors.train.common import adam
from facefactors.train.ufe import UFETrainConfig


def load_losses(path: str):
    """Another version of ``ufe_losses.py`` as a module of its own (it imports the rest of facefactors from this tree)."""
    spec = importlib.util.spec_from_file_location("ufe_losses_a", path)
    if not os.path.isfile(path) or spec is None or spec.loader is None:
        sys.exit(f"{path}: no such Python file; give the ufe_losses.py of another checkout")
    module = importlib.util.module_from_spec(spec)
    sys.modules["ufe_losses_a"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", required=True, help="ufe_losses.py of the version to compare against")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--set-a", action="append", default=[], help="config override for version A only")
    ap.add_argument("--set-b", action="append", default=[], help="config override for this tree's version only")
    ap.add_argument("--steps", type=int, default=40, help="steps of each version per phase (the first 4 are not timed)")
    args = ap.parse_args()

    torch.manual_seed(0)
    arms = {}
    for name, module, overrides in (("A", load_losses(args.a), args.set_a), ("B", this_version, args.set_b)):
        cfg = load_config(UFETrainConfig, "ufe", args.preset, overrides)
        model = UFE(world_a_description(cfg.model.image_size), cfg.model)
        if cfg.trainer.channels_last:
            model = model.to(memory_format=torch.channels_last)
        known = {f.name for f in fields(module.UFELossConfig)}  # an older version may lack newer options
        loss = module.UFELossConfig(**{k: v for k, v in vars(cfg.loss).items() if k in known})
        history = module.FeatureHistory(cfg.loss.history) if cfg.loss.history > 0 else None
        arms[name] = (module, model, adam(model.parameters(), 1e-4), loss, history, cfg)

    cfg = arms["B"][5]
    B, size = 32, cfg.model.image_size
    batches = [torch.rand(B, 3, size, size) for _ in range(4)]
    labels = {"identity": torch.arange(B) // 4, "expression": torch.arange(B) % 6, "lighting": torch.arange(B) % 20, "pose": torch.arange(B) % 2}

    def step(name: str, at: int, image: torch.Tensor) -> float:
        module, model, opt, loss, history, cfg = arms[name]
        if at < cfg.loss.independence_warmup_steps:
            loss = replace(loss, independence=0.0)
        dis_lambda = this_version.dis_weight(at, cfg.trainer.max_steps, cfg.loss)
        if cfg.loss.dis_every > 1 and at % cfg.loss.dis_every:
            dis_lambda = 0.0
        start = time.perf_counter()
        total, _ = module.ufe_losses(model, image, labels, loss, dis_lambda, None, cfg.loss.rec_to_encoder, None, history)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        return time.perf_counter() - start

    print(f"preset {args.preset} | threads {torch.get_num_threads()} | A: {args.a} {args.set_a} | B: this tree {args.set_b}")
    starts = [("before L_ind", 0), ("L_ind", cfg.loss.independence_warmup_steps), ("L_ind and L_dis", max(cfg.loss.independence_warmup_steps, cfg.loss.dis_warmup_steps + cfg.loss.dis_ramp_steps))]
    for phase, first in starts:
        times = {"A": [], "B": []}
        for i in range(args.steps):
            for name in ("A", "B") if i % 2 else ("B", "A"):  # alternate which goes first
                seconds = step(name, first + i, batches[i % len(batches)])
                if i >= 4:
                    times[name].append(seconds)
        a, b = (sum(times[k]) / len(times[k]) for k in ("A", "B"))
        print(f"{phase:>16} (from step {first}): A {a:.3f} s/step   B {b:.3f} s/step   B/A {b / a:.3f}")


if __name__ == "__main__":
    main()
