"""Layer factories, sampling layers, RandWire graphs and FLOP counts against hand computations and
the reference numbers in REFERENCE.md."""
from __future__ import annotations

import sys

import networkx as nx
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vaitrain.errors import ConfigError, VaitrainError
from vaitrain.models import build_model
from vaitrain.models.flops import count_flops
from vaitrain.models.layers import make_act, make_down, make_norm, make_up, transposed_conv_out
from vaitrain.models.randwire import MissingExtraError, draw_graphs, random_graph
from vaitrain.schema.model import RandWireConfig, ResNetConfig
from vaitrain.schema.trainer import NormConfig


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest


# ------------------------------------------------------------------------------------------------
# Norms and activations

def test_make_norm_kinds():
    x = torch.randn(4, 6, 5, 5) * 3 + 1
    assert isinstance(make_norm(NormConfig(name="batch"), 6), nn.BatchNorm2d)
    assert isinstance(make_norm(NormConfig(name="batch"), 6, dims=1), nn.BatchNorm1d)
    assert isinstance(make_norm(NormConfig(name="none"), 6), nn.Identity)
    layer = make_norm(NormConfig(name="layer"), 6)
    assert isinstance(layer, nn.GroupNorm) and layer.num_groups == 1
    torch.testing.assert_close(layer(x), F.layer_norm(x, x.shape[1:]))  # affine is 1/0 at init
    inst = make_norm(NormConfig(name="instance"), 6)
    torch.testing.assert_close(inst(x), F.instance_norm(x))
    group = make_norm(NormConfig(name="group", groups=3), 6)
    assert isinstance(group, nn.GroupNorm) and group.num_groups == 3
    assert isinstance(make_norm(NormConfig(name="layer"), 6, dims=1), nn.LayerNorm)


def test_group_norm_mismatch_message():
    with pytest.raises(ConfigError) as info:
        make_norm(NormConfig(name="group", groups=8), 12)
    assert str(info.value) == ("norm=group: norm.groups=8 does not divide the channel count 12 of this "
                               "model's norm layers; use norm.groups in {1, 2, 3, 4, 6, 12} (divides "
                               "every layer), or another norm")


@pytest.mark.parametrize("name, cls", [("relu", nn.ReLU), ("leaky_relu", nn.LeakyReLU), ("sigmoid", nn.Sigmoid),
                                       ("tanh", nn.Tanh), ("elu", nn.ELU), ("selu", nn.SELU), ("gelu", nn.GELU)])
def test_make_act(name, cls):
    assert type(make_act(name)) is cls


def test_unknown_choices_raise_config_error():
    with pytest.raises(ConfigError, match="model.act=swish"):
        make_act("swish")
    with pytest.raises(ConfigError, match="norm=batchnorm"):
        make_norm(NormConfig(name="batchnorm"), 4)


# ------------------------------------------------------------------------------------------------
# Down- and up-sampling

@pytest.mark.parametrize("kind", ["maxpool", "avgpool", "strided"])
def test_make_down_halves(kind):
    assert make_down(kind, 5)(torch.randn(2, 5, 8, 6)).shape == (2, 5, 4, 3)


def test_maxunpool_puts_maxima_back():
    x = torch.tensor([[[[1., 5., 2., 0.],
                        [3., 4., 8., 1.],
                        [0., 2., 1., 1.],
                        [9., 1., 3., 7.]]]])
    pooled, idx = make_down("maxpool", 1, return_indices=True)(x)
    assert pooled.tolist() == [[[[5., 8.], [9., 7.]]]]
    up = make_up("maxunpool", 1, 1)(pooled, idx)
    expected = torch.tensor([[[[0., 5., 0., 0.],
                               [0., 0., 8., 0.],
                               [0., 0., 0., 0.],
                               [9., 0., 0., 7.]]]])
    assert torch.equal(up, expected)
    # on random (positive, tie-free) data: every 2x2 window holds its maximum at the argmax and
    # zeros elsewhere
    x = torch.rand(3, 4, 6, 6) + 0.5
    pooled, idx = make_down("maxpool", 4, return_indices=True)(x)
    up = make_up("maxunpool", 4, 4)(pooled, idx)
    assert torch.equal(up, torch.where(up != 0, x, torch.zeros_like(x)))
    assert torch.equal(F.max_pool2d(up, 2), pooled)
    assert int((up != 0).sum()) == pooled.numel()


@pytest.mark.parametrize("size, k, s, p, op, d, expected", [
    (4, 2, 2, 0, 0, 1, 8),      # U-Net's up-sampling doubles
    (5, 3, 2, 1, 1, 1, 10),     # (5-1)*2 - 2 + 2 + 1 + 1
    (7, 4, 3, 2, 0, 2, 21),     # (7-1)*3 - 4 + 2*3 + 0 + 1
    (1, 3, 1, 0, 0, 1, 3),
])
def test_transposed_conv_output_size(size, k, s, p, op, d, expected):
    assert transposed_conv_out(size, k, s, p, op, d) == expected
    conv = nn.ConvTranspose2d(1, 1, k, stride=s, padding=p, output_padding=op, dilation=d)
    assert conv(torch.randn(1, 1, size, size)).shape[-1] == expected


