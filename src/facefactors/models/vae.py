"""Convolutional VAE family: VAE, β-VAE, β-TCVAE, FactorVAE and conditional VAE networks.

The networks of the student study "Learning Disentangled Representations in Face Images for
Face Attributes Manipulations" (paper 004: a Gaussian encoder q(z|x) = N(mu, sigma^2) and a
decoder p(x|z), trained with the loss of its "VAE LOSS" slide, L = L1 + beta * L2) and of the
future work it names:

* the conditional VAE (Sohn et al. 2015; the study's "Conditional VAE"): encoder q(z|x, y) and
  decoder p(x|z, y) also take the known labels y, as one-hot vectors (categorical) or
  standardised values (continuous), each with a "known" flag so a missing label (-1 / NaN) is
  simply "not given" rather than a wrong value;
* FactorVAE (Kim & Mnih 2018, Sec. 3): a discriminator D(z) telling samples of q(z) from
  samples of prod_j q(z_j), obtained by permuting each latent dimension across the batch
  (their Algorithm 1, ``permute_dims``).

The encoder/decoder follow the architecture of Higgins et al. 2017 / Burgess et al. 2018
(4x4 stride-2 convolutions, a fully connected bottleneck); leaky ReLUs (slope 0.2) instead of
ReLUs are our choice, so narrow layers cannot go dead on mostly dark images. Optionally
(``decoder_res_blocks`` = k > 0, our addition) the decoder gets more capacity near the output: a
residual block of two 3x3 convolutions (He et al. 2016, identity skip) after each of its last k
upsamplings, the last one at full resolution, and a 3x3 convolution to the image instead of a
transposed convolution straight to 3 channels; the plain mirror draws every output pixel from
one 4x4 transposed convolution of the half-resolution features, which leaves little room for
1-2 px details such as the mouth at 32x32 (tried for the smile vector: it did not bring the smile
into the reconstructions, and makes a step 3-5x slower; docs/results.md). Losses live in
``models/vae_losses.py``; training in ``train/vae.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn

from facefactors.data.description import DatasetDescription
from facefactors.utils.errors import UserError
from facefactors.utils.shapes import check_shape


@dataclass
class VAEModelConfig:
    kind: str = "beta_vae"  # vae | beta_vae | beta_tcvae | factor_vae | cvae (selects the loss)
    latent_dim: int = 10  # number of latent dimensions D
    channels: tuple[int, ...] = (32, 32, 64, 64)  # conv widths; each halves the resolution
    hidden: int = 256  # width of the fully connected bottleneck
    image_size: int = 64  # square input size; must be divisible by 2**len(channels)
    decoder_res_blocks: int = 0  # residual 3x3 blocks after the decoder's last k upsamplings (0 = plain mirror); <= len(channels)
    image_channels: int = 3
    condition: tuple[str, ...] = ()  # factor names the conditional VAE takes as input
    disc_hidden: int = 1000  # FactorVAE discriminator width (Kim & Mnih use 1000)
    disc_layers: int = 6  # FactorVAE discriminator depth (Kim & Mnih use 6)


MODEL_KINDS = ("vae", "beta_vae", "beta_tcvae", "factor_vae", "cvae")


class VAEOutput(NamedTuple):
    logits: torch.Tensor  # (B, C, H, W) Bernoulli logits of p(x|z); sigmoid gives the image
    mu: torch.Tensor  # (B, D)
    logvar: torch.Tensor  # (B, D) log sigma^2
    z: torch.Tensor  # (B, D) reparameterised sample


class LabelConditioner(nn.Module):
    """Labels dict -> condition vector (B, K) for the conditional VAE.

    Categorical factor with n classes -> n one-hot entries (all zero when missing) + 1 known
    flag; continuous factor -> 1 standardised value (0 when missing) + 1 known flag. The
    standardisation statistics are buffers (saved with the weights), set once from training
    labels by :meth:`fit_statistics`.
    """

    def __init__(
        self,
        factors: list[tuple[str, int]],  # (name, num_classes); num_classes 0 = continuous
    ):
        super().__init__()
        self.factors = [(str(n), int(k)) for n, k in factors]
        self.register_buffer("mean", torch.zeros(len(self.factors)))
        self.register_buffer("std", torch.ones(len(self.factors)))

    @property
    def dim(self) -> int:
        return sum((k if k > 0 else 1) + 1 for _, k in self.factors)

    @torch.no_grad()
    def fit_statistics(self, labels: dict[str, torch.Tensor]) -> None:
        """Mean and std of each continuous factor over known values (NaN = missing)."""
        for i, (name, k) in enumerate(self.factors):
            if k == 0 and name in labels:
                v = labels[name].double()
                v = v[~torch.isnan(v)]
                if v.numel() > 1:
                    self.mean[i] = v.mean().float()
                    self.std[i] = v.std().clamp_min(1e-6).float()

    def forward(self, labels: dict[str, torch.Tensor], batch: int) -> torch.Tensor:
        parts = []
        device = self.mean.device
        for i, (name, k) in enumerate(self.factors):
            if name not in labels:
                raise UserError(f"conditional VAE needs label {name!r} but the batch has only {sorted(labels)}; pass it (use -1 / NaN for unknown)")
            y = labels[name].to(device)
            check_shape(y, (batch,), f"label {name}")
            if k > 0:
                known = y >= 0
                onehot = torch.zeros(batch, k, device=device)
                idx = y.long().clamp(0, k - 1)
                onehot[torch.arange(batch, device=device), idx] = 1.0
                onehot = onehot * known[:, None]
                parts += [onehot, known[:, None].float()]
            else:
                y = y.float()
                known = ~torch.isnan(y)
                val = torch.where(known, (y - self.mean[i]) / self.std[i], torch.zeros_like(y))
                parts += [val[:, None], known[:, None].float()]
        return torch.cat(parts, dim=1)  # (B, K)


class ConvEncoder(nn.Module):
    """x (B, C, H, W) [+ condition (B, K)] -> mu, logvar (B, D)."""

    def __init__(
        self,
        image_channels: int,  # C of the input image
        image_size: int,  # H = W of the input image
        channels: tuple[int, ...],  # conv widths, each a stride-2 4x4 conv
        hidden: int,  # bottleneck width
        latent_dim: int,  # D
        cond_dim: int = 0,  # K; 0 = unconditional
    ):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = image_channels
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            c_in = c
        self.conv = nn.Sequential(*layers)
        self.final_size = image_size // 2 ** len(channels)
        flat = c_in * self.final_size**2
        self.fc = nn.Sequential(nn.Linear(flat + cond_dim, hidden), nn.LeakyReLU(0.2, inplace=True), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2, inplace=True))
        self.head = nn.Linear(hidden, 2 * latent_dim)
        self.latent_dim = latent_dim

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv(x).flatten(1)  # (B, C' * s * s)
        if cond is not None:
            h = torch.cat([h, cond], dim=1)
        mu, logvar = self.head(self.fc(h)).chunk(2, dim=1)  # (B, D) each
        return mu, logvar


def check_res_blocks(res_blocks: int, channels) -> None:
    """``model.decoder_res_blocks`` must name some of the decoder's upsamplings (0 to all)."""
    if not 0 <= res_blocks <= len(channels):
        raise UserError(f"model.decoder_res_blocks={res_blocks} must be between 0 and len(model.channels)={len(channels)}")


