"""The demo end to end on the tiny preset (slow: renders the world and trains the rater too)."""

import pytest

pytestmark = pytest.mark.slow


def test_tiny_demo_writes_report_and_the_runs_features(tmp_path):
    from facefactors.cli.demo import demo

    demo(str(tmp_path / "demo"), preset="tiny")
    root = tmp_path / "demo"
    assert (root / "report.md").is_file() and (root / "metrics.json").is_file()
    assert (root / "ufe" / "features.npz").is_file()  # what `facefactors evaluate runs/demo/ufe` reads
    assert (root / "features.npz").read_bytes() == (root / "ufe" / "features.npz").read_bytes()
    text = (root / "report.md").read_text()
    assert "composite vs input" in text and "how much of each attribute the decoder draws" in text
    assert "## Judge" in text and "rater` (held out: expression" in text


def test_tiny_multi_dataset_experiment_reports_transfers_against_their_floor(tmp_path, monkeypatch):
    import json

    from facefactors.experiments.ufe import run_experiment

    monkeypatch.chdir(tmp_path)  # the experiment trains its rater under runs/ of the working folder
    report = run_experiment("multi_dataset", "tiny", tmp_path / "multi", progress=False)
    metrics = json.loads((tmp_path / "multi" / "metrics.json").read_text())
    res = metrics["transfers"]
    # World B's attributes are subspaces of the same model as world A's (label-disjoint training).
    assert {"expression", "age", "gender", "eyeglasses"} <= set(res)
    for v in res.values():
        for key in ("transferred", "transferred_floor", "recon_readable"):
            assert v[key] != v[key] or 0.0 <= v[key] <= 1.0  # NaN only when no pair differs
        assert "expression" not in v["others_unchanged"] or 0.0 <= v["others_unchanged"]["expression"] <= 1.0
    text = report.read_text()
    assert "floor" in text and (tmp_path / "multi" / "transfer_age.png").is_file()
    # Both worlds' features are scored on the held-out world-A faces, which carry every label.
    for matrix in ("weak_classifier", "silhouette"):
        assert {"identity", "age", "eyeglasses", "others"} <= set(metrics[matrix]["x"])
        assert {"expression", "gender"} <= set(metrics[matrix]["y"])
    assert "Silhouette" in text and (tmp_path / "multi" / "silhouette.png").is_file()
    assert metrics["judge"] == "runs/rater-tiny" and "runs/rater-tiny` (held out: expression" in text  # the judge, named with its accuracy
