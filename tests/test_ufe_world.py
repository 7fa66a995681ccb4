"""UFE on the face world: world-A sets, true composites, the shared features.npz format."""

import numpy as np
import pytest
import torch

from facefactors.config import load_config
from facefactors.experiments.ufe import _config, sample_params_of, true_composite
from facefactors.experiments.ufe_eval import encode_set, target_check, write_features
from facefactors.train.ufe import UFEDataConfig
from facefactors.train.ufe_data import render_world_set, world_a_config
from facefactors.utils.errors import ConfigError, UserError
from test_ufe_losses import tiny_model


def small_set(split="test", n=2, m=3, offset=0, cache=""):
    cfg = world_a_config(UFEDataConfig(world_seed=3, yaw_domains=[0.0, 30.0], nir_probability=0.5), image_size=32)
    return cfg, render_world_set(cfg, split, n, m, cache=cache, progress=False, identity_offset=offset)


def test_world_a_set_layout_and_cache(tmp_path):
    cfg, data = small_set(cache=tmp_path)
    assert data.images.shape == (6, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.labels["identity"].tolist() == [0, 0, 0, 1, 1, 1]
    assert set(data.labels["pose"].tolist()) <= {0, 1}  # the two yaw domains are the pose classes
    assert data.description["pose"].class_names == ("0", "30")
    again = render_world_set(cfg, "test", 2, 3, cache=tmp_path, progress=False)  # from the cache
    assert torch.equal(again.images, data.images) and torch.equal(again.labels["lighting"], data.labels["lighting"])
    _, other = small_set(offset=2)
    assert other.labels["identity"].tolist() == [2, 2, 2, 3, 3, 3]  # other people
    with pytest.raises(ConfigError, match="ask for at most 2$"):  # before rendering anything
        render_world_set(cfg, "test", 3, 1, progress=False, identity_offset=cfg.split_sizes()["test"] - 2)
    restricted = data.restrict(["expression"])
    assert (restricted.labels["identity"] == -1).all() and torch.equal(restricted.labels["expression"], data.labels["expression"])
    assert np.isnan(restricted.labels["yaw"].numpy()).all()


def test_true_composite_takes_exactly_the_chosen_factor():
    from facefactors.world.world import FaceWorld

    cfg, data = small_set()
    world = FaceWorld(cfg)
    ia, ib = torch.tensor([0, 1]), torch.tensor([3, 4])
    pa, pb = sample_params_of(world, data, ia), sample_params_of(world, data, ib)
    # Regenerated parameters render the stored images (the set is a pure function of its index).
    assert (world.render(pa).image * 255 - data.images[ia].float()).abs().max() <= 1.0
    assert torch.allclose(true_composite(world, pa, pb, []), world.render(pa).image)
    lab = world.labels(pa.replace(**{f: getattr(pb, f) for f in ("light", "light_class", "sh")}))
    img = true_composite(world, pa, pb, ["lighting"])
    assert not torch.allclose(img, world.render(pa).image)
    assert torch.equal(lab["lighting"], data.labels["lighting"][ib]) and torch.equal(lab["identity"], data.labels["identity"][ia])


def test_features_file_is_readable_by_the_metrics_loader(tmp_path):
    from facefactors.metrics.features import load_features

    _, data = small_set()
    model = tiny_model()  # toy description (identity/expression), 32x32
    feats = encode_set(model, data)
    assert set(feats) == {"identity", "expression", "others"} and feats["identity"].shape == (6, 8)
    write_features(tmp_path / "features.npz", feats, data)
    fs = load_features(tmp_path / "features.npz")
    assert set(fs.features) == set(feats)
    assert np.array_equal(fs.labels["identity"], data.labels["identity"].numpy())


def test_world_a_takes_the_framing_of_the_data_config():
    from facefactors.utils.errors import UserError

    assert world_a_config(UFEDataConfig(zoom=1.5), image_size=64).zoom == 1.5
    with pytest.raises(UserError, match="data.zoom"):
        world_a_config(UFEDataConfig(zoom=0.5), image_size=64)


def test_world_b_must_not_reach_past_the_training_split():
    # world B's people follow world A's; past the split's end they would be held-out test faces
    from facefactors.experiments.ufe import _config, train_stream
    from facefactors.utils.errors import UserError

    _, train = small_set("train", n=3, m=2)  # enough for the tiny preset's 3 x 2 batches of world A
    cfg = _config("tiny", ["data.train_identities=1001", "data.second_set=world_b"])
    with pytest.raises(UserError, match="do not fit the world's train split of 2000"):  # before world B is rendered
        train_stream(cfg, train, progress=False)


def test_user_study_judge_follows_the_preset_one_folder_per_framing():
    from facefactors.experiments.ufe import _rater_dir

    assert _rater_dir("quick", None) == ("quick", "runs/rater-quick")
    assert _rater_dir("standard", None, 1.5) == ("standard", "runs/rater-standard-zoom1.5")
    assert _rater_dir("full", None, 1.5) == ("full", "runs/rater-full-zoom1.5")  # 128x128, as the full UFE's images
    assert _rater_dir("tiny", "my/rater", 1.5) == ("tiny", "my/rater")


def test_every_ufe_preset_is_judged_by_a_rater_of_its_image_size():
    from facefactors.config import preset_dict
    from facefactors.experiments.ufe import _rater_dir
    from facefactors.train.rater import RaterTrainConfig

    for preset in ("tiny", "quick", "standard", "full"):
        ufe = _config(preset, [])
        rater_preset, _ = _rater_dir(preset, None, ufe.data.zoom)
        preset_dict("rater", rater_preset)  # exists
        assert load_config(RaterTrainConfig, "rater", rater_preset).model.image_size == ufe.model.image_size, preset


def test_judge_line_names_the_rater_and_its_held_out_accuracy(tmp_path):
    import json

    from facefactors.experiments.ufe import _judge_line

    assert _judge_line(tmp_path / "none") == f"`{tmp_path / 'none'}`"  # no metrics: the folder alone
    (tmp_path / "metrics.json").write_text(json.dumps({"rater_accuracy": {"expression": 0.9883, "identity_verification_balanced": 0.9853}}))
    assert _judge_line(tmp_path) == f"`{tmp_path}` (held out: expression 0.988, identity_verification_balanced 0.985)"
    (tmp_path / "metrics.json").write_text("{trunc")
    assert _judge_line(tmp_path) == f"`{tmp_path}`"  # unreadable: the folder alone, the report still written


def test_rater_option_is_refused_by_experiments_without_a_judge(tmp_path):
    from facefactors.experiments.ufe import run_experiment

    with pytest.raises(UserError, match="--rater names the judge of user_study and multi_dataset"):
        run_experiment("world_a", "tiny", tmp_path, rater="runs/my-rater")



class _RecordingRater:
    """Says "identity" when the two images differ anywhere, "none" when they are equal, and
    keeps every image it read, in order."""

    calibration = {"identity": 1.0, "expression": 1.0}

    def __init__(self):
        self.shown = []

    def read(self, image):  # expression: class 1 where the image is brighter than 0.5 on average
        self.shown.append(image)
        bright = (image.mean((1, 2, 3)) > 0.5).long()
        return {"expression": torch.nn.functional.one_hot(bright, 2).float()}, torch.nn.functional.normalize(image.flatten(1), dim=1)

    @staticmethod
    def scores_between(before, after):
        changed = (before[1] != after[1]).any(1).float()
        return {"identity": changed, "expression": torch.zeros_like(changed)}


def test_user_study_controls_decode_to_the_reconstruction_and_the_others_diagnostic_swaps_more():
    from facefactors.experiments.ufe import user_study

    torch.manual_seed(0)
    _, data = small_set(n=3, m=4)
    rater = _RecordingRater()
    res = user_study(tiny_model().eval(), rater, data, n=40, controls=0.5)
    assert set(res) == {"vs_input", "vs_reconstruction", "with_others", "decoder_fidelity", "decoder_confusion", "n"}
    controls = res["vs_reconstruction"]["per_attribute"]["none"]
    assert controls["n"] > 5 and controls["accuracy"] == 1.0  # nothing swapped: exactly D(E(A))
    swaps = res["vs_reconstruction"]["confusion"]
    assert all(swaps[t]["none"] == 0 for t in ("identity", "expression"))  # every swap changes the decoded face
    # Per chunk of 40 the rater reads A, D(E(A)), the composite, the composite with B's "others".
    a, rec, out, out_oth = rater.shown
    same = torch.tensor([torch.equal(x, y) for x, y in zip(out, out_oth)])
    assert same.sum() == controls["n"]  # controls take nothing from B; every swap also takes "others"
    # The decoder's fidelity: the toy rater's class of A read again on D(E(A)), and the cosine.
    (p_a, e_a), (p_rec, e_rec) = rater.read(a), rater.read(rec)
    agree = (p_a["expression"].argmax(1) == p_rec["expression"].argmax(1)).float().mean()
    cosine = (e_a * e_rec).sum(-1).mean()
    assert res["decoder_fidelity"] == pytest.approx({"expression": float(agree), "identity": float(cosine)})
    # ... and which class D(E(A)) is read as, against A's: the counts of the pairs themselves
    confusion = res["decoder_confusion"]["expression"]
    assert confusion["classes"] == ["0", "1"]  # the toy rater's 2 classes; the set's expression has 6 names
    pairs = list(zip(p_a["expression"].argmax(1).tolist(), p_rec["expression"].argmax(1).tolist()))
    assert confusion["counts"] == [[pairs.count((i, j)) for j in range(2)] for i in range(2)]
    assert (confusion["counts"][0][0] + confusion["counts"][1][1]) / 40 == pytest.approx(res["decoder_fidelity"]["expression"])


def test_study_report_names_the_classes_the_decoder_draws_as_another():
    from facefactors.experiments.ufe import _largest_confusions, study_sections

    counts = [[5, 0, 3], [1, 7, 0], [0, 9, 2]]
    assert _largest_confusions(counts) == [(9, 2, 1), (3, 0, 2), (1, 1, 0)]
    assert _largest_confusions([[4, 0], [0, 4]]) == []
    table = {"per_attribute": {}, "overall_swapped": 0.0, "chance": 0.5}
    res = {"vs_input": table, "vs_reconstruction": table, "with_others": table, "decoder_fidelity": {"expression": 0.5},
           "decoder_confusion": {"expression": {"classes": ["neutral", "happy", "sad"], "counts": counts}, "lighting": {"classes": ["a", "b"], "counts": [[3, 0], [0, 3]]}}}
    text = dict(study_sections(res))["Diagnostic: the classes the decoder draws as another (the rater's class on A, then on D(E(A)); the three largest)"]
    assert "- expression: sad drawn as happy 9 of 11, neutral drawn as sad 3 of 8, happy drawn as neutral 1 of 8" in text
    assert "- lighting: none" in text


def test_user_study_ceiling_rates_the_worlds_own_swaps():
    from facefactors.experiments.ufe import (
        _true_swaps,
        sample_params_of,
        true_composite,
        user_study,
    )
    from facefactors.world.world import FaceWorld

    torch.manual_seed(0)
    cfg, data = small_set(n=3, m=4)
    world = FaceWorld(cfg)
    # the world re-renders the set's own faces (to its uint8 rounding), so a swap of nothing is A
    idx = torch.arange(len(data))
    again = true_composite(world, sample_params_of(world, data, idx), sample_params_of(world, data, idx), [])
    assert (again - data.batch(idx)["image"]).abs().max() <= 0.5 / 255 + 1e-6
    # a swap row takes B's factor: A's expression class becomes B's in the world's render
    ia, ib = torch.tensor([0, 1]), torch.tensor([5, 6])
    a = data.batch(ia)["image"]
    swapped = {"identity": torch.tensor([False, False]), "expression": torch.tensor([True, False])}
    out = _true_swaps(world, data, ia, ib, a, swapped, ["identity", "expression"])
    assert torch.equal(out[1], a[1]) and not torch.equal(out[0], a[0])
    want = true_composite(world, sample_params_of(world, data, ia[:1]), sample_params_of(world, data, ib[:1]), ["expression"])
    assert torch.allclose(out[0], (want[0] * 255).round() / 255)

    res = user_study(tiny_model().eval(), _RecordingRater(), data, n=40, controls=0.5, world=world)
    truth = res["truth"]
    assert truth["per_attribute"]["none"]["n"] > 5 and truth["per_attribute"]["none"]["accuracy"] == 1.0  # controls: A itself
    # the toy rater names "identity" for any change: every true identity swap is named, and so
    # is every true expression swap (it cannot see expression)
    assert truth["per_attribute"]["identity"]["accuracy"] == 1.0
    assert truth["confusion"]["expression"]["identity"] == truth["per_attribute"]["expression"]["n"] > 0


def test_target_check_counts_the_off_diagonal_entries_over_the_limit():
    # rows identity, expression, others; columns identity (chance 0.1), expression (chance 0.5)
    weak = {"x": ["identity", "expression", "others"], "y": ["identity", "expression"], "chance": [0.1, 0.5],
            "accuracy": [[0.95, 0.70], [0.12, 0.92], [0.40, 0.50]]}
    sil = {"x": weak["x"], "y": weak["y"], "silhouette": [[0.35, -0.02], [0.01, 0.50], [0.10, -0.10]]}
    t = target_check(weak, sil)
    assert t["weak_diagonal"] == {"identity": 0.95, "expression": 0.92} and t["weak_diagonal_ok"]
    # 0.70 / 0.5 = 1.4 is under 1.5x chance, 0.12 / 0.1 = 1.2 too; others -> identity 4.0 is over
    assert t["weak_offdiag_over_limit"] == {"others->identity": 4.0}
    assert t["weak_offdiag_ratio_sum"] == pytest.approx(1.4 + 1.2 + 4.0 + 1.0)
    assert not t["weak_offdiag_ok"]
    assert t["silhouette_diagonal_ok"] and t["silhouette_offdiag_max"] == pytest.approx(0.10) and not t["silhouette_offdiag_ok"]


def test_silhouette_by_camera_scores_each_domain_alone(tmp_path):
    # The camera mixed unevenly over the poses (70% / 30% NIR) and a feature that holds the camera
    # alone: the whole set's pose entry is positive, inside each camera it is not (what a pose-free
    # "others" shows on a held-out draw whose poses hold the cameras in different shares).
    from sklearn.metrics import silhouette_score

    from facefactors.experiments.ufe import _matrix_sections, evaluate_matrices
    from facefactors.experiments.ufe_eval import silhouette_by_group, silhouette_matrix
    from facefactors.models.ufe import UFE, UFEConfig

    rng = np.random.default_rng(0)
    n = 400
    pose = np.arange(n) % 2
    camera = (rng.random(n) < np.where(pose == 1, 0.7, 0.3)).astype(int)
    feats = {"others": rng.standard_normal((n, 8)) + 6.0 * camera[:, None], "pose": rng.standard_normal((n, 8)) + 3.0 * pose[:, None]}
    labels = {"pose": pose, "camera": camera}
    whole = silhouette_matrix(feats, labels, ["others", "pose"], ["pose"])["silhouette"]
    by = silhouette_by_group(feats, labels, ["others", "pose"], ["pose"], "camera", ("rgb", "nir"))
    assert set(by) == {"rgb", "nir"} and whole[0][0] > 0.05
    for c, name in enumerate(("rgb", "nir")):
        keep = camera == c
        expected = [silhouette_score(feats[x][keep], pose[keep]) for x in ("others", "pose")]
        assert [row[0] for row in by[name]["silhouette"]] == pytest.approx(expected)
        assert abs(by[name]["silhouette"][0][0]) < 0.2 * whole[0][0] and by[name]["silhouette"][1][0] > 0.3
    # evaluate_matrices adds it for a set with both cameras, and the report shows each domain
    data = render_world_set(world_a_config(UFEDataConfig(world_seed=3, yaw_domains=[0.0, 30.0], nir_probability=0.5), image_size=32), "test", 4, 6, progress=False)
    attributes = data.restrict(["identity", "expression", "lighting", "pose"], "world-a").description
    model = UFE(attributes, UFEConfig(image_size=32, feature_dim=8, encoder_channels=[8, 8, 8], head_hidden=8, decoder_channel_base=64, decoder_channel_max=8))
    res = evaluate_matrices(model.eval(), data, tmp_path, tsne=False)
    cams = data.labels["camera"].unique().tolist()
    assert (set(res.get("silhouette_by_camera", {})) == {("rgb", "nir")[c] for c in cams}) if len(cams) > 1 else "silhouette_by_camera" not in res
    titles = [head for head, _ in _matrix_sections(res)]
    assert sum("camera domain" in t for t in titles) == (len(cams) if len(cams) > 1 else 0)


def test_factor_codes_are_the_parameters_side_by_side():
    from facefactors.experiments.ufe import SUBSPACE_FIELDS
    from facefactors.world.ground_truth import factor_codes
    from facefactors.world.world import FaceWorld

    cfg, data = small_set()
    params = sample_params_of(FaceWorld(cfg), data, torch.arange(len(data)))
    codes = factor_codes(params, SUBSPACE_FIELDS)
    assert list(codes) == list(SUBSPACE_FIELDS) and all(c.dtype == np.float64 and len(c) == 6 for c in codes.values())
    hair = params.hair.shape[1]
    np.testing.assert_array_equal(codes["others"][:, :hair], params.hair.double().numpy())  # fields in the order named
    np.testing.assert_array_equal(codes["others"][:, -1], params.camera.double().numpy())  # a (B,) field is one column
    assert codes["identity"].shape[1] == params.shape.shape[1] + params.albedo.shape[1]
    # one person's identity code is the same in each of their images (the world's definition of identity)
    np.testing.assert_array_equal(codes["identity"][0], codes["identity"][2])


def _synthetic_world(n_people=20, per=20, seed=0):
    """Codes whose dependences are known: "identity" is each person's point, "mixed" holds a noisy
    copy of it in one of eight columns, "pose" is independent of the person."""
    rng = np.random.default_rng(seed)
    person = np.repeat(np.arange(n_people), per)
    centres = rng.normal(size=(n_people, 2))
    labels = {"identity": person, "pose": rng.integers(0, 2, size=len(person))}
    mixed = rng.normal(size=(len(person), 8))
    mixed[:, 0] = centres[person, 0] + 0.1 * rng.normal(size=len(person))
    codes = {"identity": centres[person] + 0.05 * rng.normal(size=(len(person), 2)),
             "pose": labels["pose"][:, None] + 0.1 * rng.normal(size=(len(person), 1)),
             "mixed": mixed}
    return codes, labels


def test_knn_matrix_reads_what_a_code_holds_and_not_its_row_order():
    from facefactors.experiments.ufe_eval import knn_matrix

    codes, labels = _synthetic_world()
    m = knn_matrix(codes, labels, ["identity", "pose"], ["identity", "pose"])
    acc = np.asarray(m["accuracy"])
    assert acc[0, 0] > 0.9 and acc[1, 1] > 0.95  # each code reads its own label
    assert acc[1, 0] < 0.15  # the pose code knows nothing of 20 people (chance 0.05)
    # a code that is the same for everyone: ties between neighbours must not follow the rows,
    # which come grouped by person, so the reading stays at chance
    flat = {"flat": np.zeros((len(labels["identity"]), 3))}
    assert knn_matrix(flat, labels, ["flat"], ["identity"])["accuracy"][0][0] < 0.1


def test_world_floor_flags_only_the_dependence_the_codes_really_hold():
    from facefactors.experiments.ufe_eval import world_floor

    codes, labels = _synthetic_world()
    xs, ys = ["identity", "pose", "mixed"], ["identity", "pose"]
    parts = {"mixed": {"column 0": codes["mixed"][:, :1], "the rest": codes["mixed"][:, 1:]}}
    res = world_floor(codes, labels, xs, ys, parts=parts, permutations=3)
    ratio = np.asarray(res["floor_over_chance"])
    # the noisy copy of the person's position reads identity well over 1.5x chance (0.05);
    # read from column 0 alone, it reads at least as well as from the whole eight columns
    assert "mixed->identity" in res["floor_over_limit"] and ratio[2, 0] > 3
    assert ratio[2, 0] == pytest.approx(max(res["parts_over_chance"]["mixed: column 0"][0], np.asarray(res["knn"])[2, 0] / 0.05, np.asarray(res["linear"])[2, 0] / 0.05))
    assert res["parts_over_chance"]["mixed: the rest"][0] < res["parts_over_chance"]["mixed: column 0"][0]
    # independent pairs stay under the flag: pose knows no person, identity no pose
    assert "pose->identity" not in res["floor_over_limit"] and "identity->pose" not in res["floor_over_limit"]
    assert "mixed->pose" not in res["floor_over_limit"]
    assert all(v >= 1.0 for v in res["null_over_chance"])  # the shuffled readings' largest is at least chance
    # true codes cluster by their own label, not by an independent one
    sil = np.asarray(res["silhouette"])
    assert sil[0, 0] > 0.5 and sil[1, 0] < 0.05


@pytest.mark.slow  # about a minute of scikit-learn fits on 2 cores
def test_world_floor_experiment_on_the_tiny_preset(tmp_path):
    import json

    from facefactors.experiments.ufe import run_experiment

    report = run_experiment("world_floor", "tiny", tmp_path / "floor", progress=False)
    assert "Each field of a subspace alone" in report.read_text() and "others: hair" in report.read_text()
    res = json.loads((tmp_path / "floor" / "metrics.json").read_text())
    assert res["x"] == ["identity", "expression", "lighting", "pose", "others"] and res["y"] == ["identity", "expression", "lighting", "pose"]
    assert res["floor_over_chance"][0][0] > 1.5  # the true identity code reads identity


def test_world_floor_refuses_features_of_another_set_before_fitting(tmp_path):
    from facefactors.experiments.ufe import run_experiment
    from facefactors.metrics.features import save_features
    from facefactors.utils.errors import UserError

    n = 16  # tiny's held-out size (4 people x 4 images), but other people
    save_features(tmp_path / "other.npz", {"identity": np.zeros((n, 2), np.float32)}, {"identity": np.arange(n) % 4})
    with pytest.raises(UserError, match="other.npz: its features are not world_a's held-out set of the 'tiny' preset"):
        run_experiment("world_floor", "tiny", tmp_path / "floor", progress=False, run=str(tmp_path / "other.npz"))
