"""Clip folders: one sub-folder per video clip, frames as image files (issue 2, section 4).

Clips are what LatentFace learns identity from (frames of one person whose expression and pose
drift). Layout::

    root/
      clip_000/ 0001.png 0002.png ...     frames in natural order (2 < 10)
      clip_001/ ...
      labels.csv                          optional: a 'clip' column + one column per factor
      labels.yaml                         declares the columns (see facefactors.data.labels)

An item is ``{"image": (T, 3, H, W), "labels": {factor: scalar}, "index": scalar, "clip": scalar,
"frames": (T,)}`` where ``index`` numbers the items (windows) and ``clip`` the clip folder. With
``clip_length=None`` an item is a whole clip (batch with ``batch_size=1`` if lengths differ); with
``clip_length=L`` the clips are cut into windows of L frames every ``stride`` frames, and clips
shorter than L are skipped with one warning.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from facefactors.data.description import DatasetDescription
from facefactors.data.folder import DEFAULT_LABELS, label_items
from facefactors.data.images import (
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


def natural_key(name: str) -> list:
    """'frame2.png' < 'frame10.png'."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


class ClipFolderDataset(Dataset):
    """Video clips stored as folders of frames (see module doc)."""

    def __init__(
        self,
        root: str | Path,  # folder with one sub-folder per clip
        image_size: int = 64,  # frames are (3, image_size, image_size)
        clip_length: int | None = None,  # frames per item; None = whole clips
        stride: int | None = None,  # frames between window starts; default clip_length (no overlap)
        on_wrong_size: WrongSize = "resize",  # frames of another size: "resize" or "error"
        labels: str | Path | None = DEFAULT_LABELS,  # clip-level table relative to root; None = unlabelled
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: not a folder; pass the folder that holds one sub-folder per clip")
        if clip_length is not None and clip_length < 1:
            raise UserError(f"clip_length must be a positive number of frames or None, got {clip_length}")
        self.image_size = as_hw(image_size)
        self.on_wrong_size = on_wrong_size
        self.clip_length = clip_length
        self.stride = stride or clip_length or 1
        self.notes = ConversionNotes(str(self.root))

        folders = sorted((p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: natural_key(p.name))
        if not folders:
            loose = [p for p in self.root.iterdir() if p.is_file() and is_image_file(p)]
            hint = " (it holds loose images: move each clip's frames into its own sub-folder)" if loose else ""
            raise DataError(f"{self.root}: no clip folders found{hint}; expected root/<clip>/<frames>")
        self.clip_names = [p.name for p in folders]
        self.frames: list[list[Path]] = []
        for p in folders:
            frames = sorted((f for f in p.iterdir() if f.is_file() and is_image_file(f)), key=lambda f: natural_key(f.name))
            if not frames:
                raise DataError(f"{p}: empty clip (no image files); add its frames or delete the folder")
            self.frames.append(frames)

        self.clip_table, self.description = self._read_labels(labels)  # per clip folder

        # Items: whole clips, or (clip, start) windows of clip_length frames.
        self.items: list[tuple[int, int, int]] = []  # (clip, start, length)
        short = []
        for c, frames in enumerate(self.frames):
            n = len(frames)
            if clip_length is None:
                self.items.append((c, 0, n))
            elif n < clip_length:
                short.append(self.clip_names[c])
            else:
                self.items.extend((c, s, clip_length) for s in range(0, n - clip_length + 1, self.stride))
        if short:
            msg = f"{self.root}: {len(short)} clips are shorter than clip_length={clip_length} and are skipped (e.g. {short[0]})"
            log.warning(msg)
            warnings.warn(msg, stacklevel=2)
        if not self.items:
            raise DataError(f"{self.root}: every clip is shorter than clip_length={clip_length}; lower clip_length")

    def _read_labels(self, labels) -> tuple[dict[str, np.ndarray], DatasetDescription]:
        extra = {"root": str(self.root), "clips": len(self.clip_names)}
        csv_path = None if labels is None else (Path(labels) if Path(labels).is_absolute() else self.root / labels)
        if csv_path is None or (not csv_path.is_file() and str(labels) == DEFAULT_LABELS and not yaml_path_for(csv_path).is_file()):
            return {}, unlabelled_description(self.root.name, self.image_size[0], extra)
        keys, table, factors, labelled, name = read_label_table(csv_path, "clip")
        keys = [k.strip("/\\") for k in keys]
        unknown = [k for k in keys if k not in self.clip_names]
        if unknown:
            raise DataError(f"{csv_path}: clips {unknown[:3]} are not sub-folders of {self.root}; fix the 'clip' cells or add the folders")
        unlisted = [c for c in self.clip_names if c not in keys]
        if unlisted:
            raise DataError(f"{csv_path}: clip folders {unlisted[:3]} have no row; add rows (leave cells empty for missing labels)")
        order = [keys.index(c) for c in self.clip_names]  # table rows in clip-folder order
        table = {k: v[order] for k, v in table.items()}
        desc = DatasetDescription(name or self.root.name, tuple(factors), tuple(labelled), self.image_size[0], extra=extra)
        return table, desc

    @property
    def labels(self) -> dict[str, np.ndarray]:
        """Labels per item (window) ``(N,)``, aligned with ``__getitem__`` (e.g. for GroupedBatchSampler)."""
        idx = np.array([c for c, _, _ in self.items], dtype=np.int64)
        return {k: v[idx] for k, v in self.clip_table.items()}

    @property
    def clip_of_item(self) -> np.ndarray:
        """The clip folder index of every item ``(N,)``; windows of one clip share it."""
        return np.array([c for c, _, _ in self.items], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} clips")
        i = i % len(self)
        c, start, length = self.items[i]
        frames = self.frames[c][start : start + length]
        # Frames of another size are resized (with one note) or rejected, per on_wrong_size.
        arr = np.stack([load_image_uint8(f, self.image_size, self.on_wrong_size, self.notes) for f in frames])
        return {
            "image": uint8_to_tensor(arr),  # (T, 3, H, W)
            "labels": label_items(self.clip_table, c),
            "index": torch.tensor(i, dtype=torch.long),
            "clip": torch.tensor(c, dtype=torch.long),
            "frames": torch.arange(start, start + length, dtype=torch.long),  # (T,)
        }
