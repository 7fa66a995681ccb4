"""What a data set is labelled with: the object models and metrics read instead of hard-coding
attribute lists.

Label conventions, fixed here for every data set, loss and metric:
* a categorical label is an integer class index in [0, num_classes); a missing one is ``-1``;
* a continuous label is a float; a missing one is ``NaN``;
* a batch carries labels as ``{factor_name: tensor (B,)}`` (long for categorical, float for
  continuous) plus the same names for every factor of the description, labelled or not
  (an unlabelled factor is all-missing).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

FactorKind = Literal["categorical", "continuous"]

MISSING_CLASS = -1  # categorical missing label


@dataclass(frozen=True)
class Factor:
    """One factor of variation (an "attribute" in the UFE paper)."""

    name: str  # column name, e.g. "expression"
    kind: FactorKind = "categorical"
    class_names: tuple[str, ...] = ()  # categorical only; index = class id
    group: str = ""  # the attribute this label belongs to (e.g. "age" -> "identity"); "" = itself
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("categorical", "continuous"):
            raise ValueError(f"factor {self.name!r}: kind must be 'categorical' or 'continuous', got {self.kind!r}")
        if self.kind == "categorical" and len(self.class_names) < 2:
            raise ValueError(f"factor {self.name!r}: a categorical factor needs at least 2 class names")
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.kind == "categorical" else 0

    @property
    def is_categorical(self) -> bool:
        return self.kind == "categorical"


@dataclass(frozen=True)
class DatasetDescription:
    """Factor names, kinds, class counts and which factors this data set labels."""

    name: str
    factors: tuple[Factor, ...]
    labelled: tuple[str, ...] | None = None  # factors with labels in this set; None = all, () = none
    image_size: int = 64
    channels: int = 3
    extra: dict = field(default_factory=dict, compare=False)  # free-form provenance (world seed, split, ...)

    def __post_init__(self) -> None:
        object.__setattr__(self, "factors", tuple(self.factors))
        names = [f.name for f in self.factors]
        if len(set(names)) != len(names):
            raise ValueError(f"data set {self.name!r}: duplicate factor names in {names}")
        labelled = tuple(names) if self.labelled is None else tuple(self.labelled)
        unknown = sorted(set(labelled) - set(names))
        if unknown:
            raise ValueError(f"data set {self.name!r}: labelled factors {unknown} are not among the factors {names}")
        object.__setattr__(self, "labelled", labelled)

    # --- look-ups -------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [f.name for f in self.factors]

    def __getitem__(self, name: str) -> Factor:
        for f in self.factors:
            if f.name == name:
                return f
        raise KeyError(f"data set {self.name!r} has no factor {name!r}; it has {self.names}")

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def is_labelled(self, name: str) -> bool:
        return name in self.labelled

    @property
    def labelled_factors(self) -> list[Factor]:
        return [f for f in self.factors if f.name in self.labelled]

    @property
    def categorical(self) -> list[Factor]:
        return [f for f in self.factors if f.is_categorical]

    def restrict(self, labelled: list[str] | tuple[str, ...], name: str | None = None) -> DatasetDescription:
        """The same factors with only ``labelled`` carrying labels (e.g. world B of the UFE paper)."""
        return DatasetDescription(name or self.name, self.factors, tuple(labelled), self.image_size, self.channels, dict(self.extra))

    def union(self, other: DatasetDescription, name: str) -> DatasetDescription:
        """Factors of both sets (same-named factors must agree); labelled = labelled in either."""
        factors = list(self.factors)
        for f in other.factors:
            if f.name in self:
                if self[f.name] != f:
                    raise ValueError(f"factor {f.name!r} differs between {self.name!r} and {other.name!r}")
            else:
                factors.append(f)
        labelled = tuple(dict.fromkeys(self.labelled + other.labelled))
        return DatasetDescription(name, tuple(factors), labelled, self.image_size, self.channels)

    # --- label checks -----------------------------------------------------------------------
    def missing_mask(self, name: str, values: np.ndarray) -> np.ndarray:
        """True where the label of factor ``name`` is missing."""
        values = np.asarray(values)
        if self[name].is_categorical:
            return values < 0
        return np.isnan(values.astype(np.float64))

    # --- (de)serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["factors"] = [asdict(f) for f in self.factors]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DatasetDescription:
        factors = tuple(
            Factor(
                name=f["name"],
                kind=f.get("kind", "categorical"),
                class_names=tuple(f.get("class_names", ())),
                group=f.get("group", ""),
                description=f.get("description", ""),
            )
            for f in d["factors"]
        )
        return cls(
            name=d["name"],
            factors=factors,
            labelled=None if d.get("labelled") is None else tuple(d["labelled"]),
            image_size=int(d.get("image_size", 64)),
            channels=int(d.get("channels", 3)),
            extra=dict(d.get("extra", {})),
        )

    def save(self, path: str | Path) -> None:
        from facefactors.utils.io import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> DatasetDescription:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no data set description here; make one with `facefactors world make` or write it by hand") from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: not a valid data set description ({e}); regenerate it") from None
