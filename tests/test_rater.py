"""The independent rater: API, change scores, calibrated "which changed", loss masking, loading."""

import json

import numpy as np
import pytest
import torch

from facefactors.config import load_config, save_config
from facefactors.data.description import DatasetDescription, Factor
from facefactors.models.rater import NO_CHANGE, Rater, RaterConfig
from facefactors.train.rater import RaterRecipe, RaterTrainConfig, load_rater, rater_loss
from facefactors.utils.errors import UserError
from facefactors.utils.io import save_module


def description():
    return DatasetDescription(
        "w",
        (
            Factor("identity", class_names=tuple(map(str, range(5)))),
            Factor("expression", class_names=("neutral", "smile", "anger")),
            Factor("pose", class_names=("0", "30")),
            Factor("yaw", kind="continuous"),
        ),
        image_size=32,
    )


def tiny():
    torch.manual_seed(0)
    return Rater(description(), RaterConfig(image_size=32, channels=[8, 8, 8], hidden=16, embed_dim=8))


def test_predict_and_embed():
    r = tiny().eval()
    x = torch.rand(4, 3, 32, 32)
    p = r.predict(x)
    assert r.factors == ["expression", "pose"]  # every categorical factor but identity
    assert p["expression"].shape == (4, 3) and torch.allclose(p["pose"].sum(-1), torch.ones(4))
    e = r.embed_identity(x)
    assert e.shape == (4, 8) and torch.allclose(e.norm(dim=-1), torch.ones(4), atol=1e-5)


def test_change_scores_zero_for_identical_images_and_bounded():
    r = tiny().eval()
    x, y = torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)
    same = r.change_scores(x, x)
    assert all(torch.allclose(v, torch.zeros(3), atol=1e-5) for v in same.values())
    diff = r.change_scores(x, y)
    assert set(diff) == {"expression", "pose", "identity"}
    assert all(((v >= 0) & (v <= 1)).all() for v in diff.values())


def test_which_changed_uses_calibration_and_threshold(monkeypatch):
    r = tiny()
    scores = {"identity": torch.tensor([0.10, 0.01, 0.02]), "expression": torch.tensor([0.30, 0.50, 0.01]), "pose": torch.tensor([0.0, 0.0, 0.0])}
    monkeypatch.setattr(r, "change_scores", lambda a, b: scores)
    calib = {"identity": 0.1, "expression": 0.6, "pose": 0.5}
    # ratios: sample 0: id 1.0 vs expr 0.5 -> identity; sample 1: id 0.1 vs expr 0.83 -> expression;
    # sample 2: nothing reaches 0.5 of its calibrated change -> none.
    assert r.which_changed(None, None, calib) == ["identity", "expression", NO_CHANGE]
    assert r.which_changed(None, None, calib, candidates=["expression", "pose"], threshold=0.4) == ["expression", "expression", NO_CHANGE]


def test_rater_loss_masks_missing_labels_and_reaches_every_parameter():
    r = tiny()
    x = torch.rand(4, 3, 32, 32)
    labels = {"identity": torch.tensor([0, 1, -1, 4]), "expression": torch.tensor([0, -1, 2, 1]), "pose": torch.tensor([-1, -1, -1, -1])}
    total, terms = rater_loss(r, x, labels)
    assert set(terms) == {"identity", "expression"}  # pose has no label here
    total.backward()
    for n, p in r.named_parameters():
        if n.startswith("heads.pose"):
            assert p.grad is None or p.grad.abs().sum() == 0
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, n


def test_load_rater_round_trip(tmp_path):
    r = tiny().eval()
    cfg = RaterTrainConfig(model=RaterConfig(image_size=32, channels=[8, 8, 8], hidden=16, embed_dim=8))
    save_config(cfg, tmp_path / "config.yaml")
    description().save(tmp_path / "description.json")
    save_module(tmp_path / "weights.safetensors", r)
    (tmp_path / "calibration.json").write_text(json.dumps({"identity": 0.2}))
    loaded = load_rater(tmp_path)
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(loaded.predict(x)["expression"], r.predict(x)["expression"], atol=1e-6)
    assert loaded.calibration == {"identity": 0.2}
    with pytest.raises(UserError, match="train a rater"):
        load_rater(tmp_path / "nope")


def test_ensure_rater_refuses_a_rater_of_another_image_size_or_framing(tmp_path):
    from facefactors.train.rater import ensure_rater

    cfg = RaterTrainConfig(model=RaterConfig(image_size=32, channels=[8, 8, 8], hidden=16, embed_dim=8))
    save_config(cfg, tmp_path / "config.yaml")
    description().save(tmp_path / "description.json")
    save_module(tmp_path / "weights.safetensors", tiny())
    (tmp_path / "calibration.json").write_text(json.dumps({"identity": 0.2}))
    assert ensure_rater(tmp_path, "tiny", 1.0, image_size=32).config.image_size == 32  # found, not retrained
    with pytest.raises(UserError, match=r"reads 32x32 images, the faces to judge are 64x64"):
        ensure_rater(tmp_path, "tiny", 1.0, image_size=64)
    with pytest.raises(UserError, match="zoom"):
        ensure_rater(tmp_path, "tiny", 1.5, image_size=32)


