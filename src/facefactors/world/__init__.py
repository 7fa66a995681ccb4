"""The face world: a procedural 3D morphable face model whose every sample carries its ground
truth (DESIGN.md "The face world"). Start with ``FaceWorld(WorldConfig(seed=0)).sample(range(16))``."""

from facefactors.world.config import WorldConfig
from facefactors.world.expression import BLENDSHAPES, EXPRESSIONS
from facefactors.world.params import FaceParams, IdentityParams
from facefactors.world.world import FaceWorld, WorldBatch

__all__ = [
    "BLENDSHAPES",
    "EXPRESSIONS",
    "FaceParams",
    "FaceWorld",
    "IdentityParams",
    "WorldBatch",
    "WorldConfig",
]
