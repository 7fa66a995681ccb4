"""Typed configs: one dataclass per component, named presets stored as YAML, any field
overridable from the command line as ``section.field=value``.

A preset file ``train/presets/<method>.yaml`` maps preset names (``tiny``, ``quick``,
``standard``, ``full``) to nested dicts of fields that differ from the dataclass defaults.
A preset may name another as ``base: quick`` to inherit from it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from facefactors.utils.errors import UserError

PRESET_DIR = Path(__file__).parent / "train" / "presets"
PRESETS = ("tiny", "quick", "standard", "full")

C = TypeVar("C")


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the field's declared type, with a clear error."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"config {where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin is typing.Union or origin is types.UnionType:  # Optional[X] or X | None
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except (UserError, ValueError, TypeError):
                continue
        raise UserError(f"config {where}: {value!r} does not fit {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise UserError(f"config {where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            value = [value]
        inner = args[0] if args else Any
        items = [_coerce(v, inner, where) if inner is not Any and inner is not Ellipsis else v for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        return dict(value)
    if tp is bool:
        if isinstance(value, str):
            low = value.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise UserError(f"config {where}: {value!r} is not a boolean (use true/false)")
        return bool(value)
    if tp in (int, float, str):
        try:
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return tp(value)
        except (TypeError, ValueError):
            raise UserError(f"config {where}: {value!r} is not a valid {tp.__name__}") from None
    return value


def from_dict(cls: type[C], data: dict, where: str = "") -> C:
    """Build dataclass ``cls`` from a (partial) nested dict; unknown keys are an error."""
    types = _field_types(cls)
    unknown = sorted(set(data) - set(types))
    if unknown:
        raise UserError(f"config {where or cls.__name__}: unknown field(s) {unknown}; known: {sorted(types)}")
    kwargs = {}
    for name, tp in types.items():
        if name in data:
            kwargs[name] = _coerce(data[name], tp, f"{where}.{name}" if where else name)
    base = cls()  # defaults for missing fields (nested dataclasses via default_factory)
    for name, tp in types.items():
        if name not in kwargs and dataclasses.is_dataclass(tp) and name in data:
            kwargs[name] = from_dict(tp, data[name], name)
    return dataclasses.replace(base, **kwargs)


def merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict:
    """``["model.latent_dim=10", "trainer.max_steps=5"]`` -> nested dict (values parsed as YAML)."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {item!r}: expected section.field=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def preset_dict(method: str, preset: str, preset_dir: Path = PRESET_DIR) -> dict:
    path = preset_dir / f"{method}.yaml"
    if not path.is_file():
        raise UserError(f"{path}: no presets for method {method!r}")
    table = yaml.safe_load(path.read_text()) or {}
    if preset not in table:
        raise UserError(f"{path}: no preset {preset!r}; available: {sorted(table)}")
    entry = dict(table[preset] or {})
    base = entry.pop("base", None)
    return merge(preset_dict(method, base, preset_dir), entry) if base else entry


def load_config(cls: type[C], method: str, preset: str = "quick", overrides: list[str] | tuple[str, ...] = (), preset_dir: Path = PRESET_DIR) -> C:
    """Defaults <- preset YAML <- command-line overrides."""
    data = merge(preset_dict(method, preset, preset_dir), parse_overrides(overrides))
    return from_dict(cls, data)


def save_config(cfg, path: str | Path) -> None:
    from facefactors.utils.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(_plain(to_dict(cfg)), sort_keys=False))


def load_saved_config(cls: type[C], path: str | Path) -> C:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no config.yaml; is this a facefactors run directory?")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path}: malformed YAML ({e})") from None
    try:
        return from_dict(cls, data)
    except UserError as e:
        # Usually a run of another kind (a rater's or a VAE's run handed to a UFE command).
        raise UserError(f"{path}: not a {cls.__name__} ({e}); is this a run of the right kind?") from None


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
