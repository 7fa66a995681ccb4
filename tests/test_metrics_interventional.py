"""Interventional metrics (beta-VAE, FactorVAE, DS), W-direction consistency and the projection
correlation table, on a synthetic ground-truth sampler: factors -> observations by a fixed linear
map + noise; representation = pseudo-inverse (disentangled) or a random mixing (entangled)."""

from __future__ import annotations

import numpy as np
import pytest

import reference_dlib as ref
from facefactors.metrics import beta_vae_score, factor_vae_score, generate_codes
from facefactors.metrics.correlation import projection_correlation
from facefactors.metrics.disco import (
    direction_consistency,
    disentanglement_score,
    ds_from_sampler,
    w_direction_consistency,
)
from facefactors.utils.errors import UserError


class LinearWorld:
    """K discrete factors -> (n, 1, 4, 4) observations = A @ centred factors + noise."""

    factor_names = ["a", "b", "c"]
    factor_sizes = [5, 4, 6]

    def __init__(self, noise=0.01, seed=0):
        self.mix = np.random.default_rng(seed).normal(size=(16, 3))
        self.noise = noise

    def sample_factors(self, n, rng):
        return np.stack([rng.integers(0, s, n) for s in self.factor_sizes], 1)

    def sample_observations(self, factors, rng):
        f = factors / (np.array(self.factor_sizes) - 1.0) - 0.5
        x = f @ self.mix.T + self.noise * rng.normal(size=(len(factors), 16))
        return x.reshape(-1, 1, 4, 4).astype(np.float32)

    def disentangled(self, obs):
        return obs.reshape(len(obs), -1) @ np.linalg.pinv(self.mix).T  # recovers centred factors

    def entangled(self, obs):
        rot = np.linalg.qr(np.random.default_rng(7).normal(size=(3, 3)))[0]
        return self.disentangled(obs) @ rot.T


def test_generate_codes_shapes_and_values():
    w = LinearWorld()
    codes, f = generate_codes(w, w.disentangled, 37, rng=0, batch_size=16)
    assert codes.shape == (37, 3) and f.shape == (37, 3)
    np.testing.assert_allclose(codes, f / (np.array(w.factor_sizes) - 1.0) - 0.5, atol=0.05)


def test_beta_vae_and_factor_vae_match_reference_transliteration():
    w = LinearWorld(noise=0.05)
    ours = beta_vae_score(w, w.entangled, rng=np.random.default_rng(3), batch_size=16, num_train=150, num_eval=60)
    theirs = ref.beta_vae(w, w.entangled, np.random.default_rng(3), 16, 150, 60)
    assert abs(ours["train_accuracy"] - theirs[0]) < 1e-6 and abs(ours["eval_accuracy"] - theirs[1]) < 1e-6
    # a collapsed 4th code exercises pruning, where the reference's vote indexing differs from ours
    rep = lambda o: np.concatenate([w.entangled(o), np.zeros((len(o), 1)) + 1e-3 * o.reshape(len(o), -1)[:, :1]], 1)
    ours = factor_vae_score(w, rep, rng=np.random.default_rng(4), batch_size=16, num_train=120, num_eval=60, num_variance_estimate=256)
    theirs = ref.factor_vae(w, rep, np.random.default_rng(4), 16, 120, 60, 256)
    assert ours["num_active_dims"] == 3
    assert abs(ours["train_accuracy"] - theirs[0]) < 1e-6 and abs(ours["eval_accuracy"] - theirs[1]) < 1e-6


def test_interventional_extremes():
    w = LinearWorld()
    kw = dict(batch_size=32, num_train=200, num_eval=100)
    good = factor_vae_score(w, w.disentangled, rng=0, num_variance_estimate=500, **kw)
    assert good["eval_accuracy"] > 0.95
    noise = lambda o: np.random.default_rng(int(o.sum() * 1e3) % 2**32).normal(size=(len(o), 3))
    bad = factor_vae_score(w, noise, rng=0, num_variance_estimate=500, **kw)
    assert bad["eval_accuracy"] < 0.6
    assert beta_vae_score(w, w.disentangled, rng=0, **kw)["eval_accuracy"] > 0.95
    assert beta_vae_score(w, noise, rng=0, **kw)["eval_accuracy"] < 0.6
    assert factor_vae_score(w, lambda o: np.zeros((len(o), 2)), rng=0, num_variance_estimate=100, **kw)["num_active_dims"] == 0


def test_bad_sampler_and_representation():
    with pytest.raises(UserError, match="not a ground-truth sampler"):
        beta_vae_score(object(), lambda o: o, num_train=1, num_eval=1)
    w = LinearWorld()
    with pytest.raises(UserError, match="must return"):
        beta_vae_score(w, lambda o: np.zeros(3), num_train=1, num_eval=1)


