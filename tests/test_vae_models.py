"""VAE family networks and objectives: shapes, closed forms, estimators on known Gaussians."""

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal
from torch.distributions import kl_divergence as torch_kl

from facefactors.data.description import DatasetDescription, Factor
from facefactors.models.vae import VAE, FactorDiscriminator, VAEModelConfig, build_vae, permute_dims
from facefactors.models.vae_losses import (
    LossConfig,
    capacity,
    cyclical_weight,
    discriminator_loss,
    gradient_l1,
    kl_divergence,
    log_importance_weights,
    reconstruction_loss,
    tc_decomposition,
    vae_objective,
)
from facefactors.utils.errors import UserError

SMALL = dict(latent_dim=4, channels=(8, 8, 16), hidden=32, image_size=32)


def description():
    return DatasetDescription(
        "toy",
        (
            Factor("smile", "categorical", ("no", "yes")),
            Factor("pose", "categorical", ("left", "front", "right")),
            Factor("yaw", "continuous"),
        ),
    )


@pytest.mark.parametrize("size,channels", [(32, (8, 8, 16)), (64, (8, 8, 16, 16))])
def test_shapes(size, channels):
    model = VAE(VAEModelConfig(latent_dim=5, channels=channels, hidden=32, image_size=size))
    x = torch.rand(3, 3, size, size)
    out = model(x)
    assert out.logits.shape == (3, 3, size, size)
    assert out.mu.shape == out.logvar.shape == out.z.shape == (3, 5)
    assert model.reconstruct(x).shape == (3, 3, size, size)
    s = model.sample(2)
    assert s.shape == (2, 3, size, size) and s.min() >= 0 and s.max() <= 1


@pytest.mark.parametrize("size,channels,k", [(32, (8, 8, 16), 1), (32, (8, 8, 16), 2), (64, (8, 8, 16, 16), 4)])
def test_decoder_residual_blocks_shapes_and_gradients(size, channels, k):
    torch.manual_seed(0)
    model = VAE(VAEModelConfig(latent_dim=5, channels=channels, hidden=32, image_size=size, decoder_res_blocks=k))
    blocks = [m for m in model.decoder.deconv if type(m).__name__ == "ResidualBlock"]
    assert len(blocks) == k
    assert blocks[-1].conv1.in_channels == channels[0]  # the last one works at full resolution on channels[0] features
    x = torch.rand(3, 3, size, size)
    out = model(x)
    assert out.logits.shape == (3, 3, size, size)
    parts = vae_objective("vae", out.logits, x, out.mu, out.logvar, out.z, LossConfig(reconstruction="gaussian", gaussian_sigma=0.05, gradient_weight=2.0))
    parts["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_decoder_without_residual_blocks_is_the_plain_mirror():
    # Default 0 keeps today's layers and parameter names, so earlier runs' weights still load.
    names = [n for n, _ in VAE(VAEModelConfig(**SMALL)).decoder.named_parameters()]
    assert [n for n in names if n.startswith("deconv")] == ["deconv.0.weight", "deconv.0.bias", "deconv.2.weight", "deconv.2.bias", "deconv.4.weight", "deconv.4.bias"]
    with pytest.raises(UserError, match="decoder_res_blocks"):
        VAE(VAEModelConfig(decoder_res_blocks=4, **SMALL))


def test_gradient_l1_by_hand():
    # One channel, 2x3 image; the decoder output is 0.5 everywhere (logit 0).
    x = torch.tensor([[[[0.5, 0.5, 1.0], [0.5, 0.0, 0.5]]]])
    logits = torch.zeros_like(x)
    # diff = x' - x = [[0, 0, -0.5], [0, 0.5, 0]]; horizontal differences: 0, -0.5 | 0.5, -0.5 -> 1.5;
    # vertical: 0, 0.5, 0.5 -> 1.0; total 2.5.
    assert gradient_l1(logits, x).tolist() == pytest.approx([2.5])
    assert gradient_l1(torch.logit(x.clamp(1e-6, 1 - 1e-6)), x).item() == pytest.approx(0.0, abs=1e-5)
    # A constant offset has no gradient error: only edges count.
    assert gradient_l1(torch.full_like(x, 2.0), torch.full_like(x, 0.3)).item() == pytest.approx(0.0, abs=1e-6)
    logits = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    target = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: gradient_l1(t, target), (logits,))


