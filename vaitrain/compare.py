"""Comparing runs: config diffs, best/final metrics, tables (and starting TensorBoard on them).

Runs are read by vaitrain.track.runs (`find_runs` turns command-line arguments into run
directories, `load_run` reads one back); `compare` builds the rows, `render` formats them.
Nothing here prints.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from vaitrain.errors import ConfigError, RunDirError
from vaitrain.track.runs import Run, find_runs, load_run, load_runs  # noqa: F401 - find_runs, load_run re-exported

# The validation metric each task is judged by (val/<metric>), as the tasks' main_metric.
MAIN_METRIC = {"classification": "acc1", "segmentation": "miou", "regression": "rmse"}

# Bookkeeping keys: where a run was written or how it logged, not what it trained.
IGNORED_KEYS = frozenset(
    {
        "out_dir",
        "resume",
        "name",
        "trainer.progress",
        "trainer.stop_after",
        "trainer.checkpoint_every",
        "trainer.log_every",
        "trainer.image_every",
        "bench.out",
    }
)

_MIN_WORDS = ("loss", "rmse", "mse", "mae", "nll", "err", "time")
_MAX_WORDS = ("acc", "iou", "dice", "throughput", "top")
FORMATS = ("table", "markdown", "csv", "json")


def metric_mode(tag: str) -> str:
    """'max' or 'min': which way a metric improves, from its name (acc/iou/dice up, loss/rmse down)."""
    leaf = tag.rsplit("/", 1)[-1].lower()
    if leaf == "best_of_k":  # the error of the closest of K means: lower is better
        return "min"
    if any(w in leaf for w in _MAX_WORDS):
        return "max"
    if any(w in leaf for w in _MIN_WORDS):
        return "min"
    return "max"


# ----------------------------------------------------------------------------- comparison


@dataclass
class Metric:
    tag: str
    mode: str  # max | min


@dataclass
class Comparison:
    columns: list[str]
    rows: list[dict[str, Any]]
    config_keys: list[str]  # the config keys whose values differ between the runs
    metrics: list[Metric]


def parse_metric(text: str) -> Metric:
    """'val/acc1', 'acc1' (taken as val/acc1 unless a run has a tag 'acc1') or 'tag:min|max'."""
    tag, _, mode = text.partition(":")
    if mode and mode not in ("min", "max"):
        raise ConfigError(f"metric '{text}': the mode after ':' must be min or max")
    return Metric(tag, mode or metric_mode(tag))


def default_metrics(runs: Sequence[Run]) -> list[Metric]:
    tags: list[str] = []
    for run in runs:
        main = MAIN_METRIC.get(run.task or "")
        for tag in ([f"val/{main}"] if main else []) + ["val/loss"]:
            if tag not in tags:
                tags.append(tag)
    return [Metric(t, metric_mode(t)) for t in tags]


def _resolve_metrics(runs: Sequence[Run], names: Sequence[str]) -> list[Metric]:
    known = sorted({t for r in runs for t in r.series})
    metrics = []
    for name in names:
        m = parse_metric(name)
        if m.tag not in known and f"val/{m.tag}" in known:
            m = Metric(f"val/{m.tag}", m.mode if ":" in name else metric_mode(m.tag))
        if m.tag not in known:
            raise ConfigError(f"no run has the metric '{m.tag}'; available: {', '.join(known) or 'none'}")
        metrics.append(m)
    return metrics


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def config_diff(runs: Sequence[Run], ignore: Iterable[str] = IGNORED_KEYS) -> list[str]:
    """Config keys whose values are not the same in every run (a key a run lacks counts as a
    difference), in the order of the first run's config."""
    ignore = set(ignore)
    keys: list[str] = []
    for run in runs:
        keys.extend(k for k in run.config if k not in keys)
    return [k for k in keys if k not in ignore
            and len({_key(r.config.get(k, "<absent>")) for r in runs}) > 1]


def best_final(run: Run, metric: Metric) -> tuple[float | None, float | None, int | None]:
    """(best value, final value, epoch of the best) of a metric in a run; the first best wins."""
    s = run.series.get(metric.tag)
    if s is None or not s.values:
        return None, None, None
    finite = [(v, st) for v, st in zip(s.values, s.steps) if math.isfinite(v)]
    final = s.values[-1]
    if not finite:
        return None, final, None
    pick = max if metric.mode == "max" else min
    best, step = pick(finite, key=lambda p: p[0])  # max/min return the first extreme
    return best, final, run.epoch_of(step)


def compare(runs: Sequence[Run], metrics: Sequence[str] = (), sort: str | None = None) -> Comparison:
    """One row per run: the differing config keys, each metric's best/final/best epoch, then
    wall time, img/s and params. `sort`: a column or metric name; a leading '-' reverses."""
    chosen = _resolve_metrics(runs, metrics) if metrics else default_metrics(runs)
    keys = config_diff(runs)
    columns = ["run", "status", "epochs", *keys]
    for m in chosen:
        columns += [f"{m.tag}.best", f"{m.tag}.final", f"{m.tag}.best_epoch"]
    columns += ["wall_time", "img_per_s", "params"]
    rows = []
    for run in runs:
        total = run.epochs_total
        row: dict[str, Any] = {
            "run": run.name,
            "status": run.status,
            "epochs": f"{run.epochs_done}/{total}" if total else str(run.epochs_done),
        }
        row.update({k: run.config.get(k) for k in keys})
        for m in chosen:
            best, final, epoch = best_final(run, m)
            row.update({f"{m.tag}.best": best, f"{m.tag}.final": final, f"{m.tag}.best_epoch": epoch})
        row.update({"wall_time": run.wall_time, "img_per_s": run.throughput, "params": run.params,
                    "path": str(run.path)})
        rows.append(row)
    if sort:
        rows = _sorted(rows, columns, chosen, sort)
    return Comparison(columns, rows, keys, list(chosen))


