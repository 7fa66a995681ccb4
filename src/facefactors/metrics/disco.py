"""Metrics of DiscoFaceGAN (Deng et al. 2020, /work/shared/papers/003_*.txt, sec. 5.1):
the disentanglement score DS (eq. 9) and the W-space direction consistency of Table 2
(Properties 1 and 2).

DS: for each factor u_i, draw ``num_groups`` (1K) settings of the other factors u_{j}, and for
each ``group_size`` (10) fresh values of u_i; generate the images, re-estimate every factor from
them with an estimator, take the variance of each estimate within each group and average over
groups (sigma_{u_j}); divide by the variance of that estimate over the data set; then
DS_{u_i} = prod_{j != i} sigma_{u_i} / sigma_{u_j}. High = varying u_i changes only u_i.
Multi-dimensional estimates (e.g. an identity feature) use the mean variance over dimensions.
The data-set variance is the caller's ``reference_variance`` (the paper's "computed on FFHQ") or,
if not given, that of the estimates on ``num_groups * group_size`` i.i.d. generated samples.

Direction consistency: with w = to_w(u), Delta w = w(u_i = b, u_{j}) - w(u_i = a, u_{j}).
Property 1 (fixed start/end): 50 pairs (a, b), 100 settings of the other factors each; the mean
pairwise cosine similarity of the 100 Delta w per pair; report mean and std over the 50 pairs.
Property 2 (fixed offset): 50 offsets Delta, each applied from 100 random starts a (with random
other factors). The paper averages the full 100x100 matrix (its diagonal of self-similarities
included); we average the off-diagonal pairs only (``include_self=False``) so that a random
direction scores ~0; ``include_self=True`` reproduces the paper's average.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from facefactors.metrics.registry import register
from facefactors.metrics.sampler import as_rng, check_sampler
from facefactors.utils.errors import UserError

Latents = dict[str, np.ndarray]  # name -> (n, d) values of one factor's latent variable


def _take(latents: Latents, idx: np.ndarray) -> Latents:
    return {k: v[idx] for k, v in latents.items()}


def _as2d(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(len(x), -1)


@register("ds", "other", "DS (DiscoFaceGAN eq. 9): prod_j sigma_i / sigma_j when only factor i varies; higher = better disentangled.")
def disentanglement_score(
    sample_latents: Callable[[int, np.random.Generator], Latents],
    generate: Callable[[Latents], np.ndarray],
    estimate: Callable[[np.ndarray], dict[str, np.ndarray]],
    names: list[str] | None = None,
    num_groups: int = 1000,
    group_size: int = 10,
    reference_variance: dict[str, float] | None = None,
    rng: np.random.Generator | int | None = 0,
    chunk_groups: int = 50,
) -> dict:
    """-> {"ds": {factor: DS}, "sigma": {varied factor: {estimated factor: normalised variance}}}."""
    rng = as_rng(rng)
    names = list(names or sample_latents(1, rng).keys())
    if len(names) < 2:
        raise UserError("ds: needs at least two factors")
    if reference_variance is None:
        est = estimate(generate(sample_latents(num_groups * group_size, rng)))
        reference_variance = {j: float(np.mean(np.var(_as2d(est[j]), axis=0))) for j in names}
    sigma: dict[str, dict[str, float]] = {}
    for i in names:
        acc = {j: 0.0 for j in names}
        for start in range(0, num_groups, chunk_groups):
            g = min(chunk_groups, num_groups - start)
            base = _take(sample_latents(g, rng), np.repeat(np.arange(g), group_size))  # others fixed per group
            base[i] = sample_latents(g * group_size, rng)[i]  # u_i varies within the group
            est = estimate(generate(base))
            for j in names:
                e = _as2d(est[j]).reshape(g, group_size, -1)
                acc[j] += float(np.var(e, axis=1).mean(axis=1).sum())
        sigma[i] = {j: acc[j] / num_groups / max(reference_variance[j], 1e-300) for j in names}
    ds = {i: float(np.prod([sigma[i][i] / max(sigma[i][j], 1e-300) for j in names if j != i])) for i in names}
    return {"ds": ds, "sigma": sigma, "reference_variance": reference_variance}


def ds_from_sampler(sampler, estimate: Callable[[np.ndarray], dict[str, np.ndarray]], **kwargs) -> dict:
    """DS on a ground-truth sampler (metrics sampler protocol): u_i = factor column i."""
    check_sampler(sampler)
    names = list(sampler.factor_names)

    def sample_latents(n, rng):
        f = np.asarray(sampler.sample_factors(n, rng))
        return {k: f[:, c : c + 1] for c, k in enumerate(names)}

    gen_rng = as_rng(kwargs.get("rng", 0)).spawn(1)[0]

    def generate(latents):
        f = np.concatenate([latents[k] for k in names], axis=1)
        return sampler.sample_observations(f, gen_rng)

    return disentanglement_score(sample_latents, generate, estimate, names=names, **kwargs)


def direction_consistency(deltas: np.ndarray, include_self: bool = False) -> dict:
    """deltas (P, M, D): M displacement vectors per pair -> mean/std over P of mean pairwise cosine."""
    deltas = np.asarray(deltas, dtype=np.float64)
    if deltas.ndim != 3 or deltas.shape[1] < 2:
        raise UserError(f"direction_consistency: deltas must be (pairs, M >= 2, D); got {deltas.shape}")
    u = deltas / np.maximum(np.linalg.norm(deltas, axis=-1, keepdims=True), 1e-12)
    cos = u @ u.transpose(0, 2, 1)  # (P, M, M)
    m = deltas.shape[1]
    if include_self:
        per_pair = cos.mean(axis=(1, 2))
    else:
        per_pair = (cos.sum(axis=(1, 2)) - np.trace(cos, axis1=1, axis2=2)) / (m * (m - 1))
    return {"mean": float(per_pair.mean()), "std": float(per_pair.std()), "per_pair": per_pair}


@register("w_direction_consistency", "other", "W-direction consistency (DiscoFaceGAN Table 2): mean pairwise cosine of latent displacements for one factor change (1 = same direction).")
def w_direction_consistency(
    sample_latents: Callable[[int, np.random.Generator], Latents],
    to_w: Callable[[Latents], np.ndarray],
    factor: str,
    mode: str = "fixed_endpoints",
    num_pairs: int = 50,
    num_others: int = 100,
    include_self: bool = False,
    rng: np.random.Generator | int | None = 0,
) -> dict:
    """Property 1 (``mode="fixed_endpoints"``) or Property 2 (``mode="fixed_offset"``) for one factor."""
    if mode not in ("fixed_endpoints", "fixed_offset"):
        raise UserError(f"w_direction_consistency: mode must be 'fixed_endpoints' or 'fixed_offset', got {mode!r}")
    rng = as_rng(rng)
    deltas = []
    for _ in range(num_pairs):
        ends = sample_latents(2, rng)[factor]  # (2, d)
        others = sample_latents(num_others, rng)
        start, end = dict(others), dict(others)
        if mode == "fixed_endpoints":
            start[factor] = np.repeat(ends[:1], num_others, axis=0)
            end[factor] = np.repeat(ends[1:], num_others, axis=0)
        else:  # the same offset from every start a (the others' own value of the factor)
            end[factor] = others[factor] + (ends[1] - ends[0])[None]
        deltas.append(_as2d(to_w(end)) - _as2d(to_w(start)))
    out = direction_consistency(np.stack(deltas), include_self)
    out["mode"] = mode
    return out
