"""UFE objectives (eqs. 1-5) on tiny tensors with hand-checked values, masking, reversal sign."""

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from facefactors.data.description import DatasetDescription, Factor
from facefactors.models.ufe import UFE, UFEConfig
from facefactors.train.ufe_losses import (
    UFELossConfig,
    classification_loss,
    contrastive_loss,
    dis_weight,
    disentanglement_loss,
    draw_mix,
    others_loss,
    reconstruction_loss,
    ufe_losses,
)


def toy_description(labelled=("identity", "expression")):
    return DatasetDescription(
        "toy",
        (
            Factor("identity", class_names=("a", "b", "c")),
            Factor("expression", class_names=("neutral", "smile")),
            Factor("camera", class_names=("rgb", "nir")),
            Factor("yaw", kind="continuous"),
        ),
        labelled=labelled,
        image_size=32,
    )


def tiny_model(**kw):
    cfg = UFEConfig(image_size=32, feature_dim=8, encoder_channels=[8, 8, 8], head_hidden=8, decoder_channel_base=64, decoder_channel_max=8, **kw)
    return UFE(toy_description(), cfg)


def test_classification_loss_hand_values_and_masking():
    # Uniform logits over 2 classes: CE = log 2 for every sample, whatever the label.
    logits = {"expression": torch.zeros(3, 2), "identity": torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 5.0]])}
    labels = {"expression": torch.tensor([0, 1, -1]), "identity": torch.tensor([0, -1, -1])}
    # identity: only sample 0 is labelled: -log(e^2 / (e^2 + 2)).
    expected = math.log(2) + (-2 + math.log(math.exp(2) + 2))
    assert math.isclose(classification_loss(logits, labels).item(), expected, rel_tol=1e-6)
    # A wildly wrong logit on a missing label changes nothing.
    logits["identity"][2] = torch.tensor([-50.0, 50.0, -50.0])
    assert math.isclose(classification_loss(logits, labels).item(), expected, rel_tol=1e-6)
    # An attribute with no label at all contributes zero (and still yields a graph).
    z = torch.randn(2, 2, requires_grad=True)
    out = classification_loss({"expression": z}, {"expression": torch.tensor([-1, -1])})
    out.backward()
    assert out.item() == 0.0 and torch.equal(z.grad, torch.zeros(2, 2))


def test_contrastive_loss_hand_values():
    # Features on a line: f0 = 0, f1 = 0.3, f2 = 2.0 (L2 distances 0.3, 2.0, 1.7), margin 1.
    f = torch.tensor([[0.0, 0.0], [0.3, 0.0], [2.0, 0.0]])
    y = torch.tensor([0, 0, 1])
    # Ordered pairs i != j: (0,1),(1,0) positive d=0.3; (0,2),(2,0) negative d=2 -> 0; (1,2),(2,1) negative d=1.7 -> 0.
    assert math.isclose(contrastive_loss({"identity": f}, {"identity": y}).item(), (0.3 * 2) / 6, rel_tol=1e-5)
    # Negatives inside the margin are pushed: f2 at 0.5 -> (0,2): 1-0.5, (1,2): 1-0.2.
    f2 = torch.tensor([[0.0, 0.0], [0.3, 0.0], [0.5, 0.0]])
    expected = (0.3 * 2 + 0.5 * 2 + 0.8 * 2) / 6
    assert math.isclose(contrastive_loss({"identity": f2}, {"identity": y}).item(), expected, rel_tol=1e-5)
    # Margin is a parameter.
    expected_m2 = (0.3 * 2 + 1.5 * 2 + 1.8 * 2) / 6
    assert math.isclose(contrastive_loss({"identity": f2}, {"identity": y}, margin=2.0).item(), expected_m2, rel_tol=1e-5)


def test_contrastive_loss_masks_missing_labels_and_sums_attributes():
    f = torch.tensor([[0.0, 0.0], [0.3, 0.0], [0.5, 0.0]])
    y = torch.tensor([0, 0, -1])  # sample 2 unlabelled: only the pair (0,1) is valid
    assert math.isclose(contrastive_loss({"identity": f}, {"identity": y}).item(), 0.3, rel_tol=1e-5)
    both = contrastive_loss({"identity": f, "expression": f}, {"identity": y, "expression": torch.tensor([0, 1, -1])})
    assert math.isclose(both.item(), 0.3 + (1 - 0.3), rel_tol=1e-5)
    # Labels of attributes without a feature, and all-missing attributes, are ignored.
    assert contrastive_loss({"identity": f}, {"identity": torch.full((3,), -1), "pose": torch.tensor([0, 1, 0])}).item() == 0.0


def test_contrastive_weights_scale_each_attributes_term():
    f = torch.tensor([[0.0, 0.0], [0.3, 0.0], [0.5, 0.0]])
    labels = {"identity": torch.tensor([0, 0, -1]), "expression": torch.tensor([0, 1, -1])}
    features = {"identity": f, "expression": f}
    # identity's term (0.3) counted 2.5 times, expression's (0.7) once: unnamed attributes keep 1.
    weighted = contrastive_loss(features, labels, weights={"identity": 2.5})
    assert math.isclose(weighted.item(), 2.5 * 0.3 + 0.7, rel_tol=1e-5)
    assert math.isclose(contrastive_loss(features, labels, weights={}).item(), 0.3 + 0.7, rel_tol=1e-5)


