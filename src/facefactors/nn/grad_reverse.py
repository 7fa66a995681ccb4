"""Gradient reversal (Ganin et al. 2016, "Domain-adversarial training", sec. 4).

The identity in the forward pass; multiplies the gradient by ``-scale`` in the backward pass.
The UFE uses it for L_oth (eq. 4 of the UFE paper, Banerjee et al.): heads on the "others"
feature learn to predict every labelled attribute, while the encoder receives the reversed
gradient and so is pushed to make f_oth *uninformative* of those attributes.
"""

from __future__ import annotations

import torch
from torch import nn


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return -ctx.scale * grad, None


def grad_reverse(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``x`` forward, ``-scale * grad`` backward."""
    return _GradReverse.apply(x, float(scale))


class GradientReversal(nn.Module):
    """Module form of :func:`grad_reverse` (to place inside an ``nn.Sequential``)."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale  # magnitude of the reversed gradient

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"