def test_onecycle_schedule_warms_up_then_decays_to_near_zero():
    cfg = RaterTrainConfig(model=RaterConfig(image_size=32, channels=[8, 8, 8], hidden=16, embed_dim=8), lr=2e-3, schedule="onecycle", warmup=0.2)
    cfg.trainer.max_steps = 100
    conf = RaterRecipe(cfg, description()).configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert conf["lr_scheduler"]["interval"] == "step"
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    peak = max(range(100), key=lambda i: lrs[i])
    assert peak == 19 and lrs[peak] == pytest.approx(2e-3)  # torch peaks at step pct_start * total - 1
    assert lrs[0] < 2e-4 and lrs[-1] < 1e-5


def test_constant_schedule_and_bad_schedule():
    cfg = RaterTrainConfig(model=RaterConfig(image_size=32, channels=[8, 8, 8], hidden=16, embed_dim=8))
    assert isinstance(RaterRecipe(cfg, description()).configure_optimizers(), torch.optim.Adam)
    cfg.schedule = "cosine"
    with pytest.raises(UserError, match="onecycle"):
        RaterRecipe(cfg, description()).configure_optimizers()


@pytest.mark.parametrize("preset,size,out_res", [("quick", 64, 4), ("quick32", 32, 4)])
def test_presets_keep_a_4x4_map_at_their_image_size(preset, size, out_res):
    cfg = load_config(RaterTrainConfig, "rater", preset)
    assert cfg.model.image_size == size and cfg.schedule == "onecycle" and cfg.blur_probability == 0
    assert cfg.data.train_identities * cfg.data.images_per_identity >= 24000  # the small set over-fitted
    r = Rater(description(), cfg.model).eval()
    assert r.trunk.out_resolution == out_res
    assert r.predict(torch.rand(2, 3, size, size))["expression"].shape == (2, 3)


def test_threads_are_set_before_the_training_set_is_rendered(monkeypatch, tmp_path):
    """Rendering runs before Lightning's set-up; at torch's default of two threads it crawled."""
    import facefactors.train.rater as X

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(("threads", n)))

    def render(*args, **kwargs):
        calls.append(("render",))
        raise KeyboardInterrupt  # stop here: only the order matters

    monkeypatch.setattr(X, "render_world_set", render)
    with pytest.raises(KeyboardInterrupt):
        X.train_rater("quick32", tmp_path / "r", ["data.cache="])
    assert calls[:2] == [("threads", 1), ("render",)]


def test_random_blur_blurs_the_chosen_share_and_keeps_the_rest():
    from facefactors.train.rater import random_blur

    g = torch.Generator().manual_seed(0)
    x = torch.zeros(400, 1, 25, 25)
    x[:, :, 12, 12] = 1.0  # a point: blurred, its peak drops and its mass spreads
    assert torch.equal(random_blur(x, 0.0, 2.0), x)
    y = random_blur(x, 0.5, 2.0, generator=g)
    assert y.shape == x.shape
    changed = (y != x).flatten(1).any(1).float().mean()
    assert 0.4 < changed < 0.6  # about half the images
    assert torch.allclose(y.sum((1, 2, 3)), x.sum((1, 2, 3)), atol=1e-4)  # mass kept (far from the border)
    kept = (y == x).flatten(1).all(1)
    assert kept.any() and y[~kept][:, 0, 12, 12].mean() < 0.5  # the others untouched, the chosen ones spread


def test_balanced_verification_is_chance_for_a_useless_embedding_and_one_for_a_perfect_one():
    from facefactors.train.rater import verification_balanced

    same = np.array([True] * 3 + [False] * 97)  # few same-person pairs, as in a real test set
    assert verification_balanced(np.zeros(100), same) == pytest.approx(0.5)  # plain accuracy would be 0.97
    assert verification_balanced(np.where(same, 0.9, 0.1), same) == pytest.approx(1.0)
    assert np.isnan(verification_balanced(np.zeros(3), np.zeros(3, bool)))


def test_read_gives_what_predict_and_embed_identity_give_in_one_pass():
    r = tiny().eval()
    x = torch.rand(3, 3, 32, 32)
    probs, emb = r.read(x)
    assert set(probs) == {"expression", "pose"} and all(torch.allclose(probs[k], v) for k, v in r.predict(x).items())
    assert torch.allclose(emb, r.embed_identity(x))
