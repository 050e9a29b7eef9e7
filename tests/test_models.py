"""The model zoo against independent expectations: reference parameter counts (REFERENCE.md),
torchvision's state_dicts and outputs, and every model x norm running forward/backward."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from omegaconf import OmegaConf

from vaitrain.config import compose, conf_dir, group_options
from vaitrain.errors import ConfigError
from vaitrain.models import build_model
from vaitrain.schema.root import GROUP_SCHEMAS, SCHEMA_PREFIX
from vaitrain.schema.model import DenseNetConfig, PlainConfig, RandWireConfig, ResNetConfig, UNetConfig
from vaitrain.schema.trainer import NormConfig

BATCH = NormConfig(name="batch")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny ops on a shared 2-core machine: one thread avoids OpenMP stalls when others' tests run
    at the same time (seen: 0.1 s per step with 1 thread, 2-10 s with 2 under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_meta(cfg, classes: int, in_channels: int = 3, image_size: int = 224, norm=BATCH) -> nn.Module:
    """Shapes only: counting parameters of the big models costs no memory and no init time."""
    with torch.device("meta"):
        return build_model(cfg, norm, in_channels=in_channels, num_outputs=classes, image_size=image_size)


# ------------------------------------------------------------------------------------------------
# Parameter counts (REFERENCE.md)

@pytest.mark.parametrize("depth, classes, expected", [
    (18, 1000, 11_689_512), (34, 1000, 21_797_672), (50, 1000, 25_557_032),
    (101, 1000, 44_549_160), (18, 10, 11_181_642), (50, 10, 23_528_522),
])
def test_imagenet_resnet_params(depth, classes, expected):
    assert n_params(build_meta(ResNetConfig(depth=depth, style="imagenet"), classes)) == expected


@pytest.mark.parametrize("depth, expected", [
    (20, 269_722), (32, 464_154), (44, 658_586), (56, 853_018), (110, 1_727_962)])
def test_cifar_resnet_params(depth, expected):
    assert n_params(build_meta(ResNetConfig(depth=depth, style="cifar"), 10, image_size=32)) == expected


def test_cifar_resnet20_params_by_hand():
    # conv/BN per stage + fc, counted from the architecture: 3x3 convs, option A has no params.
    convs = 3 * 16 * 9 + 6 * 16 * 16 * 9 + (16 * 32 + 5 * 32 * 32) * 9 + (32 * 64 + 5 * 64 * 64) * 9
    bns = 2 * (16 + 6 * 16 + 6 * 32 + 6 * 64)
    assert n_params(build_meta(ResNetConfig(depth=20), 10, image_size=32)) == convs + bns + 64 * 10 + 10


DENSENET_121 = dict(style="imagenet", growth_rate=32, block_config=[6, 12, 24, 16],
                    num_init_features=64, bn_size=4, compression=0.5)
DENSENET_BC100 = dict(style="cifar", growth_rate=12, block_config=[16, 16, 16],
                      num_init_features=24, bn_size=4, compression=0.5)
DENSENET_40 = dict(style="cifar", growth_rate=12, block_config=[12, 12, 12],
                   num_init_features=16, bn_size=0, compression=1.0)


@pytest.mark.parametrize("kw, classes, expected", [
    (DENSENET_121, 1000, 7_978_856), (DENSENET_121, 10, 6_964_106),
    (DENSENET_BC100, 10, 769_162), (DENSENET_BC100, 100, 800_032), (DENSENET_40, 10, 1_019_722),
])
def test_densenet_params(kw, classes, expected):
    assert n_params(build_meta(DenseNetConfig(**kw), classes, image_size=32)) == expected


@pytest.mark.parametrize("kw, in_ch, norm, expected", [
    ({}, 3, "batch", 31_037_698),
    ({"up": "bilinear"}, 3, "batch", 17_263_042),
    ({"padding": False}, 1, "none", 31_030_658),  # Ronneberger's original: unpadded, bias, no BN
])
def test_unet_params(kw, in_ch, norm, expected):
    model = build_meta(UNetConfig(**kw), 2, in_channels=in_ch, image_size=572 if "padding" in kw else 256,
                       norm=NormConfig(name=norm))
    assert n_params(model) == expected


@pytest.mark.parametrize("regime, channels, expected", [
    ("small", 78, 5.6e6), ("regular", 109, 32e6), ("regular", 154, 61.7e6)])
def test_randwire_params_near_paper(regime, channels, expected):
    model = build_meta(RandWireConfig(regime=regime, channels=channels), 1000)
    assert abs(n_params(model) / expected - 1) < 0.10


def load_model_yaml(name: str, **changes):
    """conf/model/<name>.yaml merged onto its schema: the model node compose() gives (checked in
    the test below), without Hydra's per-call cost. Unknown keys fail the merge."""
    raw = OmegaConf.load(conf_dir() / "model" / f"{name}.yaml")
    schema = GROUP_SCHEMAS["model"][raw.defaults[0].removeprefix(SCHEMA_PREFIX)]
    body = {k: v for k, v in raw.items() if k != "defaults"}
    return OmegaConf.merge(OmegaConf.structured(schema), body, changes)


