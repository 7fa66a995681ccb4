"""Experiments of the VAE family (issue 5), one function per command:

* ``tradeoff``   — VAE (beta 1), β-VAE (beta 2, 5; the study's settings, paper 004 Figs. 6-8),
  β-TCVAE and FactorVAE on the world: reconstruction error vs MIG, DCI, SAP and the FactorVAE
  score against the world's ground truth (``world/ground_truth.py`` sampler).
* ``attributes`` — smile and eyeglasses vectors by latent arithmetic (paper 004, Figs. 9-11),
  judged by the independent rater (``models/rater.py``): the share of non-smiling faces turned
  smiling, and identity-embedding similarity of the edit to its original vs to another person.
* ``pythae``     — side by side with pythae's BetaVAE (same architecture, beta, data, steps).

Each writes ``results.json`` and ``report.md`` into its folder; training runs live in
``<out>/../runs/<variant>`` so experiments share them (a finished run is reused, not retrained).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facefactors.config import load_config
from facefactors.edit.traversal import encode
from facefactors.models.vae_losses import reconstruction_loss, resolve_beta
from facefactors.train.vae import VAEConfig, load_run, train
from facefactors.train.vae_data import BlobsGroundTruth, build_dataset
from facefactors.utils.device import apply_threads
from facefactors.utils.io import atomic_write_json, atomic_write_text

VARIANTS: dict[str, list[str]] = {
    "vae": ["model.kind=vae"],
    "beta2": ["model.kind=beta_vae", "loss.beta=2"],
    "beta5": ["model.kind=beta_vae", "loss.beta=5"],
    "beta_tcvae": ["model.kind=beta_tcvae"],
    "factor_vae": ["model.kind=factor_vae"],
}


@dataclass
class EvalSizes:
    """How many ground-truth samples the metrics use (disentanglement_lib uses 10000/5000)."""

    codes: int = 4000  # observations for MIG / DCI / SAP and reconstruction error
    fvae_train: int = 300  # FactorVAE score: training votes
    fvae_eval: int = 150  # FactorVAE score: evaluation votes
    fvae_batch: int = 32  # FactorVAE score: observations per vote
    fvae_variance: int = 2000  # FactorVAE score: observations for the global variance


SIZES = {"tiny": EvalSizes(300, 40, 20, 16, 300), "quick": EvalSizes(), "standard": EvalSizes(10000, 1000, 500, 64, 10000), "full": EvalSizes(10000, 10000, 5000, 64, 10000)}


def variant_config(name: str, preset: str, overrides: list[str]) -> VAEConfig:
    return load_config(VAEConfig, "vae", preset, VARIANTS[name] + list(overrides))


def train_variants(root: Path, names: list[str], preset: str, overrides: list[str], return_dataset: bool = False):
    """Train (or reuse) each variant on one shared training set -> {name: RunDir} (, dataset)."""
    cfgs = {n: variant_config(n, preset, overrides) for n in names}
    first = cfgs[names[0]]
    apply_threads(first.trainer.threads)  # before rendering the training set
    dataset = build_dataset(first.data, first.model.image_size, progress=first.trainer.progress)
    runs = {n: train(c, root / "runs" / n, dataset=dataset) for n, c in cfgs.items()}
    return (runs, dataset) if return_dataset else runs


# --- ground truth ------------------------------------------------------------------------------
class ReplaySampler:
    """Wraps a metrics sampler: records observations on the first pass and replays them on later
    passes with the same seed, so five models are scored on identical renders at one render cost."""

    def __init__(self, sampler):
        self.sampler = sampler
        self.factor_names, self.factor_sizes = sampler.factor_names, sampler.factor_sizes
        self.tape: list[tuple[np.ndarray, np.ndarray, dict]] = []  # (factors, uint8 obs, rng state after)
        self.position = 0

    def rewind(self) -> None:
        self.position = 0

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.sampler.sample_factors(n, rng)

    def sample_observations(self, factors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.position < len(self.tape):
            f, obs, state = self.tape[self.position]
            if np.array_equal(f, factors):
                self.position += 1
                rng.bit_generator.state = state  # advance the caller's rng as the render did
                return obs.astype(np.float32) / 255.0
            self.tape = self.tape[: self.position]  # a different call sequence: record afresh
        obs = self.sampler.sample_observations(factors, rng)
        self.tape.append((np.asarray(factors).copy(), np.round(np.clip(obs, 0, 1) * 255).astype(np.uint8), rng.bit_generator.state))
        self.position += 1
        return self.tape[-1][1].astype(np.float32) / 255.0


def ground_truth_sampler(cfg: VAEConfig):
    """The metrics sampler matching a run's data: blobs, or the world (held-out test identities)."""
    if cfg.data.source == "blobs":
        return BlobsGroundTruth(cfg.model.image_size)
    from facefactors.train.vae_data import face_world
    from facefactors.world.ground_truth import WorldGroundTruth

    world = face_world(cfg.data.world_seed, cfg.model.image_size, cfg.data.zoom)
    return WorldGroundTruth(world, split="test", image_size=cfg.model.image_size)


