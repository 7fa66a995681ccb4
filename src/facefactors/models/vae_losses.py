"""Objectives of the VAE family (pure functions of tensors; no training code).

* Reconstruction: Bernoulli log-likelihood, i.e. the binary cross-entropy L1 of the student
  study (paper 004, "VAE LOSS": L1(x, x') = sum x log sigma(x') + (1 - x) log(1 - sigma(x'))),
  or a Gaussian / L2 option: -log N(x; x', sigma^2) per pixel = (x - x')^2 / (2 sigma^2) up to a
  constant, with a fixed sigma (``gaussian_sigma``). sigma^2 = 1/2 is the plain sum of squared
  errors; a small sigma (e.g. 0.1) weighs reconstruction against beta * KL far more than BCE does
  on grey levels (BCE's gradient in logit space is (x' - x), the Gaussian's (x' - x) x'(1 - x')
  / sigma^2), i.e. a sharper decoder that keeps small details such as a 2-px mouth at 32x32.
* Optional detail term (``gradient_weight`` = lambda > 0, our addition, not a likelihood):
  lambda * sum over pixels and channels of |d_h x' - d_h x| + |d_v x' - d_v x|, the L1 error of the
  image's forward differences (x' = sigmoid(logits)). Related to the gradient-difference loss
  of Mathieu et al. 2016, Eq. 5, which compares the magnitudes |d x'| and |d x|; we compare
  the signed differences, so an edge of the wrong sign also counts. A squared error lets a
  decoder trade a blurred edge for a small loss; the L1 of differences keeps a constant pull on
  every misplaced edge, however small (a 1-px mouth line). Unsupervised: it sees only the input
  image. Reported separately ("detail"), so "recon" stays -log p(x|z). Tried for the smile
  vector at lambda = 10: no effect (docs/results.md).
* KL term, closed form (paper 004, L2 = -0.5 sum(1 + log sigma^2 - mu^2 - sigma^2)); the total
  L = L1 + beta * L2 is the β-VAE objective (Higgins et al. 2017, Eq. 4); beta = 1 is the VAE.
* β-TCVAE (Chen et al. 2018, Eq. 2 decomposition and Eq. 4 objective):
  KL = I_q(z; n) + TC(z) + sum_j KL(q(z_j) || p(z_j)), weighted alpha, beta, gamma, with the
  aggregate posterior q(z) estimated on the minibatch by minibatch weighted sampling (MWS,
  Sec. 4.1) or minibatch stratified sampling (MSS, App. C.2).
* FactorVAE (Kim & Mnih 2018, Eq. 2-3): TC(z) ~= E_q(z)[log D(z)_0 - log D(z)_1] by the
  density-ratio trick, and the discriminator's cross-entropy on q(z) vs permuted samples.
* Capacity annealing (Burgess et al. 2018, Eq. 8): gamma * |KL - C|, C raised linearly to C_max.
* Cyclical KL annealing (Fu et al. 2019, Sec. 3, beta_t = f(tau)): beta ramps from 0 to its
  value over the first ``ratio`` of each of ``cycles`` cycles, then stays flat.

Per-sample quantities are sums over pixels / latent dimensions and means over the batch, so a
number is "nats per image".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from facefactors.utils.errors import UserError

LOG_2PI = math.log(2 * math.pi)


@dataclass
class LossConfig:
    reconstruction: str = "bernoulli"  # bernoulli (BCE, the study) | gaussian (fixed-sigma L2)
    gaussian_sigma: float = 0.5**0.5  # gaussian: decoder std in [0, 1] intensity units; sqrt(1/2) = plain sum of squares
    gradient_weight: float = 0.0  # lambda of the image-gradient L1 detail term (per unit of intensity difference); 0 = off
    beta: float | None = None  # KL weight (β-VAE) or TC weight (β-TCVAE); None = the kind's default
    alpha: float = 1.0  # β-TCVAE weight of the index-code mutual information
    gamma: float = 1.0  # β-TCVAE weight of the dimension-wise KL
    tc_weight: float = 10.0  # FactorVAE gamma: weight of the discriminator's TC estimate
    tc_estimator: str = "mss"  # β-TCVAE estimator of log q(z): mss | mws
    dataset_size: int = 0  # N for the β-TCVAE estimators; 0 = the training set's length
    anneal: str = "none"  # none | capacity (Burgess et al.) | cyclical (Fu et al.)
    capacity_max: float = 25.0  # C_max in nats
    capacity_steps: int = 10000  # steps over which C rises from 0 to C_max
    capacity_gamma: float = 100.0  # gamma of gamma * |KL - C|
    cycles: int = 4  # cyclical annealing: number of cycles over the run
    cycle_ratio: float = 0.5  # cyclical annealing: fraction of each cycle spent ramping up


DEFAULT_BETA = {"vae": 1.0, "beta_vae": 4.0, "beta_tcvae": 6.0, "factor_vae": 1.0, "cvae": 1.0}


def resolve_beta(kind: str, cfg: LossConfig) -> float:
    if kind == "vae" and cfg.beta not in (None, 1.0):
        raise UserError(f"model.kind=vae is the plain VAE with beta=1, got loss.beta={cfg.beta}; use model.kind=beta_vae")
    return float(cfg.beta) if cfg.beta is not None else DEFAULT_BETA[kind]


# --- reconstruction and KL --------------------------------------------------------------------
def reconstruction_loss(logits: torch.Tensor, x: torch.Tensor, kind: str = "bernoulli", sigma: float = 0.5**0.5) -> torch.Tensor:
    """-log p(x|z) per image (B,), summed over pixels; ``logits`` are the decoder's raw outputs.

    gaussian: (sigmoid(logits) - x)^2 / (2 sigma^2), without the constant log(sigma sqrt(2 pi))."""
    if kind == "bernoulli":
        per_pixel = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    elif kind == "gaussian":
        if not sigma > 0:
            raise UserError(f"loss.gaussian_sigma must be > 0, got {sigma}")
        per_pixel = (torch.sigmoid(logits) - x) ** 2 / (2.0 * sigma**2)
    else:
        raise UserError(f"loss.reconstruction={kind!r} is not one of ['bernoulli', 'gaussian']")
    return per_pixel.flatten(1).sum(1)  # (B,)


def check_gradient_weight(weight: float) -> None:
    if weight < 0:
        raise UserError(f"loss.gradient_weight must be >= 0, got {weight}")


def gradient_l1(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Detail term per image (B,): sum of |d_h x' - d_h x| + |d_v x' - d_v x| over pixels and
    channels, with x' = sigmoid(logits) and d_h / d_v forward differences along W / H."""
    diff = torch.sigmoid(logits) - x  # (B, C, H, W); the difference of differences is the differences of this
    dh = (diff[..., :, 1:] - diff[..., :, :-1]).abs().flatten(1).sum(1)
    dv = (diff[..., 1:, :] - diff[..., :-1, :]).abs().flatten(1).sum(1)
    return dh + dv


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) per dimension (B, D), closed form (paper 004, L2)."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per sample (B,)."""
    return kl_per_dim(mu, logvar).sum(1)


