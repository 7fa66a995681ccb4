"""Interventional disentanglement metrics: beta-VAE score and FactorVAE score, as computed by
disentanglement_lib ``beta_vae.py`` / ``factor_vae.py`` with Locatello et al. 2019 defaults
(batch 64, 10,000 training and 5,000 evaluation points).

beta-VAE score (Higgins et al. 2017, sec. 3 / appendix A.4): a training point picks a factor k
uniformly, draws two batches of 64 factor vectors that agree on factor k only by construction,
and takes the mean absolute code difference over the batch (D,); a linear classifier predicts k.
Reference vs paper: the paper uses a linear classifier trained with Adagrad; the reference (here)
fits sklearn's ``LogisticRegression`` and reports its accuracy; the second batch is fresh
samples with factor k copied from the first, as the reference does.

FactorVAE score (Kim & Mnih 2018, sec. 4): codes are divided by their empirical std over 10,000
observations; dimensions whose std is below 0.05 are pruned; a training point fixes a random
factor k across a batch of 64 and votes (k, argmin_d Var_batch(z_d) / Var_global(z_d)); the
classifier is the majority vote per code dimension; score = fraction of eval votes it gets right.
Reference vs paper: the paper prunes by KL to the prior; the reference (here) prunes by the
empirical std with ``prune_dims.threshold = 0.05`` (Locatello's configuration). The reference's
votes index the argmin *within the active dims*; we map it back to the full code index, which is
a relabelling of vote columns and leaves the accuracy unchanged; our ``num_active_dims`` counts
the active dims (the reference reports the total).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression

from facefactors.metrics.progress import progress_bar
from facefactors.metrics.registry import register
from facefactors.metrics.sampler import Representation, as_rng, check_sampler, represent


def beta_vae_points(sampler, representation: Representation, num_points: int, rng: np.random.Generator, batch_size: int = 64, step=None):
    """-> (features (num_points, D), labels (num_points,)): one mean |z1 - z2| per labelled factor."""
    k_total = len(sampler.factor_sizes)
    feats, labels = [], []
    for _ in range(num_points):
        if step is not None:
            step()
        k = int(rng.integers(k_total))
        f1 = np.asarray(sampler.sample_factors(batch_size, rng))
        f2 = np.asarray(sampler.sample_factors(batch_size, rng))
        f2[:, k] = f1[:, k]
        z1 = represent(sampler, representation, f1, rng)
        z2 = represent(sampler, representation, f2, rng)
        feats.append(np.mean(np.abs(z1 - z2), axis=0))
        labels.append(k)
    return np.stack(feats), np.array(labels)


@register("beta_vae", "sampler", "beta-VAE score: accuracy of a linear classifier naming which factor was held fixed from mean code differences (chance 1/K).")
def beta_vae_score(
    sampler,
    representation: Representation,
    rng: np.random.Generator | int | None = 0,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    progress: bool = False,
) -> dict:
    """-> {"train_accuracy", "eval_accuracy", "chance"}."""
    check_sampler(sampler)
    rng = as_rng(rng)
    with progress_bar(num_train + num_eval, "beta-VAE score", progress) as step:
        x_train, y_train = beta_vae_points(sampler, representation, num_train, rng, batch_size, step)
        x_eval, y_eval = beta_vae_points(sampler, representation, num_eval, rng, batch_size, step)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LogisticRegression(random_state=0).fit(x_train, y_train)
    return {
        "train_accuracy": float(model.score(x_train, y_train)),
        "eval_accuracy": float(model.score(x_eval, y_eval)),
        "chance": 1.0 / len(sampler.factor_sizes),
    }


def factor_vae_votes(sampler, representation, num_points, rng, global_var, active, batch_size=64, step=None) -> np.ndarray:
    """(K, D) int64 vote counts: row = fixed factor, column = code of least normalised variance."""
    k_total = len(sampler.factor_sizes)
    votes = np.zeros((k_total, len(global_var)), dtype=np.int64)
    active_idx = np.flatnonzero(active)
    for _ in range(num_points):
        if step is not None:
            step()
        k = int(rng.integers(k_total))
        f = np.asarray(sampler.sample_factors(batch_size, rng))
        f[:, k] = f[0, k]
        z = represent(sampler, representation, f, rng)
        local = np.var(z, axis=0, ddof=1)
        votes[k, active_idx[np.argmin(local[active] / global_var[active])]] += 1
    return votes


@register("factor_vae", "sampler", "FactorVAE score: majority-vote accuracy naming the fixed factor from the code of least relative variance (chance 1/K).")
def factor_vae_score(
    sampler,
    representation: Representation,
    rng: np.random.Generator | int | None = 0,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    num_variance_estimate: int = 10000,
    prune_threshold: float = 0.05,
    progress: bool = False,
) -> dict:
    """-> {"train_accuracy", "eval_accuracy", "num_active_dims", "chance"}."""
    check_sampler(sampler)
    rng = as_rng(rng)
    f = np.asarray(sampler.sample_factors(num_variance_estimate, rng))
    z = np.concatenate([represent(sampler, representation, f[i : i + 64], rng) for i in range(0, len(f), 64)])
    global_var = np.var(z, axis=0, ddof=1)
    active = np.sqrt(global_var) >= prune_threshold
    chance = 1.0 / len(sampler.factor_sizes)
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0, "chance": chance}
    with progress_bar(num_train + num_eval, "FactorVAE score", progress) as step:
        train_votes = factor_vae_votes(sampler, representation, num_train, rng, global_var, active, batch_size, step)
        eval_votes = factor_vae_votes(sampler, representation, num_eval, rng, global_var, active, batch_size, step)
    classifier = np.argmax(train_votes, axis=0)  # (D,) factor predicted for each code
    cols = np.arange(train_votes.shape[1])
    return {
        "train_accuracy": float(train_votes[classifier, cols].sum() / train_votes.sum()),
        "eval_accuracy": float(eval_votes[classifier, cols].sum() / eval_votes.sum()),
        "num_active_dims": int(active.sum()),
        "chance": chance,
    }
