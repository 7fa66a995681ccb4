"""Counterfactual twins and L_twin (not in the UFE paper): render_twins, twin_loss, the recipe."""

import pytest
import torch

from facefactors.config import load_config
from facefactors.train.ufe import UFEDataConfig, UFETrainConfig, train_ufe
from facefactors.train.ufe_data import (
    FaceTensorSet,
    GroupedBatches,
    render_twins,
    render_world_set,
    world_a_config,
)
from facefactors.train.ufe_losses import (
    FeatureHistory,
    UFELossConfig,
    twin_loss,
    twin_whitening,
    ufe_losses,
)
from facefactors.utils.errors import ConfigError, UserError
from test_ufe_losses import tiny_model


def small_train_set(n=3, m=4):
    cfg = world_a_config(UFEDataConfig(world_seed=3, yaw_domains=[0.0, 30.0], nir_probability=0.5), image_size=32)
    return cfg, render_world_set(cfg, "train", n, m, progress=False)


def test_a_pose_twin_is_its_image_in_the_other_pose_and_nothing_else(tmp_path):
    from facefactors.world.world import FaceWorld

    wcfg, data = small_train_set()
    twins = render_twins(wcfg, data, "pose", cache=tmp_path, progress=False)
    assert twins.shape == data.images.shape and twins.dtype == torch.uint8
    world = FaceWorld(wcfg)
    params = world.sample_params(data.index, "train", identities=data.labels["identity"])
    # Independently: flip the yaw bucket by hand, keep the pose's own jitter (yaw offset, pitch,
    # roll) and every other field, render.
    offset = params.pose[:, 0] - torch.tensor(wcfg.yaw_buckets)[params.pose_bucket]
    flipped = 1 - params.pose_bucket
    pose = params.pose.clone()
    pose[:, 0] = torch.tensor(wcfg.yaw_buckets)[flipped] + offset
    expected = world.render(params.replace(pose=pose, pose_bucket=flipped))
    assert (expected.image * 255 - twins.float()).abs().max() <= 1.0
    assert torch.equal(expected.labels["pose"], 1 - data.labels["pose"])
    for label in ("identity", "expression", "lighting", "camera"):
        assert torch.equal(expected.labels[label], data.labels[label])
    assert (twins.float() - data.images.float()).abs().mean() > 1.0  # a turned head is another picture
    # From the cache the same array; a twin of another factor is another file.
    assert torch.equal(render_twins(wcfg, data, "pose", cache=tmp_path, progress=False), twins)
    lighting = render_twins(wcfg, data, "lighting", cache=tmp_path, progress=False)
    assert len(list(tmp_path.glob("twins_*.npy"))) == 2 and not torch.equal(lighting, twins)


def test_a_twin_takes_another_class_of_a_many_class_factor():
    wcfg, data = small_train_set(n=4, m=5)
    twins = render_twins(wcfg, data, "expression", progress=False, seed=1)
    # every twin differs from its image (each took a class other than its own), and the seed
    # chooses which other class
    assert ((twins.float() - data.images.float()).abs().flatten(1).amax(1) > 0).all()
    assert not torch.equal(twins, render_twins(wcfg, data, "expression", progress=False, seed=2))


def twin_people(wcfg, data, twins, people):
    """Independently of render_twins: for each image, which of the split's first ``people``
    people, rendered in the image's own draw, is its twin (asserting one is); and that pose,
    expression, lighting, camera, eyeglasses and background are the image's own."""
    from facefactors.world.world import FaceWorld

    world = FaceWorld(wcfg)
    candidates = [world.render(world.sample_params(data.index, "train", identities=torch.full_like(data.index, person))) for person in range(people)]
    errors = torch.stack([(c.image * 255 - twins.float()).abs().flatten(1).amax(1) for c in candidates])  # (people, N)
    assert (errors.amin(0) <= 1.0).all()
    person = errors.argmin(0)
    own = world.sample_params(data.index, "train", identities=data.labels["identity"])
    twin = world.sample_params(data.index, "train", identities=person)
    for field in ("pose", "expression_weights", "light", "camera", "eyeglasses", "background"):
        assert torch.equal(getattr(twin, field), getattr(own, field)), field
    assert not torch.equal(twin.albedo, own.albedo)
    return person