def gaussian_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(z; mu, exp(logvar)) (broadcasting)."""
    return -0.5 * (LOG_2PI + logvar + (z - mu) ** 2 * torch.exp(-logvar))


# --- β-TCVAE --------------------------------------------------------------------------------------
def log_importance_weights(batch: int, dataset_size: int, estimator: str = "mss", device=None) -> torch.Tensor:
    """log w[i, j]: weight of q(z_i | x_j) in the estimate q(z_i) ~= sum_j w[i, j] q(z_i | x_j).

    MWS (Chen et al. Sec. 4.1): log q(z_i) ~= logsumexp_j log q(z_i|x_j) - log(N M), the
    paper's formula; its weights do not sum to one, which shifts log q(z) and every log q(z_k)
    by -log N (TC by a constant (D - 1) log N that carries no gradient).
    MSS (App. C.2): sample i's own posterior is one of the N mixture components and counts
    exactly (weight 1/N); the M - 1 other batch members stand in for the remaining N - 1
    points (weight (N - 1) / (N (M - 1)) each), so each row sums to one. With M = N it is the
    exact mixture of the batch. (Chen et al.'s reference code spreads the stratum weights over
    the other members slightly differently; the estimate has the same expectation.)
    """
    m, n = batch, dataset_size
    if m < 2:
        raise UserError("the β-TCVAE estimators need a batch of at least 2; raise trainer.batch_size")
    if n < m:
        n = m  # a data set cannot be smaller than the batch drawn from it
    if estimator == "mws":
        return torch.full((m, m), -math.log(n * m), device=device)
    if estimator != "mss":
        raise UserError(f"loss.tc_estimator={estimator!r} is not one of ['mss', 'mws']")
    w = torch.full((m, m), (n - 1) / (n * (m - 1)), device=device, dtype=torch.float64)
    w.fill_diagonal_(1.0 / n)
    return w.log()


def tc_decomposition(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, dataset_size: int, estimator: str = "mss") -> dict[str, torch.Tensor]:
    """Chen et al. 2018, Eq. 2: per-sample estimates (B,) of

    * ``mi``   = log q(z|x) - log q(z)              (index-code mutual information)
    * ``tc``   = log q(z) - sum_j log q(z_j)        (total correlation)
    * ``dwkl`` = sum_j log q(z_j) - log p(z)        (dimension-wise KL)

    whose sum is log q(z|x) - log p(z), the one-sample estimate of KL(q(z|x) || p(z)).
    z, mu, logvar: (B, D).
    """
    b, d = z.shape
    # log q(z_i[k] | x_j[k]) for every pair (i, j) and dimension k: (B, B, D)
    log_q_pair = gaussian_log_density(z[:, None, :], mu[None, :, :], logvar[None, :, :])
    log_w = log_importance_weights(b, dataset_size, estimator, z.device).to(z.dtype)  # (B, B)
    log_qz = torch.logsumexp(log_w + log_q_pair.sum(2), dim=1)  # (B,) log q(z_i)
    log_qz_marg = torch.logsumexp(log_w[:, :, None] + log_q_pair, dim=1).sum(1)  # (B,) sum_k log q(z_i[k])
    log_qz_x = gaussian_log_density(z, mu, logvar).sum(1)  # (B,)
    log_pz = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z)).sum(1)  # (B,)
    return {"mi": log_qz_x - log_qz, "tc": log_qz - log_qz_marg, "dwkl": log_qz_marg - log_pz}


# --- FactorVAE ----------------------------------------------------------------------------------
def factor_tc_estimate(d_logits: torch.Tensor) -> torch.Tensor:
    """Kim & Mnih 2018, Eq. 3: TC(z) ~= log(D(z) / (1 - D(z))) per sample (B,), with D(z) the
    probability of class 0 ("from q(z)") of a 2-logit discriminator."""
    return d_logits[:, 0] - d_logits[:, 1]


def discriminator_loss(logits_joint: torch.Tensor, logits_permuted: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the FactorVAE discriminator: q(z) samples are class 0, permuted ones class 1."""
    zeros = torch.zeros(logits_joint.shape[0], dtype=torch.long, device=logits_joint.device)
    ones = torch.ones(logits_permuted.shape[0], dtype=torch.long, device=logits_permuted.device)
    return 0.5 * (F.cross_entropy(logits_joint, zeros) + F.cross_entropy(logits_permuted, ones))


