"""Configuration of the face world (DESIGN.md "The face world")."""

from __future__ import annotations

from dataclasses import dataclass

from facefactors.utils.errors import ConfigError

SPLITS = ("train", "val", "test")


@dataclass
class WorldConfig:
    seed: int = 0  # every sample is a pure function of (seed, split, index)
    image_size: int = 64  # rendered image side, pixels
    canonical_size: int | None = None  # canonical (frontal) grid side; None = image_size
    fov_deg: float = 10.0  # perspective field of view (Unsup3D)
    supersample: int = 2  # rasteriser supersampling factor
    train_identities: int = 2000  # identities of each split are disjoint
    val_identities: int = 200
    test_identities: int = 200
    yaw_buckets: tuple[float, ...] = (-30.0, -15.0, 0.0, 15.0, 30.0)  # pose classes, degrees
    yaw_jitter: float = 4.0  # +- degrees around the bucket centre
    pitch_range: float = 10.0  # +- degrees
    roll_range: float = 8.0  # +- degrees
    nir_probability: float = 0.2  # share of NIR-like (grey) camera renders
    eyeglasses_probability: float = 0.25
    intensity_range: tuple[float, float] = (0.6, 1.0)  # expression intensity of non-neutral classes
    noise_max: float = 0.02  # max std of additive pixel noise
    blur_max: float = 0.5  # max Gaussian blur std, in pixels of a 64-pixel image
    zoom: float = 1.0  # framing: >= 1; the image is the central 1/zoom of the render (a tighter crop, as CelebA's aligned faces)

    def __post_init__(self):
        if not self.zoom >= 1.0:
            raise ConfigError(f"zoom={self.zoom}: the world's framing must be >= 1 (1 = the whole frame, 1.5 its central two thirds); set data.zoom to 1 or more")

    def framed_size(self, size: int) -> int:
        """Side of the render whose central ``size`` pixels are the image at this zoom; its margin
        is whole pixels on each side, so the crop needs no resampling."""
        return size + 2 * round(size * (self.zoom - 1.0) / 2)

    def split_offset(self, split: str) -> int:
        """First global identity id of ``split`` (train ids first, then val, then test)."""
        sizes = self.split_sizes()
        if split not in sizes:
            raise ValueError(f"unknown split {split!r}; use one of {list(SPLITS)}")
        return sum(sizes[s] for s in SPLITS[: SPLITS.index(split)])

    def split_sizes(self) -> dict[str, int]:
        return {
            "train": self.train_identities,
            "val": self.val_identities,
            "test": self.test_identities,
        }
