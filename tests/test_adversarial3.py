"""Adversarial suite, third pass: classes of hostile input the first two passes did not cover.
Spreadsheet formulas in the CSVs vaitrain writes, named pipes and devices where a file is read,
stop signals during eval/predict/export start-up, torch files whose tensors claim huge storages,
data.val_fraction=0, and more (see each section). A refusal is one line, exit 2, no traceback,
nothing written; an accepted input is checked against a hand computation."""
from __future__ import annotations

import csv
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adversarial import cli, refused, snapshot, the_run

RNG = np.random.default_rng(3)
TINY16 = ["model=resnet20", "model.width_mult=0.25", "norm=layer", "optim=sgd", "optim.lr=0.05",
          "data.image_size=16", "trainer.batch_size=4", "trainer.epochs=1", "trainer.log_every=1",
          "trainer.progress=none", "trainer.image_every=0", "trainer.threads=1", "trainer.device=cpu"]
# class folders a spreadsheet would read as formulas (the last one is harmless text)
HOSTILE_CLASSES = ["=1+2", "+SUM(1)", "-2+3", "@A1", "cat"]


def png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def folder_data(root: Path, classes=("a", "b"), n: int = 4, splits=("train", "val"), size: int = 16) -> Path:
    for split in splits:
        for k, c in enumerate(classes):
            for i in range(n):
                arr = np.full((size, size, 3), 40 * k, np.uint8) + RNG.integers(0, 30, (size, size, 3), dtype=np.uint8)
                png(root / split / c / f"{i}.png", arr)
    return root


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory) -> Path:
    """A 1-epoch run on an image folder whose class names start with = + - @."""
    base = tmp_path_factory.mktemp("hostile")
    data = folder_data(base / "data", HOSTILE_CLASSES, n=2)
    result = cli(["train", *TINY16, "data=image_folder", f"data.root={data}", f"out_dir={base / 'runs'}"])
    assert result.exit_code == 0, result.output
    return the_run(base / "runs")


# ----- 1. spreadsheet formulas in the CSVs vaitrain writes ----------------------------------------

def _cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_safe_cell_follows_owasp_and_keeps_numbers():
    from vaitrain.csv_cells import safe_cell

    for bad in ["=1+2", "+SUM(1)", "-2+3", "@A1", "\tx", "\rx", "=", "-", "+infx", "-nan()"]:
        assert safe_cell(bad) == "'" + bad
    # non-finite number literals are numbers (compare-runs writes a metric as str(float)): a CSV
    # reader must get -inf back, not the text "'-inf" (tests/test_review_today.py)
    for ok in ["cat", "", "1e-3", "-2", "-0.5", "+3", ".5", "-1.5e+07", "a=b", " =x", "+inf", "-nan"]:
        assert safe_cell(ok) == ok
    assert safe_cell(-0.25) == -0.25 and safe_cell(-3) == -3 and safe_cell(None) is None


def test_predict_csv_never_holds_a_formula(hostile_run, tmp_path):
    images = hostile_run.parent.parent.parent / "data" / "val"
    out = tmp_path / "p.csv"
    result = cli(["predict", hostile_run, images, "--out", out, "--topk", "5"])
    assert result.exit_code == 0, result.output
    for text in (out.read_text(), cli(["predict", hostile_run, images, "--topk", "5"]).stdout):
        rows = _cells(text)
        assert len(rows) == 1 + 2 * len(HOSTILE_CLASSES)
        classes = {c for row in rows[1:] for c in row[1::2]}
        # every class named once per row, the formula-like ones with the quote a spreadsheet shows as text
        assert classes == {"'=1+2", "'+SUM(1)", "'-2+3", "'@A1", "cat"}
        probs = [float(p) for row in rows[1:] for p in row[2::2]]
        assert all(0 <= p <= 1 for p in probs)
        assert not any(cell[:1] in "=+-@" and cell[:1] for row in rows for cell in row)


