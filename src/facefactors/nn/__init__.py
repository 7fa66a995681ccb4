"""Reusable network blocks: residual down/up blocks, modulated convolution (StyleGAN2), noise
injection, toRGB, mapping MLP, dense heads, gradient reversal."""

from facefactors.nn.blocks import ConvAct, ResidualDownBlock, ResidualEncoder, ResidualUpBlock
from facefactors.nn.grad_reverse import GradientReversal, grad_reverse
from facefactors.nn.heads import MLP, ClassifierHead
from facefactors.nn.modulated import (
    EqualLinear,
    MappingNetwork,
    ModulatedConv2d,
    NoiseInjection,
    StyleLayer,
    StyleSynthesis,
    ToRGB,
)

__all__ = [
    "MLP",
    "ClassifierHead",
    "ConvAct",
    "EqualLinear",
    "GradientReversal",
    "MappingNetwork",
    "ModulatedConv2d",
    "NoiseInjection",
    "ResidualDownBlock",
    "ResidualEncoder",
    "ResidualUpBlock",
    "StyleLayer",
    "StyleSynthesis",
    "ToRGB",
    "grad_reverse",
]
