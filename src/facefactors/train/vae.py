"""Training recipe of the VAE family (VAE, β-VAE, β-TCVAE, FactorVAE, conditional VAE).

One LightningModule with manual optimisation: one Adam step on the VAE per batch and, for
FactorVAE, one Adam step on its discriminator (Kim & Mnih 2018, Algorithm 2: the discriminator
sees q(z) samples from one half of the batch and ``permute_dims`` of the other half). The
objective is ``models.vae_losses.vae_objective``. Besides the shared run directory
(``train/common.py``) a run writes the study's loss curves (paper 004, Figs. 6-8: reconstruction,
KL and total loss) to ``loss_curves.png`` and TensorBoard, reconstructions and random samples to
``samples/``, its data description to ``description.json`` and posterior means of the training
set to ``features.npz`` (the ``codes`` feature read by ``facefactors evaluate``).
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, Dataset

from facefactors.config import load_saved_config
from facefactors.data.collate import collate
from facefactors.data.description import DatasetDescription
from facefactors.edit.traversal import encode_dataset, make_grid, save_png
from facefactors.models.vae import (
    MODEL_KINDS,
    VAE,
    FactorDiscriminator,
    VAEModelConfig,
    build_vae,
    check_res_blocks,
    permute_dims,
)
from facefactors.models.vae_losses import (
    LossConfig,
    check_gradient_weight,
    discriminator_loss,
    resolve_beta,
    vae_objective,
)
from facefactors.train.common import (
    RunDir,
    TrainerConfig,
    adam,
    build_trainer,
    config_hparams,
    fit,
    prepare_run,
)
from facefactors.train.vae_data import DataConfig, build_dataset, collate_batches
from facefactors.utils.device import resolve_device
from facefactors.utils.errors import UserError
from facefactors.utils.io import atomic_write_json, load_module


@dataclass
class OptimConfig:
    lr: float = 1e-3  # Adam learning rate of the VAE
    betas: tuple[float, float] = (0.9, 0.999)
    disc_lr: float = 1e-4  # FactorVAE discriminator (Kim & Mnih: 1e-4, betas 0.5, 0.9)
    disc_betas: tuple[float, float] = (0.5, 0.9)


@dataclass
class VAEConfig:
    model: VAEModelConfig = field(default_factory=VAEModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


LOGGED = ("loss", "recon", "kl", "detail", "mi", "tc", "dwkl", "disc_loss", "disc_acc", "beta_weight")


class VAERecipe(L.LightningModule):
    """The VAE family's training step (see module docstring)."""

    def __init__(
        self,
        cfg: VAEConfig,  # the whole run config
        description: DatasetDescription | None = None,  # sizes a conditional VAE's label inputs
        dataset_size: int = 0,  # N of the β-TCVAE estimators
    ):
        super().__init__()
        self.save_hyperparameters({"cfg": config_hparams(cfg)})
        self.cfg = cfg
        self.model = build_vae(cfg.model, description)
        self.kind = cfg.model.kind
        self.discriminator = FactorDiscriminator(cfg.model.latent_dim, cfg.model.disc_hidden, cfg.model.disc_layers) if self.kind == "factor_vae" else None
        self.dataset_size = cfg.loss.dataset_size or dataset_size
        self.automatic_optimization = False
        # Lightning counts every optimizer.step() as a global step; FactorVAE takes two per batch.
        self.steps_per_batch = 2 if self.discriminator is not None else 1
        self.log_every = max(1, cfg.trainer.log_every_n_steps)

    @property
    def batch_step(self) -> int:
        return self.global_step // self.steps_per_batch

    def configure_optimizers(self):
        o = self.cfg.optim
        opts = [adam(self.model.parameters(), o.lr, o.betas)]
        if self.discriminator is not None:
            opts.append(adam(self.discriminator.parameters(), o.disc_lr, o.disc_betas))
        return opts

    def training_step(self, batch: dict, batch_idx: int) -> dict:
        x = batch["image"]  # (B, 3, H, W) in [0, 1]
        labels = batch.get("labels") if self.model.is_conditional else None
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        out = self.model(x, labels)
        d_logits = self.discriminator(out.z) if self.discriminator is not None else None
        parts = vae_objective(
            self.kind, out.logits, x, out.mu, out.logvar, out.z, self.cfg.loss,
            step=self.batch_step, total_steps=self.cfg.trainer.max_steps, dataset_size=self.dataset_size, d_logits=d_logits,
        )
        opts[0].zero_grad()
        self.manual_backward(parts["loss"])
        opts[0].step()
        if self.discriminator is not None:
            half = x.shape[0] // 2
            z = out.z.detach()
            logits_joint = self.discriminator(z[:half])  # samples of q(z)
            logits_perm = self.discriminator(permute_dims(z[half:]))  # samples of prod_j q(z_j)
            d_loss = discriminator_loss(logits_joint, logits_perm)
            opts[1].zero_grad()  # also drops the gradient the VAE loss sent through D
            self.manual_backward(d_loss)
            opts[1].step()
            acc = 0.5 * ((logits_joint.argmax(1) == 0).float().mean() + (logits_perm.argmax(1) == 1).float().mean())
            parts.update(disc_loss=d_loss.detach(), disc_acc=acc)
        # Log only on the steps LossCurves records (and the first): self.log's bookkeeping and the
        # float() syncs are a visible share of a small network's step (experiments/vae_pythae.py).
        done = self.batch_step  # the optimizer steps above already counted this batch
        if done % self.log_every != 0 and done != 1:
            return None
        logged = {k: float(v.detach()) for k, v in parts.items() if k in LOGGED}
        # Straight to TensorBoard, against the batch step: self.log costs ~1 ms a value in
        # Lightning's result collection, more than the write itself. Only the bar's loss goes through it.
        if self.logger is not None:
            self.logger.log_metrics({f"train/{k}": v for k, v in logged.items()}, step=done)
        self.log("loss", logged["loss"], prog_bar=True, on_step=True, on_epoch=False, logger=False, batch_size=x.shape[0])
        return {"loss": parts["loss"].detach(), "logged": logged}


