"""Initialization and self-normalization facts (REFERENCE.md), measured with init_report."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vaitrain.inspect_init import init_report
from vaitrain.models import build_model
from vaitrain.models.layers import init_weights, make_dropout
from vaitrain.schema.model import PlainConfig, ResNetConfig
from vaitrain.schema.trainer import NormConfig

NONE = NormConfig(name="none")


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest


def mlp(act: str, init: str, depth: int = 32, width: int = 512) -> nn.Module:
    torch.manual_seed(0)
    cfg = PlainConfig(kind="mlp", depth=depth, width=width, act=act, init=init, use_norm=False)
    # 2 x 16 x 16 images flatten to 512 features = the width, so every layer is square
    return build_model(cfg, NONE, in_channels=2, num_outputs=10, image_size=16).eval()


def rows_of(model: nn.Module, kind: type, n: int = 512) -> list[dict]:
    x = torch.randn(n, 2, 16, 16, generator=torch.Generator().manual_seed(1))
    return [r for r in init_report(model, x) if r["type"] == kind.__name__ and r["name"].startswith("body")]


def test_selu_lecun_mlp_is_self_normalizing():
    rows = rows_of(mlp("selu", "lecun"), nn.SELU)
    assert len(rows) == 32
    for r in rows:
        assert abs(r["act_mean"]) < 0.05, r
        assert 0.9 <= r["act_var"] <= 1.1, r


def test_selu_constants_and_alpha_dropout():
    alpha, lam = 1.6732632423543772, 1.0507009873554805
    x = torch.tensor([1.0, -1.0])
    torch.testing.assert_close(nn.SELU()(x), torch.tensor([lam, lam * alpha * (math.exp(-1) - 1)]))
    drop = make_dropout(0.2, "selu")
    assert isinstance(drop, nn.AlphaDropout)
    torch.manual_seed(0)
    y = drop.train()(nn.SELU()(torch.randn(1_000_000)))  # SELU of N(0,1): mean 0, variance 1
    assert abs(y.mean().item()) < 0.02 and abs(y.var().item() - 1) < 0.05


def _linear_vars(act: str, init: str) -> list[float]:
    return [r["act_var"] for r in rows_of(mlp(act, init), nn.Linear, n=256)]


def test_he_keeps_relu_variance_xavier_halves_it():
    he = _linear_vars("relu", "he")
    assert len(he) == 32
    assert 0.25 < he[-1] / he[0] < 4  # He: variance preserved within a small factor over 32 layers
    xavier = _linear_vars("relu", "xavier")  # square layers: Var(w) = 1/fan_in
    ratios = sorted(b / a for a, b in zip(xavier, xavier[1:]))
    assert 0.4 < ratios[len(ratios) // 2] < 0.6  # halves at each layer
    assert 2 ** -34 < xavier[-1] / xavier[0] < 2 ** -28  # about 2^-31 after 31 halvings


def test_pytorch_default_init_is_not_he():
    # default Var(w) = 1/(3 fan_in): with ReLU the variance shrinks about 6x per layer (until the
    # biases' own variance, also 1/(3 fan_in), dominates a few layers down)
    v = _linear_vars("relu", "default")
    for a, b in zip(v[:2], v[1:3]):
        assert 1 / 8 < b / a < 1 / 5


@pytest.mark.parametrize("init, var", [("xavier", 2 / (1024 + 256)), ("he", 2 / 1024), ("lecun", 1 / 1024)])
@pytest.mark.parametrize("dist", ["normal", "uniform"])
def test_init_weights_variances(init, var, dist):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1024, 256), nn.Conv2d(64, 32, 4))  # conv fan_in = 64*16 = 1024
    init_weights(model, init, dist)
    conv_var = 2 / (1024 + 32 * 16) if init == "xavier" else var  # conv fan_out = 32*16
    for m, expected in zip(model, (var, conv_var)):
        assert abs(m.weight.var().item() / expected - 1) < 0.05
        assert m.bias.abs().max() == 0
        if dist == "uniform":
            assert m.weight.abs().max() <= math.sqrt(3 * expected)


def test_default_init_leaves_pytorch_init():
    torch.manual_seed(0)
    layer = nn.Linear(64, 64)
    before = layer.weight.clone()
    init_weights(layer, "default", "normal")
    assert torch.equal(layer.weight, before)
    assert abs(layer.weight.var().item() * 3 * 64 - 1) < 0.1  # U(+-1/sqrt(fan_in)): 1/(3 fan_in)


def test_build_model_applies_init():
    model = build_model(ResNetConfig(depth=20, init="he"), NormConfig(), in_channels=3, num_outputs=10,
                        image_size=32)
    w = model.layer3[0].conv2.weight  # fan_in = 64 * 9
    assert abs(w.var().item() * 64 * 9 / 2 - 1) < 0.05


def test_init_report_matches_a_hand_computation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(inplace=True), nn.Linear(5, 3))
    x = torch.randn(7, 6)
    model[0].weight.grad = torch.ones_like(model[0].weight)  # an old gradient must survive the report
    rows = init_report(model, x, loss_fn=lambda out: out.square().sum())
    assert [r["name"] for r in rows] == ["0", "1", "2"]
    h = model[0](x)
    assert rows[0]["act_mean"] == pytest.approx(h.mean().item(), rel=1e-5)
    assert rows[0]["act_var"] == pytest.approx(h.var(unbiased=False).item(), rel=1e-5)
    h = h.detach().requires_grad_()
    model[2](torch.relu(h)).square().sum().backward()
    assert rows[0]["grad_norm"] == pytest.approx(h.grad.norm().item(), rel=1e-5)
    assert rows[0]["grad_rms"] == pytest.approx(h.grad.norm().item() / math.sqrt(35), rel=1e-5)
    assert rows[1]["act_var"] == pytest.approx(torch.relu(h).var(unbiased=False).item(), rel=1e-5)
    assert rows[0]["weight_var"] == pytest.approx(model[0].weight.var(unbiased=False).item(), rel=1e-5)
    assert rows[2]["weight_grad_norm"] > 0
    assert torch.equal(model[0].weight.grad, torch.ones_like(model[0].weight))


def test_init_report_counts_repeated_calls_of_a_module():
    model = build_model(ResNetConfig(depth=20, width_mult=0.25), NormConfig(), in_channels=3,
                        num_outputs=10, image_size=32)
    rows = init_report(model, torch.randn(2, 3, 16, 16))
    names = [r["name"] for r in rows]
    assert "layer1.0.relu" in names and "layer1.0.relu#2" in names and names[-1] == "fc"
    assert all(math.isfinite(r["grad_norm"]) for r in rows)
