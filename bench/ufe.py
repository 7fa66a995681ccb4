"""Speed of the Universal Face Encoder (issue 4, "Speed").

Prints the device and threads, the machine's float32 matmul peak (a timed 2048^3 matmul), and
at 64x64 (quick preset) and 128x128 (full preset):
* training images/s (one L_full step, batch 32, with the layout and optimiser training uses) in
  each phase of the preset's schedule (before L_ind, with L_ind, with L_ind and L_dis; with the
  twins' encoder pass where the preset has L_twin), and the training time these make over the
  preset's steps (the phases' step counts times their times), and the pass that pins idle units
  after the last step (``model.pin_idle_std``),
* L_ind's forward and backward alone, batched as training computes it, against one
  ``dependence`` call per (subspace, label) pair, and the whitening it needs,
* encoding images/s: batch-1 latency and batch-64 throughput (encoder E alone, no grad),
each with achieved GFLOP/s (FLOPs counted by torch.utils.flop_counter) as a fraction of the peak.
The encoder must run faster than real time: >= 30 images/s at batch 1, 128x128.

    python bench/ufe.py [--device auto] [--repeats 5] [--presets quick,full] [--layout preset|nchw] [--set loss.dis_pairs=0 ...]
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import replace

import torch
from timing import matmul_peak as shared_matmul_peak
from timing import timeit as shared_timeit
from torch.utils.flop_counter import FlopCounterMode

from facefactors.config import load_config
from facefactors.data.description import DatasetDescription, Factor
from facefactors.models.rater import Rater
from facefactors.models.ufe import UFE
from facefactors.train.common import adam
from facefactors.train.perceptual import PerceptualLoss
from facefactors.train.rater import RaterTrainConfig
from facefactors.train.ufe import PIN_IMAGES, UFETrainConfig, pin_idle_units
from facefactors.train.ufe_losses import (
    FeatureHistory,
    UFELossConfig,
    dependence,
    dis_weight,
    independence_loss,
    ufe_losses,
    whitening_matrix,
)
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


def schedule_phases(cfg: UFETrainConfig) -> dict[str, tuple[int, UFELossConfig, float]]:
    """The preset's steps grouped by what a step computes: {phase: (number of steps, loss
    config, lambda_dis)}, following train/ufe.py (L_ind after its warm-up; L_dis from its
    warm-up on every ``dis_every``-th step). lambda_dis only scales a term, so each phase is
    timed at the weight of its first step."""
    phases: dict[str, tuple[int, UFELossConfig, float]] = {}
    for step in range(cfg.trainer.max_steps):
        independence = cfg.loss.independence if step >= cfg.loss.independence_warmup_steps else 0.0
        dis_lambda = dis_weight(step, cfg.trainer.max_steps, cfg.loss)
        if cfg.loss.dis_every > 1 and step % cfg.loss.dis_every:
            dis_lambda = 0.0
        parts = [p for p, on in (("L_ind", independence > 0), ("L_dis", dis_lambda > 0)) if on]
        name = "with " + " and ".join(parts) if parts else "without L_ind and L_dis"
        count, loss, lam = phases.get(name, (0, replace(cfg.loss, independence=independence), dis_lambda))
        phases[name] = (count + 1, loss, lam)
    return phases


def bench_independence(preset: str, cfg: UFETrainConfig, history: FeatureHistory | None, device: torch.device, repeats: int) -> None:
    """L_ind's forward and backward on one batch: batched (training) vs one ``dependence`` per pair."""
    if history is None or not len(history) or cfg.loss.independence <= 0:
        return
    kept, kept_labels = history.stacked()
    whitening = {n: whitening_matrix(f, cfg.loss.whiten_eps) for n, f in kept.items()} if cfg.loss.independence_whiten else None
    features = {n: f[-32:].clone().requires_grad_(True) for n, f in kept.items()}
    labels = {k: v[-32:] for k, v in kept_labels.items()}

    def batched():
        independence_loss(features, labels, whitening, cfg.loss.independence_hinge).backward()

    def per_pair():
        terms = [dependence(f, lab, None if whitening is None else whitening[x]) for x, f in features.items() for y, lab in labels.items() if y != x]
        terms = [t.clamp(min=0) if cfg.loss.independence_hinge else t for t in terms if t is not None]
        torch.stack(terms).mean().backward()

    t_batched = timeit(batched, device, repeats * 10)
    t_pairs = timeit(per_pair, device, repeats * 10)
    t_whiten = timeit(lambda: {n: whitening_matrix(f, cfg.loss.whiten_eps) for n, f in kept.items()}, device, repeats * 4) if whitening else 0.0
    print(f"[{preset}] L_ind forward+backward, batch 32: batched {1000 * t_batched:.1f} ms, one dependence per pair {1000 * t_pairs:.1f} ms; "
          f"whitening from {len(history)} kept batches {1000 * t_whiten:.1f} ms")


