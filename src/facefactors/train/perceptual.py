"""A perceptual reconstruction loss for decoders, measured by a frozen network trained on the
face world's ground truth (not in the UFE paper, whose decoder learns from the pixel L1 of
eq. 3 alone).

Face autoencoders usually add a distance between the activations of a fixed, pretrained
network (VGG features, a face-recognition embedding) to the pixel loss, because a pixel L1
pays little for the small, high-contrast details that tell an expression or a light direction
apart and a decoder trained by it paints their average. No pretrained weights can be
downloaded here, so the fixed network is a rater (:mod:`facefactors.models.rater`) trained on
world renders: ``facefactors ufe rater --set trainer.seed=1 --out runs/perceptual``, or
``loss.perceptual_net=auto``, which trains one there once (:func:`ensure_perceptual_net`).
Train it with another seed than the rater that judges the user study (seed 0), so that the
judge is not the network the decoder was fitted to.

Distance: per trunk layer l, the mean absolute difference of the activations divided by the
mean absolute activation of the input image (detached), so every layer counts alike whatever
its scale; then the mean over layers.

Two optional terms read the same network's outputs instead of its activations, as face
autoencoders add an identity loss from a face-recognition network to their perceptual one
(pSp's ArcFace term, for one): ``identity``, 1 - cosine between the identity embeddings of the
image and its reconstruction; ``classes``, the KL divergence from the network's class
distribution on the image to the one on the reconstruction, averaged over its heads
(expression, lighting, pose, ...). Both come from the same single pass through the trunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from facefactors.models.rater import IDENTITY, Rater
from facefactors.train.ufe_losses import uses_perceptual_net
from facefactors.utils.errors import UserError

if TYPE_CHECKING:
    from facefactors.train.ufe_losses import Mix, UFELossConfig

AUTO = "auto"  # loss.perceptual_net's value that asks for ensure_perceptual_net
SEED = 1  # the perceptual network's training seed; the judging rater's is 0 (trainer.seed's default)


def perceptual_distance(maps_a: list[torch.Tensor], maps_b: list[torch.Tensor], eps: float = 1e-6) -> torch.Tensor:
    """Mean over layers of mean |a_l - b_l| / mean |a_l| (a_l's scale detached); () tensor."""
    if len(maps_a) != len(maps_b) or not maps_a:
        raise ValueError(f"perceptual_distance: {len(maps_a)} and {len(maps_b)} layers")
    terms = [(a - b).abs().mean() / (a.detach().abs().mean() + eps) for a, b in zip(maps_a, maps_b)]
    return torch.stack(terms).mean()


class PerceptualLoss(nn.Module):
    """Frozen feature network; ``forward(image, reconstruction)`` (B, 3, H, W) in [0, 1] -> ().

    Gradients reach ``reconstruction`` (and through it the decoder), never the network's own
    weights. Images of another size than the network's input are area-resized to it."""

    def __init__(self, network: Rater):
        super().__init__()
        self.network = network.eval()
        for p in self.network.parameters():
            p.requires_grad_(False)
        self.size = network.config.image_size

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.network.eval()  # frozen: Lightning calls train() on the recipe at fit start; this stays in eval
        return self

    def _resize(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[-1] == self.size and image.shape[-2] == self.size:
            return image
        return F.interpolate(image, size=(self.size, self.size), mode="area")

    def forward(self, image: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.network.feature_maps(self._resize(image))
        return perceptual_distance(target, self.network.feature_maps(self._resize(reconstruction)))

    @torch.no_grad()
    def read_targets(self, image: torch.Tensor) -> PerceptualReading:
        """The network's activations, class logits and identity embedding of ``image``, without
        gradient: the targets of :meth:`terms` and :meth:`swap_terms`, read once per batch."""
        maps = self.network.feature_maps(self._resize(image))
        logits, embedding = self.network.outputs_from_maps(maps)
        return PerceptualReading(maps, logits, embedding)

    def terms(self, image: torch.Tensor, reconstruction: torch.Tensor, target: PerceptualReading | None = None) -> dict[str, torch.Tensor]:
        """``{"perc": forward's distance, "perc_id": mean 1 - cos of the identity embeddings,
        "perc_cls": mean over heads of KL(p(image) || p(reconstruction))}``, () each.
        ``target``: :meth:`read_targets` of ``image``, if already read."""
        target = self.read_targets(image) if target is None else target
        maps = self.network.feature_maps(self._resize(reconstruction))
        logits, embedding = self.network.outputs_from_maps(maps)
        return {
            "perc": perceptual_distance(target.maps, maps),
            "perc_id": (1 - (embedding * target.embedding).sum(-1)).mean(),
            "perc_cls": _mean_kl(target.logits, logits, image),
        }

    def swap_terms(self, composites: torch.Tensor, batch: PerceptualReading, mix: Mix, others: str) -> dict[str, torch.Tensor]:
        """The :meth:`terms` of identity and classes on L_dis's composites (eq. 5's mixes), each
        against the image its subspace was taken from: ``{"swap_id": mean 1 - cos between the
        composite's identity embedding and that of the image that gave the identity feature,
        "swap_cls": mean over heads of KL(p(source) || p(composite))}``, where a head named
        after a subspace (expression, lighting, pose) takes that subspace's source and any other
        head (a factor of "others") the source of ``others``. ``batch``: :meth:`read_targets`
        of the batch the mixes' rows index. What the automated user study asks of a swap, on
        this frozen network instead of the judge (another seed)."""

        def source(name: str) -> torch.Tensor:  # (P,) batch row that gave subspace `name`
            taken = mix.from_partner.get(name, mix.from_partner.get(others))
            return torch.where(taken, mix.partner, mix.first)

        logits, embedding = self.network(self._resize(composites))
        target_logits = {n: z[source(n)] for n, z in batch.logits.items()}
        target_embedding = batch.embedding[source(IDENTITY)]
        return {
            "swap_id": (1 - (embedding * target_embedding).sum(-1)).mean(),
            "swap_cls": _mean_kl(target_logits, logits, composites),
        }


@dataclass
class PerceptualReading:
    """:meth:`PerceptualLoss.read_targets` of a batch: trunk activations, class logits per head,
    unit identity embeddings."""

    maps: list[torch.Tensor]
    logits: dict[str, torch.Tensor]
    embedding: torch.Tensor


def _mean_kl(target_logits: dict[str, torch.Tensor], logits: dict[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """Mean over heads of KL(softmax(target) || softmax(logits)) (batch mean); 0 without heads."""
    kl = [F.kl_div(logits[n].log_softmax(-1), target_logits[n].log_softmax(-1), log_target=True, reduction="batchmean") for n in logits]
    return torch.stack(kl).mean() if kl else like.new_zeros(())


def load_perceptual(run_dir: str | Path, zoom: float) -> PerceptualLoss:
    """The perceptual loss of a trained rater run; refuses one trained on another framing."""
    from facefactors.train.rater import load_rater

    path = Path(run_dir)
    if not path.is_dir():
        raise UserError(f"{path}: loss.perceptual_net names no rater run directory; train one with "
                        f"`facefactors ufe rater --set data.zoom={zoom:g} --set trainer.seed=1 --out {path}` or set loss.perceptual=0")
    network = load_rater(path)
    if abs(network.zoom - zoom) > 1e-9:
        raise UserError(f"{path}: the perceptual network was trained on faces at zoom {network.zoom:g}, this run's data.zoom is {zoom:g}; "
                        f"train one with `facefactors ufe rater --set data.zoom={zoom:g} --set trainer.seed=1 --out {path}`")
    return PerceptualLoss(network)


def auto_net_dir(preset: str, zoom: float) -> str:
    """Where ``loss.perceptual_net=auto`` keeps its network (next to the judge's runs/rater-*)."""
    return f"runs/perceptual-rater-{preset}-zoom{zoom:g}"


def ensure_perceptual_net(loss: UFELossConfig, zoom: float, cache: str, threads: int, progress: bool = True) -> None:
    """Resolve ``loss.perceptual_net=auto`` in place: the rater of :func:`auto_net_dir`, trained
    there first (preset ``loss.perceptual_net_preset``, seed 1, faces framed at ``zoom``) if it is
    not yet. The run's config then names the folder, so the run records what it was fitted to."""
    if not uses_perceptual_net(loss) or loss.perceptual_net != AUTO:
        return
    from facefactors.config import preset_dict
    from facefactors.train.rater import ensure_rater

    try:
        preset_dict("rater", loss.perceptual_net_preset)
    except UserError as e:
        raise UserError(f"loss.perceptual_net_preset={loss.perceptual_net_preset!r} names no rater preset ({e})") from None
    path = auto_net_dir(loss.perceptual_net_preset, zoom)
    ensure_rater(path, loss.perceptual_net_preset, zoom, [f"trainer.seed={SEED}", f"data.cache={cache}", f"trainer.threads={threads}"], progress=progress)
    loss.perceptual_net = path