class ResidualBlock(nn.Module):
    """(B, C, H, W) -> (B, C, H, W): x + conv3x3(lrelu(conv3x3(x))) (He et al. 2016, identity skip)."""

    def __init__(
        self,
        channels: int,  # C, kept
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x comes out of a LeakyReLU; the sum is passed on without another one (pre-activation form).
        return x + self.conv2(self.act(self.conv1(x)))


class ConvDecoder(nn.Module):
    """z (B, D) [+ condition (B, K)] -> Bernoulli logits (B, C, H, W); mirror of ConvEncoder."""

    def __init__(
        self,
        image_channels: int,  # C of the output image
        image_size: int,  # H = W of the output image
        channels: tuple[int, ...],  # encoder widths (used in reverse order)
        hidden: int,  # bottleneck width
        latent_dim: int,  # D
        cond_dim: int = 0,  # K; 0 = unconditional
        res_blocks: int = 0,  # residual blocks after the last k upsamplings (0 = the plain mirror)
    ):
        super().__init__()
        check_res_blocks(res_blocks, channels)
        self.start = image_size // 2 ** len(channels)
        self.start_channels = channels[-1]
        self.fc = nn.Sequential(
            nn.Linear(latent_dim + cond_dim, hidden),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden, channels[-1] * self.start**2),
            nn.LeakyReLU(0.2, inplace=True),
        )
        layers: list[nn.Module] = []
        widths = list(reversed(channels))
        n = len(widths)
        for i, c in enumerate(widths):
            last = i + 1 == n
            # With res_blocks the last upsampling keeps features (channels[0]) at full resolution.
            c_out = widths[i + 1] if not last else (widths[-1] if res_blocks else image_channels)
            layers.append(nn.ConvTranspose2d(c, c_out, 4, stride=2, padding=1))
            if not last or res_blocks:
                layers.append(nn.LeakyReLU(0.2, inplace=True))
            if n - 1 - i < res_blocks:  # one of the last res_blocks resolutions
                layers.append(ResidualBlock(c_out))
        if res_blocks:
            layers.append(nn.Conv2d(widths[-1], image_channels, 3, padding=1))
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if cond is not None:
            z = torch.cat([z, cond], dim=1)
        h = self.fc(z).view(z.shape[0], self.start_channels, self.start, self.start)
        return self.deconv(h)  # (B, C, H, W) logits


