"""VAE experiments: the replaying ground-truth sampler and the trade-off pipeline on the tiny preset."""

import json

import numpy as np
import pytest
import torch

from facefactors.experiments.vae import ReplaySampler, tradeoff
from facefactors.experiments.vae_attributes import flipped, summarise
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


def test_flipped_counts_only_faces_rated_without_before():
    before = np.array([True, False, False, False, True])
    after = np.array([True, True, False, True, False])
    assert flipped(before, after) == pytest.approx(2 / 3)  # faces 1-3; face 4 lost it, face 0 had it
    assert np.isnan(flipped(np.ones(3, bool), np.ones(3, bool)))


def test_attribute_summary_picks_the_smallest_alpha_turning_a_majority():
    def row(model, alpha, turned):
        return {"model": model, "attribute": "eyeglasses=yes", "alpha": alpha, "turned": 0.0, "flipped": turned, "own_closer": 1 - alpha / 10, "sim_own": 0.9, "sim_other": 0.1, "seen_recon": 0.8}

    rows = [row("vae", a, t) for a, t in [(0.0, 0.9), (1.0, 0.3), (2.0, 0.6), (3.0, 0.8)]]
    rows += [row("beta5", a, t) for a, t in [(0.0, 0.1), (4.0, 0.45), (2.0, 0.45), (6.0, 0.2)]]
    s = summarise(rows)
    # alpha 0 never counts, even when the reconstruction already "has it"
    assert s["vae/eyeglasses=yes"]["alpha"] == 2.0 and s["vae/eyeglasses=yes"]["flipped"] == 0.6
    # no majority: the best share, the smaller alpha on a tie
    assert s["beta5/eyeglasses=yes"]["alpha"] == 2.0 and s["beta5/eyeglasses=yes"]["flipped"] == 0.45
    # "turned" (raw share) is not the criterion: a high raw share with no flips is no majority
    assert summarise([{**row("vae", 1.0, 0.1), "turned": 0.9}])["vae/eyeglasses=yes"]["flipped"] == 0.1
    assert summarise([row("vae", 0.0, 0.5)]) == {}


def test_bare_loop_trains_the_same_networks_for_the_given_steps():
    import torch

    from facefactors.experiments.vae import variant_config
    from facefactors.experiments.vae_pythae import bare_loop_seconds

    cfg = variant_config("beta2", "tiny", [])
    images = torch.rand(80, 3, 32, 32)  # 2 whole batches of 32 per epoch: 5 steps cross an epoch
    assert bare_loop_seconds(cfg, images, 5) > 0


def test_pythae_comparison_on_tiny(tmp_path):
    pytest.importorskip("pythae")
    from facefactors.experiments.vae_pythae import compare

    result = compare(tmp_path / "pythae", preset="tiny")
    rows = {r["library"]: r for r in result["rows"]}
    assert set(rows) == {"facefactors", "pythae"}
    assert rows["facefactors"]["params"] == rows["pythae"]["params"]  # the same networks
    for r in rows.values():
        assert r["fit_s"] > 0 and r["bare_loop_s"] >= 0 and np.isfinite(r["reconstruction_nats"])
    assert "over bare loop" in (tmp_path / "pythae" / "report.md").read_text()
    assert {k: len(v) for k, v in result["rounds"].items()} == {"ours_call": 2, "ours_fit": 2, "pythae": 2, "bare": 2}
    assert rows["pythae"]["fit_s"] == pytest.approx(min(result["rounds"]["pythae"]), abs=0.06)  # the fastest round
    # Both rounds train the same config; ours must give the same weights whichever library went first.
    ours, theirs = result["weights_digest"]["ours"], result["weights_digest"]["pythae"]
    assert len(ours) == 2 and ours[0] == ours[1] and theirs[0] == theirs[1]


