"""Composites (paper sec. 4.6): feature swaps decode what the mixed features say; grids; errors."""

import pytest
import torch

from facefactors.edit.composite import composite, composite_error, composite_grid, repose, save_grid
from test_ufe_losses import tiny_model


def test_composite_equals_decoding_mixed_features():
    torch.manual_seed(0)
    model = tiny_model().eval()
    a, b = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    out = composite(model, a, b, ["expression"])
    fa, fb = model.encode(a), model.encode(b)
    fa["expression"] = fb["expression"]
    assert torch.allclose(out, model.decode(fa, "const").clamp(0, 1), atol=1e-6)
    # Taking nothing from B is A's reconstruction; taking everything is B's.
    assert torch.allclose(composite(model, a, b, model.feature_names), composite(model, b, a, []), atol=1e-6)
    with pytest.raises(ValueError, match="subspaces"):
        composite(model, a, b, ["hair"])
    with pytest.raises(ValueError, match="subspaces"):
        repose(model, a, b)  # this toy model has no pose subspace


def test_grid_shapes_and_png(tmp_path):
    model = tiny_model().eval()
    src = {"identity": torch.rand(3, 3, 32, 32), "expression": torch.rand(3, 3, 32, 32)}
    grid = composite_grid(model, src, "identity")
    assert grid.shape == (3, 3, 3, 32, 32)  # 2 source columns + composite
    path = save_grid(grid, tmp_path / "g.png")
    from PIL import Image

    im = Image.open(path)
    assert im.size == (3 * 34 + 2, 3 * 34 + 2)


def test_composite_error_values():
    x = torch.rand(2, 3, 32, 32)
    e = composite_error(x, x)
    assert e["l1"] == 0.0 and e["ssim"] == pytest.approx(1.0, abs=1e-4)
    e2 = composite_error(x, (x + 0.1).clamp(0, 1))
    assert 0 < e2["l1"] <= 0.1 + 1e-6 and e2["ssim"] < 1.0
