"""The five UFE objectives (Banerjee et al., sec. 3 "Loss functions", eqs. 1-6) and the
weight schedule of L_dis (sec. 4.2 warm-up; sec. 4.7 cyclic annealing, Fu et al. 2019).

Missing labels follow :mod:`facefactors.data.description`: class index ``-1``. Every
supervised term is averaged over the samples (or pairs) whose labels are present and summed
over attributes, so a batch from a label-disjoint data set (world B) contributes only through
the attributes it labels; an attribute with no valid label in the batch contributes 0.

Departures from the paper, each a switch whose default is the paper's form (docs/design-notes.md):
``con_balanced`` / ``con_normalize`` calibrate eq. 2 to 128-D sigmoid features (see
:func:`contrastive_loss`); ``cross`` adds L_x, eq. 4 applied between the labelled subspaces
(see :func:`cross_loss`); ``saturation`` adds L_sat, which keeps the features off the flat ends
of their sigmoids (see :func:`saturation_loss`); ``independence`` adds L_ind, an unbiased HSIC
between each subspace and the labels it should not hold (see :func:`independence_loss`);
``perceptual`` adds a perceptual reconstruction term, ``perceptual_identity`` and
``perceptual_classes`` the same frozen network's identity and class distances
(:mod:`facefactors.train.perceptual`).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from facefactors.models.ufe import OTHERS, UFE, Features, mix_features

if TYPE_CHECKING:
    from facefactors.train.perceptual import PerceptualLoss


def _valid(labels: dict[str, torch.Tensor], name: str, batch: int, device) -> torch.Tensor:
    y = labels.get(name)
    if y is None:
        return torch.full((batch,), -1, dtype=torch.long, device=device)
    return y.to(device=device, dtype=torch.long)


def classification_loss(logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> torch.Tensor:
    """Eq. 1: cross-entropy of each head, over samples with a label, summed over attributes."""
    total = None
    for a, z in logits.items():  # z: (B, C)
        y = _valid(labels, a, z.shape[0], z.device)  # (B,)
        ok = y >= 0
        # ignore_index instead of z[ok]: the same sum without a host sync per head (on a GPU,
        # boolean indexing and .any() wait for the device; an H200 step showed no measurable gain,
        # docs/results.md "On a GPU"); all-missing gives 0 and no gradient.
        term = F.cross_entropy(z, y.masked_fill(~ok, -1), ignore_index=-1, reduction="sum") / ok.sum().clamp(min=1)
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


def pairwise_distance(f: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """L2 distances (B, B) with a finite gradient at 0 (identical features)."""
    sq = (f[:, None, :] - f[None, :, :]).square().sum(-1)  # (B, B)
    return torch.sqrt(sq + eps)


def labelled_pairs(features: Features, labels: dict[str, torch.Tensor], normalize: bool = False):
    """For each labelled attribute with a feature: (name, d (B, B), valid (B, B), same (B, B)).
    d is the L2 distance of eq. 2 (divided by sqrt(D) with ``normalize``); a pair is valid when
    both images carry the label (not -1) and they are two different images; same marks equal
    labels. An attribute without a valid pair is yielded too (finding out would be a host sync):
    users mask by ``valid``. Shared by L_con and its margin diagnostic."""
    for a, y in labels.items():
        if a not in features:
            continue
        f = features[a]  # (B, D)
        y = y.to(device=f.device, dtype=torch.long)
        has = y >= 0
        valid = has[:, None] & has[None, :] & ~torch.eye(f.shape[0], dtype=torch.bool, device=f.device)
        d = pairwise_distance(f)
        if normalize:
            d = d / math.sqrt(f.shape[1])
        yield a, d, valid, y[:, None] == y[None, :]


def contrastive_loss(
    features: Features,
    labels: dict[str, torch.Tensor],
    margin: float = 1.0,
    balanced: bool = False,
    normalize: bool = False,
    weights: dict[str, float] | None = None,  # per-attribute factors on its term (default 1)
    positive_weights: dict[str, float] | None = None,  # per-attribute factors on its positive pairs only (default 1)
) -> torch.Tensor:
    """Eq. 2: y d + (1 - y) max(m - d, 0) with d the L2 distance, over valid pairs i != j.

    A pair is valid for attribute k when both samples carry a label of k; the term of k is the
    mean over its valid pairs (N_p), summed over attributes. Defaults are the paper's form.

    Two switches (departures from the paper, see docs/design-notes.md) calibrate it to
    128-D sigmoid features:

    * ``normalize``: d / sqrt(D), the root-mean-square per-coordinate difference, in [0, 1]
      for features in (0, 1) whatever D is. With raw d, negatives of 128-D sigmoid features
      lie 2.5-6.7 apart, so the paper's m = 1.0 never acts and L_con only pulls positives
      together; with d / sqrt(D) a margin of about 0.4 holds a useful share of negatives.
    * ``balanced``: mean over valid positive pairs plus mean over valid negative pairs
      (each 0 when the batch has none), instead of one mean over all pairs. With one mean,
      an attribute with few classes (pose: 2, about half the pairs positive) gets several
      times the pull of one with many (identity, lighting), and takes the trunk early.

    ``weights`` scale an attribute's whole term; ``positive_weights`` its positive pairs alone
    (y d), a stronger pull between samples of one class without a stronger push between
    classes (the identity feature separates people and spreads each person's images:
    docs/results.md, "The identity feature's spread").
    """
    total = None
    for name, d, valid, same_b in labelled_pairs(features, labels, normalize):
        same = same_b.to(d.dtype)
        pull = positive_weights.get(name, 1.0) if positive_weights else 1.0
        per_pair = pull * same * d + (1 - same) * F.relu(margin - d)
        if balanced:
            term = _masked_mean(per_pair, valid & same_b) + _masked_mean(per_pair, valid & ~same_b)
        else:
            term = _masked_mean(per_pair, valid)
        if weights:
            term = weights.get(name, 1.0) * term
        total = term if total is None else total + term
    if total is None:
        return next(iter(features.values())).sum() * 0
    return total


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` holds, 0 where it never does: ``values[mask].mean()``
    without the host sync of boolean indexing."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def negatives_inside_margin(features: Features, labels: dict[str, torch.Tensor], margin: float, normalize: bool = False) -> dict[str, float]:
    """Share of valid negative pairs (different labels) closer than ``margin``, per attribute:
    the pairs on which the hinge of eq. 2 acts. A calibration check (0 = the margin never acts)."""
    out = {}
    with torch.no_grad():
        for a, d, valid, same in labelled_pairs(features, labels, normalize):
            neg = valid & ~same
            if neg.any():
                out[a] = float((d[neg] < margin).float().mean())
    return out


def reconstruction_loss(image: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """Eq. 3: L1 between I and D(E(I)), averaged over pixels and channels."""
    return (image - reconstruction).abs().mean()


def others_loss(others_logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> torch.Tensor:
    """Eq. 4: cross-entropy of ph_oth on f_oth; the logits must come through gradient reversal
    (:meth:`UFE.classify_others`), so minimising this trains the heads and *un*-trains E."""
    return classification_loss(others_logits, labels)


def cross_loss(cross_logits: dict[str, dict[str, torch.Tensor]], labels: dict[str, torch.Tensor]) -> torch.Tensor:
    """L_x (not in the paper): eq. 4 between labelled subspaces. For every label y, the mean over
    the other attribute features x of the masked cross-entropy of ph_x,y; summed over y, so its
    scale matches L_oth. The logits must come through gradient reversal
    (:meth:`UFE.classify_cross`): the heads learn to read y from f_x, the encoder to hide it."""
    total = None
    for y, per_x in cross_logits.items():
        if not per_x:
            continue
        term = sum(classification_loss({y: z}, labels) for z in per_x.values()) / len(per_x)
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


def saturation_loss(pre_sigmoid: Features) -> torch.Tensor:
    """L_sat (not in the paper): the mean square of the values entering the subspace sigmoids.

    Without it the heads push 70-97% of feature values to within 0.02 of 0 or 1 (measured at
    the standard preset), where the sigmoid passes almost no gradient: L_con can then no longer
    tighten a cluster, nor the reversed gradients of L_oth / L_x remove a leak. A batch
    normalisation before the sigmoid (``model.feature_norm``) also stops the saturation, but it
    forces every coordinate to vary, and the weak classifiers then read pose from every feature;
    this penalty lets a coordinate stay constant."""
    return torch.stack([z.square().mean() for z in pre_sigmoid.values()]).mean()


def saturated_share(pre_sigmoid: Features, threshold: float = 4.0) -> float:
    """Share of feature values whose sigmoid lies within 0.018 of 0 or 1 (|z| > 4): a diagnostic."""
    with torch.no_grad():
        return float(torch.cat([(z.abs() > threshold).flatten() for z in pre_sigmoid.values()]).float().mean())


def hsic_unbiased(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC estimator of two (n, n) kernel matrices, n >= 4 (Song et al. 2012, eq. 5):

    [tr(K~ L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3)), with K~, L~ the
    matrices with zeroed diagonals. Its expectation is 0 for independent variables, whatever n
    (the biased estimator has a positive offset of order 1/n, large for a batch of 32)."""
    n = K.shape[0]
    off = 1 - torch.eye(n, dtype=K.dtype, device=K.device)
    Kt, Lt = K * off, L * off
    KL = Kt @ Lt
    return (torch.trace(KL) + Kt.sum() * Lt.sum() / ((n - 1) * (n - 2)) - 2 * KL.sum() / (n - 2)) / (n * (n - 3))


