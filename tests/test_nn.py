"""Reusable blocks: gradient reversal, modulated convolution, synthesis network, encoder trunk."""

import math

import pytest
import torch

from facefactors.nn import (
    ClassifierHead,
    GradientReversal,
    MappingNetwork,
    ModulatedConv2d,
    NoiseInjection,
    ResidualEncoder,
    ResidualUpBlock,
    StyleSynthesis,
    grad_reverse,
)


def test_grad_reverse_is_identity_forward_and_negates_gradient():
    x = torch.randn(4, 5, requires_grad=True)
    w = torch.randn(4, 5)
    y = grad_reverse(x, scale=0.5)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -0.5 * w)
    x.grad = None
    (GradientReversal(2.0)(x) * w).sum().backward()
    assert torch.allclose(x.grad, -2.0 * w)


def test_modulated_conv_fused_equals_unfused():
    torch.manual_seed(0)
    for demod, up in [(True, False), (False, False), (True, True)]:
        conv = ModulatedConv2d(5, 7, 3, style_dim=6, demodulate=demod, upsample=up)
        x, s = torch.randn(3, 5, 8, 8), torch.randn(3, 6)
        a, b = conv(x, s), conv(x, s, fused=True)
        assert a.shape == (3, 7, 16 if up else 8, 16 if up else 8)
        assert torch.allclose(a, b, atol=1e-5)


def test_demodulation_makes_output_invariant_to_style_scale():
    # StyleGAN2 eq. 3: a uniform style scale s_i = c cancels after demodulation.
    torch.manual_seed(0)
    conv = ModulatedConv2d(4, 6, 3, style_dim=2)
    with torch.no_grad():
        conv.affine.weight.zero_()
    x = torch.randn(2, 4, 6, 6)
    outs = []
    for c in (0.3, 3.0):
        with torch.no_grad():
            conv.affine.bias.fill_(c)
        outs.append(conv(x, torch.zeros(2, 2)))
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    # Without demodulation the output scales linearly with c.
    plain = ModulatedConv2d(4, 6, 3, style_dim=2, demodulate=False)
    with torch.no_grad():
        plain.affine.weight.zero_()
        plain.affine.bias.fill_(1.0)
        y1 = plain(x, torch.zeros(2, 2))
        plain.affine.bias.fill_(2.0)
        y2 = plain(x, torch.zeros(2, 2))
    assert torch.allclose(y2, 2 * y1, atol=1e-5)


def test_demodulated_output_has_unit_variance_for_unit_input():
    torch.manual_seed(1)
    conv = ModulatedConv2d(64, 64, 3, style_dim=8)
    y = conv(torch.randn(4, 64, 32, 32), torch.randn(4, 8))
    assert 0.7 < y[:, :, 1:-1, 1:-1].std().item() < 1.3


def test_modulated_conv_gradcheck_float64():
    torch.manual_seed(0)
    conv = ModulatedConv2d(2, 3, 3, style_dim=2).double()
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    s = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: conv(a, b), (x, s))


def test_noise_modes():
    n = NoiseInjection(3, 8)
    with torch.no_grad():
        n.strength.fill_(1.0)
    x = torch.zeros(2, 3, 8, 8)
    assert torch.equal(n(x, "none"), x)
    assert torch.equal(n(x, "const"), n(x, "const"))
    assert not torch.equal(n(x, "random"), n(x, "random"))
    assert torch.equal(n(x, "const")[0, 0], n.noise_const[0, 0])


@pytest.mark.parametrize("size", [64, 128])
def test_synthesis_shapes_and_gradients(size):
    torch.manual_seed(0)
    g = StyleSynthesis(style_dim=16, image_size=size, channel_base=256, channel_max=32)
    with torch.no_grad():  # noise strengths start at 0, which would leave their own gradient 0 only by value
        for m in g.modules():
            if isinstance(m, NoiseInjection):
                m.strength.fill_(0.1)
    style = torch.randn(2, 16)
    img = g(style)
    assert img.shape == (2, 3, size, size)
    img.square().mean().backward()
    for name, p in g.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    # Per-layer styles: the same style everywhere equals the shared-style call.
    same = g(style[:, None].expand(-1, g.num_styles, -1), "const")
    assert torch.allclose(same, g(style, "const"), atol=1e-6)
    with pytest.raises(ValueError, match="power-of-two"):
        StyleSynthesis(16, 48)


def test_synthesis_input_from_style_starts_as_const_and_learns_layout():
    torch.manual_seed(0)
    plain = StyleSynthesis(style_dim=16, image_size=16, channel_base=128, channel_max=16)
    projected = StyleSynthesis(style_dim=16, image_size=16, channel_base=128, channel_max=16, input_from_style=True)
    missing, unexpected = projected.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["input_projection.weight", "input_projection.bias"] and not unexpected
    style = torch.randn(3, 16)
    # Zero-initialised projection: the same function as the plain generator at the start.
    assert torch.allclose(projected(style, "none"), plain(style, "none"), atol=1e-6)
    projected(style, "none").square().mean().backward()
    grad = projected.input_projection.weight.grad
    assert grad is not None and grad.abs().sum() > 0  # the projection is trained
    # Once non-zero, the 4x4 input depends on the style: two styles give two inputs.
    with torch.no_grad():
        projected.input_projection.weight.normal_()
    a, b = projected(style[:1], "none"), projected(style[1:2], "none")
    assert not torch.allclose(a, b)
    assert "input_projection.weight" not in dict(plain.named_parameters())


def test_encoder_trunk_and_up_block_shapes():
    enc = ResidualEncoder(64, (8, 16, 16, 32))
    assert enc.out_resolution == 4 and enc.out_dim == 32 * 16
    assert enc(torch.randn(3, 3, 64, 64)).shape == (3, 512)
    assert ResidualUpBlock(8, 4)(torch.randn(1, 8, 5, 5)).shape == (1, 4, 10, 10)
    with pytest.raises(ValueError, match="divisible"):
        ResidualEncoder(60, (8, 8, 8))


def test_mapping_and_head():
    m = MappingNetwork(8, 16, num_layers=3)
    z = torch.randn(5, 8)
    # Pixel norm: the mapping ignores the scale of z.
    assert torch.allclose(m(z), m(3 * z), atol=1e-5)
    head = ClassifierHead(16, 4)
    p = head.probabilities(torch.randn(5, 16))
    assert p.shape == (5, 4) and torch.allclose(p.sum(-1), torch.ones(5))
    assert math.isclose(len([l for l in head.mlp if isinstance(l, torch.nn.Linear)]), 3)
