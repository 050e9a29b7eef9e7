"""Peer comparison: vaitrain vs a plain hand-written torchvision script, same settings.

Builds a small photo-like folder (4 texture classes, coloured, noisy, images of different sizes and
aspect ratios; train/ val/ test/), then per seed:
  - vaitrain: `vaitrain train data=image_folder ...` and `vaitrain eval RUN --split test --json`
  - reference: torchvision ImageFolder + Resize/CenterCrop, normalization from the training split
    by hand, RandomCrop(pad 4) + flip, Adam, cosine per step, best-val checkpoint, test accuracy
    computed by a plain loop. Only the network itself is vaitrain's (ResNet-20 is not in torchvision).
Prints a table (vaitrain vs reference per seed) and the commands to reproduce.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/peer_check.py --seeds 0 1 2

The same settings go to both: see SETTINGS below. Each run is about a minute on one CPU thread.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

CLASSES = ("hstripes", "vstripes", "checker", "dots")
SETTINGS = dict(model="resnet20", optim="adam", image_size=32, epochs=8, batch_size=32, lr=1e-3,
                weight_decay=0.0, pad=4, flip=True)
SGD = dict(lr=0.1, weight_decay=5e-4)  # --optim sgd: vaitrain's optim=sgd (momentum 0.9, nesterov)


# ----------------------------------------------------------------------------- the folder
def texture(kind: str, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 (h, w, 3): a rotated (+-25 deg) texture of the class in two random colours, with noise
    and a random brightness gradient; the period is a random fraction of the short side."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    side = min(w, h)
    period = side * rng.uniform(0.12, 0.3)
    angle = math.radians(rng.uniform(-25, 25))
    u = (xx * math.cos(angle) + yy * math.sin(angle)) / period + rng.uniform(0, 1)
    v = (-xx * math.sin(angle) + yy * math.cos(angle)) / period + rng.uniform(0, 1)
    if kind == "hstripes":
        m = 0.5 + 0.5 * np.sin(2 * math.pi * v)
    elif kind == "vstripes":
        m = 0.5 + 0.5 * np.sin(2 * math.pi * u)
    elif kind == "checker":
        m = 0.5 + 0.5 * np.sign(np.sin(2 * math.pi * u) * np.sin(2 * math.pi * v))
    else:  # dots on a grid
        du, dv = u - np.round(u), v - np.round(v)
        m = (du * du + dv * dv < rng.uniform(0.06, 0.16)).astype(np.float32)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    img = c0 + m[..., None] * (c1 - c0)
    img *= (0.7 + 0.6 * (xx / w * rng.uniform(-1, 1) + yy / h * rng.uniform(-1, 1)) / 2 + 0.3)[..., None]
    img += rng.normal(0, rng.uniform(20, 60), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_folder(root: Path, per_class: dict[str, int] | None = None, seed: int = 1234) -> Path:
    """root/{train,val,test}/<class>/*.{png,jpg}: sizes 40-120 px, aspect 0.6-1.7."""
    per_class = per_class or {"train": 120, "val": 30, "test": 50}
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for cls in CLASSES:
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                short = int(rng.integers(40, 121))
                aspect = rng.uniform(0.6, 1.7)
                w, h = (int(short * aspect), short) if aspect >= 1 else (short, int(short / aspect))
                im = Image.fromarray(texture(cls, w, h, rng))
                if i % 3 == 0:
                    im.save(folder / f"{i:04d}.jpg", quality=85)
                else:
                    im.save(folder / f"{i:04d}.png")
    return root


# ----------------------------------------------------------------------------- vaitrain
def vaitrain_cmd(root: Path, out: Path, seed: int, s: dict) -> list[str]:
    return [str(Path(sys.executable).parent / "vaitrain"), "train", "data=image_folder", f"data.root={root}",
            f"data.image_size={s['image_size']}", f"model={s['model']}", f"optim={s['optim']}", f"optim.lr={s['lr']}",
            f"optim.weight_decay={s['weight_decay']}", "sched=cosine", f"trainer.epochs={s['epochs']}",
            f"trainer.batch_size={s['batch_size']}", f"data.crop_padding={s['pad']}",
            f"data.flip={str(s['flip']).lower()}", f"seed={seed}", "trainer.threads=1", f"out_dir={out}",
            f"name=peer{s['model']}{s['optim']}{seed}"]


def run_vaitrain(root: Path, out: Path, seed: int, s: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = vaitrain_cmd(root, out, seed, s)
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run = next(p for p in out.glob(f"*/*-peer{s['model']}{s['optim']}{seed}-*") if p.is_dir())
    res = {}
    for split in ("val", "test"):
        ev = subprocess.run([cmd[0], "eval", str(run), "--split", split, "--json"], check=True, env=env,
                            capture_output=True, text=True)
        res[split] = json.loads(ev.stdout)
    return {"run": run, "val": res["val"], "test": res["test"], "cmd": cmd}


