"""Adversarial suite, fourth pass: the state a user's runs and folders get into over days of use
(config.yaml edited by hand, the data changed under a run), stop signals in bench and lab, and the
commands the earlier passes covered least (lab, bench, sweeps). A refusal is one line, exit 2 (or
128 + signal), no traceback, nothing half-written."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from adversarial import TINY, cli, refused


# ----- 1. stop signals in bench and lab -----------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_bench_is_one_line_and_128_plus_signal(monkeypatch, tmp_path, signum):
    import vaitrain.bench as bench

    def signalled(*_a, **_k):
        os.kill(os.getpid(), signum)
        raise AssertionError("the handler did not raise")

    monkeypatch.setattr(bench, "run_bench", signalled)
    refused(cli(["bench", "model=resnet20", "--out", tmp_path / "b.json"]),
            rf"^error: stopped by {signal.Signals(signum).name} before `vaitrain bench` finished; run it again$",
            code=128 + signum)
    assert not list(tmp_path.iterdir())


def _fake_sweep(status: str, interrupted: bool):
    """run_sweep as a lab sweep sees it when a job was stopped (or failed): its folder is kept."""
    from vaitrain.sweep import SweepJob, SweepResult

    def run_sweep(overrides, out_dir=None, progress=None, **_):
        sweep_dir = Path(out_dir) / "d" / "s"
        sweep_dir.mkdir(parents=True)
        (sweep_dir / "sweep.json").write_text("{}")
        jobs = [SweepJob(index=0, overrides=["optim.lr=0.1"], status="completed"),
                SweepJob(index=1, overrides=["optim.lr=0.2"], status=status, error="boom" if status == "failed" else None)]
        return SweepResult(sweep_dir, list(overrides), jobs, interrupted=interrupted,
                           signal=int(signal.SIGTERM) if interrupted else 0)

    return run_sweep


@pytest.mark.parametrize("status", ["stopped", "failed"])
def test_lab_sweep_stopped_or_failed_names_the_folder_to_resume(monkeypatch, tmp_path, status):
    """A SIGTERM in a lab's training run stopped the sweep; the lab went on and drew its findings from
    the runs that had finished (a silent wrong result). A failed job did the same."""
    import vaitrain.sweep as sweep

    monkeypatch.setattr(sweep, "run_sweep", _fake_sweep(status, interrupted=status == "stopped"))
    result = cli(["lab", "optimizers", "--size", "tiny", "--out-dir", tmp_path / "runs"])
    lab_dir = next((tmp_path / "runs").glob("*/*-lab-optimizers*"))
    last = result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.output and "report:" not in result.output
    if status == "stopped":
        assert result.exit_code == 143, result.output
        assert last == (f"error: stopped by SIGTERM before `vaitrain lab optimizers` finished; its runs so far are "
                        f"kept: continue with `vaitrain lab optimizers --resume {lab_dir}`")
    else:
        assert result.exit_code == 2, result.output
        assert last == (f"error: 1 of 2 runs of the lab's sweep 'sgd' failed (job 2: boom); its runs so far are "
                        f"kept: continue with `vaitrain lab optimizers --resume {lab_dir}`")
    assert not (lab_dir / "report.html").exists()


def test_sigterm_in_a_sweep_jobs_start_up_marks_the_sweep_interrupted(monkeypatch, tmp_path):
    """SIGTERM while a `train -m` job was starting (composing, building the data; the training loop's
    own handler not yet in place) was the default death: exit 143 without a word and sweep.json saying
    'running'. (An Interrupted raised there was counted as the job failing, and the sweep went on.)"""
    import json

    import vaitrain.engine

    calls = []

    def starting(cfg, overrides, **kw):
        calls.append(overrides)
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("the handler did not raise")

    monkeypatch.setattr(vaitrain.engine, "train", starting)
    result = cli(["train", "-m", *TINY, "seed=1,2", f"out_dir={tmp_path}"])
    assert result.exit_code == 143, result.output
    assert "Traceback" not in result.output and len(calls) == 1
    sweep_json = next(tmp_path.rglob("sweep.json"))
    assert f"stopped by SIGTERM: continue with: vaitrain train -m resume={sweep_json.parent}" in result.stderr
    assert [j["status"] for j in json.loads(sweep_json.read_text())["jobs"]] == ["interrupted", "interrupted"]


# ----- 2. a run's folder and data changed by hand after training ----------------------------------

FOLDER16 = ["model=resnet20", "model.width_mult=0.25", "norm=layer", "optim=sgd", "optim.lr=0.05", "data=image_folder",
            "data.image_size=16", "trainer.batch_size=4", "trainer.epochs=1", "trainer.log_every=1",
            "trainer.progress=plain", "trainer.image_every=0", "trainer.threads=1", "trainer.device=cpu"]


def _folder(root: Path, train: int = 4, val: int = 2) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(4)
    for split, n in (("train", train), ("val", val)):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("a4")
    result = cli(["train", *FOLDER16, f"data.root={_folder(base / 'data')}", f"out_dir={base / 'runs'}"])
    assert result.exit_code == 0, result.output
    return next((base / "runs").rglob("config.yaml")).parent


def _copy(run: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run, tmp_path / "run"))


def test_config_yaml_edited_by_hand_is_said_and_resume_refuses(folder_run, tmp_path):
    """config.yaml is a record vaitrain never reads back; an edit there (optim.lr) was silently ignored
    by eval, predict, export and resume."""
    from adversarial import snapshot

    run = _copy(folder_run, tmp_path)
    clean = cli(["eval", run])
    assert clean.exit_code == 0 and "note:" not in clean.stderr, clean.output  # as vaitrain wrote it: no word
    text = (run / "config.yaml").read_text()
    assert text.count("  lr: 0.05\n") == 1
    (run / "config.yaml").write_text(text.replace("  lr: 0.05\n", "  lr: 0.5\n"))
    said = (f"{run}/config.yaml no longer matches the run as vaitrain reads it (optim.lr: 0.5 in config.yaml, 0.05 "
            "from overrides.txt); config.yaml is a record of the run and is never read back: the run's settings come from "
            "overrides.txt and its checkpoint. To change a setting give it on the command line (resume: vaitrain "
            f"train resume={run} key=value)")
    result = cli(["eval", run])
    assert result.exit_code == 0 and f"note: {said}\n" in result.stderr, result.output
    photo = next((folder_run.parent.parent.parent / "data" / "val" / "a").glob("*.png"))
    result = cli(["predict", run, photo, "--out", tmp_path / "p.csv"])
    assert result.exit_code == 0 and f"note: {said}\n" in result.stderr, result.output
    result = cli(["export", run, "--format", "torchscript", "--out", tmp_path / "m.pt"])
    assert result.exit_code == 0 and f"note: {said}\n" in result.stderr, result.output
    before = snapshot(run)
    refused(cli(["train", f"resume={run}", "trainer.epochs=2"]),
            "^error: " + __import__("re").escape(said + ", or undo the edit to resume as the run was") + "$")
    assert snapshot(run) == before
    # the key given on the command line is the user's choice: not compared (the resume rules judge it)
    refused(cli(["train", f"resume={run}", "trainer.epochs=2", "optim.lr=0.5"]),
            r"^error: resume=\S+: optim.lr=0.5 differs from the run's optim.lr=0.05; a resumed run keeps")


def test_data_grown_since_the_run_is_said_by_eval_and_resume(tmp_path):
    """Images added to an image_folder (same classes) between a run and its eval/resume: the scores
    and the rest of the run were on other data without a word (only the class list was compared)."""
    data = _folder(tmp_path / "data")
    result = cli(["train", *FOLDER16, f"data.root={data}", f"out_dir={tmp_path / 'runs'}"])
    assert result.exit_code == 0, result.output
    run = next((tmp_path / "runs").rglob("config.yaml")).parent
    _folder(data, train=6, val=3)  # 2 more training and 1 more validation image per class
    result = cli(["eval", run])
    assert result.exit_code == 0, result.output
    assert (f"note: '{run}/checkpoints/best.pt' was saved with 4 val samples, the data holds 6 val now (files added "
            "or removed since): these scores are on the data as it is now, not as the run validated on\n") in result.stderr
    result = cli(["train", f"resume={run}", "trainer.epochs=2"])
    assert result.exit_code == 0, result.output
    assert (f"note: '{run}/checkpoints/last.pt' was saved with 8 train / 4 val samples, the data holds 12 train / "
            "6 val now (files added or removed since): the run goes on with the data as it is now, normalized with "
            "the statistics it started with (its checkpoint's)") in result.output


# ----- 3. a shell with torchrun's variables left exported ------------------------------------------

@pytest.mark.parametrize("env, pattern", [
    ({"WORLD_SIZE": "abc"}, r"^error: WORLD_SIZE='abc' in the environment is not a whole number: torchrun sets it"),
    ({"WORLD_SIZE": "2", "RANK": "1"}, r"^error: WORLD_SIZE=2 is set in the environment but MASTER_ADDR and "
                                       r"MASTER_PORT are not, so this is no torchrun process: unset RANK WORLD_SIZE"),
    ({"WORLD_SIZE": "2", "RANK": "x", "MASTER_ADDR": "localhost", "MASTER_PORT": "29500"},
     r"^error: RANK='x' in the environment is not a whole number"),
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "localhost", "MASTER_PORT": "99999"},
     r"^error: MASTER_PORT=99999 in the environment is not a port \(1\.\.65535\)"),
    ({"WORLD_SIZE": "2", "RANK": "3", "MASTER_ADDR": "localhost", "MASTER_PORT": "29500"},
     r"^error: RANK=3 / LOCAL_RANK=0 in the environment are not below WORLD_SIZE=2"),
])
def test_torchrun_variables_left_in_the_shell(monkeypatch, tmp_path, env, pattern):
    """A ValueError traceback (int('abc')) or torch's 'MASTER_ADDR expected' rendezvous error, after
    the data was built; now one line before anything is written."""
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    refused(cli(["train", *TINY, f"out_dir={tmp_path / 'runs'}"]), pattern)
    assert not (tmp_path / "runs").exists()


def test_a_lone_rank_left_in_the_shell_is_one_process(monkeypatch, tmp_path):
    """RANK=1 without WORLD_SIZE: the run is one process, rank 0; the CLI took it for rank 1 and printed
    no summary line."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("RANK", "1")
    result = cli(["train", *TINY, "trainer.epochs=1", "data.num_train=16", "data.num_val=16",
                  f"out_dir={tmp_path / 'runs'}"])
    assert result.exit_code == 0 and "done: " in result.output, result.output