def test_compare_runs_and_bench_csv_never_hold_a_formula(hostile_run, tmp_path):
    other = Path(shutil.copytree(hostile_run, tmp_path / "other"))
    cfg = other / "config.yaml"
    cfg.write_text(re.sub(r"(?m)^  root: .*$", "  root: '=HYPERLINK(\"http://x\")'", cfg.read_text(), count=1))
    result = cli(["compare-runs", hostile_run, other, "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = _cells(result.stdout)
    assert "'=HYPERLINK(\"http://x\")" in rows[-1] + rows[-2], rows
    assert not any(cell[:1] in "=+@" and cell[:1] for row in rows for cell in row)

    from vaitrain.bench.report import BenchReport, _csv

    text = _csv(BenchReport(rows=[{"model": "=cmd|' /C calc'!A0", "img_s": -1.5}], environment={"host": "@evil"},
                                    settings={}))
    assert _cells(text) == [["model", "img_s", "env_host"], ["'=cmd|' /C calc'!A0", "-1.5", "'@evil"]]


# ----- 2. named pipes and devices where a file is read ---------------------------------------------

class Unblocker:
    """While a test runs: any reader that blocks on `fifo` gets end-of-file at once, so a regression
    fails the test with a wrong message instead of hanging the suite."""

    def __init__(self, *fifos: Path):
        import threading

        self.fifos, self.stop = fifos, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.05):
            for fifo in self.fifos:
                try:
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # ENXIO while no reader waits
                except OSError:
                    pass

    def __enter__(self) -> "Unblocker":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    os.mkfifo(path)
    return path


PIPE = r"is a named pipe \(FIFO\), not a"


@pytest.mark.parametrize("command, name", [
    ("eval", "config.yaml"), ("eval", "checkpoints/best.pt"), ("predict", "checkpoints/best.pt"),
    ("export", "checkpoints/best.pt"), ("compare-runs", "metrics.jsonl"), ("report", "metrics.jsonl"),
    ("resume", "overrides.txt"), ("eval", "env.json"),
    ("report", "tb/events.out.tfevents.9999999999.host.1.0"),  # TensorBoard's reader opens every file in tb/
])
def test_a_runs_file_that_is_a_fifo(hostile_run, tmp_path, command, name):
    run = Path(shutil.copytree(hostile_run, tmp_path / "run"))
    pipe = fifo(run / name)
    photo = next((hostile_run.parent.parent.parent / "data" / "val" / "cat").glob("*.png"))
    args = {"eval": ["eval", run], "predict": ["predict", run, photo],
            "export": ["export", run, "--format", "torchscript", "--out", tmp_path / "m.pt"],
            "compare-runs": ["compare-runs", run], "report": ["report", run, "--out", tmp_path / "r.html"],
            "resume": ["train", f"resume={run}", "trainer.epochs=2"]}[command]
    before = snapshot(tmp_path)
    with Unblocker(pipe):
        refused(cli(args), rf"{run}/{name} {PIPE} regular file; a run's {name} is a file vaitrain writes")
    assert snapshot(tmp_path) == before and pipe.exists()


def test_files_given_on_the_command_line_that_are_fifos_or_devices(hostile_run, tmp_path):
    pipe = fifo(tmp_path / "w.pt")
    with Unblocker(pipe):
        refused(cli(["eval", hostile_run, "--checkpoint", pipe]), rf"^error: {pipe} {PIPE} regular file: give a checkpoint")
        refused(cli(["train", *TINY16, f"model.weights={pipe}", f"out_dir={tmp_path / 'runs'}"]),
                rf"^error: model.weights={pipe} {PIPE} regular file: give a state_dict .pth file$")
        refused(cli(["predict", hostile_run, pipe]), rf"^error: {pipe} {PIPE}n image file: give image files")
    refused(cli(["train", *TINY16, "model.weights=/dev/zero", f"out_dir={tmp_path / 'runs'}"]),
            r"^error: model.weights=/dev/zero is a character device, not a regular file")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("what", ["sweep", "search", "lab", "train.csv", "image", "search.storage"])
def test_a_fifo_inside_a_folder_vaitrain_reads(tmp_path, what):
    out = tmp_path / "runs"
    if what == "sweep":
        pipe = fifo(tmp_path / "sw" / "sweep.json")
        args, pattern = ["train", "-m", f"resume={pipe.parent}"], rf"cannot read {pipe} \(a named pipe \(FIFO\), not a"
    elif what == "search":
        pipe = fifo(tmp_path / "se" / "search.json")
        args, pattern = ["search", f"resume={pipe.parent}"], r"cannot read search.json \(a named pipe \(FIFO\), not a"
    elif what == "lab":
        pipe = fifo(tmp_path / "lab" / "lab.json")
        args, pattern = ["lab", "init", "--resume", pipe.parent], rf"cannot read {pipe} \(a named pipe \(FIFO\), not a"
    elif what == "search.storage":
        pipe = fifo(tmp_path / "study.db")
        args = ["search", "optim.momentum=choice(0.5,0.9)", "search.trials=1", *TINY16, f"search.storage=sqlite:///{pipe}",
                f"out_dir={out}"]
        pattern = rf"^error: search.storage=sqlite:///{pipe}: {pipe} {PIPE} database file; name a new or existing"
    elif what == "train.csv":
        pipe = fifo(tmp_path / "csv" / "train.csv")
        (tmp_path / "csv" / "val.csv").write_text("path,y\n")
        args = ["train", *TINY16, "task=regression", "data=csv_regression", f"data.root={pipe.parent}", f"out_dir={out}"]
        pattern = rf"{pipe} {PIPE} CSV file"
    else:
        data = folder_data(tmp_path / "data", n=2)
        pipe = fifo(data / "train" / "a" / "9.png")
        args = ["train", *TINY16, "data=image_folder", f"data.root={data}", f"out_dir={out}"]
        pattern = rf"{pipe} is a broken link or not a regular file"
    with Unblocker(pipe):
        refused(cli(args), pattern)
    assert not out.exists()


# ----- 5. data.val_fraction=0 ---------------------------------------------------------------------

def test_val_fraction_zero_is_refused_where_a_split_is_carved(tmp_path):
    one_tree = folder_data(tmp_path / "tree", n=4, splits=("train",)) / "train"
    out = tmp_path / "runs"
    refused(cli(["train", *TINY16, "data=image_folder", f"data.root={one_tree}", "data.val_fraction=0", f"out_dir={out}"]),
            r"^error: data.val_fraction=0 holds out no validation samples, but training needs a validation split .*"
            r"use e.g. data.val_fraction=0.1 \(or add a val/ folder\)$")
    assert not out.exists()
    # with a val/ folder nothing is carved: 0 is fine, and every training image is trained on
    from vaitrain.data import build_data
    from omegaconf import OmegaConf
    from vaitrain.schema.data import DataConfig

    both = folder_data(tmp_path / "both", n=3)
    cfg = OmegaConf.structured(DataConfig(name="image_folder", root=str(both), image_size=16, val_fraction=0.0,
                                          num_workers=0))
    bundle = build_data(cfg, "classification", device="cpu", batch_size=2, val_batch_size=100, seed=0)
    assert sum(len(y) for _, y in bundle.train) == 6 and sum(len(y) for _, y in bundle.val) == 6


# ----- 3. stop signals during eval / predict / export ---------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("command", ["eval", "predict", "export", "report", "compare-runs"])
def test_a_stop_signal_while_loading_is_one_line(hostile_run, tmp_path, monkeypatch, command, signum):
    import torch

    import vaitrain.track.runs as runs_module

    # arrives while the checkpoint (eval, predict, export) or the run's records (report, compare-runs) are read
    owner, name = (runs_module, "load_run") if command in ("report", "compare-runs") else (torch, "load")
    real = getattr(owner, name)

    def load_then_signal(*args, **kwargs):
        os.kill(os.getpid(), signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, load_then_signal)
    photo = next((hostile_run.parent.parent.parent / "data" / "val" / "cat").glob("*.png"))
    args = {"eval": ["eval", hostile_run], "predict": ["predict", hostile_run, photo, "--out", tmp_path / "p.csv"],
            "export": ["export", hostile_run, "--format", "torchscript", "--out", tmp_path / "m.pt"],
            "report": ["report", hostile_run, "--out", tmp_path / "r.html"],
            "compare-runs": ["compare-runs", hostile_run, "--plot", tmp_path / "c.png"]}[command]
    refused(cli(args), rf"^error: stopped by {signal.Signals(signum).name} before `vaitrain {command}` finished; "
            "run it again$", code=128 + signum)
    assert not list(tmp_path.iterdir())


def test_sigterm_while_eval_imports_in_a_real_process(hostile_run):
    """SIGTERM a fresh `python -m vaitrain eval` during its imports: it was the default death (143, no word)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "vaitrain", "eval", str(hostile_run)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # signalled as soon as the command's handler is in place (SIGTERM in the caught mask): torch's
    # import, which follows at once, takes seconds; a fixed sleep could land before or after it
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        caught = int(next(l for l in status.splitlines() if l.startswith("SigCgt:")).split()[1], 16)
        if caught & (1 << (signal.SIGTERM - 1)):
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, (proc.returncode, stderr)
    assert stderr == "error: stopped by SIGTERM before `vaitrain eval` finished; run it again\n" and not stdout


def test_export_given_two_runs_or_an_extra_argument(hostile_run, tmp_path):
    other = Path(shutil.copytree(hostile_run, tmp_path / "other"))
    out = tmp_path / "m.onnx"
    refused(cli(["export", hostile_run, other, "--format", "onnx", "--out", out]),
            rf"^error: 2 run directories given \({hostile_run}, {other}\): a glob matched several runs; "
            r"`vaitrain export` takes one, e.g. the newest: ")
    refused(cli(["export", hostile_run, "junk", "--format", "onnx", "--out", out]),
            r"^error: `vaitrain export` takes one run directory, then options \(--format, --out, --checkpoint\); "
            r"'junk' is one argument too many$")
    assert not out.exists()


# ----- 4. torch files whose tensors claim more data than they hold --------------------------------

def _legacy_bytes(obj) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def _claiming(data: bytes, numel: int) -> bytes:
    """The legacy file with its storage's element count (4, as a 1-byte int) replaced by numel."""
    key = b"X\x03\x00\x00\x00cpuq\x06K\x04N"  # location 'cpu', memo 6, then the count 4, then None
    assert data.count(key) == 1
    return data.replace(key, key[:-3] + b"\x8a\x08" + numel.to_bytes(8, "little") + b"N")


@pytest.mark.parametrize("numel", [2 ** 31, 2 ** 40, 2 ** 62])
def test_legacy_torch_file_claiming_huge_storages_is_refused_before_allocating(hostile_run, tmp_path, monkeypatch,
                                                                              numel):
    import resource

    import torch

    path = tmp_path / "huge.pt"
    path.write_bytes(_claiming(_legacy_bytes({"w": torch.zeros(4)}), numel))
    real, calls = torch.load, []
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a) or real(*a, **k))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    claim = rf"its tensors claim {numel * 4:,} bytes of data but the file holds {path.stat().st_size:,}; refused"
    refused(cli(["eval", hostile_run, "--checkpoint", path]), rf"^error: checkpoint '{path}' is truncated or corrupt: {claim}")
    refused(cli(["train", *TINY16, f"model.weights={path}", f"out_dir={tmp_path / 'runs'}"]),
            rf"^error: weights file '{path}' is truncated or corrupt: {claim}")
    assert not calls  # torch.load never ran: nothing was allocated
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB


