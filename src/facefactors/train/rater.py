"""Training of the independent rater (:mod:`facefactors.models.rater`) on world ground truth.

Cross-entropy per categorical factor (missing labels masked, as in every recipe) plus a
cosine-softmax identity loss on the unit embedding (the normalised-softmax family of face
recognition losses), so held-out identities can be compared by cosine similarity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from facefactors.data.description import DatasetDescription
from facefactors.models.rater import IDENTITY, Rater, RaterConfig
from facefactors.train.common import TrainerConfig, adam, is_logger_step
from facefactors.utils.errors import UserError


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
    from facefactors.config import load_saved_config
    from facefactors.utils.io import load_module

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
        import json

        model.calibration = json.loads(calib.read_text())
    else:
        model.calibration = {}
    return model.to(device).eval()