def test_contrastive_positive_weights_scale_the_pull_alone():
    # identity: positives (0,1),(1,0) at d=0.3; negatives inside the margin: (0,2),(2,0) at 0.5
    # -> 0.5 each, (1,2),(2,1) at 0.2 -> 0.8 each. Balanced: mean positive + mean negative.
    f = torch.tensor([[0.0, 0.0], [0.3, 0.0], [0.5, 0.0]], requires_grad=True)
    labels = {"identity": torch.tensor([0, 0, 1])}
    plain = contrastive_loss({"identity": f}, labels, balanced=True)
    assert math.isclose(plain.item(), 0.3 + 0.65, rel_tol=1e-5)
    pulled = contrastive_loss({"identity": f}, labels, balanced=True, positive_weights={"identity": 3.0, "expression": 9.0})
    assert math.isclose(pulled.item(), 3 * 0.3 + 0.65, rel_tol=1e-5)  # only the positive mean is scaled
    # Gradients along x, by hand. Pull: -1 on f0, +1 on f1 (times the weight). Push (mean over
    # four negative pairs, each moving its two ends apart by 1): +0.5 on f0 and f1, -1 on f2.
    (g_plain,) = torch.autograd.grad(plain, f)
    (g_pulled,) = torch.autograd.grad(pulled, f)
    assert torch.allclose(g_plain[:, 0], torch.tensor([-0.5, 1.5, -1.0]), atol=1e-6)
    assert torch.allclose(g_pulled[:, 0], torch.tensor([-2.5, 3.5, -1.0]), atol=1e-6)


def test_contrastive_gradient_is_finite_for_identical_features():
    f = torch.zeros(3, 4, requires_grad=True)
    contrastive_loss({"identity": f}, {"identity": torch.tensor([0, 0, 1])}).backward()
    assert torch.isfinite(f.grad).all()


def test_reconstruction_loss_is_mean_l1():
    a = torch.zeros(2, 3, 4, 4)
    b = torch.zeros(2, 3, 4, 4)
    b[0, 0, 0, 0] = 1.0
    b[1, 2, 3, 3] = -3.0
    assert math.isclose(reconstruction_loss(a, b).item(), 4.0 / a.numel(), rel_tol=1e-6)


def test_others_loss_reverses_gradient_into_the_feature():
    torch.manual_seed(0)
    model = tiny_model()
    f_oth = torch.rand(4, 8, requires_grad=True)
    labels = {"identity": torch.tensor([0, 1, 2, -1]), "expression": torch.tensor([1, 0, -1, 1])}
    others_loss(model.classify_others({"others": f_oth}), labels).backward()
    reversed_grad = f_oth.grad.clone()
    head_grads = {n: p.grad.clone() for n, p in model.others_heads.named_parameters()}
    # Reference: the same heads without reversal.
    model.zero_grad()
    f_ref = f_oth.detach().clone().requires_grad_(True)
    plain = {a: model.others_heads[a](f_ref) for a in model.attributes}
    classification_loss(plain, labels).backward()
    assert reversed_grad.abs().sum() > 0
    assert torch.allclose(reversed_grad, -f_ref.grad, atol=1e-6)
    # The heads themselves learn normally (same gradient with or without reversal).
    for n, p in model.others_heads.named_parameters():
        assert torch.allclose(head_grads[n], p.grad, atol=1e-6), n


def test_disentanglement_loss_is_zero_for_a_consistent_autoencoder():
    # If E(D(F)) reproduced F exactly, L_dis would vanish; a model that re-encodes anything to a
    # constant gives exactly |f_mix - c| averaged.
    model = tiny_model()

    class ConstEncoder(torch.nn.Module):
        def forward(self, image):
            return {n: torch.full((image.shape[0], 8), 0.5) for n in model.feature_names}

    model.encoder = ConstEncoder()
    feats = {n: torch.full((4, 8), 0.5) for n in model.feature_names}
    assert disentanglement_loss(model, feats).item() == pytest.approx(0.0, abs=1e-7)
    feats = {n: torch.full((4, 8), 0.75) for n in model.feature_names}
    assert disentanglement_loss(model, feats).item() == pytest.approx(0.25, abs=1e-6)


def test_draw_mix_takes_each_subspace_from_one_of_two_different_images():
    g = torch.Generator().manual_seed(2)
    feats = {n: torch.rand(6, 5, generator=g) for n in ("identity", "expression", "others")}
    for pairs in (0, 4):
        mix = draw_mix(feats, torch.Generator().manual_seed(7), pairs)
        rows = 6 if pairs == 0 else pairs
        assert mix.first.shape == mix.partner.shape == (rows,)
        assert (mix.first != mix.partner).all()
        shift = (mix.first - mix.partner) % 6
        assert (shift == shift[0]).all()  # one cyclic shift for the batch, as eq. 5's pairing
        for n, f in feats.items():
            expected = torch.where(mix.from_partner[n][:, None], f[mix.partner], f[mix.first])
            assert torch.equal(mix.features[n], expected), n
    # the loss is the same with or without the composites returned
    model = tiny_model()
    feats = {n: torch.rand(4, 8, generator=g) for n in model.feature_names}
    plain = disentanglement_loss(model, feats, torch.Generator().manual_seed(3), "const")
    loss, composites, mix = disentanglement_loss(model, feats, torch.Generator().manual_seed(3), "const", keep_composites=True)
    assert torch.allclose(plain, loss)
    assert composites.shape == (4, 3, 32, 32) and torch.allclose(composites, model.decode(mix.features, "const").clamp(0, 1))


def test_disentanglement_loss_on_a_subset_of_pairs():
    # dis_pairs decodes only that many mixes, and its expectation is the full batch's loss.
    model = tiny_model()
    decoded = []
    decode = model.decode

    def counting_decode(features, noise_mode="random"):
        decoded.append(next(iter(features.values())).shape[0])
        return decode(features, noise_mode)

    class ConstEncoder(torch.nn.Module):
        def forward(self, image):
            return {n: torch.full((image.shape[0], 8), 0.5) for n in model.feature_names}

    model.decode, model.encoder = counting_decode, ConstEncoder()
    g = torch.Generator().manual_seed(0)
    feats = {n: torch.rand(8, 8, generator=g) for n in model.feature_names}
    disentanglement_loss(model, feats, g, pairs=3)
    assert decoded == [3]
    disentanglement_loss(model, feats, g, pairs=8)  # all of them: the plain loss
    assert decoded == [3, 8]
    same = [disentanglement_loss(model, feats, torch.Generator().manual_seed(s), pairs=p).item() for s, p in ((5, 0), (5, 8), (5, 20))]
    assert same[0] == same[1] == same[2]
    full = torch.tensor([disentanglement_loss(model, feats, g).item() for _ in range(300)]).mean()
    part = torch.tensor([disentanglement_loss(model, feats, g, pairs=2).item() for _ in range(300)]).mean()
    assert part.item() == pytest.approx(full.item(), rel=0.05)