# ----- 4. a search resumed with another objective ----------------------------------------------------

@pytest.mark.parametrize("change, pattern", [
    ("search.metric=val/loss", r"search.metric=val/loss differs from the search's metric val/acc1"),
    ("search.direction=minimize", r"contradicts val/acc1"),  # refused as before: the metric's own direction
    ("search.study=other", r"search.study=other differs from the search's study search"),
])
def test_search_resumed_with_another_objective_is_refused(tmp_path, change, pattern):
    """search.metric=val/loss on resume ranked the new trials' losses with the old trials' accuracies
    in one study (the 'best' trial was then either kind); another study name began a fresh study."""
    pytest.importorskip("optuna", reason="the search extra (pip install -e '.[search]') is not installed")
    import json

    from adversarial import snapshot

    folder = tmp_path / "search"
    folder.mkdir()
    (folder / "search.json").write_text(json.dumps({
        "overrides": [*[o for o in TINY if not o.startswith("optim.lr")], "optim.lr=log(1e-3,1e-1)"], "storage": f"sqlite:///{folder / 'study.db'}",
        "study": "search", "metric": "val/acc1", "direction": "maximize", "started": "2026-12-01T10:00:00"}))
    before = snapshot(folder)
    refused(cli(["search", f"resume={folder}", change]), rf"^error: .*{pattern}")
    assert snapshot(folder) == before


