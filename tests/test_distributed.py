"""Distributed training on CPU (gloo): 2 ranks train what 1 process trains with the same global
batch, leave one set of records, stop together on SIGTERM and resume (even as 1 process)."""
from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import socket
from pathlib import Path

import pytest
import torch

from crash_runs import (
    STEPS, TINY, assert_same_weights, checkpoint_step, finish, invoke, load, reference_run, run_dirs, start,
    the_run, wait_until, weights,
)
from vaitrain.config import compose
from vaitrain.data import build_data
from vaitrain.engine import dist
from vaitrain.engine.launch import _exit_code
from vaitrain.errors import RunDirError

CLOSE = dict(rtol=1e-4, atol=1e-5)  # 1 vs 2 processes: float sums in another order (~3e-7 here)


@pytest.fixture
def reference(tmp_path_factory):
    return reference_run(tmp_path_factory.getbasetemp())


def records(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_torchrun_two_ranks_match_one_process(tmp_path, reference):
    out = tmp_path / "runs"
    proc = start(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                  "-m", "vaitrain", "train", *TINY, f"out_dir={out}"], tmp_path)
    code, stdout, stderr = finish(proc, timeout=240)
    assert code == 0, stderr
    run = the_run(out)  # one run directory, made by rank 0
    assert stdout.count("done: ") == 1, stdout  # rank 0 reports, the others stay quiet
    assert_same_weights(weights(run), weights(reference), **CLOSE)

    # One set of records: each step logged once, one final line, events from one process.
    recs, ref = records(run), records(reference)
    assert [r["step"] for r in recs] == [r["step"] for r in ref]
    assert [r["kind"] for r in recs].count("final") == 1
    pids = {p.name.split(".")[-2] for p in (run / "tb").glob("events.out.tfevents.*")}
    assert len(pids) == 1, pids
    # The loss is averaged over both ranks' shards; validation (101 images, shards of 50 and 51,
    # no padding) counts every image once: the same metrics as one process.
    for mine, theirs in zip(recs, ref):
        for key in ("train/loss", "val/loss", "val/acc1"):
            if key in theirs:
                assert mine[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-5), (key, mine, theirs)


def test_sigterm_to_launcher_stops_all_ranks_then_resume_as_one_process(tmp_path, reference):
    """`vaitrain train trainer.devices=2`, SIGTERM to the launcher mid-epoch: every rank stops at
    the same step, rank 0 writes last.pt and prints the resume line once, exit 143. resume=
    with trainer.devices=1 continues at the right batch: same weights as the uninterrupted run."""
    out = tmp_path / "runs"
    proc = start(["train", *TINY, "trainer.devices=2", "trainer.checkpoint_every=4", f"out_dir={out}"], tmp_path)
    holder: dict = {}

    def checkpointed() -> bool:
        runs = run_dirs(out)
        holder["run"] = runs[0] if runs else None
        return checkpoint_step(holder["run"])[0] >= 8

    wait_until(checkpointed, proc, timeout=240)
    proc.send_signal(signal.SIGTERM)
    code, _, stderr = finish(proc, timeout=120)
    assert code == 128 + signal.SIGTERM, stderr
    lines = re.findall(r"stopped (?:in|after) epoch \d+/\d+ at step (\d+); continue with: vaitrain train resume=(\S+)", stderr)
    assert len(lines) == 1, stderr
    run = the_run(out)
    assert lines[0][1] == str(run)
    state = load(run / "checkpoints" / "last.pt")
    assert state["step"] == int(lines[0][0]) < STEPS
    assert not re.search(r"Traceback|exitcode", stderr), stderr

    result = invoke(["train", f"resume={run}", "trainer.devices=1"])
    assert result.exit_code == 0, result.output
    assert run_dirs(out) == [run]
    assert_same_weights(weights(run), weights(reference), **CLOSE)
    assert [r["status"] for r in records(run) if r["kind"] == "final"] == ["completed"]


def test_each_rank_gets_its_slice_of_every_global_batch_and_val_once():
    """The data contract DDP relies on: W ranks together see exactly one process's batches
    (same number of batches on every rank), reshuffled per epoch; val shards cover each image once."""
    cfg = compose(["data.image_size=16", "data.num_train=100", "data.num_val=101"])
    kw = dict(device="cpu", batch_size=16, val_batch_size=32, seed=3)
    one = build_data(cfg.data, "classification", **kw)
    ranks = [build_data(cfg.data, "classification", rank=r, world_size=2, **kw) for r in (0, 1)]
    firsts = []
    for epoch in (0, 1):
        for loader in (one.train, ranks[0].train, ranks[1].train):
            loader.set_epoch(epoch)
        assert len(one.train) == len(ranks[0].train) == len(ranks[1].train) == 100 // 16
        for (x, y), (x0, y0), (x1, y1) in zip(one.train, ranks[0].train, ranks[1].train):
            assert x0.shape[0] == x1.shape[0] == 8
            assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)
        firsts.append(next(iter(one.train))[1])
    assert not torch.equal(firsts[0], firsts[1])  # a new order each epoch
    val = [torch.cat([y for _, y in r.val]) for r in ranks]
    assert [len(v) for v in val] == [50, 51]
    assert ranks[0].val.num_samples + ranks[1].val.num_samples == 101
    assert torch.equal(torch.cat(val), torch.cat([y for _, y in one.val]))


def _rank_main(rank: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    ctx = dist.from_environment()
    dist.init(ctx, torch.device("cpu"))
    got: dict = {"max": dist.agree_max(5 * rank + 1)}
    got["value"] = dist.on_main(lambda: f"made by rank {rank}", ctx)

    def fails():
        raise RunDirError("cannot write runs under 'x'")

    try:
        dist.on_main(fails, ctx)
    except RunDirError as err:  # raised on every rank, so none waits for the others forever
        got["error"] = str(err)
    dist.shutdown(ctx)
    queue.put((rank, got))


def test_rank0_results_and_errors_reach_every_rank():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp = multiprocessing.get_context("fork")
    queue = mp.Queue()
    procs = [mp.Process(target=_rank_main, args=(r, port, queue)) for r in (0, 1)]
    for p in procs:
        p.start()
    try:
        got = dict(queue.get(timeout=60) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    for rank in (0, 1):
        assert got[rank] == {"max": 6, "value": "made by rank 0", "error": "cannot write runs under 'x'"}


def test_launcher_exit_code_is_rank0s_or_the_first_failure():
    class Failure:
        def __init__(self, exitcode: int):
            self.exitcode = exitcode

    assert _exit_code({0: Failure(2), 1: Failure(2)}) == 2
    assert _exit_code({1: Failure(143), 0: Failure(143)}) == 143
    assert _exit_code({3: Failure(2)}) == 2
    assert _exit_code({0: Failure(-9)}) == 128 + 9  # killed by a signal, as a shell reports it


def test_sync_bn_on_cpu_is_refused_before_anything_starts(tmp_path):
    out = tmp_path / "runs"
    result = invoke(["train", "trainer.devices=2", "trainer.sync_bn=true", "trainer.device=cpu", f"out_dir={out}"])
    assert result.exit_code == 2, result.output
    assert re.match(r"error: trainer.sync_bn=true needs CUDA .*; on CPU use norm=group or norm=layer",
                    result.stderr), result.stderr
    assert not out.exists()