def test_dis_weight_schedules():
    cfg = UFELossConfig(dis=0.1, dis_warmup_steps=10, dis_ramp_steps=10)
    assert dis_weight(0, 100, cfg) == 0.0 and dis_weight(9, 100, cfg) == 0.0
    assert dis_weight(14, 100, cfg) == pytest.approx(0.05)
    assert dis_weight(19, 100, cfg) == pytest.approx(0.1) and dis_weight(99, 100, cfg) == pytest.approx(0.1)
    cyc = UFELossConfig(dis=0.1, dis_min=0.0025, dis_schedule="cyclic", dis_cycles=3)
    w = [dis_weight(s, 400, cyc) for s in range(400)]
    assert min(w) == pytest.approx(0.0025) and max(w) == pytest.approx(0.1)
    assert all(x == pytest.approx(0.1) for x in w[300:])  # settles after three quarters
    assert w[0] == pytest.approx(0.0025) and w[100] == pytest.approx(0.0025)  # cycles restart (period 100)
    assert w[25] == pytest.approx(0.0025 + 0.0975 * 0.5) and w[60] == pytest.approx(0.1)
    assert dis_weight(50, 100, UFELossConfig(dis=0.0)) == 0.0


def test_full_loss_every_parameter_gets_a_gradient_no_nan():
    torch.manual_seed(0)
    model = tiny_model()
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "strength"):
                m.strength.fill_(0.1)
    image = torch.rand(6, 3, 32, 32)
    labels = {"identity": torch.tensor([0, 0, 1, 1, 2, -1]), "expression": torch.tensor([0, 1, 0, 1, -1, 0])}
    total, terms = ufe_losses(model, image, labels, UFELossConfig(), dis_lambda=0.1)
    assert set(terms) == {"cls", "con", "rec", "oth", "dis"}
    total.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    # Switching a loss off removes its term.
    _, terms = ufe_losses(model, image, labels, UFELossConfig(con=0, oth=0), dis_lambda=0.0)
    assert set(terms) == {"cls", "rec"}
    # The weighted total matches eq. 6.
    cfg = UFELossConfig()
    torch.manual_seed(3)
    total, terms = ufe_losses(model, image, labels, cfg, dis_lambda=0.0)
    expected = terms["cls"] + terms["con"] + 100 * terms["rec"] + terms["oth"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)


def test_rec_gradient_into_encoder_can_be_scaled_without_changing_the_loss():
    from facefactors.train.ufe_losses import rec_to_encoder, scale_grad

    x = torch.randn(3, requires_grad=True)
    (scale_grad(x, 0.25) * 2).sum().backward()
    assert torch.allclose(x.grad, torch.full((3,), 0.5))
    assert rec_to_encoder(4, UFELossConfig(rec_to_encoder=0.1, rec_encoder_warmup_steps=5)) == 0.0
    assert rec_to_encoder(5, UFELossConfig(rec_to_encoder=0.1, rec_encoder_warmup_steps=5)) == 0.1

    torch.manual_seed(0)
    model = tiny_model()
    image = torch.rand(4, 3, 32, 32)
    cfg = UFELossConfig(cls=0, con=0, oth=0)  # L_rec alone
    grads = {}
    for r in (1.0, 0.0):
        model.zero_grad()
        torch.manual_seed(1)  # same noise draw
        total, terms = ufe_losses(model, image, {}, cfg, 0.0, rec_grad=r)
        total.backward()
        grads[r] = (total.item(), model.encoder.projections["identity"].weight.grad.clone(), model.decoder.const.grad.clone())
    assert grads[1.0][0] == pytest.approx(grads[0.0][0])  # same loss value
    assert grads[1.0][1].abs().sum() > 0 and grads[0.0][1].abs().sum() == 0  # E cut off
    assert torch.allclose(grads[1.0][2], grads[0.0][2])  # D trained the same


def test_rec_gradient_through_others_can_differ_from_the_attributes():
    from facefactors.train.ufe_losses import rec_to_encoder

    cfg = UFELossConfig(rec_to_encoder=0.1, rec_encoder_warmup_steps=5, rec_others_to_encoder=1.0)
    assert rec_to_encoder(0, cfg) == {"others": 1.0, "*": 0.0}  # "others" learns from the first step
    assert rec_to_encoder(5, cfg) == {"others": 1.0, "*": 0.1}
    # Single features can have their own factor, at every step.
    cfg = UFELossConfig(rec_to_encoder=0.1, rec_encoder_warmup_steps=5, rec_feature_factors={"pose": 0.0})
    assert rec_to_encoder(0, cfg) == {"pose": 0.0, "*": 0.0} and rec_to_encoder(5, cfg) == {"pose": 0.0, "*": 0.1}
    cfg = UFELossConfig(rec_to_encoder=0.1, rec_others_to_encoder=1.0, rec_feature_factors={"identity": 0.0})
    assert rec_to_encoder(0, cfg) == {"others": 1.0, "identity": 0.0, "*": 0.1}
    torch.manual_seed(0)
    model = tiny_model()
    image = torch.rand(4, 3, 32, 32)
    model.zero_grad()
    total, _ = ufe_losses(model, image, {}, UFELossConfig(cls=0, con=0, oth=0), 0.0, rec_grad=rec_to_encoder(0, cfg))
    total.backward()
    assert model.encoder.projections["others"].weight.grad.abs().sum() > 0
    assert model.encoder.projections["identity"].weight.grad.abs().sum() == 0


