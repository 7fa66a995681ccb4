"""Renderer throughput: ``python -m facefactors.render.benchmark [--device auto] [--threads N]``.

Prints device, threads, batch size, images/s of ``rasterize_height_field`` (canonical grid =
output size, supersample 2) at 64x64 and 128x128, and the forward + backward time of
``render_view`` on a batch of 64 height fields at 64x64 (issue 2, section 6 targets on 2 CPU
cores: >= 500 / >= 150 images/s for the whole world render, < 150 ms for render_view).
Times are the best of ``--repeats`` runs after a warm-up; the load average is printed because
a shared machine distorts wall-clock figures.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from facefactors.render.rasterize import rasterize_height_field
from facefactors.render.warp import render_view
from facefactors.utils.device import resolve_device


def face_like_batch(batch: int, size: int, device: torch.device):
    """(depth, albedo, mask, view): a face-sized ellipsoid height field, yaw spread over +-30 degrees."""
    g = torch.linspace(-1, 1, size, device=device)
    yy, xx = torch.meshgrid(g, g, indexing="ij")
    r2 = (xx / 0.8) ** 2 + (yy / 0.95) ** 2
    mask = (r2 < 1.0).float()[None, None].expand(batch, 1, size, size).contiguous()
    depth = (1.0 - 0.1 * (1.0 - r2).clamp(min=0).sqrt())[None, None].expand(batch, 1, size, size).contiguous()
    albedo = torch.rand(batch, 3, size, size, device=device)
    view = torch.zeros(batch, 6, device=device)
    view[:, 0] = torch.linspace(-30, 30, batch, device=device)
    view[:, 1] = torch.linspace(10, -10, batch, device=device)
    return depth, albedo, mask, view


def _best_ms(fn, device: torch.device, repeats: int) -> tuple[float, float]:
    """Best wall-clock and best process CPU time (all threads) of ``fn``, in ms."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return 1000.0 * min(wall), 1000.0 * min(cpu)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device={device} threads={torch.get_num_threads()} batch={args.batch} load_avg_1min={load:.1f}")
    for size in (64, 128):
        batch = face_like_batch(args.batch, size, device)
        ms, cpu = _best_ms(lambda b=batch: rasterize_height_field(*b, supersample=2), device, args.repeats)
        print(f"rasterize_height_field {size}x{size} supersample=2: {ms:8.1f} ms/batch  "
              f"{1000.0 * args.batch / ms:8.0f} images/s  (process CPU {cpu:.1f} ms)")
    depth, albedo, mask, view = face_like_batch(args.batch, 64, device)
    depth.requires_grad_()
    albedo.requires_grad_()
    view.requires_grad_()

    def step():
        image, _ = render_view(albedo, depth, view, canonical_mask=mask)
        image.sum().backward()

    ms, cpu = _best_ms(step, device, args.repeats)
    print(f"render_view 64x64 forward+backward: {ms:8.1f} ms/batch  (process CPU {cpu:.1f} ms)")


if __name__ == "__main__":
    main()