class LossCurves(Callback):
    """Loss history, kept in ``loss_history.json`` across resumes (``finish_run`` plots it)."""

    FILE = "loss_history.json"

    def __init__(self, run: RunDir, every: int):
        self.run = run
        self.every = max(1, every)
        self.path = run.path / self.FILE
        self.history: list[dict] = json.loads(self.path.read_text()) if self.path.is_file() else []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = pl_module.batch_step
        if outputs and "logged" in outputs and (step % self.every == 0 or step == 1):
            self.history = [h for h in self.history if h["step"] < step]  # a resumed run overwrites the tail
            self.history.append({"step": step, **outputs["logged"]})

    def write(self) -> None:
        atomic_write_json(self.path, self.history)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        # The history is what a resume needs. The PNG is drawn once, by finish_run after the
        # training loop: matplotlib's first plot in a process takes ~0.8 s on one CPU thread.
        if trainer.is_global_zero:
            self.write()

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.write()


def plot_loss_curves(history: list[dict], path: Path, title: str = "") -> None:
    """Reconstruction, KL and total loss against step, three panels (paper 004, Figs. 6-8)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, key, name in zip(axes, ("recon", "kl", "loss"), ("reconstruction loss", "KL divergence", "total loss")):
        ax.plot(steps, [h.get(key, np.nan) for h in history])
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("nats / image")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


class SampleImages(Callback):
    """Reconstructions of a fixed batch (top: input, bottom: reconstruction) and random samples."""

    def __init__(self, run: RunDir, batch: dict, every: int):
        self.run = run
        self.batch = batch
        self.every = max(1, every)

    @torch.no_grad()
    def write(self, pl_module, tag: str) -> None:
        model: VAE = pl_module.model
        was_training = model.training
        model.eval()
        x = self.batch["image"].to(pl_module.device)
        labels = self.batch["labels"] if model.is_conditional else None
        rec = model.reconstruct(x, labels)
        save_png(make_grid(torch.cat([x, rec]), nrow=len(x)), self.run.samples / f"{tag}_reconstructions.png")
        gen = torch.Generator().manual_seed(0)
        save_png(make_grid(model.sample(len(x) * 2, labels={k: torch.cat([v, v]) for k, v in labels.items()} if labels else None, generator=gen), nrow=len(x)), self.run.samples / f"{tag}_samples.png")
        model.train(was_training)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = pl_module.batch_step
        if trainer.is_global_zero and step % self.every == 0:
            self.write(pl_module, f"step{step:06d}")

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.write(pl_module, "final")


def _dataset_labels(dataset: Dataset, limit: int = 4096) -> dict[str, torch.Tensor]:
    """Labels of (up to ``limit``) items, for the conditional VAE's standardisation statistics."""
    n = min(len(dataset), limit)
    items = [dataset[i]["labels"] for i in range(n)]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]} if items and items[0] else {}


def make_loader(dataset: Dataset, batch_size: int, num_workers: int = 0, shuffle: bool = True, seed: int = 0) -> DataLoader:
    if len(dataset) < batch_size:
        raise UserError(f"the data set has {len(dataset)} images, fewer than trainer.batch_size={batch_size}; lower the batch size or add images")
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=shuffle, num_workers=num_workers, collate_fn=collate_batches, generator=gen, persistent_workers=num_workers > 0)