def test_contrastive_switches_hand_values():
    # f0 = 0, f1 = 0.3, f2 = 0.5 on a line, D = 2; labels 0, 0, 1.
    f = {"identity": torch.tensor([[0.0, 0.0], [0.3, 0.0], [0.5, 0.0]])}
    y = {"identity": torch.tensor([0, 0, 1])}
    r2 = math.sqrt(2)
    # Balanced, raw d, m = 1: mean of positives (0.3) + mean of negatives ((1 - 0.5) + (1 - 0.2)) / 2.
    assert contrastive_loss(f, y, 1.0, balanced=True).item() == pytest.approx(0.3 + 0.65, rel=1e-5)
    # Normalised, one mean over the 6 ordered pairs, m = 0.4: d -> d / sqrt(2).
    pairs = [0.3 / r2] * 2 + [0.4 - 0.5 / r2] * 2 + [0.4 - 0.2 / r2] * 2
    assert contrastive_loss(f, y, 0.4, normalize=True).item() == pytest.approx(sum(pairs) / 6, rel=1e-5)
    # Both: 0.3 / sqrt 2 + ((0.4 - 0.5 / sqrt 2) + (0.4 - 0.2 / sqrt 2)) / 2.
    both = 0.3 / r2 + ((0.4 - 0.5 / r2) + (0.4 - 0.2 / r2)) / 2
    assert contrastive_loss(f, y, 0.4, balanced=True, normalize=True).item() == pytest.approx(both, rel=1e-5)
    # Normalised distance does not depend on D for the same per-coordinate difference.
    line = f["identity"][:, :1]  # (3, 1)
    narrow, wide = {"identity": line.repeat(1, 2)}, {"identity": line.repeat(1, 16)}  # D = 2 and 16
    assert contrastive_loss(wide, y, 0.4, True, True).item() == pytest.approx(contrastive_loss(narrow, y, 0.4, True, True).item(), rel=1e-5)
    assert contrastive_loss(wide, y, 0.4, True, False).item() != pytest.approx(contrastive_loss(narrow, y, 0.4, True, False).item(), rel=1e-3)


def test_balanced_contrastive_masks_missing_labels_and_one_sided_batches():
    f = {"identity": torch.tensor([[0.0, 0.0], [0.3, 0.0], [0.5, 0.0]])}
    # Sample 2 unlabelled: only the positive pair (0, 1) is valid; no negatives -> no negative term.
    assert contrastive_loss(f, {"identity": torch.tensor([0, 0, -1])}, balanced=True).item() == pytest.approx(0.3, rel=1e-5)
    # All labels different: negatives only.
    neg_only = ((1 - 0.3) + (1 - 0.5) + (1 - 0.2)) / 3
    assert contrastive_loss(f, {"identity": torch.tensor([0, 1, 2])}, balanced=True).item() == pytest.approx(neg_only, rel=1e-5)
    assert contrastive_loss(f, {"identity": torch.full((3,), -1)}, balanced=True, normalize=True).item() == 0.0
    # A wildly different feature on an unlabelled sample changes nothing.
    g = {"identity": torch.tensor([[0.0, 0.0], [0.3, 0.0], [9.0, 9.0]])}
    assert contrastive_loss(g, {"identity": torch.tensor([0, 0, -1])}, balanced=True, normalize=True).item() == pytest.approx(0.3 / math.sqrt(2), rel=1e-5)
    # Identical features still give finite gradients.
    z = torch.zeros(3, 4, requires_grad=True)
    contrastive_loss({"identity": z}, {"identity": torch.tensor([0, 0, 1])}, 0.4, True, True).backward()
    assert torch.isfinite(z.grad).all()


def test_negatives_inside_margin():
    from facefactors.train.ufe_losses import negatives_inside_margin

    f = {"identity": torch.tensor([[0.0, 0.0], [0.3, 0.0], [0.5, 0.0]])}
    y = {"identity": torch.tensor([0, 0, 1]), "expression": torch.tensor([0, 0, 0])}
    # Negatives (0,2) d = 0.5 and (1,2) d = 0.2: one of two within m = 0.4; no negatives for expression.
    assert negatives_inside_margin(f, y, 0.4) == {"identity": 0.5}
    # Normalised: 0.5 / sqrt 2 = 0.354 and 0.141 are both inside 0.4.
    assert negatives_inside_margin(f, y, 0.4, normalize=True) == {"identity": 1.0}


def test_cross_loss_hand_values_and_masking():
    from facefactors.train.ufe_losses import cross_loss

    labels = {"identity": torch.tensor([0, 2, -1]), "expression": torch.tensor([1, -1, -1])}
    # Uniform logits: CE = log C on every labelled sample; y = identity read from two features.
    logits = {
        "identity": {"expression": torch.zeros(3, 3), "pose": torch.zeros(3, 3)},
        "expression": {"identity": torch.zeros(3, 2)},
    }
    assert cross_loss(logits, labels).item() == pytest.approx(math.log(3) + math.log(2), rel=1e-6)
    # A confident wrong logit on the unlabelled sample changes nothing.
    logits["expression"]["identity"][1] = torch.tensor([50.0, -50.0])
    assert cross_loss(logits, labels).item() == pytest.approx(math.log(3) + math.log(2), rel=1e-6)
    assert cross_loss({}, labels).item() == 0.0


