"""A UFE run's weights at its last checkpoint, as a run folder every reader of finished runs takes
(``load_ufe``: ``facefactors ufe experiment ...``, ``scripts/ufe_others_person.py``,
``scripts/ufe_twin_distance.py``): for reading a run halfway, while it trains.

    python scripts/ufe_checkpoint_weights.py runs/X runs/X-step3500

``checkpoints/last.ckpt`` holds the whole trainer state (written every
``trainer.checkpoint_every_n_steps``); it is loaded with ``weights_only=True``, so it can never
execute code. The model's tensors go to ``OUT/weights.safetensors`` (written atomically), beside
copies of the run's ``config.yaml`` and ``description.json``. The pose feature's idle units are
pinned when training ends (``model.pin_idle_std``), so a halfway model has them unpinned.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from facefactors.train.common import RunDir
from facefactors.utils.errors import UserError
from facefactors.utils.io import save_weights

MODEL_PREFIX = "model."  # the UFE LightningModule keeps the model as ``self.model``


def checkpoint_weights(run_dir: str | Path, out: str | Path) -> int:
    """Write ``out`` as a run folder with ``run_dir``'s last checkpoint's model; returns its step."""
    run = RunDir(Path(run_dir))
    if not run.has_checkpoint():
        raise UserError(f"{run.last_checkpoint}: no checkpoint; a run writes one every trainer.checkpoint_every_n_steps steps")
    try:
        state = torch.load(run.last_checkpoint, map_location="cpu", weights_only=True)
        tensors = {k[len(MODEL_PREFIX) :]: v.contiguous() for k, v in state["state_dict"].items() if k.startswith(MODEL_PREFIX)}
    except Exception as e:  # noqa: BLE001 - a damaged or foreign file: one line, not a traceback
        raise UserError(f"{run.last_checkpoint}: not a readable training checkpoint ({type(e).__name__}); let the run write the next one") from None
    if not tensors:
        raise UserError(f"{run.last_checkpoint}: holds no model weights ('{MODEL_PREFIX}*'); is this a UFE run?")
    missing = [f for f in ("config.yaml", "description.json") if not (run.path / f).is_file()]
    if missing:
        raise UserError(f"{run.path}: no {', '.join(missing)}; this is not a UFE run folder")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_weights(out / "weights.safetensors", tensors)
    for f in ("config.yaml", "description.json"):
        shutil.copyfile(run.path / f, out / f)
    return int(state.get("global_step", -1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a UFE run folder with checkpoints/last.ckpt")
    parser.add_argument("out", help="the run folder to write (weights.safetensors, config.yaml, description.json)")
    args = parser.parse_args()
    try:
        step = checkpoint_weights(args.run, args.out)
    except UserError as e:
        parser.error(str(e))
    print(f"{args.out}: the model of {args.run} at step {step}")


if __name__ == "__main__":
    main()
