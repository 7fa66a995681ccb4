"""Face-world data sets: rendered on the fly, or written once to disk and read back memory-mapped
(issue 2, section 4; DESIGN.md "The face world").

* :class:`WorldStream` — an infinite ``IterableDataset`` of freshly rendered batches. Sample ``i``
  of a split is a pure function of (world seed, split, i), so the stream only has to hand every
  (rank, worker, step) its own slice of indices: batch number
  ``b = (step * ranks + rank) * workers + worker`` renders indices
  ``start + b * batch_size + [0, batch_size)``. Two runs with the same arguments see the same
  batches, whatever the number of workers.
* :func:`write_world_set` — renders N identities x M images in chunks (rich progress bar with rate
  and ETA) into a folder: ``images.npy`` (uint8 ``(N, H, W, 3)``, written through a memory map
  into a temporary file that is renamed at the end), ``labels.csv`` + ``labels.yaml`` (the same
  table format as image folders, see :mod:`facefactors.data.labels`, keyed by an ``index``
  column) and ``world.json`` (world config, split, identities, description). ``world.json`` is
  written last: a folder without it is an unfinished set.
* :class:`WorldArrayDataset` — reads such a folder with ``np.load(mmap_mode="r")`` and checks that
  the pieces agree.

The world is duck-typed (``description``, ``config``, ``sample_params(indices, split)``,
``render(params, image_size=None, ground_truth=False)``), so this module never imports
``facefactors.world`` at import time.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from facefactors.data.description import MISSING_CLASS, DatasetDescription
from facefactors.data.folder import label_items
from facefactors.data.images import uint8_to_tensor
from facefactors.data.labels import read_label_table, write_label_table, write_label_yaml
from facefactors.data.progress import progress_bar
from facefactors.utils.errors import DataError, UserError
from facefactors.utils.images import to_uint8
from facefactors.utils.io import atomic_write_json

FORMAT = "facefactors-world-set"
FORMAT_VERSION = 1
SET_FILES = ("images.npy", "labels.csv", "labels.yaml", "world.json")
GROUND_TRUTH_KEYS = ("landmarks", "depth", "albedo", "normal", "mask")


def mask_unlabelled(labels: dict[str, torch.Tensor], description: DatasetDescription) -> dict[str, torch.Tensor]:
    """Labels of every factor of ``description``; unlabelled (or unrendered) ones all missing.

    This is how a label-disjoint set (world B of the UFE paper) is made from a world that
    renders every label.
    """
    out = {}
    n = len(next(iter(labels.values()))) if labels else 0
    for f in description.factors:
        v = labels.get(f.name)
        if v is None or not description.is_labelled(f.name):
            v = torch.full((n,), MISSING_CLASS, dtype=torch.long) if f.is_categorical else torch.full((n,), float("nan"))
        else:
            v = v.detach().cpu().long() if f.is_categorical else v.detach().cpu().float()
        out[f.name] = v
    return out


class WorldStream(IterableDataset):
    """Infinite stream of freshly rendered world batches (see module doc).

    With ``samples_per_identity=m`` every batch holds ceil(B/m) distinct identities with m images
    each (the world-side counterpart of :class:`GroupedBatchSampler`), so identity contrastive
    losses always find positive pairs; the other factors are those of the batch's indices.

    Use with ``DataLoader(stream, batch_size=None, num_workers=...)``: items are whole batches
    ``{"image": (B, 3, H, W), "labels": {name: (B,)}, "index": (B,)}`` (plus ground-truth maps
    and ``params`` when ``ground_truth=True``).
    """

    def __init__(
        self,
        world: Any,  # a facefactors.world.FaceWorld (or anything with its API)
        split: str = "train",  # identities of train / val / test are disjoint
        batch_size: int = 64,  # samples per yielded batch
        start: int = 0,  # first sample index of the stream (two streams with different starts differ)
        image_size: int | None = None,  # render size; None = the world's
        ground_truth: bool = False,  # also yield landmarks, canonical maps and params
        description: DatasetDescription | None = None,  # labels outside description.labelled are masked
        params_fn: Callable[[np.ndarray, str], Any] | None = None,  # indices, split -> FaceParams; default world.sample_params
        samples_per_identity: int | None = None,  # m >= 2: batches of B/m identities x m images (positive pairs)
        start_step: int = 0,  # resume: skip the batches a run has already seen
        max_steps: int | None = None,  # stop after this many steps per (rank, worker); None = never
        rank: int | None = None,  # data-parallel rank; None = from torch.distributed if initialised
        num_ranks: int | None = None,  # data-parallel size; None = from torch.distributed if initialised
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        self.world = world
        self.split = split
        self.batch_size = batch_size
        self.start = start
        self.image_size = image_size
        self.ground_truth = ground_truth
        self.description = description or default_description(world, split)
        self.params_fn = params_fn
        if samples_per_identity is not None and not 2 <= samples_per_identity <= batch_size:
            raise UserError(f"samples_per_identity must be in [2, batch_size={batch_size}], got {samples_per_identity}")
        if samples_per_identity is not None and params_fn is not None:
            raise UserError("pass either params_fn or samples_per_identity, not both")
        self.samples_per_identity = samples_per_identity
        self.start_step = start_step
        self.max_steps = max_steps
        self.rank = rank
        self.num_ranks = num_ranks

    def _ranks(self) -> tuple[int, int]:
        if self.rank is not None and self.num_ranks is not None:
            return self.rank, self.num_ranks
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def indices(self, step: int, worker: int = 0, num_workers: int = 1) -> np.ndarray:
        """Sample indices of one batch: disjoint across steps, workers and ranks."""
        rank, num_ranks = self._ranks()
        b = (step * num_ranks + rank) * num_workers + worker
        return self.start + b * self.batch_size + np.arange(self.batch_size, dtype=np.int64)

    def identities(self, indices: np.ndarray) -> np.ndarray:
        """Local identity ids of a grouped batch: ceil(B/m) distinct identities, m images each.

        A pure function of the batch's first index, so grouped streams stay deterministic; a
        lone leftover sample joins the previous identity so every identity has a pair.
        """
        m, bsz = self.samples_per_identity, len(indices)
        n_id = self.world.config.split_sizes()[self.split]
        groups = -(-bsz // m)
        if groups > n_id:
            raise UserError(f"a batch of {bsz} with samples_per_identity={m} needs {groups} identities; the {self.split} split has {n_id}")
        rng = np.random.default_rng([int(indices[0]), 0x1D])
        ids = np.repeat(rng.choice(n_id, size=groups, replace=False), m)[:bsz]
        if bsz % m == 1 and bsz > 1:
            ids[-1] = ids[-2]
        return ids

    def render_batch(self, indices: np.ndarray) -> dict:
        """Render the samples ``indices`` into one batch dict."""
        if self.params_fn is not None:
            params = self.params_fn(indices, self.split)
        elif self.samples_per_identity is not None:
            params = self.world.sample_params(indices, split=self.split, identities=self.identities(indices))
        else:
            params = self.world.sample_params(indices, split=self.split)
        out = self.world.render(params, image_size=self.image_size, ground_truth=self.ground_truth)
        batch = {
            "image": out.image,  # (B, 3, H, W)
            "labels": mask_unlabelled(out.labels, self.description),
            "index": torch.as_tensor(indices, dtype=torch.long),
        }
        if self.ground_truth:
            for key in GROUND_TRUTH_KEYS:
                if getattr(out, key, None) is not None:
                    batch[key] = getattr(out, key)
            batch["params"] = params
        return batch

    def loader(self, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
        """A DataLoader over this stream (items are already batches, so ``batch_size=None``)."""
        return DataLoader(self, batch_size=None, num_workers=num_workers, pin_memory=pin_memory, persistent_workers=num_workers > 0)

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        step = self.start_step
        while self.max_steps is None or step < self.start_step + self.max_steps:
            yield self.render_batch(self.indices(step, worker, num_workers))
            step += 1


def default_description(world: Any, split: str, num_identities: int | None = None) -> DatasetDescription:
    """The world's description for ``split`` (identity classes = that split's identities)."""
    describe = getattr(world, "describe", None)
    if describe is not None:
        return describe(split, num_identities) if num_identities is not None else describe(split)
    return world.description


def write_world_set(
    world: Any,  # a facefactors.world.FaceWorld
    out_dir: str | Path,  # folder to write (created)
    split: str = "train",  # identities of this split only
    num_identities: int = 100,  # N distinct identities
    images_per_identity: int = 10,  # M images each; the set has N * M images
    image_size: int | None = None,  # render size; None = the world's
    description: DatasetDescription | None = None,  # restrict labels (world B); default world.description
    chunk_size: int = 256,  # images rendered per step (memory vs. speed)
    overwrite: bool = False,  # replace the set files of a non-empty folder
    progress: bool = True,  # rich progress bar with rate and ETA
) -> Path:
    """Render a world set to disk (see module doc); returns ``out_dir``."""
    out_dir = Path(out_dir)
    if num_identities < 1 or images_per_identity < 1:
        raise UserError(f"num_identities and images_per_identity must be >= 1, got {num_identities} and {images_per_identity}")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a folder; choose another --out")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise UserError(f"{out_dir}: folder is not empty; choose another --out or pass overwrite=True (--overwrite)")
        # Remove the old set first so a crash never leaves an old world.json next to new images.
        for name in reversed(SET_FILES):
            (out_dir / name).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = world.config.split_sizes() if hasattr(world.config, "split_sizes") else {}
    if split in sizes and num_identities > sizes[split]:
        raise UserError(f"the world's {split} split has {sizes[split]} identities, fewer than num_identities={num_identities}; lower it or enlarge the world config")
    description = description or default_description(world, split, num_identities)
    n = num_identities * images_per_identity

    tmp = out_dir / ".images.npy.tmp"
    labels: dict[str, np.ndarray] = {}
    identities: set[int] = set()
    arr = None
    try:
        with progress_bar(progress) as bar:
            task = bar.add_task(f"rendering {split} set", total=n)
            for lo in range(0, n, chunk_size):
                idx = np.arange(lo, min(n, lo + chunk_size), dtype=np.int64)
                # Sample i shows identity i // M of the split; its other factors are those of sample i.
                params = world.sample_params(idx, split=split, identities=idx // images_per_identity)
                out = world.render(params, image_size=image_size, ground_truth=False)
                img = to_uint8(out.image)  # (B, H, W, 3)
                if arr is None:
                    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n,) + img.shape[1:])
                arr[lo : lo + len(idx)] = img
                for name, v in mask_unlabelled(out.labels, description).items():
                    labels.setdefault(name, np.empty(n, dtype=np.int64 if v.dtype == torch.long else np.float32))[lo : lo + len(idx)] = v.numpy()
                ident = getattr(params, "identity", None)
                if ident is not None:
                    identities.update(int(i) for i in torch.as_tensor(ident).reshape(-1).tolist())
                bar.advance(task, len(idx))
        arr.flush()
        del arr
        os.replace(tmp, out_dir / "images.npy")
    finally:
        if tmp.exists():
            tmp.unlink()

    height, width = np.load(out_dir / "images.npy", mmap_mode="r").shape[1:3]
    desc = dataclasses.replace(
        description,
        image_size=int(height),
        extra=dict(description.extra) | {"split": split, "world_seed": getattr(world.config, "seed", None)},
    )
    write_label_table(out_dir / "labels.csv", "index", [str(i) for i in range(n)], labels, desc)
    write_label_yaml(out_dir / "labels.yaml", desc)
    config = dataclasses.asdict(world.config) if dataclasses.is_dataclass(world.config) else dict(world.config)
    ids = sorted(identities)
    atomic_write_json(
        out_dir / "world.json",
        {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "world": config,
            "split": split,
            "num_images": n,
            "num_identities": num_identities,
            "images_per_identity": images_per_identity,
            "image_size": [int(height), int(width)],
            # global identity ids present (ranges keep the file small for large sets)
            "identity_ranges": _ranges(ids),
            "description": desc.to_dict(),
        },
    )
    return out_dir


def _ranges(ids: list[int]) -> list[list[int]]:
    """[0, 1, 2, 5, 6] -> [[0, 2], [5, 6]] (inclusive)."""
    out: list[list[int]] = []
    for i in ids:
        if out and i == out[-1][1] + 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


class WorldArrayDataset(Dataset):
    """A world set written by :func:`write_world_set`, read memory-mapped."""

    def __init__(
        self,
        root: str | Path,  # the folder write_world_set wrote
        description: DatasetDescription | None = None,  # restrict labels further (e.g. world B); default from world.json
    ) -> None:
        self.root = Path(root)
        meta_path = self.root / "world.json"
        if not self.root.is_dir():
            raise DataError(f"{self.root}: not a folder; make a world set with `facefactors world make --out {self.root}`")
        if not meta_path.is_file():
            raise DataError(f"{meta_path}: missing (an unfinished or foreign folder); remake it with `facefactors world make --out {self.root} --overwrite`")
        try:
            self.meta = json.loads(meta_path.read_text())
            stored = DatasetDescription.from_dict(self.meta["description"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise DataError(f"{meta_path}: not a valid world-set description ({e}); remake the set") from None
        if self.meta.get("format") != FORMAT:
            raise DataError(f"{meta_path}: not a facefactors world set (format {self.meta.get('format')!r}); remake the set")

        images_path = self.root / "images.npy"
        try:
            self.images = np.load(images_path, mmap_mode="r")
        except FileNotFoundError:
            raise DataError(f"{images_path}: missing; remake the set with `facefactors world make --overwrite`") from None
        except (ValueError, OSError, EOFError) as e:
            raise DataError(f"{images_path}: not a readable .npy array ({e}); the file is damaged, remake the set") from None
        shape = self.images.shape
        if self.images.ndim != 4 or shape[-1] != 3 or self.images.dtype != np.uint8:
            raise DataError(f"{images_path}: expected uint8 (N, H, W, 3), got {self.images.dtype} {shape}; remake the set")
        n = int(self.meta.get("num_images", -1))
        if shape[0] != n or list(shape[1:3]) != list(self.meta.get("image_size", [])):
            raise DataError(
                f"{images_path}: holds {shape[0]} images of {shape[1]}x{shape[2]} but world.json says "
                f"{n} of {self.meta.get('image_size')}; the set is inconsistent, remake it"
            )

        keys, table, _factors, _labelled, _ = read_label_table(self.root / "labels.csv", "index", self.root / "labels.yaml")
        if len(keys) != n:
            raise DataError(f"{self.root / 'labels.csv'}: has {len(keys)} rows but images.npy holds {n} images; remake the set")
        if keys != [str(i) for i in range(n)]:
            raise DataError(f"{self.root / 'labels.csv'}: the 'index' column must run 0..{n - 1} in order; remake the set")
        if set(table) != set(stored.names):
            raise DataError(f"{self.root / 'labels.yaml'}: factors {sorted(table)} differ from world.json {sorted(stored.names)}; remake the set")
        self.description = description or stored
        masked = mask_unlabelled({k: torch.from_numpy(v) for k, v in table.items()}, self.description)
        self.labels = {k: v.numpy() for k, v in masked.items()}  # (N,) per factor
        self.split = self.meta.get("split")
        self.world_config = self.meta.get("world", {})

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        i = i % len(self)
        return {
            "image": uint8_to_tensor(np.array(self.images[i])),  # (3, H, W)
            "labels": label_items(self.labels, i),
            "index": torch.tensor(i, dtype=torch.long),
        }

    def __getitems__(self, indices: list[int]) -> list[dict]:
        """Batch read for DataLoader: one fancy-indexed read of the memory map."""
        block = uint8_to_tensor(np.array(self.images[np.asarray(indices)]))  # (B, 3, H, W)
        return [{"image": block[j], "labels": label_items(self.labels, i), "index": torch.tensor(i, dtype=torch.long)} for j, i in enumerate(indices)]

