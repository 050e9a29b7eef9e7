"""Randomly wired networks (Xie, Kirillov, Girshick, He, ICCV 2019).

Each random stage is a DAG drawn by a networkx generator: ER(P) `erdos_renyi_graph`, BA(M)
`barabasi_albert_graph`, WS(K, P) `watts_strogatz_graph` (the paper's WS: a ring lattice with K/2
neighbours per side, each edge rewired with probability P; no connectivity retry, as in the paper
and its public re-implementations). Undirected edges are directed from the lower to the higher node
index. Nodes without a predecessor are input nodes: they read the stage input, stride 2. Nodes
without a successor are output nodes: the stage output is their average. A node computes a sum of
its inputs weighted by sigmoid(w) (learnable, w=0 at init), then act -> 3x3 separable conv
(depthwise + pointwise) -> norm.

small regime: conv1 (3x3/2, C/2) -> conv2 (3x3/2, C) -> random stages at C, 2C, 4C;
regular regime: conv1 (3x3/2, C/2) -> random stages at C (N/2 nodes), 2C, 4C, 8C.
Classifier: 1x1 conv to 1280 + norm, global average pool, fc.
"""
from __future__ import annotations

from typing import Any

import networkx as nx
import numpy as np
import torch
from torch import Tensor, nn

from vaitrain.errors import ConfigError, VaitrainError
from vaitrain.models.layers import make_act, make_dropout, make_norm, scaled

Edges = list[tuple[int, int]]


class MissingExtraError(VaitrainError, ImportError):
    """An optional dependency (an `extra`) is not installed."""


def random_graph(kind: str, nodes: int, *, k: int = 4, p: float = 0.75, m: int = 5,
                 seed: int = 0) -> Edges:
    """Edges (u, v), u < v, of a random graph on `nodes` nodes: a DAG once directed low -> high."""
    if kind == "ws":
        if k % 2 or not 0 < k < nodes:
            raise ConfigError(f"model.graph=ws needs an even model.graph_k in (0, {nodes}); got {k}")
        g = nx.watts_strogatz_graph(nodes, k, p, seed=seed)
    elif kind == "er":
        g = nx.erdos_renyi_graph(nodes, p, seed=seed)
    elif kind == "ba":
        if not 1 <= m < nodes:
            raise ConfigError(f"model.graph=ba needs model.graph_m in [1, {nodes}); got {m}")
        g = nx.barabasi_albert_graph(nodes, m, seed=seed)
    else:
        raise ConfigError(f"model.graph={kind} is not a valid choice; choose one of: ws, er, ba")
    return sorted((min(u, v), max(u, v)) for u, v in g.edges())


class SeparableConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__(nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False),
                         nn.Conv2d(cin, cout, 1, bias=False))


class Node(nn.Module):
    """Sigmoid-weighted sum of the inputs -> act -> separable conv -> norm."""

    def __init__(self, fan_in: int, cin: int, cout: int, stride: int, norm_cfg: Any, act: str) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(fan_in)) if fan_in > 1 else None
        self.act = make_act(act, inplace=False)  # inputs are other nodes' kept outputs
        self.conv = SeparableConv(cin, cout, stride)
        self.norm = make_norm(norm_cfg, cout)

    def forward(self, inputs: list[Tensor]) -> Tensor:
        if self.weight is None:
            x = inputs[0]
        else:
            w = torch.sigmoid(self.weight)
            x = inputs[0] * w[0]
            for i in range(1, len(inputs)):
                x = x + inputs[i] * w[i]
        return self.norm(self.conv(self.act(x)))


class RandomStage(nn.Module):
    """One random DAG of nodes; halves the resolution (input nodes have stride 2)."""

    def __init__(self, edges: Edges, nodes: int, cin: int, cout: int, norm_cfg: Any, act: str) -> None:
        super().__init__()
        self.num_nodes = nodes
        self.preds: list[list[int]] = [[] for _ in range(nodes)]
        has_succ = [False] * nodes
        for u, v in edges:
            self.preds[v].append(u)
            has_succ[u] = True
        self.outputs = [v for v in range(nodes) if not has_succ[v]]
        self.nodes = nn.ModuleList(
            Node(len(p) or 1, cout if p else cin, cout, 1 if p else 2, norm_cfg, act) for p in self.preds)

    def forward(self, x: Tensor) -> Tensor:
        outs: list[Tensor] = []
        for node, preds in zip(self.nodes, self.preds):
            outs.append(node([outs[u] for u in preds] if preds else [x]))
        y = outs[self.outputs[0]]
        for v in self.outputs[1:]:
            y = y + outs[v]
        return y / len(self.outputs)


