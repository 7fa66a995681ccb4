"""The face world: shapes, ranges, determinism, labels, interventions, clips, expression flow,
landmarks, label-disjoint descriptions, ground-truth sampler (issue 2, section 2)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from facefactors.utils.errors import ConfigError
from facefactors.world import EXPRESSIONS, FaceParams, FaceWorld, WorldConfig, samplers
from facefactors.world import expression as expr
from facefactors.world.ground_truth import WorldGroundTruth
from facefactors.world.identity import features
from facefactors.world.landmarks import canonical_landmarks
from facefactors.world.lighting import LIGHT_DIRECTIONS
from facefactors.world.seeding import uniform

SIZE = 32



@pytest.fixture(scope="module")
def world():
    return FaceWorld(
        WorldConfig(
            seed=3, image_size=SIZE, train_identities=50, val_identities=10, test_identities=10
        )
    )


@pytest.fixture(scope="module")
def batch(world):
    return world.sample(range(12), ground_truth=True)


def test_shapes_ranges_and_labels(world, batch):
    b = batch
    assert b.image.shape == (12, 3, SIZE, SIZE) and b.image.dtype == torch.float32
    assert 0 <= float(b.image.min()) and float(b.image.max()) <= 1
    assert b.landmarks.shape == (12, 68, 2)
    assert b.depth.shape == (12, 1, SIZE, SIZE) and b.albedo.shape == (12, 3, SIZE, SIZE)
    assert b.normal.shape == (12, 3, SIZE, SIZE) and b.mask.shape == (12, 1, SIZE, SIZE)
    on = b.mask > 0.5
    assert bool(((b.depth[on] > 0.9) & (b.depth[on] < 1.1)).all())  # Unsup3D's depth range
    assert torch.allclose(b.normal.norm(dim=1), torch.ones(12, SIZE, SIZE), atol=1e-4)
    assert 0 <= float(b.albedo.min()) and float(b.albedo.max()) <= 1
    desc = world.description
    assert set(b.labels) == set(desc.names)
    for f in desc.factors:
        v = b.labels[f.name]
        assert v.shape == (12,)
        if f.is_categorical:
            assert v.dtype == torch.long and bool(((v >= 0) & (v < f.num_classes)).all()), f.name
        else:
            assert v.dtype == torch.float32 and bool(torch.isfinite(v).all()), f.name


def test_sample_is_pure_function_of_seed_split_index(world):
    alone = world.sample([7])
    inside = world.sample([5, 6, 7, 8])
    assert torch.allclose(alone.image[0], inside.image[2], atol=1e-5)
    for k, v in alone.params.as_dict().items():
        assert torch.equal(v[0], inside.params.as_dict()[k][2]), k
    again = FaceWorld(dataclasses.replace(world.config)).sample([7])
    assert torch.equal(again.image, alone.image)
    other_seed = FaceWorld(dataclasses.replace(world.config, seed=4)).sample([7])
    assert not torch.allclose(other_seed.image, alone.image)
    other_split = world.sample([7], split="val")
    assert not torch.allclose(other_split.image, alone.image)


def test_identities_are_disjoint_across_splits(world):
    ids = {
        s: set(world.sample_params(range(200), s).identity.tolist())
        for s in ("train", "val", "test")
    }
    assert (
        not ids["train"] & ids["val"]
        and not ids["train"] & ids["test"]
        and not ids["val"] & ids["test"]
    )
    p = world.sample_params(range(200), "val")
    assert bool(((p.identity_label >= 0) & (p.identity_label < 10)).all())
    assert torch.equal(p.identity, p.identity_label + world.config.split_offset("val"))
    # the identity is a pure function of its id: same coefficients in any sample showing it
    q = world.sample_params([0, 1], "train", identities=[4, 4])
    assert torch.equal(q.shape[0], q.shape[1]) and torch.equal(q.albedo[0], q.albedo[1])
    assert torch.equal(q.shape[0], world.identity([4]).shape[0])


def test_identities_past_the_split_are_refused(world):
    # a local id past the split's end would be another split's person: a test face in training
    n = world.config.split_sizes()["val"]
    assert int(world.sample_params([0], "val", identities=[n - 1]).identity_label[0]) == n - 1
    with pytest.raises(ConfigError, match="outside the world's val split"):
        world.sample_params([0, 1], "val", identities=[0, n])
    with pytest.raises(ConfigError, match="outside"):
        world.sample_params([0], "val", identities=[-1])


def test_labels_agree_with_parameters(world):
    p = world.sample_params(range(300))
    lab = world.labels(p)
    assert torch.equal(lab["age"], (p.age_value * 3).long().clamp(0, 2))
    assert torch.equal(lab["gender"], (p.gender_value > 0.5).long())
    buckets = torch.tensor(world.config.yaw_buckets)
    assert torch.equal(lab["pose"], (p.pose[:, :1] - buckets).abs().argmin(1))
    assert bool(((lab["expression_intensity"] == 0) == (lab["expression"] == 0)).all())
    assert bool(((p.light[:, 2:] - LIGHT_DIRECTIONS[p.light_class]).abs() <= 0.061).all())
    # every class of every categorical factor occurs, roughly as often as the config says
    assert set(lab["expression"].tolist()) == set(range(len(EXPRESSIONS)))
    assert set(lab["lighting"].tolist()) == set(range(20))
    assert 0.1 < float(lab["eyeglasses"].float().mean()) < 0.4
    assert 0.3 < float(lab["gender"].float().mean()) < 0.7
    # the traits are visible in the coefficients they drive
    gz = p.shape[:, 2]  # jaw_square, biased by the gender-like trait
    assert float(torch.corrcoef(torch.stack([gz, p.gender_value]))[0, 1]) > 0.4


@pytest.mark.parametrize("factor", sorted(samplers.INTERVENABLE))
def test_intervention_changes_exactly_one_factor(world, factor):
    p = world.sample_params(range(16))
    q = samplers.intervene(world, p, factor, np.random.default_rng(0))
    owned = set(samplers.INTERVENABLE[factor])
    for name, v in p.as_dict().items():
        if name not in owned:
            assert torch.equal(v, getattr(q, name)), f"{factor} changed {name}"
    changed = {k for k, v in p.as_dict().items() if not torch.equal(v, getattr(q, k))}
    assert changed, factor
    la, lb = world.labels(p), world.labels(q)
    label_of = {"lighting": "lighting", "pose": "pose", "camera": "camera", "eyeglasses": "eyeglasses", "expression": "expression",
                "identity": "identity", "age": "age", "gender": "gender"}  # fmt: skip
    if factor in label_of:  # categorical factors always change class
        assert bool((la[label_of[factor]] != lb[label_of[factor]]).all()), factor


def test_lighting_intervention_leaves_background_pixels_alone(world):
    p = world.sample_params(range(6)).replace(noise=torch.zeros(6, 2))
    q = samplers.intervene(world, p, "lighting", np.random.default_rng(1))
    a, b = world.render(p), world.render(q)
    bg = a.coverage < 1e-6
    assert torch.allclose(
        a.image.expand(-1, 3, -1, -1)[bg.expand(-1, 3, -1, -1)], b.image[bg.expand(-1, 3, -1, -1)]
    )
    face = a.coverage > 0.99
    assert float((a.image - b.image).abs().mean(1, keepdim=True)[face].mean()) > 0.01


def test_clips_drift_smoothly(world):
    c = samplers.clip_params(world, "train", clip_index=2, length=12)
    assert len(set(c.identity.tolist())) == 1 and len(set(c.light_class.tolist())) == 1
    assert bool((c.background == c.background[0]).all())
    dyaw = (c.pose[1:] - c.pose[:-1]).abs()
    assert float(dyaw.max()) < 8.0
    dw = (c.expression_weights[1:] - c.expression_weights[:-1]).abs().max()
    assert float(dw) < 0.5
    imgs = world.render(c.replace(noise=torch.zeros(12, 2))).image
    step = (imgs[1:] - imgs[:-1]).abs().mean()
    other = world.render(world.sample_params(range(12)).replace(noise=torch.zeros(12, 2))).image
    assert float(step) < 0.5 * float((other[1:] - other[:-1]).abs().mean())


def test_expression_flow_round_trip_and_landmarks(world):
    p = world.sample_params(range(24))
    f = features(p.shape)
    neutral = canonical_landmarks(f)
    moved = expr.forward_points(neutral, p.expression_weights, f)
    back, gap, _ = expr.backward_points(moved, p.expression_weights, f)
    assert torch.allclose(back, neutral, atol=2e-4)
    assert float(gap.max()) == 0.0  # landmarks are on the lips, never inside the open mouth
    # the flow between two expressions carries landmarks of one onto the other
    q = samplers.intervene(world, p, "expression", np.random.default_rng(2))
    moved_b = expr.forward_points(neutral, q.expression_weights, f)
    flow = expr.canonical_flow(moved, p.expression_weights, q.expression_weights, f)
    assert torch.allclose(moved + flow, moved_b, atol=2e-4)


def test_expression_conventions():
    """Asymmetric, signed expectations: a smile lifts and widens the lip corners, surprise opens the
    mouth and raises the brows (y is down)."""
    w0 = FaceWorld(WorldConfig(seed=0))
    p = w0.sample_params([0]).replace(expression_weights=torch.zeros(1, len(expr.BLENDSHAPES)))
    f = features(p.shape)
    lm0 = expr.forward_points(canonical_landmarks(f), p.expression_weights, f)
    smile = torch.zeros(1, len(expr.BLENDSHAPES))
    smile[0, expr.W["smile"]] = 1
    lm = expr.forward_points(canonical_landmarks(f), smile, f)
    assert (
        float(lm[0, 48, 1]) < float(lm0[0, 48, 1]) - 0.02
        and float(lm[0, 54, 1]) < float(lm0[0, 54, 1]) - 0.02
    )
    assert float(lm[0, 48, 0]) < float(lm0[0, 48, 0]) and float(lm[0, 54, 0]) > float(lm0[0, 54, 0])
    surprise = expr.prototypes()[EXPRESSIONS.index("surprise")][None]
    lm = expr.forward_points(canonical_landmarks(f), surprise, f)
    assert float(lm[0, 66, 1] - lm[0, 62, 1]) > 0.07  # open mouth
    assert float(lm[0, 19, 1]) < float(lm0[0, 19, 1]) - 0.02  # raised brows


def test_landmarks_follow_the_face_in_the_image():
    w = FaceWorld(WorldConfig(seed=1, image_size=64))
    p = w.sample_params(range(8))
    p = p.replace(
        noise=torch.zeros(8, 2), eyeglasses=torch.zeros(8, dtype=torch.long), pose=p.pose * 0
    )
    b = w.render(p, ground_truth=True)
    lm = b.landmarks
    assert bool((lm.abs() < 1).all())
    # iBUG order: jaw left to right, eyes above the nose tip above the mouth above the chin
    assert bool((lm[:, 0, 0] < lm[:, 16, 0]).all()) and bool((lm[:, 36, 0] < lm[:, 45, 0]).all())
    assert (
        bool((lm[:, 37, 1] < lm[:, 30, 1]).all())
        and bool((lm[:, 30, 1] < lm[:, 57, 1]).all())
        and bool((lm[:, 57, 1] < lm[:, 8, 1]).all())
    )
    # the pupil (between the lid landmarks) is darker than the cheek below the eye
    grey = b.image.mean(1, keepdim=True)
    pupil = lm[:, [37, 38, 40, 41]].mean(1)  # image-left eye
    cheek = pupil + torch.tensor([0.0, 0.25])
    sample = lambda pts: torch.nn.functional.grid_sample(
        grey, pts[:, None, None, :], align_corners=False
    )[:, 0, 0, 0]
    assert float((sample(pupil) < sample(cheek)).float().mean()) >= 0.75
    # positive yaw turns the face to the image's left (render/camera.py): the nose tip moves left
    q = p.replace(pose=torch.tensor([[25.0, 0.0, 0.0]]).expand(8, 3))
    lq = w.render(q, ground_truth=True).landmarks
    assert bool((lq[:, 30, 0] < lm[:, 30, 0] - 0.05).all())


def test_label_disjoint_descriptions(world):
    a = samplers.world_a_description(world, "train", 20)
    b = samplers.world_b_description(world, "train", 20)
    assert set(a.labelled) == {"identity", "expression", "lighting", "pose"}
    assert set(b.labelled) == {"age", "gender", "eyeglasses"}
    assert not set(a.labelled) & set(b.labelled)
    assert a.names == b.names == world.description.names
    assert a["identity"].num_classes == 20 and a["age"].group == "identity"
    lab = samplers.mask_labels(world.labels(world.sample_params(range(4))), b)
    assert bool((lab["identity"] == -1).all()) and bool(torch.isnan(lab["yaw"]).all())
    assert bool((lab["age"] >= 0).all())


def test_ground_truth_sampler(world):
    gt = WorldGroundTruth(
        world,
        factors=("identity", "expression", "pose", "eyeglasses"),
        num_identities=5,
        image_size=16,
    )
    assert gt.factor_sizes == [5, 6, 5, 2]
    rng = np.random.default_rng(0)
    fac = gt.sample_factors(10, rng)
    assert fac.shape == (10, 4) and fac.dtype == np.int64
    assert all(((fac[:, k] >= 0) & (fac[:, k] < s)).all() for k, s in enumerate(gt.factor_sizes))
    p = gt.params(fac, np.random.default_rng(1))
    assert np.array_equal(p.identity_label.numpy(), fac[:, 0]) and np.array_equal(
        p.expression.numpy(), fac[:, 1]
    )
    assert np.array_equal(p.pose_bucket.numpy(), fac[:, 2]) and np.array_equal(
        p.eyeglasses.numpy(), fac[:, 3]
    )
    obs = gt.sample_observations(fac, np.random.default_rng(1))
    assert obs.shape == (10, 3, 16, 16) and obs.dtype == np.float32
    assert np.array_equal(obs, gt.sample_observations(fac, np.random.default_rng(1)))
    traits = WorldGroundTruth(world, factors=("age_value", "skin_tone"), bins=4)
    f2 = np.array([[0, 3], [3, 0]])
    q = traits.params(f2, rng)
    assert (q.age_value[0] < 0.25) and (q.age_value[1] >= 0.75) and (q.skin_tone[0] >= 0.75)
    with pytest.raises(ValueError):
        WorldGroundTruth(world, factors=("identity", "age_value"))


def test_counter_based_uniforms():
    u = uniform(0, "s", np.arange(20000), 3)
    assert u.shape == (20000, 3) and 0 < u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.01 and abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.03
    assert np.array_equal(uniform(0, "s", [5], 3)[0], u[5])
    assert not np.array_equal(uniform(0, "t", [5], 3), uniform(0, "s", [5], 3))


def test_params_batch_helpers(world):
    p = world.sample_params(range(6))
    assert len(p) == 6 and len(p.index(2)) == 1 and len(p.index(slice(1, 4))) == 3
    c = FaceParams.cat([p.index(slice(0, 3)), p.index(slice(3, 6))])
    assert all(torch.equal(v, getattr(p, k)) for k, v in c.as_dict().items())
    r = p.replace(camera=torch.ones(6, dtype=torch.long))
    assert bool((r.camera == 1).all()) and torch.equal(r.pose, p.pose)


def test_expression_flow_maps_carry_landmarks(world):
    """The image-space flow from a to b, read at a's landmarks, lands on b's landmarks; the
    canonical flow is zero where both expressions leave the face alone (the forehead top)."""
    w = FaceWorld(dataclasses.replace(world.config, image_size=64))
    a = w.sample_params(range(6)).replace(eyeglasses=torch.zeros(6, dtype=torch.long))
    b = samplers.intervene(w, a, "expression", np.random.default_rng(3))
    la = w.render(a, ground_truth=True).landmarks
    lb = w.render(b, ground_truth=True).landmarks
    flow, mask = w.expression_flow(a, b)
    assert flow.shape == (6, 2, 64, 64) and mask.shape == (6, 1, 64, 64)
    pts = [*range(17, 27), *range(36, 48), 48, 54]  # brows, eyes, mouth corners: inside the face
    at = torch.nn.functional.grid_sample(flow, la[:, pts, None, :], align_corners=False)[
        ..., 0
    ]  # (B, 2, P)
    err = (la[:, pts] + at.permute(0, 2, 1) - lb[:, pts]).norm(dim=-1)
    assert float(err.median()) < 2 * 2 / 64  # within two pixels
    cflow, cmask = w.expression_flow(a, b, space="canonical")
    assert cmask.shape == (6, 1, 64, 64)
    assert cflow.shape == (6, 2, 64, 64) and float(cflow[:, :, 2].abs().max()) < 1e-3
    with pytest.raises(ValueError):
        w.expression_flow(a, samplers.intervene(w, a, "identity", np.random.default_rng(0)))


@pytest.mark.parametrize(
    "factor",
    [
        "identity",
        "expression",
        "lighting",
        "pose",
        "camera",
        "background",
        "hair",
        "eyeglasses",
        "gender",
        "skin_tone",
    ],
)
def test_every_visible_factor_changes_the_image(world, factor):
    p = world.sample_params(range(6)).replace(noise=torch.zeros(6, 2))
    q = samplers.intervene(world, p, factor, np.random.default_rng(5))
    diff = (world.render(p).image - world.render(q).image).abs().flatten(1).mean(1)
    assert bool((diff > 3e-4).all()), (factor, diff)  # renders are exact: any change is the factor


def test_age_is_visible():
    w = FaceWorld(WorldConfig(seed=2, image_size=32))
    p = w.sample_params(range(6)).replace(noise=torch.zeros(6, 2))
    young, old = samplers.set_trait(p, "age_value", 0.1), samplers.set_trait(p, "age_value", 0.9)
    diff = (w.render(young).image - w.render(old).image).abs().flatten(1).mean(1)
    assert bool((diff > 2e-3).all())


def test_set_factor_gives_camera_and_pose_domains(world):
    p = world.sample_params(range(8))
    nir = samplers.set_factor(world, p, "camera", 1)
    assert bool((nir.camera == 1).all()) and torch.equal(nir.pose, p.pose)
    img = world.render(nir).image
    assert torch.allclose(img[:, 0], img[:, 1]) and torch.allclose(img[:, 1], img[:, 2])  # grey
    thirty = samplers.set_factor(world, p, "pose", world.config.yaw_buckets.index(30.0))
    assert bool(((thirty.pose[:, 0] - 30).abs() <= world.config.yaw_jitter).all())
    assert torch.equal(
        thirty.pose[:, 1:], p.pose[:, 1:]
    )  # same pitch/roll draws: only the bucket moved


def test_zoom_is_the_centre_of_the_whole_frame(world):
    """A zoomed render is the central crop of the unzoomed render of the framed size (no blur:
    the camera blur is per output pixel), with landmarks and image flow in the crop's coordinates."""
    zoomed = FaceWorld(dataclasses.replace(world.config, zoom=1.5))
    full = zoomed.config.framed_size(SIZE)
    assert full == 48 and (full - SIZE) % 2 == 0
    p = world.sample_params(range(4))
    p = p.replace(noise=torch.stack([p.noise[:, 0], torch.zeros(4)], -1))  # keep the noise, no blur
    a = zoomed.render(p, ground_truth=True)
    b = world.render(p, image_size=full, ground_truth=True)
    m = (full - SIZE) // 2
    assert a.image.shape == (4, 3, SIZE, SIZE)
    torch.testing.assert_close(a.image, b.image[..., m : m + SIZE, m : m + SIZE])
    torch.testing.assert_close(a.coverage, b.coverage[..., m : m + SIZE, m : m + SIZE])
    # landmarks: pixel u of the frame is pixel u - m of the crop
    u_full = (b.landmarks + 1) * full / 2
    torch.testing.assert_close((a.landmarks + 1) * SIZE / 2, u_full - m)
    q = samplers.intervene(world, p, "expression", np.random.default_rng(1))
    fa, ma = zoomed.expression_flow(p, q)
    fb, mb = world.expression_flow(p, q, image_size=full)
    torch.testing.assert_close(fa, fb[..., m : m + SIZE, m : m + SIZE] * full / SIZE)
    torch.testing.assert_close(ma, mb[..., m : m + SIZE, m : m + SIZE])
    with pytest.raises(ValueError, match="zoom"):
        WorldConfig(zoom=0.5)
