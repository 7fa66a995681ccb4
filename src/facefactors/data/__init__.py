"""Data sets for facefactors: the face world (streamed or written to disk), image folders with a
``labels.csv``, clip folders, and samplers that guarantee positive pairs (issue 2, section 4).

Every data set has ``.description`` (a :class:`DatasetDescription`) and ``.labels`` (numpy arrays
``(N,)`` per factor, missing = -1 / NaN); items and batches are dicts
``{"image", "labels": {name: ...}, "index"}``.
"""

from facefactors.data.batching import (
    GroupedBatchSampler,
    missing_positive_pairs,
    positive_pair_counts,
    split_by_group,
)
from facefactors.data.clips import ClipFolderDataset
from facefactors.data.collate import collate
from facefactors.data.description import MISSING_CLASS, DatasetDescription, Factor
from facefactors.data.folder import ImageFolderDataset
from facefactors.data.images import ConversionNotes, load_image
from facefactors.data.world import WorldArrayDataset, WorldStream, write_world_set

__all__ = [
    "MISSING_CLASS",
    "ClipFolderDataset",
    "ConversionNotes",
    "DatasetDescription",
    "Factor",
    "GroupedBatchSampler",
    "ImageFolderDataset",
    "WorldArrayDataset",
    "WorldStream",
    "collate",
    "load_image",
    "missing_positive_pairs",
    "positive_pair_counts",
    "split_by_group",
    "write_world_set",
]
