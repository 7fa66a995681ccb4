"""Atomic writes and safe checkpoints.

A file is written to a temporary neighbour and renamed into place, so a killed process never
leaves a half-written file. Weights are stored as safetensors, which cannot execute code; any
``torch.load`` in this project passes ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from facefactors.utils.errors import UserError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates owner-only files; give the result the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} as JSON")


def save_weights(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save a flat dict of tensors as .safetensors, atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a .safetensors file; a clear error if it is missing or not a safetensors file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no weights file here; pass the run directory or its .safetensors file")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    except Exception as e:  # noqa: BLE001 (safetensors raises several types for corrupt headers)
        raise UserError(f"{path}: not a readable safetensors file ({e}); re-save it or retrain") from None
    return tensors, metadata


def save_module(path: str | Path, module: torch.nn.Module, metadata: dict[str, str] | None = None) -> None:
    save_weights(path, dict(module.state_dict()), metadata)


def load_module(path: str | Path, module: torch.nn.Module, strict: bool = True) -> dict[str, str]:
    """Load weights into ``module``; a wrong checkpoint gives one line naming the file."""
    tensors, metadata = load_weights(path)
    own = module.state_dict()
    if strict:
        missing = sorted(set(own) - set(tensors))
        unexpected = sorted(set(tensors) - set(own))
        bad_shape = [k for k in own if k in tensors and tensors[k].shape != own[k].shape]
        if missing or unexpected or bad_shape:
            detail = []
            if missing:
                detail.append(f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}")
            if unexpected:
                detail.append(f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}")
            if bad_shape:
                k = bad_shape[0]
                detail.append(f"shape of {k}: file {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}")
            raise UserError(
                f"{path}: these weights do not fit a {type(module).__name__} with this config "
                f"({'; '.join(detail)}); load it with the config saved in its run directory"
            )
    module.load_state_dict(tensors, strict=strict)
    return metadata
