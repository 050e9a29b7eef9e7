"""What a user sees when TensorBoard opens a vaitrain run (issue 13).

A real tiny run is trained, a real TensorBoard serves it on 127.0.0.1, and its HTTP API (the one
the Time Series view loads) must put the task's sections first: TensorBoard sorts sections by tag
name with the comparator below (ported from its frontend, tensorboard/webapp/util/string.ts
compareTagNames: digits and '/' before other characters) and expands the first two. Where Chromium
is installed the page itself is loaded and its section titles read from the rendered DOM.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from functools import cmp_to_key
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from vaitrain.cli import app
from vaitrain.compare import free_port, start_tensorboard


def _is_digit(c: str) -> bool:
    return "0" <= c <= "9"


def _number_end(s: str, i: int) -> int:
    while i < len(s) and (_is_digit(s[i]) or s[i] == "."):
        i += 1
    return i


def compare_tag_names(a: str, b: str) -> int:
    """TensorBoard's compareTagNames: numbers compare by value; digits and '/' sort first."""
    i = j = 0
    while True:
        if i == len(a):
            return 0 if j == len(b) else -1
        if j == len(b):
            return 1
        if _is_digit(a[i]) and _is_digit(b[j]):
            i0, j0 = i, j
            i, j = _number_end(a, i + 1), _number_end(b, j + 1)
            x, y = float(a[i0:i].rstrip(".") or 0), float(b[j0:j].rstrip(".") or 0)
            if x != y:
                return -1 if x < y else 1
            continue
        a_first, b_first = a[i] == "/" or _is_digit(a[i]), b[j] == "/" or _is_digit(b[j])
        if a_first != b_first:
            return -1 if a_first else 1
        if not a_first and a[i] != b[j]:
            return -1 if a[i] < b[j] else 1
        i += 1
        j += 1


def sections(tags: list[str]) -> list[tuple[str, list[str]]]:
    """The Time Series view's sections in display order: (name, its cards' tags)."""
    groups: dict[str, list[str]] = {}
    for tag in sorted(tags, key=cmp_to_key(compare_tag_names)):
        groups.setdefault(tag.split("/", 1)[0], []).append(tag)
    return list(groups.items())


def test_comparator_matches_tensorboards_documented_order() -> None:
    # digits and '/' before letters; numbers by value (layer 10 after layer 9)
    assert sorted(["val/loss", "train/loss", "lr", "epoch_time", "hparam/val/acc1"],
                  key=cmp_to_key(compare_tag_names)) == [
        "epoch_time", "hparam/val/acc1", "lr", "train/loss", "val/loss"]
    assert sorted(["w/10_a", "w/9_a", "w/a"], key=cmp_to_key(compare_tag_names)) == ["w/9_a", "w/10_a", "w/a"]
    assert sorted(["a_b", "a/b"], key=cmp_to_key(compare_tag_names)) == ["a/b", "a_b"]


def _get(url: str, data: bytes | None = None) -> Any:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


@pytest.fixture(scope="module")
def served_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("tbview")
    args = ["train", f"out_dir={root / 'runs'}", "data.num_train=32", "data.num_val=16", "trainer.batch_size=8",
            "trainer.epochs=2", "trainer.threads=1", "trainer.device=cpu", "trainer.progress=none",
            "trainer.log_every=2", "trainer.layer_stats=2", "model.width_mult=0.25", "trainer.channels_last=false",
            "optim=sgd"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run = next((root / "runs").glob("*/*"))
    port = free_port(0)
    try:
        proc = start_tensorboard(run, port, quiet=True)
    except (OSError, ImportError) as err:  # pragma: no cover - tensorboard is a dependency
        pytest.skip(f"tensorboard cannot start here: {err}")
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    info: Any = None
    while True:
        if proc.poll() is not None:
            pytest.skip(f"tensorboard exited with code {proc.returncode} on this machine")
        try:
            info = _get(f"{base}/data/plugin/timeseries/tags")
            if info["scalars"]["runTagInfo"] and info["images"]["tagRunSampledInfo"]:
                break
        except (urllib.error.URLError, ConnectionError, TimeoutError, KeyError):
            pass
        assert time.monotonic() < deadline, "tensorboard did not serve the run's tags within 60 s"
        time.sleep(0.3)
    yield run, base, info
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_tensorboard_opens_on_the_tasks_sections(served_run: Any) -> None:
    run, base, info = served_run
    tags = [t for run_tags in info["scalars"]["runTagInfo"].values() for t in run_tags]
    tags += list(info["images"]["tagRunSampledInfo"]) + list(info["histograms"]["runTagInfo"].get(".", []))
    for run_tags in info["histograms"]["runTagInfo"].values():
        tags += run_tags
    order = sections(tags)
    names = [name for name, _ in order]
    assert names[:2] == ["train", "val"], names  # the two sections TensorBoard expands
    train, val = order[0][1], order[1][1]
    assert train[0] == "train/loss"  # the first card
    assert {"train/lr", "train/throughput", "train/time_per_epoch"} <= set(train)
    assert {"val/acc1", "val/loss"} <= set(val)
    assert not [t for t in tags if t.startswith("hparam/")]  # no one-point cards
    assert {"watch", "watch_hist"} <= set(names[2:])  # layer statistics after the task's sections


def test_one_point_per_step_and_tag(served_run: Any) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _, _ = served_run
    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    for tag in acc.Tags()["scalars"]:
        steps = [e.step for e in acc.Scalars(tag)]
        assert len(steps) == len(set(steps)), f"{tag} has two points at one step: {steps}"


def test_hparams_are_the_chosen_keys_typed(served_run: Any) -> None:
    _, base, _ = served_run
    exp = _get(f"{base}/data/plugin/hparams/experiment", json.dumps({"experimentName": ""}).encode())
    infos = {h["name"]: h for h in exp["hparamInfos"]}
    # what the run is, and what the command line set (minus how it was run: threads, progress, ...)
    assert set(infos) == {"model.name", "data.name", "task.name", "optim.name", "data.num_train", "data.num_val",
                          "trainer.batch_size", "trainer.epochs", "model.width_mult", "trainer.channels_last"}
    assert infos["trainer.channels_last"]["type"] == "DATA_TYPE_BOOL"
    assert infos["trainer.epochs"]["type"] == "DATA_TYPE_FLOAT64"
    assert infos["optim.name"]["type"] == "DATA_TYPE_STRING"
    assert {m["name"]["tag"] for m in exp["metricInfos"]} == {"val/acc1", "val/loss"}


@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
                    reason="Chromium is not installed (apt-get install chromium)")
def test_the_page_in_a_real_browser_shows_train_and_val_first(served_run: Any) -> None:
    _, base, _ = served_run
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000",
                          "--dump-dom", f"{base}/"], capture_output=True, text=True, timeout=120).stdout
    titles = re.findall(r'class="group-title" title="([^"]+)"', dom)
    assert titles[:2] == ["train", "val"], titles