def test_cross_heads_reverse_the_gradient_into_the_features():
    torch.manual_seed(0)
    model = tiny_model(cross_heads=True)
    assert sorted(model.cross_heads) == ["expression__to__identity", "identity__to__expression"]
    feats = {n: torch.rand(4, 8, requires_grad=True) for n in model.feature_names}
    labels = {"identity": torch.tensor([0, 1, 2, -1]), "expression": torch.tensor([1, 0, -1, 1])}
    from facefactors.train.ufe_losses import cross_loss

    cross_loss(model.classify_cross(feats), labels).backward()
    head_grads = {n: p.grad.clone() for n, p in model.cross_heads.named_parameters()}
    assert feats["others"].grad is None  # "others" has its own heads (eq. 4)
    model.zero_grad()
    ref = {n: f.detach().clone().requires_grad_(True) for n, f in feats.items()}
    plain = {"identity": {"expression": model.cross_heads["expression__to__identity"](ref["expression"])},
             "expression": {"identity": model.cross_heads["identity__to__expression"](ref["identity"])}}
    cross_loss(plain, labels).backward()
    for a in model.attributes:
        assert feats[a].grad.abs().sum() > 0
        assert torch.allclose(feats[a].grad, -ref[a].grad, atol=1e-6), a
    for n, p in model.cross_heads.named_parameters():
        assert torch.allclose(head_grads[n], p.grad, atol=1e-6), n
    # Without cross heads the term is absent even when weighted; with them it joins eq. 6.
    image = torch.rand(4, 3, 32, 32)
    _, terms = ufe_losses(tiny_model(), image, labels, UFELossConfig(cross=1.0), 0.0)
    assert "cross" not in terms
    total, terms = ufe_losses(model, image, labels, UFELossConfig(cross=0.5, con_balanced=True, con_normalize=True, margin=0.4), 0.0)
    assert "cross" in terms
    expected = terms["cls"] + terms["con"] + 100 * terms["rec"] + terms["oth"] + 0.5 * terms["cross"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)


def test_pre_sigmoid_features_and_saturation_loss():
    from facefactors.train.ufe_losses import saturated_share, saturation_loss

    torch.manual_seed(0)
    model = tiny_model().eval()
    image = torch.rand(4, 3, 32, 32)
    z = model.encode_pre_sigmoid(image)
    f = model.encode(image)
    assert set(z) == set(model.feature_names)
    for n in model.feature_names:
        assert torch.allclose(torch.sigmoid(z[n]), f[n], atol=1e-6), n
    # Hand values: the mean over subspaces of each subspace's mean square.
    hand = {"a": torch.tensor([[1.0, -3.0]]), "b": torch.tensor([[2.0, 0.0], [0.0, 0.0]])}
    assert saturation_loss(hand).item() == pytest.approx(((1 + 9) / 2 + 4 / 4) / 2)
    assert saturated_share({"a": torch.tensor([[5.0, -4.5, 3.9, 0.0]])}) == pytest.approx(0.5)
    # Its gradient pulls every value toward 0, the steep middle of the sigmoid.
    v = torch.tensor([[6.0, -6.0, 0.5]], requires_grad=True)
    saturation_loss({"a": v}).backward()
    assert (v.grad * v.detach() > 0).all()


def test_unbiased_hsic_matches_the_u_statistic():
    import itertools

    from facefactors.train.ufe_losses import hsic_unbiased

    torch.manual_seed(0)
    n = 7
    f = torch.randn(n, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 2, 1, 1, 0])
    K, L = f @ f.T, (y[:, None] == y[None, :]).double()
    # Song et al. 2012: the mean over ordered distinct (i, j, q, r) of k_ij l_ij + k_ij l_qr - 2 k_ij l_iq.
    reference = torch.stack([K[i, j] * L[i, j] + K[i, j] * L[q, r] - 2 * K[i, j] * L[i, q] for i, j, q, r in itertools.permutations(range(n), 4)]).mean()
    assert hsic_unbiased(K, L).item() == pytest.approx(reference.item(), rel=1e-10)


def test_batched_hsic_matches_the_pairwise_estimator():
    from facefactors.train.ufe_losses import hsic_unbiased, hsic_unbiased_pairs, hsic_unbiased_self

    g = torch.Generator().manual_seed(3)
    f = torch.randn(3, 9, 4, generator=g, dtype=torch.float64)
    K = f @ f.transpose(1, 2)  # three linear kernels
    y = torch.randint(0, 3, (2, 9), generator=g)
    L = (y[:, :, None] == y[:, None, :]).double()  # two delta kernels
    pairs = hsic_unbiased_pairs(K, L)
    assert pairs.shape == (3, 2)
    for a in range(3):
        for b in range(2):
            assert pairs[a, b].item() == pytest.approx(hsic_unbiased(K[a], L[b]).item(), rel=1e-12)
    assert torch.allclose(hsic_unbiased_self(K), torch.stack([hsic_unbiased(k, k) for k in K]), rtol=1e-12)