def test_an_identity_twin_is_another_person_of_the_set_in_the_same_draw():
    wcfg, data = small_train_set(n=3, m=4)
    twins = render_twins(wcfg, data, "identity", progress=False)
    # each twin is another person of the set, in the image's draw
    person = twin_people(wcfg, data, twins, 3)
    assert (person != data.labels["identity"]).all()
    assert len(set(person.tolist())) > 1  # which other person is drawn, not always the next


def test_a_face_twin_is_another_person_with_the_image_s_own_hair_style():
    from facefactors.world.world import FaceWorld

    wcfg, data = small_train_set(n=3, m=4)
    twins = render_twins(wcfg, data, "face", progress=False)
    # Independently: each of the set's people rendered in the image's draw with the image's own
    # hair style put back by hand; the twin is one of them, never the image's own person.
    world = FaceWorld(wcfg)
    own = world.sample_params(data.index, "train", identities=data.labels["identity"])
    candidates = []
    for person in range(3):
        p = world.sample_params(data.index, "train", identities=torch.full_like(data.index, person))
        p.hair[:] = own.hair
        candidates.append(world.render(p).image * 255)
    errors = torch.stack([(c - twins.float()).abs().flatten(1).amax(1) for c in candidates])  # (people, N)
    assert (errors.amin(0) <= 1.0).all()
    assert (errors.argmin(0) != data.labels["identity"]).all()
    # the hair is the image's, not the other person's: an identity twin of the same draw differs
    identity_twins = render_twins(wcfg, data, "identity", progress=False)
    assert (identity_twins.float() - twins.float()).abs().flatten(1).amax(1).gt(1).any()


def test_a_face_twin_holds_others_still():
    f = {"identity": torch.zeros(2, 4), "pose": torch.zeros(2, 4), "others": torch.zeros(2, 4), "expression": torch.zeros(2, 2)}
    g = {"identity": torch.ones(2, 4), "pose": torch.full((2, 4), 0.5), "others": torch.ones(2, 4), "expression": torch.ones(2, 2)}
    # the person (identity) may change, the hair style may not: pose 0.25, others 1, expression 1
    assert torch.isclose(twin_loss(f, g, "face"), torch.tensor(0.75))


def test_a_person_twin_is_an_identity_twin_that_holds_others_still(tmp_path):
    from facefactors.world.identity import A as ALBEDO_INDEX
    from facefactors.world.world import FaceWorld

    wcfg, data = small_train_set(n=3, m=4)
    identity_twins = render_twins(wcfg, data, "identity", cache=tmp_path, progress=False)
    # the same images from the same cache file: one render serves both
    assert torch.equal(render_twins(wcfg, data, "person", cache=tmp_path, progress=False), identity_twins)
    assert len(list(tmp_path.glob("twins_*.npy"))) == 1
    assert torch.equal(render_twins(wcfg, data, "person", progress=False), identity_twins)
    # Independently: the twin's hair is its own person's hair plus the image's own offset, the
    # part "others" may keep (world.py draws both volume and length that way, HAIR_SPREAD).
    world = FaceWorld(wcfg)
    person = twin_people(wcfg, data, identity_twins, 3)
    own = world.sample_params(data.index, "train", identities=data.labels["identity"])
    twin = world.sample_params(data.index, "train", identities=person)
    inside = (own.hair[:, :2] > 0) & (own.hair[:, :2] < 1) & (twin.hair[:, :2] > 0) & (twin.hair[:, :2] < 1)  # unclamped
    mean = [ALBEDO_INDEX["hair_volume"], ALBEDO_INDEX["hair_length"]]
    offset_own = own.hair[:, :2] - own.albedo[:, mean]
    offset_twin = twin.hair[:, :2] - twin.albedo[:, mean]
    assert inside.any() and torch.allclose(offset_own[inside], offset_twin[inside], atol=1e-6)
    assert torch.equal(own.hair[:, 2:], twin.hair[:, 2:])  # the fringe and the parting are the image's
    # the loss: identity may change, "others" may not (an identity twin leaves it free)
    f = {"identity": torch.zeros(2, 4), "pose": torch.zeros(2, 4), "others": torch.zeros(2, 4), "expression": torch.zeros(2, 2)}
    g = {"identity": torch.ones(2, 4), "pose": torch.full((2, 4), 0.5), "others": torch.ones(2, 4), "expression": torch.ones(2, 2)}
    assert torch.isclose(twin_loss(f, g, "person"), torch.tensor(0.75))
    assert torch.isclose(twin_loss(f, g, "identity"), torch.tensor(0.625))


