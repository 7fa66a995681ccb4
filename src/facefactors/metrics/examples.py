"""The ground-truth sanity example (issue 3, "Done when"): the world's ground-truth factors used
as codes must score near-perfect, random codes near zero. ``report_codes`` turns any (codes,
factors) into the full report; ``ground_truth_example`` runs both cases on a sampler.

    python -m facefactors.metrics.examples OUT_DIR [--n 10000]

uses ``facefactors.world.ground_truth.WorldGroundTruth`` when the world is available and
otherwise a stand-in sampler with the world's categorical factor sizes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from facefactors.metrics.report import summary_rows, write_report
from facefactors.metrics.suite import STANDARD, standard_suite


def report_codes(codes: np.ndarray, factors: np.ndarray, factor_names: list[str], out_dir: str | Path, title: str = "codes vs factors", data_info: dict | None = None, seed: int = 0, progress: bool = True) -> tuple[dict, dict]:
    """Standard suite on codes (N, D) / factors (N, K) and the report in ``out_dir``; -> (result, paths)."""
    std = standard_suite(codes, factors, factor_names, STANDARD, seed=seed, progress=progress)
    result = {"num_samples": len(codes), "standard": std}
    info = {"codes": list(np.shape(codes)), "factors": factor_names, **(data_info or {})}
    return result, write_report(result, out_dir, title=title, data_info=info)


class _StandInSampler:
    """Uniform factors with the face world's categorical sizes (used only if the world is absent)."""

    factor_names = ["expression", "lighting", "pose", "camera", "eyeglasses"]
    factor_sizes = [6, 20, 5, 2, 2]

    def sample_factors(self, n, rng):
        return np.stack([rng.integers(0, s, n) for s in self.factor_sizes], 1)

    def sample_observations(self, factors, rng):  # pragma: no cover - not needed for this example
        raise NotImplementedError


def default_sampler():
    try:
        from facefactors.world import FaceWorld, WorldConfig
        from facefactors.world.ground_truth import WorldGroundTruth

        return WorldGroundTruth(FaceWorld(WorldConfig()))
    except Exception:  # the world is built by another issue; fall back so the example always runs
        return _StandInSampler()


def ground_truth_example(out_dir: str | Path, sampler=None, n: int = 10000, seed: int = 0, progress: bool = True) -> dict:
    """Reports for codes = ground-truth factors and codes = Gaussian noise; -> their key numbers."""
    sampler = sampler or default_sampler()
    rng = np.random.default_rng(seed)
    factors = np.asarray(sampler.sample_factors(n, rng), dtype=np.int64)
    names = list(sampler.factor_names)
    info = {"sampler": type(sampler).__name__, "factor sizes": list(sampler.factor_sizes)}
    out_dir = Path(out_dir)
    cases = {"ground_truth_codes": factors.astype(np.float64), "random_codes": rng.normal(size=(n, factors.shape[1]))}
    numbers = {}
    for case, codes in cases.items():
        result, _ = report_codes(codes, factors, names, out_dir / case, f"{case.replace('_', ' ')} ({type(sampler).__name__})", info, seed, progress)
        numbers[case] = {row[0]: row[1] for row in summary_rows(result)}
    return numbers


def main() -> None:
    ap = argparse.ArgumentParser(description="Ground-truth vs random codes: two evaluation reports.")
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--n", type=int, default=10000)
    args = ap.parse_args()
    numbers = ground_truth_example(args.out_dir, n=args.n)
    metrics = list(next(iter(numbers.values())))
    print(f"| metric | {' | '.join(numbers)} |\n|---|" + "---|" * len(numbers))
    for m in metrics:
        print(f"| {m} | " + " | ".join(numbers[c][m] for c in numbers) + " |")


if __name__ == "__main__":
    main()
