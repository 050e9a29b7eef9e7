"""The training loader's cost per batch, with each augmentation, as a fraction of a training step.

    python scripts/augment_overhead.py                        # ResNet-20, 32 px shapes, batch 128, CPU
    python scripts/augment_overhead.py trainer.device=cuda trainer.batch_size=512 model=resnet18 model.small_stem=true

For each augmentation setting the same process alternates (A/B) one loader epoch (per batch, its
per-epoch plan included) and one training step of ResNet-20 (forward, loss, backward, optimizer step) on a fixed batch, timing each with the
CPU-time clock (time.process_time; on a GPU, wall time after synchronizing), and prints the median
loader/step ratio. The A/A control times the step against itself the same way: its distance from
1.000 is the noise of the method on this machine.
"""
from __future__ import annotations

import statistics
import sys
import time

import torch

from vaitrain.config import compose
from vaitrain.engine.components import build_components
from vaitrain.engine.device import resolve_device

SETTINGS = {
    "none": ["data.augment=false"],
    "crop+flip": ["data.augment=true"],
    "trivial": ["data.augment=trivial"],
    "trivial+mixup": ["data.augment=trivial", "data.mixup=0.2"],
    "trivial+mixup/cutmix+jitter+erasing": ["data.augment=trivial", "data.mixup=0.2", "data.cutmix=1.0",
                                            "data.color_jitter=0.4", "data.erasing=0.25"],
    "resized_crop+flip": ["data.augment=true", "data.resized_crop=true", "data.crop_padding=0"],
}
ROUNDS = 6


def clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return time.perf_counter()
    return time.process_time()


def main(extra: list[str]) -> None:
    base = ["model=resnet20", "data.image_size=32", "data.num_train=2048", "data.num_val=128", "trainer.threads=1",
            "optim=sgd", *extra]
    torch.set_num_threads(1)
    device = resolve_device(compose(base).trainer.device)
    step_times: list[float] = []
    print(f"{'augmentation':38s} loader ms/batch   step ms   loader/step")
    for name, overrides in SETTINGS.items():
        cfg = compose([*base, *overrides])
        c = build_components(cfg, device)
        loader, model, opt = c.data.train, c.model, c.opt
        loader.set_epoch(0)
        x, y = next(iter(loader))

        def step() -> None:
            loss, _ = opt.objective(model, x, y)
            loss.backward()
            opt.optimizer.step()
            opt.optimizer.zero_grad(set_to_none=True)

        step()  # warm-up
        loads, steps = [], []
        for r in range(ROUNDS):  # a whole epoch of the loader (its per-epoch plan included) per round
            loader.set_epoch(r + 1)
            t = clock(device)
            for _ in loader:
                pass
            t2 = clock(device)
            step()
            t3 = clock(device)
            loads.append((t2 - t) / len(loader))
            steps.append(t3 - t2)
        ratio = statistics.median(a / b for a, b in zip(loads, steps))
        step_times += steps
        print(f"{name:38s} {1e3 * statistics.median(loads):12.2f} {1e3 * statistics.median(steps):10.1f} "
              f"{ratio:12.3f}")
    # A/A control: the step against itself, alternated the same way
    half = len(step_times) // 2
    aa = statistics.median(a / b for a, b in zip(step_times[:half:2], step_times[1:half:2]))
    print(f"A/A control (step vs step): {aa:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