def test_twins_of_a_restricted_set_are_the_twins_of_the_whole_set():
    # training restricts world A to its labelled factors before twins are rendered (train_stream):
    # the twin's class comes from the world, so a set that keeps only identity renders the same
    wcfg, data = small_train_set(n=2, m=4)
    only_identity = data.restrict(["identity"], "ids")
    assert (only_identity.labels["pose"] < 0).all()
    assert torch.equal(render_twins(wcfg, only_identity, "pose", progress=False), render_twins(wcfg, data, "pose", progress=False))
    with pytest.raises(ConfigError, match="'identity' labels"):
        render_twins(wcfg, data.restrict(["pose"]), "pose", progress=False)


def test_only_training_renders_the_twins(tmp_path):
    from facefactors.experiments.ufe import train_stream, world_a_sets

    cfg = load_config(UFETrainConfig, "ufe", "tiny", ["loss.twin=3", "data.twins=pose", "data.train_identities=3", "data.images_per_identity=4",
                                                      "data.test_identities=1", "data.test_images_per_identity=2", f"data.cache={tmp_path}"])
    train, test = world_a_sets(cfg, progress=False)
    assert train.twins is None and test.twins is None  # an evaluation never pays for them
    stream, _ = train_stream(cfg, train, progress=False)
    batch = next(iter(stream))
    assert list(batch["twins"]) == ["pose"] and batch["twins"]["pose"].shape == batch["image"].shape
    twins = render_twins(world_a_config(cfg.data, cfg.model.image_size), train, "pose", progress=False, seed=cfg.data.world_seed)
    assert torch.equal(batch["twins"]["pose"], twins[batch["index"]].float() / 255)
    assert len(list(tmp_path.glob("twins_pose_*.npy"))) == 1
    # options that training would refuse are refused before any twin is rendered
    cfg.loss.twin, cfg.data.twins = 0.0, ["identity"]
    with pytest.raises(UserError, match="only loss.twin uses"):
        train_stream(cfg, train, progress=False)
    assert not list(tmp_path.glob("twins_identity_*.npy"))


def test_twins_refuse_what_they_cannot_render():
    wcfg, data = small_train_set(n=1, m=2)
    with pytest.raises(ConfigError, match="each factor one of"):
        render_twins(wcfg, data, "camera", progress=False)
    with pytest.raises(ConfigError, match="sample index"):
        render_twins(wcfg, FaceTensorSet(data.images, {}, data.description), "pose", progress=False)


