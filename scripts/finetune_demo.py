"""Fine-tuning from a torchvision state_dict, end to end on this CPU (a couple of minutes, 1 thread).

1. Pretrain torchvision's own resnet18 (plain torch loop, ImageNet mean/std inputs) on shapes scenes
   of three classes (circle, square, triangle) and save its state_dict: a torchvision-format file.
2. Write an image folder (train/ val/ test/, non-square 40x32 PNGs) of the three *other* classes
   (cross, ring, diamond) from another seed: classes the weights never saw.
3. `vaitrain train model=resnet18 data=image_folder ...` for one epoch: from the file
   (model.weights=, new final layer), from the file with model.freeze=backbone, and from scratch,
   all with the same optimizer (Adam, --lr).
   Prints validation and test accuracy (trainer.test_at_end) of each.

    OMP_NUM_THREADS=1 python scripts/finetune_demo.py [--pretrain-epochs 3]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

from vaitrain.data.shapes import SHAPES, generate
from vaitrain.data.stats import IMAGENET_MEAN, IMAGENET_STD
from vaitrain.engine import prepare, train


FOLDER = {"train": 900, "val": 300, "test": 300}


def pretrain(path: Path, epochs: int, n: int = 3000) -> None:
    torch.manual_seed(0)
    data = generate(n, 32, seed=0, split="train", num_classes=3)
    x = data["images"].float() / 255
    x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    y = data["labels"]
    net = torchvision.models.resnet18(num_classes=3)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for epoch in range(epochs):
        perm = torch.randperm(n)
        for s in range(0, n - 63, 64):
            idx = perm[s:s + 64]
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"pretrain epoch {epoch + 1}: loss {loss.item():.3f}", flush=True)
    torch.save(net.state_dict(), path)


def write_folder(root: Path, counts: dict[str, int]) -> None:
    scenes = generate(4 * sum(counts.values()), 40, seed=1, split="val")
    keep = (scenes["labels"] >= 3).nonzero().flatten().tolist()  # cross, ring, diamond only
    i = 0
    for split, n in counts.items():
        for _ in range(n):
            k = keep[i]
            i += 1
            name = SHAPES[int(scenes["labels"][k])]
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            img = scenes["images"][k].permute(1, 2, 0).numpy()[4:36]  # 40 wide, 32 high: not square
            Image.fromarray(np.ascontiguousarray(img)).save(d / f"{k}.png")


def run(tmp: Path, name: str, extra: list[str]) -> dict[str, float]:
    overrides = ["model=resnet18", "data=image_folder", f"data.root={tmp / 'folder'}", "data.image_size=32",
                 "trainer.epochs=1", "trainer.batch_size=32", "trainer.threads=1", "trainer.progress=none",
                 "trainer.test_at_end=true", "optim=adam", f"out_dir={tmp / 'runs'}",
                 f"name={name}", *extra]
    cfg, ov = prepare(overrides)
    t0 = time.process_time()
    result = train(cfg, ov)
    final = json.loads((result.run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    return {"val/acc1": result.metrics["val/acc1"], "test/acc1": final.get("test/acc1", float("nan")),
            "cpu_s": time.process_time() - t0, "normalize": str(cfg.data.normalize)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pretrain-epochs", type=int, default=6)
    ap.add_argument("--lr", type=float, default=3e-4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        weights = tmp / "resnet18-shapes3.pth"
        t0 = time.process_time()
        pretrain(weights, args.pretrain_epochs)
        print(f"pretrained in {time.process_time() - t0:.0f} CPU s", flush=True)
        write_folder(tmp / "folder", FOLDER)
        lr = f"optim.lr={args.lr}"
        rows = {
            "from torchvision state_dict": run(tmp, "ft", [f"model.weights={weights}", lr]),
            "same, model.freeze=backbone": run(tmp, "frozen", [f"model.weights={weights}", "model.freeze=backbone", lr]),
            "from scratch": run(tmp, "scratch", [lr]),
        }
    print(f"\none epoch of {FOLDER['train']} images, Adam lr {args.lr}")
    print(f"{'start':32s} {'val acc1':>9s} {'test acc1':>9s} {'CPU s':>6s}  normalize (chance 0.333)")
    for k, r in rows.items():
        print(f"{k:32s} {r['val/acc1']:9.3f} {r['test/acc1']:9.3f} {r['cpu_s']:6.1f}  {r['normalize']}")


if __name__ == "__main__":
    main()
