"""Timing helpers shared by the benchmarks (imported as a sibling module: `python bench/X.py`)."""

from __future__ import annotations

import time

import torch


def sync(device: torch.device) -> None:
    """Wait for queued accelerator work, so wall times measure the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn, device: torch.device, repeats: int, warmup: int = 1, reduce: str = "best") -> float:
    """Seconds per call of ``fn`` after ``warmup`` calls: the best (a peak) or the median
    (resists the spikes of a shared machine) of ``repeats`` timed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return min(times) if reduce == "best" else sorted(times)[len(times) // 2]


def matmul_peak(device: torch.device, n: int = 2048, repeats: int = 3, reduce: str = "best") -> float:
    """The machine's own float32 matmul rate in GFLOP/s: the yardstick every benchmark prints."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return 2 * n**3 / timeit(lambda: a @ b, device, repeats, reduce=reduce) / 1e9