def test_twin_loss_hand_value_gradient_and_the_changed_subspace_left_free():
    f = {"identity": torch.zeros(2, 4), "pose": torch.zeros(2, 4), "others": torch.zeros(2, 4, requires_grad=True)}
    g = {"identity": torch.zeros(2, 4), "pose": torch.ones(2, 4), "others": torch.full((2, 4), 0.5)}
    # identity: 0; others: (4 * 0.25) / 4 = 0.25 per image; pose is the changed factor: not counted
    loss = twin_loss(f, g, "pose")
    assert torch.isclose(loss, torch.tensor(0.125))
    loss.backward()
    assert torch.allclose(f["others"].grad, torch.full((2, 4), -0.5 / 2 / 4 / 2 * 2))  # d/df of mean_i sum_d (f-g)^2 / D / 2 subspaces
    assert twin_loss(g, g, "pose") == 0
    with pytest.raises(ValueError, match="no subspace"):
        twin_loss({"pose": f["pose"]}, {"pose": g["pose"]}, "pose")


def test_an_identity_twin_leaves_identity_and_others_free():
    f = {"identity": torch.zeros(2, 4), "pose": torch.zeros(2, 4), "others": torch.zeros(2, 4), "expression": torch.zeros(2, 2)}
    g = {"identity": torch.ones(2, 4), "pose": torch.full((2, 4), 0.5), "others": torch.ones(2, 4), "expression": torch.ones(2, 2)}
    # another person may change the identity feature and "others" (the hair follows the person);
    # pose: 4 * 0.25 / 4 = 0.25, expression: 2 * 1 / 2 = 1, mean 0.625
    assert torch.isclose(twin_loss(f, g, "identity"), torch.tensor(0.625))
    # a pose twin holds all but pose: identity 1, others 1, expression 1
    assert torch.isclose(twin_loss(f, g, "pose"), torch.tensor(1.0))


def test_twin_whitening_charges_each_direction_by_its_inverse_variance():
    # Samples with independent coordinates of standard deviations 0.5 and 0.05 (exactly: a
    # +-s design whose covariance is diagonal), so the map is diagonal with known entries.
    signs = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]]).repeat(8, 1)
    s = torch.tensor([0.5, 0.05])
    kept = 0.5 + signs * s
    eps = 0.1
    variance = signs.var(0) * s**2  # torch's unbiased variance of the design
    mean = variance.mean()
    expected = torch.diag(mean.sqrt() / (variance + eps * mean).sqrt())
    W = twin_whitening(kept, eps)
    assert torch.allclose(W.float(), expected, atol=1e-6)
    # an offset of 0.01 along the quiet direction now costs more than along the loud one, not the
    # same: 100x by the variances, 17.8x with the ridge (0.1 of the mean variance) added to both;
    # an isotropic feature keeps its plain distance up to the ridge
    along = {d: {"others": torch.zeros(1, 2), "pose": torch.zeros(1, 2)} for d in (0, 1)}
    twins = {d: {"others": torch.zeros(1, 2).index_fill_(1, torch.tensor([d]), 0.01), "pose": torch.ones(1, 2)} for d in (0, 1)}
    loud, quiet = (float(twin_loss(along[d], twins[d], "pose", {"others": W})) for d in (0, 1))
    assert quiet / loud == pytest.approx(float((variance[0] + eps * mean) / (variance[1] + eps * mean)), rel=1e-5)
    assert 17 < quiet / loud < 18.5
    round_kept = torch.randn(4000, 3, generator=torch.Generator().manual_seed(0)) * 0.2
    plain = twin_loss(along[0] | {"others": torch.zeros(1, 3)}, {"others": torch.full((1, 3), 0.1), "pose": torch.ones(1, 2)}, "pose")
    whitened = twin_loss(along[0] | {"others": torch.zeros(1, 3)}, {"others": torch.full((1, 3), 0.1), "pose": torch.ones(1, 2)}, "pose",
                         {"others": twin_whitening(round_kept, eps)})
    assert float(whitened) == pytest.approx(float(plain) / (1 + eps), rel=0.1)