# --- schedules ----------------------------------------------------------------------------------
def capacity(step: int, c_max: float, steps: int) -> float:
    """Burgess et al. 2018, Sec. 4: C rises linearly from 0 to C_max over ``steps`` and stays."""
    return float(c_max) * min(1.0, step / max(1, steps))


def cyclical_weight(step: int, total_steps: int, cycles: int = 4, ratio: float = 0.5) -> float:
    """Fu et al. 2019: tau = mod(t, ceil(T / M)) / (T / M); f(tau) = tau / R if tau <= R else 1."""
    if cycles < 1 or not 0 < ratio <= 1:
        raise UserError(f"cyclical annealing needs loss.cycles >= 1 and 0 < loss.cycle_ratio <= 1, got {cycles}, {ratio}")
    period = total_steps / cycles
    tau = (step % math.ceil(period)) / period
    return min(1.0, tau / ratio)


# --- the whole objective ------------------------------------------------------------------------
def vae_objective(
    kind: str,
    logits: torch.Tensor,
    x: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    z: torch.Tensor,
    cfg: LossConfig,
    step: int = 0,
    total_steps: int = 1,
    dataset_size: int = 0,
    d_logits: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The training loss of ``kind`` and its parts (batch means, nats per image).

    ``d_logits`` (B, 2) is the FactorVAE discriminator's output on ``z`` (factor_vae only).
    """
    recon = reconstruction_loss(logits, x, cfg.reconstruction, cfg.gaussian_sigma).mean()
    kl = kl_divergence(mu, logvar).mean()
    beta = resolve_beta(kind, cfg)
    weight = 1.0
    if cfg.anneal == "cyclical":
        weight = cyclical_weight(step, total_steps, cfg.cycles, cfg.cycle_ratio)
    elif cfg.anneal not in ("none", "capacity"):
        raise UserError(f"loss.anneal={cfg.anneal!r} is not one of ['none', 'capacity', 'cyclical']")
    out: dict[str, torch.Tensor] = {"recon": recon, "kl": kl}
    check_gradient_weight(cfg.gradient_weight)
    detail = cfg.gradient_weight * gradient_l1(logits, x).mean() if cfg.gradient_weight > 0 else None
    if kind == "beta_tcvae":
        parts = tc_decomposition(z, mu, logvar, dataset_size or x.shape[0], cfg.tc_estimator)
        mi, tc, dwkl = (parts[k].mean() for k in ("mi", "tc", "dwkl"))
        reg = cfg.alpha * mi + beta * tc + cfg.gamma * dwkl
        out.update(mi=mi, tc=tc, dwkl=dwkl)
    else:
        reg = beta * kl
        if kind == "factor_vae":
            if d_logits is None:
                raise ValueError("factor_vae objective needs the discriminator logits d_logits")
            tc = factor_tc_estimate(d_logits).mean()
            reg = reg + cfg.tc_weight * tc
            out["tc"] = tc
    if cfg.anneal == "capacity":
        if kind == "beta_tcvae":
            raise UserError("loss.anneal=capacity controls the KL of beta_vae/vae/cvae/factor_vae; β-TCVAE has no single KL term (use anneal=cyclical)")
        c = capacity(step, cfg.capacity_max, cfg.capacity_steps)
        # Burgess et al. replace beta * KL by gamma * |KL - C|; FactorVAE's TC term is kept.
        reg = reg - beta * kl + cfg.capacity_gamma * (kl - c).abs()
        out["capacity"] = torch.tensor(c)
    out["beta_weight"] = torch.tensor(weight * beta)
    out["loss"] = recon + weight * reg
    if detail is not None:
        out["detail"] = detail
        out["loss"] = out["loss"] + detail
    return out