def test_legacy_torch_weights_that_are_honest_still_load(tmp_path):
    """The pre-check reads the claims of a real legacy file as within its size: such weights load."""
    import torch

    from vaitrain.models.weights import read_state_dict

    state = {"a.weight": torch.randn(3, 5), "a.bias": torch.randn(3).double(), "n": torch.arange(7)}
    path = tmp_path / "old.pth"
    path.write_bytes(_legacy_bytes(state))
    got = read_state_dict(path)
    assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)


# ----- paths over the system's limits; file names that are not UTF-8 ------------------------------

LONG = "n" * 300  # over the 255 bytes a file name may have


@pytest.mark.parametrize("where", ["data.root", "out_dir", "eval", "predict --out", "export --out", "model.weights"])
def test_a_path_too_long_for_the_system_is_one_line(hostile_run, tmp_path, where):
    long = tmp_path / LONG
    out = tmp_path / "runs"
    args = {"data.root": ["train", *TINY16, "data=image_folder", f"data.root={long}", f"out_dir={out}"],
            "out_dir": ["train", *TINY16, f"out_dir={long}"],
            "eval": ["eval", long],
            "predict --out": ["predict", hostile_run, hostile_run.parent.parent.parent / "data" / "val",
                              "--out", f"{long}.csv"],
            "export --out": ["export", hostile_run, "--format", "torchscript", "--out", f"{long}.pt"],
            "model.weights": ["train", *TINY16, f"model.weights={long}.pt", f"out_dir={out}"]}[where]
    refused(cli(args), rf"^error: file name too long: {tmp_path}/n{{300}}\S*: a name may have at most 255 bytes "
            "and a whole path 4096; shorten it$")
    assert not list(tmp_path.iterdir())


