"""A tiny end-to-end UFE training run (tiny preset): trains, exports, reloads, resumes."""

import json

import pytest
import torch

from facefactors.config import load_config
from facefactors.data.description import DatasetDescription, Factor
from facefactors.train.ufe import UFETrainConfig, load_ufe, train_ufe
from facefactors.train.ufe_data import AlternatingBatches, FaceTensorSet, GroupedBatches
from facefactors.utils.errors import UserError


def synthetic_set(n_id=6, per_id=4, size=32, seed=0):
    """Identity = colour, expression = bar position: a cheap stand-in for rendered faces."""
    g = torch.Generator().manual_seed(seed)
    ident = torch.arange(n_id).repeat_interleave(per_id)
    expr = torch.randint(0, 2, (len(ident),), generator=g)
    colours = torch.rand(n_id, 3, generator=g)
    img = colours[ident][:, :, None, None].expand(-1, -1, size, size).clone()
    for i, e in enumerate(expr.tolist()):
        img[i, :, 4 + 16 * e : 10 + 16 * e, 4:28] = 1.0
    desc = DatasetDescription(
        "synthetic",
        (Factor("identity", class_names=tuple(map(str, range(n_id)))), Factor("expression", class_names=("a", "b")), Factor("age", class_names=("y", "o"))),
        labelled=("identity", "expression"),
        image_size=size,
    )
    labels = {"identity": ident, "expression": expr, "age": torch.full_like(ident, -1)}
    return FaceTensorSet((img * 255).round().to(torch.uint8), labels, desc)