def test_a_sweep_folder_has_one_runner_at_a_time(monkeypatch, tmp_path):
    """Two `train -m resume=SWEEP` at once (or a resume while the sweep still ran) trained the same jobs
    twice, each process writing its own sweep.json over the other's. The folder is locked (flock, no
    file in it; the kernel drops it when its holder dies, kill -9 too)."""
    import types

    import vaitrain.engine
    from vaitrain.sweep import _lock

    def stopped(cfg, overrides, **kw):  # the first job's loop saw SIGTERM and stopped
        return types.SimpleNamespace(status="stopped", signal=15, run_dir=None)

    monkeypatch.setattr(vaitrain.engine, "train", stopped)
    assert cli(["train", "-m", *TINY, "seed=1,2", f"out_dir={tmp_path}"]).exit_code == 143
    sweep_dir = next(tmp_path.rglob("sweep.json")).parent
    assert sorted(p.name for p in sweep_dir.iterdir()) == ["sweep.json"]
    from adversarial import snapshot

    before = snapshot(sweep_dir)
    held = _lock(sweep_dir)  # another process's resume, running
    try:
        refused(cli(["train", "-m", f"resume={sweep_dir}"]),
                rf"^error: sweep folder '{sweep_dir}' is in use by another `vaitrain train -m` \(the sweep still "
                r"running, or a resume of it\): wait for it to end or stop it")
    finally:
        held.release()
    assert snapshot(sweep_dir) == before
    assert cli(["train", "-m", f"resume={sweep_dir}"]).exit_code == 143  # free again: it runs (and stops)


