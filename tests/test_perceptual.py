"""The perceptual reconstruction term: distance, frozen network, gradients, loading, and its
place in the UFE's training (train/perceptual.py, loss.perceptual)."""

import copy
import json

import pytest
import torch

from facefactors.config import load_config, load_saved_config, save_config
from facefactors.data.description import DatasetDescription, Factor
from facefactors.models.rater import Rater, RaterConfig
from facefactors.train.perceptual import (
    PerceptualLoss,
    auto_net_dir,
    ensure_perceptual_net,
    load_perceptual,
    perceptual_distance,
)
from facefactors.train.rater import RaterTrainConfig
from facefactors.train.ufe import UFETrainConfig, train_ufe
from facefactors.train.ufe_data import GroupedBatches
from facefactors.train.ufe_losses import Mix, UFELossConfig
from facefactors.utils.errors import UserError
from facefactors.utils.io import save_module
from test_ufe_train import synthetic_set

RATER = RaterConfig(image_size=32, channels=[8, 8, 8], hidden=16, embed_dim=8)


def rater_description():
    return DatasetDescription(
        "w",
        (Factor("identity", class_names=tuple(map(str, range(5)))), Factor("expression", class_names=("neutral", "smile"))),
        image_size=32,
    )


def tiny_rater(seed=0):
    torch.manual_seed(seed)
    return Rater(rater_description(), RATER)


def save_rater(path, zoom=1.0):
    """A rater run directory as `facefactors ufe rater` writes it (untrained weights)."""
    cfg = RaterTrainConfig(model=RATER)
    cfg.data.zoom = zoom
    path.mkdir(parents=True)
    save_config(cfg, path / "config.yaml")
    rater_description().save(path / "description.json")
    save_module(path / "weights.safetensors", tiny_rater())
    (path / "calibration.json").write_text(json.dumps({}))
    return path


def test_feature_maps_end_where_the_trunk_ends():
    r = tiny_rater().eval()
    x = torch.rand(2, 3, 32, 32)
    maps = r.feature_maps(x)
    assert [m.shape[-1] for m in maps] == [32, 16, 8, 4]  # stem, then each down block halves
    assert torch.allclose(maps[-1].flatten(1), r.trunk(x), atol=1e-6)


def test_outputs_from_maps_are_the_forward_outputs():
    r = tiny_rater().eval()
    x = torch.rand(3, 3, 32, 32)
    logits, embedding = r(x)
    from_maps, embedding_from_maps = r.outputs_from_maps(r.feature_maps(x))
    assert set(from_maps) == set(logits) == {"expression"}
    assert torch.allclose(from_maps["expression"], logits["expression"], atol=1e-6)
    assert torch.allclose(embedding_from_maps, embedding, atol=1e-6)


def test_identity_and_class_terms_against_the_networks_public_readings():
    loss = PerceptualLoss(tiny_rater(seed=3))
    g = torch.Generator().manual_seed(1)
    image = torch.rand(4, 3, 64, 64, generator=g)  # area-resized to the network's 32, as forward
    recon = torch.rand(4, 3, 64, 64, generator=g, requires_grad=True)
    terms = loss.terms(image, recon)
    assert set(terms) == {"perc", "perc_id", "perc_cls"} and all(v.shape == () for v in terms.values())
    assert torch.allclose(terms["perc"], loss(image, recon))
    small = torch.nn.functional.interpolate(image, size=(32, 32), mode="area")
    small_recon = torch.nn.functional.interpolate(recon.detach(), size=(32, 32), mode="area")
    # by hand from the rater's own API: 1 - cosine of unit embeddings; KL(p(image) || p(recon))
    cos = (loss.network.embed_identity(small) * loss.network.embed_identity(small_recon)).sum(-1)
    assert torch.allclose(terms["perc_id"], (1 - cos).mean(), atol=1e-6)
    p, q = loss.network.predict(small)["expression"], loss.network.predict(small_recon)["expression"]
    assert torch.allclose(terms["perc_cls"], (p * (p / q).log()).sum(-1).mean(), atol=1e-6)
    assert terms["perc_id"] > 0 and terms["perc_cls"] > 0
    (terms["perc_id"] + terms["perc_cls"]).backward()
    assert recon.grad is not None and recon.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.network.parameters())
    same = loss.terms(image, image.clone())
    assert all(float(v) == pytest.approx(0.0, abs=1e-6) for v in same.values())