def test_tiny_training_run_exports_reloads_and_resumes(tmp_path):
    cfg = load_config(UFETrainConfig, "ufe", "tiny")
    data = synthetic_set()
    stream = GroupedBatches(data, "identity", cfg.data.identities_per_batch, cfg.data.images_per_batch_identity)
    batch = next(iter(stream))
    assert batch["image"].shape == (6, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert len(set(batch["labels"]["identity"].tolist())) == 3  # k groups, positive pairs for each

    run, model = train_ufe(cfg, tmp_path / "run", stream, data.description)
    assert run.weights.is_file() and run.last_checkpoint.is_file()
    assert any(run.samples.glob("recon_*.png"))
    loaded = load_ufe(run.path)
    x = data.batch([0, 5])["image"]
    for a, p in loaded.predict(x).items():
        assert torch.allclose(p, model.predict(x)[a], atol=1e-6)
    assert loaded.attributes == ["identity", "expression"]

    # Resume with a larger budget continues from the saved step.
    cfg.trainer.max_steps = 6
    run2, _ = train_ufe(cfg, tmp_path / "run", stream, data.description)
    steps = torch.load(run2.last_checkpoint, weights_only=True)["global_step"]
    assert steps == 6


def test_a_run_with_standardised_adversaries_trains_and_reloads_their_statistics(tmp_path):
    cfg = load_config(UFETrainConfig, "ufe", "tiny", ["model.adversary_norm=true"])
    data = synthetic_set()
    stream = GroupedBatches(data, "identity", cfg.data.identities_per_batch, cfg.data.images_per_batch_identity)
    run, model = train_ufe(cfg, tmp_path / "run", stream, data.description)
    norm = model.adversary_norm["others"]
    assert int(norm.num_batches_tracked) > 0 and not torch.allclose(norm.running_var, torch.ones_like(norm.running_var))
    loaded = load_ufe(run.path)
    assert torch.equal(loaded.adversary_norm["others"].running_var, norm.running_var)


def test_pin_idle_units_pins_what_hardly_moves_and_nothing_else():
    from facefactors.train.ufe import pin_idle_units
    from test_ufe_losses import tiny_model

    torch.manual_seed(0)
    model = tiny_model().eval()
    with torch.no_grad():  # a unit left unused: its dense weights ~1e-4 of the others'
        model.encoder.projections["expression"].weight[2] *= 1e-4
        model.encoder.projections["expression"].bias[2] = 3.5
    x = torch.rand(40, 3, 32, 32)
    spread = model.encode(x)["expression"].std(0)
    assert spread[2] < 1e-4 and (spread[[0, 1, 3, 4, 5, 6, 7]] > 1e-3).all()
    mean = model.encode(x)["expression"][:, 2].mean()
    assert pin_idle_units(model, [x[:20], x[20:]], max_std=1e-3) == {"expression": [2]}
    after = model.encode(torch.rand(3, 3, 32, 32))["expression"][:, 2]
    assert torch.allclose(after, mean.expand(3), atol=1e-6)
    with pytest.raises(UserError, match="at least 2 images"):
        pin_idle_units(model, [x[:1]])


def test_a_run_with_pin_idle_std_exports_the_pinned_weights(tmp_path):
    from facefactors.utils.io import load_weights

    # after 4 tiny steps every feature still sits near 0.5: a generous bound pins some units
    cfg = load_config(UFETrainConfig, "ufe", "tiny", ["model.pin_idle_std=0.05"])
    data = synthetic_set()
    stream = GroupedBatches(data, "identity", cfg.data.identities_per_batch, cfg.data.images_per_batch_identity)
    run, model = train_ufe(cfg, tmp_path / "run", stream, data.description)
    pinned = json.loads(run.metrics.read_text())["pinned"]
    assert pinned and all(name in model.feature_names for name in pinned)
    name, coords = next(iter(pinned.items()))
    weights, _ = load_weights(run.weights)
    assert weights[f"encoder.projections.{name}.weight"][coords].abs().max() == 0
    loaded = load_ufe(run.path)
    f = loaded.encode(data.batch(range(8))["image"])[name][:, coords]
    assert torch.equal(f, f[:1].expand_as(f))
    for bad, message in ((["model.pin_idle_std=-1"], ">= 0"), (["model.pin_idle_std=0.1", "model.feature_norm=true"], "feature_norm off")):
        with pytest.raises(UserError, match=message):
            train_ufe(load_config(UFETrainConfig, "ufe", "tiny", bad), tmp_path / "bad", stream, data.description)


def test_alternating_batches_fill_missing_labels():
    a = synthetic_set()
    b = synthetic_set(seed=1).restrict(["age"], "b")
    b.labels["age"] = torch.randint(0, 2, (len(b),))
    sa = GroupedBatches(a, "identity", 2, 2)
    sb = GroupedBatches(b, "age", 2, 2, groups=torch.arange(len(b)) // 2)  # hidden groups shape B's batches
    it = iter(AlternatingBatches(sa, sb))
    first, second, third = next(it), next(it), next(it)
    assert (first["labels"]["age"] == -1).all() and (first["labels"]["identity"] >= 0).all()
    assert (second["labels"]["identity"] == -1).all() and (second["labels"]["age"] >= 0).all()
    assert (third["labels"]["identity"] >= 0).all()


def test_alternating_batches_skip_goes_on_with_the_uninterrupted_stream():
    a = synthetic_set()
    b = synthetic_set(seed=1).restrict(["age"], "b")
    b.labels["age"] = torch.randint(0, 2, (len(b),), generator=torch.Generator().manual_seed(0))

    def streams():
        return GroupedBatches(a, "identity", 2, 2), GroupedBatches(b, "age", 2, 2, groups=torch.arange(len(b)) // 2)

    def take(stream, n):
        it = iter(stream)
        return [next(it) for _ in range(n)]

    whole = take(AlternatingBatches(*streams()), 40)
    for skips in ((0,), (1,), (2,), (7,), (3, 4), (1, 1, 1), (13, 0, 6)):
        resumed = AlternatingBatches(*streams())
        for n in skips:
            resumed.skip(n)
        done = sum(skips)
        for got, want in zip(take(resumed, 6), whole[done:], strict=False):
            assert torch.equal(got["index"], want["index"]) and torch.equal(got["image"], want["image"])
            assert sorted(got["labels"]) == sorted(want["labels"]), skips  # every label name, whichever stream starts


def test_a_resumed_run_goes_on_with_the_batches_it_has_not_seen(tmp_path):
    class Recorded(GroupedBatches):
        def __iter__(self):
            for batch in super().__iter__():
                self.seen.append(batch["index"].clone())
                yield batch

    data = synthetic_set()

    def run(out, steps):
        cfg = load_config(UFETrainConfig, "ufe", "tiny", [f"trainer.max_steps={steps}"])
        stream = Recorded(data, "identity", 3, 2, seed=5)
        stream.seen = []
        train_ufe(cfg, out, stream, data.description)
        return stream.seen

    uninterrupted = run(tmp_path / "whole", 4)
    first = run(tmp_path / "parts", 2)
    second = run(tmp_path / "parts", 4)  # resumes at step 2
    assert len(uninterrupted) >= 4 and len(first) >= 2 and len(second) >= 2  # (the loader may fetch one ahead)
    trained = first[:2] + second[:2]
    assert all(torch.equal(x, y) for x, y in zip(trained, uninterrupted[:4], strict=True))
    assert not torch.equal(second[0], first[0])  # not the first batches again

    ckpt = tmp_path / "parts" / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # truncated, as by a full disk
    with pytest.raises(UserError, match=r"last\.ckpt: cannot resume from this checkpoint .*--overwrite"):
        run(tmp_path / "parts", 6)


def test_predict_and_compose_commands(tmp_path, capsys):
    import pytest
    from PIL import Image

    from facefactors.cli.main import main
    from facefactors.edit.composite import to_uint8

    cfg = load_config(UFETrainConfig, "ufe", "tiny", ["trainer.max_steps=1"])
    data = synthetic_set()
    stream = GroupedBatches(data, "identity", 3, 2)
    run, _ = train_ufe(cfg, tmp_path / "run", stream, data.description)
    paths = []
    for i in (0, 7):
        p = tmp_path / f"face{i}.png"
        Image.fromarray(to_uint8(data.batch([i])["image"][0])).save(p)
        paths.append(str(p))
    main(["ufe", "predict", str(run.path), *paths, "--json"])
    out = capsys.readouterr().out
    import json

    probs = json.loads(out)
    assert set(probs) == set(paths)
    assert set(probs[paths[0]]) == {"identity", "expression"}
    assert abs(sum(probs[paths[0]]["expression"].values()) - 1) < 1e-4
    main(["predict", str(run.path), paths[0], "--json"])  # the top-level name of the same command
    alone = json.loads(capsys.readouterr().out)[paths[0]]
    # one image instead of two in the batch: the CPU's kernels may round the last bits differently
    assert {k: set(v) for k, v in alone.items()} == {k: set(v) for k, v in probs[paths[0]].items()}
    for attribute, classes in alone.items():
        assert classes == pytest.approx(probs[paths[0]][attribute], abs=1e-6)
    main(["ufe", "compose", str(run.path), *paths, "--take", "expression", "--out", str(tmp_path / "c.png")])
    assert Image.open(tmp_path / "c.png").size[0] > 4 * 32
    with pytest.raises(SystemExit) as e:
        main(["ufe", "predict", str(tmp_path / "missing"), paths[0]])
    assert e.value.code == 2
    assert "no such run directory" in capsys.readouterr().err


def test_ablations_add_cross_independence_and_perceptual_only_when_the_config_uses_them():
    from facefactors.experiments.ufe import ABLATIONS, ablations

    cfg = load_config(UFETrainConfig, "ufe", "tiny")
    cfg.loss.cross, cfg.model.cross_heads, cfg.loss.independence, cfg.loss.perceptual = 0.0, False, 0.0, 0.0
    assert ablations(cfg) == ABLATIONS
    cfg.loss.cross, cfg.model.cross_heads = 1.0, True
    assert ablations(cfg) == {**ABLATIONS, "wo_cross": ["loss.cross=0"]}
    cfg.loss.independence = 0.3
    assert ablations(cfg) == {**ABLATIONS, "wo_cross": ["loss.cross=0"], "wo_ind": ["loss.independence=0"]}
    cfg.loss.perceptual = 30.0  # without L_rec: no reconstruction loss at all
    assert ablations(cfg) == {**ABLATIONS, "wo_rec": ["loss.rec=0", "loss.perceptual=0"], "wo_cross": ["loss.cross=0"],
                              "wo_ind": ["loss.independence=0"], "wo_perc": ["loss.perceptual=0"]}
    assert ABLATIONS["wo_rec"] == ["loss.rec=0"]  # the table itself is left as it was
    cfg.loss.perceptual_identity = 10.0  # the network's identity distance goes with its distance
    assert ablations(cfg)["wo_perc"] == ["loss.perceptual=0", "loss.perceptual_identity=0"]
    assert ablations(cfg)["wo_rec"] == ["loss.rec=0", "loss.perceptual=0", "loss.perceptual_identity=0"]
    cfg.loss.perceptual, cfg.loss.perceptual_classes = 0.0, 1.0  # the outputs' terms alone
    assert ablations(cfg)["wo_perc"] == ["loss.perceptual_identity=0", "loss.perceptual_classes=0"]
    cfg.loss.twin, cfg.data.twins = 30.0, ["pose"]  # L_twin goes with its twins (each alone is refused)
    assert ablations(cfg)["wo_twin"] == ["loss.twin=0", "data.twins="]
    off = load_config(UFETrainConfig, "ufe", "tiny", ["loss.twin=30", "data.twins=pose", *ablations(cfg)["wo_twin"]])
    assert off.loss.twin == 0 and off.data.twins == []


def _ablation_without_training(monkeypatch):
    """The experiments module with training and evaluation replaced: ``trained`` records each
    variant's loss config by folder name."""
    import facefactors.experiments.ufe as X

    trained = {}
    matrix = {"x": ["identity"], "y": ["identity"], "silhouette": [[0.5]]}
    monkeypatch.setattr(X, "world_a_sets", lambda cfg, progress: (None, None))
    monkeypatch.setattr(X, "train_or_load", lambda cfg, out, train, progress: trained.setdefault(out.name, cfg.loss))
    weak = {"x": ["identity"], "y": ["identity"], "accuracy": [[0.9]]}
    monkeypatch.setattr(X, "evaluate_matrices", lambda model, test, out, tag, tsne: {"silhouette": matrix, "weak_classifier": weak})
    return X, trained


def test_ablation_experiment_trains_the_full_model_and_each_ablation_with_its_losses_off(tmp_path, monkeypatch):
    X, trained = _ablation_without_training(monkeypatch)
    X.exp_ablation("tiny", tmp_path, ["loss.independence=0.3", "loss.perceptual=30", "loss.perceptual_net=auto"], progress=False)
    assert list(trained) == ["full", "wo_cls", "wo_con", "wo_rec", "wo_dis", "wo_oth", "wo_cross", "wo_ind", "wo_perc"]  # tiny has L_x
    full = trained["full"]
    assert full.cls == full.con == 1.0 and full.perceptual == 30.0 and full.independence == 0.3
    assert trained["wo_cls"].cls == 0 and trained["wo_con"].con == 0 and trained["wo_oth"].oth == 0 and trained["wo_dis"].dis == 0
    assert trained["wo_rec"].rec == 0 and trained["wo_rec"].perceptual == 0 and trained["wo_perc"].rec == full.rec > 0
    assert trained["wo_perc"].perceptual == 0 and trained["wo_ind"].independence == 0 and trained["wo_ind"].perceptual == 30.0
    assert "wo_perc: silhouette" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "silhouette_side_by_side.png").stat().st_size > 1000


def test_ablation_experiment_runs_only_the_chosen_variants(tmp_path, monkeypatch):
    X, trained = _ablation_without_training(monkeypatch)
    X.run_experiment("ablation", "tiny", tmp_path, ["loss.cross=0"], progress=False, variants=["wo_oth", "wo_rec"])
    assert list(trained) == ["full", "wo_rec", "wo_oth"]  # the ablations' own order, the full model first
    assert trained["wo_oth"].oth == 0 and trained["wo_rec"].rec == 0 and trained["full"].oth > 0
    report = (tmp_path / "report.md").read_text()
    assert "wo_oth: silhouette" in report and "wo_cls" not in report
    with pytest.raises(UserError, match="unknown ablation wo_cross.*choose from wo_cls"):  # L_x is off, so no wo_cross
        X.run_experiment("ablation", "tiny", tmp_path, ["loss.cross=0"], progress=False, variants=["wo_cross"])
    with pytest.raises(UserError, match="--variants chooses ablations"):
        X.run_experiment("composites", "tiny", tmp_path, progress=False, variants=["wo_oth"])


def test_ablation_experiment_without_the_full_model_trains_and_reports_the_variants_alone(tmp_path, monkeypatch):
    X, trained = _ablation_without_training(monkeypatch)
    res = X.run_experiment("ablation", "tiny", tmp_path, ["loss.cross=0"], progress=False, variants=["wo_rec"], full=False)
    assert list(trained) == ["wo_rec"] and trained["wo_rec"].rec == 0
    report = (tmp_path / "report.md").read_text()
    assert "wo_rec: silhouette" in report and "full: silhouette" not in report and res == tmp_path / "report.md"
    assert list(json.loads((tmp_path / "metrics.json").read_text())) == ["wo_rec"]
    with pytest.raises(UserError, match="--run names the full model.*--no-full"):
        X.run_experiment("ablation", "tiny", tmp_path, progress=False, run="runs/somewhere", full=False)
    with pytest.raises(UserError, match="--no-full leaves the full model out of an ablation"):
        X.run_experiment("composites", "tiny", tmp_path, progress=False, full=False)


def test_experiments_reuse_a_finished_run_only_if_it_was_trained_with_the_same_config(tmp_path, monkeypatch):
    import facefactors.experiments.ufe as X

    cfg = load_config(UFETrainConfig, "ufe", "tiny")
    data = synthetic_set()
    stream = GroupedBatches(data, "identity", cfg.data.identities_per_batch, cfg.data.images_per_batch_identity)
    run, model = train_ufe(cfg, tmp_path / "run", stream, data.description)

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(X, "train_ufe", no_training)
    again = load_config(UFETrainConfig, "ufe", "tiny", ["trainer.threads=2"])  # may change between runs
    reused = X.train_or_load(again, run.path, data, progress=False)
    x = data.batch([0, 5])["image"]
    assert torch.allclose(reused.encode(x)["identity"], model.encode(x)["identity"], atol=1e-6)
    other = load_config(UFETrainConfig, "ufe", "tiny", ["loss.oth=0"])
    with pytest.raises(UserError, match=r"run: holds a finished run trained with other options \(loss.oth: 1.0 -> 0"):
        X.train_or_load(other, run.path, data, progress=False)


@pytest.mark.parametrize("preset", ["tiny", "quick", "standard", "full"])
def test_expression_only_baseline_is_trained_by_the_classification_loss_alone(preset):
    from facefactors.experiments.ufe import expression_only_config
    from facefactors.train.ufe import UFERecipe
    from facefactors.train.ufe_losses import dis_weight, ufe_losses

    # A config that adds every loss the paper does not have must still give a plain classifier.
    extra = ["loss.independence=0.3", "loss.independence_whiten=true", "loss.history=4", "loss.saturation=0.1", "loss.cross=1", "loss.adversary_fit=true", "loss.perceptual=30",
             "loss.perceptual_identity=10", "loss.perceptual_classes=1", "loss.twin=30", "data.twins=pose"]
    cfg = expression_only_config(preset, extra)
    assert cfg.model.attributes == ["expression"] and cfg.loss.cls == 1.0
    assert cfg.loss.twin == 0 and cfg.data.twins == []
    if preset != "tiny":  # the presets' own extra losses are off too
        assert [cfg.loss.con, cfg.loss.rec, cfg.loss.oth, cfg.loss.dis, cfg.loss.cross, cfg.loss.independence, cfg.loss.perceptual] == [0.0] * 7
        return
    assert cfg.loss.perceptual == cfg.loss.perceptual_identity == cfg.loss.perceptual_classes == 0.0
    data = synthetic_set()
    recipe = UFERecipe(cfg, data.description.restrict(["expression"], "expression-only"))
    batch = data.subset(torch.arange(8))
    features = recipe.model.encode(batch.images.float() / 255)
    assert set(features) == {"expression", "others"}
    # identity's labels are in the batch, as in training: L_ind would use them if it were on.
    labels = {"identity": batch.labels["identity"], "expression": batch.labels["expression"]}
    total, terms = ufe_losses(recipe.model, batch.images.float() / 255, labels, recipe.loss_config(10**6), dis_weight(10**6, 10**6, cfg.loss), history=recipe.history)
    assert set(terms) == {"cls"} and torch.isclose(total, terms["cls"])


def test_adversary_heads_get_their_own_learning_rate():
    from facefactors.train.ufe import UFERecipe

    cfg = load_config(UFETrainConfig, "ufe", "tiny")
    recipe = UFERecipe(cfg, synthetic_set().description)
    (group,) = recipe.configure_optimizers().param_groups  # the paper: one learning rate
    assert group["lr"] == cfg.optim.lr
    cfg.loss.adversary_lr = 10.0
    recipe = UFERecipe(cfg, synthetic_set().description)
    rest, heads = recipe.configure_optimizers().param_groups
    assert rest["lr"] == cfg.optim.lr and heads["lr"] == 10 * cfg.optim.lr
    head_ids = {id(p) for p in [*recipe.model.others_heads.parameters(), *recipe.model.cross_heads.parameters()]}
    assert {id(p) for p in heads["params"]} == head_ids and len(head_ids) > 0
    assert len(rest["params"]) + len(heads["params"]) == len(list(recipe.model.parameters()))


def test_cosine_schedule_decays_every_parameter_group_and_bad_schedules_are_refused():
    from facefactors.train.ufe import UFERecipe

    cfg = load_config(UFETrainConfig, "ufe", "tiny", ["optim.schedule=cosine", "optim.decay_start=0.5", "optim.final_lr_scale=0.1", "loss.adversary_lr=10", "trainer.max_steps=10"])
    recipe = UFERecipe(cfg, synthetic_set().description)
    chosen = recipe.configure_optimizers()
    opt, sched = chosen["optimizer"], chosen["lr_scheduler"]["scheduler"]
    assert chosen["lr_scheduler"]["interval"] == "step"
    for _ in range(10):
        opt.step()
        sched.step()
    rest, heads = opt.param_groups  # both groups end at a tenth of their own rate
    assert rest["lr"] == pytest.approx(0.1 * cfg.optim.lr) and heads["lr"] == pytest.approx(0.1 * 10 * cfg.optim.lr)
    with pytest.raises(UserError, match="optim.schedule"):
        UFERecipe(load_config(UFETrainConfig, "ufe", "tiny", ["optim.schedule=step"]), synthetic_set().description)


@pytest.mark.parametrize("option", ["con_weights", "con_positive_weights", "independence_weights"])
def test_per_attribute_weights_must_name_attributes_of_the_data(option):
    from facefactors.train.ufe import UFERecipe

    cfg = load_config(UFETrainConfig, "ufe", "tiny", [f"loss.{option}={{identity: 2}}"])
    assert getattr(UFERecipe(cfg, synthetic_set().description).cfg.loss, option) == {"identity": 2}
    cfg = load_config(UFETrainConfig, "ufe", "tiny", [f"loss.{option}={{identiy: 2}}"])
    with pytest.raises(UserError, match=rf"loss.{option} names \['identiy'\], not attributes"):
        UFERecipe(cfg, synthetic_set().description)
    cfg = load_config(UFETrainConfig, "ufe", "tiny", [f"loss.{option}={{identity: -1}}"])
    with pytest.raises(UserError, match=rf"loss.{option} has factors below 0 \({{'identity': -1}}\)"):
        UFERecipe(cfg, synthetic_set().description)


@pytest.mark.parametrize("option", ["independence_pair_weights", "independence_unwhitened_pairs"])
def test_independence_pair_options_name_a_subspace_and_another_label(option):
    from facefactors.train.ufe import UFERecipe

    cfg = load_config(UFETrainConfig, "ufe", "tiny", [f"loss.{option}={{others/identity: 10}}"])
    assert getattr(UFERecipe(cfg, synthetic_set().description).cfg.loss, option) == {"others/identity": 10}
    for key in ("others/pose", "identity/identity", "identity"):  # no such label; no term of its own label; no pair
        cfg = load_config(UFETrainConfig, "ufe", "tiny", [f"loss.{option}={{{key}: 10}}"])
        with pytest.raises(UserError, match=rf"loss.{option} names \['{key}'\], not terms of L_ind; a term is 'subspace/label'"):
            UFERecipe(cfg, synthetic_set().description)
    cfg = load_config(UFETrainConfig, "ufe", "tiny", [f"loss.{option}={{others/identity: -1}}"])
    with pytest.raises(UserError, match=f"loss.{option} has factors below 0"):
        UFERecipe(cfg, synthetic_set().description)


def test_independence_loss_waits_for_its_warm_up():
    from facefactors.train.ufe import UFERecipe

    cfg = load_config(UFETrainConfig, "ufe", "tiny", ["loss.independence=0.5", "loss.independence_warmup_steps=3"])
    recipe = UFERecipe(cfg, synthetic_set().description)
    assert [recipe.loss_config(s).independence for s in range(5)] == [0.0, 0.0, 0.0, 0.5, 0.5]
    assert recipe.cfg.loss.independence == 0.5  # the run's config is not changed


def test_history_switches_without_a_history_are_refused():
    from facefactors.train.ufe import UFERecipe

    desc = synthetic_set().description
    for overrides, needle in (
        (["loss.independence=0.3", "loss.independence_whiten=true", "loss.history=0"], "loss.independence_whiten"),
        (["loss.adversary_fit=true", "loss.history=0"], "loss.adversary_fit"),
        (["loss.history=-1"], "loss.history"),
        (["loss.whiten_std_floor=-0.1"], "loss.whiten_std_floor"),
        (["loss.dis_pairs=-1"], "loss.dis_pairs"),
        (["loss.dis_every=0"], "loss.dis_every"),
    ):
        cfg = load_config(UFETrainConfig, "ufe", "tiny", overrides)
        with pytest.raises(UserError, match=needle) as err:
            UFERecipe(cfg, desc)
        assert "\n" not in str(err.value)
    # Whitening switched on but L_ind off needs no history; nor does the paper's form.
    UFERecipe(load_config(UFETrainConfig, "ufe", "tiny", ["loss.independence_whiten=true"]), desc)


def test_rec_feature_factors_must_name_features_of_the_model():
    from facefactors.train.ufe import UFERecipe

    desc = synthetic_set().description
    UFERecipe(load_config(UFETrainConfig, "ufe", "tiny", ["loss.rec_feature_factors={others: 0.5}"]), desc)
    cfg = load_config(UFETrainConfig, "ufe", "tiny", ["loss.rec_feature_factors={poes: 0}"])
    with pytest.raises(UserError, match=r"loss.rec_feature_factors names \['poes'\], not features") as err:
        UFERecipe(cfg, desc)
    assert "\n" not in str(err.value)


def test_the_train_command_says_which_units_it_pinned(tmp_path, capsys):
    from facefactors.cli.main import main

    main(["ufe", "train", "--preset", "tiny", "--out", str(tmp_path / "run"), "--set", "model.pin_idle_std=0.05", "--no-evaluate"])
    pinned = json.loads((tmp_path / "run" / "metrics.json").read_text())["pinned"]
    said = capsys.readouterr().err
    assert "idle units pinned (spread <= 0.05" in said
    flat = "".join(said.split())  # rich wraps long lines wherever a space falls
    for name, coords in pinned.items():
        assert "".join(f"{name} {coords}".split()) in flat


def test_checkpoint_weights_script_reads_a_run_halfway(tmp_path):
    import importlib.util
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("ufe_checkpoint_weights", root / "scripts" / "ufe_checkpoint_weights.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    cfg = load_config(UFETrainConfig, "ufe", "tiny", ["trainer.max_steps=2"])
    data = synthetic_set()
    run, _ = train_ufe(cfg, tmp_path / "run", GroupedBatches(data, "identity", 3, 2), data.description)
    assert script.checkpoint_weights(run.path, tmp_path / "half") == 2
    # Independently: the checkpoint's own tensors, loaded here, are the halfway model's.
    state = torch.load(run.last_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    model = load_ufe(tmp_path / "half")
    own = model.state_dict()
    assert own and all(torch.equal(v, state["model." + k]) for k, v in own.items())
    assert model.encode(data.batch([0, 1])["image"])["identity"].shape == (2, cfg.model.feature_dim)

    # bad input: one line naming the file, nothing written
    res = subprocess.run([sys.executable, str(root / "scripts" / "ufe_checkpoint_weights.py"), str(tmp_path / "nothing"), str(tmp_path / "out")], capture_output=True, text=True)
    assert res.returncode == 2 and "last.ckpt: no checkpoint" in res.stderr and "Traceback" not in res.stderr
    run.last_checkpoint.write_bytes(run.last_checkpoint.read_bytes()[:1000])  # truncated
    with pytest.raises(UserError, match=r"last\.ckpt: not a readable training checkpoint"):
        script.checkpoint_weights(run.path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
