"""The independent rater's loss and training (:mod:`facefactors.models.rater`) on world ground truth,
with what a trained rater knows about itself: held-out accuracy and the calibration of
``which_changed`` on real one-factor pairs.

Cross-entropy per categorical factor (missing labels masked, as in every recipe) plus a
cosine-softmax identity loss on the unit embedding (the normalised-softmax family of face
recognition losses), so held-out identities can be compared by cosine similarity.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from facefactors.config import load_config, load_saved_config
from facefactors.data.description import DatasetDescription
from facefactors.models.rater import IDENTITY, Rater, RaterConfig
from facefactors.train.common import (
    TrainerConfig,
    adam,
    build_trainer,
    fit,
    is_logger_step,
    prepare_run,
)
from facefactors.train.ufe_data import (
    FaceTensorSet,
    GroupedBatches,
    class_balance,
    render_world_set,
    unbatched_loader,
)
from facefactors.utils.device import apply_threads
from facefactors.utils.errors import UserError
from facefactors.utils.io import atomic_write_json, load_module


@dataclass
class RaterDataConfig:
    world_seed: int = 0  # seed of the face world
    zoom: float = 1.0  # framing of the world's images (WorldConfig.zoom); the same as the images it will judge
    train_identities: int = 200  # identities rendered for training
    images_per_identity: int = 12
    test_identities: int = 30  # held-out identities (accuracy, calibration)
    test_images_per_identity: int = 8
    identities_per_batch: int = 16
    images_per_batch_identity: int = 4
    cache: str = "runs/cache"  # rendered sets are cached here; "" = no cache


@dataclass
class RaterTrainConfig:
    model: RaterConfig = field(default_factory=RaterConfig)
    data: RaterDataConfig = field(default_factory=RaterDataConfig)
    lr: float = 1e-3  # Adam (peak learning rate of the one-cycle schedule)
    schedule: str = "constant"  # constant | onecycle (warm-up, then cosine decay to ~0 at max_steps)
    warmup: float = 0.15  # onecycle: share of max_steps spent warming up
    identity_weight: float = 1.0  # weight of the identity loss
    blur_probability: float = 0.0  # share of training images given a random Gaussian blur
    blur_max: float = 2.0  # largest blur sigma, pixels of the rater's input
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


def random_blur(image: torch.Tensor, probability: float, sigma_max: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image (B, C, H, W) blurred with probability ``probability`` by a Gaussian of sigma
    uniform in (0, sigma_max] pixels. Meant for raters that judge smooth generated faces: trained
    on sharp renders only, the 32-px rater called a third of VAE reconstructions of faces without
    glasses "with glasses". With blur_probability 0.5 it called two thirds of reconstructions of
    non-smiling faces "smiling" instead, so no preset turns it on (docs/results.md)."""
    from facefactors.world.imaging import blur

    if probability <= 0 or sigma_max <= 0:
        return image
    b = image.shape[0]
    on = torch.rand(b, generator=generator) < probability
    sigma = (1 - torch.rand(b, generator=generator)) * sigma_max  # (0, sigma_max]
    if not on.any():
        return image
    out = image.clone()
    out[on.to(image.device)] = blur(image[on.to(image.device)], sigma[on].to(image.device, image.dtype))
    return out