def test_swap_terms_judge_each_head_against_the_image_its_subspace_came_from():
    loss = PerceptualLoss(tiny_rater(seed=4))
    g = torch.Generator().manual_seed(2)
    images = torch.rand(4, 3, 32, 32, generator=g)
    batch = loss.read_targets(images)
    first, partner = torch.arange(4), torch.tensor([1, 2, 3, 0])
    yes, no = torch.ones(4, dtype=torch.bool), torch.zeros(4, dtype=torch.bool)
    # every subspace from the partner, and the composite is the partner itself: nothing to pay
    mix = Mix({}, first, partner, {"identity": yes, "expression": yes, "others": yes})
    same = loss.swap_terms(images[partner], batch, mix, "others")
    assert set(same) == {"swap_id", "swap_cls"}
    assert all(float(v) == pytest.approx(0.0, abs=1e-6) for v in same.values())
    # identity from the first image instead: the identity term is the partner's distance to it
    mix = Mix({}, first, partner, {"identity": no, "expression": yes, "others": yes})
    terms = loss.swap_terms(images[partner], batch, mix, "others")
    embedding = loss.network.embed_identity(images)
    assert torch.allclose(terms["swap_id"], (1 - (embedding[partner] * embedding).sum(-1)).mean(), atol=1e-6)
    assert float(terms["swap_cls"]) == pytest.approx(0.0, abs=1e-6)
    # a head named after no subspace follows "others": here expression's source is others' (the first image)
    mix = Mix({}, first, partner, {"identity": yes, "others": no})
    composites = images[partner].clone().requires_grad_(True)
    terms = loss.swap_terms(composites, batch, mix, "others")
    p, q = loss.network.predict(images)["expression"], loss.network.predict(images[partner])["expression"]
    assert torch.allclose(terms["swap_cls"], (p * (p / q).log()).sum(-1).mean(), atol=1e-6)
    assert float(terms["swap_id"].detach()) == pytest.approx(0.0, abs=1e-6)
    terms["swap_cls"].backward()
    assert composites.grad is not None and composites.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.network.parameters())


def test_distance_is_zero_for_equal_maps_and_ignores_each_layers_scale():
    g = torch.Generator().manual_seed(0)
    a = [torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 8, 4, 4, generator=g)]
    b = [torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 8, 4, 4, generator=g)]
    assert perceptual_distance(a, a) == 0
    d = perceptual_distance(a, b)
    assert d > 0
    # a layer 100x larger in both images counts as much as before: the scale is divided out
    scaled = perceptual_distance([a[0] * 100, a[1]], [b[0] * 100, b[1]])
    assert torch.allclose(d, scaled, rtol=1e-5)
    # by hand: mean over layers of mean |a - b| / mean |a|
    want = sum((x - y).abs().mean() / x.abs().mean() for x, y in zip(a, b)) / 2
    assert torch.allclose(d, want, rtol=1e-5)
    with pytest.raises(ValueError, match="layers"):
        perceptual_distance(a, b[:1])


def test_gradient_reaches_the_reconstruction_never_the_frozen_network():
    loss = PerceptualLoss(tiny_rater())
    loss.train()
    assert not loss.network.training  # frozen: stays in eval mode
    image = torch.rand(3, 3, 64, 64)  # another size than the network's 32: area-resized
    recon = torch.rand(3, 3, 64, 64, requires_grad=True)
    value = loss(image, recon)
    value.backward()
    assert value.shape == () and value > 0
    assert recon.grad is not None and torch.isfinite(recon.grad).all() and recon.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss.network.parameters())
    assert loss(image, image.clone()) == 0


def test_load_perceptual_refuses_missing_folders_and_another_framing(tmp_path):
    run = save_rater(tmp_path / "perc", zoom=1.5)
    loss = load_perceptual(run, zoom=1.5)
    assert isinstance(loss, PerceptualLoss) and loss.size == 32
    with pytest.raises(UserError, match="zoom 1.5") as err:
        load_perceptual(run, zoom=1.0)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="no rater run directory"):
        load_perceptual(tmp_path / "nope", zoom=1.0)


