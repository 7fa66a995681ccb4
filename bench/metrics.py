"""Benchmark: the full standard disentanglement suite on 10,000 x 10 codes with 5 factors.

Target (issue 3): under 60 s on 2 cores. Prints the machine (CPU count, BLAS/OpenMP thread
pools, numpy matmul peak), the DCI estimator, time per metric and the total.

    python bench/metrics.py                 # default: hist-GBT DCI, 1 OpenMP thread per fit
    python bench/metrics.py --dci-threads 0 # let HistGradientBoosting use every core
    python bench/metrics.py --exact-dci     # also time the exact disentanglement_lib estimator on 1 factor

Factors mirror the face world's categorical ones: sizes (6, 20, 5, 2, 10) (expression,
lighting, pose, camera, a 10-class nuisance). Codes: 5 noisy, mildly mixed factor codes and 5
pure-noise codes.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from threadpoolctl import threadpool_info

from facefactors.metrics.dci import fit_importance
from facefactors.metrics.suite import STANDARD, standard_suite

SIZES = (6, 20, 5, 2, 10)


def make_codes(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    f = np.stack([rng.integers(0, s, n) for s in SIZES], 1)
    scaled = f / (np.array(SIZES) - 1.0)
    mix = np.eye(5) + 0.15 * rng.normal(size=(5, 5))
    codes = np.concatenate([scaled @ mix + 0.05 * rng.normal(size=(n, 5)), rng.normal(size=(n, 5))], 1)
    return codes, f


def matmul_gflops(n: int = 1024, repeats: int = 5) -> float:
    a = np.random.default_rng(0).random((n, n))
    a @ a
    t = time.perf_counter()
    for _ in range(repeats):
        a @ a
    return 2 * n**3 * repeats / (time.perf_counter() - t) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--dci-threads", type=int, default=1, help="OpenMP threads per boosted-tree fit (0 = all cores)")
    ap.add_argument("--exact-dci", action="store_true", help="also time sklearn GradientBoostingClassifier (the reference) on the 20-class factor")
    args = ap.parse_args()

    pools = ", ".join(f"{p['internal_api']}:{p['num_threads']}" for p in threadpool_info())
    print(f"device: CPU, os.cpu_count()={os.cpu_count()}, load average {os.getloadavg()[0]:.1f}; thread pools: {pools}")
    print(f"numpy float64 matmul peak: {matmul_gflops():.1f} GFLOP/s")
    codes, factors = make_codes(args.n)
    print(f"codes {codes.shape}, factors {factors.shape} with sizes {SIZES}")
    threads = None if args.dci_threads == 0 else args.dci_threads
    print(f"DCI estimator: HistGradientBoostingClassifier (100 iterations, depth 3, lr 0.1) with total-split-gain importance, threads={threads or 'all'}", flush=True)

    t0 = time.perf_counter()
    result = standard_suite(codes, factors, [f"f{k}" for k in range(5)], STANDARD, progress=False, dci_threads=threads)
    total = time.perf_counter() - t0
    sp = result["split"]
    print(f"split: {sp['num_train']} train / {sp['num_test']} test")
    print(f"{'metric':<20}{'seconds':>10}   headline")
    heads = {"mig": ("mig",), "dci": ("disentanglement", "completeness", "informativeness_test"), "sap": ("sap",), "modularity": ("modularity",),
             "explicitness": ("explicitness_test",), "irs": ("irs",), "total_correlation": ("gaussian_total_correlation",)}
    for name in STANDARD:
        values = ", ".join(f"{k}={result[name][k]:.3f}" for k in heads[name])
        print(f"{name:<20}{result['timings'][name]:>10.2f}   {values}")
    print(f"{'TOTAL':<20}{total:>10.2f}   (target < 60 s on 2 cores: {'met' if total < 60 else 'NOT met'})")
    if args.exact_dci:
        x, y = codes[: sp["num_train"]], factors[: sp["num_train"], 1]
        t = time.perf_counter()
        fit_importance(x, y, "gbt", 0)
        print(f"exact reference estimator (GradientBoostingClassifier) on one 20-class factor: {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