def observations(sampler, n: int, seed: int = 0, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    factors = sampler.sample_factors(n, rng)
    obs = np.concatenate([sampler.sample_observations(factors[i : i + chunk], rng) for i in range(0, n, chunk)])
    return factors, obs


def score_model(model, sampler: ReplaySampler, sizes: EvalSizes, factors: np.ndarray, obs: np.ndarray, reconstruction: str = "bernoulli", sigma: float = 0.5**0.5) -> dict:
    """Reconstruction error and MIG / DCI / SAP / FactorVAE score of one model."""
    from facefactors.metrics.dci import dci
    from facefactors.metrics.interventional import factor_vae_score
    from facefactors.metrics.mig import mig
    from facefactors.metrics.sap import sap

    x = torch.from_numpy(obs)
    codes = encode(model, x).numpy()
    with torch.no_grad():
        rec_nats, mse = 0.0, 0.0
        for s in range(0, len(x), 256):
            xb = x[s : s + 256]
            logits = model.decode(torch.from_numpy(codes[s : s + 256]).to(next(model.parameters()).device)).cpu()
            rec_nats += float(reconstruction_loss(logits, xb, reconstruction, sigma).sum())
            mse += float(((torch.sigmoid(logits) - xb) ** 2).mean((1, 2, 3)).sum())
    n = len(x)
    half = n * 2 // 3
    out = {"reconstruction_nats": rec_nats / n, "mse_per_pixel": mse / n}
    t0 = time.perf_counter()
    out["mig"] = float(mig(codes[:half], factors[:half])["mig"])
    d = dci(codes[:half], factors[:half], codes[half:], factors[half:])
    out.update(dci_disentanglement=float(d["disentanglement"]), dci_completeness=float(d["completeness"]), dci_informativeness=float(d["informativeness_test"]))
    out["sap"] = float(sap(codes[:half], factors[:half], codes[half:], factors[half:])["sap"])
    sampler.rewind()

    def representation(batch: np.ndarray) -> np.ndarray:
        return encode(model, torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).numpy()

    fv = factor_vae_score(sampler, representation, rng=1, batch_size=sizes.fvae_batch, num_train=sizes.fvae_train, num_eval=sizes.fvae_eval, num_variance_estimate=sizes.fvae_variance)
    out["factor_vae_score"] = float(fv["eval_accuracy"])
    out["active_dims"] = int(fv["num_active_dims"])
    out["metrics_wall_s"] = round(time.perf_counter() - t0, 1)
    return out


def _cell(value, fmt: str) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else format(value, fmt)


def _table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    """Markdown table; cols are (key, header, format spec)."""
    head = "| " + " | ".join(c[1] for c in cols) + " |\n|" + "---|" * len(cols) + "\n"
    return head + "".join("| " + " | ".join(_cell(r.get(k), f) for k, _, f in cols) + " |\n" for r in rows)


def plot_tradeoff(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    for ax, key in zip(axes, ("mig", "dci_disentanglement", "sap", "factor_vae_score")):
        for r in rows:
            ax.scatter(r["reconstruction_nats"], r[key])
            ax.annotate(r["variant"], (r["reconstruction_nats"], r[key]), fontsize=8)
        ax.set_xlabel("reconstruction (nats / image)")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def tradeoff(out: Path, preset: str = "quick", overrides: list[str] | None = None, variants: list[str] | None = None) -> dict:
    """beta in {1, 2, 5}, β-TCVAE and FactorVAE: reconstruction vs disentanglement."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    overrides = list(overrides or [])
    names = variants or list(VARIANTS)
    runs = train_variants(out.parent, names, preset, overrides)
    sizes = SIZES.get(preset, EvalSizes())
    cfg0 = variant_config(names[0], preset, overrides)
    sampler = ReplaySampler(ground_truth_sampler(cfg0))
    factors, obs = observations(sampler.sampler, sizes.codes, seed=0)
    rows = []
    for name, run in runs.items():
        model, cfg, _ = load_run(run.path)
        beta = resolve_beta(cfg.model.kind, cfg.loss)
        train_metrics = json.loads(run.metrics.read_text())
        row = {"variant": name, "kind": cfg.model.kind, "beta": beta, "train_wall_s": train_metrics.get("train_wall_s")}
        row.update(score_model(model, sampler, sizes, factors, obs, cfg.loss.reconstruction, cfg.loss.gaussian_sigma))
        run.update_metrics({"ground_truth": row})
        rows.append(row)
    plot_tradeoff(rows, out / "tradeoff.png")
    cols = [("variant", "model", ""), ("beta", "beta", ".3g"), ("reconstruction_nats", "recon (nats)", ".1f"), ("mse_per_pixel", "MSE/px", ".4f"),
            ("mig", "MIG", ".3f"), ("dci_disentanglement", "DCI-D", ".3f"), ("dci_completeness", "DCI-C", ".3f"), ("dci_informativeness", "DCI-I", ".3f"),
            ("sap", "SAP", ".3f"), ("factor_vae_score", "FactorVAE", ".3f"), ("active_dims", "active", "d"), ("train_wall_s", "train s", ".0f")]
    report = (
        f"# VAE family: reconstruction vs disentanglement ({preset} preset)\n\n"
        f"Ground truth: {type(sampler.sampler).__name__} factors {sampler.factor_names} (sizes {sampler.factor_sizes}); "
        f"{sizes.codes} observations for reconstruction/MIG/DCI/SAP (2:1 train/test), FactorVAE score with "
        f"{sizes.fvae_train}/{sizes.fvae_eval} votes of {sizes.fvae_batch}.\n\n"
        + _table(rows, cols)
        + "\n![trade-off](tradeoff.png)\n\nLoss curves (paper 004 Figs. 6-8): "
        + ", ".join(f"[{n}](../runs/{n}/loss_curves.png)" for n in runs)
        + "\n"
    )
    atomic_write_text(out / "report.md", report)
    result = {"rows": rows, "summary": {r["variant"]: {k: r[k] for k in ("reconstruction_nats", "mig", "dci_disentanglement", "sap", "factor_vae_score")} for r in rows}}
    atomic_write_json(out / "results.json", result)
    return result


def pythae_comparison(out: Path, preset: str = "quick", overrides: list[str] | None = None) -> dict:
    from facefactors.experiments.vae_pythae import compare

    return compare(Path(out), preset, list(overrides or []))


def attributes(out: Path, preset: str = "quick", overrides: list[str] | None = None, rater_dir: str | None = None, variants: list[str] | None = None, alphas: list[float] | None = None) -> dict:
    from facefactors.experiments.vae_attributes import ALPHAS, MODELS, attribute_experiment

    return attribute_experiment(Path(out), preset, list(overrides or []), rater_dir, models=variants or MODELS, alphas=alphas or ALPHAS)


EXPERIMENTS = {"tradeoff": tradeoff, "attributes": attributes, "pythae": pythae_comparison}