def test_independence_loss_groups_labels_by_the_samples_that_carry_them():
    # Alternating data sets: world A's labels on the first half, world B's on the second. Each
    # (subspace, label) pair is computed on the samples with that label, as dependence does.
    from facefactors.train.ufe_losses import dependence, independence_loss, whitening_matrix

    g = torch.Generator().manual_seed(4)
    n = 24
    feats = {k: torch.rand(n, 6, generator=g) for k in ("identity", "age", "others")}
    a, b = torch.arange(n) < 12, torch.arange(n) >= 12
    labels = {
        "identity": torch.where(a, torch.randint(0, 3, (n,), generator=g), -1),
        "expression": torch.where(a, torch.randint(0, 2, (n,), generator=g), -1),
        "age": torch.where(b, torch.randint(0, 3, (n,), generator=g), -1),
        "gender": torch.full((n,), -1),  # nobody: no term
    }
    W = {"age": whitening_matrix(torch.rand(200, 6, generator=g), 0.1)}
    for whitening in (None, W):
        for hinge in (True, False):
            terms = []
            for x, f in feats.items():
                w = None if whitening is None else whitening.get(x)
                for y, lab in labels.items():
                    d = None if y == x else dependence(f, lab, w)
                    if d is not None:
                        terms.append(d.clamp(min=0) if hinge else d)
            assert len(terms) == 7  # 3 subspaces x 3 labels, less age-from-age and gender (unlabelled)
            expected = torch.stack(terms).mean().item()
            assert independence_loss(feats, labels, whitening, hinge).item() == pytest.approx(expected, rel=1e-5, abs=1e-7)
    # Per-label factors: identity's terms (from "age" and "others") count three times.
    weighted = [3 * dependence(feats[x], labels["identity"]) if y == "identity" else dependence(feats[x], labels[y]) for x, y in (("age", "identity"), ("others", "identity"), ("identity", "expression"), ("age", "expression"), ("others", "expression"), ("identity", "age"), ("others", "age"))]
    got = independence_loss(feats, labels, hinge=False, label_weights={"identity": 3.0})
    assert got.item() == pytest.approx(torch.stack(weighted).mean().item(), rel=1e-5, abs=1e-7)
    # Per-term factors multiply the label's: "others" against age x10, identity's terms still x3.
    pairs = (("age", "identity"), ("others", "identity"), ("identity", "expression"), ("age", "expression"), ("others", "expression"), ("identity", "age"), ("others", "age"))
    factors = [(3.0 if y == "identity" else 1.0) * (10.0 if (x, y) == ("others", "age") else 1.0) for x, y in pairs]
    weighted = [k * dependence(feats[x], labels[y]) for k, (x, y) in zip(factors, pairs)]
    got = independence_loss(feats, labels, hinge=False, label_weights={"identity": 3.0}, pair_weights={"others/age": 10.0})
    assert got.item() == pytest.approx(torch.stack(weighted).mean().item(), rel=1e-5, abs=1e-7)
    # A pair's factor touches only its term: the others' gradients are those of the unweighted loss.
    fs = {x: f.clone().requires_grad_() for x, f in feats.items()}
    independence_loss(fs, labels, hinge=False, pair_weights={"others/age": 10.0}).backward()
    plain = {x: f.clone().requires_grad_() for x, f in feats.items()}
    independence_loss(plain, labels, hinge=False).backward()
    for x in ("identity", "age"):
        torch.testing.assert_close(fs[x].grad, plain[x].grad)
    assert not torch.allclose(fs["others"].grad, plain["others"].grad)


def test_independence_loss_adds_named_pairs_unwhitened():
    # The ordinary terms whitened; "others"/pose once more on the raw feature with factor 5, in the
    # mean's numerator only. Reference: the per-pair dependence.
    from facefactors.train.ufe_losses import dependence, independence_loss, whitening_matrix

    g = torch.Generator().manual_seed(5)
    n = 32
    feats = {k: torch.rand(n, 6, generator=g) for k in ("pose", "identity", "others")}
    labels = {"pose": torch.randint(0, 2, (n,), generator=g), "identity": torch.randint(0, 4, (n,), generator=g)}
    feats["others"][:, 0] += labels["pose"]  # a pose shift in "others"
    W = {x: whitening_matrix(torch.rand(200, 6, generator=g), 0.1) for x in feats}
    pairs = [(x, y) for x in feats for y in labels if x != y]
    ordinary = [dependence(feats[x], labels[y], W[x]) for x, y in pairs]
    raw = dependence(feats["others"], labels["pose"])
    assert raw.item() > 0.05  # the shift shows unwhitened
    expected = (torch.stack(ordinary).sum() + 5.0 * raw) / len(pairs)
    got = independence_loss(feats, labels, W, hinge=False, unwhitened_pairs={"others/pose": 5.0})
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    # Only "others" gets the added gradient, and it is the raw term's.
    fs = {x: f.clone().requires_grad_() for x, f in feats.items()}
    independence_loss(fs, labels, W, hinge=False, unwhitened_pairs={"others/pose": 5.0}).backward()
    plain = {x: f.clone().requires_grad_() for x, f in feats.items()}
    independence_loss(plain, labels, W, hinge=False).backward()
    for x in ("pose", "identity"):
        torch.testing.assert_close(fs[x].grad, plain[x].grad)
    alone = feats["others"].clone().requires_grad_()
    (5.0 * dependence(alone, labels["pose"]) / len(pairs)).backward()
    torch.testing.assert_close(fs["others"].grad - plain["others"].grad, alone.grad, rtol=1e-4, atol=1e-7)
    # Without whitening the added term is the same pair counted 1 + factor times.
    got = independence_loss(feats, labels, hinge=False, unwhitened_pairs={"others/pose": 5.0})
    plain_terms = [dependence(feats[x], labels[y]) for x, y in pairs]
    assert got.item() == pytest.approx(((torch.stack(plain_terms).sum() + 5.0 * raw) / len(pairs)).item(), rel=1e-5)


def test_dependence_is_zero_for_independent_one_for_the_label_and_masks_missing():
    from facefactors.train.ufe_losses import dependence

    g = torch.Generator().manual_seed(0)
    # Independent features and labels: about 0 on average (unbiased), not the 1/n offset of a biased estimate.
    values = [dependence(torch.rand(32, 128, generator=g), torch.randint(0, 8, (32,), generator=g)).item() for _ in range(200)]
    assert abs(sum(values) / len(values)) < 0.01
    y = torch.randint(0, 8, (32,), generator=g)
    onehot = torch.nn.functional.one_hot(y, 8).float()
    assert dependence(onehot, y).item() == pytest.approx(1.0, abs=1e-5)
    # Scale-free; a label mixed with noise lies in between.
    assert dependence(onehot * 7.0, y).item() == pytest.approx(1.0, abs=1e-5)
    mixed = dependence(torch.cat([onehot, 0.3 * torch.rand(32, 64, generator=g)], 1), y).item()
    assert 0.2 < mixed < 0.99
    # Samples with label -1 are left out: the same as computing on the labelled ones only.
    f = torch.rand(10, 5, generator=g)
    lab = torch.tensor([0, 1, -1, 2, 0, -1, 1, 2, 0, 1])
    ok = lab >= 0
    assert dependence(f, lab).item() == pytest.approx(dependence(f[ok], lab[ok]).item(), rel=1e-6)
    # Too few labelled samples, or a single class: no term.
    assert dependence(f, torch.tensor([0, 1, 2, -1, -1, -1, -1, -1, -1, -1])) is None
    assert dependence(f, torch.zeros(10, dtype=torch.long)) is None