def test_twin_whitening_strength_moves_the_squared_distance_linearly_from_plain_to_whitened():
    g = torch.Generator().manual_seed(1)
    kept = torch.rand(64, 5, generator=g) * torch.tensor([1.0, 0.5, 0.1, 0.05, 0.02])  # anisotropic
    full = twin_whitening(kept, 0.05)
    d = torch.randn(7, 5, generator=g).double()
    plain, whitened = (d**2).sum(1), ((d @ full) ** 2).sum(1)
    assert not torch.allclose(plain, whitened, rtol=0.1)
    for s in (0.0, 0.25, 0.5, 0.9):
        M = twin_whitening(kept, 0.05, strength=s)
        assert torch.allclose(M, M.T, atol=1e-10)
        assert torch.allclose(((d @ M) ** 2).sum(1), (1 - s) * plain + s * whitened, rtol=1e-8)
    assert torch.allclose(twin_whitening(kept, 0.05, strength=0.0), torch.eye(5, dtype=torch.float64), atol=1e-10)
    assert torch.equal(twin_whitening(kept, 0.05, strength=1.0), full)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        twin_whitening(kept, 0.05, strength=1.5)


def test_l_twin_whitens_with_the_kept_batches_once_they_exist():
    torch.manual_seed(0)
    model = tiny_model()
    x, twin = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
    labels = {"identity": torch.tensor([0, 0, 1, 1]), "expression": torch.tensor([0, 1, 0, 1])}
    cfg = UFELossConfig(twin=1.0, twin_whiten=["identity", "expression", "others"], history=4, whiten_eps=0.1)
    history = FeatureHistory(4)
    with torch.no_grad():
        fx, ft = model.encode(x), model.encode(twin)
    _, first = ufe_losses(model, x, labels, cfg, 0.0, history=history, twins={"expression": twin})
    assert torch.isclose(first["twin"], twin_loss(fx, ft, "expression"), atol=1e-6)  # nothing kept yet: plain
    for _ in range(2):
        _, terms = ufe_losses(model, x, labels, cfg, 0.0, history=history, twins={"expression": twin})
    # the history held two copies of this batch's features when the third call measured
    kept = {n: torch.cat([f, f]) for n, f in fx.items()}
    expected = twin_loss(fx, ft, "expression", {n: twin_whitening(kept[n], 0.1) for n in ("identity", "others")})  # expression: changed
    assert torch.isclose(terms["twin"], expected, rtol=1e-4)
    assert not torch.isclose(terms["twin"], first["twin"], rtol=1e-2)
    # only the subspaces named are whitened
    only = UFELossConfig(twin=1.0, twin_whiten=["others"], history=4, whiten_eps=0.1)
    _, some = ufe_losses(model, x, labels, only, 0.0, history=history, twins={"expression": twin})
    kept = {n: torch.cat([f, f, f]) for n, f in fx.items()}
    assert torch.isclose(some["twin"], twin_loss(fx, ft, "expression", {"others": twin_whitening(kept["others"], 0.1)}), rtol=1e-4)
    # a part of the whitening: L_twin halfway between the plain and the fully whitened term
    half = UFELossConfig(twin=1.0, twin_whiten=["others"], twin_whiten_strength={"others": 0.5}, history=4, whiten_eps=0.1)
    _, mixed = ufe_losses(model, x, labels, half, 0.0, history=history, twins={"expression": twin})
    kept = {n: torch.cat([f, f, f, f]) for n, f in fx.items()}
    whitened = twin_loss(fx, ft, "expression", {"others": twin_whitening(kept["others"], 0.1)})
    assert torch.isclose(mixed["twin"], (twin_loss(fx, ft, "expression") + whitened) / 2, rtol=1e-4)