def _sorted(rows: list[dict[str, Any]], columns: list[str], metrics: list[Metric], spec: str) -> list[dict[str, Any]]:
    reverse = spec.startswith("-")
    name = spec.lstrip("-")
    modes = {m.tag: m.mode for m in metrics}
    if name in modes or f"val/{name}" in modes:
        name = f"{name if name in modes else 'val/' + name}.best"
    if name not in columns:
        raise ConfigError(f"cannot sort by '{spec}'; choose a metric or one of: {', '.join(columns)}")
    tag, _, part = name.rpartition(".")
    if tag in modes and part in ("best", "final") and modes[tag] == "max":
        reverse = not reverse  # best first
    present = [r for r in rows if r.get(name) is not None]
    missing = [r for r in rows if r.get(name) is None]  # always last
    try:
        present.sort(key=lambda r: r[name], reverse=reverse)
    except TypeError:  # mixed types in a config column
        present.sort(key=lambda r: str(r[name]), reverse=reverse)
    return present + missing


@dataclass
class CompareResult:
    runs: list[Run]
    comparison: Comparison
    warnings: list[str]  # one line per argument or folder skipped


def compare_paths(args: Sequence[str | Path], metrics: Sequence[str] = (), sort: str | None = None) -> CompareResult:
    """find_runs + load_run + compare, for compare-runs and the end of a sweep. A folder that
    cannot be read is a warning; no run at all is an error."""
    runs, warnings = load_runs(args)
    return CompareResult(runs, compare(runs, metrics, sort), warnings)


# ----------------------------------------------------------------------------- output


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if column == "params" and isinstance(value, int):
        return f"{value:,}"
    if column == "wall_time" and isinstance(value, float):
        return f"{value:.1f}s"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return _key(value)
    return str(value)


def _plain(value: Any) -> Any:
    """JSON/CSV value: non-finite floats as strings (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def render(comp: Comparison, fmt: str = "table", width: int | None = None) -> str:
    """The comparison as text: table (rich, no colour), markdown, csv or json. A table is fitted
    to `width` columns (compare_table.py); None: every column in full (--wide)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt} is not a valid choice; choose one of: {', '.join(FORMATS)}")
    cols = comp.columns
    if fmt == "json":
        out = [{c: _plain(r.get(c)) for c in cols + ["path"]} for r in comp.rows]
        return json.dumps(out, indent=2, default=str)
    if fmt == "csv":
        from vaitrain.csv_cells import csv_text  # cells a spreadsheet would run as formulas are quoted

        return csv_text(cols, [["" if r.get(c) is None else
                                (_key(r[c]) if isinstance(r[c], (list, dict)) else _plain(r[c])) for c in cols]
                               for r in comp.rows]).rstrip("\n")
    cells = [[_cell(c, r.get(c)) for c in cols] for r in comp.rows]
    if fmt == "markdown":
        right = [c not in ("run", "status") and c not in comp.config_keys for c in cols]
        lines = ["| " + " | ".join(cols) + " |",
                 "|" + "|".join("---:" if r else "---" for r in right) + "|"]
        lines += ["| " + " | ".join(x.replace("|", "\\|") for x in row) + " |" for row in cells]
        return "\n".join(lines)
    from vaitrain.compare_table import render_table

    right = [c not in ("run", "status") and c not in comp.config_keys for c in cols]
    return render_table(cols, cells, right, width)


# ----------------------------------------------------------------------------- TensorBoard


def common_parent(paths: Sequence[Path]) -> Path:
    """The deepest folder holding every path (TensorBoard's --logdir for them all)."""
    import os

    resolved = [str(Path(p).resolve()) for p in paths]
    if len(resolved) == 1:
        return Path(resolved[0]).parent
    return Path(os.path.commonpath(resolved))


def tensorboard_command(logdir: Path, port: int, host: str = "127.0.0.1") -> list[str]:
    """The documented `tensorboard --logdir DIR --host 127.0.0.1 --port P` line, as argv."""
    return ["tensorboard", "--logdir", str(logdir), "--host", host, "--port", str(port)]


def start_tensorboard(logdir: Path, port: int, host: str = "127.0.0.1", quiet: bool = False) -> Any:
    """Start TensorBoard (this interpreter's, so no activated venv is needed) as a subprocess."""
    import subprocess
    import sys

    argv = [sys.executable, "-m", "tensorboard.main", *tensorboard_command(logdir, port, host)[1:]]
    out = subprocess.DEVNULL if quiet else None
    return subprocess.Popen(argv, stdout=out, stderr=out)


def free_port(start: int = 6006, host: str = "127.0.0.1") -> int:
    """The first port from `start` that can be bound on host (0 for any free one)."""
    import socket

    for port in range(start, min(start + 100, 65536)) if start else [0]:  # bind() takes 0-65535
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RunDirError(f"no free port from {start} to {min(start + 99, 65535)}; choose one with --port")
