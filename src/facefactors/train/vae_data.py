"""Data sources for the VAE recipe: the face world, a world set on disk, a photo folder, or
``blobs`` — a tiny synthetic data set with known factors for tests and smoke runs.

``blobs`` is a dSprites-like toy (Matthey et al. 2017): a coloured disc on black with five
independent categorical factors (colour, size, x, y, bar — a dark horizontal "eyeglasses" bar
across the disc). It has the same batch convention as every facefactors data set and also
implements the metrics sampler protocol, so the whole VAE pipeline (train, attribute vectors,
MIG/DCI/SAP/FactorVAE score) can be exercised in seconds without the world renderer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from facefactors.data.description import DatasetDescription, Factor
from facefactors.utils.errors import UserError

BLOB_FACTORS = (
    Factor("colour", "categorical", ("red", "green", "blue")),
    Factor("size", "categorical", ("small", "medium", "large")),
    Factor("x", "categorical", ("0", "1", "2", "3", "4")),
    Factor("y", "categorical", ("0", "1", "2", "3", "4")),
    Factor("bar", "categorical", ("no", "yes")),
)
_COLOURS = np.array([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.3, 1.0]], dtype=np.float32)


def render_blobs(factors: np.ndarray, image_size: int = 32) -> np.ndarray:
    """factors (N, 5) int -> images (N, 3, S, S) float32 in [0, 1], vectorised over N."""
    f = np.asarray(factors)
    s = image_size
    coords = (np.arange(s, dtype=np.float32) + 0.5) / s  # pixel centres in (0, 1)
    # Large, overlapping positions and sizes: neighbouring factor values share pixels, so a
    # decoder gets a useful gradient from the start (tiny far-apart sprites stall VAEs for long).
    cx = 0.35 + 0.075 * f[:, 2].astype(np.float32)  # x right
    cy = 0.35 + 0.075 * f[:, 3].astype(np.float32)  # y down
    r = 0.2 + 0.06 * f[:, 1].astype(np.float32)
    dx = coords[None, None, :] - cx[:, None, None]
    dy = coords[None, :, None] - cy[:, None, None]
    # Soft edge of about one pixel so images vary smoothly with position.
    disc = np.clip((r[:, None, None] - np.sqrt(dx**2 + dy**2)) * s + 0.5, 0, 1)  # (N, S, S)
    bar = (np.abs(dy) < 0.05) & (np.abs(dx) < r[:, None, None]) & (f[:, 4] == 1)[:, None, None]
    colour = _COLOURS[f[:, 0]]  # (N, 3)
    # Black background and saturated colours, as in dSprites: a Bernoulli decoder sees
    # near-binary targets, so the shapes carry most of the likelihood.
    img = disc[:, None] * colour[:, :, None, None]
    img = np.where(bar[:, None], 0.0, img)
    return img.astype(np.float32)


def blobs_description(image_size: int = 32) -> DatasetDescription:
    return DatasetDescription("blobs", BLOB_FACTORS, image_size=image_size)


class BlobsDataset(Dataset):
    """``n`` i.i.d. blob images (factor tuple of item i is a pure function of (seed, i))."""

    def __init__(self, n: int = 2048, image_size: int = 32, seed: int = 0):
        rng = np.random.default_rng(seed)
        sizes = [f.num_classes for f in BLOB_FACTORS]
        self.factors = np.stack([rng.integers(0, k, n) for k in sizes], axis=1)  # (N, 5)
        self.images = torch.from_numpy(render_blobs(self.factors, image_size))  # (N, 3, S, S)
        self.description = blobs_description(image_size)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        labels = {f.name: torch.tensor(int(self.factors[i, k])) for k, f in enumerate(BLOB_FACTORS)}
        return {"image": self.images[i], "labels": labels, "index": torch.tensor(i)}


class BlobsGroundTruth:
    """The metrics sampler protocol over the blobs factors (every factor discrete already)."""

    def __init__(self, image_size: int = 32):
        self.image_size = image_size
        self.factor_names = [f.name for f in BLOB_FACTORS]
        self.factor_sizes = [f.num_classes for f in BLOB_FACTORS]

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.stack([rng.integers(0, k, n) for k in self.factor_sizes], axis=1)

    def sample_observations(self, factors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return render_blobs(factors, self.image_size)


class TensorImageDataset(Dataset):
    """Images (N, 3, H, W) in [0, 1] and labels {name: (N,)} held in memory."""

    def __init__(self, images: torch.Tensor, labels: dict[str, torch.Tensor], description: DatasetDescription):
        self.images = images
        self.labels = labels
        self.description = description

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "labels": {k: v[i] for k, v in self.labels.items()}, "index": torch.tensor(i)}

    def __getitems__(self, indices: list[int]) -> dict:
        """A whole batch by one indexing per tensor (the DataLoader's batched fetch): per-item
        dicts of many small label tensors cost more than a small VAE's step on a CPU."""
        idx = torch.as_tensor(indices)
        return {"image": self._images(idx), "labels": {k: v[idx] for k, v in self.labels.items()}, "index": idx}

    def _images(self, idx: torch.Tensor) -> torch.Tensor:
        return self.images[idx]


def collate_batches(items):
    """``collate`` for lists of items; a batch already built by ``__getitems__`` passes through."""
    from facefactors.data.collate import collate

    return items if isinstance(items, dict) else collate(items)


@dataclass
class DataConfig:
    source: str = "world"  # world (rendered once, in memory) | world_set (a `world make` folder) | folder | blobs
    path: str = ""  # folder for world_set / folder sources
    num_images: int = 8192  # world / blobs: size of the training set
    world_seed: int = 0  # world: seed of the face world
    zoom: float = 1.0  # world: framing (WorldConfig.zoom); 1.5 keeps the central two thirds, face bigger
    split: str = "train"  # world: which identity split
    seed: int = 0  # blobs: sampling seed


def face_world(seed: int, image_size: int, zoom: float = 1.0):
    """The face world the VAE data, its held-out faces and its ground-truth metrics all come from."""
    try:
        from facefactors.world import FaceWorld, WorldConfig
    except ImportError as e:  # the world package is built by another issue
        raise UserError(f"the face world is not available ({e}); use --set data.source=blobs or data.source=folder") from None
    return FaceWorld(WorldConfig(seed=seed, image_size=image_size, zoom=zoom))


def load_world_images(n: int, image_size: int, seed: int = 0, split: str = "train", progress: bool = True, chunk: int = 256, zoom: float = 1.0):
    """Render ``n`` world samples once -> (images uint8 (N, 3, S, S), labels, description)."""
    from facefactors.data.progress import progress_bar

    world = face_world(seed, image_size, zoom)
    images, labels = [], {}
    with progress_bar(progress) as bar:
        task = bar.add_task(f"rendering {n} world faces", total=n)
        for start in range(0, n, chunk):
            idx = torch.arange(start, min(n, start + chunk))
            batch = world.sample(idx, split=split)
            images.append((batch.image.clamp(0, 1) * 255).round().to(torch.uint8))
            for k, v in batch.labels.items():
                labels.setdefault(k, []).append(v)
            bar.update(task, advance=len(idx))
    return torch.cat(images), {k: torch.cat(v) for k, v in labels.items()}, world.description


class Uint8ImageDataset(TensorImageDataset):
    """Like TensorImageDataset with uint8 storage (4x less memory), converted per item."""

    def __getitem__(self, i: int) -> dict:
        item = super().__getitem__(i)
        item["image"] = item["image"].float().div_(255.0)  # the conversion of _images, one item
        return item

    def _images(self, idx: torch.Tensor) -> torch.Tensor:
        return self.images[idx].float().div_(255.0)  # in place: one pass and one allocation fewer


def build_dataset(cfg: DataConfig, image_size: int, progress: bool = True) -> Dataset:
    """The training data set of a VAE run (each has ``.description``)."""
    if cfg.source == "blobs":
        return BlobsDataset(cfg.num_images, image_size, cfg.seed)
    if cfg.source == "world":
        images, labels, description = load_world_images(cfg.num_images, image_size, cfg.world_seed, cfg.split, progress, zoom=cfg.zoom)
        return Uint8ImageDataset(images, labels, description)
    if cfg.source == "world_set":
        try:
            from facefactors.data.world import WorldArrayDataset
        except ImportError as e:
            raise UserError(f"world sets cannot be read yet ({e}); use data.source=world") from None
        if not Path(cfg.path).is_dir():
            raise UserError(f"data.path={cfg.path!r}: not a folder; make a world set with `facefactors world make` and pass its folder")
        return WorldArrayDataset(cfg.path)
    if cfg.source == "folder":
        from facefactors.data.folder import ImageFolderDataset

        if not cfg.path:
            raise UserError("data.source=folder needs data.path=<folder of images with labels.csv>")
        return ImageFolderDataset(cfg.path, image_size=image_size)
    raise UserError(f"data.source={cfg.source!r} is not one of ['world', 'world_set', 'folder', 'blobs']")