def test_predict_on_file_names_that_are_not_utf8_or_hold_newlines(hostile_run, tmp_path):
    photo = next((hostile_run.parent.parent.parent / "data" / "val" / "cat").glob("*.png"))
    folder = tmp_path / "imgs"
    folder.mkdir()
    names = [os.fsdecode(b"x\xff.png"), "a\nb.png", "t\tc.png", "=cmd.png"]
    for name in names:
        shutil.copy(photo, folder / name)
    for out in (tmp_path / "p.csv", tmp_path / "p.json"):
        result = cli(["predict", hostile_run, folder, "--out", out])
        assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    rows = _cells((tmp_path / "p.csv").read_text(encoding="utf-8"))
    expected = {f"{folder}/x\\xff.png", f"{folder}/a\nb.png", f"{folder}/t\tc.png", f"{folder}/=cmd.png"}
    assert {r[0] for r in rows[1:]} == expected  # the bytes that are not UTF-8 as \xNN; the rest as named
    import json

    assert {r["path"] for r in json.loads((tmp_path / "p.json").read_text(encoding="utf-8"))} == \
        {f"{folder}/x\\xff.png", f"{folder}/a\nb.png", f"{folder}/t\tc.png", f"{folder}/=cmd.png"}


# ----- a run's overrides.txt edited by hand --------------------------------------------------------

