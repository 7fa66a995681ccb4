"""Residual convolution blocks (He et al. 2016) used by encoders and discriminators.

The UFE encoder (Banerjee et al., sec. 4.2) is "a sequence of 5 down-sampling residual blocks";
we use the StyleGAN2 discriminator form of the block (Karras et al. 2020, Fig. 7b): a
two-convolution main path, a 1x1 skip path, both downsampled by 2, summed and scaled by
1/sqrt(2) so the variance of the sum matches its inputs. The up block mirrors it for
non-style decoders (VAE family).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def he_init(conv: nn.Module, slope: float = 0.2) -> nn.Module:
    """He (Kaiming) normal init for a LeakyReLU(slope) layer, zero bias.

    PyTorch's default conv init shrinks the activation variance by ~3x per layer; after the
    ~10 layers of an encoder the image-dependent part of the features is then tiny next to
    the biases and all images start with (almost) the same features, which stalls the
    contrastive and classification losses for many steps.
    """
    nn.init.kaiming_normal_(conv.weight, a=slope, mode="fan_in", nonlinearity="leaky_relu")
    if getattr(conv, "bias", None) is not None:
        nn.init.zeros_(conv.bias)
    return conv


class ConvAct(nn.Sequential):
    """3x3 (or kxk) convolution + LeakyReLU(0.2): the basic layer of the blocks below."""

    def __init__(
        self,
        in_ch: int,  # input channels
        out_ch: int,  # output channels
        kernel: int = 3,  # square kernel size (odd, "same" padding)
        stride: int = 1,  # 2 halves the resolution
    ):
        super().__init__(he_init(nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2)), nn.LeakyReLU(0.2))


class ResidualDownBlock(nn.Module):
    """(B, C_in, H, W) -> (B, C_out, H/2, W/2), residual."""

    def __init__(
        self,
        in_ch: int,  # input channels
        out_ch: int,  # output channels
    ):
        super().__init__()
        self.conv1 = ConvAct(in_ch, in_ch)
        # The strided conv downsamples the main path: cheaper than conv + average pool on CPU.
        self.conv2 = ConvAct(in_ch, out_ch, stride=2)
        self.skip = he_init(nn.Conv2d(in_ch, out_ch, 1, bias=False), slope=1.0)  # linear path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.skip(F.avg_pool2d(x, 2))  # (B, C_out, H/2, W/2)
        return (self.conv2(self.conv1(x)) + skip) * (1 / math.sqrt(2))


class ResidualUpBlock(nn.Module):
    """(B, C_in, H, W) -> (B, C_out, 2H, 2W), residual (nearest upsampling then convolutions)."""

    def __init__(
        self,
        in_ch: int,  # input channels
        out_ch: int,  # output channels
    ):
        super().__init__()
        self.conv1 = ConvAct(in_ch, out_ch)
        self.conv2 = ConvAct(out_ch, out_ch)
        self.skip = he_init(nn.Conv2d(in_ch, out_ch, 1, bias=False), slope=1.0)  # linear path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")  # (B, C_in, 2H, 2W)
        return (self.conv2(self.conv1(x)) + self.skip(x)) * (1 / math.sqrt(2))


class ResidualEncoder(nn.Module):
    """A stack of :class:`ResidualDownBlock` from an image to a flat feature vector.

    ``channels[i]`` is the output width of block ``i``; the number of blocks sets the
    downsampling factor ``2 ** len(channels)``.
    """

    def __init__(
        self,
        image_size: int,  # input height = width (a multiple of 2 ** len(channels))
        channels: tuple[int, ...] | list[int],  # output channels of each down block
        in_ch: int = 3,  # image channels
        stem_ch: int = 0,  # channels of a stride-1 stem conv before the blocks (0 = first block width / 2)
    ):
        super().__init__()
        factor = 2 ** len(channels)
        if image_size % factor:
            raise ValueError(f"image_size {image_size} is not divisible by 2**{len(channels)} = {factor}")
        stem_ch = stem_ch or max(8, channels[0] // 2)
        self.stem = ConvAct(in_ch, stem_ch)
        widths = [stem_ch, *channels]
        self.blocks = nn.Sequential(*[ResidualDownBlock(widths[i], widths[i + 1]) for i in range(len(channels))])
        self.out_resolution = image_size // factor
        self.out_dim = channels[-1] * self.out_resolution**2
        self.image_size = image_size

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(image))  # (B, C_last, H/2^n, W/2^n)
        return x.flatten(1)  # (B, out_dim)