# --- DS (DiscoFaceGAN eq. 9) --------------------------------------------------------------------
def _latent_world(leak: float):
    """Three 2-D latent factors; the estimator of factor j sees it plus ``leak`` times each other factor."""
    names = ["id", "exp", "light"]

    def sample(n, rng):
        return {k: rng.normal(size=(n, 2)) for k in names}

    def generate(lat):
        return np.concatenate([lat[k] for k in names], 1)

    def estimate(x):
        parts = [x[:, 2 * j : 2 * j + 2] for j in range(3)]
        return {k: parts[j] + leak * (sum(parts) - parts[j]) for j, k in enumerate(names)}

    return names, sample, generate, estimate


def test_ds_hand_computed_and_extremes():
    names, sample, generate, estimate = _latent_world(leak=0.5)
    out = disentanglement_score(sample, generate, estimate, num_groups=400, group_size=10, reference_variance={k: 1.0 for k in names})
    # varying 'exp' only (unit-variance latents, groups of 10): within-group variance (ddof 0) of
    # est(exp) = 9/10; est(id) = id + 0.5 (exp + light) -> 0.25 * 9/10, same for light;
    # DS_exp = (0.9 / 0.225) ** 2 = 16.
    s = out["sigma"]["exp"]
    assert s["exp"] == pytest.approx(0.9, rel=0.08) and s["id"] == pytest.approx(0.225, rel=0.08)
    assert out["ds"]["exp"] == pytest.approx(16.0, rel=0.2)
    clean = disentanglement_score(*_latent_world(0.0)[1:], num_groups=100, group_size=10)
    leaky = disentanglement_score(*_latent_world(1.0)[1:], num_groups=100, group_size=10)
    for k in names:
        assert clean["ds"][k] > 1e6 and leaky["ds"][k] < 3.0


def test_ds_from_sampler():
    w = LinearWorld()

    def est(obs):
        z = w.disentangled(obs)
        return {k: z[:, i] for i, k in enumerate(w.factor_names)}

    out = ds_from_sampler(w, est, num_groups=30, group_size=10)
    assert set(out["ds"]) == set(w.factor_names) and all(v > 100 for v in out["ds"].values())


# --- W-direction consistency --------------------------------------------------------------------
def test_direction_consistency_hand_cases():
    same = np.tile(np.array([1.0, 2.0, 0.0]), (4, 5, 1))  # every delta identical
    assert direction_consistency(same)["mean"] == pytest.approx(1.0)
    two = np.array([[[1.0, 0.0], [0.0, 1.0]]])  # orthogonal pair: off-diagonal 0; with self (1+1+0+0)/4
    assert direction_consistency(two)["mean"] == pytest.approx(0.0)
    assert direction_consistency(two, include_self=True)["mean"] == pytest.approx(0.5)
    rnd = np.random.default_rng(0).normal(size=(20, 50, 64))
    assert abs(direction_consistency(rnd)["mean"]) < 0.02


def test_w_direction_consistency_linear_vs_nonlinear_map():
    names = ["id", "exp"]
    sample = lambda n, rng: {k: rng.normal(size=(n, 3)) for k in names}
    a = np.random.default_rng(1).normal(size=(6, 8))
    linear = lambda lat: np.concatenate([lat["id"], lat["exp"]], 1) @ a
    tangled = lambda lat: np.tanh(3 * np.concatenate([lat["id"], lat["exp"]], 1) @ a)
    for mode in ("fixed_endpoints", "fixed_offset"):
        lin = w_direction_consistency(sample, linear, "exp", mode=mode, num_pairs=10, num_others=20)
        assert lin["mean"] == pytest.approx(1.0, abs=1e-9) and lin["std"] < 1e-9
        assert w_direction_consistency(sample, tangled, "exp", mode=mode, num_pairs=10, num_others=20)["mean"] < 0.9


# --- projection correlation (linear-semantics paper, Table 2) -------------------------------------
def test_projection_correlation_table():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(500, 4))
    gt = {"yaw": 2 * w[:, 0] + 1, "pitch": -w[:, 1]}
    out = projection_correlation(w, {"yaw_dir": np.eye(4)[0], "pitch_dir": np.eye(4)[1], "other": np.eye(4)[3]}, gt)
    np.testing.assert_allclose(out["table"][:2, :2], np.eye(2), atol=0.1)
    assert out["signed"][1, 1] == pytest.approx(-1.0) and out["table"][0, 0] == pytest.approx(1.0)
    assert out["table"][2].max() < 0.15
    np.testing.assert_allclose(out["signed"][0, 1], np.corrcoef(w[:, 0], gt["pitch"])[0, 1], atol=1e-12)