@pytest.mark.parametrize("line, pattern", [("optim.lr=abc", r"optim.lr=abc is not a valid float"),
                                           ("garbage", r"malformed override 'garbage': write key=value")])
def test_a_bad_line_in_a_runs_overrides_file_names_the_file(hostile_run, tmp_path, line, pattern):
    run = Path(shutil.copytree(hostile_run, tmp_path / "run"))
    with open(run / "overrides.txt", "a") as f:
        f.write(line + "\n")
    before = snapshot(run)
    photo = next((hostile_run.parent.parent.parent / "data" / "val" / "cat").glob("*.png"))
    for args in (["eval", run], ["predict", run, photo], ["train", f"resume={run}", "trainer.epochs=2"]):
        refused(cli(args), rf"^error: {run}/overrides.txt \(the run's saved overrides, one per line\): {pattern}.*; "
                "fix or remove that line$")
    assert snapshot(run) == before
    # the user's own bad override is still named as theirs
    refused(cli(["eval", hostile_run, "optim.lr=xyz"]), r"^error: optim.lr=xyz is not a valid float$")


# ----- overrides typed with spaces around '=' ------------------------------------------------------

@pytest.mark.parametrize("words", [["optim.lr", "=", "0.1"], ["optim.lr=", "0.1"], ["optim.lr", "=0.1"]],
                         ids=["both", "after", "before"])
