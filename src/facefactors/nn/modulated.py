"""StyleGAN2 building blocks (Karras et al. 2020, "Analyzing and improving the image quality of
StyleGAN", sec. 2.2 and Fig. 2c/d; the generator used by the UFE decoder, Banerjee et al.
sec. 4.2, and by the linear-semantics paper, Zheng et al. sec. 3).

* :class:`EqualLinear` — dense layer with the equalised learning rate of StyleGAN (weights
  stored ~N(0, 1) and scaled by ``lr_mul / sqrt(fan_in)`` at run time).
* :class:`ModulatedConv2d` — weight modulation by a per-sample style ``s`` (eq. 1 of
  StyleGAN2: ``w'_ijk = s_i w_ijk``) and demodulation (eq. 3:
  ``w''_ijk = w'_ijk / sqrt(sum_ik w'_ijk^2 + eps)``), computed in the "non-fused" form
  ``conv(x * s) * d``, which is exactly equal and avoids grouped convolutions (faster on CPU);
  the fused grouped form is kept as ``fused=True`` for reference and pinned equal in tests.
* :class:`NoiseInjection` — per-pixel noise with a learned per-channel strength.
* :class:`ToRGB` — modulated 1x1 conv without demodulation, for the skip generator of Fig. 7a.
* :class:`MappingNetwork` — the z -> w MLP (8 layers, lr multiplier 0.01 in StyleGAN2).
* :class:`StyleSynthesis` — the skip-architecture synthesis network from a learned 4x4
  constant up to ``image_size``, the style fed to every layer (optionally also projected to
  the 4x4 input, ``input_from_style``: ours, for decoders that reconstruct).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

NoiseMode = Literal["random", "const", "none"]


class EqualLinear(nn.Module):
    """Dense layer with equalised learning rate (StyleGAN sec. 4.1)."""

    def __init__(
        self,
        in_dim: int,  # input features
        out_dim: int,  # output features
        bias_init: float = 0.0,  # 1.0 for style affines so styles start at identity scaling
        lr_mul: float = 1.0,  # learning-rate multiplier (0.01 in the mapping network)
        activation: bool = False,  # LeakyReLU(0.2) * sqrt(2) after the layer
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init) / lr_mul))
        self.weight_gain = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight * self.weight_gain, self.bias * self.lr_mul)
        if self.activation:
            y = F.leaky_relu(y, 0.2) * math.sqrt(2)  # gain keeps the activation variance ~1
        return y


class ModulatedConv2d(nn.Module):
    """Style-modulated convolution: (B, C_in, H, W), style (B, S) -> (B, C_out, H', W')."""

    def __init__(
        self,
        in_ch: int,  # input channels
        out_ch: int,  # output channels
        kernel: int,  # square kernel size (odd, "same" padding)
        style_dim: int,  # size of the style vector fed to the affine layer A
        demodulate: bool = True,  # StyleGAN2 eq. 3; False for toRGB
        upsample: bool = False,  # bilinear x2 before the convolution
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.weight_gain = 1 / math.sqrt(in_ch * kernel * kernel)
        self.affine = EqualLinear(style_dim, in_ch, bias_init=1.0)  # "A" of StyleGAN2 Fig. 2
        self.demodulate = demodulate
        self.upsample = upsample
        self.padding = kernel // 2

    def forward(self, x: torch.Tensor, style: torch.Tensor, fused: bool = False) -> torch.Tensor:
        s = self.affine(style)  # (B, C_in); x is (B, C_in, H, W)  # (B, C_in)
        w = self.weight * self.weight_gain  # (C_out, C_in, k, k)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        if fused:
            return self._fused(x, s, w)
        x = F.conv2d(x * s[:, :, None, None], w, padding=self.padding)  # (B, C_out, H', W')
        if self.demodulate:
            # d_bj = 1 / sqrt(sum_{i,k} (s_bi w_jik)^2): a (B, C_in) x (C_in, C_out) product.
            d = torch.rsqrt(s.square() @ w.square().sum((2, 3)).t() + 1e-8)  # (B, C_out)
            x = x * d[:, :, None, None]
        return x

    def _fused(self, x: torch.Tensor, s: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The per-sample weights of StyleGAN2 eqs. 1 and 3 as one grouped convolution."""
        B, C, H, W = x.shape
        wb = w[None] * s[:, None, :, None, None]  # (B, C_out, C_in, k, k)
        if self.demodulate:
            wb = wb * torch.rsqrt(wb.square().sum((2, 3, 4), keepdim=True) + 1e-8)
        y = F.conv2d(x.reshape(1, B * C, H, W), wb.reshape(-1, C, *w.shape[2:]), padding=self.padding, groups=B)
        return y.reshape(B, -1, *y.shape[2:])


