"""A folder of face photos with an optional ``labels.csv`` + ``labels.yaml`` (issue 2, section 4).

Images may sit anywhere under the root. With a label table, the data set is exactly the rows of
``labels.csv`` (images on disk that the table does not list are skipped with one warning); without
one, every image under the root is used and the description has no factors (for unsupervised
models such as the VAE family). The table format is documented in :mod:`facefactors.data.labels`.

Items follow the shared batch convention: ``{"image": (3, H, W) float32 in [0, 1],
"labels": {factor: scalar tensor}, "index": scalar long}``; :func:`facefactors.data.collate`
stacks them.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from facefactors.data.description import DatasetDescription
from facefactors.data.images import (
    IMAGE_SUFFIXES,
    ConversionNotes,
    WrongSize,
    as_hw,
    is_image_file,
    load_image_uint8,
    uint8_to_tensor,
)
from facefactors.data.labels import read_label_table, unlabelled_description, yaml_path_for
from facefactors.utils.errors import DataError, UserError

log = logging.getLogger(__name__)

DEFAULT_LABELS = "labels.csv"


def scan_images(root: Path) -> list[str]:
    """Relative POSIX paths of all image files under ``root`` (hidden files and folders skipped), sorted."""
    found = []
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.is_file() and is_image_file(p):
            found.append(rel.as_posix())
    return sorted(found)


def _normalise_key(key: str) -> str:
    """Table paths may use backslashes or a leading './'; compare them as POSIX relative paths."""
    key = key.replace("\\", "/")
    while key.startswith("./"):
        key = key[2:]
    return key


def label_items(labels: dict[str, np.ndarray], i: int) -> dict[str, torch.Tensor]:
    """Row ``i`` of a label table as scalar tensors (long for class indices, float32 otherwise)."""
    out = {}
    for name, values in labels.items():
        v = values[i]
        out[name] = torch.tensor(int(v), dtype=torch.long) if values.dtype.kind in "iu" else torch.tensor(float(v), dtype=torch.float32)
    return out


class ImageFolderDataset(Dataset):
    """Face photos under ``root`` with labels from ``labels.csv`` (see module doc)."""

    def __init__(
        self,
        root: str | Path,  # folder holding the images (any depth) and labels.csv
        image_size: int = 64,  # output images are (3, image_size, image_size)
        on_wrong_size: WrongSize = "resize",  # "resize": centre-crop + resize; "error": reject
        labels: str | Path | None = DEFAULT_LABELS,  # table relative to root (or absolute); None = unlabelled
        cache: bool = False,  # keep decoded uint8 images in memory after the first read
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: not a folder; pass the folder that holds your images")
        if on_wrong_size not in ("resize", "error"):
            raise UserError(f"on_wrong_size must be 'resize' or 'error', got {on_wrong_size!r}")
        self.image_size = as_hw(image_size)
        self.on_wrong_size = on_wrong_size
        self.cache = cache
        self._cache: dict[int, np.ndarray] = {}
        self.notes = ConversionNotes(str(self.root))

        on_disk = scan_images(self.root)
        if not on_disk:
            raise DataError(
                f"{self.root}: no images found (looked for {', '.join(IMAGE_SUFFIXES)} at any depth); "
                "put your images there or point to the right folder"
            )
        csv_path = None if labels is None else (Path(labels) if Path(labels).is_absolute() else self.root / labels)
        if csv_path is not None and not csv_path.is_file():
            # No table is fine for unsupervised use, unless the user clearly meant to have one.
            if str(labels) != DEFAULT_LABELS or yaml_path_for(csv_path).is_file():
                raise DataError(f"{csv_path}: labels file not found; write it, or pass labels=None for an unlabelled folder")
            csv_path = None

        extra = {"root": str(self.root)}
        if csv_path is None:
            self.files = on_disk
            self.labels: dict[str, np.ndarray] = {}
            self.description = unlabelled_description(self.root.name, self.image_size[0], extra)
            log.info("%s: no %s, using %d unlabelled images", self.root, DEFAULT_LABELS, len(self.files))
            return

        keys, table, factors, labelled, name = read_label_table(csv_path, "file")
        keys = [_normalise_key(k) for k in keys]
        disk = set(on_disk)
        missing = [k for k in keys if k not in disk]
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise DataError(
                f"{csv_path}: {len(missing)} listed files are not images under {self.root} ({shown}); "
                "add the images or delete their rows (paths are relative to the folder)"
            )
        extra_files = sorted(disk - set(keys))
        if extra_files:
            msg = (
                f"{csv_path}: {len(extra_files)} images under {self.root} are not in the table and are skipped "
                f"(e.g. {extra_files[0]}); add rows for them to use them"
            )
            log.warning(msg)
            warnings.warn(msg, stacklevel=2)
        self.files = keys
        self.labels = table
        self.description = DatasetDescription(
            name=name or self.root.name,
            factors=tuple(factors),
            labelled=tuple(labelled),
            image_size=self.image_size[0],
            extra=extra,
        )

    def __len__(self) -> int:
        return len(self.files)

    def path(self, i: int) -> Path:
        return self.root / self.files[i]

    def read_uint8(self, i: int) -> np.ndarray:
        """Image ``i`` as uint8 ``(H, W, 3)`` (cached when ``cache=True``)."""
        if self.cache and i in self._cache:
            return self._cache[i]
        arr = load_image_uint8(self.path(i), self.image_size, self.on_wrong_size, self.notes)
        if self.cache:
            self._cache[i] = arr
        return arr

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        i = i % len(self)
        return {
            "image": uint8_to_tensor(self.read_uint8(i)),  # (3, H, W)
            "labels": label_items(self.labels, i),
            "index": torch.tensor(i, dtype=torch.long),
        }

    def check(self, progress: bool = True) -> list[str]:
        """Decode every image once; return one line per unreadable file (empty list: all good)."""
        from facefactors.data.progress import progress_bar

        problems = []
        with progress_bar(progress) as bar:
            task = bar.add_task(f"checking {self.root.name}", total=len(self))
            for i in range(len(self)):
                try:
                    self.read_uint8(i)
                except DataError as e:
                    problems.append(str(e))
                bar.advance(task)
        return problems