def test_spaces_around_the_equals_sign_are_named(tmp_path, words):
    out = tmp_path / "runs"
    for command in (["train", *words, f"out_dir={out}"], ["config", *words]):
        refused(cli(command), r"^error: 'optim.lr', '=' and '0.1' arrived as separate words: write optim.lr=0.1 "
                r"with no spaces around '=' \(or quote the whole override\)$")
    assert not out.exists()
    assert cli(["config", "optim.lr=0.1", "name=", "optim=sgd"]).exit_code == 0  # an empty value is no spacing


# ----- out_dir inside data.root -------------------------------------------------------------------

def test_runs_written_inside_the_data_root_are_not_read_as_a_class(tmp_path, monkeypatch):
    """`cd photos; vaitrain train data=image_folder data.root=.` puts runs/ beside the class folders:
    the second run read it as a class ('class folder runs holds no images: ... remove the folder')."""
    data = folder_data(tmp_path / "photos", classes=("a", "b"), n=3, splits=("train",)) / "train"
    monkeypatch.chdir(data)
    args = ["train", *TINY16, "trainer.progress=plain", "data=image_folder", "data.root=."]
    assert cli(args).exit_code == 0
    second = cli(args)
    assert second.exit_code == 0, second.output
    assert "left out runs: it holds vaitrain runs, not a class (out_dir inside data.root)" in second.output
    import torch

    runs = sorted((data / "runs").rglob("best.pt"))
    assert len(runs) == 2
    assert torch.load(runs[-1], weights_only=True)["data_info"]["class_names"] == ["a", "b"]
    # a sweep folder (made before its first job trains, so every job failed) is vaitrain's output too
    sweep = data / "sweeps" / "2026-01-01" / "10-00-00-sweep-abc"
    sweep.mkdir(parents=True)
    (sweep / "sweep.json").write_text("{}")
    from vaitrain.data.folders import _subfolders

    assert _subfolders(data) == ["a", "b"]


