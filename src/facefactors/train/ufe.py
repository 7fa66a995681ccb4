"""Lightning recipe of the Universal Face Encoder (Banerjee et al., sec. 3 eq. 6; sec. 4.2).

One optimiser (Adam) over E, ph, ph_oth and D; the loss is L_full of eq. 6 with the weights
of :class:`~facefactors.train.ufe_losses.UFELossConfig` and the L_dis schedule (warm-up, or
cyclic annealing for multi-data-set training). The data come from
:mod:`facefactors.train.ufe_data` (world sets built by :mod:`facefactors.experiments.ufe`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import lightning as L
import torch

from facefactors.config import load_saved_config
from facefactors.data.description import DatasetDescription
from facefactors.models.ufe import OTHERS, UFE, UFEConfig, attributes_from_description
from facefactors.train.common import (
    RunDir,
    TrainerConfig,
    adam,
    build_trainer,
    check_schedule,
    fit,
    is_logger_step,
    late_decay_scheduler,
    prepare_run,
)
from facefactors.train.perceptual import AUTO
from facefactors.train.ufe_data import TWIN_FACTORS
from facefactors.train.ufe_losses import (
    PERCEPTUAL_TERMS,
    FeatureHistory,
    UFELossConfig,
    dis_weight,
    rec_to_encoder,
    ufe_losses,
    uses_perceptual_net,
)
from facefactors.utils.errors import UserError
from facefactors.utils.io import load_module, save_module


@dataclass
class UFEDataConfig:
    world_seed: int = 0  # seed of the face world
    train_identities: int = 200  # identities rendered for training (world A)
    images_per_identity: int = 16  # images per training identity
    test_identities: int = 30  # held-out identities for evaluation
    test_images_per_identity: int = 12
    yaw_domains: list[float] = field(default_factory=lambda: [0.0, 30.0])  # pose domains (sec. 4.1: 0 and 30 degrees)
    nir_probability: float = 0.3  # share of NIR-like camera images, mixed within batches
    zoom: float = 1.0  # framing (WorldConfig.zoom): 1.5 keeps the central two thirds, the face bigger
    identities_per_batch: int = 8  # k of the k x m batches (positive identity pairs)
    images_per_batch_identity: int = 4  # m
    labelled: list[str] = field(default_factory=lambda: ["identity", "expression", "lighting", "pose"])  # world A labels
    second_set: str = ""  # "" or "world_b": alternate batches with a label-disjoint set (sec. 4.7)
    second_labelled: list[str] = field(default_factory=lambda: ["age", "gender", "eyeglasses"])  # world B labels
    cache: str = "runs/cache"  # rendered sets are cached here (keyed by the data config); "" = no cache
    # factors (pose, expression, lighting, identity, unseen_identity, face, person; none by default): world A's training images
    # come with one twin per factor, each differing in that factor alone (render_twins), for L_twin
    # (loss.twin; not in the paper). On the command line: --set data.twins=pose,identity
    twins: list[str] = field(default_factory=list)


@dataclass
class OptimConfig:
    lr: float = 1e-3  # Adam (the paper: 1e-4 for ~100 epochs; we train far fewer steps)
    beta1: float = 0.9
    beta2: float = 0.99
    # constant | cosine: the rate held until decay_start * trainer.max_steps, then half a cosine
    # down to lr * final_lr_scale at the last step (train/common.py late_decay_factor)
    schedule: str = "constant"
    decay_start: float = 0.5
    final_lr_scale: float = 0.01


@dataclass
class UFETrainConfig:
    model: UFEConfig = field(default_factory=UFEConfig)
    loss: UFELossConfig = field(default_factory=UFELossConfig)
    data: UFEDataConfig = field(default_factory=UFEDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


def check_loss_options(loss: UFELossConfig) -> None:
    """A clear error for counts out of range and for switches that need the feature history
    (or the perceptual network) but were given none (they would otherwise do nothing, silently)."""
    if loss.dis_pairs < 0 or loss.dis_every < 1:
        raise UserError(f"loss.dis_pairs ({loss.dis_pairs}) must be >= 0 (0 = every pair of the batch) and loss.dis_every ({loss.dis_every}) >= 1")
    if loss.history < 0 or loss.whiten_eps < 0 or loss.whiten_std_floor < 0:
        raise UserError(f"loss.history ({loss.history}), loss.whiten_eps ({loss.whiten_eps}) and loss.whiten_std_floor ({loss.whiten_std_floor}) must be >= 0")
    for option in ("con_weights", "con_positive_weights", "independence_weights", "independence_pair_weights", "independence_unwhitened_pairs", "twin_factor_weights"):
        negative = {k: v for k, v in getattr(loss, option).items() if not v >= 0}
        if negative:
            raise UserError(f"loss.{option} has factors below 0 ({negative}); use 0 to switch an attribute's term off")
    for option in PERCEPTUAL_TERMS.values():
        if getattr(loss, option) < 0:
            raise UserError(f"loss.{option} ({getattr(loss, option)}) must be >= 0 (0 = off)")
    off = f"set {', '.join(f'loss.{option}' for option in PERCEPTUAL_TERMS.values())} to 0"
    if uses_perceptual_net(loss) and not loss.perceptual_net:
        raise UserError("loss.perceptual > 0 needs loss.perceptual_net, a rater run directory: train one with "
                        f"`facefactors ufe rater --set data.zoom=ZOOM --set trainer.seed=1 --out DIR`, set loss.perceptual_net=auto, or {off}")
    if uses_perceptual_net(loss) and loss.perceptual_net != AUTO and not Path(loss.perceptual_net).is_dir():  # AUTO: ensure_perceptual_net makes it
        raise UserError(f"{loss.perceptual_net}: loss.perceptual_net is no rater run directory; train one with "
                        f"`facefactors ufe rater --set data.zoom=ZOOM --set trainer.seed=1 --out {loss.perceptual_net}`, or {off}")
    outside = {k: v for k, v in loss.twin_whiten_strength.items() if not 0 <= v <= 1}
    if outside:
        raise UserError(f"loss.twin_whiten_strength has strengths outside [0, 1] ({outside}); 1 whitens fully, 0 keeps the plain distance")
    wants = [name for name, on in (("loss.independence_whiten", loss.independence_whiten and loss.independence > 0), ("loss.adversary_fit", loss.adversary_fit),
                                   ("loss.twin_whiten", bool(loss.twin_whiten) and loss.twin > 0)) if on]
    if wants and loss.history == 0:
        verb = "needs" if len(wants) == 1 else "need"
        raise UserError(f"{' and '.join(wants)} {verb} recent batches: set --set loss.history=16 (the presets' value), or switch it off")


def check_pinning(model: UFEConfig) -> None:
    if model.pin_idle_std < 0:
        raise UserError(f"model.pin_idle_std ({model.pin_idle_std}) must be >= 0 (0 = off)")
    if model.pin_idle_std > 0 and model.feature_norm:
        raise UserError("model.pin_idle_std needs model.feature_norm off: the batch norm after the dense layer would re-scale a pinned unit")


def check_train_config(cfg: UFETrainConfig) -> None:
    """Every check the config alone allows: the commands call it before minutes of rendering,
    train_ufe again once ensure_perceptual_net has resolved loss.perceptual_net=auto."""
    check_loss_options(cfg.loss)
    check_twins(cfg)
    check_pinning(cfg.model)
    check_schedule(cfg.optim.schedule, cfg.optim.decay_start, cfg.optim.final_lr_scale)


def check_twins(cfg: UFETrainConfig) -> None:
    """L_twin needs twins to compare, and twins without L_twin would only cost rendering."""
    if cfg.loss.twin < 0:
        raise UserError(f"loss.twin ({cfg.loss.twin}) must be >= 0 (0 = off)")
    if cfg.loss.twin > 0 and not cfg.data.twins:
        raise UserError("loss.twin > 0 needs twins to compare: add --set data.twins=pose (or expression, lighting, identity, unseen_identity, face, person; several with commas), or set loss.twin=0")
    if cfg.data.twins and cfg.loss.twin == 0:
        raise UserError(f"data.twins={','.join(cfg.data.twins)} renders twins that only loss.twin uses: set loss.twin (e.g. 10), or data.twins=''")
    unknown = [f for f in cfg.data.twins if f not in TWIN_FACTORS]
    if unknown or len(set(cfg.data.twins)) < len(cfg.data.twins):
        raise UserError(f"data.twins={','.join(cfg.data.twins)}: each factor once, from {', '.join(TWIN_FACTORS)}")
    unweighted = sorted(set(cfg.loss.twin_factor_weights) - set(cfg.data.twins))
    if unweighted:
        raise UserError(f"loss.twin_factor_weights names {unweighted}, not twin sets of this run (data.twins={','.join(cfg.data.twins)})")


def check_attribute_names(loss: UFELossConfig, attributes: list[str]) -> None:
    """The loss options that name attributes or subspaces name this model's own."""
    for option in ("con_weights", "con_positive_weights", "independence_weights"):
        unknown = sorted(set(getattr(loss, option)) - set(attributes))
        if unknown:
            raise UserError(f"loss.{option} names {unknown}, not attributes of this data set; known: {list(attributes)}")
    subspaces = [*attributes, OTHERS]
    unknown = sorted(set(loss.twin_whiten) - set(subspaces))
    if unknown:
        raise UserError(f"loss.twin_whiten names {unknown}, not subspaces of this model; known: {subspaces}")
    unwhitened = sorted(set(loss.twin_whiten_strength) - set(loss.twin_whiten))
    if unwhitened:
        raise UserError(f"loss.twin_whiten_strength names {unwhitened}, which loss.twin_whiten ({loss.twin_whiten}) does not whiten; add them there or drop them")