@pytest.mark.parametrize("override, option", [("out_dir=elsewhere", "--out-dir DIR"), ("resume=old", "--resume LAB_FOLDER")])
def test_lab_given_out_dir_or_resume_as_an_override(tmp_path, override, option):
    """`vaitrain lab init out_dir=x` / `resume=x`: dropped without a word (the lab wrote to runs/)."""
    refused(cli(["lab", "init", "--size", "tiny", override, "--out-dir", tmp_path / "runs"]),
            rf"^error: '{override}': the lab places its runs in its own folder; use `vaitrain lab init {option}`$")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("edit, reason", [
    (lambda d: d.update(jobs=[]), "it lists no jobs"),  # was 'sweep: 0 jobs ()' and exit 0
    (lambda d: d.update(jobs=d["jobs"] + d["jobs"]), r"its jobs are numbered \[0, 1, 0, 1\], not 0..3 in order"),
    (lambda d: d["jobs"][0].update(index=7), r"its jobs are numbered \[7, 1\], not 0..1 in order"),
    (lambda d: d.update(overrides=5), "its overrides are not a list of text"),  # a TypeError traceback
    (lambda d: d["jobs"][1].update(overrides=["resume=/tmp"]), "job 1 holds a resume= override"),
])
def test_sweep_json_edited_by_hand(monkeypatch, tmp_path, edit, reason):
    import json
    import types

    import vaitrain.engine

    calls = []

    def stopped(cfg, overrides, **kw):
        calls.append(overrides)
        return types.SimpleNamespace(status="stopped", signal=15, run_dir=None)

    monkeypatch.setattr(vaitrain.engine, "train", stopped)
    assert cli(["train", "-m", *TINY, "seed=1,2", f"out_dir={tmp_path}"]).exit_code == 143
    sweep_json = next(tmp_path.rglob("sweep.json"))
    doc = json.loads(sweep_json.read_text())
    edit(doc)
    sweep_json.write_text(json.dumps(doc))
    refused(cli(["train", "-m", f"resume={sweep_json.parent}"]),
            rf"^error: cannot read {sweep_json} \({reason}.*\); is it a vaitrain sweep folder\?$")
    assert len(calls) == 1 and json.loads(sweep_json.read_text()) == doc


# ----- 5. the compose cache (~/.cache/vaitrain) --------------------------------------------------------