def rater_loss(model: Rater, image: torch.Tensor, labels: dict[str, torch.Tensor], identity_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    logits, emb = model(image)
    terms = {}
    total = image.new_zeros(())
    for n, z in logits.items():
        y = labels.get(n)
        if y is None:
            continue
        ok = y >= 0
        if ok.any():
            terms[n] = F.cross_entropy(z[ok], y[ok])
            total = total + terms[n]
    y = labels.get(IDENTITY)
    if y is not None and (y >= 0).any():
        ok = y >= 0
        terms[IDENTITY] = F.cross_entropy(model.identity_logits(emb[ok]), y[ok])
        total = total + identity_weight * terms[IDENTITY]
    return total, terms


class RaterRecipe(L.LightningModule):
    def __init__(self, cfg: RaterTrainConfig, description: DatasetDescription):
        super().__init__()
        self.cfg = cfg
        self.model = Rater(description, cfg.model)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        image = random_blur(batch["image"], self.cfg.blur_probability, self.cfg.blur_max)
        total, terms = rater_loss(self.model, image, batch["labels"], self.cfg.identity_weight)
        # Nine self.log calls a step add up next to a small CPU step: log on logger steps only.
        if is_logger_step(self.global_step, self.cfg.trainer.log_every_n_steps):
            B = batch["image"].shape[0]
            self.log("loss", total.detach(), prog_bar=True, batch_size=B)
            for k, v in terms.items():
                self.log(f"loss_{k}", v.detach(), batch_size=B)
        return total

    def configure_optimizers(self):
        opt = adam(self.model.parameters(), self.cfg.lr)
        if self.cfg.schedule == "constant":
            return opt
        if self.cfg.schedule != "onecycle":
            raise UserError(f"schedule={self.cfg.schedule!r} is not one of ['constant', 'onecycle']")
        # One-cycle (Smith & Topin 2019): a short warm-up, then cosine decay to ~0 at max_steps.
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.cfg.lr, total_steps=max(2, self.cfg.trainer.max_steps), pct_start=self.cfg.warmup)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def load_rater(run_dir: str | Path, device: str | torch.device = "cpu") -> Rater:
    """The trained rater of a run directory (written by ``facefactors ufe rater``)."""
    run = Path(run_dir)
    desc = run / "description.json"
    if not desc.is_file():
        raise UserError(f"{desc}: missing; train a rater with `facefactors ufe rater --out {run}`")
    try:
        description = DatasetDescription.load(desc)
    except ValueError as e:
        raise UserError(str(e)) from None
    cfg = load_saved_config(RaterTrainConfig, run / "config.yaml")
    model = Rater(description, cfg.model)
    load_module(run / "weights.safetensors", model)
    model.zoom = cfg.data.zoom  # the framing it was trained on, which its inputs should share
    calib = run / "calibration.json"
    if calib.is_file():
        model.calibration = json.loads(calib.read_text())
    else:
        model.calibration = {}
    return model.to(device).eval()


# Fields of FaceParams that each intervention re-draws (one factor, everything else kept).
INTERVENTION_STREAMS = {"expression": "expression", "lighting": "lighting", "pose": "pose", "camera": "camera", "eyeglasses": "eyeglasses"}


def rater_world_config(seed: int, image_size: int, zoom: float = 1.0):
    from facefactors.world.config import WorldConfig

    return WorldConfig(seed=seed, image_size=image_size, zoom=zoom)


def ensure_rater(path: str | Path, preset: str, zoom: float = 1.0, overrides: list[str] | tuple[str, ...] = (), progress: bool = True, image_size: int | None = None) -> Rater:
    """The rater of ``path``, trained there first (``preset`` + ``overrides``, on faces framed at
    ``zoom``) if it is not yet; refuses one trained at another zoom, whose calls would be noise,
    or (given ``image_size``) one that reads another image size than the images it will judge."""
    path = Path(path)
    if not (path / "weights.safetensors").is_file() or not (path / "calibration.json").is_file():
        train_rater(preset, path, [*overrides, f"data.zoom={zoom}"], progress=progress)
    rater = load_rater(path)
    if rater.zoom != zoom:
        raise UserError(f"{path}: the rater was trained on world faces at zoom {rater.zoom}, the faces to judge have data.zoom={zoom}; "
                        f"train one with `facefactors ufe rater --set data.zoom={zoom}` or name another rater folder")
    if image_size is not None and rater.config.image_size != image_size:
        raise UserError(f"{path}: the rater reads {rater.config.image_size}x{rater.config.image_size} images, the faces to judge are "
                        f"{image_size}x{image_size}; train one with `facefactors ufe rater --preset {preset} --set data.zoom={zoom:g}` or name another rater folder")
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
