"""`facefactors evaluate` end to end on a synthetic features.npz: known-perfect codes score ~1,
random codes ~0; metrics.json, report.md (+ figures) and report.html are written; bad input
gives a one-line error."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facefactors.cli.main import main
from facefactors.data.description import DatasetDescription, Factor
from facefactors.metrics.features import load_features, save_features
from facefactors.utils.errors import DataError


def _write_toy(path, perfect: bool, n=200, seed=0):
    rng = np.random.default_rng(seed)
    labels = {"identity": rng.integers(0, 5, n), "expression": rng.integers(0, 3, n)}
    labels["expression"][:7] = -1  # missing labels must be tolerated
    desc = DatasetDescription(
        "toy",
        (Factor("identity", "categorical", tuple("abcde")), Factor("expression", "categorical", ("neutral", "smile", "anger")), Factor("yaw", "continuous")),
        extra={"seed": seed, "split": "test"},
    )
    labels["yaw"] = rng.normal(size=n)
    if perfect:
        codes = np.stack([labels["identity"], labels["expression"]], 1) + 0.01 * rng.normal(size=(n, 2))
        feats = {k: 4 * rng.normal(size=(6, 4))[labels[k]] + rng.normal(size=(n, 4)) for k in ("identity", "expression")}
    else:
        codes = rng.normal(size=(n, 2))
        feats = {k: rng.normal(size=(n, 4)) for k in ("identity", "expression")}
    return save_features(path, {**feats, "codes": codes}, labels, desc)


def test_features_round_trip(tmp_path):
    path = _write_toy(tmp_path / "f.npz", perfect=True)
    fs = load_features(path)
    assert set(fs.features) == {"identity", "expression", "codes"} and fs.num_samples == 200
    assert set(fs.categorical_labels()) == {"identity", "expression"}  # continuous yaw is not a class label
    assert fs.description.extra["split"] == "test"
    f, y = fs.pair("identity", "expression")
    assert f.dtype == np.float64 and f.shape == (200, 4) and np.array_equal(y, fs.labels["expression"])
    with pytest.raises(DataError, match=r"f.npz has no labels/age; known: \['expression', 'identity', 'yaw'\]"):
        fs.pair("identity", "age")


def test_evaluate_perfect_vs_random_codes(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    _write_toy(run / "features.npz", perfect=True)
    (run / "config.yaml").write_text("model:\n  latent_dim: 2\n")
    main(["evaluate", str(run)])
    printed = capsys.readouterr().out
    out = run / "evaluation"
    assert "MIG" in printed and str(out / "report.html") in printed
    good = json.loads((out / "metrics.json").read_text())
    assert good["standard"]["mig"]["mig"] > 0.9 and good["standard"]["dci"]["disentanglement"] > 0.9
    wc = np.array(good["features_suite"]["weak_classifier"]["accuracy"], dtype=float)
    assert wc[0, 0] > 0.9 and wc[1, 1] > 0.9 and wc[0, 1] < 0.6
    assert good["standard"]["rows_dropped_for_missing_labels"] == 7
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for fig in ("weak_classifier", "silhouette", "tsne", "dci_importance", "mig_mutual_information"):
        assert f"figures/{fig}.png" in md and (out / "figures" / f"{fig}.png").stat().st_size > 1000
    assert html.count("data:image/png;base64,") >= 6
    assert "latent_dim: 2" in md and "How to read this" in md and "chance" in md.lower()

    random_npz = _write_toy(tmp_path / "random.npz", perfect=False, seed=1)
    main(["evaluate", str(random_npz), "--out", str(tmp_path / "rnd"), "--metrics", "mig,dci,weak_classifier"])
    bad = json.loads((tmp_path / "rnd" / "metrics.json").read_text())
    assert bad["standard"]["mig"]["mig"] < 0.1 and bad["standard"]["dci"]["disentanglement"] < 0.2
    assert set(bad["standard"]["timings"]) == {"mig", "dci"} and "silhouette" not in bad["features_suite"]


def test_evaluate_bad_input_is_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["evaluate", str(tmp_path / "nothing.npz")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "nothing.npz" in err and "Traceback" not in err
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(DataError, match="junk.npz"):
        load_features(tmp_path / "junk.npz")
    path = _write_toy(tmp_path / "ok.npz", perfect=True)
    with pytest.raises(SystemExit):
        main(["evaluate", str(path), "--metrics", "nonsense"])
    assert "nonsense" in capsys.readouterr().err


def test_registry_lists_every_metric_and_rejects_unknown():
    from facefactors.metrics import available, get_metric
    from facefactors.utils.errors import UserError

    names = set(available())
    expected = {"mig", "dci", "sap", "modularity", "explicitness", "irs", "total_correlation", "beta_vae", "factor_vae", "ds",
                "w_direction_consistency", "projection_correlation", "weak_classifier", "silhouette", "tsne", "linear_probe",
                "verification", "image_quality", "feature_distance"}
    assert expected <= names
    assert set(available("sampler")) == {"beta_vae", "factor_vae"}
    assert get_metric("mig").kind == "codes"
    with pytest.raises(UserError, match="unknown metric"):
        get_metric("nope")


def test_ground_truth_example_extremes(tmp_path):
    from facefactors.metrics.examples import _StandInSampler, ground_truth_example

    class Small(_StandInSampler):
        factor_names = ["a", "b", "c"]
        factor_sizes = [3, 4, 2]

    numbers = ground_truth_example(tmp_path, sampler=Small(), n=450, progress=False)
    gt, rnd = numbers["ground_truth_codes"], numbers["random_codes"]
    assert float(gt["MIG"]) > 0.9 and float(rnd["MIG"]) < 0.1
    assert float(gt["DCI disentanglement"]) > 0.9 and float(rnd["DCI disentanglement"]) < 0.1
    assert (tmp_path / "ground_truth_codes" / "report.html").is_file() and (tmp_path / "random_codes" / "report.md").is_file()
