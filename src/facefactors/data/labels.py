"""Label tables: ``labels.csv`` (one row per image or clip) + ``labels.yaml`` (what each column means).

Shared by image folders, clip folders and written world sets (issue 2, section 4), so one file
format serves all three. Conventions follow :mod:`facefactors.data.description`: an empty cell is
a missing label, stored as ``-1`` (categorical) or ``NaN`` (continuous).

``labels.csv``::

    file,expression,age_value
    alice/001.png,smile,31.5
    alice/002.png,,31.5          <- expression missing for this image

``labels.yaml`` next to it (same stem)::

    name: my faces                 # optional; default: the folder name
    factors:
      expression:
        kind: categorical
        classes: [neutral, smile, sadness, surprise, anger, disgust]
      identity:
        kind: categorical
        classes: auto              # the sorted distinct values of the column
      age_value:
        kind: continuous
        group: identity            # this label describes the identity attribute
      hair:
        kind: categorical
        classes: [short, long]
        labelled: false            # a factor of the description with no column (all missing)

Every declared factor must have a column unless it says ``labelled: false``; every column other
than the key column must be declared.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import yaml

from facefactors.data.description import MISSING_CLASS, DatasetDescription, Factor
from facefactors.utils.errors import DataError
from facefactors.utils.io import atomic_write_text


def yaml_path_for(csv_path: Path) -> Path:
    return csv_path.with_suffix(".yaml")


# --- labels.yaml ----------------------------------------------------------------------------


def read_label_yaml(path: Path) -> tuple[str | None, list[dict]]:
    """Parse ``labels.yaml`` into (name, factor specs); specs may still say ``classes: auto``."""
    if not path.is_file():
        raise DataError(
            f"{path}: missing; write it next to {path.with_suffix('.csv').name} to declare each column "
            "(kind: categorical with classes, or continuous); see facefactors.data.labels"
        )
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: not valid YAML ({first}); fix the syntax") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("factors"), (dict, list)):
        raise DataError(f"{path}: expected a mapping with a 'factors:' mapping (column -> kind, classes); fix the file")
    raw = doc["factors"]
    if isinstance(raw, list):  # also accept a list of {name: ..., kind: ...}
        items = []
        for spec in raw:
            if not isinstance(spec, dict) or "name" not in spec:
                raise DataError(f"{path}: every entry of the 'factors' list needs a 'name'; fix the file")
            items.append((str(spec["name"]), spec))
    else:
        items = [(str(k), v if v is not None else {}) for k, v in raw.items()]
    specs = []
    for name, spec in items:
        if not isinstance(spec, dict):
            raise DataError(f"{path}: factor {name!r} must be a mapping like {{kind: continuous}}; fix the file")
        kind = spec.get("kind", "categorical")
        if kind not in ("categorical", "continuous"):
            raise DataError(f"{path}: factor {name!r} has kind {kind!r}; use 'categorical' or 'continuous'")
        classes = spec.get("classes", spec.get("class_names"))
        if kind == "categorical":
            if classes is None:
                raise DataError(f"{path}: categorical factor {name!r} needs 'classes: [..]' (or 'classes: auto'); add it")
            if classes != "auto":
                if not isinstance(classes, list) or len(classes) < 2:
                    raise DataError(f"{path}: factor {name!r}: 'classes' must be a list of at least 2 names or 'auto'")
                classes = [str(c) for c in classes]
                if len(set(classes)) != len(classes):
                    raise DataError(f"{path}: factor {name!r}: duplicate class names in {classes}; make them unique")
        specs.append(
            {
                "name": name,
                "kind": kind,
                "classes": classes,
                "group": str(spec.get("group", "") or ""),
                "description": str(spec.get("description", "") or ""),
                "labelled": bool(spec.get("labelled", True)),
            }
        )
    name = doc.get("name")
    return (str(name) if name is not None else None), specs


def write_label_yaml(path: Path, description: DatasetDescription) -> None:
    """Write the ``labels.yaml`` that declares every factor of ``description``."""
    factors = {}
    for f in description.factors:
        spec: dict = {"kind": f.kind}
        if f.is_categorical:
            spec["classes"] = list(f.class_names)
        if f.group:
            spec["group"] = f.group
        if f.description:
            spec["description"] = f.description
        if not description.is_labelled(f.name):
            spec["labelled"] = False
        factors[f.name] = spec
    atomic_write_text(path, yaml.safe_dump({"name": description.name, "factors": factors}, sort_keys=False))


# --- labels.csv -----------------------------------------------------------------------------


def read_csv_rows(path: Path, key_column: str) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, rows and their line numbers; errors for a missing key column and ragged rows."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            rows, lines = [], []
            header: list[str] | None = None
            for row in reader:
                if not row or all(not c.strip() for c in row):
                    continue  # blank lines are harmless
                if header is None:
                    header = [c.strip() for c in row]
                    ncol = len(header)
                    continue
                if len(row) != ncol:
                    raise DataError(
                        f"{path}: line {reader.line_num} has {len(row)} cells but the header has {ncol}; "
                        "every row needs one cell per column (leave a cell empty for a missing label)"
                    )
                rows.append([c.strip() for c in row])
                lines.append(reader.line_num)
    except FileNotFoundError:
        raise DataError(f"{path}: labels file not found; write it or pass labels=None for an unlabelled folder") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: not a readable UTF-8 CSV file ({e}); save it as CSV (UTF-8)") from None
    if header is None:
        raise DataError(f"{path}: empty; it needs a header line with a '{key_column}' column and one column per factor")
    if key_column not in header:
        raise DataError(f"{path}: no '{key_column}' column in the header {header}; add it (the first column, as in '{key_column},expression,...')")
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup or "" in header:
        raise DataError(f"{path}: header has duplicate or empty column names {dup or ['']}; give each column one unique name")
    return header, rows, lines


def read_label_table(
    csv_path: Path,
    key_column: str,
    yaml_path: Path | None = None,
) -> tuple[list[str], dict[str, np.ndarray], list[Factor], list[str], str | None]:
    """Read ``labels.csv`` + ``labels.yaml``.

    Returns (keys, labels, factors, labelled names, name from the YAML). Labels are numpy arrays
    ``(N,)``: int64 class indices (missing -1) or float32 values (missing NaN), one per declared
    factor (unlabelled ones all missing). Keys must be unique.
    """
    yaml_path = yaml_path or yaml_path_for(csv_path)
    header, rows, lines = read_csv_rows(csv_path, key_column)
    name, specs = read_label_yaml(yaml_path)
    columns = [c for c in header if c != key_column]
    declared = {s["name"]: s for s in specs}
    undeclared = [c for c in columns if c not in declared]
    if undeclared:
        raise DataError(
            f"{yaml_path}: columns {undeclared} of {csv_path.name} are not declared; add them under 'factors:' "
            "(kind: categorical with classes, or continuous) or delete the columns"
        )
    absent = [s["name"] for s in specs if s["labelled"] and s["name"] not in columns]
    if absent:
        raise DataError(
            f"{yaml_path}: factors {absent} are declared but {csv_path.name} has no such column; "
            "add the columns, remove the factors, or mark them 'labelled: false'"
        )

    keys = [r[header.index(key_column)] for r in rows]
    seen: dict[str, int] = {}
    for k, line in zip(keys, lines):
        if not k:
            raise DataError(f"{csv_path}: line {line} has an empty '{key_column}' cell; fill it or delete the row")
        if k in seen:
            raise DataError(f"{csv_path}: '{k}' is listed twice (lines {seen[k]} and {line}); keep one row per {key_column}")
        seen[k] = line

    labels: dict[str, np.ndarray] = {}
    factors: list[Factor] = []
    for spec in specs:
        col = header.index(spec["name"]) if spec["name"] in header else None
        cells = [r[col] for r in rows] if col is not None else [""] * len(rows)
        if spec["kind"] == "categorical":
            classes = spec["classes"]
            if classes == "auto":
                classes = sorted({c for c in cells if c}, key=_natural_key)
                if len(classes) < 2:
                    classes = classes + [f"<unused {i}>" for i in range(2 - len(classes))]
            index = {c: i for i, c in enumerate(classes)}
            values = np.full(len(rows), MISSING_CLASS, dtype=np.int64)
            for i, c in enumerate(cells):
                if not c:
                    continue
                if c not in index:
                    allowed = ", ".join(classes[:12]) + (", ..." if len(classes) > 12 else "")
                    raise DataError(
                        f"{csv_path}: line {lines[i]}, column '{spec['name']}': unknown value {c!r} "
                        f"(allowed: {allowed}); fix the cell or add the class to {yaml_path.name}"
                    )
                values[i] = index[c]
            factor = Factor(spec["name"], "categorical", tuple(classes), spec["group"], spec["description"])
        else:
            values = np.full(len(rows), np.nan, dtype=np.float32)
            for i, c in enumerate(cells):
                if not c:
                    continue
                try:
                    v = float(c)
                except ValueError:
                    raise DataError(
                        f"{csv_path}: line {lines[i]}, column '{spec['name']}': {c!r} is not a number "
                        "(the column is declared continuous); fix the cell or leave it empty for a missing label"
                    ) from None
                if math.isinf(v):
                    raise DataError(f"{csv_path}: line {lines[i]}, column '{spec['name']}': infinite value {c!r}; use a finite number or leave it empty")
                values[i] = v
            factor = Factor(spec["name"], "continuous", (), spec["group"], spec["description"])
        labels[spec["name"]] = values
        factors.append(factor)
    labelled = [s["name"] for s in specs if s["name"] in columns]
    return keys, labels, factors, labelled, name


def write_label_table(
    csv_path: Path,
    key_column: str,
    keys: list[str],
    labels: dict[str, np.ndarray],
    description: DatasetDescription,
) -> None:
    """Write ``labels.csv`` with class names for categorical factors and empty cells for missing ones.

    Only labelled factors get a column. Floats are written with ``repr`` so they read back bit-exact.
    """
    names = [f.name for f in description.factors if description.is_labelled(f.name)]
    lines = [",".join([key_column] + names)]
    cols = []
    for n in names:
        f = description[n]
        v = np.asarray(labels[n])
        if f.is_categorical:
            cols.append(["" if int(x) < 0 else _csv_cell(f.class_names[int(x)]) for x in v])
        else:
            cols.append(["" if math.isnan(float(x)) else repr(float(x)) for x in v])
    for i, k in enumerate(keys):
        lines.append(",".join([_csv_cell(str(k))] + [c[i] for c in cols]))
    atomic_write_text(csv_path, "\n".join(lines) + "\n")


def _csv_cell(s: str) -> str:
    if any(ch in s for ch in ',"\n\r') or s != s.strip():
        return '"' + s.replace('"', '""') + '"'
    return s


def _natural_key(s: str):
    """'2' < '10', and numeric class names (e.g. yaw buckets '-30') sort by value."""
    try:
        return (0, float(s), "")
    except ValueError:
        return (1, 0.0, s)


def unlabelled_description(name: str, image_size: int, extra: dict | None = None) -> DatasetDescription:
    """The description of a folder without labels: no factors (for unsupervised models)."""
    return DatasetDescription(name=name, factors=(), labelled=(), image_size=image_size, extra=extra or {})
