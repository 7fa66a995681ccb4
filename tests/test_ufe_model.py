"""UFE model: attributes from the description, shapes at 64 and 128, composites of features."""

import pytest
import torch

from facefactors.data.description import DatasetDescription, Factor
from facefactors.models.ufe import OTHERS, UFE, UFEConfig, attributes_from_description, mix_features
from facefactors.utils.errors import UserError


def description(labelled=("identity", "expression", "lighting", "pose")):
    return DatasetDescription(
        "world-a",
        (
            Factor("identity", class_names=tuple(f"id{i}" for i in range(10))),
            Factor("expression", class_names=("neutral", "smile", "sadness", "surprise", "anger", "disgust")),
            Factor("lighting", class_names=tuple(f"l{i}" for i in range(20))),
            Factor("pose", class_names=("0", "30")),
            Factor("age", class_names=("young", "middle", "old"), group="identity"),
            Factor("yaw", kind="continuous"),
        ),
        labelled=labelled,
    )


def test_attributes_come_from_the_description():
    assert attributes_from_description(description()) == ["identity", "expression", "lighting", "pose"]
    assert attributes_from_description(description(("age", "yaw"))) == ["age"]  # continuous factors are not subspaces
    assert attributes_from_description(description(), ["expression"]) == ["expression"]
    with pytest.raises(UserError, match="continuous"):
        attributes_from_description(description(), ["yaw"])
    with pytest.raises(UserError, match="not a factor"):
        attributes_from_description(description(), ["hair"])
    with pytest.raises(UserError, match="no categorical"):
        attributes_from_description(description(("yaw",)))


@pytest.mark.parametrize("size,channels", [(64, [16, 16, 32, 32]), (128, [16, 16, 32, 32, 32])])
def test_shapes(size, channels):
    cfg = UFEConfig(image_size=size, feature_dim=128, encoder_channels=channels, decoder_channel_base=256, decoder_channel_max=32)
    model = UFE(description(), cfg)
    x = torch.rand(2, 3, size, size)
    feats, recon = model(x)
    assert model.feature_names == ["identity", "expression", "lighting", "pose", OTHERS]
    for n in model.feature_names:
        f = feats[n]
        assert f.shape == (2, 128)
        assert (f > 0).all() and (f < 1).all()  # sigmoid: one value range for every subspace
    assert recon.shape == (2, 3, size, size)
    probs = model.predict(x)
    assert {a: p.shape for a, p in probs.items()} == {"identity": (2, 10), "expression": (2, 6), "lighting": (2, 20), "pose": (2, 2)}
    assert torch.allclose(probs["lighting"].sum(-1), torch.ones(2))
    assert model.style(feats).shape == (2, 5 * 128)
    with pytest.raises(ValueError, match="expected shape"):
        model.encode(torch.rand(2, 3, size // 2, size // 2))


def test_mix_features_by_name_and_by_mask():
    a = {"identity": torch.zeros(3, 2), "expression": torch.zeros(3, 2), OTHERS: torch.zeros(3, 2)}
    b = {k: torch.ones(3, 2) for k in a}
    m = mix_features(a, b, ["expression"])
    assert m["expression"].eq(1).all() and m["identity"].eq(0).all() and m[OTHERS].eq(0).all()
    m = mix_features(a, b, {"identity": torch.tensor([True, False, True])})
    assert m["identity"][:, 0].tolist() == [1.0, 0.0, 1.0] and m["expression"].eq(0).all()
