"""Stacking dict items into the shared batch convention.

``{"image": (B, 3, H, W), "labels": {name: (B,)}, "index": (B,)}``; any other tensor entry is
stacked too, and non-tensor entries become lists.
"""

from __future__ import annotations

from typing import Any

import torch

from facefactors.utils.errors import DataError


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of item dicts (as returned by the data sets' ``__getitem__``) into one batch."""
    if not items:
        raise DataError("collate: got an empty list of items; check the sampler yields non-empty batches")
    out: dict[str, Any] = {}
    for key, first in items[0].items():
        values = [it[key] for it in items]
        if isinstance(first, dict):
            out[key] = collate(values)  # e.g. labels: {name: (B,)}
        elif isinstance(first, torch.Tensor):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) > 1:
                raise DataError(
                    f"collate: '{key}' has different shapes in one batch {sorted(shapes)[:3]}; "
                    "for clips of different lengths set clip_length, or use batch_size=1"
                )
            out[key] = torch.stack(values)
        else:
            out[key] = values
    return out