def test_a_fifo_in_the_compose_cache_is_composed_again_not_waited_on(tmp_path):
    """A named pipe where a cache entry goes hung every command that composes (read_text waited for a
    writer); it is read as no entry, and the next write replaces it with the entry."""
    from omegaconf import OmegaConf

    from vaitrain import config_cache

    fifo = tmp_path / "entry.json"
    os.mkfifo(fifo)

    def timeout(*_):
        raise TimeoutError("the cache read waited on the FIFO")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(10)
    try:
        assert config_cache._read(fifo) is None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    config_cache._write(fifo, OmegaConf.create({"a": 1}))  # not a composed config: left alone, never raises


def test_a_full_disk_leaves_no_half_cache_entry(tmp_path, monkeypatch):
    """ENOSPC/EDQUOT while writing an entry left '.<key>.json.<pid>.tmp' half-written in the cache."""
    import errno

    from vaitrain import config_cache
    from vaitrain.config import compose

    cfg = compose(["model=resnet20"])
    real = Path.write_text

    def half(self, text, *a, **k):
        real(self, text[: len(text) // 2], *a, **k)
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(Path, "write_text", half)
    config_cache._write(tmp_path / "k.json", cfg)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


# ----- 6. bench where nothing could be measured ----------------------------------------------------

def test_bench_of_a_model_that_cannot_build_at_the_size_is_not_exit_0(tmp_path):
    """`vaitrain bench model=unet task=segmentation data.image_size=10` printed a FAILED row and exited 0:
    a script read it as measured. Every row failed: exit 2 and the reason in one line on stderr (a
    sweep of models where some ran still exits 0, each failure in its row)."""
    out = tmp_path / "b.json"
    result = cli(["bench", "model=unet", "task=segmentation", "data.image_size=10", "bench.steps=1", "bench.data=false",
                  "trainer.threads=1", "--out", out])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.stderr.strip().splitlines()[-1] == ("error: unet: image size 10 px does not fit a U-Net of depth 4 "
                                                      "(the size must be divisible by 2^4=16): use data.image_size=16")
    assert "unet: FAILED:" in result.stdout and out.is_file()  # the row and the file are still there


def test_sigterm_in_search_is_one_line_and_143(monkeypatch, tmp_path):
    """SIGTERM while `vaitrain search` imported or opened its study was the default death (143, no
    word); a search whose trials SIGTERM stopped exited 130 as if Ctrl-C."""
    pytest.importorskip("optuna", reason="the search extra (pip install -e '.[search]') is not installed")
    import vaitrain.search as search

    def opening(*_a, **_k):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("the handler did not raise")

    monkeypatch.setattr(search, "run_search", opening)
    refused(cli(["search", "optim.lr=log(1e-3,1e-1)"]),
            r"^error: stopped by SIGTERM before `vaitrain search` finished; run it again$", code=143)
    monkeypatch.setattr(search, "run_search", lambda *a, **k: search.SearchResult(
        tmp_path, "sqlite://", "search", "val/acc1", "maximize", interrupted=True, signal=int(signal.SIGTERM)))
    result = cli(["search", "optim.lr=log(1e-3,1e-1)"])
    assert result.exit_code == 143 and f"continue with: vaitrain search resume={tmp_path}" in result.stderr


def test_config_yaml_of_another_vaitrain_version_is_no_edit(folder_run, tmp_path):
    """A run written by an older vaitrain: its config.yaml lacks keys added since, and holds defaults
    that changed since (its checkpoints' copy of the config says the same). Neither is an edit: no
    note, and resume is not refused for it."""
    import torch

    run = _copy(folder_run, tmp_path)
    text = (run / "config.yaml").read_text()
    older = text.replace("  lr: 0.05\n", "  lr: 0.07\n").replace("\n  log_every: 1\n", "\n")
    assert older.count("lr: 0.07") == 1 and "log_every" not in older
    (run / "config.yaml").write_text(older)
    for ckpt in (run / "checkpoints").glob("*.pt"):
        state = torch.load(ckpt, weights_only=True)
        state["config_yaml"] = older
        torch.save(state, ckpt)
    result = cli(["eval", run])
    assert result.exit_code == 0 and "note:" not in result.stderr, result.output