# ----------------------------------------------------------------------------- the reference
def build_net(name: str, num_classes: int) -> torch.nn.Module:
    """torchvision's own ResNet-18 (its init too) where it has the model; else vaitrain's module."""
    if name in ("resnet18", "densenet121"):
        import torchvision
        return getattr(torchvision.models, name)(num_classes=num_classes)
    from vaitrain.config import compose
    from vaitrain.models import build_model
    cfg = compose([f"model={name}"])
    return build_model(cfg.model, cfg.norm, in_channels=3, num_outputs=num_classes, image_size=32)


def load_split(folder: Path, size: int, classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N,3,size,size) and labels, as torchvision's Resize(size) + CenterCrop(size) gives them."""
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder
    tf = T.Compose([T.Resize(size), T.CenterCrop(size), T.PILToTensor()])
    ds = ImageFolder(str(folder), transform=tf)
    assert ds.classes == classes, (ds.classes, classes)
    xs, ys = zip(*[ds[i] for i in range(len(ds))])
    return torch.stack(xs), torch.tensor(ys)


def plain_eval(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, mean: torch.Tensor,
               std: torch.Tensor, num_classes: int) -> dict:
    """acc1, mean cross-entropy and per-class accuracy of uint8 images, by a plain loop."""
    model.eval()
    logits = []
    with torch.no_grad():
        for i in range(0, len(x), 64):
            xb = (x[i:i + 64].float() / 255 - mean[:, None, None]) / std[:, None, None]
            logits.append(model(xb))
    out = torch.cat(logits)
    pred = out.argmax(1)
    per_class = [float((pred[y == c] == c).float().mean()) for c in range(num_classes)]
    return {"acc1": float((pred == y).float().mean()), "loss": float(F.cross_entropy(out, y)),
            "per_class": per_class}


