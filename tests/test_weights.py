"""Starting weights (issue 10): torchvision state_dicts through model.weights=, the hub cache for
model.weights=imagenet, init_from=RUN, model.freeze=backbone, and the one-line refusals."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from typer.testing import CliRunner

from vaitrain.cli import app
from vaitrain.config import compose
from vaitrain.engine import prepare, train
from vaitrain.engine.start import start_weights
from vaitrain.errors import CheckpointError
from vaitrain.models import build_model

TINY = ["model.width_mult=0.25", "data.image_size=16", "data.num_train=128", "data.num_val=64",
        "trainer.batch_size=32", "trainer.progress=none", "trainer.threads=1", "trainer.epochs=1"]


def _tv_file(tmp_path: Path, name: str) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(1)
    tv = getattr(torchvision.models, name)().eval()
    path = tmp_path / f"{name}.pth"
    torch.save(tv.state_dict(), path)
    return tv, path


def _built(overrides: list[str], classes: int, size: int, channels: int = 3):
    cfg = compose(overrides)
    net = build_model(cfg.model, cfg.norm, in_channels=channels, num_outputs=classes, image_size=size)
    return cfg, net, start_weights(cfg, net)


@pytest.mark.parametrize("name,size", [("resnet18", 64), ("densenet121", 32)])
def test_torchvision_state_dict_gives_torchvision_outputs(tmp_path, one_thread, name, size):
    tv, path = _tv_file(tmp_path, name)
    cfg, net, report = _built([f"model={name}", f"model.weights={path}"], 1000, size)
    assert report is not None and not report.new and len(report.kept) == len(tv.state_dict())
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.allclose(net.eval()(x), tv(x), atol=1e-5, rtol=1e-5)
    # pretrained weights imply torchvision's normalization, unless the command line names one
    assert cfg.data.normalize == "imagenet"
    assert compose([f"model={name}", f"model.weights={path}", "data.normalize=channel"]).data.normalize == "channel"

    # 10 classes, 1 channel: a new final layer and stem, every other tensor equal to the file's
    _, net10, report = _built([f"model={name}", f"model.weights={path}"], 10, size, channels=1)
    final, own, theirs = net10.final_layer, net10.state_dict(), tv.state_dict()
    stem = next(k for k, v in own.items() if v.ndim == 4)
    assert set(report.new) == {f"{final}.weight", f"{final}.bias", stem}
    for k, v in own.items():
        if k not in report.new:
            assert torch.equal(v, theirs[k]), k
    assert own[f"{final}.weight"].shape == (10, theirs[f"{final}.weight"].shape[1])
    assert "new (re-initialized): " in report.message() and f"{final}.weight" in report.message()


def test_imagenet_weights_come_from_the_hub_cache_never_downloaded(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cfg = compose(["model=resnet18", "model.weights=imagenet"])
    net = build_model(cfg.model, cfg.norm, in_channels=3, num_outputs=5, image_size=32)
    with pytest.raises(CheckpointError) as err:
        start_weights(cfg, net)
    msg = str(err.value)
    assert "resnet18-f37072fd.pth" in msg and str(tmp_path / "torch" / "hub" / "checkpoints") in msg
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in msg and "\n" not in msg
    tv, path = _tv_file(tmp_path, "resnet18")
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    path.rename(tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    report = start_weights(cfg, net)
    assert report.new == ["fc.weight", "fc.bias"]
    assert torch.equal(net.state_dict()["layer4.1.conv2.weight"], tv.state_dict()["layer4.1.conv2.weight"])


class Code:  # pickled as a class reference: weights_only refuses to build it
    def __reduce__(self):
        return (print, ("ran",))


def test_bad_weight_files_are_one_line_and_write_nothing(tmp_path, one_thread):
    _, r18 = _tv_file(tmp_path, "resnet18")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(r18.read_bytes()[:5000])
    code = tmp_path / "code.pth"
    torch.save({"fc.weight": Code()}, code)
    cases = {
        "model=resnet34": (r18, "layer1.2.conv1.weight"),  # another architecture: names what is missing
        "model=resnet18 norm=group": (r18, "running_mean"),  # another norm
        "model=densenet121": (corrupt, "truncated or corrupt"),
        "model=resnet50": (code, "refers to code"),
        "model=resnet101": (tmp_path / "absent.pth", "no such file"),
    }
    runner = CliRunner()
    for group, (path, words) in cases.items():
        out = tmp_path / "runs"
        result = runner.invoke(app, ["train", *group.split(), f"model.weights={path}", f"out_dir={out}", *TINY,
                                     "data.image_size=32"])
        assert result.exit_code == 2, (group, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in result.output, (group, result.stderr)
        assert not out.exists()  # nothing written
    both = runner.invoke(app, ["train", f"model.weights={r18}", f"init_from={tmp_path}", *TINY])
    assert both.exit_code == 2 and "give one of them" in both.stderr


def test_init_from_a_run_and_a_frozen_backbone_stays_bit_identical(tmp_path, one_thread):
    first = _train(tmp_path, [*TINY, "optim=sgd"])
    source = torch.load(first.run_dir / "checkpoints/best.pt", weights_only=True)["model"]
    second = _train(tmp_path, [*TINY, f"init_from={first.run_dir}", "data.num_classes=4", "model.freeze=backbone",
                               "optim=sgd", "optim.weight_decay=0.01"])
    after = torch.load(second.run_dir / "checkpoints/last.pt", weights_only=True)["model"]
    backbone = [k for k in source if not k.startswith("fc.")]
    assert len(backbone) > 50
    for k in backbone:  # weights and BN running statistics: untouched by a whole epoch of training
        assert torch.equal(after[k], source[k]), k
    assert after["fc.weight"].shape == (4, source["fc.weight"].shape[1])
    start = json.loads((second.run_dir / "start.json").read_text())
    assert start["new"] == ["fc.weight", "fc.bias"] and start["source"].endswith("best.pt")
    assert second.metrics["val/acc1"] >= 0  # it trained (the head learned from the frozen features)

    # init_from without freezing: a new run (its own optimizer and records) from the same weights
    third = _train(tmp_path, [*TINY, f"init_from={first.run_dir / 'checkpoints' / 'last.pt'}", "trainer.epochs=1"])
    assert third.run_dir != first.run_dir and third.epoch == 1


def _train(tmp_path: Path, overrides: list[str]):
    cfg, overrides = prepare([*overrides, f"out_dir={tmp_path / 'runs'}"])
    return train(cfg, overrides)