def test_ufe_trains_with_the_perceptual_term_and_exports_only_its_own_weights(tmp_path, monkeypatch):
    from facefactors.train.ufe import UFERecipe
    from facefactors.train.ufe_losses import ufe_losses

    monkeypatch.chdir(tmp_path)  # loss.perceptual_net=auto finds the network trained there before
    cfg = load_config(UFETrainConfig, "ufe", "tiny", ["loss.perceptual=2.0", "loss.perceptual_net=auto"])
    net = save_rater(tmp_path / auto_net_dir(cfg.loss.perceptual_net_preset, cfg.data.zoom), zoom=cfg.data.zoom)
    auto_cfg = copy.deepcopy(cfg)
    cfg.loss.perceptual_net = str(net)
    data = synthetic_set()
    recipe = UFERecipe(cfg, data.description)
    batch = data.batch(list(range(6)))
    torch.manual_seed(0)
    total, terms = ufe_losses(recipe.model, batch["image"], batch["labels"], cfg.loss, 0.0, None, 1.0, None, None, recipe.perceptual)
    torch.manual_seed(0)
    plain, plain_terms = ufe_losses(recipe.model, batch["image"], batch["labels"], cfg.loss, 0.0, None, 1.0, None, None, None)
    assert "perc" in terms and "perc" not in plain_terms
    assert torch.allclose(total - plain, 2.0 * terms["perc"], rtol=1e-4, atol=1e-5)

    # the outputs' terms, with or without the distance, from the same network in the same pass
    for weights in ((2.0, 5.0, 0.5), (0.0, 5.0, 0.0)):
        semantic = copy.deepcopy(cfg)
        semantic.loss.perceptual, semantic.loss.perceptual_identity, semantic.loss.perceptual_classes = weights
        semantic_recipe = UFERecipe(semantic, data.description)
        assert semantic_recipe.perceptual is not None
        semantic_recipe.model.load_state_dict(recipe.model.state_dict())
        torch.manual_seed(0)
        total, terms = ufe_losses(semantic_recipe.model, batch["image"], batch["labels"], semantic.loss, 0.0, None, 1.0, None, None, semantic_recipe.perceptual)
        on = {name for name, w in zip(("perc", "perc_id", "perc_cls"), weights) if w > 0}
        assert on <= set(terms) and not ({"perc", "perc_id", "perc_cls"} - on) & set(terms)
        added = sum(w * terms[name] for name, w in zip(("perc", "perc_id", "perc_cls"), weights) if w > 0)
        assert torch.allclose(total - plain, added, rtol=1e-4, atol=1e-5)

    # the swap terms come with L_dis, scaled by its schedule (here half way up its ramp)
    swap = copy.deepcopy(cfg)
    swap.loss.perceptual, swap.loss.perceptual_swap_identity, swap.loss.perceptual_swap_classes = 0.0, 3.0, 0.5
    swap_recipe = UFERecipe(swap, data.description)
    swap_recipe.model.load_state_dict(recipe.model.state_dict())
    lam = swap.loss.dis / 2
    _, no_dis = ufe_losses(swap_recipe.model, batch["image"], batch["labels"], swap.loss, 0.0, None, 1.0, None, None, swap_recipe.perceptual)
    assert not {"dis", "swap_id", "swap_cls"} & set(no_dis)  # off while L_dis is
    torch.manual_seed(0)
    total, terms = ufe_losses(swap_recipe.model, batch["image"], batch["labels"], swap.loss, lam, torch.Generator().manual_seed(1), 1.0, None, None, swap_recipe.perceptual)
    torch.manual_seed(0)
    plain_total, plain_terms = ufe_losses(recipe.model, batch["image"], batch["labels"], cfg.loss, lam, torch.Generator().manual_seed(1), 1.0, None, None, None)
    assert {"swap_id", "swap_cls"} <= set(terms) and torch.allclose(terms["dis"], plain_terms["dis"], atol=1e-6)
    assert terms["swap_id"] > 0 and terms["swap_cls"] > 0
    assert torch.allclose(total - plain_total, 0.5 * (3.0 * terms["swap_id"] + 0.5 * terms["swap_cls"]), rtol=1e-4, atol=1e-5)

    stream = GroupedBatches(data, "identity", cfg.data.identities_per_batch, cfg.data.images_per_batch_identity)
    run, model = train_ufe(auto_cfg, tmp_path / "run", stream, data.description)
    assert load_saved_config(UFETrainConfig, run.config).loss.perceptual_net == auto_net_dir("quick", cfg.data.zoom)  # what it was fitted to
    from safetensors import safe_open

    with safe_open(run.weights, "pt") as f:
        keys = list(f.keys())
    assert keys and not any("network" in k or "perceptual" in k for k in keys)  # the UFE's weights alone
    assert set(keys) == set(model.state_dict())
    cfg.loss.perceptual_net = "auto"
    cfg.trainer.max_steps = 6  # resumes (auto resolves to the same folder): the frozen network's entries in the checkpoint match
    run, _ = train_ufe(cfg, tmp_path / "run", stream, data.description)
    assert torch.load(run.last_checkpoint, weights_only=True)["global_step"] == 6


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["loss.perceptual=1.0"], "needs loss.perceptual_net"),
        (["loss.perceptual=1.0", "loss.perceptual_net=/no/such/rater"], "no rater run directory"),
        (["loss.perceptual=-1.0"], "must be >= 0"),
        (["loss.perceptual_identity=-1.0"], r"loss.perceptual_identity \(-1.0\) must be >= 0"),
        (["loss.perceptual_classes=1.0"], "needs loss.perceptual_net"),
        (["loss.perceptual=1.0", "loss.perceptual_net=auto", "loss.perceptual_net_preset=nope"], "perceptual_net_preset='nope' names no rater preset"),
    ],
)
def test_bad_perceptual_options_are_refused_before_the_run_is_written(tmp_path, monkeypatch, overrides, needle):
    monkeypatch.chdir(tmp_path)  # where auto would train its network
    cfg = load_config(UFETrainConfig, "ufe", "tiny", overrides)
    data = synthetic_set()
    stream = GroupedBatches(data, "identity", cfg.data.identities_per_batch, cfg.data.images_per_batch_identity)
    with pytest.raises(UserError, match=needle) as err:
        train_ufe(cfg, tmp_path / "run", stream, data.description)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_auto_trains_the_network_once_with_the_other_seed_at_the_runs_framing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    loss = UFELossConfig(perceptual=1.0, perceptual_net="auto", perceptual_net_preset="tiny")
    ensure_perceptual_net(loss, 1.5, "", 1, progress=False)
    assert loss.perceptual_net == "runs/perceptual-rater-tiny-zoom1.5"
    saved = load_saved_config(RaterTrainConfig, tmp_path / loss.perceptual_net / "config.yaml")
    assert saved.trainer.seed == 1 and saved.data.zoom == 1.5  # not the judge's seed 0; the faces' framing
    weights = tmp_path / loss.perceptual_net / "weights.safetensors"
    trained_at = weights.stat().st_mtime_ns
    again = UFELossConfig(perceptual=1.0, perceptual_net="auto", perceptual_net_preset="tiny")
    ensure_perceptual_net(again, 1.5, "", 1, progress=False)
    assert again.perceptual_net == loss.perceptual_net and weights.stat().st_mtime_ns == trained_at  # reused
    assert load_perceptual(again.perceptual_net, 1.5).network.zoom == 1.5

    off = UFELossConfig(perceptual=0.0, perceptual_net="auto", perceptual_net_preset="tiny")
    ensure_perceptual_net(off, 1.0, "", 1, progress=False)
    assert off.perceptual_net == "auto" and not (tmp_path / "runs/perceptual-rater-tiny-zoom1").exists()  # nothing trained


def test_the_standard_preset_fits_its_decoder_to_another_network_than_the_judge():
    from facefactors.experiments.ufe import _rater_dir

    cfg = load_config(UFETrainConfig, "ufe", "standard")
    assert cfg.loss.perceptual == 30.0 and cfg.loss.perceptual_net == "auto"
    _, judge = _rater_dir("standard", None, cfg.data.zoom)
    assert auto_net_dir(cfg.loss.perceptual_net_preset, cfg.data.zoom) != judge
    assert load_config(UFETrainConfig, "ufe", "quick").loss.perceptual == 0.0  # the demo trains one rater only