class RandWire(nn.Module):
    final_layer = "fc"

    def __init__(self, cfg: Any, norm_cfg: Any, in_channels: int, num_outputs: int) -> None:
        super().__init__()
        c = scaled(cfg.channels, cfg.width_mult)
        n = int(cfg.nodes)
        if n < 2:
            raise ConfigError(f"model.nodes={n} must be >= 2")
        act = cfg.act
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, c // 2, 3, stride=2, padding=1, bias=False),
                                   make_norm(norm_cfg, c // 2))
        if cfg.regime == "small":
            self.conv2 = nn.Sequential(make_act(act), nn.Conv2d(c // 2, c, 3, stride=2, padding=1, bias=False),
                                       make_norm(norm_cfg, c))
            plan, cin = [(n, c), (n, 2 * c), (n, 4 * c)], c
        else:
            self.conv2 = nn.Identity()
            plan, cin = [(n // 2, c), (n, 2 * c), (n, 4 * c), (n, 8 * c)], c // 2
        self.graphs: list[Edges] = []
        self.graph_nodes: list[int] = []
        stages = []
        for i, (nodes, cout) in enumerate(plan):
            edges = random_graph(cfg.graph, nodes, k=cfg.graph_k, p=cfg.graph_p, m=cfg.graph_m,
                                 seed=int(cfg.graph_seed) * 1000 + i)
            self.graphs.append(edges)
            self.graph_nodes.append(nodes)
            stages.append(RandomStage(edges, nodes, cin, cout, norm_cfg, act))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(make_act(act), nn.Conv2d(cin, 1280, 1, bias=False),
                                  make_norm(norm_cfg, 1280), make_act(act))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = make_dropout(cfg.dropout, act)
        self.fc = nn.Linear(1280, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        x = self.head(self.stages(self.conv2(self.conv1(x))))
        return self.fc(self.dropout(self.pool(x).flatten(1)))


def build_randwire(cfg: Any, norm_cfg: Any, *, in_channels: int, num_outputs: int,
                   image_size: int, dense: bool = False) -> nn.Module:
    if dense:
        raise ConfigError(f"model={cfg.name} (RandWire) gives no per-pixel output: use model=unet or "
                          "model=plain_cnn for dense tasks")
    return RandWire(cfg, norm_cfg, in_channels, num_outputs)


def _layers(nodes: int, edges: Edges) -> list[int]:
    """Longest-path depth of each node: the column it is drawn in."""
    depth = [0] * nodes
    for u, v in sorted(edges, key=lambda e: e[1]):
        depth[v] = max(depth[v], depth[u] + 1)
    return depth


def draw_graphs(model: nn.Module, dpi: int = 80) -> np.ndarray:
    """The random DAGs of a RandWire model side by side, as an H x W x 3 uint8 image.

    Input nodes green, output nodes red, edges low -> high index drawn left to right.
    Needs matplotlib (pip install 'vaitrain[plot]'); without it raises MissingExtraError (an
    ImportError and a VaitrainError), which a caller can catch to skip the image.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtraError("drawing RandWire graphs needs matplotlib: pip install 'vaitrain[plot]'") from None
    graphs, sizes = getattr(model, "graphs", None), getattr(model, "graph_nodes", None)
    if not graphs:
        raise ConfigError("draw_graphs needs a RandWire model (one with .graphs)")
    fig = Figure(figsize=(4 * len(graphs), 4), dpi=dpi)
    FigureCanvasAgg(fig)
    for i, (edges, nodes) in enumerate(zip(graphs, sizes)):
        ax = fig.add_subplot(1, len(graphs), i + 1)
        g = nx.DiGraph()
        for v, layer in enumerate(_layers(nodes, edges)):
            g.add_node(v, layer=layer)
        g.add_edges_from(edges)
        pos = nx.multipartite_layout(g, subset_key="layer")
        colors = ["tab:green" if g.in_degree(v) == 0 else "tab:red" if g.out_degree(v) == 0
                  else "tab:blue" for v in g.nodes]
        nx.draw_networkx(g, pos, ax=ax, node_size=60, node_color=colors, width=0.5, arrowsize=6,
                         with_labels=False)
        ax.set_title(f"stage {i + 1}: {nodes} nodes, {len(edges)} edges")
        ax.set_axis_off()
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
