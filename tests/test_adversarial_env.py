"""Hostile environments (not hostile arguments): how the process was started must not lose a run,
print a traceback or give a silently wrong result. Subprocesses only where the environment is the
process itself (its fds, working directory, locale, signals, memory limit)."""
from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vaitrain.cli import app
from vaitrain.errors import ConfigError

VAITRAIN = [sys.executable, "-m", "vaitrain"]
TINY = ["model=resnet20", "model.width_mult=0.25", "data.image_size=16", "data.num_train=64", "data.num_val=32",
        "trainer.epochs=1", "trainer.threads=1", "trainer.progress=none", "trainer.batch_size=32"]
REPO = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.update(extra)
    return env


def _only_run(out_dir: Path) -> Path:
    runs = [p.parent for p in out_dir.rglob("config.yaml")]
    assert len(runs) == 1, runs
    return runs[0]


def _epochs(run: Path) -> list[int]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return sorted({int(r["epoch"]) for r in lines if r.get("kind") == "epoch" or "val/loss" in r})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("env-run")
    r = subprocess.run([*VAITRAIN, "train", *TINY, f"out_dir={out}"], env=_env(), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return _only_run(out)


def _dead_pipe() -> int:
    """The write end of a pipe whose reader already exited (`| head -1` after its line)."""
    read, write = os.pipe()
    os.close(read)
    return write


def test_reader_gone_mid_training_still_finishes_the_run(tmp_path):
    # `vaitrain train ... 2>&1 | head -1`: before, the first progress line after the reader left
    # raised BrokenPipeError; the run died (exit 1, no message) with no checkpoint of its last epoch
    dead = _dead_pipe()
    r = subprocess.run([*VAITRAIN, "train", *TINY, "trainer.epochs=2", "trainer.progress=plain",
                        f"out_dir={tmp_path}"], env=_env(), stdout=dead, stderr=dead, timeout=120)
    os.close(dead)
    assert r.returncode == 0
    run = _only_run(tmp_path)
    assert (run / "checkpoints" / "last.pt").is_file()
    final = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert final.get("status", "completed") == "completed" and final.get("epoch") == 2, final


def test_reader_gone_for_a_listing_is_quiet(tmp_path):
    dead = _dead_pipe()
    err = tmp_path / "err"
    with err.open("w") as e:
        r = subprocess.run([*VAITRAIN, "options"], env=_env(), stdout=dead, stderr=e, timeout=60)
    os.close(dead)
    assert r.returncode == 0
    assert err.read_text() == ""  # no "Exception ignored ... BrokenPipeError", no traceback


def test_closed_stdout_and_stderr(tiny_run):
    # `vaitrain eval RUN >&- 2>&-`: before, exit 1 (a write to the missing stderr); and a file opened
    # by vaitrain could have become fd 1/2 and received the output
    def close_out() -> None:
        os.close(1)
        os.close(2)

    before = sorted(p.name for p in tiny_run.iterdir())
    r = subprocess.run([*VAITRAIN, "eval", str(tiny_run)], env=_env(), preexec_fn=close_out, timeout=120)
    assert r.returncode == 0
    assert sorted(p.name for p in tiny_run.iterdir()) == before


def test_deleted_working_directory(tmp_path, tiny_run):
    # before: "Intel oneMKL FATAL ERROR: Cannot load libtorch_cpu.so" from inside torch's import
    gone = tmp_path / "gone"
    gone.mkdir()

    def enter_and_delete() -> None:
        os.chdir(gone)
        os.rmdir(gone)

    r = subprocess.run([*VAITRAIN, "compare-runs", str(tiny_run)], env=_env(), preexec_fn=enter_and_delete,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: the working directory no longer exists (deleted while this shell was in it): "
        "cd to an existing folder and run again"]


@pytest.mark.parametrize("value,ok", [("abc", False), ("0", False), ("-2", False), ("1.5", False),
                                      ("2", True), (" 4 ", True), ("4,2", True), ("", True)])
def test_omp_num_threads_checked(monkeypatch, value, ok):
    # before: libgomp's "Invalid value for environment variable OMP_NUM_THREADS" and the run went on
    from vaitrain.process_env import check_environment

    monkeypatch.setenv("OMP_NUM_THREADS", value)
    if ok:
        check_environment([])
    else:
        with pytest.raises(ConfigError, match="OMP_NUM_THREADS=.*unset it or set e.g. OMP_NUM_THREADS=1"):
            check_environment([])


def test_command_line_the_locale_cannot_decode(tmp_path):
    # an ASCII locale without UTF-8 coercion: 'dåta' arrives as surrogates; before, a later check
    # called the folder name "a control character" and showed \udcc3\udca5
    env = _env(LC_ALL="POSIX", LANG="POSIX", PYTHONCOERCECLOCALE="0", PYTHONUTF8="0")
    r = subprocess.run([*VAITRAIN, "config", "data=image_folder", "data.root='/tmp/d\u00e5ta'".encode()],
                       env=env, capture_output=True, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.decode("utf-8", "replace").strip().splitlines()
    assert len(lines) == 1 and "not text in this locale's encoding (ascii)" in lines[0]
    assert "LC_ALL=C.UTF-8" in lines[0]


def test_unquoted_non_ascii_value_says_quote_it():
    r = CliRunner().invoke(app, ["config", "data=image_folder", "data.root=/data/bilder_\u00fc"])
    assert r.exit_code == 2
    assert "quote a value with non-ASCII characters, e.g. data.root='/data/bilder_\u00fc'" in r.output
    ok = CliRunner().invoke(app, ["config", "data=image_folder", "data.root='/data/bilder_\u00fc'"])
    assert ok.exit_code == 0 and "/data/bilder_\u00fc" in ok.output


def test_class_folder_name_not_in_the_file_system_encoding(tmp_path, one_thread):
    from PIL import Image

    root = tmp_path / "data"
    for name in (b"kreis", b"q\xe9"):  # latin-1 bytes: not UTF-8
        folder = os.path.join(os.fsencode(root), name)
        os.makedirs(folder)
        for i in range(4):
            Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(os.fsdecode(os.path.join(folder, b"%d.png" % i)))
    r = CliRunner().invoke(app, ["train", *TINY, "data=image_folder", f"data.root={root}", "data.num_train=4",
                                 "data.num_val=2", "trainer.batch_size=2", f"out_dir={tmp_path / 'runs'}"])
    assert r.exit_code == 2
    assert f"error: class folder 'q\\xe9' in {root}" in r.output and "is not utf-8 text: rename it" in r.output
    assert not (tmp_path / "runs").exists()


def test_foreign_or_edited_cache_entry_is_not_used(tmp_path, monkeypatch):
    # before: a compose-cache entry edited by hand (or another entry copied under its name) was
    # rebuilt as is: optim.lr=123.0 with nothing on the command line asking for it
    from vaitrain.config import compose

    monkeypatch.setenv("VAITRAIN_CACHE_DIR", "")
    expected = compose(["optim=adam"]).optim.lr  # Hydra's own composition: no cache
    monkeypatch.setenv("VAITRAIN_CACHE_DIR", str(tmp_path))
    assert compose(["optim=adam"]).optim.lr == expected
    [entry] = list(tmp_path.rglob("*.json"))
    data = json.loads(entry.read_text())
    data["config"]["optim"]["lr"] = 123.0
    entry.write_text(json.dumps(data))
    assert compose(["optim=adam"]).optim.lr == expected
    other = json.loads(entry.read_text())  # the rewritten entry; now copied under another name
    compose(["optim=sgd"])
    sgd_entry = next(p for p in tmp_path.rglob("*.json") if p != entry)
    sgd_entry.write_text(json.dumps(other))  # adam's values where sgd's are looked up
    assert compose(["optim=sgd"]).optim.name == "sgd"
    for bad in ("{", "[1, 2]", "null", '{"format": 2}'):
        entry.write_text(bad)
        assert compose(["optim=adam"]).optim.lr == expected


def test_sighup_during_training_stops_and_writes_last_pt(tmp_path):
    # the terminal or ssh session went away: before, the default SIGHUP death (no last.pt of the
    # current epoch, a run that looked "in progress" forever)
    proc = subprocess.Popen([*VAITRAIN, "train", *TINY, "trainer.epochs=500", f"out_dir={tmp_path}"], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while time.time() < deadline:
        metrics = list(tmp_path.rglob("metrics.jsonl"))
        if metrics and '"epoch": 2' in metrics[0].read_text():
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGHUP, err
    assert re.search(r"stopped (in|after) epoch \d+/500 at step", err) and "resume=" in err
    run = _only_run(tmp_path)
    assert (run / "checkpoints" / "last.pt").is_file()
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1]).get("status") == "stopped"


def test_nohup_keeps_sighup_ignored():
    from vaitrain.interrupts import handling

    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with handling(lambda *_: None):
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) != signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, old)


