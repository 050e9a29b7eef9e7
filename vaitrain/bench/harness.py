"""The measuring harness: subjects (a model with its objective and optimizer) timed side by side.

One `Setup` holds the subjects of a row (vaitrain's model first, then a baseline, if any), one batch
resident on the device and, optionally, vaitrain's loader for the data path. `measure` warms every
subject up, then times repeats in ABBA order (A B, B A, A B, ...) so drift hits all subjects alike;
out of memory halves the batch and starts over.
"""
from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor, nn

from vaitrain.bench.memory import StepMemory, state_bytes
from vaitrain.bench.timing import CLOCKS, Timing, summarize, synchronize, time_steps, wall
from vaitrain.engine.device import autocast

Objective = Callable[[nn.Module, Tensor, Tensor], Tensor]


def _noop() -> None:
    return None


@dataclass
class Subject:
    """One thing to time: `objective(model, x, y) -> loss`; `after_step` runs after each optimizer
    step (vaitrain's schedule step and Alrao's posterior update; nothing for the baselines)."""

    label: str
    model: nn.Module
    objective: Objective
    optimizer: torch.optim.Optimizer
    after_step: Callable[[], None] = _noop
    note: str = ""


@dataclass
class Setup:
    subjects: list[Subject]
    x: Tensor
    y: Tensor
    loader: Any = None  # vaitrain's train loader for the data path (iterable of (x, y), set_epoch)


@dataclass
class Settings:
    device: torch.device
    precision: str = "fp32"  # fp32 | bf16 | fp16
    channels_last: bool = False
    compile: bool = False
    warmup: int = 3
    steps: int = 10
    repeats: int = 3
    mode: str = "both"  # train | infer | both
    split: bool = False
    data: bool = True
    flops: bool = True
    clock: str = "wall"  # wall (CUDA events on a GPU) | process (CPU seconds, CPU only)

    @property
    def train(self) -> bool:
        return self.mode in ("train", "both")

    @property
    def infer(self) -> bool:
        return self.mode in ("infer", "both")


@dataclass
class SubjectResult:
    label: str
    params: int
    note: str = ""
    train: Optional[Timing] = None
    infer: Optional[Timing] = None
    split_ms: Optional[dict[str, float]] = None  # forward (with loss), backward, optimizer
    peak_mem_bytes: Optional[int] = None
    fwd_flops: Optional[float] = None  # per image
    train_flops: Optional[float] = None  # per image, forward + backward


@dataclass
class Measurement:
    batch: int
    batch_asked: int
    results: list[SubjectResult]
    notes: list[str] = field(default_factory=list)
    mem_kind: str = ""
    mem_exact: bool = True
    loader_img_s: Optional[float] = None
    epoch_img_s: Optional[float] = None
    input_share: Optional[float] = None  # of the end-to-end epoch's time, spent producing batches


class OutOfMemoryAtBatchOne(RuntimeError):
    pass


class _Runner:
    """A subject's step under the settings: autocast, GradScaler for fp16, optional compile."""

    def __init__(self, subject: Subject, settings: Settings) -> None:
        self.subject = subject
        self.settings = settings
        self.model = subject.model
        if settings.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.run_model: nn.Module = torch.compile(self.model) if settings.compile else self.model
        self.scaler = torch.amp.GradScaler(settings.device.type, enabled=settings.precision == "fp16")

    def zero_grad(self) -> None:
        self.subject.optimizer.zero_grad(set_to_none=True)

    def forward_loss(self, x: Tensor, y: Tensor) -> Tensor:
        with autocast(self.settings.precision, self.settings.device):
            return self.subject.objective(self.run_model, x, y)

    def backward(self, loss: Tensor) -> None:
        self.scaler.scale(loss).backward()

    def optimizer_step(self) -> None:
        if self.scaler.is_enabled():
            self.scaler.step(self.subject.optimizer)
            self.scaler.update()
        else:
            self.subject.optimizer.step()
        self.subject.after_step()

    def train_step(self, x: Tensor, y: Tensor) -> None:
        self.backward(self.forward_loss(x, y))
        self.optimizer_step()

    def infer(self, x: Tensor) -> Tensor:
        with torch.no_grad(), autocast(self.settings.precision, self.settings.device):
            return self.run_model(x)


