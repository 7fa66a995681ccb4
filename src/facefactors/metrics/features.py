"""Reading what ``facefactors evaluate`` evaluates: a ``features.npz`` or a run directory.

``features.npz`` (shared format): ``features/<attribute>`` arrays (N, D), one per attribute
subspace (a model with a single code writes ``codes``, also accepted as ``features/codes``),
``labels/<factor>`` arrays (N,), and ``description``, the JSON of a DatasetDescription.
A run directory holds ``config.yaml``, ``features.npz`` and more; we read the first two.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facefactors.data.description import DatasetDescription
from facefactors.utils.errors import DataError, UserError


@dataclass
class FeatureSet:
    features: dict[str, np.ndarray]  # attribute -> (N, D)
    labels: dict[str, np.ndarray]  # factor -> (N,)
    description: DatasetDescription | None
    source: Path  # the file read
    config_text: str = ""  # the run's config.yaml, if any
    extra: dict = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        return len(next(iter(self.features.values())))

    def pair(self, feature: str, label: str) -> tuple[np.ndarray, np.ndarray]:
        """One feature as float64 (N, D) and one label (N,), or a one-line error naming the file
        and the names it holds."""
        for kind, name, known in (("features", feature, self.features), ("labels", label, self.labels)):
            if name not in known:
                raise DataError(f"{self.source} has no {kind}/{name}; known: {sorted(known)}")
        return self.features[feature].astype(np.float64), self.labels[label]

    def categorical_labels(self) -> dict[str, np.ndarray]:
        """Labels usable as classes: categorical in the description (or integer-typed without one), with some labels present."""
        out = {}
        for name, y in self.labels.items():
            if self.description is not None and name in self.description:
                if not self.description[name].is_categorical:
                    continue
            elif not np.issubdtype(y.dtype, np.integer):
                continue
            y = y.astype(np.int64)
            if (y >= 0).sum() >= 2 and len(np.unique(y[y >= 0])) >= 2:
                out[name] = y
        return out


def within_class_residual(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each row of ``features`` (N, D) minus the mean of its class in ``labels`` (N,), as float64:
    the spread within the classes, every class moved to the origin."""
    residual = features.astype(np.float64).copy()
    for c in np.unique(labels):
        residual[labels == c] -= residual[labels == c].mean(0)
    return residual


def _resolve(path: Path) -> tuple[Path, str]:
    if path.is_dir():
        npz = path / "features.npz"
        if not npz.is_file():
            raise UserError(f"{path}: this run directory has no features.npz; export features first (the method's `predict`/`features` command) or pass a features .npz")
        cfg = path / "config.yaml"
        return npz, cfg.read_text() if cfg.is_file() else ""
    if not path.is_file():
        raise UserError(f"{path}: no such file or directory; pass a run directory or a features .npz")
    return path, ""


def load_features(path: str | Path) -> FeatureSet:
    """Load a features.npz (or a run directory's) with one-line errors naming the file and the fix."""
    npz_path, config_text = _resolve(Path(path))
    try:
        data = np.load(npz_path, allow_pickle=False)
        keys = list(data.keys())
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"{npz_path}: not a readable .npz ({e}); re-export the features") from None
    features = {k.split("/", 1)[1]: np.asarray(data[k]) for k in keys if k.startswith("features/")}
    if "codes" in keys:
        features["codes"] = np.asarray(data["codes"])
    labels = {k.split("/", 1)[1]: np.asarray(data[k]) for k in keys if k.startswith("labels/")}
    if not features:
        raise DataError(f"{npz_path}: no 'features/<attribute>' or 'codes' arrays (found {keys}); write features as features/<name>")
    description = None
    if "description" in keys:
        try:
            description = DatasetDescription.from_dict(json.loads(str(data["description"])))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise DataError(f"{npz_path}: the 'description' entry is not a DatasetDescription JSON ({e}); re-export with description=json.dumps(desc.to_dict())") from None
    n = {k: len(v) for k, v in {**features, **labels}.items()}
    if len(set(n.values())) != 1:
        raise DataError(f"{npz_path}: arrays disagree on the number of samples {n}; re-export them together")
    for k, v in features.items():
        if v.ndim != 2:
            raise DataError(f"{npz_path}: features/{k} must be (N, D), got shape {v.shape}")
        if not np.all(np.isfinite(v)):
            raise DataError(f"{npz_path}: features/{k} contains NaN/inf; fix the model output before evaluating")
    return FeatureSet(features, labels, description, npz_path, config_text)


def save_features(path: str | Path, features: dict[str, np.ndarray], labels: dict[str, np.ndarray], description: DatasetDescription | None = None) -> Path:
    """Write the shared features.npz format (atomically)."""
    from facefactors.utils.io import atomic_path

    arrays = {f"features/{k}": np.asarray(v) for k, v in features.items()}
    arrays.update({f"labels/{k}": np.asarray(v) for k, v in labels.items()})
    if description is not None:
        arrays["description"] = np.array(json.dumps(description.to_dict()))
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return path