def test_yaml_loader_equals_compose():
    for name in ("resnet20", "selu_mlp"):
        assert compose([f"model={name}"]).model == load_model_yaml(name)


@pytest.mark.parametrize("name, classes, size, expected", [
    ("resnet20", 10, 32, 269_722), ("resnet110", 10, 32, 1_727_962), ("resnet50", 1000, 224, 25_557_032),
    ("densenet_bc100", 10, 32, 769_162), ("densenet40", 10, 32, 1_019_722),
    ("densenet121", 1000, 224, 7_978_856), ("unet", 2, 256, 31_037_698),
])
def test_shipped_yaml_gives_the_reference_count(name, classes, size, expected):
    assert n_params(build_meta(load_model_yaml(name), classes, image_size=size)) == expected


# ------------------------------------------------------------------------------------------------
# torchvision equivalence

@pytest.mark.parametrize("ours, theirs", [
    (ResNetConfig(depth=18, style="imagenet"), torchvision.models.resnet18),
    (ResNetConfig(depth=34, style="imagenet"), torchvision.models.resnet34),
    (ResNetConfig(depth=50, style="imagenet"), torchvision.models.resnet50),
    (ResNetConfig(depth=101, style="imagenet"), torchvision.models.resnet101),
    (DenseNetConfig(**DENSENET_121), torchvision.models.densenet121),
    (DenseNetConfig(**{**DENSENET_121, "block_config": [6, 12, 32, 32]}), torchvision.models.densenet169),
    (DenseNetConfig(**{**DENSENET_121, "block_config": [6, 12, 48, 32]}), torchvision.models.densenet201),
])
def test_state_dict_keys_and_shapes_match_torchvision(ours, theirs):
    mine = build_meta(ours, 1000).state_dict()
    with torch.device("meta"):
        ref = theirs().state_dict()
    assert list(mine) == list(ref)
    assert {k: tuple(v.shape) for k, v in mine.items()} == {k: tuple(v.shape) for k, v in ref.items()}


@pytest.mark.parametrize("ours, theirs", [
    (ResNetConfig(depth=18, style="imagenet"), torchvision.models.resnet18),
    (ResNetConfig(depth=50, style="imagenet"), torchvision.models.resnet50),
    (DenseNetConfig(**DENSENET_121), torchvision.models.densenet121),
])
def test_torchvision_weights_load_strictly_and_give_the_same_outputs(ours, theirs):
    torch.manual_seed(0)
    ref = theirs().eval()
    with torch.no_grad():  # non-trivial running statistics, so eval mode is really compared
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    mine = build_model(ours, BATCH, in_channels=3, num_outputs=1000, image_size=224)
    mine.load_state_dict(ref.state_dict(), strict=True)
    mine.eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(mine(x), ref(x))


# ------------------------------------------------------------------------------------------------
# Every model x norm builds and trains one step at a small size

# Small versions of every shipped model: widths chosen so the group count divides every layer.
SMALL = {
    "resnet": (dict(width_mult=0.5), 4),
    "resnet_imagenet": (dict(width_mult=0.125), 4),
    "densenet": (dict(width_mult=0.125), 4),
    "densenet_bc100": (dict(width_mult=0.3333), 2),
    "densenet40": (dict(width_mult=0.5), 2),
    "unet": (dict(width_mult=0.125), 4),
    "randwire_small": (dict(width_mult=0.2, nodes=10), 4),  # C = 16
    "randwire_regular": (dict(width_mult=0.1468, nodes=10), 4),  # C = 16
    "plain": (dict(depth=4, width=16), 4),
    "other": (dict(), 4),  # a model added later is checked at its YAML's own size
}


