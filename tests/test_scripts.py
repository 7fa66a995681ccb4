"""Command-line analysis scripts in scripts/: they run and report what they claim to."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ufe_leak_finds_a_label_in_coordinates_of_small_spread(tmp_path):
    # 6 coordinates flip with the pose; one of two near-constant coordinates carries identity.
    rng = np.random.default_rng(0)
    n = 240
    pose, identity = rng.integers(0, 2, n), np.repeat(np.arange(8), n // 8)
    f = np.concatenate([np.repeat(pose[:, None], 6, 1) + 0.1 * rng.standard_normal((n, 6)), 0.5 + 0.002 * rng.standard_normal((n, 2))], 1)
    f[:, 6] += 0.05 * identity / 7
    np.savez(tmp_path / "features.npz", **{"features/pose": f, "labels/identity": identity})
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "ufe_leak.py"), str(tmp_path / "features.npz")], capture_output=True, text=True, check=True).stdout
    small = float(re.search(r"std <= 0.05 2: ([0-9.]+)", out).group(1))
    large = float(re.search(r"std > 0.05 6: ([0-9.]+)", out).group(1))
    assert small > 0.5 and large < 0.3  # identity (chance 0.125) is in the two small coordinates only
    hidden, seen = (float(v) for v in re.findall(r"std_floor [0-9.]+: between ([0-9.]+)", out))
    assert seen > 5 * hidden  # the standardised whitening sees what the ridge hides


def test_ufe_leak_names_the_file_and_the_fix_on_bad_input(tmp_path):
    script = str(ROOT / "scripts" / "ufe_leak.py")
    np.savez(tmp_path / "features.npz", **{"features/pose": np.zeros((4, 2)), "labels/identity": np.zeros(4)})
    for args, needle in (([str(tmp_path / "missing.npz")], "missing.npz: no such file or directory"), ([str(tmp_path / "features.npz"), "--feature", "pse"], "has no features/pse; known: ['pose']")):
        err = subprocess.run([sys.executable, script, *args], capture_output=True, text=True).stderr
        assert needle in err and "Traceback" not in err


def test_ufe_spread_finds_clusters_in_leading_components_and_names_the_spread(tmp_path):
    # 8 classes tight in 3 coordinates; 30 more coordinates spread each class, by a nuisance
    # label (lighting) in 10 of them and by noise in 20.
    rng = np.random.default_rng(0)
    n = 400
    identity = np.repeat(np.arange(8), n // 8)
    lighting = rng.integers(0, 4, n)
    centres = rng.standard_normal((8, 3)) * 3
    f = np.concatenate([centres[identity] + 0.3 * rng.standard_normal((n, 3)), np.eye(4)[lighting].repeat(3, 1)[:, :10] * 1.5, 0.6 * rng.standard_normal((n, 20))], 1)
    np.savez(tmp_path / "features.npz", **{"features/identity": f, "labels/identity": identity, "labels/lighting": lighting, "labels/camera": rng.integers(0, 2, n)})
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "ufe_spread.py"), str(tmp_path), "--components", "3", "16"], capture_output=True, text=True, check=True).stdout
    whole = float(re.search(r"silhouette ([0-9.-]+);", out).group(1))
    leading = float(re.search(r"leading   3 principal components \([0-9]+% of the variance\): silhouette ([0-9.-]+)", out).group(1))
    assert leading > whole + 0.2  # the classes live in the leading components
    lighting_share = float(re.search(r"lighting ([0-9.]+)", out).group(1))
    camera_share = float(re.search(r"camera ([0-9.]+)", out).group(1))
    assert 0.3 < lighting_share < 0.45 and camera_share < 0.02  # lighting's variance 4.2 of 11.7 (noise 7.2, classes 0.3)


def test_ufe_spread_names_the_file_and_the_fix_on_bad_input(tmp_path):
    script = str(ROOT / "scripts" / "ufe_spread.py")
    np.savez(tmp_path / "features.npz", **{"features/identity": np.zeros((4, 2)), "labels/identity": np.zeros(4, dtype=int)})
    for args, needle in (([str(tmp_path / "missing.npz")], "missing.npz: no such file or directory"), ([str(tmp_path / "features.npz")], "has one class; a silhouette needs two"), ([str(tmp_path / "features.npz"), "--label", "idx"], "has no labels/idx")):
        err = subprocess.run([sys.executable, script, *args], capture_output=True, text=True).stderr
        assert needle in err and "Traceback" not in err


def test_ufe_spread_fits_the_spread_with_the_world_s_true_factors(tmp_path):
    # Features of world_a's held-out set (tiny preset, 20 people x 10 images): one spread within
    # each person by a smooth function of the true light, one by noise.
    from facefactors.config import load_config
    from facefactors.experiments.ufe import world_a_config
    from facefactors.train.ufe import UFETrainConfig
    from facefactors.train.ufe_data import world_set_index
    from facefactors.world.world import FaceWorld

    overrides = ["data.test_identities=20", "data.test_images_per_identity=10"]
    cfg = load_config(UFETrainConfig, "ufe", "tiny", overrides)
    world = FaceWorld(world_a_config(cfg.data, cfg.model.image_size))
    index, ident = world_set_index(20, 10)
    params = world.sample_params(index, "test", identities=ident)
    identity = world.labels(params)["identity"].numpy()
    light = params.light.double().reshape(len(identity), -1).numpy()
    rng = np.random.default_rng(0)
    centres = 3 * rng.standard_normal((identity.max() + 1, 4))[identity]
    lit = np.concatenate([centres, light, np.tanh(light) ** 2], 1)
    noisy = np.concatenate([centres, rng.standard_normal((len(identity), 2 * light.shape[1]))], 1)
    script = str(ROOT / "scripts" / "ufe_spread.py")
    r2 = {}
    for name, f in (("lit", lit), ("noisy", noisy)):
        np.savez(tmp_path / f"{name}.npz", **{"features/identity": f, "labels/identity": identity})
        out = subprocess.run([sys.executable, script, str(tmp_path / f"{name}.npz"), "--world", "tiny", *sum((["--set", o] for o in overrides), []), "--components", "4"], capture_output=True, text=True, check=True).stdout
        r2[name] = float(re.search(r"held out \(R\^2\): ([0-9.-]+)", out).group(1))
        light_share = float(re.search(r"in-sample\): .*light ([0-9.]+)", out).group(1))
        assert (light_share > 0.5) == (name == "lit"), out  # 0.91 / 0.03
    assert r2["lit"] > 0.6 and r2["noisy"] < 0.1  # 0.85 / -0.04: a shared function of the light is found on unseen people
    err = subprocess.run([sys.executable, script, str(tmp_path / "lit.npz"), "--world", "tiny"], capture_output=True, text=True).stderr
    assert "lit.npz: the features are not world_a's held-out set of the 'tiny' preset" in err and "Traceback" not in err


def _two_feature_run(folder: Path, identity_noise: float, leak: float, seed: int) -> Path:
    """A run folder's features.npz: "identity" separates 6 people (the less noise, the better),
    "expression" separates 2 expressions and carries ``leak`` of the identity too."""
    rng = np.random.default_rng(seed)
    n = 240
    identity, expression = np.repeat(np.arange(6), n // 6), np.tile(np.arange(2), n // 2)
    centres, person = rng.standard_normal((6, 4)) * 2, rng.standard_normal((6, 4))
    f_id = centres[identity] + identity_noise * rng.standard_normal((n, 4))
    f_expr = np.concatenate([3.0 * expression[:, None] + 0.5 * rng.standard_normal((n, 2)), leak * person[identity] + rng.standard_normal((n, 4))], 1)
    folder.mkdir(parents=True)
    np.savez(folder / "features.npz", **{"features/identity": f_id, "features/expression": f_expr, "labels/identity": identity, "labels/expression": expression})
    return folder


def test_ufe_compare_names_the_entries_a_run_is_worse_on(tmp_path):
    script = str(ROOT / "scripts" / "ufe_compare.py")
    refs = [str(_two_feature_run(tmp_path / f"ref{s}", 1.0, 0.0, s)) for s in range(3)]
    worse = str(_two_feature_run(tmp_path / "ablated", 2.5, 3.0, 7))  # identity blurred and leaking into expression
    out = subprocess.run([sys.executable, script, worse, *refs], capture_output=True, text=True, check=True).stdout
    flagged = {entry: verdict for verdict, entry in re.findall(r"^\s+(worse|better)\s+(.+?): ", out, re.M)}
    assert flagged.get("silhouette identity") == "worse" and flagged.get("weak expression -> identity (x chance)") == "worse", out
    assert "weak expression" not in flagged and "weak identity -> expression (x chance)" not in flagged, out  # expression still read, only from its own feature
    same = subprocess.run([sys.executable, script, refs[0], *refs], capture_output=True, text=True, check=True).stdout
    assert "0 of 8 entries worse, 0 better" in same  # a reference lies inside its own range


def test_ufe_compare_reads_stored_matrices_and_names_bad_input(tmp_path):
    import json

    script = str(ROOT / "scripts" / "ufe_compare.py")
    weak = {"x": ["identity", "others"], "y": ["identity"], "accuracy": [[0.9], [0.5]], "chance": [0.1]}
    sil = {"x": ["identity", "others"], "y": ["identity"], "silhouette": [[0.3], [-0.01]]}
    for name, others_acc in (("a", 0.5), ("b", 0.6), ("run", 0.8)):  # ufe train writes held_out_matrices (no features needed)
        (tmp_path / name).mkdir()
        w = {**weak, "accuracy": [[0.9], [others_acc]]}
        (tmp_path / name / "metrics.json").write_text(json.dumps({"held_out": {}, "held_out_matrices": {"weak_classifier": w, "silhouette": sil}}))
    out = subprocess.run([sys.executable, script, str(tmp_path / "run"), str(tmp_path / "a"), str(tmp_path / "b" / "metrics.json")], capture_output=True, text=True, check=True).stdout
    assert "1 of 4 entries worse" in out and "worse  weak others -> identity (x chance): 8.0000 (references 5.0000 .. 6.0000)" in out
    # another .npz in a run folder (scripts/ufe_training_features.py's) is read itself, not the folder's stored matrices
    rng = np.random.default_rng(0)
    identity = np.repeat(np.arange(10), 12)
    np.savez(tmp_path / "run" / "training_features.npz", **{"features/identity": np.eye(10)[identity] + 0.05 * rng.standard_normal((120, 10)), "features/others": rng.standard_normal((120, 10)), "labels/identity": identity})
    own = subprocess.run([sys.executable, script, str(tmp_path / "run" / "training_features.npz"), str(tmp_path / "a"), str(tmp_path / "b")], capture_output=True, text=True, check=True).stdout
    others = float(re.search(r"weak others -> identity \(x chance\): ([0-9.]+)", own).group(1))
    assert others < 3.0 and "0 of 4 entries worse" in own, own  # random "others": near chance, not the stored 8x
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.json").write_text("{not json")
    (tmp_path / "other.json").write_text('{"held_out": {}}')
    (tmp_path / "partial.json").write_text('{"weak_classifier": {"x": []}, "silhouette": {}}')
    for arg, needle in ((str(tmp_path / "missing"), "no such file or directory"), (str(tmp_path / "bad"), "bad/metrics.json: not readable JSON"), (str(tmp_path / "other.json"), "other.json: holds no weak_classifier"), (str(tmp_path / "partial.json"), "partial.json: its matrices lack")):
        res = subprocess.run([sys.executable, script, arg, str(tmp_path / "a")], capture_output=True, text=True)
        assert res.returncode == 2 and needle in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_ufe_compare_draws_the_runs_side_by_side_and_outlines_entries_over_the_limits(tmp_path):
    import json

    from PIL import Image

    script = str(ROOT / "scripts" / "ufe_compare.py")
    sil = {"x": ["identity", "others"], "y": ["identity"], "silhouette": [[0.3], [-0.01]]}
    for name, others_acc, others_sil in (("clean", 0.12, -0.01), ("leaky", 0.8, -0.01), ("clustered", 0.12, 0.004)):
        (tmp_path / name).mkdir()
        weak = {"x": ["identity", "others"], "y": ["identity"], "accuracy": [[0.9], [others_acc]], "chance": [0.1]}
        (tmp_path / name / "metrics.json").write_text(json.dumps({"held_out_matrices": {"weak_classifier": weak, "silhouette": {**sil, "silhouette": [[0.3], [others_sil]]}}}))

    def draw(*names):
        path = tmp_path / ("-".join(names) + ".png")
        out = subprocess.run([sys.executable, script, *[str(tmp_path / n) for n in names], "--figure", str(path)], capture_output=True, text=True, check=True).stdout
        assert f"figure: {path}" in out, out
        rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
        outline = (rgb[..., 0] > 230) & (rgb[..., 1] < 30) & (rgb[..., 2] < 30)  # the outline's pure red
        return rgb.shape[1], int(outline.sum())

    width_two, red_clean = draw("clean", "clean")
    width_three, _ = draw("clean", "clean", "clean")
    assert width_three > width_two  # one column per run
    assert red_clean == 0  # "others" -> identity 1.2x and a negative silhouette: nothing over either limit
    _, red_leaky = draw("leaky", "clean")  # 8x chance: over 1.5x
    _, red_clustered = draw("clustered", "clean")  # silhouette +0.004: over 0
    assert red_leaky > 20 and red_clustered > 20, (red_leaky, red_clustered)
    res = subprocess.run([sys.executable, script, str(tmp_path / "clean"), str(tmp_path / "clean"), "--figure", str(tmp_path / "missing" / "f.png")], capture_output=True, text=True)
    assert res.returncode == 2 and "missing/f.png: its folder does not exist" in res.stderr and "Traceback" not in res.stderr, res.stderr
    res = subprocess.run([sys.executable, script, str(tmp_path / "clean"), str(tmp_path / "clean"), "--figure", str(tmp_path / "f.xyz")], capture_output=True, text=True)
    assert res.returncode == 2 and "f.xyz: not a figure format" in res.stderr and not (tmp_path / "f.xyz").exists(), res.stderr
    assert not list(tmp_path.glob(".*.tmp"))  # nothing half-written left beside the figures


def test_ufe_train_stores_the_matrices_ufe_compare_reads(tmp_path):
    import json

    from facefactors.cli.main import main

    main(["ufe", "train", "--preset", "tiny", "--out", str(tmp_path / "run")])
    stored = json.loads((tmp_path / "run" / "metrics.json").read_text())["held_out_matrices"]
    assert stored["weak_classifier"]["x"] == ["identity", "expression", "lighting", "pose", "others"]
    assert np.asarray(stored["silhouette"]["silhouette"]).shape == (5, 4)
    # and the silhouettes inside each camera domain, as recomputed from features.npz's images of that camera
    from facefactors.experiments.ufe_eval import silhouette_matrix
    from facefactors.metrics.features import load_features

    feats = load_features(tmp_path / "run" / "features.npz")
    assert set(stored["silhouette_by_camera"]) == {"rgb", "nir"}
    for c, camera in enumerate(("rgb", "nir")):
        keep = feats.labels["camera"] == c
        again = silhouette_matrix({x: v[keep] for x, v in feats.features.items()}, {y: v[keep] for y, v in feats.labels.items()}, stored["silhouette"]["x"], stored["silhouette"]["y"])
        assert np.allclose(np.asarray(stored["silhouette_by_camera"][camera]["silhouette"], dtype=float), np.asarray(again["silhouette"], dtype=float), equal_nan=True)
    # the stored matrices and those recomputed from the run's features.npz are the same numbers (2 x 5 x 4 entries)
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "features.npz").write_bytes((tmp_path / "run" / "features.npz").read_bytes())
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "ufe_compare.py"), str(tmp_path / "copy"), str(tmp_path / "run")], capture_output=True, text=True, check=True).stdout
    assert "0 of 40 entries worse, 0 better" in out, out


def test_ufe_leak_tells_a_shift_of_class_means_from_a_difference_of_shapes(tmp_path):
    # "shift": two poses, the same spread, means 0.6 apart along one of 8 coordinates;
    # "shape": the same means, pose 1 four times tighter than pose 0. Camera: half of each.
    rng = np.random.default_rng(0)
    n = 400
    pose, camera = np.arange(n) % 2, (np.arange(n) // 2) % 2
    shift = rng.standard_normal((n, 8))
    shift[:, 0] += 0.6 * pose
    shape = rng.standard_normal((n, 8)) * np.where(pose == 1, 0.25, 1.0)[:, None]
    script = str(ROOT / "scripts" / "ufe_leak.py")
    silhouettes = {}
    for name, f in (("shift", shift), ("shape", shape)):
        np.savez(tmp_path / f"{name}.npz", **{"features/others": f, "labels/pose": pose, "labels/camera": camera})
        out = subprocess.run([sys.executable, script, str(tmp_path / f"{name}.npz"), "--feature", "others", "--label", "pose", "--within", "camera"], capture_output=True, text=True, check=True).stdout
        whole, removed = (float(v) for v in re.search(r"on the others feature: ([-+0-9.]+); with the class means removed: ([-+0-9.]+)", out).groups())
        inside = [float(v) for v in re.findall(r"inside camera \d \(200 samples\): ([-+0-9.]+)", out)]
        mean, sd, top = (float(v) for v in re.search(r"labels shuffled \(30 draws\): mean ([-+0-9.]+), sd ([0-9.]+), largest ([-+0-9.]+)", out).groups())
        assert abs(mean) < 0.003 and 0 < sd < 0.003 and top < whole  # no class structure once shuffled; both real ones stand above it
        silhouettes[name] = whole, removed, inside
    whole, removed, inside = silhouettes["shift"]
    assert whole > 0.005 and removed < 0.0 and len(inside) == 2 and min(inside) > 0.005  # the shift holds it, in each camera
    whole, removed, _ = silhouettes["shape"]
    assert whole > 0.05 and removed > 0.05 and abs(whole - removed) < 0.02  # the tight class holds it, the means do not


def test_ufe_leak_locates_a_shift_among_principal_directions_and_centres_the_within_label(tmp_path):
    # A camera axis of large variance (coordinate 0, the two cameras 8 apart), 10 coordinates of
    # unit spread and 5 of spread 0.1. "mix": the poses hold the cameras in different shares (70% /
    # 30% camera 1), nothing else; "shift": in each camera, pose 1 moved by 1 along the camera axis
    # and by 0.2 along each of the 5 narrow coordinates.
    rng = np.random.default_rng(0)
    n = 800
    pose = np.arange(n) % 2
    script = str(ROOT / "scripts" / "ufe_leak.py")
    results, pushes = {}, {}
    for name in ("mix", "shift"):
        camera = (rng.random(n) < np.where(pose == 1, 0.7, 0.3)).astype(int) if name == "mix" else (np.arange(n) // 2) % 2
        f = rng.standard_normal((n, 16)) * np.r_[np.ones(11), np.full(5, 0.1)]
        f[:, 0] += 8.0 * camera
        if name == "shift":
            f[:, 0] += pose
            f[:, 11:] += 0.2 * pose[:, None]
        np.savez(tmp_path / f"{name}.npz", **{"features/others": f, "labels/pose": pose, "labels/camera": camera})
        out = subprocess.run([sys.executable, script, str(tmp_path / f"{name}.npz"), "--feature", "others", "--label", "pose", "--within", "camera"], capture_output=True, text=True, check=True).stdout
        centred, before = (float(v) for v in re.search(r"each camera centred: means' scatter ([0-9.]+) \(before ([0-9.]+)\)", out).groups())
        silhouette = float(re.search(r"silhouette of pose on the others feature: ([-+0-9.]+);", out).group(1))
        null_mean, null_sd, null_top = (float(v) for v in re.search(r"shuffled inside each camera \(\d+ draws\): mean ([-+0-9.]+), sd ([0-9.]+), largest ([-+0-9.]+)", out).groups())
        share = float(re.search(r"the camera classes' share of the feature's variance: ([0-9.]+)", out).group(1))
        assert 0.5 < share < 0.7, share  # 16 of 16 + 11: the cameras 8 apart, about half of each, against 11 unit coordinates
        inside = re.findall(r"inside camera \d \(\d+ samples\): ([-+0-9.]+) \(shuffled there, \d+ draws: mean ([-+0-9.]+), sd ([0-9.]+), largest ([-+0-9.]+)\)", out)
        assert len(inside) == 2
        if name == "mix":  # the cameras' mix alone holds the silhouette: pose shuffled inside each camera scores as much
            assert silhouette > 0.05 and abs(silhouette - null_mean) < 3 * null_sd + 0.005, (silhouette, null_mean, null_sd)
            # and inside one camera there is no pose to find: each reads as its own shuffles do
            assert all(abs(float(v) - float(m)) < 3 * float(sd) + 0.002 for v, m, sd, _ in inside), inside
        else:  # the cameras evenly mixed: the shift inside each camera scores above every shuffle
            assert silhouette > null_top + 0.005, (silhouette, null_top)
            assert all(float(v) > float(top) for v, _, _, top in inside), inside
        raw, whitened = (float(v) for v in re.search(r"leading   5: ([0-9.]+) / ([0-9.]+)", out).groups())
        assert "in the principal directions 1-5 / 6-16:" in out
        pushes[name] = {form: [float(v) for v in re.search(rf"{form} *: ([0-9.e+-]+) / ([0-9.e+-]+)", out).groups()] for form in ("whitened", "unwhitened")}
        results[name] = centred, before, raw, whitened
    centred, before, _, _ = results["mix"]
    assert before > 1.0 and centred < 0.05 * before  # 0.25 * (0.4 * 8)^2 = 2.56 from the mix alone; centring the cameras removes it
    centred, before, raw, whitened = results["shift"]
    assert 0.25 < centred < 0.38 and abs(centred - before) < 0.03  # 0.25 * (1 + 5 * 0.04) in each camera (+ ~0.015 by chance): centring keeps it
    # 0.25 of 0.30 lies along the leading (camera) direction; whitened, that direction counts 1 / 17 and the narrow ones ~5
    assert raw > 0.75 and whitened < 0.2, (raw, whitened)
    # The pair's L_ind term pushes those means mostly along the narrow directions when whitened,
    # mostly along the leading one when not (measured: 0.06 / 0.68 of the push in directions 1-5).
    share = {form: leading / (leading + rest) for form, (leading, rest) in pushes["shift"].items()}
    assert share["whitened"] < 0.2 and share["unwhitened"] > 0.5, share


def test_ufe_training_features_encodes_the_run_s_own_training_images(tmp_path):
    import torch

    from facefactors.cli.main import main
    from facefactors.config import load_saved_config
    from facefactors.metrics.features import load_features
    from facefactors.train.ufe import UFETrainConfig, load_ufe
    from facefactors.train.ufe_data import render_world_set, world_a_config

    main(["ufe", "train", "--preset", "tiny", "--out", str(tmp_path / "run"), "--set", "data.labelled=[identity, expression]"])
    script = str(ROOT / "scripts" / "ufe_training_features.py")
    subprocess.run([sys.executable, script, str(tmp_path / "run"), "--n", "10", "--seed", "3"], capture_output=True, text=True, check=True)
    written = load_features(tmp_path / "run" / "training_features.npz")
    # the reference: the same draw from the training split rendered here, encoded by the saved model
    cfg = load_saved_config(UFETrainConfig, tmp_path / "run" / "config.yaml")
    d = cfg.data
    train = render_world_set(world_a_config(d, cfg.model.image_size), "train", d.train_identities, d.images_per_identity, "", False)
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(3))[:10].sort().values
    with torch.no_grad():
        expected = load_ufe(tmp_path / "run").encode(train.batch(idx)["image"])
    for name, f in expected.items():
        np.testing.assert_allclose(written.features[name], f.numpy(), atol=1e-6)
    # every factor labelled, also those the run trained without (pose, lighting)
    for factor in ("identity", "pose", "lighting"):
        np.testing.assert_array_equal(written.labels[factor], train.labels[factor][idx].numpy())
    res = subprocess.run([sys.executable, script, str(tmp_path / "run"), "--n", "1000"], capture_output=True, text=True)
    assert res.returncode == 2 and "--n 1000: the run's training set has 24 images; ask for 2 to 24" in res.stderr and "Traceback" not in res.stderr
    # by people: 3 random people, 2 of their 4 images each
    subprocess.run([sys.executable, script, str(tmp_path / "run"), "--people", "3", "--per-person", "2", "--out", str(tmp_path / "people.npz")], capture_output=True, text=True, check=True)
    people = load_features(tmp_path / "people.npz").labels["identity"]
    assert len(people) == 6 and len(np.unique(people)) == 3 and (np.bincount(people)[np.unique(people)] == 2).all()
    res = subprocess.run([sys.executable, script, str(tmp_path / "run"), "--people", "3", "--per-person", "5"], capture_output=True, text=True)
    assert res.returncode == 2 and "the run trained on 6 people with 4 images each" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([sys.executable, script, str(tmp_path / "nothing")], capture_output=True, text=True)
    assert res.returncode == 2 and "config.yaml" in res.stderr and "Traceback" not in res.stderr


def test_ufe_leak_tells_a_shift_shared_by_the_people_from_one_each_person_makes_their_own_way(tmp_path):
    # 40 people x 20 images, 16 coordinates: each person's own mean (spread 0.5) plus noise (0.5).
    # "shared": pose 1 moved by 1 along coordinate 0 for everyone; "own": each person's pose 1
    # moved by 1 along a direction of its own. Both hold pose; only the first is one direction.
    rng = np.random.default_rng(0)
    people, per = 40, 20
    person = np.repeat(np.arange(people), per)
    pose = rng.integers(0, 2, people * per)
    script = str(ROOT / "scripts" / "ufe_leak.py")
    results = {}
    for name in ("shared", "own"):
        f = 0.5 * rng.standard_normal((people, 16))[person] + 0.5 * rng.standard_normal((people * per, 16))
        if name == "shared":
            f[:, 0] += pose
        else:
            ways = rng.standard_normal((people, 16))
            f += pose[:, None] * (ways / np.linalg.norm(ways, axis=1, keepdims=True))[person]
        np.savez(tmp_path / f"{name}.npz", **{"features/others": f, "labels/pose": pose, "labels/identity": person})
        out = subprocess.run([sys.executable, script, str(tmp_path / f"{name}.npz"), "--feature", "others", "--label", "pose",
                              "--erase-from", str(tmp_path / "shared.npz")], capture_output=True, text=True, check=True).stdout
        whole = float(re.search(r"on the others feature: ([-+0-9.]+);", out).group(1))
        top = float(re.search(r"shuffled inside each identity \(30 draws\): mean [-+0-9.]+, sd [0-9.]+, largest ([-+0-9.]+)", out).group(1))
        share, before, after = (float(v) for v in re.search(r"along them ([0-9.]+); its silhouette ([-+0-9.]+) -> ([-+0-9.]+)", out).groups())
        erase_share, _, erased = (float(v) for v in re.search(r"shared.npz removed: share of these means' scatter along them ([0-9.]+); silhouette ([-+0-9.]+) -> ([-+0-9.]+)", out).groups())
        results[name] = whole, top, share, before, after, erase_share, erased
    whole, top, share, before, after, erase_share, erased = results["shared"]  # measured: 0.026, 0.0005, 0.88, 0.024, 0.001, 1.0, -0.001
    assert whole > 10 * top  # the people's uneven shares of the two poses do not make it
    assert share > 0.8 and after < 0.2 * before and erase_share > 0.99 and erased < 0
    # each person's own direction: what one half's means share with the other's is chance (about
    # 1 / 16), and the shared direction fitted in the other file holds none of it (measured 0.14, 0.0)
    _, _, share, _, _, erase_share, _ = results["own"]
    assert share < 0.3 and erase_share < 0.1
    bad = tmp_path / "narrow.npz"
    np.savez(bad, **{"features/others": np.zeros((4, 3)), "labels/pose": np.array([0, 1, 0, 1])})
    failed = subprocess.run([sys.executable, script, str(tmp_path / "own.npz"), "--feature", "others", "--label", "pose", "--erase-from", str(bad)], capture_output=True, text=True)
    assert failed.returncode != 0 and "3 dimensions" in failed.stderr and "Traceback" not in failed.stderr


def test_ufe_twin_distance_measures_each_feature_against_its_pose_twin(tmp_path):
    import torch

    from facefactors.cli.main import main
    from facefactors.config import load_saved_config
    from facefactors.train.ufe import UFETrainConfig, load_ufe
    from facefactors.train.ufe_data import render_twins, render_world_set, world_a_config

    main(["ufe", "train", "--preset", "tiny", "--out", str(tmp_path / "run")])
    script = str(ROOT / "scripts" / "ufe_twin_distance.py")
    out = subprocess.run([sys.executable, script, str(tmp_path / "run")], capture_output=True, text=True, check=True).stdout
    printed = {m[0]: (float(m[1]), float(m[2]), float(m[3])) for m in re.findall(r"(\w+) *: twin ([0-9.]+) +same person ([0-9.]+) +ratio ([0-9.]+)", out)}
    # the reference, pair by pair: the held-out set (4 people x 4) and its pose twins, encoded here
    cfg = load_saved_config(UFETrainConfig, tmp_path / "run" / "config.yaml")
    d = cfg.data
    wcfg = world_a_config(d, cfg.model.image_size)
    test = render_world_set(wcfg, "test", d.test_identities, d.test_images_per_identity, "", False)
    twins = render_twins(wcfg, test, "pose", "", False)
    model = load_ufe(tmp_path / "run")
    with torch.no_grad():
        f, g = model.encode(test.batch(range(len(test)))["image"]), model.encode(twins.float() / 255)
    person = test.labels["identity"].tolist()
    assert set(printed) == set(f) == {"identity", "expression", "lighting", "pose", "others"}
    for name in f:
        dim = f[name].shape[1]
        twin = sum(float(((f[name][k] - g[name][k]) ** 2).sum()) for k in range(len(test))) / len(test) / dim
        pairs = [float(((f[name][a] - f[name][b]) ** 2).sum()) / dim for a in range(len(test)) for b in range(a + 1, len(test)) if person[a] == person[b]]
        assert len(pairs) == 4 * 6
        assert printed[name][0] == pytest.approx(twin, abs=1e-4) and printed[name][1] == pytest.approx(sum(pairs) / len(pairs), abs=1e-4)
    # --silhouette: the silhouettes by pose against a direct reading of the definition
    out = subprocess.run([sys.executable, script, str(tmp_path / "run"), "--silhouette", "--shuffles", "3"], capture_output=True, text=True, check=True).stdout
    sil = {m[0]: [float(v) for v in m[1:]] for m in re.findall(r"(\w+) *: set ([-+0-9.]+) +shuffled ([-+0-9.]+) sd [0-9.]+ max [-+0-9.]+ +at 0 ([-+0-9.]+) +at 1 ([-+0-9.]+) +with twins ([-+0-9.]+)", out)}
    pose = test.labels["pose"].numpy()
    assert set(sil) == set(f) and 0 < pose.sum() < len(pose)

    def silhouette(x, y):
        d = torch.cdist(x.double(), x.double()).numpy()
        scores = []
        for i in range(len(y)):
            own = (y == y[i]) & (np.arange(len(y)) != i)
            a = d[i, own].mean()
            b = min(d[i, y == c].mean() for c in set(y.tolist()) if c != y[i])
            scores.append((b - a) / max(a, b))
        return float(np.mean(scores))

    for name in f:
        at0 = torch.where(torch.as_tensor(pose == 0)[:, None], f[name], g[name])
        at1 = torch.where(torch.as_tensor(pose == 1)[:, None], f[name], g[name])
        both = silhouette(torch.cat([f[name], g[name]]), np.concatenate([pose, 1 - pose]))
        assert sil[name][0] == pytest.approx(silhouette(f[name], pose), abs=1e-4)
        assert sil[name][2:] == pytest.approx([silhouette(at0, pose), silhouette(at1, pose), both], abs=1e-4)
        assert -1 <= sil[name][1] <= 1
    for args, message in ((["--factor", "camera"], "--factor camera: one of"), (["--people", "9"], "has 4 people; ask for 2 to 4"),
                          (["--factor", "identity", "--silhouette"], "needs a factor of two classes"), (["--silhouette", "--shuffles", "-1"], "give 0 or more")):
        res = subprocess.run([sys.executable, script, str(tmp_path / "run"), *args], capture_output=True, text=True)
        assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr


def test_ufe_pin_idle_pins_a_planted_idle_unit_into_a_new_run(tmp_path):
    import json

    import torch

    from facefactors.cli.main import main
    from facefactors.train.ufe import load_ufe
    from facefactors.utils.io import load_weights, save_weights

    main(["ufe", "train", "--preset", "tiny", "--out", str(tmp_path / "run")])
    weights, meta = load_weights(tmp_path / "run" / "weights.safetensors")
    weights["encoder.projections.pose.weight"][1] *= 1e-5  # a unit training left unused
    save_weights(tmp_path / "run" / "weights.safetensors", weights, meta)
    script = str(ROOT / "scripts" / "ufe_pin_idle.py")
    out = subprocess.run([sys.executable, script, str(tmp_path / "run"), "--out", str(tmp_path / "pinned")], capture_output=True, text=True, check=True).stdout
    metrics = json.loads((tmp_path / "pinned" / "metrics.json").read_text())
    assert 1 in metrics["pinned"]["pose"] and "pose [" in out and metrics["pinned_from"] == str(tmp_path / "run")
    assert {"weak_classifier", "silhouette"} <= set(metrics["held_out_matrices"]) and (tmp_path / "pinned" / "features.npz").is_file()
    pinned = load_ufe(tmp_path / "pinned")
    assert pinned.encoder.projections["pose"].weight[1].abs().max() == 0
    original = load_ufe(tmp_path / "run")
    for name in ("identity", "expression", "others"):  # untouched subspaces keep their weights
        assert torch.equal(pinned.encoder.projections[name].weight, original.encoder.projections[name].weight) or name in metrics["pinned"]
    for args, message in ((["--out", str(tmp_path / "pinned")], "not empty"), (["--out", str(tmp_path / "x"), "--max-std", "0"], "must be > 0")):
        res = subprocess.run([sys.executable, script, str(tmp_path / "run"), *args], capture_output=True, text=True)
        assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr


def test_ufe_leak_reads_the_person_from_within_each_class_only_where_it_lives_there(tmp_path):
    # The expression feature as class codes. "within": each person shows every class a little
    # their own way (a small personal offset); "mix": nothing personal, but each person shows one
    # class far more often than the others, so the codes alone tell the people apart in part.
    rng = np.random.default_rng(0)
    people, per_person, classes = 12, 40, 3
    person = np.repeat(np.arange(people), per_person)
    codes = 4.0 * rng.standard_normal((classes, 8))
    script = str(ROOT / "scripts" / "ufe_leak.py")
    read = {}
    for name in ("within", "mix"):
        if name == "within":
            expression = rng.integers(0, classes, len(person))
            offset = 0.5 * rng.standard_normal((people, 8))[person]
        else:
            expression = np.where(rng.random(len(person)) < 0.8, person % classes, rng.integers(0, classes, len(person)))
            offset = 0.0
        f = codes[expression] + offset + 0.3 * rng.standard_normal((len(person), 8))
        np.savez(tmp_path / f"{name}.npz", **{"features/expression": f, "labels/identity": person, "labels/expression": expression})
        out = subprocess.run([sys.executable, script, str(tmp_path / f"{name}.npz"), "--feature", "expression", "--label", "identity", "--within", "expression"],
                             capture_output=True, text=True, check=True).stdout
        read[name] = [float(v) for v in re.search(r"identity read from it ([0-9.]+) \(before ([0-9.]+)\)", out).groups()]
    chance = 1 / people
    centred, before = read["within"]
    assert centred > 5 * chance and abs(centred - before) < 0.15  # the person stays once the classes are centred
    centred, before = read["mix"]
    assert before > 2 * chance and centred < 1.6 * chance  # the classes' shares alone: centring removes it


def test_ufe_leak_null_separates_a_small_real_leak_from_shuffled_labels(tmp_path):
    # 10 people x 20 images; "leak": each person's offset, small against the noise; "none": noise.
    rng = np.random.default_rng(0)
    person = np.repeat(np.arange(10), 20)
    script = str(ROOT / "scripts" / "ufe_leak.py")
    found = {}
    for name, scale in (("leak", 0.6), ("none", 0.0)):
        f = scale * rng.standard_normal((10, 16))[person] + rng.standard_normal((len(person), 16))
        np.savez(tmp_path / f"{name}.npz", **{"features/expression": f, "labels/identity": person})
        out = subprocess.run([sys.executable, script, str(tmp_path / f"{name}.npz"), "--feature", "expression", "--label", "identity", "--null", "20"],
                             capture_output=True, text=True, check=True).stdout
        read, ratio = (float(v) for v in re.search(r"identity read from the expression feature: ([0-9.]+) = ([0-9.]+)x majority chance", out).groups())
        mean, p95, share = (float(v) for v in re.search(r"shuffled \(20 draws\): mean ([0-9.]+), sd [0-9.]+, 95th percentile ([0-9.]+) = [0-9.]+x, largest [0-9.]+ = [0-9.]+x; share at or above [0-9.]+: ([0-9.]+)", out).groups())
        assert abs(ratio - read / 0.1) < 0.02  # majority chance of 10 equal classes
        found[name] = (read, mean, p95, share)
    read, mean, p95, share = found["leak"]
    assert read > p95 and share == 0.0  # the person is there: no shuffle reads as much
    read, mean, p95, share = found["none"]
    assert abs(mean - 0.1) < 0.03 and share > 0.05  # the shuffles read chance, and as much as the feature
    # --null-within: each person shows mostly one of 4 expressions and the feature holds the
    # expression alone; it reads the person through that mix, far above the plain shuffles, and as
    # much as identity shuffled inside each expression ("mix"); a person's own offset reads more ("leak")
    expression = np.where(rng.random(len(person)) < 0.7, person % 4, rng.integers(0, 4, len(person)))
    for name, scale in (("mix", 0.0), ("leak", 1.0)):
        f = 3.0 * np.eye(4)[expression] @ rng.standard_normal((4, 16)) + scale * rng.standard_normal((10, 16))[person] + rng.standard_normal((len(person), 16))
        np.savez(tmp_path / f"{name}.npz", **{"features/expression": f, "labels/identity": person, "labels/expression": expression})
        out = subprocess.run([sys.executable, script, str(tmp_path / f"{name}.npz"), "--feature", "expression", "--label", "identity", "--null", "20", "--null-within", "expression"],
                             capture_output=True, text=True, check=True).stdout
        read = float(re.search(r"identity read from the expression feature: ([0-9.]+)", out).group(1))
        plain_top = float(re.search(r"shuffled \(20 draws\): .*largest ([0-9.]+) =", out).group(1))
        within_mean, within_top, share = (float(v) for v in re.search(r"shuffled inside each expression \(20 draws\): mean ([0-9.]+) = .*largest ([0-9.]+) = [0-9.]+x; share at or above [0-9.]+: ([0-9.]+)", out).groups())
        assert read > plain_top, (name, read, plain_top)
        if name == "mix":
            assert abs(read - within_mean) < 0.08 and share > 0.05, (read, within_mean, share)
        else:
            assert read > within_top and share == 0.0, (read, within_top)
    res = subprocess.run([sys.executable, script, str(tmp_path / "mix.npz"), "--feature", "expression", "--label", "identity", "--null-within", "expression"], capture_output=True, text=True)
    assert res.returncode == 2 and "give --null N as well" in res.stderr and "Traceback" not in res.stderr


def _load_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ufe_hair_floor_likelihood_is_the_clamped_uniform_draw():
    floor = _load_script("ufe_hair_floor")
    centres = np.array([[0.5, 0.5], [0.05, 0.5]])  # the second person's volume box reaches past 0
    hair = np.array([[0.5, 0.5], [0.62, 0.5], [0.0, 0.5], [0.8, 0.5]])
    like = floor.hair_likelihood(hair, centres, spread=0.3)
    density = 1 / 0.3**2
    np.testing.assert_allclose(like[0], [density, 0.0])  # 0.5 is outside [-0.1, 0.2]
    np.testing.assert_allclose(like[1], [density, 0.0])
    np.testing.assert_allclose(like[2], [0.0, (0.1 / 0.3) / 0.3])  # the pile at 0 holds a third of the draws
    np.testing.assert_allclose(like[3], [0.0, 0.0])


def test_ufe_hair_floor_bayes_reader_beats_every_reader_and_matches_the_world_s_own_draws(tmp_path):
    # Independent reference: each person's hair distribution as a histogram of fresh draws from the
    # world's own sampler (no knowledge of HAIR_SPREAD); its reader can only fall short of the
    # exact Bayes reader, by the histogram's blur at the distributions' edges.
    from facefactors.config import load_config
    from facefactors.train.ufe import UFETrainConfig

    floor = _load_script("ufe_hair_floor")
    overrides = ["data.test_identities=20", "data.test_images_per_identity=10"]
    cfg = load_config(UFETrainConfig, "ufe", "tiny", overrides)
    params, labels = floor.held_out_hair(cfg)
    exact = floor.bayes_accuracy(params, labels)
    from facefactors.experiments.ufe import world_a_config
    from facefactors.world.world import FaceWorld

    world = FaceWorld(world_a_config(cfg.data, cfg.model.image_size))
    hair = params.hair[:, :2].double().numpy()
    people = np.unique(labels)
    edges = np.linspace(0, 1, 31)
    cell = np.clip(np.searchsorted(edges, hair, side="right") - 1, 0, 29)
    density = []
    for k, p in enumerate(people):
        local = int(params.identity_label[labels == p][0])
        fresh = world.sample_params(np.arange(4000) + 10**7 + 4000 * k, "test", identities=local).hair[:, :2].double().numpy()
        density.append(np.histogram2d(fresh[:, 0], fresh[:, 1], bins=[edges, edges])[0])
    like = np.stack(density)[:, cell[:, 0], cell[:, 1]].T
    winners = like == like.max(1, keepdims=True)
    empirical = float(((winners & (people[None] == labels[:, None])).sum(1) / winners.sum(1)).mean())
    assert exact - 0.05 < empirical <= exact + 0.01, (exact, empirical)
    others = floor.other_readers(hair, labels)
    assert max(others.values()) <= exact + 0.01, (exact, others)
    assert exact > 3 / len(people)  # hair style tells these people apart well above chance
    # The image's own part: the offsets are the world's uniform draws (the person's own subtracted),
    # so inside (0, 1) they are the same for everyone; only the clamp can tell people apart.
    from facefactors.world.world import HAIR_SPREAD

    own = floor.image_own_hair(params)
    inside = ((hair > 0) & (hair < 1)).all(1)
    assert np.abs(own[inside, :2]).max() <= HAIR_SPREAD / 2 + 1e-6
    assert max(floor.other_readers(own[inside], labels[inside]).values()) < 2 / len(people)

    script = str(ROOT / "scripts" / "ufe_hair_floor.py")
    sets = sum((["--set", o] for o in overrides), [])
    out = subprocess.run([sys.executable, script, "--preset", "tiny", *sets], capture_output=True, text=True, check=True).stdout
    assert f"Bayes reader     {exact:.3f}" in out
    np.savez(tmp_path / "features.npz", **{"features/others": np.zeros((len(labels), 2)), "labels/identity": (labels + 1) % len(people)})
    err = subprocess.run([sys.executable, script, "--preset", "tiny", *sets, "--run", str(tmp_path)], capture_output=True, text=True).stderr
    assert "no 'others' feature of world_a's held-out set of the 'tiny' preset" in err and "Traceback" not in err


def test_ufe_others_person_fixes_the_hair_step_by_step():
    import torch

    from facefactors.world.identity import A

    person = _load_script("ufe_others_person")
    gen = torch.Generator().manual_seed(0)

    class Params:  # the two FaceParams fields the fixes touch, and replace()
        def __init__(self, hair, albedo, shape):
            self.hair, self.albedo, self.shape = hair, albedo, shape

        def replace(self, **fields):
            return Params(**{**vars(self), **fields})

    p = Params(torch.rand(5, 4, generator=gen), torch.rand(5, len(A), generator=gen), torch.rand(5, 3, generator=gen))
    ref = Params(torch.rand(9, 4, generator=gen), torch.rand(9, len(A), generator=gen), torch.rand(9, 3, generator=gen))
    before = Params(p.hair.clone(), p.albedo.clone(), p.shape.clone())
    q = person.fixed_params(p, [("hair", None), ("albedo", ("hairline",)), ("albedo", ("hair_dark",))], ref)
    assert torch.equal(q.hair, ref.hair.median(0).values.expand(5, 4))  # every image the same style
    fixed = [A["hairline"], A["hair_dark"]]
    assert torch.equal(q.albedo[:, fixed], torch.stack([ref.albedo[:, k].median() for k in fixed]).expand(5, 2))
    kept = [k for k in range(len(A)) if k not in fixed]
    assert torch.equal(q.albedo[:, kept], p.albedo[:, kept]) and torch.equal(q.shape, p.shape)
    assert all(torch.equal(getattr(p, f), getattr(before, f)) for f in ("hair", "albedo", "shape"))  # the input is left alone


def test_ufe_others_person_reads_identity_from_each_feature_of_a_run(tmp_path):
    import torch

    from facefactors.cli.main import main
    from facefactors.config import load_saved_config
    from facefactors.experiments import ufe_eval as ev
    from facefactors.metrics.subspace import cv_accuracy
    from facefactors.train.ufe import UFETrainConfig, load_ufe
    from facefactors.train.ufe_data import FaceTensorSet, render_world_set, world_a_config
    from facefactors.world.identity import A
    from facefactors.world.world import FaceWorld

    main(["ufe", "train", "--preset", "tiny", "--out", str(tmp_path / "run")])
    script = str(ROOT / "scripts" / "ufe_others_person.py")
    out = subprocess.run([sys.executable, script, str(tmp_path / "run")], capture_output=True, text=True, check=True).stdout
    rows = {m[0].strip(): (float(m[1]), float(m[2])) for m in re.findall(r"^([a-z+ ]+?) +([0-9.]+)x +([0-9.]+)x$", out, re.M)}
    assert list(rows) == ["as drawn", "hair style fixed", "+ hairline fixed", "+ hair colour fixed", "+ face shape fixed"]
    # the reference: the held-out set as drawn, and rendered by hand with all four fixed
    cfg = load_saved_config(UFETrainConfig, tmp_path / "run" / "config.yaml")
    d = cfg.data
    wcfg = world_a_config(d, cfg.model.image_size)
    test = render_world_set(wcfg, "test", d.test_identities, d.test_images_per_identity, "", False)
    world = FaceWorld(wcfg)
    p = world.sample_params(test.index, "test", identities=test.labels["identity"])
    hair, albedo, shape = p.hair.clone(), p.albedo.clone(), p.shape.clone()
    hair[:] = p.hair.median(0).values
    for name in ("hairline", "hair_dark", "hair_red"):
        albedo[:, A[name]] = p.albedo[:, A[name]].median()
    shape[:] = p.shape.median(0).values
    fixed = (world.render(p.replace(hair=hair, albedo=albedo, shape=shape)).image * 255).round().to(torch.uint8)
    model = load_ufe(tmp_path / "run")
    labels = test.labels["identity"].numpy()
    chance = np.bincount(labels).max() / len(labels)
    for row, data in (("as drawn", test), ("+ face shape fixed", FaceTensorSet(fixed, test.labels, test.description))):
        feats = ev.encode_set(model, data)
        expected = [cv_accuracy(feats[f].astype(np.float64), labels)[0] / chance for f in ("others", "identity")]
        assert rows[row] == pytest.approx(expected, abs=0.006), row
    res = subprocess.run([sys.executable, script, str(tmp_path / "run"), "--features", "others,hair"], capture_output=True, text=True)
    assert res.returncode == 2 and "--features hair: the run has no such subspace" in res.stderr and "Traceback" not in res.stderr
