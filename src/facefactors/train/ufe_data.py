"""Training data of the UFE (Banerjee et al., sec. 3 "batch sampling", sec. 4.1, 4.7).

Batches must hold positive pairs for every labelled attribute and mix domains (pose buckets,
RGB/NIR cameras) so that features become domain invariant. We pre-render a fixed set of the
face world once (rendering costs more than a training step on CPU) and draw batches of
k identities x m images with :class:`~facefactors.data.batching.GroupedBatchSampler`; with
6 expressions, 2 pose domains and 20 lights, a batch of 32 holds pairs for the other
attributes too. For multi-data-set training (sec. 4.7) :class:`AlternatingBatches` alternates
batches of two label-disjoint sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset

from facefactors.data.batching import GroupedBatchSampler
from facefactors.data.description import DatasetDescription


@dataclass
class FaceTensorSet:
    """An in-memory labelled image set: the unit the UFE trains and evaluates on."""

    images: torch.Tensor  # (N, 3, H, W) uint8 (compact) or float in [0, 1]
    labels: dict[str, torch.Tensor]  # factor -> (N,) long (categorical, -1 missing) or float (NaN missing)
    description: DatasetDescription

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batch(self, idx) -> dict:
        idx = torch.as_tensor(idx, dtype=torch.long)
        img = self.images[idx]
        img = img.float() / 255.0 if img.dtype == torch.uint8 else img.float()
        return {"image": img, "labels": {k: v[idx] for k, v in self.labels.items()}, "index": idx}

    def restrict(self, labelled: list[str] | tuple[str, ...], name: str | None = None) -> "FaceTensorSet":
        """The same images with only ``labelled`` factors carrying labels (others set missing)."""
        desc = self.description.restrict(labelled, name)
        labels = {}
        for k, v in self.labels.items():
            if k in labelled:
                labels[k] = v
            else:
                labels[k] = torch.full_like(v, -1) if not v.is_floating_point() else torch.full_like(v, float("nan"))
        return FaceTensorSet(self.images, labels, desc)

    def subset(self, idx) -> "FaceTensorSet":
        idx = torch.as_tensor(idx, dtype=torch.long)
        return FaceTensorSet(self.images[idx], {k: v[idx] for k, v in self.labels.items()}, self.description)


class GroupedBatches(IterableDataset):
    """Endless batches (dicts) of k groups x m samples from a :class:`FaceTensorSet`."""

    def __init__(
        self,
        data: FaceTensorSet,  # the images and labels
        group_by: str,  # factor whose equal values make positive pairs (identity)
        groups_per_batch: int,  # k
        samples_per_group: int,  # m
        seed: int = 0,  # order of batches
    ):
        super().__init__()
        self.data = data
        self.sampler = GroupedBatchSampler({group_by: data.labels[group_by].numpy()}, group_by, groups_per_batch, samples_per_group, seed=seed)

    def __iter__(self) -> Iterator[dict]:
        while True:
            for idx in self.sampler:
                yield self.data.batch(idx)


class AlternatingBatches(IterableDataset):
    """Alternate batches of several endless batch streams (sec. 4.7: "alternate (supervised)
    batches from both datasets"). Every batch carries every label name; a set that does not
    label a factor has it all-missing, which the losses mask."""

    def __init__(self, *streams: IterableDataset):
        super().__init__()
        self.streams = streams

    def __iter__(self) -> Iterator[dict]:
        its = [iter(s) for s in self.streams]
        names: set[str] = set()
        while True:
            for it in its:
                batch = next(it)
                names |= set(batch["labels"])
                B = batch["image"].shape[0]
                for n in names - set(batch["labels"]):
                    batch["labels"][n] = torch.full((B,), -1, dtype=torch.long)
                yield batch


def unbatched_loader(stream: IterableDataset) -> torch.utils.data.DataLoader:
    """A DataLoader over a stream that already yields whole batches."""
    return torch.utils.data.DataLoader(stream, batch_size=None, num_workers=0)


def class_balance(labels: np.ndarray) -> float:
    """Majority-class share of a label vector (chance level of a majority classifier)."""
    labels = np.asarray(labels)
    labels = labels[labels >= 0]
    if labels.size == 0:
        return float("nan")
    return float(np.bincount(labels).max() / labels.size)