def _small_key(name: str) -> str:
    if name in SMALL:
        return name
    if name.startswith("resnet"):
        return "resnet" if int(name[6:]) in (20, 32, 44, 56, 110) else "resnet_imagenet"
    if name.startswith("selu"):
        return "plain"
    return next((k for k in ("densenet", "unet", "plain") if name.startswith(k)), "other")


@pytest.fixture(scope="module")
def small_configs():
    out = {}
    for name in group_options("model"):
        changes, groups = SMALL[_small_key(name)]
        out[name] = (load_model_yaml(name, **changes), groups)
    return out


def _check_contract(model: nn.Module, x: torch.Tensor, out: torch.Tensor, classes: int, dense: bool) -> None:
    expected = (x.shape[0], classes, *x.shape[-2:]) if dense else (x.shape[0], classes)
    assert tuple(out.shape) == expected
    final = model.get_submodule(model.final_layer)
    weighted = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert weighted[-1] == model.final_layer
    assert (final.out_features if isinstance(final, nn.Linear) else final.out_channels) == classes


@pytest.mark.parametrize("norm", ["batch", "group", "layer", "instance", "none"])
def test_every_model_and_norm_runs_forward_backward(small_configs, norm):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    for name, (cfg, groups) in small_configs.items():
        norm_cfg = NormConfig(name=norm, groups=groups)
        dense_capable = cfg.family == "unet" or cfg.family == "plain" and cfg.kind == "cnn"
        if norm == "instance" and cfg.family == "plain" and cfg.kind == "mlp" and cfg.use_norm:
            with pytest.raises(ConfigError, match="norm=instance needs feature maps"):
                build_model(cfg, norm_cfg, in_channels=3, num_outputs=5, image_size=32)
            continue
        for dense in (False, True):
            if dense and not dense_capable:
                with pytest.raises(ConfigError, match="no per-pixel output"):
                    build_model(cfg, norm_cfg, in_channels=3, num_outputs=5, image_size=32, dense=True)
                continue
            model = build_model(cfg, norm_cfg, in_channels=3, num_outputs=5, image_size=32, dense=dense)
            out = model(x)
            _check_contract(model, x, out, 5, dense)
            out.square().mean().backward()
            missing = [n for n, p in model.named_parameters() if p.grad is None]
            assert not missing, f"{name}/{norm}: parameters outside the graph: {missing[:3]}"
            assert all(torch.isfinite(p.grad).all() for p in model.parameters()), name
            kinds = {type(m) for m in model.modules()}
            if norm != "batch":
                assert not kinds & {nn.BatchNorm1d, nn.BatchNorm2d}, name
            if norm == "none" or cfg.family == "plain" and not cfg.use_norm:
                assert not kinds & {nn.GroupNorm, nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d}, name


@pytest.mark.parametrize("name", ["resnet20", "resnet50", "densenet121", "unet", "randwire_small",
                                  "plain_cnn", "plain_mlp"])
def test_act_comes_from_the_factory(small_configs, name):
    cfg, _ = small_configs[name]
    cfg = cfg.copy()
    cfg.act = "elu"
    model = build_meta(cfg, 5, image_size=32, norm=NormConfig(name="layer"))
    kinds = {type(m) for m in model.modules()}
    assert nn.ELU in kinds and nn.ReLU not in kinds and not kinds & {nn.BatchNorm1d, nn.BatchNorm2d}


def test_dropout_sits_before_the_final_layer():
    for act, kind in (("relu", nn.Dropout), ("selu", nn.AlphaDropout)):
        cfg = ResNetConfig(depth=20, dropout=0.9, act=act, width_mult=0.5)
        model = build_model(cfg, BATCH, in_channels=3, num_outputs=4, image_size=32)
        assert type(model.dropout) is kind
    seen = {}
    model = build_model(ResNetConfig(depth=20, dropout=0.9), BATCH, in_channels=3, num_outputs=4, image_size=32)
    model.fc.register_forward_hook(lambda m, i, o: seen.setdefault("x", i[0]))
    model.train()(torch.randn(4, 3, 16, 16))
    assert (seen["x"] == 0).float().mean() > 0.8  # 90% of the fc inputs were dropped