def test_an_overrides_file_saved_with_a_byte_order_mark_or_crlf_still_reads(hostile_run, tmp_path):
    """Notepad saves overrides.txt with a BOM and CRLF: '\\ufeffmodel=resnet20' was a malformed override."""
    run = Path(shutil.copytree(hostile_run, tmp_path / "run"))
    text = (run / "overrides.txt").read_text()
    (run / "overrides.txt").write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    from vaitrain.track.runs import saved_overrides

    assert saved_overrides(run) == saved_overrides(hostile_run)
    result = cli(["eval", run, "--json"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("name", ["tb", "checkpoints"])
def test_a_runs_folder_replaced_by_a_file(hostile_run, tmp_path, name):
    """resume of a run whose tb/ is a file was a FileExistsError traceback after it had rewritten the
    run's records (the run then read 'in progress, 1/2')."""
    run = Path(shutil.copytree(hostile_run, tmp_path / "run"))
    shutil.rmtree(run / name)
    (run / name).write_text("x")
    before = snapshot(run)
    what = "TensorBoard events" if name == "tb" else "checkpoints"
    for args in (["train", f"resume={run}", "trainer.epochs=2"], ["eval", run]):
        refused(cli(args), rf"^error: {run}/{name} is a file, not the folder a run keeps its {what} in: restore it")
    assert snapshot(run) == before
    if name == "tb":  # compare-runs reads neither folder: metrics.jsonl is enough
        assert cli(["compare-runs", run, "--format", "csv"]).exit_code == 0


@pytest.mark.parametrize("out", ["/dev/null", "FILE", "FILE/runs"])
def test_out_dir_on_a_file_or_device_says_what_it_is(tmp_path, out):
    (tmp_path / "FILE").write_text("keep")
    out = out.replace("FILE", str(tmp_path / "FILE"))
    blocker = "/dev/null is a character device" if out == "/dev/null" else f"{tmp_path}/FILE is a file"
    refused(cli(["train", *TINY16, f"out_dir={out}"]),
            rf"^error: cannot write runs under '{out}' \({blocker}, not a folder\); choose a writable folder with "
            "out_dir=DIR$")
    assert (tmp_path / "FILE").read_text() == "keep"


# ----- regression targets too large for float32 metrics --------------------------------------------

def test_regression_targets_whose_squares_overflow_are_refused(tmp_path):
    """Targets of 1e20 trained and reported val/rmse=inf without a word; 1e15 is the largest taken."""
    photo = png(tmp_path / "imgs" / "0.png", RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    for i in range(1, 6):
        shutil.copy(photo, tmp_path / "imgs" / f"{i}.png")
    args = ["train", *TINY16, "task=regression", "data=csv_regression", "trainer.batch_size=2", "data.val_fraction=0.34"]
    big = tmp_path / "big.csv"
    big.write_text("path,y\n" + "".join(f"imgs/{i}.png,{i + 1}e20\n" for i in range(6)))
    refused(cli([*args, f"data.root={big}", f"out_dir={tmp_path / 'runs'}"]),
            rf"^error: {big}:2: column 'y' value '1e20' is too large: squared errors of such targets overflow float32 "
            r"\(val/rmse would read inf\); rescale the column to values within \+-1e15")
    ok = tmp_path / "ok.csv"
    ok.write_text("path,y\n" + "".join(f"imgs/{i}.png,{(-1) ** i * (i + 1) / 6}e15\n" for i in range(6)))
    result = cli([*args, f"data.root={ok}", f"out_dir={tmp_path / 'runs'}", "trainer.progress=none"])
    assert result.exit_code == 0, result.output
    rmse = float(re.search(r"val/rmse=(\S+)", result.stdout).group(1))
    assert 0 < rmse < 1e17  # finite: the squares of ~1e15 errors fit float32


# ----- class folder names written decomposed (macOS) beside composed ones ---------------------------

def test_val_class_folders_in_nfd_match_training_folders_in_nfc(tmp_path):
    import unicodedata

    from omegaconf import OmegaConf

    from vaitrain.data import build_data
    from vaitrain.schema.data import DataConfig

    for split, form in (("train", "NFC"), ("val", "NFD")):
        for k, name in enumerate(("café", "thé")):
            for i in range(3):
                arr = np.full((16, 16, 3), 120 * k, np.uint8)
                png(tmp_path / split / unicodedata.normalize(form, name) / f"{i}.png", arr)
    cfg = OmegaConf.structured(DataConfig(name="image_folder", root=str(tmp_path), image_size=16, num_workers=0))
    bundle = build_data(cfg, "classification", device="cpu", batch_size=2, val_batch_size=100, seed=0)
    assert bundle.class_names == ["café", "thé"]
    labels = torch_cat([y for _, y in bundle.val])
    assert sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]  # every val image, under its training class


def torch_cat(parts):
    import torch

    return torch.cat(list(parts))


def test_a_plot_that_fails_midway_leaves_the_old_file(hostile_run, tmp_path, monkeypatch):
    """compare-runs --plot wrote matplotlib's bytes straight into FILE.png: a full disk (or a stop
    signal) midway left half a PNG in place of the old one."""
    from matplotlib.figure import Figure

    plot = tmp_path / "curves.png"
    plot.write_bytes(b"old plot")

    def half_then_full(self, target, **kwargs):
        (target.write if hasattr(target, "write") else open(target, "wb").write)(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", half_then_full)
    refused(cli(["compare-runs", hostile_run, "--plot", plot]),
            rf"^error: cannot write the plot '{plot}': No space left on device$")
    assert plot.read_bytes() == b"old plot" and [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def test_a_mask_write_that_fails_midway_leaves_the_old_mask(tmp_path, monkeypatch):
    """predict on a segmentation run saved each mask PNG straight into --out: a full disk midway left
    half a PNG over the mask of a previous predict."""
    out = tmp_path / "runs"
    result = cli(["train", *TINY16, "task=segmentation", "model=unet", "model.width_mult=0.25", "data.num_train=16",
                  "data.num_val=8", f"out_dir={out}"])
    assert result.exit_code == 0, result.output
    run = the_run(out)
    photo = png(tmp_path / "in" / "scene.png", RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    masks = tmp_path / "masks"
    masks.mkdir()
    (masks / "scene.png").write_bytes(b"old mask")
    import vaitrain.track.files as files_module

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files_module.os, "fsync", full_disk)
    refused(cli(["predict", run, photo, "--out", masks]), rf"^error: cannot write {masks} \(No space left on device\)")
    assert (masks / "scene.png").read_bytes() == b"old mask" and [p.name for p in masks.iterdir()] == ["scene.png"]


# ----- --checkpoint given as the file's name, or empty ----------------------------------------------

def test_checkpoint_named_by_its_file_name_or_empty(hostile_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no best.pt here: the run's own checkpoints/best.pt is meant
    for name in ("best.pt", "last.pt"):
        result = cli(["eval", hostile_run, "--checkpoint", name])
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines()[0] == str(hostile_run / "checkpoints" / name)
    for empty in ("", " "):
        refused(cli(["eval", hostile_run, "--checkpoint", empty]),
                r"^error: --checkpoint is empty: give best, last or the path of a \.pt file$")


# ----- a user's config file whose YAML aliases expand without bound ---------------------------------

BOMB = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 9))  # 10^9 values


@pytest.mark.parametrize("text, ok", [
    (BOMB + "name: sgd\n", False),
    ("loop: &loop [1, *loop]\nname: sgd\n", False),
    ("defaults: [sgd, _self_]\nlr: &b 0.05\nweight_decay: *b\n", True),  # aliases in moderation still compose
], ids=["billion_laughs", "self_reference", "small_alias"])
def test_user_config_file_with_aliases(tmp_path, text, ok):
    (tmp_path / "optim").mkdir()
    (tmp_path / "optim" / "mine.yaml").write_text(text)
    args = ["config", f"hydra.searchpath=[file://{tmp_path}]", "optim=mine"]
    if ok:
        result = cli(args)
        assert result.exit_code == 0, result.output
        assert "lr: 0.05" in result.stdout and "weight_decay: 0.05" in result.stdout
    else:
        refused(cli(args), rf"^error: {tmp_path}/optim/mine.yaml: its YAML aliases \(\*name\) expand to over 100,000 "
                "values")


def test_an_image_whose_name_starts_with_a_dash(hostile_run, tmp_path, monkeypatch):
    photo = next((hostile_run.parent.parent.parent / "data" / "val" / "cat").glob("*.png"))
    monkeypatch.chdir(tmp_path)
    shutil.copy(photo, tmp_path / "-x.png")
    refused(cli(["predict", hostile_run, "-x.png"]),
            r"^error: No such option: -x; '-x.png' is a file: write ./-x.png, or put -- before it$")
    for args in (["./-x.png"], ["--", "-x.png"]):
        result = cli(["predict", hostile_run, *args])
        assert result.exit_code == 0 and result.stdout.count("\n") == 2, result.output  # header + one row
    refused(cli(["train", "-0"]), r"^error: No such option: -0 \(see `root train --help`\)$")  # no such file: as before