def release(device: torch.device) -> None:
    """Give the failed attempt's memory back to the device (a full gc pass is slow: CUDA only)."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def measure(build: Callable[[int], Setup], batch: int, settings: Settings,
            count_flops: Optional[Callable[[nn.Module, tuple[int, ...]], dict[str, float]]] = None
            ) -> Measurement:
    """Build the row's subjects at `batch` and measure them; out of memory (anywhere, building
    included) halves the batch and starts over, down to 1."""
    asked = batch
    while True:
        try:
            m = _measure_once(build(batch), batch, settings, count_flops)
            m.batch_asked = asked
            if batch != asked:
                m.notes.insert(0, f"out of memory at batch {asked}: batch halved to {batch}")
            return m
        except torch.OutOfMemoryError:
            pass  # leave the except block first, so its traceback (and the tensors it holds) goes
        release(settings.device)
        if batch <= 1:
            raise OutOfMemoryAtBatchOne("out of memory even at batch 1")
        batch //= 2


def _alternating(n: int, repeats: int) -> list[int]:
    """ABBA order of subject indices: 0 1, 1 0, 0 1, ..."""
    order: list[int] = []
    for k in range(repeats):
        order += list(range(n)) if k % 2 == 0 else list(reversed(range(n)))
    return order


def _measure_once(setup: Setup, batch: int, settings: Settings,
                  count_flops: Optional[Callable[..., dict[str, float]]]) -> Measurement:
    dev = settings.device
    x, y = setup.x, setup.y
    if settings.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    runners = [_Runner(s, settings) for s in setup.subjects]
    results = [SubjectResult(s.label, sum(p.numel() for p in s.model.parameters()), s.note)
               for s in setup.subjects]
    mem = StepMemory(dev)
    out = Measurement(batch, batch, results, mem_kind=mem.kind)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True

    if settings.train:
        _time_train(runners, results, x, y, batch, settings, mem)
        out.mem_exact = mem.exact
    if settings.infer:
        _time_infer(runners, results, x, batch, settings)
    if settings.split and settings.train:
        for r, res in zip(runners, results):
            res.split_ms = _split(r, x, y, settings.steps, dev, settings.clock)
    if settings.flops and count_flops is not None:
        for s, res in zip(setup.subjects, results):
            counted = count_flops(s.model, tuple(x.shape))
            res.fwd_flops = counted["forward_per_sample"]
            res.train_flops = counted["train_per_sample"]
    if settings.data and settings.train and setup.loader is not None:
        out.loader_img_s, out.epoch_img_s, out.input_share = _data_path(runners[0], setup.loader, settings)
    return out


def _time_train(runners: list[_Runner], results: list[SubjectResult], x: Tensor, y: Tensor,
                batch: int, settings: Settings, mem: StepMemory) -> None:
    """Warm-up of each subject (its last warm-up step also measures peak memory: past cudnn's
    algorithm search and compilation, and never in a timed step), then ABBA-ordered repeats."""
    dev = settings.device
    warm = []
    for r, res in zip(runners, results):
        r.model.train()

        def warmup(r: _Runner = r, res: SubjectResult = res) -> None:
            for i in range(settings.warmup):
                r.zero_grad()
                if i < settings.warmup - 1:
                    r.train_step(x, y)
                    continue
                kept = state_bytes(r.model, r.subject.optimizer)  # held before the step
                mem.start()
                r.train_step(x, y)
                res.peak_mem_bytes = kept + mem.stop()

        warm.append(wall(warmup, dev, settings.clock))
    times: list[list[list[float]]] = [[] for _ in runners]
    for i in _alternating(len(runners), settings.repeats):
        r = runners[i]
        times[i].append(time_steps(lambda: r.train_step(x, y), settings.steps, dev, before=r.zero_grad,
                                   clock=settings.clock))
    for res, t, w in zip(results, times, warm):
        res.train = summarize(t, batch, w)


def _time_infer(runners: list[_Runner], results: list[SubjectResult], x: Tensor, batch: int,
                settings: Settings) -> None:
    dev = settings.device
    warm = []
    for r in runners:
        r.model.eval()

        def warmup(r: _Runner = r) -> None:
            for _ in range(settings.warmup):
                r.infer(x)

        warm.append(wall(warmup, dev, settings.clock))
    times: list[list[list[float]]] = [[] for _ in runners]
    for i in _alternating(len(runners), settings.repeats):
        times[i].append(time_steps(lambda: runners[i].infer(x), settings.steps, dev, clock=settings.clock))
    for r, res, t, w in zip(runners, results, times, warm):
        res.infer = summarize(t, batch, w)
        r.model.train()


def _split(r: _Runner, x: Tensor, y: Tensor, steps: int, dev: torch.device, clock: str = "wall") -> dict[str, float]:
    """Forward (with the loss), backward and optimizer step timed apart, synchronized in between."""
    now = CLOCKS[clock]
    parts: dict[str, list[float]] = {"forward": [], "backward": [], "optimizer": []}
    r.model.train()
    for _ in range(steps):
        r.zero_grad()
        synchronize(dev)
        t0 = now()
        loss = r.forward_loss(x, y)
        synchronize(dev)
        t1 = now()
        r.backward(loss)
        synchronize(dev)
        t2 = now()
        r.optimizer_step()
        synchronize(dev)
        t3 = now()
        parts["forward"].append(t1 - t0)
        parts["backward"].append(t2 - t1)
        parts["optimizer"].append(t3 - t2)
    return {k: float(np.median(v)) * 1e3 for k, v in parts.items()}


class _Marks:
    """Time marks inside a running loop: CUDA events on the stream (read after one synchronize)
    or the CPU clock; spans() gives the seconds between consecutive marks of each batch."""

    def __init__(self, device: torch.device, clock: str = "wall") -> None:
        self.cuda = device.type == "cuda"
        self.now = CLOCKS[clock]
        self.marks: list[list[Any]] = []

    def mark(self, row: list[Any]) -> None:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            row.append(ev)
        else:
            row.append(self.now())

    def spans(self) -> list[list[float]]:
        if self.cuda:
            return [[a.elapsed_time(b) / 1e3 for a, b in zip(m, m[1:])] for m in self.marks]
        return [[b - a for a, b in zip(m, m[1:])] for m in self.marks]


def _data_path(r: _Runner, loader: Any, settings: Settings) -> tuple[float, float, float]:
    """img/s of the loader alone over one epoch; img/s of one training epoch end to end; and,
    within that same epoch, the share of the time spent producing batches (the input's share,
    free of the drift between the model-only repeats and the epoch)."""
    dev = settings.device
    cl = settings.channels_last
    count = [0]
    marks = _Marks(dev, settings.clock)

    def loader_only() -> None:
        for xb, _yb in loader:
            count[0] += xb.shape[0]

    def epoch() -> None:
        it = iter(loader)
        while True:
            row: list[Any] = []
            marks.mark(row)
            batch = next(it, None)
            if batch is None:
                break
            xb, yb = batch
            if cl and xb.dim() == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            marks.mark(row)
            r.zero_grad()
            r.train_step(xb, yb)
            marks.mark(row)
            marks.marks.append(row)
            count[0] += xb.shape[0]

    loader.set_epoch(0)
    r.model.train()
    for _, (xb, yb) in zip(range(settings.warmup), loader):  # warm-up on the loader's own batches
        if cl and xb.dim() == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        r.zero_grad()
        r.train_step(xb, yb)
    seconds = wall(loader_only, dev, settings.clock)
    loader_img_s = count[0] / max(seconds, 1e-12)
    count[0] = 0
    loader.set_epoch(1)
    seconds = wall(epoch, dev, settings.clock)
    spans = marks.spans()
    load = sum(s[0] for s in spans)
    return loader_img_s, count[0] / max(seconds, 1e-12), load / max(load + sum(s[1] for s in spans), 1e-12)