def test_width_mult_scales_hidden_widths():
    model = build_model(ResNetConfig(depth=20, width_mult=2.0), BATCH, in_channels=1, num_outputs=3, image_size=32)
    assert model.conv1.out_channels == 32 and model.fc.in_features == 128 and model.conv1.in_channels == 1
    unet = build_meta(UNetConfig(width_mult=0.5), 2, image_size=32)
    assert unet.inc[0].out_channels == 32 and unet.downs[-1][3].out_channels == 512


@pytest.mark.parametrize("down", ["maxpool", "avgpool"])
def test_resnet_pooling_down_sampling_keeps_params_and_shapes(down):
    ref = build_model(ResNetConfig(depth=20), BATCH, in_channels=3, num_outputs=10, image_size=32)
    model = build_model(ResNetConfig(depth=20, down=down), BATCH, in_channels=3, num_outputs=10, image_size=32)
    assert n_params(model) == n_params(ref)
    feats = {}
    model.layer3.register_forward_hook(lambda m, i, o: feats.setdefault("x", o))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10) and feats["x"].shape == (2, 64, 8, 8)
    big = build_meta(ResNetConfig(depth=50, style="imagenet", down=down), 1000)
    assert n_params(big) == 25_557_032


def test_small_stem_keeps_resolution():
    model = build_model(ResNetConfig(depth=18, style="imagenet", small_stem=True, width_mult=0.25),
                        BATCH, in_channels=3, num_outputs=10, image_size=32)
    feats = {}
    model.layer4.register_forward_hook(lambda m, i, o: feats.setdefault("x", o))
    model(torch.randn(2, 3, 32, 32))
    assert feats["x"].shape[-1] == 4  # 32 / 8: three stride-2 stages, no stem down-sampling


def test_densenet_memory_efficient_gives_the_same_gradients():
    kw = dict(DENSENET_BC100, block_config=[3, 3, 3])
    torch.manual_seed(0)
    plain = build_model(DenseNetConfig(**kw), BATCH, in_channels=3, num_outputs=10, image_size=32)
    ckpt = build_model(DenseNetConfig(**kw, memory_efficient=True), BATCH, in_channels=3,
                       num_outputs=10, image_size=32)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    for m in (plain, ckpt):
        m(x).square().sum().backward()
    for (n, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=n)


# ------------------------------------------------------------------------------------------------
# U-Net behaviour

@pytest.mark.parametrize("up", ["transposed", "bilinear", "maxunpool"])
def test_unet_dense_and_pooled_outputs(up):
    torch.manual_seed(0)
    cfg = UNetConfig(up=up, width_mult=0.125, depth=3)
    model = build_model(cfg, BATCH, in_channels=1, num_outputs=3, image_size=24, dense=True).eval()
    flat = build_model(cfg, BATCH, in_channels=1, num_outputs=3, image_size=24, dense=False).eval()
    flat.load_state_dict(model.state_dict())
    x = torch.randn(2, 1, 24, 24)
    dense = model(x)
    assert dense.shape == (2, 3, 24, 24)
    torch.testing.assert_close(flat(x), dense.mean((2, 3)))  # non-dense = global average of the map


def test_unpadded_unet_maps_572_to_388():
    model = build_model(UNetConfig(padding=False, width_mult=1 / 16), NormConfig(name="none"),
                        in_channels=1, num_outputs=2, image_size=572)
    with torch.no_grad():
        assert model.forward_map(torch.randn(1, 1, 572, 572)).shape == (1, 2, 388, 388)


# ------------------------------------------------------------------------------------------------
# Invalid combinations: one-line ConfigError naming what is wrong and how to fix it

