"""Speed of the Universal Face Encoder (issue 4, "Speed").

Prints the device and threads, the machine's float32 matmul peak (a timed 2048^3 matmul), and
at 64x64 (quick preset) and 128x128 (full preset):
* training images/s (one full L_full step incl. L_dis, batch 32, with the layout and optimiser training uses),
* encoding images/s: batch-1 latency and batch-64 throughput (encoder E alone, no grad),
each with achieved GFLOP/s (FLOPs counted by torch.utils.flop_counter) as a fraction of the peak.
The encoder must run faster than real time: >= 30 images/s at batch 1, 128x128.

    python bench/ufe.py [--device auto] [--repeats 5] [--presets quick,full] [--layout preset|nchw]
"""

from __future__ import annotations

import argparse

import torch
from timing import matmul_peak as shared_matmul_peak
from timing import timeit as shared_timeit
from torch.utils.flop_counter import FlopCounterMode

from facefactors.config import load_config
from facefactors.data.description import DatasetDescription, Factor
from facefactors.models.ufe import UFE
from facefactors.train.common import adam
from facefactors.train.ufe import UFETrainConfig
from facefactors.train.ufe_losses import ufe_losses
from facefactors.utils.device import resolve_device


def timeit(fn, device, repeats: int, warmup: int = 2) -> float:
    """Median seconds per call (the median resists the spikes of a shared machine)."""
    return shared_timeit(fn, device, repeats, warmup=warmup, reduce="median")


def matmul_peak(device: torch.device, n: int = 2048, repeats: int = 10) -> float:
    return shared_matmul_peak(device, n, repeats, reduce="median")


def flops(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def world_a_description(image_size: int) -> DatasetDescription:
    return DatasetDescription(
        "bench",
        (
            Factor("identity", class_names=tuple(map(str, range(200)))),
            Factor("expression", class_names=("neutral", "smile", "sadness", "surprise", "anger", "disgust")),
            Factor("lighting", class_names=tuple(map(str, range(20)))),
            Factor("pose", class_names=("0", "30")),
        ),
        image_size=image_size,
    )


def bench(preset: str, device: torch.device, repeats: int, peak: float, layout: str = "preset") -> None:
    cfg = load_config(UFETrainConfig, "ufe", preset)
    size = cfg.model.image_size
    model = UFE(world_a_description(size), cfg.model).to(device)
    if layout == "nchw":
        cfg.trainer.channels_last = False
    if cfg.trainer.channels_last:  # the layout training uses (train.common.ChannelsLast)
        model = model.to(memory_format=torch.channels_last)
    opt = adam(model.parameters(), 1e-4)  # the optimiser training uses (fused where available)
    B = 32
    x = torch.rand(B, 3, size, size, device=device)
    labels = {"identity": torch.arange(B, device=device) // 4, "expression": torch.arange(B, device=device) % 6,
              "lighting": torch.arange(B, device=device) % 20, "pose": torch.arange(B, device=device) % 2}

    def step():
        total, _ = ufe_losses(model, x, labels, cfg.loss, dis_lambda=0.1)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()

    f_step = flops(step)
    t_step = timeit(step, device, max(2, repeats // 2), warmup=1)
    layout_name = "channels-last" if cfg.trainer.channels_last else "NCHW"
    print(f"[{preset} {size}x{size}] train (batch {B}, all 5 losses, {layout_name}): {B / t_step:8.1f} img/s  {f_step / t_step / 1e9:7.1f} GFLOP/s ({100 * f_step / t_step / 1e9 / peak:4.1f}% of peak)")

    model = model.to(memory_format=torch.contiguous_format).eval()  # inference (predict, experiments) runs NCHW
    threads = torch.get_num_threads()
    # Batch 1 is latency-bound: also timed with one intra-op thread, which avoids thread
    # synchronisation per small convolution (and contention on a shared machine).
    for bs, nthreads in ((1, threads), (1, 1), (64, threads)):
        torch.set_num_threads(nthreads)
        xb = torch.rand(bs, 3, size, size, device=device)
        encode = lambda xb=xb: model.encode(xb)
        with torch.inference_mode():
            f_enc = flops(encode)
            t_enc = timeit(encode, device, repeats * (10 if bs == 1 else 1))
        label = "latency" if bs == 1 else "throughput"
        print(f"[{preset} {size}x{size}] encode batch {bs:2d} ({label}, {nthreads} thread{'s' if nthreads > 1 else ''}): {bs / t_enc:8.1f} img/s  "
              f"{1000 * t_enc:7.2f} ms/batch  {f_enc / t_enc / 1e9:7.1f} GFLOP/s ({100 * f_enc / t_enc / 1e9 / peak:4.1f}% of peak)")
        if size == 128 and bs == 1:
            verdict = "OK" if bs / t_enc >= 30 else "BELOW the 30 img/s real-time target"
            print(f"    real-time check (>= 30 img/s at batch 1, 128x128): {verdict}")
    torch.set_num_threads(threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--presets", default="quick,full")
    ap.add_argument("--layout", choices=("preset", "nchw"), default="preset", help="train step in the preset's layout (channels-last) or NCHW")
    args = ap.parse_args()
    device = resolve_device(args.device)
    peak = matmul_peak(device)
    print(f"device {device} | torch {torch.__version__} | threads {torch.get_num_threads()} | float32 matmul peak {peak:.1f} GFLOP/s")
    for p in args.presets.split(","):
        bench(p, device, args.repeats, peak, args.layout)


if __name__ == "__main__":
    main()
