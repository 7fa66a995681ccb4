"""The VAE recipe: every kind trains from a preset, resumes, writes its run files; a CVAE uses its labels."""

import json

import numpy as np
import pytest
import torch

from facefactors.config import load_config
from facefactors.train.vae import VAEConfig, load_run, train
from facefactors.train.vae_data import BlobsDataset, BlobsGroundTruth, render_blobs
from facefactors.utils.errors import UserError


def tiny(*overrides):
    return load_config(VAEConfig, "vae", "tiny", list(overrides))


@pytest.mark.parametrize("kind", ["vae", "beta_tcvae", "cvae"])
def test_each_kind_trains_and_writes_its_run(tmp_path, kind):
    extra = ["model.condition=[bar,x]"] if kind == "cvae" else []
    run = train(tiny(f"model.kind={kind}", *extra), tmp_path / kind)
    for f in ("config.yaml", "weights.safetensors", "description.json", "loss_curves.png", "features.npz", "metrics.json"):
        assert (run.path / f).is_file(), f
    assert (run.samples / "final_reconstructions.png").is_file() and (run.samples / "final_samples.png").is_file()
    history = json.loads((run.path / "loss_history.json").read_text())
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5, 6]
    for h in history:
        assert np.isfinite([h["loss"], h["recon"], h["kl"]]).all()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(next((run.path / "tb").rglob("events*"))))
    board.Reload()
    logged = board.Scalars("train/recon")  # TensorBoard has the same curve, against the same steps
    assert [e.step for e in logged] == [h["step"] for h in history]
    assert [e.value for e in logged] == pytest.approx([h["recon"] for h in history], rel=1e-6)
    if kind == "beta_tcvae":
        assert {"mi", "tc", "dwkl"} <= set(history[-1])
    metrics = json.loads(run.metrics.read_text())
    assert metrics["kind"] == kind and np.isfinite(metrics["reconstruction_nats"])
    feats = np.load(run.features)
    assert feats["features/codes"].shape == (256, 4) and feats["labels/bar"].shape == (256,)
    model, cfg, description = load_run(run.path, device="cpu")
    assert cfg.model.kind == kind and model.is_conditional == (kind == "cvae")
    assert description.names == ["colour", "size", "x", "y", "bar"]


def test_factor_vae_resumes_where_it_stopped(tmp_path):
    cfg = tiny("model.kind=factor_vae")
    run = train(cfg, tmp_path / "fvae")
    first = json.loads((run.path / "loss_history.json").read_text())
    assert [h["step"] for h in first] == [1, 2, 3, 4, 5, 6]
    assert all("disc_loss" in h and "tc" in h for h in first)
    model_a, _, _ = load_run(run.path, "cpu")
    cfg.trainer.max_steps = 9  # both optimisers' state is restored; the step count is in batches
    run = train(cfg, tmp_path / "fvae")
    steps = [h["step"] for h in json.loads((run.path / "loss_history.json").read_text())]
    assert steps == list(range(1, 10))
    model_b, _, _ = load_run(run.path, "cpu")
    changed = [not torch.equal(a, b) for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values())]
    assert any(changed)
    with pytest.raises(UserError, match="different config"):
        train(tiny("model.kind=factor_vae", "model.latent_dim=5"), tmp_path / "fvae")


def test_same_config_same_model_whatever_ran_before(tmp_path):
    # The initial weights used to come from whatever state the global RNG was in (e.g. after
    # another variant's training in the same process); a run must depend on its config only.
    cfg = tiny("model.kind=vae")
    torch.manual_seed(123)
    a, _, _ = load_run(train(cfg, tmp_path / "a").path, "cpu")
    torch.rand(1000)  # anything else drawing random numbers in between
    b, _, _ = load_run(train(cfg, tmp_path / "b").path, "cpu")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_a_run_saved_before_a_config_field_existed_still_resumes(tmp_path):
    import yaml

    cfg = tiny("model.kind=vae")
    run = train(cfg, tmp_path / "old")
    saved = yaml.safe_load(run.config.read_text())
    del saved["model"]["decoder_res_blocks"], saved["loss"]["gradient_weight"]  # as written before they existed
    run.config.write_text(yaml.safe_dump(saved))
    cfg.trainer.max_steps = 8
    run = train(cfg, tmp_path / "old")  # the defaults (0) are the old behaviour: resumes, no "different config"
    assert [h["step"] for h in json.loads((run.path / "loss_history.json").read_text())][-1] == 8
    with pytest.raises(UserError, match="different config"):
        train(tiny("model.kind=vae", "model.decoder_res_blocks=1"), tmp_path / "old")


def test_bad_data_source_is_one_line(tmp_path):
    with pytest.raises(UserError, match="data.source"):
        train(tiny("data.source=imagenet"), tmp_path / "bad")
    with pytest.raises(UserError, match="fewer than trainer.batch_size"):
        train(tiny("data.num_images=8"), tmp_path / "small")


