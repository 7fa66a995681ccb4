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


def test_feature_norm_keeps_the_sigmoid_out_of_saturation():
    torch.manual_seed(0)
    cfg = UFEConfig(image_size=32, feature_dim=16, encoder_channels=[8, 8, 8], decoder_channel_base=64, decoder_channel_max=8)
    plain, normed = UFE(description(), cfg), UFE(description(), UFEConfig(**{**cfg.__dict__, "feature_norm": True}))
    assert not any("feature_norms" in k for k in plain.state_dict())  # off: the parameter names of older runs
    normed.load_state_dict(plain.state_dict(), strict=False)
    x = torch.rand(64, 3, 32, 32)
    for model in (plain, normed):  # dense layers scaled up as the heads drive them in training
        with torch.no_grad():
            for p in model.encoder.projections.values():
                p.weight.mul_(50)
    f_plain, f_norm = plain.train().encode(x)["identity"], normed.train().encode(x)["identity"]
    saturated = lambda f: ((f < 0.02) | (f > 0.98)).float().mean()
    assert saturated(f_plain) > 0.5 and saturated(f_norm) < 0.01
    # Per coordinate, the pre-sigmoid values are standardised over the batch: logit(f) ~ N(0, 1).
    z = torch.logit(f_norm)
    assert torch.allclose(z.mean(0), torch.zeros(16), atol=1e-4) and torch.allclose(z.std(0, unbiased=False), torch.ones(16), atol=1e-2)
    # The gradient reaches the dense layer through the unsaturated sigmoid.
    f_norm.sum().backward()
    assert normed.encoder.projections["identity"].weight.grad.abs().sum() > 0
    normed.eval()  # inference uses the running statistics: one image alone is encoded
    assert normed.encode(x[:1])["identity"].shape == (1, 16)


def test_adversary_norm_lets_the_reversed_heads_read_a_coordinate_at_any_amplitude():
    torch.manual_seed(0)
    cfg = UFEConfig(image_size=32, feature_dim=4, encoder_channels=[8, 8, 8], head_hidden=8, decoder_channel_base=64, decoder_channel_max=8, cross_heads=True)
    plain, normed = UFE(description(), cfg), UFE(description(), UFEConfig(**{**cfg.__dict__, "adversary_norm": True}))
    assert not any("adversary_norm" in k for k in plain.state_dict())  # off: the parameter names of older runs
    normed.load_state_dict(plain.state_dict(), strict=False)
    # a feature whose first coordinate varies by 0.05 around a pinned value (a saturated unit),
    # and the same coordinate at full size (20x)
    full = {n: torch.rand(16, 4) for n in plain.feature_names}
    small = {n: f.clone() for n, f in full.items()}
    for f in small.values():
        f[:, 0] = 0.95 + 0.05 * f[:, 0]
    normed.train()
    x_small = {n: f.clone().requires_grad_(True) for n, f in small.items()}
    x_full = {n: f.clone().requires_grad_(True) for n, f in full.items()}
    out_small, out_full = normed.classify_others(x_small), normed.classify_others(x_full)
    # standardised per coordinate over the batch, the heads see the same input either way
    for a in out_small:
        assert torch.allclose(out_small[a], out_full[a], atol=1e-3)
    z = normed.reversed_input(small, OTHERS)
    assert torch.allclose(z.mean(0), torch.zeros(4), atol=1e-5) and torch.allclose(z.std(0, unbiased=False), torch.ones(4), atol=1e-2)
    # the reversed gradient: 20x on the small coordinate (a fixed linear read of the standardised
    # input), and minus a plain batch norm's through the heads
    w = torch.randn(16, 4)
    (normed.reversed_input(x_small, OTHERS) * w).sum().backward()
    (normed.reversed_input(x_full, OTHERS) * w).sum().backward()
    assert torch.allclose(x_small[OTHERS].grad[:, 0], 20 * x_full[OTHERS].grad[:, 0], rtol=1e-2, atol=1.0)  # eps: 0.5% of the small variance
    assert torch.allclose(x_small[OTHERS].grad[:, 1:], x_full[OTHERS].grad[:, 1:])
    x_small[OTHERS].grad = None
    sum(o.sum() for o in out_small.values()).backward()
    g_small = x_small[OTHERS].grad
    f = small[OTHERS].clone().requires_grad_(True)
    heads = normed.others_heads
    sum(heads[a](torch.nn.functional.batch_norm(f, None, None, training=True, eps=1e-6)).sum() for a in heads).backward()
    assert torch.allclose(g_small, -f.grad, rtol=1e-4, atol=1e-6)
    # the cross heads read every attribute feature the same way; without the norm they see the raw feature
    assert set(normed.classify_cross(x_small)) == set(normed.attributes)
    assert not torch.allclose(plain.classify_others(small)["pose"], out_small["pose"], atol=1e-3)


def test_a_pinned_unit_gives_every_image_its_value_and_leaves_the_others_alone():
    torch.manual_seed(0)
    cfg = UFEConfig(image_size=32, feature_dim=4, encoder_channels=[8, 8, 8], decoder_channel_base=64, decoder_channel_max=8)
    model = UFE(description(), cfg).eval()
    x = torch.rand(5, 3, 32, 32)
    before = model.encode(x)
    model.encoder.pin("pose", [1, 3], torch.tensor([0.97, 0.02]))
    after = model.encode(x)
    assert torch.allclose(after["pose"][:, 1], torch.full((5,), 0.97)) and torch.allclose(after["pose"][:, 3], torch.full((5,), 0.02))
    assert torch.equal(after["pose"][:, [0, 2]], before["pose"][:, [0, 2]])
    assert all(torch.equal(after[n], before[n]) for n in model.feature_names if n != "pose")
    normed = UFE(description(), UFEConfig(**{**cfg.__dict__, "feature_norm": True}))
    with pytest.raises(UserError, match="feature_norm off"):
        normed.encoder.pin("pose", [0], torch.tensor([0.5]))
