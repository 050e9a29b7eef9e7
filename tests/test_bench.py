"""The bench harness, checked without timing anything: FLOP counts against a hand count, exactly the
warm-up and timed steps asked for (in ABBA order, zero_grad outside the step), the out-of-memory
fallback, and the files --out writes."""
from __future__ import annotations

import csv
import json

import pytest
import torch
from torch import nn

from vaitrain.bench.harness import OutOfMemoryAtBatchOne, Settings, Setup, Subject, measure
from vaitrain.bench.baselines import plain_objective
from vaitrain.bench.report import notes, tables, write_out
from vaitrain.bench.run import BenchReport, measurement_fields
from vaitrain.models.flops import count_flops

CPU = torch.device("cpu")


class TinyConvNet(nn.Module):
    """conv 3->4 (3x3, pad 1) on 8x8, flatten, linear 256->10; logs every call it sees."""

    def __init__(self, label: str = "A", log: list | None = None, oom_above: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)
        self.label, self.log, self.oom_above = label, log if log is not None else [], oom_above

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.oom_above is not None and x.shape[0] > self.oom_above:
            raise torch.OutOfMemoryError(f"CUDA out of memory (simulated at batch {x.shape[0]})")
        grads_clear = all(p.grad is None for p in self.parameters())
        self.log.append((self.label, "forward", "train" if self.training else "eval", grads_clear))
        out = self.fc(torch.relu(self.conv(x)).flatten(1))
        if out.requires_grad:
            out.register_hook(lambda g: self.log.append((self.label, "backward")))
        return out


def subject(net: nn.Module, label: str = "A") -> Subject:
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    opt.register_step_post_hook(lambda *_: net.log.append((label, "step")))
    return Subject(label, net, plain_objective(), opt)


def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


class Loader:
    """Stands in for vaitrain's device-resident loader: a list of batches with set_epoch."""

    def __init__(self, batches: int, n: int) -> None:
        self.batches = [batch(n) for _ in range(batches)]
        self.epochs: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def test_flops_equal_a_hand_count():
    # conv: 2 * Cin * Cout * k * k * Hout * Wout per image; linear: 2 * in * out.
    conv = 2 * 3 * 4 * 3 * 3 * 8 * 8
    fc = 2 * 256 * 10
    forward = conv + fc
    # backward: the first conv needs only its weight gradient (the input needs none): 1 x conv;
    # the linear layer needs the gradient of its input and of its weight: 2 x fc.
    train = forward + conv + 2 * fc
    assert (forward, train) == (18944, 43008)
    x, y = batch(4)
    s = Settings(CPU, warmup=1, steps=1, repeats=1, mode="both", data=False)
    m = measure(lambda b: Setup([subject(TinyConvNet())], x[:b], y[:b]), 4, s, count_flops)
    res = m.results[0]
    assert res.fwd_flops == forward and res.train_flops == train
    row = measurement_fields(m, peak=None, baseline="none")
    assert row["fwd_gflop"] == pytest.approx(forward / 1e9)
    assert row["train_tflops"] == pytest.approx(train * row["train_img_s"] / 1e12)
    assert row["infer_tflops"] == pytest.approx(forward * row["infer_img_s"] / 1e12)
    assert row["params"] == 3 * 4 * 9 + 4 + 256 * 10 + 10


def test_exactly_the_warmup_and_timed_steps_in_abba_order():
    log: list = []
    warmup, steps, repeats = 2, 3, 3
    x, y = batch(4)
    setup = Setup([subject(TinyConvNet("A", log), "A"), subject(TinyConvNet("B", log), "B")], x, y)
    s = Settings(CPU, warmup=warmup, steps=steps, repeats=repeats, mode="both", data=False, flops=False)
    m = measure(lambda b: setup, 4, s)

    train_fwd = [e[0] for e in log if e[1] == "forward" and e[2] == "train"]
    abba = ["A"] * steps + ["B"] * steps + ["B"] * steps + ["A"] * steps + ["A"] * steps + ["B"] * steps
    assert train_fwd == ["A"] * warmup + ["B"] * warmup + abba
    for label in "AB":
        n = warmup + steps * repeats
        assert log.count((label, "backward")) == n
        assert log.count((label, "step")) == n
        assert sum(1 for e in log if e[:3] == (label, "forward", "eval")) == n
    # zero_grad(set_to_none) ran before every training step, outside the step itself
    assert all(e[3] for e in log if e[1] == "forward" and e[2] == "train")
    for res in m.results:
        assert len(res.train.repeats_img_s) == repeats and len(res.infer.repeats_img_s) == repeats
        assert res.train.p10_ms <= res.train.median_ms <= res.train.p90_ms
        assert res.peak_mem_bytes > 0


