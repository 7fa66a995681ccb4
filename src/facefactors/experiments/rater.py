"""The automated user study's bookkeeping (Banerjee et al., sec. 4.6, Fig. 5): accuracy per
swapped attribute next to chance, and the confusions.

The rater itself is trained and calibrated in :mod:`facefactors.train.rater`
(``facefactors ufe rater --preset quick --out runs/rater``; ``ensure_rater`` trains it on first
use) and loaded with :func:`facefactors.train.rater.load_rater`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from facefactors.utils.io import atomic_write_json


def study_summary(truth: list[str], said: list[str], attributes: list[str]) -> dict:
    """Accuracy per swapped attribute (and for the unchanged controls) next to chance."""
    truth_a, said_a = np.array(truth), np.array(said)
    options = len(attributes) + 1  # the attributes and "none"
    per = {}
    for a in [*attributes, "none"]:
        m = truth_a == a
        if m.any():
            per[a] = {"accuracy": float((said_a[m] == a).mean()), "n": int(m.sum()), "chance": 1.0 / options}
    swapped = truth_a != "none"
    return {"per_attribute": per, "overall_swapped": float((said_a[swapped] == truth_a[swapped]).mean()) if swapped.any() else float("nan"), "chance": 1.0 / options, "confusion": _confusion(truth_a, said_a, [*attributes, "none"])}


def _confusion(truth: np.ndarray, said: np.ndarray, names: list[str]) -> dict[str, dict[str, int]]:
    return {t: {s: int(((truth == t) & (said == s)).sum()) for s in names} for t in names}


def write_json(path: Path, obj) -> None:
    atomic_write_json(path, json.loads(json.dumps(obj, default=float)))
