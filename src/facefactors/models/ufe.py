"""The Universal Face Encoder (Banerjee, Joshi, Turcot: "The Universal Face Encoder: Learning
Disentangled Representations Across Different Attributes").

Architecture, sec. 3 "Architecture" and sec. 4.2 "Implementation details":

* encoder E: downsampling residual blocks (5 at 128x128, 4 at 64x64 here) whose flattened
  maps feed one dense layer per labelled attribute plus one for "others"; each gives a
  ``feature_dim`` (128) feature with a sigmoid, "so all subspaces share one value range";
* prediction heads ph: per attribute, 3 dense layers (softmax applied by the loss, eq. 1);
* heads on the "others" feature for every attribute, reached through gradient reversal (eq. 4);
* optionally (``cross_heads``, not in the paper) heads on every attribute feature for every
  *other* attribute, also through gradient reversal: eq. 4 applied between the labelled
  subspaces, so that e.g. the identity feature is pushed to forget pose (L_x in
  :mod:`facefactors.train.ufe_losses`);
* optionally (``adversary_norm``, not in the paper) each reversed feature standardised per
  coordinate (a non-affine batch norm) before those heads, so they read, and reverse, what a
  coordinate carries at any amplitude, as the weak classifier of Fig. 2 does;
* decoder D: a StyleGAN2 skip generator whose style, at every layer, is the concatenation of
  all features (attributes + others) in a fixed order.

The attribute list comes from a :class:`~facefactors.data.description.DatasetDescription`
(its labelled categorical factors), never from code. Losses live in
:mod:`facefactors.train.ufe_losses`; this file has no training code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from facefactors.data.description import DatasetDescription
from facefactors.nn import ClassifierHead, ResidualEncoder, StyleSynthesis, grad_reverse
from facefactors.nn.modulated import NoiseMode
from facefactors.utils.errors import UserError
from facefactors.utils.shapes import check_shape

OTHERS = "others"  # name of the extra subspace for unlabelled variation (sec. 3, loss 4)

Features = dict[str, torch.Tensor]  # attribute name (and "others") -> (B, feature_dim)


@dataclass
class UFEConfig:
    image_size: int = 64  # input/output side (64 on CPU, 128 as in the paper)
    feature_dim: int = 128  # size of each attribute feature (128 in the paper)
    encoder_channels: list[int] = field(default_factory=lambda: [32, 64, 128, 128])  # one per down block
    head_hidden: int = 128  # width of the prediction heads' hidden layers
    head_layers: int = 3  # dense layers per head (3 in the paper)
    decoder_channel_base: int = 1024  # StyleGAN2 width rule numerator
    decoder_channel_max: int = 128  # StyleGAN2 width cap
    decoder_input_from_style: bool = False  # D's 4x4 input also a dense projection of the style (not in the paper; see StyleSynthesis)
    attributes: list[str] = field(default_factory=list)  # subspaces; [] = the description's labelled categorical factors
    cross_heads: bool = False  # adversarial heads feature x -> label y != x (not in the paper; see UFE.classify_cross)
    feature_norm: bool = False  # batch-normalise each subspace's pre-sigmoid values (not in the paper; see UFEEncoder)
    adversary_norm: bool = False  # standardise each feature per coordinate before the reversed heads (not in the paper; see UFE.reversed_input)
    # After training, coordinates whose std over training images is at most this are made
    # constant (0 = off, the paper; not in the paper: see facefactors.train.ufe.pin_idle_units).
    pin_idle_std: float = 0.0


def cross_key(x: str, y: str) -> str:
    """Name of the adversarial head reading label ``y`` from feature ``x``."""
    return f"{x}__to__{y}"


def attributes_from_description(description: DatasetDescription, names: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The attribute subspaces: ``names`` if given (each must be a categorical factor), else every
    labelled categorical factor of the description, in description order."""
    if names:
        for n in names:
            if n not in description:
                raise UserError(f"attribute {n!r} is not a factor of data set {description.name!r}; factors: {description.names}")
            if not description[n].is_categorical:
                raise UserError(f"attribute {n!r} of data set {description.name!r} is continuous; the UFE needs categorical attributes (paper sec. 4.9)")
        return list(names)
    found = [f.name for f in description.labelled_factors if f.is_categorical]
    if not found:
        raise UserError(f"data set {description.name!r} labels no categorical factor; the UFE needs at least one")
    return found


