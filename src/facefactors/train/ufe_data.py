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

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset

from facefactors.data.batching import GroupedBatchSampler
from facefactors.data.description import DatasetDescription
from facefactors.utils.errors import ConfigError


@dataclass
class FaceTensorSet:
    """An in-memory labelled image set: the unit the UFE trains and evaluates on."""

    images: torch.Tensor  # (N, 3, H, W) uint8 (compact) or float in [0, 1]
    labels: dict[str, torch.Tensor]  # factor -> (N,) long (categorical, -1 missing) or float (NaN missing)
    description: DatasetDescription
    index: torch.Tensor | None = None  # (N,) world sample index (with labels["identity"] it regenerates the params)
    split: str = "train"  # world split the images come from
    twins: dict[str, torch.Tensor] | None = None  # factor -> (N, 3, H, W) like images: each image with that factor alone changed (render_twins)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batch(self, idx) -> dict:
        idx = torch.as_tensor(idx, dtype=torch.long)
        img = self.images[idx]
        out = {"image": _as_float(img), "labels": {k: v[idx] for k, v in self.labels.items()}, "index": idx}
        if self.twins:
            out["twins"] = {factor: _as_float(t[idx]) for factor, t in self.twins.items()}
        return out

    def restrict(self, labelled: list[str] | tuple[str, ...], name: str | None = None) -> FaceTensorSet:
        """The same images with only ``labelled`` factors carrying labels (others set missing)."""
        desc = self.description.restrict(labelled, name)
        labels = {}
        for k, v in self.labels.items():
            if k in labelled:
                labels[k] = v
            else:
                labels[k] = torch.full_like(v, -1) if not v.is_floating_point() else torch.full_like(v, float("nan"))
        return FaceTensorSet(self.images, labels, desc, self.index, self.split, self.twins)

    def subset(self, idx) -> FaceTensorSet:
        idx = torch.as_tensor(idx, dtype=torch.long)
        index = None if self.index is None else self.index[idx]
        twins = None if self.twins is None else {factor: t[idx] for factor, t in self.twins.items()}
        return FaceTensorSet(self.images[idx], {k: v[idx] for k, v in self.labels.items()}, self.description, index, self.split, twins)