class UFERecipe(L.LightningModule):
    """L_full (eq. 6) on batches ``{"image", "labels", "index"}``."""

    def __init__(
        self,
        cfg: UFETrainConfig,  # the whole run config
        description: DatasetDescription,  # attributes and class counts of the training data
        run: RunDir | None = None,  # where sample grids go (None: none written)
    ):
        super().__init__()
        self.cfg = cfg
        self.model = UFE(description, cfg.model)
        self.run = run
        self.generator = torch.Generator().manual_seed(cfg.trainer.seed)
        check_loss_options(cfg.loss)
        check_twins(cfg)
        check_schedule(cfg.optim.schedule, cfg.optim.decay_start, cfg.optim.final_lr_scale)
        check_attribute_names(cfg.loss, self.model.attributes)
        pairs = {f"{x}/{y}" for x in self.model.feature_names for y in self.model.attributes if x != y}
        for option in ("independence_pair_weights", "independence_unwhitened_pairs"):
            unknown = sorted(set(getattr(cfg.loss, option)) - pairs)
            if unknown:
                raise UserError(f"loss.{option} names {unknown}, not terms of L_ind; a term is 'subspace/label' with "
                                f"subspaces {list(self.model.feature_names)} and labels {list(self.model.attributes)}, e.g. others/{self.model.attributes[0]}")
        unknown = sorted(set(cfg.loss.rec_feature_factors) - set(self.model.feature_names))
        if unknown:
            raise UserError(f"loss.rec_feature_factors names {unknown}, not features of this model; known: {list(self.model.feature_names)}")
        self.history = FeatureHistory(cfg.loss.history) if cfg.loss.history > 0 else None
        self.perceptual = None  # a frozen network: in the trainer's checkpoints, not in the UFE's weights
        if uses_perceptual_net(cfg.loss):
            from facefactors.train.perceptual import load_perceptual

            self.perceptual = load_perceptual(cfg.loss.perceptual_net, cfg.data.zoom)
            # Lightning warns of modules in eval mode at the start of fit: this one is meant to be
            warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")

    def loss_config(self, step: int) -> UFELossConfig:
        """The loss weights in effect at ``step``: L_ind is off during its warm-up."""
        if step < self.cfg.loss.independence_warmup_steps:
            return replace(self.cfg.loss, independence=0.0)
        return self.cfg.loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        step = int(self.global_step)
        lam = dis_weight(step, self.cfg.trainer.max_steps, self.cfg.loss)
        if self.cfg.loss.dis_every > 1 and step % self.cfg.loss.dis_every:
            lam = 0.0
        rec_grad = rec_to_encoder(step, self.cfg.loss)
        logging = is_logger_step(step, self.cfg.trainer.log_every_n_steps)
        stats: dict[str, float] | None = {} if logging else None  # diagnostics only the logger reads
        total, terms = ufe_losses(self.model, batch["image"], batch["labels"], self.loss_config(step), lam, self.generator, rec_grad, stats, self.history, self.perceptual,
                                  batch.get("twins"))
        if logging:
            B = batch["image"].shape[0]
            self.log("loss", total, prog_bar=True, batch_size=B)
            self.log("lambda_dis", lam, batch_size=B)
            self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=B)
            for k, v in terms.items():
                self.log(f"loss_{k}", v, prog_bar=k in ("rec", "cls"), batch_size=B)
            for k, v in (stats or {}).items():
                self.log(k, v, batch_size=B)
        every = self.cfg.trainer.sample_every_n_steps
        if self.run is not None and every > 0 and step % every == 0 and self.trainer.is_global_zero:
            self._write_samples(batch["image"][:8], step)
        return total

    @torch.no_grad()
    def _write_samples(self, image: torch.Tensor, step: int) -> None:
        from facefactors.edit.composite import save_grid

        recon = self.model.decode(self.model.encode(image), "const").clamp(0, 1)
        save_grid(torch.stack([image, recon], 0), self.run.samples / f"recon_{step:06d}.png")

    def configure_optimizers(self):
        o = self.cfg.optim
        scale = self.cfg.loss.adversary_lr
        if scale == 1.0:
            opt = adam(self.model.parameters(), o.lr, (o.beta1, o.beta2))
        else:
            heads = [*self.model.others_heads.parameters(), *self.model.cross_heads.parameters()]
            ids = {id(p) for p in heads}
            rest = [p for p in self.model.parameters() if id(p) not in ids]
            opt = adam([{"params": rest}, {"params": heads, "lr": o.lr * scale}], o.lr, (o.beta1, o.beta2))
        if o.schedule == "constant":
            return opt
        return {"optimizer": opt, "lr_scheduler": late_decay_scheduler(opt, self.cfg.trainer.max_steps, o.schedule, o.decay_start, o.final_lr_scale)}