def hsic_unbiased_pairs(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """:func:`hsic_unbiased` of every pair of two stacks of symmetric kernel matrices,
    K (a, n, n) and L (b, n, n) -> (a, b), without an (n, n) product: for symmetric matrices
    tr(K~ L~) is the sum of their elementwise product and 1'K~L~1 the dot product of their row
    sums. L_ind needs all (subspace, label) pairs at every step: batched this way it runs about
    4x faster than one :func:`dependence` per pair on a 2-core CPU (``bench/ufe.py`` times both)."""
    n = K.shape[-1]
    off = 1 - torch.eye(n, dtype=K.dtype, device=K.device)
    Kt, Lt = K * off, L * off
    trace = torch.einsum("aij,bij->ab", Kt, Lt)
    rows_K, rows_L = Kt.sum(-1), Lt.sum(-1)  # (a, n), (b, n)
    sums = rows_K.sum(-1)[:, None] * rows_L.sum(-1)[None, :]
    return (trace + sums / ((n - 1) * (n - 2)) - 2 * (rows_K @ rows_L.T) / (n - 2)) / (n * (n - 3))


def hsic_unbiased_self(K: torch.Tensor) -> torch.Tensor:
    """:func:`hsic_unbiased` of each matrix of a stack (a, n, n) with itself -> (a,)."""
    n = K.shape[-1]
    Kt = K * (1 - torch.eye(n, dtype=K.dtype, device=K.device))
    rows = Kt.sum(-1)
    return (Kt.square().sum((-2, -1)) + rows.sum(-1).square() / ((n - 1) * (n - 2)) - 2 * rows.square().sum(-1) / (n - 2)) / (n * (n - 3))


def dependence(feature: torch.Tensor, label: torch.Tensor, whitening: torch.Tensor | None = None) -> torch.Tensor | None:
    """How much of a class label (n,) a feature (n, D) holds, over the samples with a label;
    about 0 when the label cannot be read linearly from the feature. None when fewer than 4
    samples or fewer than 2 classes carry the label. Kernels: linear on the feature, "same
    class" on the label; HSIC is the unbiased estimator, so chance dependence in a small batch
    is not penalised. :func:`independence_loss` computes every (subspace, label) pair of a batch
    at once; this one-pair form is its definition and the reference its tests compare with.

    * Without ``whitening``: debiased CKA, HSIC_u(K, L) / sqrt(HSIC_u(K, K) HSIC_u(L, L)), in
      about [-0.1, 1], 1 when the feature is the one-hot label. The denominator is detached,
      so the gradient lowers the cross-covariance and never rewards adding unrelated variance.
      Each direction counts by its variance, so a label held in a direction of small variance
      hardly shows (measured: pose read at 0.73 from an identity feature whose CKA with pose
      was 0.01).
    * With ``whitening`` W (D, D) (see :func:`whitening_matrix`): HSIC_u(K_w, L) / sqrt(HSIC_u(L, L))
      with K_w the linear kernel of the centred feature times W, about the sum of the squared
      canonical correlations between feature and label: every direction counts alike, as for
      the standardised logistic regression of the weak-classifier matrix."""
    ok = label >= 0
    if int(ok.sum()) < 4:
        return None
    f, y = feature[ok], label[ok]
    if int(y.unique().numel()) < 2:
        return None
    f = f - f.mean(0, keepdim=True)
    L = _delta_kernel(y).to(f.dtype)
    if whitening is not None:
        f = f @ whitening.to(f.dtype)
        K = f @ f.T
        return hsic_unbiased(K, L) / hsic_unbiased(L, L).clamp(min=1e-12).sqrt()
    K = f @ f.T  # (n, n) linear kernel
    norm = (hsic_unbiased(K, K).clamp(min=1e-12) * hsic_unbiased(L, L).clamp(min=1e-12)).sqrt().detach()
    return hsic_unbiased(K, L) / norm


def whitening_matrix(samples: torch.Tensor, eps: float = 0.01, std_floor: float = 0.0) -> torch.Tensor:
    """(C + eps mean(eig C) I)^(-1/2) for the covariance C of ``samples`` (N, D), detached.

    The ridge keeps directions of almost no variance (saturated coordinates) from being
    amplified without bound. It is relative to the mean eigenvalue, so a subspace whose variance
    sits in one large direction (a pose feature: its coordinates flip between 0 and 1 with the
    two poses) gets a ridge far above the variance of its other coordinates, which the whitening
    then all but hides.

    With ``std_floor`` > 0 each coordinate is first divided by its standard deviation (at least
    ``std_floor``), as the weak classifier's StandardScaler does, and the ridge is relative to
    the correlation matrix (mean eigenvalue 1 while no coordinate is at the floor): returns
    diag(1/s) (R + eps I)^(-1/2), so a coordinate that varies by 0.01 counts as much as one that
    varies by 0.5, down to the floor.
    Measured on a quick run whose pose feature held identity (read at 0.33): 15 coordinates with
    standard deviations 0.01-0.05 carried it, and the whitened between-identity scatter of the
    feature was 0.23 without the standardisation and 3.1 with it (docs/design-notes.md)."""
    x = samples.detach().double()
    scale = None
    if std_floor > 0:
        scale = x.std(0).clamp(min=std_floor)
        x = x / scale
    C = torch.cov(x.T)
    e, V = torch.linalg.eigh(C)
    e = e.clamp(min=0) + eps * e.clamp(min=0).mean() + 1e-12
    W = (V * e.rsqrt()) @ V.T  # (D, D)
    return W if scale is None else W / scale[:, None]


def independence_loss(
    features: Features,
    labels: dict[str, torch.Tensor],
    whitening: dict[str, torch.Tensor] | None = None,
    hinge: bool = True,
    label_weights: dict[str, float] | None = None,
    pair_weights: dict[str, float] | None = None,
    unwhitened_pairs: dict[str, float] | None = None,
) -> torch.Tensor:
    """L_ind (not in the paper): the mean, over every subspace x (and "others") and every label
    y != x present in the batch, of dependence(f_x, y), with f_x whitened by ``whitening[x]``
    where given; with ``hinge`` of max(0, dependence). Without the hinge the batch value is an
    unbiased estimate and so is its gradient: batches with less than chance dependence pull as
    much as the others push. With it, chance dependence in a batch is penalised too.

    It states the weak-classifier off-diagonal of Fig. 2 as a batch loss: a logistic regression
    reads y from f_x when the class means of f_x differ, which is what the linear-kernel HSIC
    measures (the between-class scatter of f_x). Unlike the adversarial heads of eq. 4 it
    has no opponent to out-learn and sends no gradient into other subspaces' features. The world
    samples its factors independently, so on it the independence it asks for is the truth.

    ``label_weights`` multiplies the terms of a label y (default 1), e.g. {identity: 3} to
    press harder on identity read from the other subspaces. ``pair_weights`` multiplies one
    term, keyed "subspace/label", e.g. {"others/pose": 10}: a label's factor presses every
    subspace against it, which costs the subspaces that hold no such leak (measured: pose x3
    lowered the identity silhouette, docs/results.md); a pair's factor presses only the one.

    ``unwhitened_pairs`` adds, for each "subspace/label" named, its factor times the pair's
    dependence on the unwhitened feature (debiased CKA: each direction by its variance), as so
    many more terms in the mean's numerator (the mean stays over the ordinary terms). The
    whitening weighs a shift of the class means in the feature's directions of largest variance
    least, and that is where the Euclidean silhouette of Fig. 2 finds it (measured: 0.34-0.44 of
    "others"' pose shift lies in its 5 leading directions, 0.02-0.04 of the whitened shift; the
    "others"/pose term x10 left that part in place, docs/results.md "Where the shift lies").
    Tried as {"others/pose": 100} at standard, one seed: that part stayed in place too, and the
    identity silhouette fell; off in every preset. On the training people the silhouette is at
    the edge of what shuffled labels score, on held-out people above it, and 900 training people
    instead of 300 left the held-out value unchanged (scripts/ufe_training_features.py,
    docs/results.md "A shift of the poses' means")."""
    # Samples that carry a label: all of a batch for the labels of its data set. Labels with
    # the same carriers share the feature kernels, so each group is one batched computation.
    groups: dict[bytes, list[str]] = {}
    for y, lab in labels.items():
        ok = lab >= 0
        if int(ok.sum()) >= 4 and int(lab[ok].unique().numel()) >= 2:
            groups.setdefault(ok.cpu().numpy().tobytes(), []).append(y)
    names = list(features)
    first = features[names[0]]
    label_weights, pair_weights, unwhitened_pairs = label_weights or {}, pair_weights or {}, unwhitened_pairs or {}
    terms, extra = [], []
    for ys in groups.values():
        ok = labels[ys[0]].to(first.device) >= 0
        L = torch.stack([_delta_kernel(labels[y].to(device=first.device, dtype=torch.long)[ok]) for y in ys]).to(first.dtype)
        K, raw = [], {}
        for x in names:
            f = features[x][ok]
            f = f - f.mean(0, keepdim=True)
            if any(f"{x}/{y}" in unwhitened_pairs for y in ys):
                raw[x] = f @ f.T
            W = None if whitening is None else whitening.get(x)
            if W is not None:
                f = f @ W.to(f.dtype)
            K.append(f @ f.T)  # (n, n) linear kernel
        K = torch.stack(K)
        cross = hsic_unbiased_pairs(K, L)  # (subspaces, labels)
        label_norm = hsic_unbiased_self(L).clamp(min=1e-12)
        whitened = torch.tensor([whitening is not None and whitening.get(x) is not None for x in names], device=first.device)
        d = cross / label_norm[None, :].sqrt()
        if not bool(whitened.all()):  # debiased CKA for the unwhitened subspaces, see dependence
            feature_norm = hsic_unbiased_self(K.detach()).clamp(min=1e-12)
            d = torch.where(whitened[:, None], d, d / feature_norm[:, None].sqrt())
        other = torch.tensor([[x != y for y in ys] for x in names], device=first.device)
        d = d.clamp(min=0) if hinge else d
        if label_weights or pair_weights:
            factors = [[label_weights.get(y, 1.0) * pair_weights.get(f"{x}/{y}", 1.0) for y in ys] for x in names]
            d = d * torch.tensor(factors, dtype=d.dtype, device=d.device)
        terms.append(d[other])
        for x, K_raw in raw.items():  # the named pairs once more, unwhitened (see dependence)
            index = [j for j, y in enumerate(ys) if f"{x}/{y}" in unwhitened_pairs and y != x]
            cross_raw = hsic_unbiased_pairs(K_raw[None], L[index])[0]
            d_raw = cross_raw / (label_norm[index].sqrt() * hsic_unbiased_self(K_raw.detach()[None]).clamp(min=1e-12).sqrt())
            d_raw = d_raw.clamp(min=0) if hinge else d_raw
            factors = torch.tensor([unwhitened_pairs[f"{x}/{ys[j]}"] for j in index], dtype=d_raw.dtype, device=d_raw.device)
            extra.append((factors * d_raw).sum())
    if not terms:
        return first.sum() * 0
    ordinary = torch.cat(terms)
    return (ordinary.sum() + sum(extra)) / ordinary.numel() if extra else ordinary.mean()


def _delta_kernel(label: torch.Tensor) -> torch.Tensor:
    """(n, n) 1 where two samples share the class, else 0."""
    return (label[:, None] == label[None, :]).float()


class FeatureHistory:
    """The detached features and labels of the last ``size`` batches: the adversarial heads
    (ph_oth of eq. 4 and ph_x of L_x) can be fitted to them at every step besides the current
    batch (``loss.adversary_fit``), and L_ind can whiten with their covariance.

    Why fit the heads to them (not in the paper): with eq. 4 alone the heads see each batch
    once, while the reversed gradient changes the encoder at every step; the encoder wins by
    moving what a head reads rather than removing it. Measured on the quick preset: the heads' loss sat at its chance
    value for the whole run and the trained heads read pose from the identity feature at 0.52,
    while a logistic regression fitted afterwards read it at 0.73 (docs/results.md). A head
    fitted to many recent batches tracks the information, so the reversed gradient has to
    remove it: the history buffer of a discriminator (Shrivastava et al. 2017) applied to eq. 4.
    Measured, it did not: the reversed gradients then removed own labels from the shared trunk
    as well (docs/design-notes.md); L_ind with ``independence_whiten`` is what uses the history
    in the presets. Not saved in checkpoints: after a resume it refills in ``size`` steps."""

    def __init__(self, size: int):
        self.batches: deque[tuple[Features, dict[str, torch.Tensor]]] = deque(maxlen=size)

    def __len__(self) -> int:
        return len(self.batches)

    def push(self, features: Features, labels: dict[str, torch.Tensor]) -> None:
        self.batches.append(({n: f.detach() for n, f in features.items()}, {k: v.detach() for k, v in labels.items()}))

    def stacked(self) -> tuple[Features, dict[str, torch.Tensor]]:
        """All kept samples: features {name: (N, D)} and labels {name: (N,)}, -1 where a batch
        lacked a label (the batches of a label-disjoint second data set)."""
        features = {n: torch.cat([f[n] for f, _ in self.batches]) for n in self.batches[0][0]}
        shapes = [next(iter(f.values())) for f, _ in self.batches]  # one tensor per batch: its size and device
        names = sorted({k for _, lab in self.batches for k in lab})
        labels = {k: torch.cat([_valid(lab, k, t.shape[0], t.device) for t, (_, lab) in zip(shapes, self.batches)]) for k in names}
        return features, labels


def adversary_fit_loss(model: UFE, features: Features, labels: dict[str, torch.Tensor], cfg: UFELossConfig) -> torch.Tensor:
    """The heads of eq. 4 (and of L_x) fitted to kept (detached) features: cross-entropy with the
    labels, weighted as L_oth and L_x. Only the heads learn from it."""
    total = next(iter(features.values())).new_zeros(())
    if cfg.oth > 0:
        total = total + cfg.oth * classification_loss(model.classify_others(features), labels)
    if cfg.cross > 0 and model.cross_heads:
        total = total + cfg.cross * cross_loss(model.classify_cross(features), labels)
    return total


@dataclass
class Mix:
    """The mixes of one L_dis call: row ``k`` decodes ``features`` built from images
    ``first[k]`` and ``partner[k]`` of the batch, subspace ``n`` taken from the partner where
    ``from_partner[n][k]``."""

    features: Features
    first: torch.Tensor  # (P,) batch rows
    partner: torch.Tensor  # (P,) batch rows
    from_partner: dict[str, torch.Tensor]  # {subspace: (P,) bool}


def draw_mix(features: Features, generator: torch.Generator | None = None, pairs: int = 0) -> Mix:
    """Eq. 5's mixes: pairs (i, p(i)) with p a random cyclic shift (no i pairs with itself, so
    every pair is valid); each subspace of the mix is taken from i or p(i) by a fair coin per
    pair and subspace, and each sample gets one mix (the complementary mix of eq. 5 is another
    sample's draw). ``pairs`` > 0 keeps that many of the B mixes, drawn at random."""
    first_feature = next(iter(features.values()))
    B, device = first_feature.shape[0], first_feature.device
    shift = int(torch.randint(1, B, (1,), generator=generator).item())
    first = torch.arange(B, device=device)
    partner = (first - shift) % B  # row i of f.roll(shift, 0) is f[i - shift]
    masks = {n: torch.rand(B, generator=generator).to(device) < 0.5 for n in features}
    if 0 < pairs < B:
        keep = torch.randperm(B, generator=generator)[:pairs].to(device)
        first, partner, masks = first[keep], partner[keep], {n: m[keep] for n, m in masks.items()}
    mixed = mix_features({n: f[first] for n, f in features.items()}, {n: f[partner] for n, f in features.items()}, masks)
    return Mix(mixed, first, partner, masks)


def disentanglement_loss(
    model: UFE,
    features: Features,
    generator: torch.Generator | None = None,
    noise_mode: str = "random",
    pairs: int = 0,
    keep_composites: bool = False,
):
    """Eq. 5: mix the subspaces of pairs (i, j) (:func:`draw_mix`), decode, re-encode, L1 to
    the mixed features.

    The targets are detached: the re-encoding must match the features that were decoded,
    which trains D to render feasible combinations and E to read them back (sec. 3, item 5).

    ``pairs`` > 0 averages over that many of the B pairs, drawn at random: the same expected
    loss and gradient at a fraction of the cost, which is one more decode and encode of the
    batch and their backward pass (see ``dis_pairs`` in :class:`UFELossConfig`).
    ``keep_composites`` returns ``(loss, decoded composites, Mix)`` for terms that judge the
    composites themselves (:func:`facefactors.train.perceptual.PerceptualLoss.swap_terms`).
    """
    first = next(iter(features.values()))
    if first.shape[0] < 2:
        zero = first.sum() * 0
        return (zero, None, None) if keep_composites else zero
    mix = draw_mix(features, generator, pairs)
    target = {n: f.detach() for n, f in mix.features.items()}
    composites = model.decode(mix.features, noise_mode).clamp(0, 1)
    again = model.encode(composites)
    per_pair = sum((again[n] - target[n]).abs().mean(1) for n in target) / len(target)  # (B,) or (pairs,)
    return (per_pair.mean(), composites, mix) if keep_composites else per_pair.mean()


# --- weights and schedules --------------------------------------------------------------------
@dataclass
class UFELossConfig:
    cls: float = 1.0  # lambda_cls (eq. 6); 0 switches the loss off
    con: float = 1.0  # lambda_con
    con_weights: dict[str, float] = field(default_factory=dict)  # per-attribute factors on lambda_con, e.g. {identity: 2} (not in the paper)
    con_positive_weights: dict[str, float] = field(default_factory=dict)  # per-attribute factors on L_con's positive pairs alone (not in the paper)
    rec: float = 100.0  # lambda_rec
    oth: float = 1.0  # lambda_oth
    dis: float = 0.1  # lambda_dis (the value after warm-up / annealing)
    margin: float = 1.0  # m of eq. 2 (sec. 4.2)
    con_normalize: bool = False  # L_con on d / sqrt(D) instead of d (departure; see contrastive_loss)
    con_balanced: bool = False  # L_con: mean of positives + mean of negatives (departure; see contrastive_loss)
    dis_warmup_steps: int = 200  # L_dis is off before this step (sec. 4.2: "after a few epochs")
    dis_ramp_steps: int = 200  # then rises linearly to lambda_dis over this many steps
    dis_schedule: str = "warmup"  # "warmup" or "cyclic" (multi-data-set training, sec. 4.7)
    dis_min: float = 0.0025  # lower end of the cyclic schedule
    dis_cycles: int = 4  # annealing cycles before the weight settles at lambda_dis
    dis_every: int = 1  # compute L_dis every n-th step only (it doubles a step's cost)
    dis_pairs: int = 0  # L_dis over this many random pairs of the batch (cheaper, same expectation); 0 = all B
    reverse_scale: float = 1.0  # gradient-reversal factor of eq. 4
    cross: float = 0.0  # weight of L_x (not in the paper; needs model.cross_heads): eq. 4 between attribute subspaces
    saturation: float = 0.0  # weight of L_sat (not in the paper): mean square of the pre-sigmoid values
    independence: float = 0.0  # weight of L_ind (not in the paper): HSIC between each subspace and the other labels
    history: int = 0  # batches of detached features kept (FeatureHistory) for adversary_fit and independence_whiten; 0 = none
    adversary_fit: bool = False  # fit the heads of eq. 4 / L_x also to the kept batches (not in the paper; see FeatureHistory)
    adversary_lr: float = 1.0  # learning-rate factor of those heads (not in the paper; 1 = the paper)
    independence_whiten: bool = False  # L_ind on features whitened by the kept batches' covariance (see dependence)
    whiten_eps: float = 0.01  # ridge of that whitening, relative to the mean eigenvalue
    whiten_std_floor: float = 0.0  # > 0: standardise each coordinate (std at least this) before whitening (see whitening_matrix)
    independence_hinge: bool = True  # L_ind of max(0, dependence) per pair; False: the signed, unbiased value
    independence_warmup_steps: int = 0  # L_ind is off before this step (the heads learn their own labels first)
    independence_weights: dict[str, float] = field(default_factory=dict)  # per-label factors on L_ind's terms, e.g. {identity: 3}
    independence_pair_weights: dict[str, float] = field(default_factory=dict)  # factors on single L_ind terms "subspace/label", e.g. {others/pose: 10}
    independence_unwhitened_pairs: dict[str, float] = field(default_factory=dict)  # L_ind terms "subspace/label" added again unwhitened, with these factors (see independence_loss)
    # Short CPU schedules: with lambda_rec = 100, reconstruction drives the encoder so hard
    # that the prediction heads stay at chance for hundreds of steps (measured: L_cls flat at
    # its chance value over 60 steps with L_rec, falling without it). These two knobs temper
    # only the gradient L_rec sends into E (D is always trained fully); 1.0 / 0 = the paper.
    rec_to_encoder: float = 1.0  # factor on L_rec's gradient into the encoder
    rec_encoder_warmup_steps: int = 0  # L_rec sends no gradient into E before this step
    # The "others" subspace has no label to learn from: L_rec is its only teacher, so tempering
    # L_rec into E also starves it, and then no feature carries background, hair or skin tone and
    # D can only paint their average (blurred reconstructions). < 0: the same factor and warm-up
    # as the attribute features; >= 0: this factor through "others" from the first step.
    rec_others_to_encoder: float = -1.0
    # Factors for single features, overriding the two above at every step, e.g. {pose: 0}: the
    # pose feature needs one bit, and L_rec can fill its other dimensions with appearance.
    rec_feature_factors: dict[str, float] = field(default_factory=dict)
    # A perceptual term next to L_rec (not in the paper; train/perceptual.py): the distance
    # between a frozen world-trained network's activations of I and D(E(I)), with L_rec's routing
    # into E. perceptual_net: the run directory of that network (a rater, trained with another
    # seed than the judging rater), or "auto": runs/perceptual-rater-{preset}-zoom{data.zoom},
    # trained there first (once, preset perceptual_net_preset, seed 1) if it is not yet.
    perceptual: float = 0.0  # its weight; 0 = off (the paper)
    # The same network's outputs on I and D(E(I)) (train/perceptual.py): 1 - cosine of its
    # identity embeddings, and the KL between its class distributions, mean over its heads.
    perceptual_identity: float = 0.0  # weight; 0 = off
    perceptual_classes: float = 0.0  # weight; 0 = off
    # The same two on L_dis's composites (train/perceptual.py, PerceptualLoss.swap_terms): each
    # head's reading and the identity embedding of D(mix) against the image its subspace came
    # from. Scaled by L_dis's schedule (lambda_dis / dis), off while L_dis is.
    perceptual_swap_identity: float = 0.0  # weight; 0 = off
    perceptual_swap_classes: float = 0.0  # weight; 0 = off
    perceptual_net: str = ""
    perceptual_net_preset: str = "quick"
    # L_twin (not in the paper; twin_loss): each training image's twin differs in one factor
    # alone (data.twins, one twin per factor listed); every other subspace's feature should not
    # change between the two.
    twin: float = 0.0  # its weight; 0 = off
    twin_factor_weights: dict[str, float] = field(default_factory=dict)  # factors on one twin set's term before the mean, e.g. {face: 4}
    # The subspaces whose L_twin distances are measured in whitened coordinates (twin_whitening:
    # the kept batches' covariance, whiten_eps and whiten_std_floor as L_ind's; needs history >
    # 0), e.g. [others]: a small offset along a direction the batch hardly varies in then costs
    # as much as a linear reader finds it worth. Before the history fills, the plain distance.
    twin_whiten: list[str] = field(default_factory=list)
    # How far each of those subspaces is whitened, in [0, 1] (1, the default, fully; 0 the plain
    # distance): the squared distance is (1 - s) plain + s whitened (twin_whitening's strength),
    # e.g. {expression: 0.5}. Whitening a labelled subspace's distance fully took the person out of
    # "others" but cost that subspace's own class reading (docs/results.md, "Person twins with
    # L_twin whitened"); a part of it may keep both.
    twin_whiten_strength: dict[str, float] = field(default_factory=dict)


# The terms read from the frozen perceptual network, each with the option holding its weight.
PERCEPTUAL_TERMS = {
    "perc": "perceptual",
    "perc_id": "perceptual_identity",
    "perc_cls": "perceptual_classes",
    "swap_id": "perceptual_swap_identity",
    "swap_cls": "perceptual_swap_classes",
}
SWAP_TERMS = ("swap_id", "swap_cls")  # read on L_dis's composites; the others on D(E(I))


def uses_perceptual_net(cfg: UFELossConfig) -> bool:
    """Whether any term reads the frozen perceptual network: its distance, identity or classes."""
    return any(getattr(cfg, option) > 0 for option in PERCEPTUAL_TERMS.values())


def dis_weight(step: int, total_steps: int, cfg: UFELossConfig) -> float:
    """lambda_dis at ``step``.

    * ``warmup``: 0 before ``dis_warmup_steps``, then a linear ramp to ``dis`` over
      ``dis_ramp_steps`` (sec. 4.2 "we slowly introduce the disentanglement loss").
    * ``cyclic``: cyclical annealing (Fu et al. 2019) between ``dis_min`` and ``dis`` for the
      first three quarters of training, ``dis_cycles`` cycles each rising linearly over its
      first half and holding the maximum over its second half; then constant at ``dis``
      (sec. 4.7: "between [0.0025, 0.1] before stabilizing at 0.1 after three quarters").
    """
    if cfg.dis <= 0:
        return 0.0
    if cfg.dis_schedule == "cyclic":
        span = max(1, int(0.75 * total_steps))
        if step >= span:
            return cfg.dis
        period = span / max(1, cfg.dis_cycles)
        tau = (step % period) / period  # position in the cycle, [0, 1)
        return cfg.dis_min + (cfg.dis - cfg.dis_min) * min(1.0, 2 * tau)
    if cfg.dis_schedule != "warmup":
        raise ValueError(f"loss.dis_schedule must be 'warmup' or 'cyclic', got {cfg.dis_schedule!r}")
    if step < cfg.dis_warmup_steps:
        return 0.0
    ramp = max(1, cfg.dis_ramp_steps)
    return cfg.dis * min(1.0, (step - cfg.dis_warmup_steps + 1) / ramp)


def scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` forward; its gradient multiplied by ``scale`` backward (0 = detach, 1 = unchanged)."""
    if scale == 1.0:
        return x
    return x * scale + x.detach() * (1.0 - scale)


def rec_to_encoder(step: int, cfg: UFELossConfig) -> dict[str, float] | float:
    """Factor on the gradient L_rec sends into the encoder: 0 for ``rec_encoder_warmup_steps``,
    then ``cfg.rec_to_encoder``; with ``rec_others_to_encoder >= 0`` or ``rec_feature_factors``
    a dict ``{"others": that factor, feature: its factor, ..., "*": the other features' factor}``."""
    attributes = 0.0 if step < cfg.rec_encoder_warmup_steps else cfg.rec_to_encoder
    if cfg.rec_others_to_encoder < 0 and not cfg.rec_feature_factors:
        return attributes
    factors = {OTHERS: cfg.rec_others_to_encoder} if cfg.rec_others_to_encoder >= 0 else {}
    return {**factors, **cfg.rec_feature_factors, "*": attributes}


# The subspaces a twin of each factor may move: its own, and for another person (an identity
# twin, of the set or unseen) also those the person carries: "others" holds the hair, which
# varies around the person's own (FaceWorld.draw_factor), and world B's age and gender are the
# person's (sec. 4.7).
# A face twin keeps the image's hair style, so "others" is held still too.
_PERSON_CARRIES = ("identity", OTHERS, "age", "gender")
# A person twin is an identity twin whose "others" must hold still as well: the world draws each
# image's hair as its person's own plus a per-image offset kept by the twin (world.py, HAIR_SPREAD),
# so "others" may keep the offset and must leave the person's own hair to identity.
TWIN_FREE = {"identity": _PERSON_CARRIES, "unseen_identity": _PERSON_CARRIES, "face": ("identity", "age", "gender"), "person": ("identity", "age", "gender")}


def twin_whitening(kept: torch.Tensor, eps: float = 0.01, std_floor: float = 0.0, whitening: torch.Tensor | None = None,
                   strength: float = 1.0) -> torch.Tensor:
    """The map ``twin_loss`` measures one subspace's differences through: whitening_matrix of the
    kept samples (N, D) (``whitening``, if it is already computed) times the square root of their
    mean variance, so that a feature whose covariance is a multiple of the identity keeps its
    plain distances (up to the ridge, 1 / (1 + eps)) and L_twin's weight keeps its meaning; only
    the directions are reweighted, each by its inverse variance, at most 1 / eps times the mean
    (the ridge).

    With ``strength`` s < 1 the map M is the symmetric square root of (1 - s) I + s T T^T, T the
    full map, so that |d M|^2 = (1 - s) |d|^2 + s |d T|^2: the squared distance moves linearly
    from the plain one (s = 0) to the whitened one (s = 1)."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"whitening strength must lie in [0, 1], got {strength}")
    if whitening is None:
        whitening = whitening_matrix(kept, eps, std_floor)
    full = whitening * kept.detach().double().var(0).mean().sqrt()
    if strength == 1.0:
        return full
    mixed = (1.0 - strength) * torch.eye(full.shape[0], dtype=full.dtype, device=full.device) + strength * (full @ full.T)
    e, V = torch.linalg.eigh(mixed)
    return (V * e.clamp(min=0).sqrt()) @ V.T


def twin_loss(features: dict[str, torch.Tensor], twin_features: dict[str, torch.Tensor], changed: str,
              whitening: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """L_twin (not in the paper): the mean over every subspace but ``changed``'s (TWIN_FREE) of the squared
    distance between an image's feature and its twin's, divided by the feature's dimension (the
    scale of L_con's ``con_normalize`` distances), averaged over the batch. With ``whitening``
    {subspace: (D, D)} (twin_whitening) a subspace's difference is mapped through its matrix
    first (``loss.twin_whiten``).

    A twin is the same face with one factor (``changed``) forced to another class and every other
    draw of the world kept (train/ufe_data.py, render_twins). The paper asks that each subspace
    hold its attribute alone (sec. 3); L_oth and L_ind press on what a subspace shares with the
    other labels across a batch of different faces, so a change that depends on the person (a
    head turned shows each person's hair differently) averages out in them. Here the comparison
    is within one face, so every such change counts. ``changed``'s own subspace is free to move."""
    free = TWIN_FREE.get(changed, (changed,))
    names = [n for n in features if n not in free]
    if not names:
        raise ValueError(f"no subspace besides {changed!r} to hold still")
    whitening = whitening or {}

    def difference(n: str) -> torch.Tensor:
        d = features[n] - twin_features[n]
        return d @ whitening[n].to(d) if n in whitening else d

    return torch.stack([(difference(n) ** 2).sum(1).mean() / features[n].shape[1] for n in names]).mean()


def ufe_losses(
    model: UFE,
    image: torch.Tensor,
    labels: dict[str, torch.Tensor],
    cfg: UFELossConfig,
    dis_lambda: float,
    generator: torch.Generator | None = None,
    rec_grad: float | dict[str, float] = 1.0,
    stats: dict[str, float] | None = None,
    history: FeatureHistory | None = None,
    perceptual: PerceptualLoss | None = None,
    twins: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_full of eq. 6 for one batch; returns (total, {term: unweighted value}).

    ``rec_grad`` scales the gradient that L_rec sends into the encoder (see ``rec_to_encoder``
    in :class:`UFELossConfig`): one factor, or ``{feature name: factor, "*": the rest}``; the
    decoder always gets the full gradient. A ``history`` of recent batches serves
    ``cfg.adversary_fit`` (term ``adv``) and ``cfg.independence_whiten``; this batch then joins
    it. ``perceptual`` is the frozen network of the perceptual terms: its distance (term ``perc``,
    weight ``cfg.perceptual``) and its outputs' identity and class distances (``perc_id``,
    ``perc_cls``; weights ``cfg.perceptual_identity``, ``cfg.perceptual_classes``), and the same
    two outputs on L_dis's composites (``swap_id``, ``swap_cls``; weights
    ``cfg.perceptual_swap_identity``, ``cfg.perceptual_swap_classes``, times L_dis's schedule). A ``stats`` dict,
    if given, receives diagnostics that are not losses (``inside_margin_<attribute>``: share
    of negative pairs on which the hinge of eq. 2 acts; ``saturated``: share of feature values
    on the flat ends of their sigmoids). ``twins`` {factor: (B, 3, H, W)}: each image with that
    factor alone changed, for L_twin (term ``twin``, weight ``cfg.twin``: the mean of ``twin_loss``
    over the factors, each times its ``cfg.twin_factor_weights`` factor, 1 by default).
    """
    pre_sigmoid = model.encode_pre_sigmoid(image)
    features = {n: torch.sigmoid(z) for n, z in pre_sigmoid.items()}
    if stats is not None:
        stats["saturated"] = saturated_share(pre_sigmoid)
    factors = rec_grad if isinstance(rec_grad, dict) else {"*": rec_grad}
    recon = model.decode({n: scale_grad(f, factors.get(n, factors["*"])) for n, f in features.items()})
    terms: dict[str, torch.Tensor] = {}
    total = image.new_zeros(())
    if cfg.cls > 0:
        terms["cls"] = classification_loss(model.classify(features), labels)
        total = total + cfg.cls * terms["cls"]
    if cfg.con > 0:
        terms["con"] = contrastive_loss({a: features[a] for a in model.attributes}, labels, cfg.margin, cfg.con_balanced, cfg.con_normalize, cfg.con_weights, cfg.con_positive_weights)
        total = total + cfg.con * terms["con"]
        if stats is not None:
            inside = negatives_inside_margin(features, labels, cfg.margin, cfg.con_normalize)
            stats.update({f"inside_margin_{a}": v for a, v in inside.items() if a in model.attributes})
    if cfg.rec > 0:
        terms["rec"] = reconstruction_loss(image, recon)
        total = total + cfg.rec * terms["rec"]
    weights = {name: getattr(cfg, option) for name, option in PERCEPTUAL_TERMS.items() if getattr(cfg, option) > 0} if perceptual is not None else {}
    swap_weights = {name: w for name, w in weights.items() if name in SWAP_TERMS and dis_lambda > 0}
    on_reconstruction = [name for name in weights if name not in SWAP_TERMS]  # in PERCEPTUAL_TERMS' order
    reading = perceptual.read_targets(image) if on_reconstruction or swap_weights else None  # shared by the terms
    if on_reconstruction:
        readings = perceptual.terms(image, recon, reading)  # one pass through the frozen network for all three
        for name in on_reconstruction:
            terms[name] = readings[name]
            total = total + weights[name] * terms[name]
    if cfg.oth > 0:
        terms["oth"] = others_loss(model.classify_others(features, cfg.reverse_scale), labels)
        total = total + cfg.oth * terms["oth"]
    if cfg.cross > 0 and model.cross_heads:
        terms["cross"] = cross_loss(model.classify_cross(features, cfg.reverse_scale), labels)
        total = total + cfg.cross * terms["cross"]
    if cfg.saturation > 0:
        terms["sat"] = saturation_loss(pre_sigmoid)
        total = total + cfg.saturation * terms["sat"]
    needs_history = (cfg.independence > 0 and cfg.independence_whiten) or cfg.adversary_fit or (cfg.twin > 0 and cfg.twin_whiten)
    kept = history.stacked() if needs_history and history is not None and len(history) else None
    whitening = None  # shared by L_ind and L_twin: the same kept batches, ridge and floor
    if kept is not None and ((cfg.independence > 0 and cfg.independence_whiten) or (cfg.twin > 0 and cfg.twin_whiten)):
        whitening = {n: whitening_matrix(f, cfg.whiten_eps, cfg.whiten_std_floor) for n, f in kept[0].items()}
    if cfg.independence > 0:
        terms["ind"] = independence_loss(features, labels, whitening if cfg.independence_whiten else None, cfg.independence_hinge, cfg.independence_weights, cfg.independence_pair_weights, cfg.independence_unwhitened_pairs)
        total = total + cfg.independence * terms["ind"]
    if kept is not None and cfg.adversary_fit and (cfg.oth > 0 or cfg.cross > 0):
        terms["adv"] = adversary_fit_loss(model, *kept, cfg)
        total = total + terms["adv"]
    if cfg.twin > 0 and twins:  # world B's batches (sec. 4.7) come without twins
        per_factor = []
        twin_map = None
        if cfg.twin_whiten and whitening is not None:
            twin_map = {n: twin_whitening(kept[0][n], whitening=whitening[n], strength=cfg.twin_whiten_strength.get(n, 1.0)) for n in cfg.twin_whiten}
        for factor, twin_image in twins.items():
            twin_features = {n: torch.sigmoid(z) for n, z in model.encode_pre_sigmoid(twin_image).items()}
            per_factor.append(cfg.twin_factor_weights.get(factor, 1.0) * twin_loss(features, twin_features, factor, twin_map))
        terms["twin"] = torch.stack(per_factor).mean()
        total = total + cfg.twin * terms["twin"]
    if history is not None:
        history.push(features, labels)
    if dis_lambda > 0:
        terms["dis"], composites, mix = disentanglement_loss(model, features, generator, pairs=cfg.dis_pairs, keep_composites=True)
        total = total + dis_lambda * terms["dis"]
        if swap_weights and composites is not None:
            schedule = dis_lambda / cfg.dis if cfg.dis > 0 else 1.0
            swaps = perceptual.swap_terms(composites, reading, mix, OTHERS)
            for name, weight in swap_weights.items():
                terms[name] = swaps[name]
                total = total + schedule * weight * swaps[name]
    if not math.isfinite(float(total.detach())):
        raise FloatingPointError(f"UFE loss is not finite: { {k: float(v) for k, v in terms.items()} }")
    return total, terms