def bench(preset: str, device: torch.device, repeats: int, peak: float, layout: str = "preset", overrides=()) -> None:
    cfg = load_config(UFETrainConfig, "ufe", preset, list(overrides))
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

    history = FeatureHistory(cfg.loss.history) if cfg.loss.history > 0 else None  # L_ind whitens with it, as in training
    perceptual = None
    if cfg.loss.perceptual > 0:  # the frozen network of the perceptual term, untrained: weights do not change its cost
        rater_cfg = load_config(RaterTrainConfig, "rater", cfg.loss.perceptual_net_preset)
        perceptual = PerceptualLoss(Rater(world_a_description(rater_cfg.model.image_size), rater_cfg.model)).to(device)

    # L_twin (data.twins, the standard preset's pose twins) encodes one more batch per factor
    twins = {factor: torch.rand_like(x) for factor in cfg.data.twins} if cfg.loss.twin > 0 else None

    def make_step(loss: UFELossConfig, dis_lambda: float):
        def step():
            total, _ = ufe_losses(model, x, labels, loss, dis_lambda, history=history, perceptual=perceptual, twins=twins)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()

        return step

    layout_name = "channels-last" if cfg.trainer.channels_last else "NCHW"
    projected = 0.0
    for name, (count, loss, dis_lambda) in schedule_phases(cfg).items():
        step = make_step(loss, dis_lambda)
        while history is not None and len(history) < cfg.loss.history:  # full, as after training's first steps
            step()
        f_step = flops(step)
        t_step = timeit(step, device, max(2, repeats // 2), warmup=1)
        projected += count * t_step
        print(f"[{preset} {size}x{size}] train, {name} ({count} of {cfg.trainer.max_steps} steps; batch {B}, {layout_name}): {B / t_step:8.1f} img/s  "
              f"{f_step / t_step / 1e9:7.1f} GFLOP/s ({100 * f_step / t_step / 1e9 / peak:4.1f}% of peak)")
    print(f"[{preset} {size}x{size}] training time these make over the preset's {cfg.trainer.max_steps} steps: {projected:.0f} s ({projected / 60:.1f} min; without data loading, logging and checkpoints)")
    if cfg.model.pin_idle_std > 0:  # once, at the end of training: one pass over PIN_IMAGES training images
        images = torch.rand(PIN_IMAGES, 3, size, size, device=device)
        with torch.no_grad():
            t_pin = timeit(lambda: pin_idle_units(copy.deepcopy(model), images.split(64), cfg.model.pin_idle_std), device, 1, warmup=0)
        print(f"[{preset} {size}x{size}] pinning idle units after the last step (one pass over {PIN_IMAGES} images): {t_pin:.1f} s")
    bench_independence(preset, cfg, history, device, repeats)

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
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="config override, as `facefactors ufe train --set`")
    args = ap.parse_args()
    device = resolve_device(args.device)
    peak = matmul_peak(device)
    print(f"device {device} | torch {torch.__version__} | threads {torch.get_num_threads()} | float32 matmul peak {peak:.1f} GFLOP/s")
    for p in args.presets.split(","):
        bench(p, device, args.repeats, peak, args.layout, args.overrides)


if __name__ == "__main__":
    main()