def test_independence_loss_pairs_and_gradient():
    from facefactors.train.ufe_losses import dependence, independence_loss

    g = torch.Generator().manual_seed(1)
    ident = torch.randint(0, 4, (16,), generator=g)
    expr = torch.randint(0, 3, (16,), generator=g)
    leaky = torch.cat([torch.nn.functional.one_hot(ident, 4).float(), torch.rand(16, 4, generator=g)], 1).requires_grad_(True)
    feats = {"identity": torch.rand(16, 8, generator=g), "expression": leaky}
    labels = {"identity": ident, "expression": expr}
    loss = independence_loss(feats, labels)
    # Two pairs: identity read from the expression feature, expression from the identity feature.
    pairs = [dependence(leaky, ident).clamp(min=0), dependence(feats["identity"], expr).clamp(min=0)]
    assert loss.item() == pytest.approx(torch.stack(pairs).mean().item(), rel=1e-6)
    assert pairs[0].item() > 0.3
    signed = [dependence(leaky, ident), dependence(feats["identity"], expr)]
    assert independence_loss(feats, labels, hinge=False).item() == pytest.approx(torch.stack(signed).mean().item(), rel=1e-6)
    # A step against the gradient makes the leaky feature less dependent on identity.
    loss.backward()
    with torch.no_grad():
        assert dependence(leaky - 0.5 * leaky.grad, ident) < dependence(leaky, ident)
    # In eq. 6 with a weight; the saturation term likewise.
    model = tiny_model()
    image = torch.rand(6, 3, 32, 32)
    labels = {"identity": torch.tensor([0, 0, 1, 1, 2, 2]), "expression": torch.tensor([0, 1, 0, 1, 1, 0])}
    total, terms = ufe_losses(model, image, labels, UFELossConfig(independence=2.0, saturation=0.5), 0.0)
    assert {"ind", "sat"} <= set(terms)
    expected = terms["cls"] + terms["con"] + 100 * terms["rec"] + terms["oth"] + 2.0 * terms["ind"] + 0.5 * terms["sat"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)


def test_feature_history_keeps_the_last_batches_and_fills_missing_labels():
    from facefactors.train.ufe_losses import FeatureHistory

    history = FeatureHistory(2)
    f = {"identity": torch.ones(2, 3, requires_grad=True) * 1, "others": torch.zeros(2, 3)}
    history.push(f, {"identity": torch.tensor([0, 1])})
    history.push({n: v + 1 for n, v in f.items()}, {"age": torch.tensor([2, 2])})
    history.push({n: v + 2 for n, v in f.items()}, {"identity": torch.tensor([3, -1]), "age": torch.tensor([1, 0])})
    assert len(history) == 2  # the first batch fell out
    feats, labels = history.stacked()
    assert feats["identity"].shape == (4, 3) and not feats["identity"].requires_grad
    assert feats["identity"][:, 0].tolist() == [2.0, 2.0, 3.0, 3.0]
    assert labels["identity"].tolist() == [-1, -1, 3, -1]  # the world B batch carried no identity
    assert labels["age"].tolist() == [2, 2, 1, 0]


def test_adversary_fit_trains_only_the_heads_with_the_plain_gradient():
    from facefactors.train.ufe_losses import FeatureHistory, adversary_fit_loss

    torch.manual_seed(0)
    model = tiny_model(cross_heads=True)
    history = FeatureHistory(4)
    image = torch.rand(4, 3, 32, 32)
    labels = {"identity": torch.tensor([0, 1, 2, -1]), "expression": torch.tensor([1, 0, -1, 1])}
    cfg = UFELossConfig(cross=1.0, adversary_fit=True)
    # The first call only fills the history; the second fits the heads to it.
    _, terms = ufe_losses(model, image, labels, cfg, 0.0, history=history)
    assert "adv" not in terms and len(history) == 1
    model.zero_grad()
    total, terms = ufe_losses(model, image, labels, cfg, 0.0, history=history)
    assert "adv" in terms and len(history) == 2
    feats, labs = history.stacked()
    assert feats["identity"].shape[0] == 8
    # The fit is eq. 1 on the kept features through ph_oth and ph_x (L_oth + L_x, unreversed for the heads).
    from facefactors.train.ufe_losses import cross_loss, others_loss

    expected = others_loss(model.classify_others(feats), labs) + cross_loss(model.classify_cross(feats), labs)
    assert adversary_fit_loss(model, feats, labs, cfg).item() == pytest.approx(expected.item(), rel=1e-6)
    # Without the switch the history is kept but the heads are not fitted to it.
    _, terms = ufe_losses(model, image, labels, UFELossConfig(cross=1.0), 0.0, history=history)
    assert "adv" not in terms and len(history) == 3
    # Only the heads learn from it: the encoder and decoder get no gradient from the fit alone.
    model.zero_grad()
    adversary_fit_loss(model, feats, labs, cfg).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.encoder.parameters())
    assert all(p.grad is None for p in model.decoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.others_heads.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.cross_heads.parameters())


