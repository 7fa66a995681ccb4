"""The face world as a ground-truth factor sampler for the disentanglement metrics
(beta-VAE, FactorVAE, MIG, DCI, SAP, ... as in Locatello et al. 2019, disentanglement_lib's
``GroundTruthData``: ``sample_factors`` then ``sample_observations_from_factors``).

Factors are discretised: categorical factors keep their classes, identity is restricted to the
first ``num_identities`` of the split, continuous traits (age_value, gender_value, skin_tone)
are cut into ``bins`` equal bins and drawn uniformly inside the chosen bin. Everything not
named as a factor is drawn at random (a nuisance), fresh for every observation.
"""

from __future__ import annotations

import numpy as np
import torch

from facefactors.world import expression as expr
from facefactors.world.samplers import _FRESH, set_trait

_TRAITS = ("age_value", "gender_value", "skin_tone")


class WorldGroundTruth:
    """Metrics sampler protocol: ``factor_names``, ``factor_sizes``, ``sample_factors``, ``sample_observations``."""

    def __init__(
        self,
        world,  # a FaceWorld
        factors: tuple[str, ...] = (
            "identity",
            "expression",
            "lighting",
            "pose",
            "camera",
            "eyeglasses",
        ),
        num_identities: int = 20,  # identity classes (the first of the split)
        split: str = "test",  # identities of this split
        image_size: int | None = None,  # observation size; None = the world's
        bins: int = 4,  # bins of the continuous traits
        batch_size: int = 128,  # render batch size
    ):
        self.world, self.split, self.image_size, self.batch_size = (
            world,
            split,
            image_size,
            batch_size,
        )
        sizes = {
            "identity": int(num_identities),
            "expression": len(expr.EXPRESSIONS),
            "lighting": 20,
            "pose": len(world.config.yaw_buckets),
            "camera": 2,
            "eyeglasses": 2,
            **{t: int(bins) for t in _TRAITS},
        }
        unknown = [f for f in factors if f not in sizes]
        if unknown:
            raise ValueError(f"unknown ground-truth factors {unknown}; choose from {sorted(sizes)}")
        if "identity" in factors and any(t in factors for t in _TRAITS):
            raise ValueError(
                "identity and its traits (age/gender/skin tone) are not independent; use one or the other"
            )
        self.factor_names = list(factors)
        self.factor_sizes = [sizes[f] for f in factors]

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.stack([rng.integers(0, s, size=n) for s in self.factor_sizes], 1).astype(np.int64)

    def params(self, factors: np.ndarray, rng: np.random.Generator):
        """FaceParams of observations with the given factor classes (n, K); the rest is random."""
        factors = np.asarray(factors, dtype=np.int64)
        n = factors.shape[0]
        w, split = self.world, self.split
        idx = torch.from_numpy(rng.integers(_FRESH, 2**62, size=n))
        col = {name: torch.from_numpy(factors[:, k]) for k, name in enumerate(self.factor_names)}
        ids = col.get("identity")
        if ids is None:
            ids = torch.from_numpy(rng.integers(0, w.config.split_sizes()[split], size=n))
        p = w.sample_params(idx, split, identities=ids)
        streams = {
            "expression": "expression",
            "lighting": "lighting",
            "pose": "pose",
            "camera": "camera",
            "eyeglasses": "eyeglasses",
        }
        for name, stream in streams.items():
            if name in col:
                p = p.replace(**w.draw_factor(stream, split, idx, klass=col[name], ident=p))
        for t in _TRAITS:
            if t in col:
                k = self.factor_sizes[self.factor_names.index(t)]
                v = (col[t].float() + torch.from_numpy(rng.uniform(0.02, 0.98, size=n)).float()) / k
                p = set_trait(p, t, v)
        return p

    def sample_observations(self, factors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Images (n, 3, H, W) float32 in [0, 1] for factor classes (n, K)."""
        p = self.params(factors, rng)
        out = [
            self.world.render(
                p.index(slice(s, s + self.batch_size)), image_size=self.image_size
            ).image
            for s in range(0, len(p), self.batch_size)
        ]
        return torch.cat(out).numpy().astype(np.float32)


def factor_codes(params, fields: dict[str, tuple[str, ...]]) -> dict[str, np.ndarray]:
    """{group: (B, D) float64}: the FaceParams ``fields`` of each group side by side, one row per
    sample (e.g. ``experiments.ufe.SUBSPACE_FIELDS``: the true factors of each UFE subspace)."""
    out = {}
    for group, names in fields.items():
        cols = [getattr(params, n).detach().double().reshape(len(params), -1).cpu().numpy() for n in names]
        out[group] = np.concatenate(cols, axis=1)
    return out