def _error(fn) -> str:
    with pytest.raises(ConfigError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_group_norm_channel_mismatch_names_channels_and_valid_groups():
    msg = _error(lambda: build_model(ResNetConfig(depth=20), NormConfig(name="group", groups=3),
                                     in_channels=3, num_outputs=10, image_size=32))
    # widths 16/32/64: every one is indivisible by 3; the groups dividing all are the divisors of 16
    assert "norm.groups=3" in msg and "16, 32, 64" in msg and "{1, 2, 4, 8, 16}" in msg
    # DenseNet-BC: the first channel count 8 fails on (24 + 12 = 36) but 4 would fail later (150):
    # the suggestion must divide every layer, so only gcd-divisors are offered.
    msg = _error(lambda: build_meta(DenseNetConfig(**DENSENET_BC100), 10, image_size=32,
                                    norm=NormConfig(name="group", groups=8)))
    assert "norm.groups=8" in msg and "36" in msg and "{1, 2, 3, 6}" in msg


def test_maxunpool_needs_maxpool():
    msg = _error(lambda: build_model(UNetConfig(up="maxunpool", down="avgpool"), BATCH, in_channels=3,
                                     num_outputs=2, image_size=32, dense=True))
    assert "model.up=maxunpool" in msg and "model.down=avgpool" in msg and "model.down=maxpool" in msg


def test_unet_size_not_divisible_names_nearest_sizes():
    msg = _error(lambda: build_meta(UNetConfig(), 2, image_size=100))
    assert "100" in msg and "2^4=16" in msg and "data.image_size=96 or 112" in msg
    model = build_model(UNetConfig(width_mult=0.125), BATCH, in_channels=3, num_outputs=2, image_size=32)
    assert "data.image_size=32 or 48" in _error(lambda: model(torch.randn(1, 3, 40, 40)))


def test_other_invalid_options():
    assert "6n+2" in _error(lambda: build_meta(ResNetConfig(depth=21), 10))
    assert "18, 34, 50, 101" in _error(lambda: build_meta(ResNetConfig(depth=21, style="imagenet"), 10))
    assert "even model.graph_k" in _error(lambda: build_meta(RandWireConfig(graph_k=3), 10))
    assert "down_every=0" in _error(lambda: build_model(PlainConfig(kind="cnn", down_every=2), BATCH,
                                                        in_channels=3, num_outputs=2, image_size=32,
                                                        dense=True))
    assert "model.padding=true" in _error(lambda: build_model(UNetConfig(padding=False), BATCH, in_channels=3,
                                                              num_outputs=2, image_size=572, dense=True))


def test_too_small_images_for_pooling_name_the_smallest_size():
    # DenseNet-121: /4 in the stem (padded, rounds up), then three 2x2 average pools (round down):
    # 29 px -> 8 -> 4 -> 2 -> 1 fits, 28 px -> 7 -> 3 -> 1 -> 0 does not
    dn = DenseNetConfig(name="densenet121", **DENSENET_121)
    assert build_meta(dn, 10, image_size=29) is not None
    msg = _error(lambda: build_meta(dn, 10, image_size=28))
    assert msg == ("model=densenet121 down-samples a 28 px image to nothing: use data.image_size >= 29 "
                   "or model.down=strided")
    rn = ResNetConfig(name="resnet50", depth=50, style="imagenet", down="avgpool")
    assert "data.image_size >= 29" in _error(lambda: build_meta(rn, 10, image_size=16))
    assert build_meta(ResNetConfig(depth=50, style="imagenet"), 10, image_size=16) is not None  # strided
    cnn = PlainConfig(name="plain_cnn", kind="cnn", depth=10, width=4, down_every=2)  # 4 pools
    assert "data.image_size >= 16" in _error(lambda: build_meta(cnn, 10, image_size=15))


@pytest.mark.parametrize("down", ["maxpool", "avgpool", "strided"])
def test_down_sampling_choices_across_the_zoo(down):
    x = torch.randn(2, 3, 32, 32)
    cfgs = [DenseNetConfig(style="cifar", growth_rate=4, block_config=[2, 2, 2], num_init_features=8,
                           compression=0.5, down=down),
            PlainConfig(kind="cnn", depth=6, width=8, down=down, down_every=2)]
    for cfg in cfgs:
        assert build_model(cfg, BATCH, in_channels=3, num_outputs=3, image_size=32)(x).shape == (2, 3)
    unet = build_model(UNetConfig(base_width=4, depth=3, down=down), BATCH, in_channels=3, num_outputs=3,
                       image_size=32, dense=True)
    assert unet(x).shape == (2, 3, 32, 32)
    halving = nn.Conv2d if down == "strided" else {"maxpool": nn.MaxPool2d, "avgpool": nn.AvgPool2d}[down]
    assert sum(isinstance(m, halving) and (down != "strided" or m.stride == (2, 2))
               for m in unet.pools) == 3
