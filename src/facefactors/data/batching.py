"""Batches with positive pairs, and identity-disjoint splits (issue 2, section 4).

Contrastive losses (the UFE paper's attribute-level contrastive loss, DiscoFaceGAN's contrastive
terms) need, inside every batch, at least two samples sharing each label: a "positive pair".
Uniform batches rarely give that for identities (thousands of classes), so
:class:`GroupedBatchSampler` builds every batch from ``groups_per_batch`` distinct groups with
2..``samples_per_group`` distinct samples each (the P x K sampling of person re-identification).

:func:`split_by_group` splits user data so that no identity appears in two splits, which is what
makes identity verification on a test split honest.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
from torch.utils.data import Sampler

from facefactors.data.description import DatasetDescription
from facefactors.utils.errors import DataError, UserError

log = logging.getLogger(__name__)


def _valid(values: np.ndarray) -> np.ndarray:
    """True where a label is present (categorical -1 and continuous NaN count as missing)."""
    values = np.asarray(values)
    if values.dtype.kind == "f":
        return ~np.isnan(values)
    return values >= 0


class GroupedBatchSampler(Sampler[list[int]]):
    """Index batches of k groups x up to m samples, every group with >= 2 samples in each batch.

    Per epoch (``rng = default_rng([seed, epoch])``): each group's indices are shuffled and cut into
    chunks of ``samples_per_group``; a leftover of 1 is padded with one other member of its group,
    so every chunk holds 2..m distinct indices and every sample appears at least once per epoch.
    A batch takes one chunk from each of ``groups_per_batch`` distinct groups, drawn with
    probability proportional to their chunks left (large groups drain at the pace of small
    ones). Groups with fewer than 2 labelled samples cannot give a pair and are left out (one
    warning), as are samples whose group label is missing. Batch size is at most k x m.

    The epoch advances by one after each full pass; ``set_epoch`` (called by Lightning) fixes it.
    With ``num_replicas > 1`` each rank takes every ``num_replicas``-th batch.
    """

    def __init__(
        self,
        labels: Mapping[str, np.ndarray],  # factor name -> (N,) labels of the data set
        group_by: str,  # the factor whose equal values form positive pairs, e.g. "identity"
        groups_per_batch: int,  # k distinct groups per batch
        samples_per_group: int,  # m >= 2 samples per group per batch
        seed: int = 0,  # with the epoch, fixes the order
        num_replicas: int = 1,  # data-parallel processes
        rank: int = 0,  # this process
    ) -> None:
        if group_by not in labels:
            raise UserError(f"GroupedBatchSampler: no labels for {group_by!r}; the data set has {sorted(labels)}")
        if samples_per_group < 2:
            raise UserError(f"samples_per_group must be >= 2 to give positive pairs, got {samples_per_group}")
        if groups_per_batch < 1:
            raise UserError(f"groups_per_batch must be >= 1, got {groups_per_batch}")
        if not 0 <= rank < num_replicas:
            raise UserError(f"rank must be in [0, {num_replicas}), got {rank}")
        values = np.asarray(labels[group_by])
        ok = _valid(values)
        groups: dict = {}
        for i in np.flatnonzero(ok):
            groups.setdefault(values[i].item(), []).append(int(i))
        singles = [g for g, idx in groups.items() if len(idx) < 2]
        self.groups = [np.array(idx, dtype=np.int64) for g, idx in sorted(groups.items()) if len(idx) >= 2]
        if singles:
            msg = f"GroupedBatchSampler: {len(singles)} {group_by} groups have a single sample and are left out (no positive pair)"
            log.warning(msg)
            warnings.warn(msg, stacklevel=2)
        if len(self.groups) < groups_per_batch:
            raise DataError(
                f"GroupedBatchSampler: only {len(self.groups)} {group_by} groups have >= 2 labelled samples, "
                f"fewer than groups_per_batch={groups_per_batch}; lower groups_per_batch or label more samples"
            )
        self.group_by = group_by
        self.k = groups_per_batch
        self.m = samples_per_group
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self._skip = 0  # batches of this rank to leave out at the start of the next iteration
        self._plan: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _chunks(self, rng: np.random.Generator) -> list[list[np.ndarray]]:
        out = []
        for idx in self.groups:
            perm = rng.permutation(idx)
            chunks = [perm[s : s + self.m] for s in range(0, len(perm), self.m)]
            if len(chunks[-1]) == 1:  # pad a lone leftover with another member of its group
                chunks[-1] = np.array([chunks[-1][0], rng.choice(perm[:-1])], dtype=np.int64)
            order = rng.permutation(len(chunks))
            out.append([chunks[j] for j in order])
        return out

    def plan(self, epoch: int | None = None) -> list[list[int]]:
        """All batches of one epoch (for every rank), deterministic in (seed, epoch)."""
        epoch = self.epoch if epoch is None else epoch
        if self._plan is not None and self._plan[0] == epoch:
            return self._plan[1]
        rng = np.random.default_rng([self.seed, epoch])
        queues = self._chunks(rng)
        left = np.array([len(q) for q in queues], dtype=np.float64)
        batches = []
        while np.count_nonzero(left) >= self.k:
            chosen = rng.choice(len(queues), size=self.k, replace=False, p=left / left.sum())
            batch = []
            for g in chosen:
                batch.extend(int(i) for i in queues[g][int(left[g]) - 1])
                left[g] -= 1
            batches.append(batch)
        # Every rank gets the same number of batches, so collective ops stay in step.
        usable = len(batches) - len(batches) % self.num_replicas
        self._plan = (epoch, batches[:usable])
        return self._plan[1]

    def skip(self, batches: int) -> None:
        """Start the next iteration ``batches`` batches (of this rank) further on, across epochs:
        a resumed run goes on with the batches it has not seen instead of replaying its first
        ones. Batches are deterministic in (seed, epoch), so the stream is the uninterrupted one."""
        if batches < 0:
            raise UserError(f"GroupedBatchSampler.skip: batches must be >= 0, got {batches}")
        batches += self._skip
        while batches >= (per_epoch := len(self.plan(self.epoch)) // self.num_replicas) > 0:
            batches -= per_epoch
            self.epoch += 1
        self._skip = batches

    def __iter__(self) -> Iterator[list[int]]:
        epoch, start, self._skip = self.epoch, self._skip, 0
        yield from self.plan(epoch)[self.rank :: self.num_replicas][start:]
        if self.epoch == epoch:  # nobody called set_epoch meanwhile: move on by ourselves
            self.epoch = epoch + 1

    def __len__(self) -> int:
        return len(self.plan()) // self.num_replicas


def positive_pair_counts(labels: Mapping[str, np.ndarray], description: DatasetDescription | None = None) -> dict[str, int]:
    """For each labelled categorical factor: the number of classes present at least twice.

    ``labels`` are one batch's labels (numpy arrays or tensors ``(B,)``); missing labels never pair.
    """
    out = {}
    for name, values in labels.items():
        values = np.asarray(values.cpu() if hasattr(values, "cpu") else values)
        if description is not None:
            if name not in description or not description.is_labelled(name) or not description[name].is_categorical:
                continue
        elif values.dtype.kind == "f":
            continue  # continuous without a description: no notion of "same label"
        present = values[_valid(values)]
        _, counts = np.unique(present, return_counts=True)
        out[name] = int(np.count_nonzero(counts >= 2))
    return out


def missing_positive_pairs(labels: Mapping[str, np.ndarray], description: DatasetDescription | None = None) -> list[str]:
    """Labelled categorical factors with no positive pair in this batch (empty list = all good)."""
    return [name for name, n in positive_pair_counts(labels, description).items() if n == 0]


def split_by_group(
    labels: Mapping[str, np.ndarray] | np.ndarray,
    group: str,
    fractions: Mapping[str, float] | Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Group-disjoint split: every group (e.g. identity) lands in exactly one split.

    ``fractions`` are of groups, by name (``{"train": .8, "test": .2}``) or as a sequence for
    train/val/test; they are normalised. Each split with a positive fraction gets at least one
    group when there are enough. Samples with a missing group label are left out (one warning):
    their identity is unknown, so any split could leak them. Returns sorted indices per split.
    """
    values = np.asarray(labels[group] if isinstance(labels, Mapping) else labels)
    if isinstance(fractions, Mapping):
        names, fr = list(fractions), np.array(list(fractions.values()), dtype=np.float64)
    else:
        fr = np.array(list(fractions), dtype=np.float64)
        default = ["train", "val", "test"]
        if len(fr) > len(default):
            raise UserError(f"split_by_group: give more than 3 fractions as a dict name -> fraction, got {list(fr)}")
        names = default[: len(fr)]
    if fr.size == 0 or (fr < 0).any() or fr.sum() <= 0:
        raise UserError(f"split_by_group: fractions must be non-negative with a positive sum, got {list(fr)}")
    fr = fr / fr.sum()
    ok = _valid(values)
    if not ok.all():
        msg = f"split_by_group: {int((~ok).sum())} samples have no {group!r} label and are left out of every split"
        log.warning(msg)
        warnings.warn(msg, stacklevel=2)
    uniq = np.unique(values[ok])
    if len(uniq) < int(np.count_nonzero(fr > 0)):
        raise DataError(f"split_by_group: only {len(uniq)} distinct {group!r} values for {int(np.count_nonzero(fr > 0))} splits; label more groups or use fewer splits")
    rng = np.random.default_rng(seed)
    order = uniq[rng.permutation(len(uniq))]
    # Largest-remainder rounding of group counts, then at least one group per non-empty split.
    raw = fr * len(uniq)
    counts = np.floor(raw).astype(int)
    for j in np.argsort(-(raw - counts), kind="stable")[: len(uniq) - counts.sum()]:
        counts[j] += 1
    for j in np.flatnonzero((fr > 0) & (counts == 0)):
        donor = int(np.argmax(counts))
        counts[donor] -= 1
        counts[j] += 1
    out, start = {}, 0
    for name, c in zip(names, counts):
        chosen = order[start : start + c]
        start += c
        out[name] = np.sort(np.flatnonzero(ok & np.isin(values, chosen)))
    return out