def test_ufe_losses_add_l_twin_only_with_twins():
    torch.manual_seed(0)
    model = tiny_model()
    x, twin = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
    labels = {"identity": torch.tensor([0, 0, 1, 1]), "expression": torch.tensor([0, 1, 0, 1])}
    cfg = UFELossConfig(twin=2.0)
    total, terms = ufe_losses(model, x, labels, cfg, 0.0, twins={"expression": twin})
    plain, plain_terms = ufe_losses(model, x, labels, UFELossConfig(), 0.0)
    assert "twin" in terms and "twin" not in plain_terms
    with torch.no_grad():
        fx, ft = model.encode(x), model.encode(twin)
    expected = twin_loss(fx, ft, "expression")
    assert torch.isclose(terms["twin"], expected, atol=1e-6)
    assert torch.isclose(total, plain + 2.0 * expected, atol=1e-5)
    # two factors: the mean of their terms
    other = torch.rand(4, 3, 32, 32)
    _, both = ufe_losses(model, x, labels, cfg, 0.0, twins={"expression": twin, "identity": other})
    with torch.no_grad():
        expected_identity = twin_loss(fx, model.encode(other), "identity")
    assert torch.isclose(both["twin"], (expected + expected_identity) / 2, atol=1e-6)
    # a factor on one twin set's term, before the mean
    weighted = UFELossConfig(twin=2.0, twin_factor_weights={"identity": 4.0})
    _, scaled = ufe_losses(model, x, labels, weighted, 0.0, twins={"expression": twin, "identity": other})
    assert torch.isclose(scaled["twin"], (expected + 4.0 * expected_identity) / 2, atol=1e-6)
    _, no_twins = ufe_losses(model, x, labels, cfg, 0.0)  # a world-B batch (sec. 4.7) has none
    assert "twin" not in no_twins


def test_a_tiny_run_trains_with_twins_and_the_options_must_agree(tmp_path):
    wcfg, data = small_train_set(n=3, m=4)
    data.twins = {f: render_twins(wcfg, data, f, progress=False) for f in ("pose", "identity")}
    train = data.restrict(["identity", "expression", "lighting", "pose"], "world-a")
    assert train.twins is data.twins and torch.equal(train.batch([1, 2])["twins"]["identity"], data.twins["identity"][[1, 2]].float() / 255)
    assert torch.equal(train.subset([3, 0]).twins["pose"], data.twins["pose"][[3, 0]])
    cfg = load_config(UFETrainConfig, "ufe", "tiny", ["loss.twin=3", "data.twins=pose,identity", "trainer.log_every_n_steps=1"])
    assert cfg.data.twins == ["pose", "identity"]
    stream = GroupedBatches(train, "identity", cfg.data.identities_per_batch, cfg.data.images_per_batch_identity)
    run, _ = train_ufe(cfg, tmp_path / "run", stream, train.description)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run.path / "tb"))
    events.Reload()
    assert "loss_twin" in events.Tags()["scalars"] and events.Scalars("loss_twin")[0].value > 0
    for overrides, message in ((["loss.twin=3"], "needs twins"), (["data.twins=pose"], "only loss.twin uses"), (["loss.twin=-1"], ">= 0"),
                               (["loss.twin=3", "data.twins=pose,camera"], "each factor once"), (["loss.twin=3", "data.twins=pose,pose"], "each factor once"),
                          (["loss.twin=3", "data.twins=pose", "loss.twin_factor_weights={face: 4}"], r"names \['face'\], not twin sets"),
                          (["loss.twin=3", "data.twins=pose", "loss.twin_factor_weights={pose: -1}"], "below 0"),
                          (["loss.twin=3", "data.twins=pose", "loss.twin_whiten=others", "loss.history=0"], "loss.twin_whiten needs recent batches"),
                          (["loss.twin=3", "data.twins=pose", "loss.twin_whiten=others,hair", "loss.history=4"], r"names \['hair'\], not subspaces"),
                          (["loss.twin=3", "data.twins=pose", "loss.twin_whiten=others", "loss.history=4", "loss.twin_whiten_strength={identity: 0.5}"],
                           r"names \['identity'\], which loss.twin_whiten"),
                          (["loss.twin=3", "data.twins=pose", "loss.twin_whiten=others", "loss.history=4", "loss.twin_whiten_strength={others: 2}"], r"outside \[0, 1\]")):
        with pytest.raises(UserError, match=message):
            train_ufe(load_config(UFETrainConfig, "ufe", "tiny", overrides), tmp_path / "bad", stream, train.description)
    assert not (tmp_path / "bad").exists()  # refused before the run directory is written


