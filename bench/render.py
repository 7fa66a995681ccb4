"""Benchmark: face-world rendering throughput and the differentiable render path (issue 2, section 6).

Prints device, torch threads and batch size, then images/s of ``FaceWorld.sample`` (fresh
parameters + canonical maps + shading + z-buffer + compositing) at 64x64 and 128x128 -- in this
process with its torch threads, and as training consumes the world: a ``WorldStream`` read
through a DataLoader with ``--workers`` worker processes (one torch thread each) -- the
forward+backward time of ``render.warp.render_view`` on 64 height fields at 64x64, and the
machine's own float32 matmul peak for reference (DESIGN.md style rule 7).

    python bench/render.py [--device auto] [--batch 64] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse

import torch
from timing import matmul_peak, timeit


def timed(fn, device, repeats: int) -> float:
    """Best wall time of ``repeats`` calls after one warm-up call, seconds."""
    return timeit(fn, device, repeats, warmup=1, reduce="best")


def world_rate(size: int, batch: int, repeats: int, device: torch.device) -> float:
    from facefactors.world import FaceWorld, WorldConfig

    world = FaceWorld(WorldConfig(seed=0, image_size=size))
    start = [0]

    def step():
        idx = range(start[0], start[0] + batch)  # fresh samples every call, as in training
        start[0] += batch
        world.render(world.sample_params(idx))

    return batch / timed(step, device, repeats)


def stream_rate(size: int, batch: int, workers: int, batches: int) -> float:
    """Images/s of a ``WorldStream`` read through a DataLoader with ``workers`` processes (PyTorch
    gives each worker one torch thread): the way training runs consume freshly rendered batches.
    Timed from the first batch on, so worker start-up is not counted."""
    import time

    from facefactors.data.world import WorldStream
    from facefactors.world import FaceWorld, WorldConfig

    stream = WorldStream(FaceWorld(WorldConfig(seed=0, image_size=size)), batch_size=batch,
                         max_steps=1 + -(-batches // max(workers, 1)) + 1)
    it = iter(stream.loader(num_workers=workers))
    for _ in range(max(workers, 1)):  # every worker has started and rendered once
        next(it)
    t = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch / (time.perf_counter() - t)


def world_breakdown(size: int, batch: int, repeats: int, device: torch.device) -> dict[str, float]:
    """Seconds per batch of the stages of FaceWorld.render: canonical maps (world), shading and
    z-buffer (render), compositing/tone/blur/noise (world)."""
    from facefactors.render.rasterize import rasterize_height_field
    from facefactors.render.shading import depth_to_normal, lambertian
    from facefactors.world import FaceWorld, WorldConfig

    world = FaceWorld(WorldConfig(seed=0, image_size=size))
    p = world.sample_params(range(batch))
    cfg = world.config
    depth, alb, mask, _ = world.canonical(p, size)
    shaded = alb * lambertian(depth_to_normal(depth, cfg.fov_deg), p.light)
    view = torch.cat([p.pose, torch.zeros(batch, 3)], -1)
    return {
        "params": timed(lambda: world.sample_params(range(batch)), device, repeats),
        "canonical maps": timed(lambda: world.canonical(p, size), device, repeats),
        "shading": timed(
            lambda: alb * lambertian(depth_to_normal(depth, cfg.fov_deg), p.light), device, repeats
        ),
        "z-buffer": timed(
            lambda: rasterize_height_field(
                depth, shaded, mask, view, (size, size), cfg.fov_deg, cfg.supersample
            ),
            device,
            repeats,
        ),
    }


def render_view_time(
    device: torch.device, repeats: int, batch: int = 64, size: int = 64
) -> float | None:
    try:
        from facefactors.render.warp import render_view
    except ImportError:
        return None
    g = torch.Generator().manual_seed(0)
    image = torch.rand(batch, 3, size, size, generator=g).to(device).requires_grad_()
    depth = (1.0 + 0.05 * torch.rand(batch, 1, size, size, generator=g)).to(device).requires_grad_()
    view = (
        torch.cat([(torch.rand(batch, 3, generator=g) - 0.5) * 40, torch.zeros(batch, 3)], 1)
        .to(device)
        .requires_grad_()
    )

    def step():
        out, mask = render_view(image, depth, view)
        (out * mask).mean().backward()

    return timed(step, device, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="data-loader processes of the stream figure")
    ap.add_argument("--stream-batches", type=int, default=12, help="batches timed in the stream figure")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's choice)"
    )
    args = ap.parse_args()
    from facefactors.utils.device import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(
        f"device {device}  torch {torch.__version__}  threads {torch.get_num_threads()}  batch {args.batch}"
    )
    print(f"float32 matmul peak: {matmul_peak(device):.1f} GFLOP/s")
    if device.type != "cpu":
        print(
            "note: the world renders on CPU (its parameters are CPU tensors); the numbers below are CPU numbers"
        )
        device = torch.device("cpu")
    for size, target in ((64, 500), (128, 150)):
        rate = world_rate(size, args.batch, args.repeats, device)
        print(
            f"world render {size}x{size}: {rate:.1f} images/s (target >= {target} on 2 CPU cores)"
        )
        rate = stream_rate(size, args.batch, args.workers, args.stream_batches)
        print(f"  world stream {size}x{size}, DataLoader with {args.workers} worker processes x 1 thread: "
              f"{rate:.1f} images/s")
        parts = world_breakdown(size, args.batch, args.repeats, device)
        print("  per batch: " + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in parts.items()))
    t = render_view_time(device, args.repeats)
    if t is None:
        print("render.warp.render_view: not available")
    else:
        print(
            f"render_view forward+backward, 64 height fields at 64x64: {t * 1e3:.1f} ms (target < 150 ms)"
        )


if __name__ == "__main__":
    main()
