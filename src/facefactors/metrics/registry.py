"""A registry of metrics by name.

Every metric is a plain function ``arrays in -> dict out``; registering it under a name lets the
evaluate command, the benchmark and the report look metrics up without importing each module.
``kind`` says what a metric eats:

* ``"codes"``     -- ``(codes (N, D), factors (N, K) int)``, the disentanglement_lib setting;
* ``"sampler"``   -- a ground-truth sampler (see :mod:`facefactors.metrics.sampler`) and a
                     representation function (interventional metrics: beta-VAE, FactorVAE, DS);
* ``"features"``  -- ``(features {attribute: (N, D)}, labels {factor: (N,)})`` (UFE metrics);
* ``"other"``     -- anything else (verification pairs, images, latent directions).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

MetricKind = Literal["codes", "sampler", "features", "other"]


@dataclass(frozen=True)
class MetricInfo:
    name: str  # registry key, e.g. "mig"
    fn: Callable[..., dict]  # the metric itself
    kind: MetricKind  # what it takes (see module docstring)
    summary: str  # one line for the report's "how to read this"


_REGISTRY: dict[str, MetricInfo] = {}


def register(name: str, kind: MetricKind, summary: str) -> Callable[[Callable[..., dict]], Callable[..., dict]]:
    """Decorator: ``@register("mig", "codes", "...")`` over a metric function."""

    def wrap(fn: Callable[..., dict]) -> Callable[..., dict]:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"metric {name!r} is registered twice")
        _REGISTRY[name] = MetricInfo(name, fn, kind, summary)
        return fn

    return wrap


def get_metric(name: str) -> MetricInfo:
    from facefactors.utils.errors import UserError

    if name not in _REGISTRY:
        raise UserError(f"unknown metric {name!r}; choose from {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def available(kind: MetricKind | None = None) -> list[str]:
    """Names of the registered metrics (of one kind, if given), in registration order."""
    return [n for n, m in _REGISTRY.items() if kind is None or m.kind == kind]