def test_memory_limit_too_low_for_torch(tiny_run):
    # `ulimit -v 400000`: before, ImportError's traceback from torch/__init__.py
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (400 * 2**20, 400 * 2**20))

    r = subprocess.run([*VAITRAIN, "compare-runs", str(tiny_run)], env=_env(), preexec_fn=limit,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("error: cannot load a library into memory") and "ulimit -v" in line


@pytest.mark.parametrize("command,expected", [
    (["export", "{run}", "--format", "torchscript", "--out", "m.pt"], "choose a writable folder for --out"),
    (["report", "{run}"], "free space there or choose another folder with --out"),
    (["lab", "init", "--size", "tiny"], "choose a writable folder with --out-dir DIR"),
    (["train", "model=resnet20"], "choose a writable folder with out_dir=DIR"),
])
def test_working_directory_not_writable(monkeypatch, tiny_run, command, expected):
    # the defaults (runs/, report.html, a bare --out m.pt) are relative: a working directory nothing
    # can be written in (/proc here; a read-only mount for a user). Before, export showed
    # tempfile's FileNotFoundError traceback and lab named train's out_dir=DIR
    monkeypatch.chdir("/proc")
    r = CliRunner().invoke(app, [a.format(run=tiny_run) for a in command])
    assert r.exit_code == 2, r.output
    [line] = r.output.strip().splitlines()
    assert line.startswith("error: ") and line.endswith(expected), line
    assert not list(Path("/proc").glob(".m.pt.*"))


def test_export_onto_a_full_disk_leaves_nothing(tmp_path, tiny_run):
    # RLIMIT_FSIZE stands in for a full disk (writes past it fail, as with ENOSPC). Before: torch.jit.save
    # to a path aborted the whole process (C++ abort, exit 134) and left .m.pt.*.tmp behind
    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    out = tmp_path / "m.pt"
    r = subprocess.run([*VAITRAIN, "export", str(tiny_run), "--format", "torchscript", "--out", str(out)],
                       env=_env(), preexec_fn=small_files, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"error: cannot write {out} (File too large): free space there or choose another --out"]
    assert list(tmp_path.iterdir()) == []


def test_unusable_home_and_cache_folders(tmp_path, tiny_run):
    # HOME unwritable, XDG_* and VAITRAIN_CACHE_DIR naming a file: the compose cache and matplotlib's
    # folders must never fail a run. Before: matplotlib's two-line "mkdir -p failed ... highly
    # recommended to set MPLCONFIGDIR" notice on every report
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    env = _env(HOME="/proc", XDG_CACHE_HOME=str(a_file), XDG_CONFIG_HOME=str(a_file), VAITRAIN_CACHE_DIR=str(a_file))
    env.pop("MPLCONFIGDIR", None)
    out = tmp_path / "r.html"
    r = subprocess.run([*VAITRAIN, "report", str(tiny_run), "--out", str(out)], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "" and out.stat().st_size > 1000
    assert a_file.read_text() == ""


def test_stdout_redirected_to_a_full_disk(tmp_path):
    # `vaitrain options > /full/disk/out.txt`: before, rich's OSError traceback (or exit 120 from the
    # flush at exit, the file silently cut short). RLIMIT_FSIZE stands in for the full disk
    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))

    out = tmp_path / "options.txt"
    with out.open("w") as f:
        r = subprocess.run([*VAITRAIN, "options"], env=_env(), preexec_fn=small_files, stdout=f,
                           stderr=subprocess.PIPE, text=True, timeout=60)
    assert r.returncode == 2
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("error: could not write all of this command's output to stdout (File too large)")
    assert out.stat().st_size <= 2000


def test_run_config_path_the_locale_cannot_name(tmp_path):
    # a run trained on data.root=/data/bilder_ü, evaluated in an ASCII locale: before, "data.root=...
    # does not exist" for a folder that exists (the path could not be encoded, so exists() was False)
    root = tmp_path / "bilder_\u00fc"
    root.mkdir()
    code = ("from types import SimpleNamespace as N; from vaitrain.data.folders import _root; "
            f"_root(N(root={ascii(str(root))}), 'image_folder', 'a folder')")
    env = _env(LC_ALL="POSIX", LANG="POSIX", PYTHONCOERCECLOCALE="0", PYTHONUTF8="0")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=60)
    err = r.stderr.decode("ascii", "backslashreplace")
    assert r.returncode == 1 and "DataError: data.root=" in err, err
    assert "cannot be named in this locale's encoding (ascii): run with a UTF-8 locale" in err
