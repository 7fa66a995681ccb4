"""Device selection: ``auto`` everywhere, never a hard-coded accelerator name."""

from __future__ import annotations

import os

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks the accelerator torch reports, else CPU."""
    if isinstance(device, torch.device):
        return device
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device(torch.cuda.current_device())
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def apply_threads(threads: int) -> None:
    """Set torch's intra-op thread count when ``threads`` > 0 (0 keeps torch's choice).

    Call it before any rendering or evaluation, not only at training set-up: on a shared 2-core
    machine two threads per process were measured 7-15x slower than one (docs/design-notes.md).
    """
    if threads > 0:
        torch.set_num_threads(threads)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)
