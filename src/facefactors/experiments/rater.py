"""The independent rater: training on world ground truth, calibration on real one-factor pairs,
and the automated user study of the UFE paper (Banerjee et al., sec. 4.6, Fig. 5).

Commands: ``facefactors ufe rater --preset quick --out runs/rater`` trains it; other methods'
experiments load it with :func:`facefactors.models.rater.load_rater`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from facefactors.config import load_config
from facefactors.models.rater import IDENTITY, Rater
from facefactors.train.common import build_trainer, fit, prepare_run
from facefactors.train.rater import RaterRecipe, RaterTrainConfig
from facefactors.train.ufe_data import (
    FaceTensorSet,
    GroupedBatches,
    class_balance,
    render_world_set,
    unbatched_loader,
)
from facefactors.utils.device import apply_threads
from facefactors.utils.io import atomic_write_json

# Fields of FaceParams that each intervention re-draws (one factor, everything else kept).
INTERVENTION_STREAMS = {"expression": "expression", "lighting": "lighting", "pose": "pose", "camera": "camera", "eyeglasses": "eyeglasses"}


def rater_world_config(seed: int, image_size: int, zoom: float = 1.0):
    from facefactors.world.config import WorldConfig

    return WorldConfig(seed=seed, image_size=image_size, zoom=zoom)


def ensure_rater(path: str | Path, preset: str, zoom: float = 1.0, overrides: list[str] | tuple[str, ...] = (), progress: bool = True) -> Rater:
    """The rater of ``path``, trained there first (``preset`` + ``overrides``, on faces framed at
    ``zoom``) if it is not yet; refuses one trained at another zoom, whose calls would be noise."""
    from facefactors.train.rater import load_rater
    from facefactors.utils.errors import UserError

    path = Path(path)
    if not (path / "weights.safetensors").is_file() or not (path / "calibration.json").is_file():
        train_rater(preset, path, [*overrides, f"data.zoom={zoom}"], progress=progress)
    rater = load_rater(path)
    if rater.zoom != zoom:
        raise UserError(f"{path}: the rater was trained on world faces at zoom {rater.zoom}, the faces to judge have data.zoom={zoom}; "
                        f"train one with `facefactors ufe rater --set data.zoom={zoom}` or name another rater folder")
    return rater


def train_rater(preset: str = "quick", out: str | Path = "runs/rater", overrides: list[str] | tuple[str, ...] = (), overwrite: bool = False, progress: bool = True) -> Path:
    """Train the rater, then measure its held-out accuracy and calibrate ``which_changed``."""
    cfg = load_config(RaterTrainConfig, "rater", preset, overrides)
    cfg.trainer.progress = cfg.trainer.progress and progress
    apply_threads(cfg.trainer.threads)  # before rendering the training set
    d = cfg.data
    wcfg = rater_world_config(d.world_seed, cfg.model.image_size, d.zoom)
    train = render_world_set(wcfg, "train", d.train_identities, d.images_per_identity, d.cache, progress)
    test = render_world_set(wcfg, "test", d.test_identities, d.test_images_per_identity, d.cache, progress)
    run, _ = prepare_run(out, cfg, overwrite=overwrite)
    train.description.save(run.path / "description.json")
    recipe = RaterRecipe(cfg, train.description)
    stream = GroupedBatches(train, IDENTITY, d.identities_per_batch, d.images_per_batch_identity, seed=cfg.trainer.seed)
    fit(build_trainer(cfg.trainer, run), recipe, run, train_dataloaders=unbatched_loader(stream))
    model = recipe.model.eval()
    metrics = {"rater_accuracy": rater_accuracy(model, test), "rater_chance": {k: class_balance(test.labels[k].numpy()) for k in model.factors}}
    calib = calibrate(model, wcfg, "test", d.test_identities, n=min(256, 8 * d.test_identities))
    atomic_write_json(run.path / "calibration.json", calib)
    metrics["rater_calibration"] = calib
    run.update_metrics(metrics)
    return run.path


@torch.no_grad()
def rater_accuracy(model: Rater, data: FaceTensorSet, batch_size: int = 128) -> dict[str, float]:
    """Held-out accuracy per head, and identity verification accuracy (same/different person by
    the cosine threshold that is best on these pairs: an optimistic but simple number)."""
    probs: dict[str, list] = {}
    embs = []
    for s in range(0, len(data), batch_size):
        b = data.batch(range(s, min(len(data), s + batch_size)))
        p, e = model.read(b["image"])
        for k, v in p.items():
            probs.setdefault(k, []).append(v)
        embs.append(e)
    out = {}
    for k, v in probs.items():
        y = data.labels[k]
        ok = y >= 0
        out[k] = float((torch.cat(v).argmax(1)[ok] == y[ok]).float().mean())
    e = torch.cat(embs)
    y = data.labels[IDENTITY]
    sim = e @ e.t()
    same = y[:, None] == y[None, :]
    iu = torch.triu_indices(len(y), len(y), 1)
    s, t = sim[iu[0], iu[1]].numpy(), same[iu[0], iu[1]].numpy()
    best = max(float(((s > th) == t).mean()) for th in np.linspace(-1, 1, 81))
    out["identity_verification"] = best
    # Same-person pairs are a few percent of all pairs, so the plain accuracy is near 1 for any
    # embedding; the balanced one (mean of the same- and different-pair accuracies) is not.
    out["identity_verification_balanced"] = verification_balanced(s, t)
    return out


def verification_balanced(similarity: np.ndarray, same: np.ndarray, thresholds: int = 81) -> float:
    """Best balanced accuracy 0.5 * (TPR + TNR) of "same person iff similarity > t" over
    ``thresholds`` values of t in [-1, 1]; 0.5 is chance. NaN if a class has no pairs."""
    s, t = np.asarray(similarity), np.asarray(same, bool)
    if t.all() or not t.any():
        return float("nan")
    return max(0.5 * (float((s[t] > th).mean()) + float((s[~t] <= th).mean())) for th in np.linspace(-1, 1, thresholds))


def intervene(world, params, factor: str, split: str, new_index: torch.Tensor):
    """``params`` with exactly ``factor`` re-drawn from stream index ``new_index`` (B,)."""
    if factor == IDENTITY:
        n = world.config.split_sizes()[split]
        other = (params.identity_label + 1 + new_index % (n - 1)) % n  # always a different person
        fresh = world.sample_params(params_index(params), split, identities=other)
        keep = {"identity", "identity_label", "shape", "albedo", "age_value", "gender_value", "skin_tone", "hair"}
        return params.replace(**{k: getattr(fresh, k) for k in keep if hasattr(fresh, k)})
    ident = world.identity(params.identity)
    return params.replace(**world.draw_factor(INTERVENTION_STREAMS[factor], split, new_index, ident=ident))


def params_index(params) -> torch.Tensor:
    for name in ("sample_index", "index"):
        if hasattr(params, name):
            return getattr(params, name)
    raise AttributeError("FaceParams has no sample index field")


@torch.no_grad()
def calibrate(model: Rater, world_config, split: str, num_identities: int, n: int = 256, factors=(IDENTITY, "expression", "lighting", "pose")) -> dict[str, float]:
    """Mean change score of real pairs that differ in exactly one factor (and of unchanged pairs)."""
    from facefactors.world.world import FaceWorld

    world = FaceWorld(world_config)
    g = torch.Generator().manual_seed(1234)
    idx = torch.randint(10**6, 2 * 10**6, (n,), generator=g)
    base = world.sample_params(idx, split, identities=torch.randint(0, num_identities, (n,), generator=g))
    img = world.render(base).image
    out = {}
    for f in factors:
        other = intervene(world, base, f, split, idx + 7919)
        changed = world.render(other).image
        scores = model.change_scores(img, changed)[f]
        lab = world.labels(base)
        lab2 = world.labels(other)
        differs = lab[f] != lab2[f] if f in lab else torch.ones(n, dtype=torch.bool)
        out[f] = float(scores[differs].mean()) if differs.any() else float(scores.mean())
    return out


def save_config_copy(cfg, path: Path) -> None:
    atomic_write_json(path, dataclasses.asdict(cfg))


def study_summary(truth: list[str], said: list[str], attributes: list[str]) -> dict:
    """Accuracy per swapped attribute (and for the unchanged controls) next to chance."""
    truth_a, said_a = np.array(truth), np.array(said)
    options = len(attributes) + 1  # the attributes and "none"
    per = {}
    for a in [*attributes, "none"]:
        m = truth_a == a
        if m.any():
            per[a] = {"accuracy": float((said_a[m] == a).mean()), "n": int(m.sum()), "chance": 1.0 / options}
    swapped = truth_a != "none"
    return {"per_attribute": per, "overall_swapped": float((said_a[swapped] == truth_a[swapped]).mean()) if swapped.any() else float("nan"), "chance": 1.0 / options, "confusion": _confusion(truth_a, said_a, [*attributes, "none"])}


def _confusion(truth: np.ndarray, said: np.ndarray, names: list[str]) -> dict[str, dict[str, int]]:
    return {t: {s: int(((truth == t) & (said == s)).sum()) for s in names} for t in names}


def write_json(path: Path, obj) -> None:
    atomic_write_json(path, json.loads(json.dumps(obj, default=float)))