class UFEEncoder(nn.Module):
    """E: image (B, 3, H, W) -> {attribute: (B, D)} with values in (0, 1), plus "others"."""

    def __init__(
        self,
        attributes: list[str],  # names of the labelled subspaces ("others" is added)
        image_size: int,  # input side
        channels: list[int],  # output widths of the residual down blocks
        feature_dim: int,  # size of every subspace
        feature_norm: bool = False,  # non-affine BatchNorm between each dense layer and its sigmoid
    ):
        super().__init__()
        self.trunk = ResidualEncoder(image_size, channels)
        # Batch-normalising the flattened maps (no affine: the dense layers carry the scale)
        # gives every subspace image-dependent inputs from the first step; without it the
        # features of all images start nearly equal (spread ~0.02 after the sigmoid) and the
        # heads sit at chance for hundreds of steps.
        self.norm = nn.BatchNorm1d(self.trunk.out_dim, affine=False)
        self.names = [*attributes, OTHERS]
        self.projections = nn.ModuleDict({n: nn.Linear(self.trunk.out_dim, feature_dim) for n in self.names})
        # With feature_norm, each coordinate's pre-sigmoid value has zero mean and unit variance
        # over the batch, so the sigmoid cannot saturate. Without it, the heads drive the dense
        # layers until 70-97% of feature values lie within 0.02 of 0 or 1 (measured at the
        # standard preset): the features become bit codes whose sigmoid passes almost no
        # gradient, so L_con can no longer tighten a cluster and the reversed gradients of
        # L_oth / L_x can no longer remove what a subspace should not hold.
        self.feature_norms = (
            nn.ModuleDict({n: nn.BatchNorm1d(feature_dim, affine=False) for n in self.names}) if feature_norm else None
        )
        self.feature_dim = feature_dim
        self.image_size = image_size

    def pre_sigmoid(self, image: torch.Tensor) -> Features:
        """The values the sigmoid of each subspace receives, each (B, D) (read by L_sat)."""
        check_shape(image, (None, 3, self.image_size, self.image_size), "UFE input image")
        h = self.norm(self.trunk(image * 2 - 1))  # (B, C * h * w); images centred to [-1, 1]
        z = {n: self.projections[n](h) for n in self.names}
        if self.feature_norms is not None:
            z = {n: self.feature_norms[n](v) for n, v in z.items()}
        return z

    def forward(self, image: torch.Tensor) -> Features:
        return {n: torch.sigmoid(v) for n, v in self.pre_sigmoid(image).items()}  # each (B, D)

    @torch.no_grad()
    def pin(self, name: str, coords: list[int], values: torch.Tensor) -> None:
        """Make coordinates ``coords`` of subspace ``name`` constant: their dense weights zero and
        their bias the logit of ``values`` (len(coords),), so every image gets exactly ``values``
        (not in the paper; see facefactors.train.ufe.pin_idle_units)."""
        if self.feature_norms is not None:
            raise UserError("pinning units needs model.feature_norm off: the batch norm after the dense layer would re-scale a constant")
        layer = self.projections[name]
        index = torch.as_tensor(coords, dtype=torch.long)
        layer.weight[index] = 0.0
        layer.bias[index] = torch.logit(torch.as_tensor(values, dtype=layer.bias.dtype).clamp(1e-6, 1 - 1e-6))