def test_whitened_dependence_sees_a_label_in_a_direction_of_small_variance():
    from facefactors.train.ufe_losses import dependence, independence_loss, whitening_matrix

    g = torch.Generator().manual_seed(0)
    n, D = 512, 64
    pose = torch.randint(0, 2, (n,), generator=g)
    f = torch.rand(n, D, generator=g)
    f[:, 0] = 0.5 + 0.001 * (pose.float() - 0.5)  # pose in one coordinate of tiny variance
    W = whitening_matrix(f, eps=1e-9)
    # The whitening maps the samples to unit covariance.
    fw = (f - f.mean(0)).double() @ W
    assert torch.allclose(torch.cov(fw.T), torch.eye(D, dtype=torch.float64), atol=1e-3)
    batch = slice(0, 32)
    plain = dependence(f[batch], pose[batch]).item()
    whitened = dependence(f[batch], pose[batch], W).item()
    assert plain < 0.1 and whitened > 0.8  # one canonical correlation of 1: about 1
    # An independent label gives about 0 either way, on average.
    values = [dependence(f[s : s + 32], torch.randint(0, 4, (32,), generator=g), W).item() for s in range(0, n, 32)]
    assert abs(sum(values) / len(values)) < 0.15
    # In L_ind, the whitening of each subspace is used for that subspace only.
    feats, labels = {"identity": f[batch], "others": f[batch]}, {"pose": pose[batch]}
    assert independence_loss(feats, labels, {"identity": W}).item() == pytest.approx((whitened + max(plain, 0)) / 2, rel=1e-5)


def test_standardised_whitening_sees_a_label_beside_one_dominant_direction():
    # A pose feature: 60 coordinates flip between 0 and 1 with the pose (one direction of large
    # variance); 4 coordinates vary by ~0.01-0.02 and one of them with identity. The ridge relative
    # to the mean eigenvalue hides identity; standardising first, as the weak classifier does,
    # does not.
    from facefactors.train.ufe_losses import dependence, whitening_matrix

    g = torch.Generator().manual_seed(1)
    n = 512
    pose = torch.randint(0, 2, (n,), generator=g)
    identity = torch.randint(0, 8, (n,), generator=g)
    f = torch.cat([pose[:, None].float().expand(n, 60) + 0.01 * torch.randn(n, 60, generator=g), 0.5 + 0.01 * torch.randn(n, 4, generator=g)], 1)
    f[:, 60] += 0.04 * (identity.float() / 7 - 0.5)
    plain_ridge = whitening_matrix(f, eps=0.1)
    standardised = whitening_matrix(f, eps=0.1, std_floor=0.01)
    batches = [slice(s, s + 64) for s in range(0, n, 64)]
    hidden = sum(dependence(f[b], identity[b], plain_ridge).item() for b in batches) / len(batches)
    seen = sum(dependence(f[b], identity[b], standardised).item() for b in batches) / len(batches)
    assert hidden < 0.03 and seen > 0.12, (hidden, seen)  # measured: -0.01 and 0.19
    # The standardised whitening is the plain one of the standardised samples, scaled back.
    s = f.double().std(0)
    assert torch.allclose(standardised, whitening_matrix(f / s, eps=0.1).double() / s[:, None], atol=1e-8)
    # The floor: a constant coordinate is not divided by zero.
    f[:, 63] = 0.5
    assert torch.isfinite(whitening_matrix(f, eps=0.1, std_floor=0.01)).all()


def test_independence_whitening_uses_the_history():
    from facefactors.train.ufe_losses import FeatureHistory

    torch.manual_seed(0)
    model = tiny_model()
    history = FeatureHistory(3)
    image = torch.rand(6, 3, 32, 32)
    labels = {"identity": torch.tensor([0, 0, 1, 1, 2, 2]), "expression": torch.tensor([0, 1, 0, 1, 1, 0])}
    cfg = UFELossConfig(independence=1.0, independence_whiten=True)
    model.eval()  # the same features at every call
    _, first = ufe_losses(model, image, labels, cfg, 0.0, history=history)  # empty history: not whitened
    _, plain = ufe_losses(model, image, labels, UFELossConfig(independence=1.0), 0.0)
    assert first["ind"].item() == pytest.approx(plain["ind"].item(), rel=1e-6)
    _, second = ufe_losses(model, image, labels, cfg, 0.0, history=history)
    assert second["ind"].item() != pytest.approx(first["ind"].item(), rel=1e-3)
    assert len(history) == 2


class _HostSyncs(TorchDispatchMode):
    """Records the ops that make the host wait for the device on a GPU: reading a value
    (.item(), bool(), .any() in an ``if``) and boolean indexing (its size depends on the data)."""

    SYNCING = ("aten._local_scalar_dense.default", "aten.nonzero.default", "aten.masked_select.default")

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        boolean_index = func is torch.ops.aten.index.Tensor and any(i is not None and i.dtype == torch.bool for i in args[1])
        if str(func) in self.SYNCING or boolean_index:
            self.calls.append(str(func))
        return func(*args, **(kwargs or {}))


def test_classification_and_contrastive_losses_make_no_host_sync():
    # A standard step computes these once per head and attribute: 80 of its 105 syncing ops
    # before (docs/results.md, "On a GPU"); on a GPU each one leaves the device idle while the
    # host catches up. Missing labels included.
    logits = {"identity": torch.randn(6, 4, requires_grad=True), "pose": torch.randn(6, 2, requires_grad=True)}
    labels = {"identity": torch.tensor([0, 0, 1, 1, -1, 2]), "pose": torch.tensor([-1, -1, -1, -1, -1, -1])}
    features = {"identity": torch.rand(6, 8, requires_grad=True), "pose": torch.rand(6, 8, requires_grad=True)}
    with _HostSyncs() as syncs:
        total = classification_loss(logits, labels)
        for balanced in (False, True):
            total = total + contrastive_loss(features, labels, margin=0.4, balanced=balanced, normalize=True)
        total.backward()
    assert syncs.calls == []
    assert torch.isfinite(total) and torch.equal(features["pose"].grad, torch.zeros(6, 8))  # pose: no valid pair