def run_reference(root: Path, seed: int, s: dict) -> dict:
    torch.manual_seed(seed)
    classes = sorted(p.name for p in (root / "train").iterdir())
    size = s["image_size"]
    xtr, ytr = load_split(root / "train", size, classes)
    xva, yva = load_split(root / "val", size, classes)
    xte, yte = load_split(root / "test", size, classes)
    f = xtr.float() / 255
    mean, std = f.mean((0, 2, 3)), f.std((0, 2, 3), unbiased=False)
    model = build_net(s["model"], len(classes))
    # weight decay on conv/linear weights only (vaitrain's documented rule; timm's default too)
    decay = [p for p in model.parameters() if p.ndim > 1]
    exempt = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": s["weight_decay"]}, {"params": exempt, "weight_decay": 0.0}]
    if s["optim"] == "sgd":
        opt = torch.optim.SGD(groups, lr=s["lr"], momentum=0.9, nesterov=True)
    else:
        opt = torch.optim.Adam(groups, lr=s["lr"])
    steps_per_epoch = len(xtr) // s["batch_size"]  # last incomplete batch dropped
    total = steps_per_epoch * s["epochs"]
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    g = torch.Generator().manual_seed(seed)
    best, best_state, p = -1.0, None, s["pad"]
    for _ in range(s["epochs"]):
        model.train()
        perm = torch.randperm(len(xtr), generator=g)
        for b in range(steps_per_epoch):
            idx = perm[b * s["batch_size"]:(b + 1) * s["batch_size"]]
            xb = F.pad(xtr[idx], (p, p, p, p))
            crops = []
            for img in xb:  # RandomCrop(size, padding=pad) + RandomHorizontalFlip, image by image
                i, j = torch.randint(0, 2 * p + 1, (2,), generator=g).tolist()
                img = img[:, i:i + size, j:j + size]
                if s["flip"] and torch.rand((), generator=g) < 0.5:
                    img = img.flip(-1)
                crops.append(img)
            xb = (torch.stack(crops).float() / 255 - mean[:, None, None]) / std[:, None, None]
            loss = F.cross_entropy(model(xb), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        val = plain_eval(model, xva, yva, mean, std, len(classes))
        if val["acc1"] > best:
            best, best_state = val["acc1"], {k: v.clone() for k, v in model.state_dict().items()}
    last_val = val
    model.load_state_dict(best_state)
    return {"val_last": last_val["acc1"], "val_best": best,
            "test": plain_eval(model, xte, yte, mean, std, len(classes))["acc1"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--work", type=Path, default=None, help="folder for the data and runs (default: a temp dir)")
    ap.add_argument("--epochs", type=int, default=SETTINGS["epochs"])
    ap.add_argument("--model", default=SETTINGS["model"], help="resnet20 (vaitrain's), resnet18 or densenet121 (torchvision's)")
    ap.add_argument("--optim", default="adam", choices=["adam", "sgd"], help="sgd: lr 0.1, wd 5e-4, nesterov")
    args = ap.parse_args()
    torch.set_num_threads(1)
    s = {**SETTINGS, "epochs": args.epochs, "model": args.model, "optim": args.optim,
         **(SGD if args.optim == "sgd" else {})}
    work = args.work or Path(tempfile.mkdtemp(prefix="peer_check-"))
    root = work / "textures"
    if not (root / "train").is_dir():
        make_folder(root)
    print(f"data: {root} (train/val/test {120 * 4}/{30 * 4}/{50 * 4}, 4 classes, chance 0.25)")
    print(f"settings: {s}")
    rows = []
    runs = Path(tempfile.mkdtemp(prefix="runs-", dir=work))  # this invocation's runs only
    for seed in args.seeds:
        vt = run_vaitrain(root, runs, seed, s)
        ref = run_reference(root, seed, s)
        rows.append((seed, vt, ref))
        print(f"seed {seed}: vaitrain val(best.pt) {vt['val']['metrics']['val/acc1']:.3f} test {vt['test']['metrics']['test/acc1']:.3f} | "
              f"reference val(best) {ref['val_best']:.3f} test {ref['test']:.3f}", flush=True)
    print()
    print(f"{'seed':>4}  {'vaitrain val':>12}  {'ref val':>8}  {'vaitrain test':>13}  {'ref test':>8}")
    for seed, vt, ref in rows:
        print(f"{seed:>4}  {vt['val']['metrics']['val/acc1']:>12.3f}  {ref['val_best']:>8.3f}  "
              f"{vt['test']['metrics']['test/acc1']:>13.3f}  {ref['test']:>8.3f}")
    vt_mean = np.mean([r[1]['test']['metrics']['test/acc1'] for r in rows])
    ref_mean = np.mean([r[2]['test'] for r in rows])
    print(f"mean  test: vaitrain {vt_mean:.3f}  reference {ref_mean:.3f}")
    print("\nreproduce one vaitrain run:\n  OMP_NUM_THREADS=1 " + " ".join(shlex.quote(c) for c in rows[0][1]["cmd"]))
    print(f"reproduce all: OMP_NUM_THREADS=1 {sys.executable} {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