class NoiseInjection(nn.Module):
    """Adds ``strength_c * n(x, y)`` with n ~ N(0, 1) per pixel (StyleGAN sec. 2 "B")."""

    def __init__(
        self,
        channels: int,  # channels of the feature map
        resolution: int,  # side of the feature map (for the fixed "const" noise)
    ):
        super().__init__()
        self.strength = nn.Parameter(torch.zeros(channels))  # starts off: noise is learned in
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))

    def forward(self, x: torch.Tensor, mode: NoiseMode = "random") -> torch.Tensor:
        if mode == "none":
            return x
        if mode == "const":
            noise = self.noise_const.expand(x.shape[0], 1, *x.shape[2:])
        else:
            noise = torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype)
        return x + noise * self.strength[None, :, None, None]


class StyleLayer(nn.Module):
    """Modulated conv + noise + bias + LeakyReLU: one layer of the synthesis network."""

    def __init__(
        self,
        in_ch: int,  # input channels
        out_ch: int,  # output channels
        style_dim: int,  # style vector size
        resolution: int,  # output side (for the constant noise buffer)
        upsample: bool = False,  # double the resolution first
    ):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, style_dim, upsample=upsample)
        self.noise = NoiseInjection(out_ch, resolution)
        self.bias = nn.Parameter(torch.zeros(out_ch))

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise_mode: NoiseMode = "random") -> torch.Tensor:
        x = self.noise(self.conv(x, style), noise_mode)
        return F.leaky_relu(x + self.bias[None, :, None, None], 0.2) * math.sqrt(2)


class ToRGB(nn.Module):
    """Feature map -> RGB contribution (modulated 1x1, no demodulation; StyleGAN2 Fig. 7a)."""

    def __init__(
        self,
        in_ch: int,  # input channels
        style_dim: int,  # style vector size
        out_ch: int = 3,  # image channels
    ):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(out_ch))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return self.conv(x, style) + self.bias[None, :, None, None]


class MappingNetwork(nn.Module):
    """z (B, Z) -> w (B, W): pixel-normalised input, ``num_layers`` equalised dense layers."""

    def __init__(
        self,
        z_dim: int,  # latent size
        w_dim: int,  # intermediate latent size
        num_layers: int = 8,  # dense layers (8 in StyleGAN2)
        lr_mul: float = 0.01,  # learning-rate multiplier of the mapping layers
    ):
        super().__init__()
        dims = [z_dim] + [w_dim] * num_layers
        self.layers = nn.Sequential(*[EqualLinear(dims[i], dims[i + 1], lr_mul=lr_mul, activation=True) for i in range(num_layers)])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z * torch.rsqrt(z.square().mean(1, keepdim=True) + 1e-8)  # (B, Z), unit RMS
        return self.layers(z)  # (B, W)


