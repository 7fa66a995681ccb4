"""Dense heads: MLPs for classification (the UFE prediction heads "ph", paper sec. 4.2:
"3 dense layers each, with softmax activation in the final layer") and generic MLPs (the
StyleGAN mapping network is an MLP too, see :mod:`facefactors.nn.modulated`).

Heads return *logits*; the softmax of the paper is applied by the loss (cross-entropy) or
by ``probabilities``, which is numerically safer than a softmax layer followed by a log.
"""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Sequential):
    """``num_layers`` dense layers with LeakyReLU between them (none after the last)."""

    def __init__(
        self,
        in_dim: int,  # input features
        hidden_dim: int,  # width of the hidden layers
        out_dim: int,  # output features
        num_layers: int = 3,  # dense layers in total (>= 1)
        negative_slope: float = 0.2,  # LeakyReLU slope
    ):
        if num_layers < 1:
            raise ValueError(f"MLP needs at least one layer, got num_layers={num_layers}")
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < num_layers - 1:
                layers.append(nn.LeakyReLU(negative_slope))
        super().__init__(*layers)
        self.in_dim = in_dim
        self.out_dim = out_dim


class ClassifierHead(nn.Module):
    """A prediction head: feature (B, D) -> class logits (B, C)."""

    def __init__(
        self,
        in_dim: int,  # feature size (128 in the UFE)
        num_classes: int,  # classes of the attribute
        hidden_dim: int = 128,  # width of the hidden layers
        num_layers: int = 3,  # dense layers (3 in the UFE paper)
    ):
        super().__init__()
        self.num_classes = num_classes
        self.mlp = MLP(in_dim, hidden_dim, num_classes, num_layers)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.mlp(feature)  # (B, C) logits

    @torch.no_grad()
    def probabilities(self, feature: torch.Tensor) -> torch.Tensor:
        return self.forward(feature).softmax(-1)  # (B, C)