def test_split_and_data_path_run_their_own_steps():
    log: list = []
    x, y = batch(4)
    loader = Loader(batches=5, n=4)
    setup = Setup([subject(TinyConvNet("A", log))], x, y, loader=loader)
    s = Settings(CPU, warmup=1, steps=2, repeats=1, mode="train", split=True, data=True, flops=False)
    m = measure(lambda b: setup, 4, s)
    # train: 1 warm-up + 2 timed; split: 2 more; data path: 1 warm-up + one epoch of 5 batches
    assert log.count(("A", "step")) == 1 + 2 + 2 + 1 + 5
    assert set(m.results[0].split_ms) == {"forward", "backward", "optimizer"}
    assert m.loader_img_s > 0 and m.epoch_img_s > 0 and 0 < m.input_share < 1
    assert loader.epochs == [0, 1]  # (warm-up and) loader alone, then the end-to-end epoch
    row = measurement_fields(m, peak=None, baseline="none")
    assert row["epoch_vs_model"] == pytest.approx(m.epoch_img_s / m.results[0].train.img_s)
    assert "infer_img_s" not in row


def test_out_of_memory_halves_the_batch_and_says_so():
    built: list[int] = []

    def build(b: int) -> Setup:
        built.append(b)
        x, y = batch(b)
        return Setup([subject(TinyConvNet(oom_above=5))], x, y)

    s = Settings(CPU, warmup=1, steps=1, repeats=1, mode="both", data=False, flops=False)
    m = measure(build, 24, s)
    assert built == [24, 12, 6, 3]
    assert (m.batch, m.batch_asked) == (3, 24)
    row = measurement_fields(m, peak=None, baseline="none")
    assert row["batch"] == 3 and row["batch_asked"] == 24
    assert "out of memory at batch 24: batch halved to 3" in row["note"]

    with pytest.raises(OutOfMemoryAtBatchOne):
        measure(lambda b: Setup([subject(TinyConvNet(oom_above=0))], *batch(b)), 4, s)


def test_baseline_fields_and_ratio():
    x, y = batch(4)
    setup = Setup([subject(TinyConvNet("A")), subject(TinyConvNet("B"), "B")], x, y)
    setup.subjects[1].note = "same network"
    s = Settings(CPU, warmup=1, steps=2, repeats=3, mode="both", data=False)
    m = measure(lambda b: setup, 4, s, count_flops)
    row = measurement_fields(m, peak=None, baseline="bare")
    a, b = m.results[0].train.repeats_img_s, m.results[1].train.repeats_img_s
    assert row["train_ratio"] == pytest.approx(sorted(p / q for p, q in zip(a, b))[1])
    assert row["baseline"] == "bare" and row["baseline_train_img_s"] == m.results[1].train.img_s
    assert "baseline: same network" in row["note"]


def report() -> BenchReport:
    rows = [
        {"model": "resnet20", "image_size": 32, "batch": 64, "batch_asked": 128, "status": "ok",
         "train_img_s": 1000.0, "train_ms": 64.0, "train_ms_p10": 60.0, "train_ms_p90": 70.0, "params": 269722,
         "note": "out of memory at batch 128: batch halved to 64"},
        {"model": "unet", "image_size": 32, "batch": 8, "batch_asked": 8, "status": "failed",
         "note": "model=unet: something broke"},
    ]
    env = {"torch": torch.__version__, "device": "cpu", "device_name": "test cpu", "threads": 2, "vaitrain": "0.1.0"}
    return BenchReport(rows, env, {"warmup": 1, "steps": 2, "repeats": 3})


def test_out_json_and_csv(tmp_path):
    rep = report()
    data = json.loads(write_out(rep, tmp_path / "b.json").read_text())
    assert data["rows"] == rep.rows and data["environment"] == rep.environment
    assert data["settings"]["repeats"] == 3
    with open(write_out(rep, tmp_path / "sub" / "b.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["resnet20", "unet"]
    assert rows[0]["train_img_s"] == "1000.0" and rows[1]["train_img_s"] == ""
    assert rows[1]["status"] == "failed" and rows[1]["env_torch"] == torch.__version__
    from vaitrain.errors import ConfigError

    with pytest.raises(ConfigError, match="json or .csv"):
        write_out(rep, tmp_path / "b.txt")


def test_tables_mark_halved_batches_and_failures():
    (title, cols, cells), *_ = tables(report())
    assert "test cpu" in title and "median of 3 x 2 steps" in title
    assert cells[0][cols.index("batch")] == "64*"
    assert cells[1][cols.index("train img/s")] == "-"
    assert notes(report()) == ["resnet20: out of memory at batch 128: batch halved to 64",
                               "unet: FAILED: model=unet: something broke"]
