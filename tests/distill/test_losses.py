"""Distillation losses against their direct formulas (hand-written sums over the vocabulary)."""

import math

import pytest
import torch

from toolkit.distill.losses import (HiddenProjector, causal_ce, default_layer_map, hidden_loss, hidden_state_loss,
                                    kd_loss, token_divergence)


def _probs(logits, t):
    return torch.softmax(logits.double() / t, dim=-1)


def _kl_direct(p, q):
    return (p * (p.log() - q.log())).sum(-1)


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 5, 11, generator=g) * 3, torch.randn(2, 5, 11, generator=g) * 3


@pytest.mark.parametrize("t", [1.0, 2.0, 4.0])
def test_forward_reverse_jsd_match_direct_formulas(logits, t):
    s, te = logits
    ps, pt = _probs(s, t), _probs(te, t)
    m = 0.5 * (ps + pt)
    expected = {"forward": _kl_direct(pt, ps), "reverse": _kl_direct(ps, pt),
                "jsd": 0.5 * _kl_direct(pt, m) + 0.5 * _kl_direct(ps, m)}
    for kind, direct in expected.items():
        got = token_divergence(s, te, t, kind)
        torch.testing.assert_close(got.double(), direct, rtol=1e-4, atol=1e-5)
    # JSD is bounded by ln 2; forward and reverse differ in general
    assert float(expected["jsd"].max()) <= math.log(2) + 1e-9
    assert not torch.allclose(expected["forward"], expected["reverse"])


def test_kd_loss_scales_by_t_squared_and_is_zero_for_identical(logits):
    s, te = logits
    for t in (1.0, 3.0):
        per_token = token_divergence(s, te, t, "forward").mean()
        assert float(kd_loss(s, te, None, t, "forward")) == pytest.approx(t * t * float(per_token), rel=1e-5)
    assert float(kd_loss(s, s.clone(), None, 2.0, "jsd")) == pytest.approx(0.0, abs=1e-6)


def test_padding_positions_are_ignored(logits):
    s, te = logits
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    base = kd_loss(s, te, mask, 2.0, "reverse")
    s2, te2 = s.clone(), te.clone()
    s2[0, 3:] = 1e3 * torch.randn(2, 11)  # garbage where the mask is false
    te2[0, 3:] = -7.0
    assert float(kd_loss(s2, te2, mask, 2.0, "reverse")) == pytest.approx(float(base), rel=1e-6)
    direct = 4.0 * token_divergence(s, te, 2.0, "reverse")[mask].mean()
    assert float(base) == pytest.approx(float(direct), rel=1e-5)


def test_causal_ce_ignores_minus_100():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 4, 7, generator=g)
    labels = torch.tensor([[3, 5, -100, 2]])
    logp = torch.log_softmax(logits[0], -1)
    direct = -(logp[0, 5] + logp[2, 2]) / 2  # position 1 predicts label -100: skipped
    assert float(causal_ce(logits, labels)) == pytest.approx(float(direct), rel=1e-5)


def test_hidden_losses_and_projection():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(2, 3, 8, generator=g), torch.randn(2, 3, 8, generator=g)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    assert float(hidden_loss(a, b, mask, "mse")) == pytest.approx(float(((a - b) ** 2).mean(-1)[mask].mean()), rel=1e-5)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    assert float(hidden_loss(a, b, mask, "cosine")) == pytest.approx(float((1 - cos)[mask].mean()), rel=1e-5)
    assert float(hidden_loss(a, 3 * a, None, "cosine")) == pytest.approx(0.0, abs=1e-5)  # scale-free
    # widths differ: the learned projection maps 4 -> 8 and receives gradients
    proj = HiddenProjector({1: 2}, 4, 8)
    small = (torch.randn(2, 3, 4, generator=g, requires_grad=True),) * 2
    loss = hidden_state_loss(small, (a, a, b), {1: 2}, mask, "mse", proj)
    loss.backward()
    assert proj.proj["1"].weight.grad is not None and proj.proj["1"].weight.grad.abs().sum() > 0


def test_default_layer_map_is_uniform():
    assert default_layer_map(2, 4) == {1: 2, 2: 4}
    assert default_layer_map(3, 12) == {1: 4, 2: 8, 3: 12}
    assert default_layer_map(1, 2) == {1: 2}
