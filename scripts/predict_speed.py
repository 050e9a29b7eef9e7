"""`vaitrain predict` throughput on a folder of images vs calling the model directly in a loop, and
export times, on this CPU (process CPU time, so a busy shared machine skews it less).

Trains a tiny ResNet-20 run (one epoch of shapes), writes N non-square PNGs, then times, in
alternating order (A B B A ...):
  predict : vaitrain.predict.predict(run, [folder]) (decode on a thread pool, batches of 64)
  loop    : for each file: PIL open, RGB, centre crop + resize, to tensor, normalize, model(x[None])
and an A/A control (the loop against itself). Then exports the run to TorchScript and ONNX and
prints the export time and the max abs difference to PyTorch.

    OMP_NUM_THREADS=1 python scripts/predict_speed.py [--images 256] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vaitrain.engine import prepare, train
from vaitrain.engine.trained import load_trained
from vaitrain.predict import predict


def direct_loop(run: Path, files: list[Path]) -> int:
    """The obvious hand-written alternative: one file, one forward at a time."""
    t = load_trained(run, device="cpu")
    size = int(t.info["image_size"])
    mean, std = t.stats["mean"][:, None, None], t.stats["std"][:, None, None]
    done = 0
    with torch.no_grad():
        for f in files:
            im = Image.open(f).convert("RGB")
            w, h = im.size
            side = min(w, h)
            im = im.resize((size, size), Image.BILINEAR, box=((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2))
            x = (torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255 - mean) / std
            t.model(x[None]).softmax(1).topk(5)
            done += 1
    return done


def clock(fn) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cfg, ov = prepare(["trainer.epochs=1", "data.num_train=512", "data.num_val=128", "trainer.threads=1",
                           "trainer.progress=none", f"out_dir={tmp / 'runs'}"])
        run = train(cfg, ov).run_dir
        folder = tmp / "photos"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for i in range(args.images):
            Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")
        files = sorted(folder.glob("*.png"))
        times: dict[str, list[float]] = {"predict": [], "loop": [], "loop (A/A)": []}
        for r in range(args.repeats):
            order = [("predict", lambda: predict(run, [str(folder)])), ("loop", lambda: direct_loop(run, files))]
            for name, fn in (order if r % 2 == 0 else order[::-1]):
                times[name].append(clock(fn))
            times["loop (A/A)"].append(clock(lambda: direct_loop(run, files)))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{args.images} images (64x48 PNG) -> ResNet-20 at 32 px, 1 thread, median of {args.repeats} (CPU s)")
        for k, v in med.items():
            print(f"  {k:12s} {v:6.2f} s  {args.images / v:7.1f} img/s")
        print(f"  predict / loop throughput ratio: {med['loop'] / med['predict']:.2f}"
              f"  (A/A control: {med['loop'] / med['loop (A/A)']:.2f})")
        from vaitrain.export import export_run

        for fmt in ("torchscript", "onnx"):
            r = export_run(run, fmt, tmp / f"m.{fmt}")
            print(f"  export {fmt:11s} {r.export_seconds:5.2f} s wall, max abs diff {r.max_abs_diff:.2g} "
                  f"({r.checked_with})")


if __name__ == "__main__":
    main()
