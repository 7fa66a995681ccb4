"""`facefactors world make | show | check` (issue 2, section 5): outputs and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facefactors.cli.main import app
from facefactors.utils.errors import UserError
from facefactors.world import FaceWorld, WorldConfig
from facefactors.world.grid import factor_grid, traversal_strips

runner = CliRunner()



def test_show_writes_a_png_grid(tmp_path):
    out = tmp_path / "grid.png"
    res = runner.invoke(
        app, ["world", "show", "--out", str(out), "--identities", "1", "--size", "24"]
    )
    assert res.exit_code == 0, res.output
    img = np.asarray(Image.open(out))
    assert img.ndim == 3 and img.shape[2] == 3
    # factor grid: 1 identity x 3 lights rows, 6 expressions x 3 poses columns, then 11 strips of 8
    assert img.shape[1] == 2 + 18 * 26
    assert img.shape[0] == (2 + 3 * 26) + 12 + (2 + 11 * 26)


def test_traversal_strip_changes_only_its_factor():
    w = FaceWorld(WorldConfig(seed=0, image_size=24))
    strips = traversal_strips(w, steps=3, image_size=24)
    assert strips.shape == (2 + 11 * 26, 2 + 3 * 26, 3)
    grid = factor_grid(w, identities=1, image_size=24)
    assert grid.shape == (2 + 3 * 26, 2 + 18 * 26, 3)
    # neighbouring tiles of a row differ (the factor changed)
    tile = lambda r, c: strips[2 + r * 26 : 2 + r * 26 + 24, 2 + c * 26 : 2 + c * 26 + 24].astype(
        float
    )
    assert np.abs(tile(1, 0) - tile(1, 1)).mean() > 0.5


def test_show_rejects_a_non_png(tmp_path):
    res = runner.invoke(app, ["world", "show", "--out", str(tmp_path / "grid.jpg")])
    assert (
        res.exit_code != 0 and isinstance(res.exception, UserError) and "png" in str(res.exception)
    )


def test_make_writes_a_world_set(tmp_path):
    pytest.importorskip("facefactors.data.world")
    out = tmp_path / "set"
    res = runner.invoke(
        app,
        [
            "world",
            "make",
            "--out",
            str(out),
            "--split",
            "val",
            "--identities",
            "3",
            "--images-per-identity",
            "2",
            "--size",
            "16",
        ],
    )
    assert res.exit_code == 0, res.output
    images = np.load(out / "images.npy")
    assert images.shape == (6, 16, 16, 3) and images.dtype == np.uint8
    meta = json.loads((out / "world.json").read_text())
    assert "val" in json.dumps(meta)


def test_make_rejects_bad_options(tmp_path):
    res = runner.invoke(app, ["world", "make", "--out", str(tmp_path / "x"), "--split", "dev"])
    assert isinstance(res.exception, UserError) and "--split" in str(res.exception)
    res = runner.invoke(
        app, ["world", "make", "--out", str(tmp_path / "x"), "--identities", "100000"]
    )
    assert isinstance(res.exception, UserError) and "identities" in str(res.exception)
