"""vaitrain's training throughput vs a bare PyTorch loop, same model, optimizer and tensors.

    python scripts/overhead.py                      # ResNet-20, 32 px shapes, batch 128, CPU
    python scripts/overhead.py trainer.device=cuda trainer.batch_size=512

vaitrain runs the real `vaitrain train` path (device-resident loader with crop/flip/normalize,
records, TensorBoard, checkpoints); its img/s is the one the engine reports per epoch (training
part of the epoch). The bare loop slices pre-normalized tensors of the same training split and
does forward, cross-entropy, backward and the same optimizer's step, nothing else. Runs alternate
A/B/A/B; the first epoch of each run is warm-up and not counted. Prints the medians and the ratio.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

from vaitrain.config import compose
from vaitrain.engine import train
from vaitrain.engine.components import build_components
from vaitrain.engine.device import resolve_device
from vaitrain.track.metrics_log import read_metrics

EPOCHS = 3
REPEATS = 2


def vaitrain_epochs(overrides: list[str]) -> list[float]:
    with tempfile.TemporaryDirectory() as out:
        cfg = compose([*overrides, f"out_dir={out}"])
        result = train(cfg, overrides)
        records = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if r["kind"] == "epoch"]
        return [float(r["throughput"]) for r in records[1:]]


def bare_epochs(overrides: list[str]) -> list[float]:
    cfg = compose(overrides)
    device = resolve_device(cfg.trainer.device)
    c = build_components(cfg, device)
    model = c.model  # the same network, freshly built; its own optimizer of the same kind
    opt = type(c.opt.optimizer)(model.parameters(), lr=float(cfg.optim.lr))
    loader = c.data.train
    loader.set_epoch(0)
    xs, ys = zip(*[(x.clone(), y.clone()) for x, y in loader])  # the same tensors, prepared once
    speeds = []
    for epoch in range(EPOCHS):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        images = 0
        for i in torch.randperm(len(xs)).tolist():
            loss = F.cross_entropy(model(xs[i]), ys[i])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            images += xs[i].shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize()
        if epoch > 0:
            speeds.append(images / (time.perf_counter() - t0))
    return speeds


def main() -> None:
    overrides = ["model=resnet20", "data=shapes", "data.image_size=32", "data.num_train=2048",
                 "data.num_val=256", "trainer.batch_size=128", f"trainer.epochs={EPOCHS}",
                 "trainer.progress=none", "trainer.device=cpu", *sys.argv[1:]]
    ours, bare = [], []
    for _ in range(REPEATS):
        ours += vaitrain_epochs(overrides)
        bare += bare_epochs(overrides)
    a, b = statistics.median(ours), statistics.median(bare)
    print(f"overrides: {' '.join(overrides)}")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"vaitrain train  img/s: {a:,.0f}  (epochs: {', '.join(f'{v:,.0f}' for v in ours)})")
    print(f"bare loop       img/s: {b:,.0f}  (epochs: {', '.join(f'{v:,.0f}' for v in bare)})")
    print(f"ratio vaitrain / bare: {a / b:.3f}")


if __name__ == "__main__":
    main()