def check_config(cfg: VAEConfig) -> None:
    """Reject bad option values before any file is written or data rendered."""
    if cfg.model.kind not in MODEL_KINDS:
        raise UserError(f"model.kind={cfg.model.kind!r} is not one of {list(MODEL_KINDS)}")
    resolve_beta(cfg.model.kind, cfg.loss)
    choices = {"reconstruction": ("bernoulli", "gaussian"), "anneal": ("none", "capacity", "cyclical"), "tc_estimator": ("mss", "mws")}
    for name, allowed in choices.items():
        if getattr(cfg.loss, name) not in allowed:
            raise UserError(f"loss.{name}={getattr(cfg.loss, name)!r} is not one of {list(allowed)}")
    if cfg.loss.anneal == "capacity" and cfg.model.kind == "beta_tcvae":
        raise UserError("loss.anneal=capacity controls the KL of beta_vae/vae/cvae/factor_vae; β-TCVAE has no single KL term (use anneal=cyclical)")
    if cfg.model.kind == "cvae" and not cfg.model.condition:
        raise UserError("model.kind=cvae needs model.condition, e.g. --set model.condition=[expression,eyeglasses]")
    check_gradient_weight(cfg.loss.gradient_weight)
    check_res_blocks(cfg.model.decoder_res_blocks, cfg.model.channels)
    if cfg.model.kind == "factor_vae" and cfg.trainer.batch_size < 4:
        raise UserError("FactorVAE splits each batch in two for its discriminator; use trainer.batch_size >= 4")


def train(cfg: VAEConfig, out: str | Path, overwrite: bool = False, dataset: Dataset | None = None) -> RunDir:
    """Train (or resume) a VAE-family run in ``out``; returns its run directory."""
    check_config(cfg)
    run, resuming = prepare_run(out, cfg, overwrite=overwrite)
    if dataset is None:
        dataset = build_dataset(cfg.data, cfg.model.image_size, progress=cfg.trainer.progress)
    description: DatasetDescription = dataset.description
    description.save(run.path / "description.json")
    # Seed before the networks are built: their initial weights would otherwise depend on whatever
    # drew random numbers earlier in the process (another variant's training, pythae's rounds),
    # so the same config gave different models (build_trainer seeds again, for the training steps).
    torch.manual_seed(cfg.trainer.seed)
    recipe = VAERecipe(cfg, description, dataset_size=len(dataset))
    if recipe.model.conditioner is not None and not resuming:
        recipe.model.conditioner.fit_statistics(_dataset_labels(dataset))
    loader = make_loader(dataset, cfg.trainer.batch_size, cfg.trainer.num_workers, seed=cfg.trainer.seed)
    fixed = collate([dataset[i] for i in range(min(8, len(dataset)))])
    # Lightning's step budget counts optimizer steps; the config counts batches.
    tcfg = dataclasses.replace(
        cfg.trainer,
        max_steps=cfg.trainer.max_steps * recipe.steps_per_batch,
        checkpoint_every_n_steps=cfg.trainer.checkpoint_every_n_steps * recipe.steps_per_batch,
    )
    callbacks = [LossCurves(run, cfg.trainer.log_every_n_steps), SampleImages(run, fixed, cfg.trainer.sample_every_n_steps)]
    trainer = build_trainer(tcfg, run, callbacks)
    start = time.perf_counter()
    with warnings.catch_warnings():
        # The checkpoint holds the state after the step's update, which is what a resume needs.
        warnings.filterwarnings("ignore", message=".*manual optimization and every_n_train_steps.*")
        fit(trainer, recipe, run, train_dataloaders=loader)
    wall = time.perf_counter() - start
    if resuming and run.metrics.is_file():
        # A resumed run adds this session's time to the earlier sessions' (a finished run adds ~0).
        wall += float(json.loads(run.metrics.read_text()).get("train_wall_s", 0.0))
    if trainer.is_global_zero:
        finish_run(run, recipe.model, dataset, cfg, wall)
    return run


@torch.no_grad()
def finish_run(run: RunDir, model: VAE, dataset: Dataset, cfg: VAEConfig, wall_s: float, max_items: int = 4096) -> dict:
    """Reconstruction error and KL on (up to ``max_items`` of) the training set, features.npz,
    and the loss curves as PNG (paper 004, Figs. 6-8)."""
    history = run.path / LossCurves.FILE
    if history.is_file():
        plot_loss_curves(json.loads(history.read_text()), run.path / "loss_curves.png")
    model.eval()
    codes, labels, recon, kl = encode_dataset(model, dataset, batch_size=256, max_items=max_items, reconstruction=cfg.loss.reconstruction, sigma=cfg.loss.gaussian_sigma)
    description = dataset.description
    arrays = {"features/codes": codes, **{f"labels/{k}": v for k, v in labels.items()}, "description": np.array(json.dumps(description.to_dict()))}
    np.savez_compressed(run.features, **arrays)
    return run.update_metrics({"kind": cfg.model.kind, "reconstruction_nats": recon, "kl_nats": kl, "train_wall_s": round(wall_s, 2), "items_evaluated": int(len(codes))})


def load_run(run_dir: str | Path, device: str = "auto") -> tuple[VAE, VAEConfig, DatasetDescription | None]:
    """A trained VAE from its run directory (config.yaml + description.json + weights.safetensors)."""
    run = RunDir(Path(run_dir))
    if not run.path.is_dir():
        raise UserError(f"{run.path}: no such run directory; train one with `facefactors vae train --out {run.path}`")
    cfg = load_saved_config(VAEConfig, run.config)
    desc_path = run.path / "description.json"
    description = DatasetDescription.load(desc_path) if desc_path.is_file() else None
    model = build_vae(cfg.model, description)
    load_module(run.weights, model)
    return model.to(resolve_device(device)).eval(), cfg, description
