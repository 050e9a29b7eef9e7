"""TensorBoard's own views of vaitrain runs: a real server's HTTP API, and the HParams records."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from fake_runs import merged, write_run
from vaitrain.compare import common_parent, free_port, start_tensorboard, tensorboard_command


def read_hparams(tb_dir: Path) -> dict[str, Any]:
    """The HParams plugin's records in a run's event files, decoded with tensorboard's protos."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    data = {tag: plugin_data_pb2.HParamsPluginData.FromString(raw) for tag, raw in content.items()}
    start = data["_hparams_/session_start_info"].session_start_info
    exp = data["_hparams_/experiment"].experiment
    values = {}
    for key, value in start.hparams.items():
        kind = value.WhichOneof("kind")
        values[key] = getattr(value, kind)
    return {"hparams": values, "metrics": [m.name.tag for m in exp.metric_infos],
            "scalars": acc.Tags()["scalars"]}


def test_hparams_written_by_tbwriter_are_readable(tmp_path: Path) -> None:
    run = write_run(tmp_path, {"val/acc1": [0.5, 0.75], "val/loss": [1.0, 0.5]}, hparams=True,
                    config=merged(**{"optim.name": "adam", "optim.lr": 0.003}))
    hp = read_hparams(run / "tb")
    assert hp["hparams"] == {"optim.name": "adam", "optim.lr": 0.003}
    assert sorted(hp["metrics"]) == ["val/acc1", "val/loss"]  # the run's own tags, whose last values HParams shows
    assert not [t for t in hp["scalars"] if t.startswith("hparam/")]  # no one-point cards


def _get(url: str, data: bytes | None = None) -> Any:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.load(resp)


def test_real_tensorboard_server_lists_runs_and_tags(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    runs = [
        write_run(root, {"val/acc1": [0.1, 0.2], "val/loss": [2.0, 1.5]}, train_loss=[2.5], hparams=True,
                  config=merged(**{"optim.name": name}), name=f"job{i:02d}")
        for i, name in enumerate(("sgd", "adam"))
    ]
    logdir = common_parent(runs)
    assert logdir == root.resolve()
    port = free_port(0)
    assert tensorboard_command(logdir, port) == [
        "tensorboard", "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port)]
    proc = start_tensorboard(logdir, port, quiet=True)
    base = f"http://127.0.0.1:{port}"
    try:
        found: list[str] = []
        deadline = time.monotonic() + 60
        while len(found) < len(runs):  # the server loads the event files in the background
            assert proc.poll() is None, "tensorboard exited"
            assert time.monotonic() < deadline, f"tensorboard did not list the runs in 60 s: {found}"
            try:
                found = _get(f"{base}/data/runs")
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.3)
        assert sorted(found) == sorted(f"{r.name}/tb" for r in runs)
        tags = _get(f"{base}/data/plugin/scalars/tags")
        for r in runs:
            assert {"val/acc1", "val/loss", "train/loss", "lr", "throughput"} <= set(tags[f"{r.name}/tb"])
        # the HParams dashboard's API sees the hyper-parameters and the final metrics
        exp = _get(f"{base}/data/plugin/hparams/experiment", json.dumps({"experimentName": ""}).encode())
        assert {h["name"] for h in exp["hparamInfos"]} == {"optim.name", "optim.lr"}
        assert {m["name"]["tag"] for m in exp["metricInfos"]} == {"val/acc1", "val/loss"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except Exception:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.parametrize("n", [1, 2])
def test_common_parent(tmp_path: Path, n: int) -> None:
    a, b = tmp_path / "d1" / "run_a", tmp_path / "d2" / "run_b"
    assert common_parent([a, b][:n]) == (tmp_path / "d1" if n == 1 else tmp_path)