@pytest.mark.parametrize("kind, out_ch", [("transposed", 3), ("bilinear", 6)])
def test_make_up_doubles(kind, out_ch):
    assert make_up(kind, 6, 3)(torch.randn(2, 6, 5, 7)).shape == (2, out_ch, 10, 14)


def test_return_indices_needs_maxpool():
    with pytest.raises(ConfigError, match="model.down=maxpool"):
        make_down("avgpool", 4, return_indices=True)


# ------------------------------------------------------------------------------------------------
# RandWire graphs

@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("p", [0.0, 0.25, 0.75, 1.0])
def test_ws_graph_has_nk_over_2_edges(seed, p):
    edges = random_graph("ws", 32, k=4, p=p, seed=seed)
    assert len(edges) == 64  # rewiring moves edges, never adds or drops them


@pytest.mark.parametrize("seed", range(5))
def test_ba_graph_edges(seed):
    assert len(random_graph("ba", 32, m=5, seed=seed)) == 135  # (32 - 5) * 5


@pytest.mark.parametrize("kind", ["ws", "er", "ba"])
def test_graphs_are_dags_directed_low_to_high(kind):
    for seed in range(3):
        edges = random_graph(kind, 32, k=4, p=0.4, m=5, seed=seed)
        assert all(u < v for u, v in edges) and len(set(edges)) == len(edges)
        g = nx.DiGraph(edges)
        assert nx.is_directed_acyclic_graph(g)
    assert random_graph(kind, 32, p=0.4, seed=7) == random_graph(kind, 32, p=0.4, seed=7)


def test_randwire_model_wiring_follows_its_graphs():
    cfg = RandWireConfig(channels=8, nodes=12, graph_seed=3)
    model = build_model(cfg, NormConfig(), in_channels=3, num_outputs=4, image_size=32)
    assert len(model.graphs) == 3 and model.graph_nodes == [12, 12, 12]
    assert model.graphs[0] == random_graph("ws", 12, k=4, p=0.75, seed=3000)
    for stage, edges in zip(model.stages, model.graphs):
        preds = {v: sorted(u for u, w in edges if w == v) for v in range(12)}
        for v, node in enumerate(stage.nodes):
            assert stage.preds[v] == preds[v]
            depthwise = node.conv[0]
            assert depthwise.stride == ((2, 2) if not preds[v] else (1, 1))  # input nodes stride 2
            assert (node.weight is None) == (len(preds[v]) <= 1)
        sources = {u for u, _ in edges}
        assert stage.outputs == [v for v in range(12) if v not in sources]
    other = build_model(RandWireConfig(channels=8, nodes=12, graph_seed=4), NormConfig(), in_channels=3,
                        num_outputs=4, image_size=32)
    assert other.graphs != model.graphs
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)


def test_randwire_small_regime_multiply_adds():
    model = build_model(RandWireConfig(), NormConfig(), in_channels=3, num_outputs=1000, image_size=224)
    macs = count_flops(model, (1, 3, 224, 224), device="cpu", backward=False)["forward"] / 2
    assert abs(macs / 580e6 - 1) < 0.10


def test_draw_graphs_image(monkeypatch):
    model = build_model(RandWireConfig(channels=8, nodes=10), NormConfig(), in_channels=3, num_outputs=4,
                        image_size=32)
    img = draw_graphs(model, dpi=30)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.shape[1] > img.shape[0] and len(np.unique(img.reshape(-1, 3), axis=0)) > 3
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if matplotlib were missing
    with pytest.raises(MissingExtraError, match="pip install 'vaitrain\\[plot\\]'") as info:
        draw_graphs(model)
    assert isinstance(info.value, ImportError) and isinstance(info.value, VaitrainError)


# ------------------------------------------------------------------------------------------------
# FLOPs

def test_count_flops_of_one_conv_by_hand():
    conv = nn.Conv2d(2, 4, 3, padding=1)
    flops = count_flops(conv, (5, 2, 8, 8))
    assert flops["forward"] == 2 * 5 * 8 * 8 * 4 * 2 * 9  # 2 FLOPs per multiply-add
    assert flops["forward_per_sample"] == flops["forward"] / 5
    assert flops["params"] == 4 * 2 * 9 + 4
    assert conv.weight.device.type == "cpu" and conv.weight.grad is None  # the model is untouched


def test_resnet50_training_step_flops():
    model = build_model(ResNetConfig(depth=50, style="imagenet"), NormConfig(), in_channels=3,
                        num_outputs=1000, image_size=224)
    flops = count_flops(model, (1, 3, 224, 224))
    assert abs(flops["train_per_sample"] / 24.3e9 - 1) < 0.01  # REFERENCE.md: 24.3 GFLOP
    assert abs(flops["forward"] / 2 / 4.09e9 - 1) < 0.02  # the usual 4.1 GMACs