class UFE(nn.Module):
    """Encoder E, prediction heads ph and ph_oth, and decoder D of the UFE (Fig. 1)."""

    def __init__(
        self,
        description: DatasetDescription,  # supplies the attributes and their class counts
        config: UFEConfig | None = None,  # sizes; defaults to :class:`UFEConfig`
    ):
        super().__init__()
        cfg = config or UFEConfig()
        self.config = cfg
        self.description = description
        self.attributes = attributes_from_description(description, cfg.attributes)
        self.num_classes = {a: description[a].num_classes for a in self.attributes}
        self.encoder = UFEEncoder(self.attributes, cfg.image_size, list(cfg.encoder_channels), cfg.feature_dim, cfg.feature_norm)
        self.heads = nn.ModuleDict(
            {a: ClassifierHead(cfg.feature_dim, n, cfg.head_hidden, cfg.head_layers) for a, n in self.num_classes.items()}
        )
        # ph_oth: one head per labelled attribute, reading the "others" feature (eq. 4).
        self.others_heads = nn.ModuleDict(
            {a: ClassifierHead(cfg.feature_dim, n, cfg.head_hidden, cfg.head_layers) for a, n in self.num_classes.items()}
        )
        # ph_x,y (not in the paper): label y read from attribute feature x != y, via reversal.
        self.cross_heads = nn.ModuleDict(
            {cross_key(x, y): ClassifierHead(cfg.feature_dim, self.num_classes[y], cfg.head_hidden, cfg.head_layers)
             for x in self.attributes for y in self.attributes if x != y}
            if cfg.cross_heads else {}
        )
        # One non-affine batch norm per feature read by reversed heads (adversary_norm).
        self.adversary_norm = nn.ModuleDict(
            # eps: standard deviations down to about 1e-3 are standardised (the weak classifier has no floor)
            {n: nn.BatchNorm1d(cfg.feature_dim, eps=1e-6, affine=False) for n in [*self.attributes, OTHERS]} if cfg.adversary_norm else {}
        )
        self.style_dim = cfg.feature_dim * (len(self.attributes) + 1)
        self.decoder = StyleSynthesis(
            self.style_dim, cfg.image_size, cfg.decoder_channel_base, cfg.decoder_channel_max, input_from_style=cfg.decoder_input_from_style
        )

    @property
    def feature_names(self) -> list[str]:
        """Attributes then "others": the order in which features are concatenated into the style."""
        return [*self.attributes, OTHERS]

    # --- the three mappings of Fig. 1 ------------------------------------------------------
    def encode(self, image: torch.Tensor) -> Features:
        return self.encoder(image)  # {name: (B, D)}

    def encode_pre_sigmoid(self, image: torch.Tensor) -> Features:
        """E before its sigmoids: ``encode(image)`` is the sigmoid of this."""
        return self.encoder.pre_sigmoid(image)  # {name: (B, D)}

    def classify(self, features: Features) -> dict[str, torch.Tensor]:
        """ph_ak(f_ak): class logits per attribute."""
        return {a: self.heads[a](features[a]) for a in self.attributes}  # {a: (B, C_a)}

    def reversed_input(self, features: Features, name: str, reverse_scale: float = 1.0) -> torch.Tensor:
        """GR(f_name), standardised per coordinate with ``adversary_norm`` (not in the paper).

        Why: a coordinate held near a sigmoid's end can still vary a little with a label it
        should not hold; the weak classifier (metrics/subspace.py) standardises every coordinate
        and reads it, a head on the raw feature barely sees it. The norm divides by the batch's
        standard deviation, so the head reads it at full size and its reversed gradient is
        multiplied by the same factor (the norm has no parameters: the heads and the encoder
        meet in the same standardised space)."""
        f = grad_reverse(features[name], reverse_scale)  # (B, D)
        return self.adversary_norm[name](f) if self.adversary_norm else f

    def classify_others(self, features: Features, reverse_scale: float = 1.0) -> dict[str, torch.Tensor]:
        """ph_oth,k(GR(f_oth)): the heads learn normally, the encoder gets the reversed gradient."""
        f = self.reversed_input(features, OTHERS, reverse_scale)  # (B, D)
        return {a: self.others_heads[a](f) for a in self.attributes}

    def classify_cross(self, features: Features, reverse_scale: float = 1.0) -> dict[str, dict[str, torch.Tensor]]:
        """{y: {x: ph_x,y(GR(f_x))}} for every attribute x != y: eq. 4 between labelled subspaces
        (a departure from the paper, which reverses only "others"). Empty without ``cross_heads``."""
        if not self.cross_heads:
            return {}
        rev = {x: self.reversed_input(features, x, reverse_scale) for x in self.attributes}  # each (B, D)
        return {y: {x: self.cross_heads[cross_key(x, y)](rev[x]) for x in self.attributes if x != y} for y in self.attributes}

    def style(self, features: Features) -> torch.Tensor:
        missing = [n for n in self.feature_names if n not in features]
        if missing:
            raise ValueError(f"features lack subspaces {missing}; expected {self.feature_names}")
        return torch.cat([features[n] for n in self.feature_names], dim=1)  # (B, n_sub * D)

    def decode(self, features: Features, noise_mode: NoiseMode = "random") -> torch.Tensor:
        return self.decoder(self.style(features), noise_mode)  # (B, 3, H, W)

    def forward(self, image: torch.Tensor, noise_mode: NoiseMode = "random") -> tuple[Features, torch.Tensor]:
        """Features and reconstruction D(E(I))."""
        features = self.encode(image)
        return features, self.decode(features, noise_mode)

    # --- inference helpers -----------------------------------------------------------------
    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-attribute class probabilities (B, C_a) for images (B, 3, H, W) in [0, 1]."""
        return {a: p.softmax(-1) for a, p in self.classify(self.encode(image)).items()}

    def class_names(self, attribute: str) -> tuple[str, ...]:
        return self.description[attribute].class_names


def mix_features(a: Features, b: Features, take_from_b: list[str] | tuple[str, ...] | dict[str, torch.Tensor]) -> Features:
    """Composite features: ``a`` with the subspaces in ``take_from_b`` replaced by ``b``'s.

    ``take_from_b`` is a list of names (all samples), or {name: (B,) bool/float mask} for a
    per-sample choice (used by L_dis, eq. 5).
    """
    out = {}
    for n, fa in a.items():
        if isinstance(take_from_b, dict):
            if n in take_from_b:
                m = take_from_b[n].to(fa.dtype)[:, None]  # (B, 1)
                out[n] = m * b[n] + (1 - m) * fa
            else:
                out[n] = fa
        else:
            out[n] = b[n] if n in take_from_b else fa
    return out