def test_threads_are_set_before_the_variants_data_is_rendered(monkeypatch, tmp_path):
    import torch

    import facefactors.experiments.vae as X

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(("threads", n)))

    def build(*args, **kwargs):
        calls.append(("render",))
        raise KeyboardInterrupt

    monkeypatch.setattr(X, "build_dataset", build)
    with pytest.raises(KeyboardInterrupt):
        X.train_variants(tmp_path, ["vae"], "quick", [])
    assert calls[:2] == [("threads", 1), ("render",)]


def test_attribute_experiment_refuses_a_rater_of_another_framing(tmp_path):
    """A rater judges faces framed as in its training set: one trained at zoom 1.5 is taken for
    data.zoom=1.5 and refused, with the fix, for the whole frame."""
    from facefactors.experiments.vae_attributes import get_rater
    from facefactors.train.rater import train_rater
    from facefactors.train.vae_data import face_world
    from facefactors.utils.errors import UserError

    path = train_rater("tiny", tmp_path / "rater", ["data.zoom=1.5"], progress=False)
    assert get_rater(tmp_path, str(path), 32, "tiny", zoom=1.5).zoom == 1.5
    with pytest.raises(UserError, match=r"zoom 1.5.*data.zoom=1.0.*--set data.zoom=1.0"):
        get_rater(tmp_path, str(path), 32, "tiny", zoom=1.0)
    with pytest.raises(UserError, match="data.zoom"):
        face_world(0, 32, zoom=0.8)


class PixelCodec(torch.nn.Module):
    """A stand-in VAE whose code is the image itself (``exact``), or a constant the decoder ignores."""

    def __init__(self, exact: bool):
        super().__init__()
        self.exact = exact

    def encode(self, x):
        code = x.flatten(1) if self.exact else torch.zeros(len(x), 4)
        return code, torch.zeros_like(code)

    def decode(self, z):
        x = z.reshape(len(z), 3, 16, 16) if self.exact else torch.full((len(z), 3, 16, 16), 0.5)
        return torch.logit(x.clamp(1e-4, 1 - 1e-4))


@pytest.mark.parametrize("factor", ["expression", "eyeglasses"])
def test_matched_pairs_measure_how_much_of_the_attribute_a_model_carries(factor):
    """A model that reproduces its input carries all of the attribute's pixels, one that ignores
    it none; the probe tells glasses from the pixels and is at chance on a constant code."""
    from facefactors.experiments.vae_attributes import attribute_pairs, matched_pairs
    from facefactors.train.vae_data import face_world

    pairs = attribute_pairs(face_world(0, 16), factor, 0, 1, n=100)
    exact = matched_pairs(PixelCodec(True), pairs, directions=torch.eye(3 * 16 * 16))
    blind = matched_pairs(PixelCodec(False), pairs)
    assert exact["reproduced"] == pytest.approx(1.0, abs=1e-3) and blind["reproduced"] == 0.0
    assert blind["probe"] == 0.5
    if factor == "eyeglasses":
        assert exact["probe"] > 0.8
    assert exact["pixels"] == blind["pixels"] > 0
    assert exact["linear"] == pytest.approx(1.0, abs=1e-4) and "linear" not in blind  # every direction spanned


def test_principal_directions_are_the_top_orthonormal_directions():
    from facefactors.experiments.vae_attributes import principal_directions

    g = torch.Generator().manual_seed(0)
    scale = torch.full((12,), 0.1)
    scale[0], scale[10] = 5.0, 3.0  # two pixels spread widely, the rest barely
    scale = scale.reshape(3, 2, 2)
    images = 0.5 + torch.randn(500, 3, 2, 2, generator=g) * scale
    v = principal_directions(images, 2)
    assert v.shape == (2, 12)
    torch.testing.assert_close(v @ v.T, torch.eye(2), atol=1e-5, rtol=0)
    # the two widely spread pixels span the top two directions
    top = scale.flatten().topk(2).indices
    assert float(v[:, top].pow(2).sum()) == pytest.approx(2.0, abs=0.05)
