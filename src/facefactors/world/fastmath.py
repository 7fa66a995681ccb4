"""Fast elementwise primitives for the world's analytic maps (issue 2, section 6: speed).

On x86 CPUs PyTorch's vectorised ``exp`` drops to a scalar path (about 100x slower) for
arguments below about -87 (results in the float32 denormal range), ``sigmoid`` does the same
for |x| > ~80, and ``pow`` with a non-integer exponent is never vectorised. The world's Gaussian
bumps and soft region edges put most grid points far out in those tails, so these helpers keep
every argument in the fast range. They differ from the plain formulas by less than 1e-30
(exp, pow) or 1e-7 (soft), far below anything an 8-bit image or a test can see.
"""

from __future__ import annotations

import torch

EXP_FLOOR = -80.0  # exp(-80) ~ 1.8e-35: still a normal float32, indistinguishable from 0 here


def expn(a: torch.Tensor) -> torch.Tensor:
    """exp(a) for a <= 0 with the far tail clamped (no denormals, no scalar fallback).

    ``a`` is consumed (clamped in place), so pass a fresh temporary.
    """
    return a.clamp_(min=EXP_FLOOR).exp_()


def gauss(x, y, cx, cy, sx, sy):
    """exp(-((x - cx) / sx)^2 - ((y - cy) / sy)^2), broadcasting."""
    u = (x - cx) / sx
    v = (y - cy) / sy
    return expn(torch.addcmul(u * u, v, v).neg_())


def gauss1(x, cx, sx):
    """exp(-((x - cx) / sx)^2), broadcasting."""
    u = (x - cx) / sx
    return expn((u * u).neg_())


def soft(x, width):
    """Smooth step 0 -> 1 around x = 0 over ``width``: sigmoid(x / width), written with tanh
    (vectorised for every argument): sigmoid(t) = (1 + tanh(t / 2)) / 2."""
    return torch.tanh(x * (0.5 / width)).mul_(0.5).add_(0.5)


def powf(x: torch.Tensor, p) -> torch.Tensor:
    """x ** p for x >= 0 and a positive (possibly per-face tensor) exponent, via exp(p log x)."""
    return expn(x.clamp_min(1e-30).log_() * p)