@torch.no_grad()
def pin_idle_units(model: UFE, batches, max_std: float = 1e-3) -> dict[str, list[int]]:
    """Pin the idle units of every subspace: coordinates whose output varies by at most
    ``max_std`` (standard deviation over ``batches``, an iterable of (B, 3, H, W) images, e.g.
    training images) become exactly their mean (``UFEEncoder.pin``). Returns {subspace: coords}.

    Not in the paper. Why: at the standard preset the features are nearly binary codes (std
    0.35-0.5 per coordinate), but a few of the pose feature's units end training unused, their
    dense weights shrunk to ~0.02 against ~3.7, their output moving by ~1e-4. That small motion
    is a projection of the trunk, which knows the person, and the weak classifier of Fig. 2
    standardises every coordinate before reading it: 3-5 such units carry all of pose -> identity
    (docs/results.md, "Pinned idle units"). A constant coordinate carries nothing; the decoder
    sees the same value it saw on average."""
    model.eval()
    total: dict[str, torch.Tensor] = {}
    square: dict[str, torch.Tensor] = {}
    count = 0
    for images in batches:
        for name, f in model.encode(images).items():
            f = f.double()
            total[name] = total.get(name, 0) + f.sum(0)
            square[name] = square.get(name, 0) + (f * f).sum(0)
        count += images.shape[0]
    if count < 2:
        raise UserError(f"pinning idle units needs at least 2 images to measure their spread; got {count}")
    pinned = {}
    for name in total:
        mean = total[name] / count
        std = ((square[name] / count - mean**2).clamp_min(0) * count / (count - 1)).sqrt()
        coords = (std <= max_std).nonzero().flatten().tolist()
        if coords:
            model.encoder.pin(name, coords, mean[coords].float())
            pinned[name] = coords
    return pinned