def synthesis_channels(resolution: int, channel_base: int, channel_max: int) -> int:
    """StyleGAN2's width rule: ``min(channel_base // resolution, channel_max)``."""
    return max(1, min(channel_base // resolution, channel_max))


class StyleSynthesis(nn.Module):
    """Skip-architecture synthesis network (StyleGAN2 Fig. 7a, "skip" generator).

    A learned 4x4 constant is refined by one :class:`StyleLayer`, then each block doubles the
    resolution with two style layers; every block adds its :class:`ToRGB` output to the
    upsampled running image. ``style`` is (B, S) — the same style for every layer, as in the
    UFE decoder — or (B, num_styles, S) for per-layer styles (style mixing).
    """

    def __init__(
        self,
        style_dim: int,  # style vector size (the UFE: all attribute features concatenated)
        image_size: int,  # output side, a power of two >= 8
        channel_base: int = 1024,  # width rule numerator
        channel_max: int = 128,  # width cap
        out_ch: int = 3,  # image channels
        rgb_offset: float = 0.5,  # added to the output so a zero-initialised net sits mid-grey in [0, 1]
        input_from_style: bool = False,  # 4x4 input = const + dense(style) instead of the const alone
    ):
        super().__init__()
        log2 = int(math.log2(image_size))
        if 2**log2 != image_size or image_size < 8:
            raise ValueError(f"StyleSynthesis needs a power-of-two image_size >= 8, got {image_size}")
        ch = lambda r: synthesis_channels(r, channel_base, channel_max)
        self.const = nn.Parameter(torch.randn(1, ch(4), 4, 4))
        # Not in StyleGAN2: when the network must *reconstruct* a given image from its style (the
        # UFE decoder), the const alone leaves the spatial layout to be selected through the
        # modulation of every layer, which a small decoder learns slowly; a dense projection of
        # the style to the 4x4 input hands it the coarse layout directly. Zero-initialised, so it
        # starts as the plain StyleGAN2 generator.
        self.input_projection = nn.Linear(style_dim, ch(4) * 16) if input_from_style else None
        if self.input_projection is not None:
            nn.init.zeros_(self.input_projection.weight)
            nn.init.zeros_(self.input_projection.bias)
        self.first = StyleLayer(ch(4), ch(4), style_dim, 4)
        self.first_rgb = ToRGB(ch(4), style_dim, out_ch)
        self.ups = nn.ModuleList()
        self.convs = nn.ModuleList()
        self.rgbs = nn.ModuleList()
        for r in (2**i for i in range(3, log2 + 1)):
            self.ups.append(StyleLayer(ch(r // 2), ch(r), style_dim, r, upsample=True))
            self.convs.append(StyleLayer(ch(r), ch(r), style_dim, r))
            self.rgbs.append(ToRGB(ch(r), style_dim, out_ch))
        self.num_styles = 2 + 3 * len(self.ups)  # first, first_rgb, then (up, conv, rgb) per block
        self.image_size = image_size
        self.style_dim = style_dim
        self.rgb_offset = rgb_offset

    def forward(self, style: torch.Tensor, noise_mode: NoiseMode = "random") -> torch.Tensor:
        if style.dim() == 2:
            styles = [style] * self.num_styles  # (B, S) shared by every layer
        else:
            styles = list(style.unbind(1))  # (B, num_styles, S)
            if len(styles) != self.num_styles:
                raise ValueError(f"expected {self.num_styles} styles, got {len(styles)}")
        B = styles[0].shape[0]
        x = self.const.expand(B, -1, -1, -1)  # (B, C, 4, 4)
        if self.input_projection is not None:
            x = x + self.input_projection(styles[0]).view_as(x)
        x = self.first(x, styles[0], noise_mode)  # (B, C, 4, 4)
        rgb = self.first_rgb(x, styles[1])  # (B, 3, 4, 4)
        k = 2
        for up, conv, to_rgb in zip(self.ups, self.convs, self.rgbs):
            x = up(x, styles[k], noise_mode)
            x = conv(x, styles[k + 1], noise_mode)  # (B, C_r, r, r)
            rgb = F.interpolate(rgb, scale_factor=2, mode="bilinear", align_corners=False) + to_rgb(x, styles[k + 2])
            k += 3
        return rgb + self.rgb_offset  # (B, 3, H, W), roughly [0, 1]
