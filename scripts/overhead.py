"""vaitrain's training throughput vs a bare PyTorch loop, same model, optimizer and tensors.

    python scripts/overhead.py                      # ResNet-20, 32 px shapes, batch 128, CPU
    python scripts/overhead.py trainer.device=cuda trainer.batch_size=512
    python scripts/overhead.py --whole              # the whole `vaitrain train` process, CPU time
    python scripts/overhead.py --cli                # CPU seconds of `vaitrain config` / `--help`

--whole compares CPU time (user + system, from the children's rusage) of whole processes:
`vaitrain train` (imports, composition, data, build, training, validation, records, checkpoints)
against a bare script doing the same training and validation by hand (import torch, the same
network built by vaitrain.models, torch's optimizer of the same kind, pre-normalized tensors, no
augmentation on either side). The bare side is charged the CPU time of generating the same shapes
data in this process. Runs alternate whole/bare/bare/bare-with-vaitrain's-exit (the second bare run
is the A/A control, its ratio should read 1.00 within the noise; the third skips the interpreter's
exit collection as `vaitrain` does, for a like-for-like ratio of vaitrain's own cost) for --repeats
rounds; prints medians, ratios and the per-run fixed cost (whole - bare CPU seconds).

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

# Imports are inside the functions: the bare child must pay for torch and the network only.

EPOCHS = 3
REPEATS = 2


def vaitrain_epochs(overrides: list[str]) -> list[float]:
    from vaitrain.config import compose
    from vaitrain.engine import train
    from vaitrain.engine.records import THROUGHPUT
    from vaitrain.track.metrics_log import read_metrics

    with tempfile.TemporaryDirectory() as out:
        cfg = compose([*overrides, f"out_dir={out}"])
        result = train(cfg, overrides)
        records = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if r["kind"] == "epoch"]
        return [float(r[THROUGHPUT]) for r in records[1:]]


def bare_epochs(overrides: list[str]) -> list[float]:
    import torch
    import torch.nn.functional as F

    from vaitrain.config import compose
    from vaitrain.engine.components import build_components
    from vaitrain.engine.device import resolve_device

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


WHOLE = ["model=resnet20", "data=shapes", "data.num_train=512", "data.num_val=256", "data.image_size=32",
         "data.augment=false", "trainer.batch_size=128", "trainer.epochs=2", "trainer.threads=1",
         "trainer.progress=none", "trainer.device=cpu"]


def _child_cpu(cmd: list[str]) -> float:
    """CPU seconds (user + system) of one child process run to completion."""
    import os
    import resource
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def bare_child(spec_path: str, same_exit: bool = False) -> None:
    """The bare loop, run as its own process: no vaitrain beyond building the same network.
    same_exit: skip the interpreter's exit collection as the vaitrain command does (like for like)."""
    import json

    if same_exit:
        from vaitrain.process_env import skip_exit_collection

        skip_exit_collection()

    import torch
    import torch.nn.functional as F

    spec = json.loads(open(spec_path).read())
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = torch.load(spec["data"], weights_only=True)
    from omegaconf import OmegaConf

    from vaitrain.models import build_model

    def norm(x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255
        return (x - mean) / std

    xs = data["train_x"].float() / 255
    mean, std = xs.mean((0, 2, 3), keepdim=True), xs.std((0, 2, 3), keepdim=True)
    train_x, train_y = norm(data["train_x"]), data["train_y"]
    val_x, val_y = norm(data["val_x"]), data["val_y"]
    model = build_model(OmegaConf.create(spec["model"]), OmegaConf.create(spec["norm"]), in_channels=3,
                        num_outputs=spec["classes"], image_size=spec["size"])
    opt = getattr(torch.optim, spec["optimizer"])(model.parameters(), lr=spec["lr"])
    b = spec["batch"]
    for _epoch in range(spec["epochs"]):
        model.train()
        perm = torch.randperm(len(train_x))
        for i in range(len(train_x) // b):
            idx = perm[i * b:(i + 1) * b]
            loss = F.cross_entropy(model(train_x[idx]), train_y[idx])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(val_x), 2 * b):
                correct += (model(val_x[i:i + 2 * b]).argmax(1) == val_y[i:i + 2 * b]).sum().item()


def whole(overrides: list[str], repeats: int) -> None:
    import json
    import os

    import torch
    from omegaconf import OmegaConf

    from vaitrain.config import compose
    from vaitrain.data.shapes import generate

    cfg = compose(overrides)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.process_time()
        train = generate(int(cfg.data.num_train), int(cfg.data.image_size), seed=int(cfg.seed), split="train")
        val = generate(int(cfg.data.num_val), int(cfg.data.image_size), seed=int(cfg.seed), split="val")
        gen_cpu = time.process_time() - t0
        data_file = os.path.join(tmp, "data.pt")
        torch.save({"train_x": train["images"], "train_y": train["labels"], "val_x": val["images"],
                    "val_y": val["labels"]}, data_file)
        spec = {"data": data_file, "model": OmegaConf.to_container(cfg.model), "norm": OmegaConf.to_container(cfg.norm),
                "classes": int(train["labels"].max()) + 1, "size": int(cfg.data.image_size),
                "optimizer": {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}[str(cfg.optim.name)],
                "lr": float(cfg.optim.lr), "batch": int(cfg.trainer.batch_size), "epochs": int(cfg.trainer.epochs)}
        spec_file = os.path.join(tmp, "spec.json")
        open(spec_file, "w").write(json.dumps(spec))
        ours, bare, control, alike = [], [], [], []
        for r in range(repeats):
            ours.append(_child_cpu([sys.executable, "-m", "vaitrain", "train", *overrides, f"out_dir={tmp}/runs{r}"]))
            bare.append(_child_cpu([sys.executable, __file__, "--bare-child", spec_file]) + gen_cpu)
            control.append(_child_cpu([sys.executable, __file__, "--bare-child", spec_file]) + gen_cpu)
            alike.append(_child_cpu([sys.executable, __file__, "--bare-child", spec_file, "--same-exit"]) + gen_cpu)
    a, b, c, d = (statistics.median(v) for v in (ours, bare, control, alike))
    print(f"overrides: {' '.join(overrides)}")
    print(f"torch {torch.__version__}; CPU seconds per process (user+sys), {repeats} rounds")
    print(f"vaitrain train  : {a:.2f} s  ({', '.join(f'{v:.2f}' for v in ours)})")
    print(f"bare loop       : {b:.2f} s  ({', '.join(f'{v:.2f}' for v in bare)})  incl. {gen_cpu:.2f} s data")
    print(f"bare loop (A/A) : {c:.2f} s  ({', '.join(f'{v:.2f}' for v in control)})")
    print(f"bare, same exit : {d:.2f} s  ({', '.join(f'{v:.2f}' for v in alike)})")
    print(f"whole-path ratio (bare / vaitrain, speed): {b / a:.3f}   A/A control: {b / c:.3f}")
    print(f"per-run fixed cost: {a - b:.2f} CPU s")
    # vaitrain skips the interpreter's exit collection (process_env.skip_exit_collection), which a bare
    # script pays too: this ratio gives the bare loop the same exit, so it shows vaitrain's own cost
    print(f"like for like (bare with the same exit / vaitrain): {d / a:.3f}   vaitrain's own cost: {a - d:.2f} CPU s")


def cli_costs(repeats: int) -> None:
    rows = [("python -c 'import torch'", [sys.executable, "-c", "import torch"]),
            ("vaitrain --help", [sys.executable, "-m", "vaitrain", "--help"]),
            ("vaitrain train --help", [sys.executable, "-m", "vaitrain", "train", "--help"]),
            ("vaitrain config", [sys.executable, "-m", "vaitrain", "config"])]
    for label, cmd in rows:
        runs = [_child_cpu(cmd) for _ in range(repeats)]
        print(f"{label:28s} {statistics.median(runs):.2f} CPU s  ({', '.join(f'{v:.2f}' for v in runs)})")


def main() -> None:
    if sys.argv[1:2] == ["--bare-child"]:
        bare_child(sys.argv[2], same_exit="--same-exit" in sys.argv[3:])
        return
    args = sys.argv[1:]
    repeats = 3
    if "--repeats" in args:
        i = args.index("--repeats")
        repeats = int(args[i + 1])
        del args[i:i + 2]
    if args[:1] == ["--whole"]:
        whole([*WHOLE, *args[1:]], repeats)
        return
    if args[:1] == ["--cli"]:
        cli_costs(repeats)
        return
    import torch

    overrides = ["model=resnet20", "data=shapes", "data.image_size=32", "data.num_train=2048",
                 "data.num_val=256", "trainer.batch_size=128", f"trainer.epochs={EPOCHS}",
                 "trainer.progress=none", "trainer.device=cpu", *args]
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