def test_blobs_ground_truth_sampler_protocol():
    gt = BlobsGroundTruth(32)
    rng = np.random.default_rng(0)
    f = gt.sample_factors(10, rng)
    assert f.shape == (10, 5) and (f >= 0).all() and (f < np.array(gt.factor_sizes)).all()
    obs = gt.sample_observations(f, rng)
    assert obs.shape == (10, 3, 32, 32) and obs.dtype == np.float32 and 0 <= obs.min() and obs.max() <= 1
    # x moves the disc right (x right, y down): the disc's column centre of mass grows with x.
    a, b = render_blobs(np.array([[0, 2, 0, 2, 0], [0, 2, 4, 2, 0]]), 32)
    cols = np.arange(32)
    com = [(im.sum((0, 1)) * cols).sum() / im.sum() for im in (a, b)]
    assert com[1] > com[0] + 5
    ds = BlobsDataset(20, 32, seed=1)
    assert torch.equal(ds[3]["image"], torch.from_numpy(render_blobs(ds.factors[3:4], 32))[0])


def test_train_time_accumulates_over_resumes(tmp_path):
    cfg = tiny("model.kind=vae")
    run = train(cfg, tmp_path / "r")
    run.update_metrics({"train_wall_s": 1000.0})  # pretend the first session took 1000 s
    train(cfg, tmp_path / "r")  # finished: resumes, trains nothing, keeps the earlier time
    assert 1000.0 <= json.loads(run.metrics.read_text())["train_wall_s"] < 1100.0
    train(cfg, tmp_path / "r", overwrite=True)  # afresh: the old time is not added
    assert json.loads(run.metrics.read_text())["train_wall_s"] < 900.0


def test_batched_fetch_equals_collated_items():
    from facefactors.data.collate import collate
    from facefactors.train.vae_data import Uint8ImageDataset, blobs_description, collate_batches

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (10, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = {"colour": torch.randint(0, 3, (10,), generator=g), "bar": torch.tensor([0, 1, -1, 1, 0, 0, 1, 1, 0, -1])}
    ds = Uint8ImageDataset(images, labels, blobs_description(32))
    idx = [7, 2, 9]
    fast = collate_batches(ds.__getitems__(idx))
    slow = collate([ds[i] for i in idx])
    torch.testing.assert_close(fast["image"], slow["image"])
    assert fast["image"].dtype == torch.float32 and fast["image"].max() <= 1
    for k in labels:
        assert torch.equal(fast["labels"][k], slow["labels"][k])
    assert fast["index"].tolist() == idx


def test_losses_are_logged_only_every_n_steps(tmp_path):
    """The recipe logs on the steps the curves record (and the first), not on every step."""
    run = train(tiny("model.kind=vae", "trainer.log_every_n_steps=2"), tmp_path / "every2")
    history = json.loads((run.path / "loss_history.json").read_text())
    assert [h["step"] for h in history] == [1, 2, 4, 6]
    assert all(np.isfinite(h["loss"]) for h in history)


def test_checkpoints_save_the_loss_history_and_the_end_draws_the_curves(tmp_path):
    from facefactors.train.common import RunDir
    from facefactors.train.vae import LossCurves

    run = RunDir(tmp_path)
    curves = LossCurves(run, every=1)
    curves.history = [{"step": 1, "loss": 3.0, "recon": 2.0, "kl": 1.0}]

    class Trainer:
        is_global_zero = True

    curves.on_save_checkpoint(Trainer(), None, {})
    curves.on_train_end(Trainer(), None)
    # Inside the training loop only the history is written; finish_run draws the PNG (test above).
    assert (tmp_path / "loss_history.json").is_file() and not (tmp_path / "loss_curves.png").exists()
    assert json.loads((tmp_path / "loss_history.json").read_text())[0]["loss"] == 3.0


def test_sharp_preset_is_a_fixed_sigma_gaussian_decoder():
    cfg = load_config(VAEConfig, "vae", "sharp")
    assert (cfg.loss.reconstruction, cfg.loss.gaussian_sigma, cfg.model.latent_dim, cfg.model.image_size) == ("gaussian", 0.05, 32, 32)
    assert cfg.model.channels == load_config(VAEConfig, "vae", "quick").model.channels  # only the likelihood and size change


def test_gaussian_sigma_is_used_in_training_and_in_the_reported_reconstruction(tmp_path):
    """The run's reconstruction_nats is the training objective's term (same sigma), not a plain SSE."""
    from facefactors.edit.traversal import encode_dataset
    from facefactors.train.vae_data import build_dataset

    run = train(tiny("loss.reconstruction=gaussian", "loss.gaussian_sigma=0.1"), tmp_path / "g")
    model, cfg, _ = load_run(run.path, "cpu")
    assert cfg.loss.gaussian_sigma == 0.1
    metrics = json.loads((run.path / "metrics.json").read_text())
    _, _, plain, _ = encode_dataset(model, build_dataset(cfg.data, cfg.model.image_size), reconstruction="gaussian")
    assert metrics["reconstruction_nats"] == pytest.approx(plain * 50, rel=1e-4)
