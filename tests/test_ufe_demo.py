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