class VAE(nn.Module):
    """Gaussian-encoder VAE; with ``condition`` factors it is the conditional VAE."""

    def __init__(
        self,
        config: VAEModelConfig,  # architecture
        condition_factors: list[tuple[str, int]] | None = None,  # (name, classes) for the CVAE
    ):
        super().__init__()
        if config.image_size % 2 ** len(config.channels) or config.image_size < 2 ** len(config.channels):
            raise UserError(f"model.image_size={config.image_size} must be a multiple of 2**len(model.channels)={2 ** len(config.channels)}; change one of them")
        if config.latent_dim < 1:
            raise UserError(f"model.latent_dim={config.latent_dim} must be at least 1")
        self.config = config
        self.conditioner = LabelConditioner(condition_factors) if condition_factors else None
        k = self.conditioner.dim if self.conditioner is not None else 0
        args = (config.image_channels, config.image_size, tuple(config.channels), config.hidden, config.latent_dim, k)
        self.encoder = ConvEncoder(*args)
        self.decoder = ConvDecoder(*args, res_blocks=config.decoder_res_blocks)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def is_conditional(self) -> bool:
        return self.conditioner is not None

    def condition(self, labels: dict[str, torch.Tensor] | None, batch: int) -> torch.Tensor | None:
        if self.conditioner is None:
            return None
        if labels is None:
            # No labels at all: every condition is "unknown" (all-missing).
            labels = {n: (torch.full((batch,), -1) if k > 0 else torch.full((batch,), float("nan"))) for n, k in self.conditioner.factors}
        return self.conditioner(labels, batch)

    def encode(self, x: torch.Tensor, labels: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        check_shape(x, (None, c.image_channels, c.image_size, c.image_size), "VAE input image")
        return self.encoder(x, self.condition(labels, x.shape[0]))

    def decode(self, z: torch.Tensor, labels: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        check_shape(z, (None, self.latent_dim), "latent code")
        return self.decoder(z, self.condition(labels, z.shape[0]))  # (B, C, H, W) logits

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype) if generator is not None else torch.randn_like(mu)
        return mu + eps * torch.exp(0.5 * logvar)

    def forward(self, x: torch.Tensor, labels: dict[str, torch.Tensor] | None = None) -> VAEOutput:
        mu, logvar = self.encode(x, labels)  # (B, D) each
        z = self.reparameterize(mu, logvar)
        return VAEOutput(self.decode(z, labels), mu, logvar, z)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, labels: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Images decoded from the posterior mean, (B, C, H, W) in [0, 1]."""
        mu, _ = self.encode(x, labels)
        return torch.sigmoid(self.decode(mu, labels))

    @torch.no_grad()
    def sample(self, n: int, labels: dict[str, torch.Tensor] | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images decoded from z ~ N(0, I), (n, C, H, W) in [0, 1]."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator).to(device)
        return torch.sigmoid(self.decode(z, labels))


def permute_dims(z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Kim & Mnih 2018, Algorithm 1 ``permute_dims``: permute each column of z (B, D) independently
    across the batch, giving samples of prod_j q(z_j): every marginal is kept, dependence broken."""
    b, d = z.shape
    keys = torch.rand(b, d, generator=generator).to(z.device)
    idx = keys.argsort(dim=0)  # (B, D): an independent permutation per dimension
    return torch.gather(z, 0, idx)


class FactorDiscriminator(nn.Module):
    """FactorVAE discriminator D(z) (Kim & Mnih 2018, Sec. 3): an MLP giving 2 logits,
    class 0 = "sample of q(z)", class 1 = "sample of prod_j q(z_j)"."""

    def __init__(
        self,
        latent_dim: int,  # D
        hidden: int = 1000,  # width of each hidden layer
        layers: int = 6,  # number of hidden layers
    ):
        super().__init__()
        mods: list[nn.Module] = []
        d = latent_dim
        for _ in range(layers):
            mods += [nn.Linear(d, hidden), nn.LeakyReLU(0.2, inplace=True)]
            d = hidden
        mods.append(nn.Linear(d, 2))
        self.net = nn.Sequential(*mods)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)  # (B, 2)


def condition_factors(description: DatasetDescription, names: tuple[str, ...] | list[str]) -> list[tuple[str, int]]:
    """Resolve condition factor names against a data set description -> (name, num_classes)."""
    out = []
    for n in names:
        if n not in description:
            raise UserError(f"model.condition names {n!r}, which data set {description.name!r} does not have; choose from {description.names}")
        f = description[n]
        out.append((n, f.num_classes))
    return out


def build_vae(config: VAEModelConfig, description: DatasetDescription | None = None) -> VAE:
    """The VAE of ``config``; a conditional one needs the data description to size the labels."""
    if config.kind not in MODEL_KINDS:
        raise UserError(f"model.kind={config.kind!r} is not one of {list(MODEL_KINDS)}")
    cond = None
    if config.condition:
        if description is None:
            raise UserError("a conditional VAE (model.condition) needs the data set description to size its label inputs")
        cond = condition_factors(description, config.condition)
    elif config.kind == "cvae":
        raise UserError("model.kind=cvae needs model.condition, e.g. --set model.condition=[expression,eyeglasses]")
    return VAE(config, cond)
