"""Training-step speed of vaitrain's ResNet-50 / DenseNet-121 against torchvision's, same process.

Both models get the same weights, data and SGD optimizer; rounds alternate A B B A so drift in the
machine's load hits both alike; each round times `--steps` steps per model; the median round gives
img/s. Prints the ratio vaitrain / torchvision (target >= 0.97).

    .venv/bin/python scripts/model_speed.py                # CPU, batch 8, 224 px
    .venv/bin/python scripts/model_speed.py --threads 1 --clock cpu   # on a shared, busy CPU
    .venv/bin/python scripts/model_speed.py --device cuda --batch 64
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision
from torch import nn

from vaitrain.models import build_model
from vaitrain.schema.model import DenseNetConfig, ResNetConfig
from vaitrain.schema.trainer import NormConfig

# cpu: this process's CPU time, robust to other processes sharing the cores; use it with
# --threads 1 (with more threads it also counts their spin-waiting)
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}

CASES = {
    "resnet50": (ResNetConfig(name="resnet50", depth=50, style="imagenet"), torchvision.models.resnet50),
    "densenet121": (DenseNetConfig(name="densenet121", compression=0.5), torchvision.models.densenet121),
}


def make_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
    return step


def timed(step, steps: int, device: torch.device, clock=time.perf_counter) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = clock()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return clock() - t


def compare(name: str, args: argparse.Namespace, device: torch.device) -> float:
    cfg, tv_fn = CASES[name]
    torch.manual_seed(0)
    ref = tv_fn().to(device).train()
    if args.control:  # A/A check of the harness: a second torchvision copy in vaitrain's place
        ours = tv_fn()
    else:
        ours = build_model(cfg, NormConfig(), in_channels=3, num_outputs=1000, image_size=args.size)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.to(device).train()
    if args.channels_last:
        ref, ours = ref.to(memory_format=torch.channels_last), ours.to(memory_format=torch.channels_last)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, 1000, (args.batch,), device=device)
    steps = {"vaitrain": make_step(ours, x, y), "torchvision": make_step(ref, x, y)}
    for _ in range(args.warmup):
        for s in steps.values():
            s()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(args.rounds):
        order = ["vaitrain", "torchvision"] if r % 2 == 0 else ["torchvision", "vaitrain"]
        for k in order:
            times[k].append(timed(steps[k], args.steps, device, CLOCKS[args.clock]))
    ips = {k: args.batch * args.steps / statistics.median(v) for k, v in times.items()}
    ratio = ips["vaitrain"] / ips["torchvision"]
    spread = {k: f"{min(v) / args.steps:.3f}-{max(v) / args.steps:.3f}" for k, v in times.items()}
    print(f"{name:12s} vaitrain {ips['vaitrain']:8.2f} img/s   torchvision {ips['torchvision']:8.2f} img/s"
          f"   ratio {ratio:.3f}   (s/step min-max: vaitrain {spread['vaitrain']}, "
          f"torchvision {spread['torchvision']})", flush=True)
    return ratio


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--steps", type=int, default=2, help="steps per model per round")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--clock", choices=list(CLOCKS), default="wall",
                   help="wall time, or this process's CPU time (with --threads 1, on a shared machine)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--control", action="store_true",
                   help="time a second torchvision copy instead of vaitrain's model (harness noise)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu" and (args.device != "cpu" or torch.get_num_threads() != 1):
        p.error("--clock cpu needs --device cpu and --threads 1")
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, device {device}, "
          f"threads {torch.get_num_threads()}, clock {args.clock}, batch {args.batch}, {args.size} px, "
          f"{args.rounds} rounds x {args.steps} steps (ABBA)"
          + (", CONTROL: 'vaitrain' is a second torchvision copy" if args.control else ""), flush=True)
    ratios = [compare(name, args, device) for name in args.models]
    print(f"min ratio {min(ratios):.3f} (target >= 0.97)")


if __name__ == "__main__":
    main()
