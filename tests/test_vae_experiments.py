"""VAE experiments: the replaying ground-truth sampler and the trade-off pipeline on the tiny preset."""

import json

import numpy as np
import pytest

from facefactors.experiments.vae import ReplaySampler, tradeoff
from facefactors.train.vae_data import BlobsGroundTruth


class CountingSampler(BlobsGroundTruth):
    def __init__(self):
        super().__init__(16)
        self.renders = 0

    def sample_observations(self, factors, rng):
        self.renders += 1
        return super().sample_observations(factors, rng) + rng.uniform(0, 0.01)  # consumes rng like a real renderer


def test_replay_sampler_renders_once_and_replays_identically():
    inner = CountingSampler()
    s = ReplaySampler(inner)
    first = []
    rng = np.random.default_rng(0)
    for _ in range(3):
        first.append(s.sample_observations(s.sample_factors(4, rng), rng))
    s.rewind()
    rng = np.random.default_rng(0)
    again = [s.sample_observations(s.sample_factors(4, rng), rng) for _ in range(3)]
    assert inner.renders == 3
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    # A different call sequence is rendered afresh, not served stale.
    s.rewind()
    other = s.sample_observations(np.zeros((4, 5), dtype=int), np.random.default_rng(1))
    assert inner.renders == 4 and other.shape == (4, 3, 16, 16)


def test_tradeoff_pipeline_on_tiny(tmp_path):
    result = tradeoff(tmp_path / "tradeoff", preset="tiny", variants=["vae"])
    rows = {r["variant"]: r for r in result["rows"]}
    assert set(rows) == {"vae"}
    for r in rows.values():
        for key in ("reconstruction_nats", "mig", "dci_disentanglement", "sap", "factor_vae_score"):
            assert np.isfinite(r[key]), key
        assert 0 <= r["mig"] <= 1 and 0 <= r["factor_vae_score"] <= 1
    report = (tmp_path / "tradeoff" / "report.md").read_text()
    assert "| vae |" in report and (tmp_path / "tradeoff" / "tradeoff.png").is_file()
    stored = json.loads((tmp_path / "runs" / "vae" / "metrics.json").read_text())
    assert stored["ground_truth"]["mig"] == pytest.approx(rows["vae"]["mig"])
