"""An independent rater of face images: the automated "user study" of the UFE paper
(Banerjee et al., sec. 4.6 and Fig. 5; also the transfer checks of sec. 4.7).

A small residual CNN trained on the face world's *ground truth* (never on UFE features), with
one classification head per categorical factor (expression, lighting, pose, camera, age,
gender, eyeglasses, ...) and an identity-embedding head: a normalised embedding trained by a
cosine-softmax over the training identities, so it also compares identities never seen in
training (held-out split).

The paper's raters said which attribute "changed the most" between an input and its
composite; :meth:`Rater.change_scores` measures how much each attribute changed (total
variation between predicted class distributions; 1 - cosine for identity) and
:meth:`Rater.which_changed` picks the largest after dividing by a calibration: the mean score
of real image pairs that differ in exactly that attribute.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from facefactors.data.description import DatasetDescription
from facefactors.nn import ResidualEncoder
from facefactors.utils.errors import UserError

IDENTITY = "identity"
NO_CHANGE = "none"


@dataclass
class RaterConfig:
    image_size: int = 64  # input side
    channels: list[int] = field(default_factory=lambda: [32, 64, 96, 128])  # residual down blocks
    hidden: int = 256  # shared dense layer
    embed_dim: int = 64  # identity embedding size
    factors: list[str] = field(default_factory=list)  # categorical factors with a head; [] = all but identity
    cosine_scale: float = 16.0  # logit scale of the cosine-softmax identity loss


class Rater(nn.Module):
    """images (B, 3, H, W) in [0, 1] -> class logits per factor and an identity embedding."""

    def __init__(
        self,
        description: DatasetDescription,  # factors and class counts (identity classes = training ids)
        config: RaterConfig | None = None,  # sizes
    ):
        super().__init__()
        cfg = config or RaterConfig()
        self.config = cfg
        self.description = description
        names = list(cfg.factors) or [f.name for f in description.categorical if f.name != IDENTITY]
        for n in names:
            if n not in description or not description[n].is_categorical:
                raise UserError(f"rater factor {n!r} is not a categorical factor of {description.name!r}")
        self.factors = names
        self.trunk = ResidualEncoder(cfg.image_size, list(cfg.channels))
        self.shared = nn.Sequential(nn.Linear(self.trunk.out_dim, cfg.hidden), nn.LeakyReLU(0.2))
        self.heads = nn.ModuleDict({n: nn.Linear(cfg.hidden, description[n].num_classes) for n in names})
        self.embed = nn.Linear(cfg.hidden, cfg.embed_dim)
        n_id = description[IDENTITY].num_classes if IDENTITY in description else 2
        self.identity_centres = nn.Parameter(torch.randn(n_id, cfg.embed_dim) * 0.1)  # one direction per training id
        self.calibration: dict[str, float] = {}  # mean change score of real one-factor pairs (set by load_rater)

    def forward(self, image: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        h = self.shared(self.trunk(image))  # (B, hidden)
        logits = {n: self.heads[n](h) for n in self.factors}  # {n: (B, C_n)}
        return logits, F.normalize(self.embed(h), dim=-1)  # (B, E), unit norm

    def feature_maps(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The trunk's activations, the stem's and then each down block's (B, C_l, H_l, W_l):
        what a perceptual loss compares (:mod:`facefactors.train.perceptual`)."""
        x = self.trunk.stem(image)
        maps = [x]
        for block in self.trunk.blocks:
            x = block(x)
            maps.append(x)
        return maps

    def outputs_from_maps(self, maps: list[torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """:meth:`forward`'s outputs from :meth:`feature_maps`' (the last map is the trunk's
        output), so that a loss reading both the maps and the outputs runs the trunk once."""
        h = self.shared(maps[-1].flatten(1))
        return {n: self.heads[n](h) for n in self.factors}, F.normalize(self.embed(h), dim=-1)

    def identity_logits(self, embedding: torch.Tensor) -> torch.Tensor:
        """Cosine-softmax logits over the training identities (B, N_id)."""
        return self.config.cosine_scale * embedding @ F.normalize(self.identity_centres, dim=-1).t()

    # --- the public API used by experiments of every method ---------------------------------
    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Class probabilities {factor: (B, C)}."""
        logits, _ = self.forward(image)
        return {n: z.softmax(-1) for n, z in logits.items()}

    @torch.no_grad()
    def embed_identity(self, image: torch.Tensor) -> torch.Tensor:
        """Unit identity embeddings (B, E): cosine similarity compares any two faces."""
        return self.forward(image)[1]

    @torch.no_grad()
    def read(self, image: torch.Tensor) -> Reading:
        """Class probabilities {factor: (B, C)} and unit identity embeddings (B, E) from one
        forward pass: what :meth:`scores_between` compares, so that an image judged against
        several others is read once."""
        logits, embedding = self.forward(image)
        return {n: z.softmax(-1) for n, z in logits.items()}, embedding

    @staticmethod
    def scores_between(before: Reading, after: Reading) -> dict[str, torch.Tensor]:
        """How much each attribute changed between two readings, (B,) each in [0, 1]: total
        variation between the class distributions; identity (1 - cosine) / 2."""
        (pa, ea), (pb, eb) = before, after
        out = {n: 0.5 * (pa[n] - pb[n]).abs().sum(-1) for n in pa}
        out[IDENTITY] = (1 - (ea * eb).sum(-1)) / 2
        return out

    @torch.no_grad()
    def change_scores(self, before: torch.Tensor, after: torch.Tensor) -> dict[str, torch.Tensor]:
        """How much each attribute changed from image ``before`` to image ``after`` (B,) each, in [0, 1]."""
        return self.scores_between(self.read(before), self.read(after))

    @torch.no_grad()
    def which_changed(
        self,
        before: torch.Tensor,
        after: torch.Tensor,
        calibration: dict[str, float],
        candidates: list[str] | None = None,
        threshold: float = 0.5,
    ) -> list[str]:
        """Per image pair, :func:`most_changed` of their :meth:`change_scores`."""
        return most_changed(self.change_scores(before, after), calibration, candidates, threshold)


Reading = tuple[dict[str, torch.Tensor], torch.Tensor]  # (class probabilities per factor, identity embedding)


def most_changed(scores: dict[str, torch.Tensor], calibration: dict[str, float], candidates: list[str] | None = None, threshold: float = 0.5) -> list[str]:
    """Per pair, the attribute that changed most relative to ``calibration[attribute]`` (the mean
    score of real pairs differing in it), or ``"none"`` if no ratio reaches ``threshold``."""
    names = candidates or [n for n in scores if n in calibration]
    ratio = torch.stack([scores[n] / max(calibration[n], 1e-6) for n in names], 1)  # (B, K)
    best = ratio.argmax(1)
    top = ratio.max(1).values
    return [names[int(b)] if float(t) >= threshold else NO_CHANGE for b, t in zip(best, top)]
