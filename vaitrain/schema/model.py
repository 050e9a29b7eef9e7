"""Schemas of the `model` group: a common base and one subclass per model family."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional


@dataclass
class ModelConfig:
    name: str = "resnet20"
    act: str = "relu"  # relu|leaky_relu|sigmoid|tanh|elu|selu|gelu
    init: str = "default"  # default|xavier|he|lecun (default: ImageNet ResNets torchvision's He fan_out convs, others PyTorch's)
    init_dist: str = "normal"  # normal|uniform (for xavier/he/lecun)
    dropout: float = 0.0  # before the final layer (AlphaDropout for selu nets)
    width_mult: float = 1.0  # multiplies every hidden width
    # Starting weights: a torchvision-format state_dict file (e.g. resnet18-f37072fd.pth), or
    # `imagenet` for torchvision's file in torch's hub cache; a new final layer/stem where the
    # classes/channels differ. Implies data.normalize=imagenet unless data.normalize is given.
    weights: str = ""
    freeze: str = "none"  # none | backbone (train the final layer only; frozen BN stays in eval mode)


@dataclass
class ResNetConfig(ModelConfig):
    family: str = "resnet"  # the builder (set by the model's YAML)
    depth: int = 20  # layers: 20/32/44/56/110 (cifar style), 18/34/50/101 (imagenet style)
    style: str = "cifar"  # cifar (16/32/64, option-A shortcuts) | imagenet (v1.5 bottleneck/basic)
    small_stem: bool = False  # imagenet style only: 3x3 stride-1 stem, no max-pool (for 32 px)
    down: str = "strided"  # strided | maxpool | avgpool: how a stage halves its resolution


@dataclass
class DenseNetConfig(ModelConfig):
    family: str = "densenet"  # the builder (set by the model's YAML)
    style: str = "imagenet"  # imagenet | cifar
    growth_rate: int = 32  # k: channels each layer adds
    block_config: List[int] = field(default_factory=lambda: [6, 12, 24, 16])  # layers per dense block
    num_init_features: int = 64  # channels of the stem
    bn_size: int = 4  # bottleneck width = bn_size * growth_rate; 0 = no bottleneck
    compression: float = 1.0  # theta of the transition layers (0.5 for DenseNet-BC)
    memory_efficient: bool = False  # checkpointed concatenation: less memory, more compute
    down: str = "avgpool"  # transition down-sampling: avgpool | maxpool | strided


@dataclass
class UNetConfig(ModelConfig):
    family: str = "unet"  # the builder (set by the model's YAML)
    base_width: int = 64  # channels of the first level (doubled per level down)
    depth: int = 4  # number of down/up levels
    down: str = "maxpool"  # maxpool | avgpool | strided
    up: str = "transposed"  # transposed | bilinear | maxunpool
    padding: bool = True  # padded 3x3 convs: output size = input size


@dataclass
class RandWireConfig(ModelConfig):
    family: str = "randwire"  # the builder (set by the model's YAML)
    regime: str = "small"  # small | regular
    channels: int = 78  # C
    nodes: int = 32  # N per stage
    graph: str = "ws"  # ws | er | ba
    graph_k: int = 4  # WS: each node joined to k nearest neighbours
    graph_p: float = 0.75  # WS rewiring / ER edge probability
    graph_m: int = 5  # BA: edges of each new node
    graph_seed: int = 0  # seed of the random graphs


@dataclass
class PlainConfig(ModelConfig):
    family: str = "plain"  # the builder (set by the model's YAML)
    kind: str = "mlp"  # mlp | cnn
    depth: int = 20  # hidden layers
    width: int = 256  # units (mlp) or channels (cnn)
    down: str = "maxpool"  # cnn only: maxpool | avgpool | strided, applied every `down_every` layers
    down_every: int = 0  # 0 = never down-sample inside the body
    use_norm: bool = True  # false: no norm layers whatever norm= says (self-normalizing SELU nets)