def train_ufe(cfg: UFETrainConfig, out: str | Path, train_stream, description: DatasetDescription, overwrite: bool = False) -> tuple[RunDir, UFE]:
    """Train (or resume) a UFE run in ``out`` on an endless batch stream; returns the run and model."""
    from facefactors.train.perceptual import ensure_perceptual_net
    from facefactors.train.ufe_data import unbatched_loader

    ensure_perceptual_net(cfg.loss, cfg.data.zoom, cfg.data.cache, cfg.trainer.threads, cfg.trainer.progress)
    check_train_config(cfg)  # before the run directory is written
    check_attribute_names(cfg.loss, attributes_from_description(description, cfg.model.attributes))
    run, _ = prepare_run(out, cfg, overwrite=overwrite)
    description.save(run.path / "description.json")
    recipe = UFERecipe(cfg, description, run)
    trainer = build_trainer(cfg.trainer, run)
    fit(trainer, recipe, run, train_dataloaders=unbatched_loader(train_stream))
    recipe.model.eval()
    if cfg.model.pin_idle_std > 0 and trainer.global_step >= cfg.trainer.max_steps:  # not a run stopped early
        pinned = pin_idle_units(recipe.model, _images(train_stream, PIN_IMAGES), cfg.model.pin_idle_std)
        save_module(run.weights, recipe.model, metadata={"class": type(recipe.model).__name__})
        run.update_metrics({"pinned": pinned})
    return run, recipe.model


PIN_IMAGES = 2000  # training images whose spread decides which units pin_idle_units pins


def _images(stream, count: int):
    """Image batches of an endless batch stream, ``count`` images or a few more."""
    seen = 0
    for batch in stream:
        if seen >= count:
            return
        seen += batch["image"].shape[0]
        yield batch["image"]


def load_ufe(run_dir: str | Path, device: str | torch.device = "cpu") -> UFE:
    """The trained UFE of a run directory (config.yaml + description.json + weights.safetensors)."""
    run = RunDir(Path(run_dir))
    if not run.path.is_dir():
        raise UserError(f"{run.path}: no such run directory; train one with `facefactors ufe train --out {run.path}`")
    cfg = load_saved_config(UFETrainConfig, run.config)
    desc_path = run.path / "description.json"
    if not desc_path.is_file():
        raise UserError(f"{desc_path}: missing; this is not a UFE run directory (train one with `facefactors ufe train`)")
    try:
        description = DatasetDescription.load(desc_path)
    except ValueError as e:
        raise UserError(str(e)) from None
    model = UFE(description, cfg.model)
    load_module(run.weights, model)
    return model.to(device).eval()
