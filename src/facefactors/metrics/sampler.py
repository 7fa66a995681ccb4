"""The ground-truth sampler protocol the interventional metrics take (duck-typed: metrics never
import the world), and disentanglement_lib's ``generate_batch_factor_code`` on top of it.

A sampler has::

    factor_names: list[str]; factor_sizes: list[int]
    sample_factors(n, rng) -> (n, K) int, column k in [0, factor_sizes[k])
    sample_observations(factors (n, K), rng) -> (n, C, H, W) float32

and a representation function maps observations (n, C, H, W) -> codes (n, D) numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from facefactors.utils.errors import UserError

Representation = Callable[[np.ndarray], np.ndarray]


class GroundTruthSampler(Protocol):
    factor_names: list[str]
    factor_sizes: list[int]

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray: ...

    def sample_observations(self, factors: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...


def as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def check_sampler(sampler) -> None:
    for attr in ("factor_names", "factor_sizes", "sample_factors", "sample_observations"):
        if not hasattr(sampler, attr):
            raise UserError(f"{type(sampler).__name__} is not a ground-truth sampler: it lacks {attr!r} (see facefactors.metrics.sampler)")


def represent(sampler, representation: Representation, factors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Observations of ``factors`` through the representation -> (n, D) float64."""
    codes = np.asarray(representation(sampler.sample_observations(factors, rng)), dtype=np.float64)
    if codes.ndim != 2 or codes.shape[0] != len(factors):
        raise UserError(f"the representation function returned shape {codes.shape} for {len(factors)} observations; it must return (n, D)")
    return codes


def generate_codes(
    sampler: GroundTruthSampler,
    representation: Representation,
    num_points: int,
    rng: np.random.Generator | int | None = 0,
    batch_size: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """i.i.d. (codes (N, D), factors (N, K)) in batches (reference: ``generate_batch_factor_code``)."""
    check_sampler(sampler)
    rng = as_rng(rng)
    codes, factors = [], []
    done = 0
    while done < num_points:
        n = min(batch_size, num_points - done)
        f = np.asarray(sampler.sample_factors(n, rng))
        codes.append(represent(sampler, representation, f, rng))
        factors.append(f)
        done += n
    return np.concatenate(codes), np.concatenate(factors).astype(np.int64)