def _as_float(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


class GroupedBatches(IterableDataset):
    """Endless batches (dicts) of k groups x m samples from a :class:`FaceTensorSet`."""

    def __init__(
        self,
        data: FaceTensorSet,  # the images and labels
        group_by: str,  # factor whose equal values make positive pairs (identity)
        groups_per_batch: int,  # k
        samples_per_group: int,  # m
        seed: int = 0,  # order of batches
        groups: torch.Tensor | None = None,  # (N,) grouping values if not the data's own labels (e.g. hidden ids)
    ):
        super().__init__()
        self.data = data
        values = (groups if groups is not None else data.labels[group_by]).numpy()
        self.sampler = GroupedBatchSampler({group_by: values}, group_by, groups_per_batch, samples_per_group, seed=seed)

    @property
    def label_names(self) -> list[str]:
        return list(self.data.labels)

    def skip(self, batches: int) -> None:
        """Go on ``batches`` batches further (a resumed run: see GroupedBatchSampler.skip)."""
        self.sampler.skip(batches)

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
        self._first = 0  # the stream the next iteration starts with

    def skip(self, batches: int) -> None:
        """Go on ``batches`` batches further: the i-th stream has given batches // n of them, one
        more if i < batches % n, and the next batch is the (batches % n)-th stream's."""
        n = len(self.streams)
        done = batches + self._first  # as if counted from the first stream
        for i, stream in enumerate(self.streams):
            stream.skip(done // n + (i < done % n) - (i < self._first))
        self._first = done % n

    def __iter__(self) -> Iterator[dict]:
        its = [iter(s) for s in self.streams]
        # Every label name of every stream from the first batch on, wherever the stream starts.
        names: set[str] = {name for s in self.streams for name in getattr(s, "label_names", [])}
        i, self._first = self._first, 0
        while True:
            for it in its[i:]:
                batch = next(it)
                names |= set(batch["labels"])
                B = batch["image"].shape[0]
                for n in names - set(batch["labels"]):
                    batch["labels"][n] = torch.full((B,), -1, dtype=torch.long)
                yield batch
            i = 0


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


# --- world sets ---------------------------------------------------------------------------------
def world_a_config(data, image_size: int):
    """World A of the UFE experiments (``data``: a UFEDataConfig): pose classes are the yaw domains
    (0 and 30 degrees, as the MultiPIE buckets of sec. 4.1), RGB and NIR cameras mixed."""
    from facefactors.world.config import WorldConfig

    return WorldConfig(seed=data.world_seed, image_size=image_size, yaw_buckets=tuple(float(y) for y in data.yaw_domains),
                       nir_probability=data.nir_probability, zoom=data.zoom)


def world_set_index(num_identities: int, per_identity: int, identity_offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(world sample index, local identity) of each image of :func:`render_world_set`'s set:
    image j is sample ``j + identity_offset * per_identity`` of the split, of that index's person
    ``index // per_identity``; ``FaceWorld.sample_params(index, split, identities=ident)`` gives
    the set's parameters without rendering it."""
    index = torch.arange(num_identities * per_identity) + identity_offset * per_identity
    return index, index // per_identity


def render_world_set(
    world_config,  # a WorldConfig
    split: str,  # "train" / "val" / "test": identities are disjoint between splits
    num_identities: int,  # the first n identities of the split
    per_identity: int,  # images per identity
    cache: str | Path = "",  # folder for a cached copy ("" = none)
    progress: bool = True,  # rich progress bar while rendering
    chunk: int = 64,  # images rendered at once
    identity_offset: int = 0,  # first local identity (label-disjoint sets use other people)
) -> FaceTensorSet:
    """N identities x M images of the world, all factors labelled, as a :class:`FaceTensorSet`.

    Sample j has world index j and local identity ``j // per_identity``, so the whole set (and
    the parameters of every image, for ground-truth composites) is a pure function of
    (world config, split, N, M).
    """
    from facefactors.world.world import FaceWorld

    people = world_config.split_sizes()[split]
    if identity_offset + num_identities > people:  # checked before any rendering (see FaceWorld.sample_params)
        raise ConfigError(f"{num_identities} identities from local id {identity_offset} do not fit the world's {split} split of {people}; "
                          f"ask for at most {people - identity_offset}")
    world = FaceWorld(world_config)
    description = world.describe(split, identity_offset + num_identities, name=f"world-{split}")
    n = num_identities * per_identity
    key = hashlib.sha1(json.dumps([dataclasses.asdict(world_config), split, num_identities, per_identity, identity_offset], default=str).encode()).hexdigest()[:16]
    path = Path(cache) / f"world_{split}_{num_identities}x{per_identity}_{world_config.image_size}_{key}.npz" if cache else None
    if path is not None and path.is_file():
        try:
            with np.load(path) as z:
                labels = {k[len("labels/"):]: torch.from_numpy(z[k]) for k in z.files if k.startswith("labels/")}
                return FaceTensorSet(torch.from_numpy(z["images"]), labels, description, torch.from_numpy(z["index"]), split)
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is simply re-rendered
    index, ident = world_set_index(num_identities, per_identity, identity_offset)
    images, labels = [], {}
    from facefactors.data.progress import progress_bar

    with progress_bar(progress) as bar:
        task = bar.add_task(f"rendering {split} set", total=n)
        for s in range(0, n, chunk):
            p = world.sample_params(index[s : s + chunk], split, identities=ident[s : s + chunk])
            b = world.render(p)
            images.append((b.image * 255).round().to(torch.uint8))
            for k, v in b.labels.items():
                labels.setdefault(k, []).append(v)
            bar.advance(task, len(p))
    out = FaceTensorSet(torch.cat(images), {k: torch.cat(v) for k, v in labels.items()}, description, index, split)
    if path is not None:
        from facefactors.utils.io import atomic_path

        arrays = {"images": out.images.numpy(), "index": index.numpy(), **{f"labels/{k}": v.numpy() for k, v in out.labels.items()}}
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return out


# The factors a twin can change, each with the label that names its class. An identity twin is
# another person (of the same set) in the same draw: pose, expression, lighting, camera,
# background, eyeglasses kept; shape, albedo and with them the person's hair (FaceWorld.draw_factor) changed.
# An unseen-identity twin is the same with a person of the world's split that the set does not
# hold: a face no other loss trains on, so what L_twin asks of it is asked beyond the set's people.
# A face twin is an identity twin that keeps the image's own hair style (volume, length, fringe,
# parting): only the face changes (shape, albedo, with them the hairline and hair colour), so
# "others" has nothing of its own to change (scripts/ufe_others_person.py).
TWIN_FACTORS = {"pose": "pose", "expression": "expression", "lighting": "lighting", "identity": "identity", "unseen_identity": "identity", "face": "identity", "person": "identity"}
# Twin kinds that differ from another in the loss alone (TWIN_FREE) share its images and cache file.
TWIN_IMAGES_OF = {"person": "identity"}


def render_twins(
    world_config,  # the WorldConfig the set was rendered with
    data: FaceTensorSet,  # a set from render_world_set (its index and identity labels regenerate each image)
    factor: str,  # the factor each twin changes: a key of TWIN_FACTORS
    cache: str | Path = "",  # folder for a cached copy ("" = none)
    progress: bool = True,
    chunk: int = 64,
    seed: int = 0,  # which other class each twin takes
) -> torch.Tensor:
    """Counterfactual twins (not in the UFE paper): every image of ``data`` rendered again with
    ``factor`` forced to another class of its label, drawn at random, and every other draw of the
    world kept (``FaceWorld.draw_factor`` consumes the class column whether forced or not, so the
    twin keeps even the factor's own jitter). An identity twin is another of the set's people in
    the same draw, an unseen-identity twin one of the split's people outside the set (refused
    where the set holds them all), a face twin an identity twin with the image's own hair style;
    a person twin is an identity twin (the same images, the same cache file) that L_twin compares
    in "others" too (TWIN_FREE).
    A twin differs from its image in that factor alone: whatever another subspace's feature
    changes between the two is that factor leaking into it, which ``twin_loss``
    (train/ufe_losses.py) penalises. Returns (N, 3, H, W) uint8."""
    from facefactors.data.progress import progress_bar
    from facefactors.world.world import FaceWorld

    if factor not in TWIN_FACTORS:
        raise ConfigError(f"data.twins: each factor one of {sorted(TWIN_FACTORS)}, got {factor!r}")
    label = TWIN_FACTORS[factor]
    if data.index is None or "identity" not in data.labels or bool((data.labels["identity"] < 0).any()):
        raise ConfigError("twins need a world set with its sample index and 'identity' labels (render_world_set's; restrict may drop any other label)")
    classes = data.description[label].num_classes
    if classes < 2:
        raise ConfigError(f"{label!r} has {classes} class in this world; a twin needs another one")
    unseen = None
    if factor == "unseen_identity":
        people = torch.arange(world_config.split_sizes()[data.split])
        unseen = people[~torch.isin(people, data.labels["identity"].long())]
        if not len(unseen):
            raise ConfigError(f"unseen_identity twins: the set holds every person of the world's {data.split} split; train on fewer identities or use identity twins")
    rendered = TWIN_IMAGES_OF.get(factor, factor)
    key = hashlib.sha1(json.dumps([dataclasses.asdict(world_config), data.split, data.index.tolist(), data.labels["identity"].tolist(), rendered, seed], default=str).encode()).hexdigest()[:16]
    path = Path(cache) / f"twins_{rendered}_{data.split}_{len(data)}_{world_config.image_size}_{key}.npy" if cache else None
    if path is not None and path.is_file():
        try:
            twins = torch.from_numpy(np.load(path))
            if twins.shape == data.images.shape:
                return twins
        except (OSError, ValueError):
            pass  # a damaged cache is simply re-rendered
    world = FaceWorld(world_config)
    # Each twin takes its own class plus 1..classes-1 (mod classes), the step drawn here; its own
    # class comes from the world's parameters, not data.labels, so a set restricted to other
    # labels (FaceTensorSet.restrict) still renders its twins.
    step = 1 + torch.randint(0, classes - 1, (len(data),), generator=torch.Generator().manual_seed(seed))
    if unseen is not None:  # each twin a person drawn from those the set does not hold
        stranger = unseen[torch.randint(0, len(unseen), (len(data),), generator=torch.Generator().manual_seed(seed))]
    images = []
    with progress_bar(progress) as bar:
        task = bar.add_task(f"rendering {rendered} twins", total=len(data))
        for s in range(0, len(data), chunk):
            index = data.index[s : s + chunk]
            # every per-image draw is keyed by the sample index, so a twin of another person
            # changes the person alone
            if unseen is not None:
                p = world.sample_params(index, data.split, identities=stranger[s : s + chunk])
            else:
                p = world.sample_params(index, data.split, identities=data.labels["identity"][s : s + chunk])
                other = (world.labels(p)[label].long() + step[s : s + chunk]) % classes
                if rendered == "identity":
                    p = world.sample_params(index, data.split, identities=other)
                elif factor == "face":
                    p = world.sample_params(index, data.split, identities=other).replace(hair=p.hair)
                else:
                    p = p.replace(**world.draw_factor(factor, data.split, index, klass=other))
            images.append((world.render(p).image * 255).round().to(torch.uint8))
            bar.advance(task, len(index))
    twins = torch.cat(images)
    if path is not None:
        from facefactors.utils.io import atomic_path

        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, twins.numpy())
    return twins