@pytest.mark.parametrize("preset", ["tiny", "quick", "standard", "full"])
def test_every_preset_pairs_l_twin_with_its_twins(preset):
    from facefactors.train.ufe import check_twins

    cfg = load_config(UFETrainConfig, "ufe", preset)
    check_twins(cfg)  # a preset with L_twin and no twins (or the reverse) would fail only at train time
    # the standard preset trains with pose twins (docs/results.md, "Counterfactual twins"); the
    # demo's quick preset and the paper's full one without
    assert (cfg.data.twins, cfg.loss.twin) == ((["pose"], 30.0) if preset == "standard" else ([], 0.0))
    off = load_config(UFETrainConfig, "ufe", preset, ["data.twins=", "loss.twin=0"])  # the change table's way back
    check_twins(off)
    assert (off.data.twins, off.loss.twin) == ([], 0.0)



def test_an_unseen_identity_twin_is_a_person_of_the_split_outside_the_set():
    import dataclasses

    wcfg, _ = small_train_set()
    wcfg = dataclasses.replace(wcfg, train_identities=6)  # the split: people 0..5; the set: 0..2
    data = render_world_set(wcfg, "train", 3, 4, progress=False)
    twins = render_twins(wcfg, data, "unseen_identity", progress=False)
    # each twin is one of the split's people outside the set (3, 4, 5; never the set's 0..2), in
    # the image's draw, and not always the same one
    person = twin_people(wcfg, data, twins, 6)
    assert (person >= 3).all() and len(set(person.tolist())) > 1
    # L_twin leaves the same subspaces free as for a twin of the set
    f = {"identity": torch.zeros(2, 4), "others": torch.zeros(2, 4), "expression": torch.zeros(2, 2)}
    g = {"identity": torch.ones(2, 4), "others": torch.ones(2, 4), "expression": torch.ones(2, 2)}
    assert torch.isclose(twin_loss(f, g, "unseen_identity"), torch.tensor(1.0))
    # a set that holds the whole split has nobody unseen
    everyone = render_world_set(wcfg, "train", 6, 1, progress=False)
    with pytest.raises(ConfigError, match="holds every person"):
        render_twins(wcfg, everyone, "unseen_identity", progress=False)


@pytest.mark.parametrize("command", [["ufe", "train"], ["ufe", "experiment", "world_a"]])
def test_a_bad_twin_option_is_refused_before_rendering(command, tmp_path, capsys):
    from facefactors.cli.main import main

    cache = tmp_path / "cache"
    argv = [*command, "--preset", "tiny", "--out", str(tmp_path / "run"), "--set", f"data.cache={cache}", "--set", "loss.twin=3"]
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "needs twins to compare" in err and "Traceback" not in err
    assert not cache.exists() and not any((tmp_path / "run").rglob("*"))  # nothing rendered, nothing written


@pytest.mark.parametrize(("command", "message"), [
    (["ufe", "experiment", "composites", "--no-full"], "--no-full leaves the full model out of an ablation"),
    (["ufe", "experiment", "ablation", "--no-full", "--run", "runs/full"], "--run names the full model"),
])
def test_no_full_outside_an_ablation_or_with_run_is_refused_in_one_line_before_rendering(command, message, tmp_path, capsys):
    from facefactors.cli.main import main

    cache = tmp_path / "cache"
    with pytest.raises(SystemExit) as e:
        main([*command, "--preset", "tiny", "--out", str(tmp_path / "run"), "--set", f"data.cache={cache}"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err
    assert not cache.exists()