def test_detail_term_adds_to_the_loss_and_is_off_by_default():
    torch.manual_seed(0)
    x, logits = torch.rand(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    mu, logvar, z = torch.randn(4, 2), torch.zeros(4, 2), torch.randn(4, 2)
    plain = vae_objective("vae", logits, x, mu, logvar, z, LossConfig())
    assert "detail" not in plain
    detailed = vae_objective("vae", logits, x, mu, logvar, z, LossConfig(gradient_weight=3.0))
    assert detailed["detail"].item() == pytest.approx(3.0 * gradient_l1(logits, x).mean().item())
    assert detailed["loss"].item() == pytest.approx(plain["loss"].item() + detailed["detail"].item())
    assert detailed["recon"].item() == pytest.approx(plain["recon"].item())  # recon stays -log p(x|z)
    with pytest.raises(UserError, match="gradient_weight"):
        vae_objective("vae", logits, x, mu, logvar, z, LossConfig(gradient_weight=-1.0))


def test_bad_config_and_input_are_clear():
    with pytest.raises(UserError, match="multiple of"):
        VAE(VAEModelConfig(image_size=60, channels=(8, 8, 8)))
    with pytest.raises(ValueError, match="expected shape"):
        VAE(VAEModelConfig(**SMALL)).encode(torch.rand(2, 3, 64, 64))
    with pytest.raises(UserError, match="needs model.condition"):
        build_vae(VAEModelConfig(kind="cvae", **SMALL), description())


@pytest.mark.parametrize("kind", ["vae", "beta_vae", "beta_tcvae", "factor_vae", "cvae"])
def test_every_parameter_gets_a_gradient(kind):
    torch.manual_seed(0)
    cfg = VAEModelConfig(kind=kind, condition=("smile", "yaw") if kind == "cvae" else (), **SMALL)
    model = build_vae(cfg, description())
    x = torch.rand(6, 3, 32, 32)
    labels = {"smile": torch.tensor([0, 1, -1, 1, 0, 1]), "yaw": torch.tensor([1.0, float("nan"), 3, 4, 5, 6])}
    out = model(x, labels)
    d_logits = FactorDiscriminator(4, 16, 2)(out.z) if kind == "factor_vae" else None
    parts = vae_objective(kind, out.logits, x, out.mu, out.logvar, out.z, LossConfig(), d_logits=d_logits)
    parts["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert torch.isfinite(parts["loss"])


def test_kl_matches_closed_form_and_torch_distributions():
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(7, 5, generator=g, dtype=torch.float64)
    logvar = torch.randn(7, 5, generator=g, dtype=torch.float64)
    ours = kl_divergence(mu, logvar)
    ref = torch_kl(Normal(mu, (0.5 * logvar).exp()), Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(1)
    torch.testing.assert_close(ours, ref)
    # Asymmetric known case: mu = 1, sigma = 1 in one dim, 0 elsewhere -> KL = 0.5.
    assert kl_divergence(torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2)).item() == pytest.approx(0.5)
    assert torch.autograd.gradcheck(kl_divergence, (mu.clone().requires_grad_(), logvar.clone().requires_grad_()))


def test_bernoulli_reconstruction_is_the_studys_bce():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    x = torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64)
    p = torch.sigmoid(logits)
    ref = -(x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1)
    torch.testing.assert_close(reconstruction_loss(logits, x, "bernoulli"), ref)
    torch.testing.assert_close(reconstruction_loss(logits, x, "gaussian"), ((p - x) ** 2).flatten(1).sum(1))
    with pytest.raises(UserError, match="not one of"):
        reconstruction_loss(logits, x, "laplace")


def test_gaussian_reconstruction_is_the_fixed_sigma_nll():
    """-log N(x; sigmoid(logits), sigma^2) without its constant; sigma scales the term by 1 / sigma^2,
    so sigma 0.1 weighs reconstruction 50x the plain sum of squares (sigma^2 = 1/2)."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    x = torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64)
    sse = ((torch.sigmoid(logits) - x) ** 2).flatten(1).sum(1)
    torch.testing.assert_close(reconstruction_loss(logits, x, "gaussian", 0.1), sse / 0.02)
    nll = -torch.distributions.Normal(torch.sigmoid(logits), 0.1).log_prob(x).flatten(1).sum(1)
    constant = 48 * (math.log(0.1) + 0.5 * math.log(2 * math.pi))
    torch.testing.assert_close(reconstruction_loss(logits, x, "gaussian", 0.1), nll - constant)
    with pytest.raises(UserError, match="gaussian_sigma"):
        reconstruction_loss(logits, x, "gaussian", 0.0)


def test_gaussian_sigma_reaches_the_training_loss():
    g = torch.Generator().manual_seed(4)
    logits, x = torch.randn(2, 3, 4, 4, generator=g), torch.rand(2, 3, 4, 4, generator=g)
    mu, logvar = torch.zeros(2, 3), torch.zeros(2, 3)
    wide = vae_objective("vae", logits, x, mu, logvar, mu, LossConfig(reconstruction="gaussian"))
    sharp = vae_objective("vae", logits, x, mu, logvar, mu, LossConfig(reconstruction="gaussian", gaussian_sigma=0.1))
    torch.testing.assert_close(sharp["recon"], wide["recon"] * 50)


def _gaussian_posteriors(n, cov, s, seed):
    rng = np.random.default_rng(seed)
    mu = torch.from_numpy(rng.multivariate_normal(np.zeros(len(cov)), cov, size=n))
    logvar = torch.full_like(mu, 2 * math.log(s))
    z = mu + s * torch.from_numpy(rng.standard_normal(mu.shape))
    return z, mu, logvar


@pytest.mark.parametrize("rho", [0.0, 0.8])
def test_tc_estimator_on_a_known_gaussian(rho):
    """Posteriors N(mu_n, s^2 I) with mu_n ~ N(0, S): the aggregate q(z) is N(0, S + s^2 I), whose
    total correlation is -0.5 log det(R) (R its correlation matrix) and whose dimension-wise KL
    to N(0, I) is sum_k KL(N(0, v_k) || N(0, 1))."""
    s = 0.3
    cov = np.array([[1.0, rho, 0.0], [rho, 1.0, 0.0], [0.0, 0.0, 0.5]])
    z, mu, logvar = _gaussian_posteriors(3000, cov, s, seed=3)
    parts = tc_decomposition(z, mu, logvar, dataset_size=3000, estimator="mss")
    total = cov + s**2 * np.eye(3)
    corr = total / np.sqrt(np.outer(np.diag(total), np.diag(total)))
    tc_true = -0.5 * np.log(np.linalg.det(corr))
    v = np.diag(total)
    dwkl_true = float(np.sum(0.5 * (v - 1 - np.log(v))))
    assert parts["tc"].mean().item() == pytest.approx(tc_true, abs=0.05)
    assert parts["dwkl"].mean().item() == pytest.approx(dwkl_true, abs=0.05)
    # The three terms add up to the one-sample KL estimate log q(z|x) - log p(z), per sample.
    log_qzx = Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(1)
    log_pz = Normal(0.0, 1.0).log_prob(z).sum(1)
    torch.testing.assert_close(parts["mi"] + parts["tc"] + parts["dwkl"], log_qzx - log_pz)


def test_importance_weights():
    w = log_importance_weights(5, 100, "mss").exp()
    torch.testing.assert_close(w.sum(1), torch.ones(5, dtype=w.dtype))
    assert w[0, 0].item() == pytest.approx(1 / 100) and w[0, 1].item() == pytest.approx(99 / 400)
    # Batch = data set: the exact mixture 1/N everywhere.
    torch.testing.assert_close(log_importance_weights(4, 4, "mss").exp(), torch.full((4, 4), 0.25, dtype=torch.float64))
    assert log_importance_weights(4, 10, "mws")[0, 0].item() == pytest.approx(-math.log(40))
    with pytest.raises(UserError):
        log_importance_weights(4, 10, "nope")


def test_mws_and_mss_agree_on_tc_up_to_the_mws_constant():
    z, mu, logvar = _gaussian_posteriors(800, np.array([[1.0, 0.6], [0.6, 1.0]]), 0.3, seed=4)
    mss = tc_decomposition(z, mu, logvar, 800, "mss")["tc"].mean().item()
    mws = tc_decomposition(z, mu, logvar, 800, "mws")["tc"].mean().item()
    # MWS shifts TC by (D - 1) log N (see its docstring).
    assert mws - math.log(800) == pytest.approx(mss, abs=1e-6)


def test_permute_dims_keeps_marginals_and_breaks_dependence():
    g = torch.Generator().manual_seed(5)
    a = torch.randn(4000, generator=g)
    z = torch.stack([a, a + 0.1 * torch.randn(4000, generator=g), -a], dim=1)  # strongly dependent
    p = permute_dims(z, torch.Generator().manual_seed(6))
    for k in range(3):
        torch.testing.assert_close(p[:, k].sort().values, z[:, k].sort().values)  # same marginal
    corr = np.corrcoef(p.T.numpy())
    assert np.abs(corr[np.triu_indices(3, 1)]).max() < 0.1
    assert np.abs(np.corrcoef(z.T.numpy())[0, 1]) > 0.9
    # Each column gets its own permutation, so rows are not merely shuffled together.
    order0 = (p[:, 0][:, None] == z[:, 0][None]).float().argmax(1)
    order2 = (p[:, 2][:, None] == z[:, 2][None]).float().argmax(1)
    assert (order0 != order2).float().mean() > 0.9


def test_discriminator_loss_prefers_a_correct_discriminator():
    right = discriminator_loss(torch.tensor([[3.0, -3.0]]), torch.tensor([[-3.0, 3.0]]))
    wrong = discriminator_loss(torch.tensor([[-3.0, 3.0]]), torch.tensor([[3.0, -3.0]]))
    assert right < 0.01 < 5 < wrong


def test_schedules():
    assert capacity(0, 25, 100) == 0 and capacity(50, 25, 100) == pytest.approx(12.5) and capacity(500, 25, 100) == 25
    # 4 cycles over 100 steps, ramp over the first half of each: 0 -> 1 at step 12.5, flat to 25.
    w = [cyclical_weight(t, 100, 4, 0.5) for t in range(100)]
    assert w[0] == 0 and w[6] == pytest.approx(6 / 12.5) and w[20] == 1 and w[25] == 0 and w[99] == 1
    assert max(w) == 1 and min(w) == 0


def test_annealing_changes_the_objective():
    torch.manual_seed(0)
    model = VAE(VAEModelConfig(**SMALL))
    x = torch.rand(4, 3, 32, 32)
    out = model(x)
    args = ("beta_vae", out.logits, x, out.mu, out.logvar, out.z)
    plain = vae_objective(*args, LossConfig(beta=4.0))
    cyc0 = vae_objective(*args, LossConfig(beta=4.0, anneal="cyclical"), step=0, total_steps=100)
    cap = vae_objective(*args, LossConfig(beta=4.0, anneal="capacity", capacity_max=10, capacity_steps=10, capacity_gamma=7), step=5)
    torch.testing.assert_close(plain["loss"], plain["recon"] + 4 * plain["kl"])
    torch.testing.assert_close(cyc0["loss"], cyc0["recon"])  # beta weight 0 at the start of a cycle
    torch.testing.assert_close(cap["loss"], cap["recon"] + 7 * (cap["kl"] - 5).abs())
    with pytest.raises(UserError, match="plain VAE"):
        vae_objective("vae", *args[1:], LossConfig(beta=4.0))


def test_condition_changes_the_decoder_output_and_missing_is_neutral():
    torch.manual_seed(0)
    model = build_vae(VAEModelConfig(kind="cvae", condition=("smile", "pose", "yaw"), **SMALL), description())
    assert model.conditioner.dim == (2 + 1) + (3 + 1) + (1 + 1)
    z = torch.randn(2, 4)
    base = {"smile": torch.tensor([0, 0]), "pose": torch.tensor([1, 1]), "yaw": torch.tensor([0.0, 0.0])}
    a = model.decode(z, base)
    b = model.decode(z, {**base, "smile": torch.tensor([1, 1])})
    c = model.decode(z, {**base, "yaw": torch.tensor([2.0, 2.0])})
    assert (a - b).abs().max() > 1e-4 and (a - c).abs().max() > 1e-4
    cond = model.conditioner({"smile": torch.tensor([-1, 1]), "pose": torch.tensor([2, -1]), "yaw": torch.tensor([float("nan"), 1.0])}, 2)
    assert cond[0, :3].tolist() == [0, 0, 0] and cond[1, :3].tolist() == [0, 1, 1]  # missing smile: no class, not known
    assert cond[0, 3:7].tolist() == [0, 0, 1, 1] and cond[1, 3:7].tolist() == [0, 0, 0, 0]
    assert cond[0, 7:].tolist() == [0, 0] and cond[1, 8].item() == 1
    with pytest.raises(UserError, match="needs label 'pose'"):
        model.decode(z, {"smile": torch.tensor([0, 1])})
    with pytest.raises(UserError, match="does not have"):
        build_vae(VAEModelConfig(kind="cvae", condition=("glasses",), **SMALL), description())


def test_conditioner_standardises_continuous_labels():
    model = build_vae(VAEModelConfig(kind="cvae", condition=("yaw",), **SMALL), description())
    model.conditioner.fit_statistics({"yaw": torch.tensor([10.0, 20.0, 30.0, float("nan")])})
    cond = model.conditioner({"yaw": torch.tensor([20.0, 30.0])}, 2)
    assert cond[:, 0].tolist() == pytest.approx([0.0, 1.0])


def test_a_briefly_trained_cvae_uses_its_labels():
    """150 Adam steps on blobs conditioned on colour: reconstructing from the posterior mean with
    the true colour label must beat the same codes decoded with a wrong colour by a clear margin."""
    from facefactors.train.vae_data import BlobsDataset

    torch.manual_seed(0)
    ds = BlobsDataset(512, 16, seed=0)
    x_all, colour = ds.images, torch.from_numpy(ds.factors[:, 0])
    model = build_vae(VAEModelConfig(kind="cvae", condition=("colour",), latent_dim=4, channels=(16, 32), hidden=64, image_size=16), ds.description)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        idx = torch.randint(0, 512, (32,), generator=g)
        out = model(x_all[idx], {"colour": colour[idx]})
        loss = vae_objective("cvae", out.logits, x_all[idx], out.mu, out.logvar, out.z, LossConfig())["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        x, y = x_all[:256], colour[:256]
        mu, _ = model.encode(x, {"colour": y})
        right = reconstruction_loss(model.decode(mu, {"colour": y}), x).mean()
        wrong = reconstruction_loss(model.decode(mu, {"colour": (y + 1) % 3}), x).mean()
    assert wrong > 1.1 * right
