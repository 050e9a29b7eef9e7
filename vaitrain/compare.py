"""Reading runs back and comparing them: config diffs, best/final metrics, tables.

`find_runs` turns command-line arguments (run dirs, sweep dirs, globs) into run directories,
`load_run` reads one back, `compare` builds the rows, `render` formats them. Nothing here prints.
"""
from __future__ import annotations

import bisect
import csv
import glob
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from vaitrain.errors import ConfigError, RunDirError
from vaitrain.track.metrics_log import read_metrics
from vaitrain.track.rundir import CONFIG_FILE, METRICS_FILE, TB_DIR, is_run_dir

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
_JSONL_META = {"kind", "epoch", "step", "time", "status", "params", "wall_time"}
FORMATS = ("table", "markdown", "csv", "json")


def metric_mode(tag: str) -> str:
    """'max' or 'min': which way a metric improves, from its name (acc/iou/dice up, loss/rmse down)."""
    leaf = tag.rsplit("/", 1)[-1].lower()
    if any(w in leaf for w in _MAX_WORDS):
        return "max"
    if any(w in leaf for w in _MIN_WORDS):
        return "min"
    return "max"


@dataclass
class Series:
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    source: str = ""  # "tb" or "jsonl"


@dataclass
class Run:
    path: Path
    config: dict[str, Any]  # flattened to dotted keys
    series: dict[str, Series]  # scalar tag -> points ordered by step
    epoch_ends: list[tuple[int, int]]  # (epoch, global step at its end), from metrics.jsonl
    status: str  # completed | stopped | failed | in progress (no final record yet)
    wall_time: float | None = None
    throughput: float | None = None
    params: int | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def task(self) -> str | None:
        return self.config.get("task.name")

    @property
    def epochs_done(self) -> int:
        return self.epoch_ends[-1][0] if self.epoch_ends else 0

    @property
    def epochs_total(self) -> int | None:
        return self.config.get("trainer.epochs")

    def epoch_of(self, step: int) -> int | None:
        """The 1-based epoch a global step belongs to (None without epoch records)."""
        if not self.epoch_ends:
            return None
        ends = [s for _, s in self.epoch_ends]
        i = bisect.bisect_left(ends, step)
        return self.epoch_ends[i][0] if i < len(ends) else self.epoch_ends[-1][0] + 1

    def epoch_x(self, step: int) -> float:
        """Fractional epochs at a step (interpolated between epoch ends), for plots."""
        xs = [(0, 0.0)] + [(s, float(e)) for e, s in self.epoch_ends]
        for (s0, e0), (s1, e1) in zip(xs, xs[1:]):
            if step <= s1:
                return e0 + (e1 - e0) * (step - s0) / max(s1 - s0, 1)
        s0, e0 = xs[-2] if len(xs) > 1 else (0, 0.0)
        s1, e1 = xs[-1]
        return e1 + (step - s1) / max(s1 - s0, 1)  # the epoch in progress, at the last length


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to {'a.b.c': value}; lists stay values."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten(value, dotted))
        else:
            flat[dotted] = value
    return flat


def _float(value: Any) -> float | None:
    try:
        return float(value)  # metrics.jsonl stores non-finite values as "nan"/"inf" strings
    except (TypeError, ValueError):
        return None


def _read_tb(tb_dir: Path) -> dict[str, Series]:
    if not tb_dir.is_dir():
        return {}
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    # size_guidance 0 keeps every point (the default samples 10,000 per tag at random)
    acc = EventAccumulator(str(tb_dir), size_guidance={SCALARS: 0})
    try:
        acc.Reload()
    except Exception:  # a torn or foreign event file: fall back to metrics.jsonl
        return {}
    out: dict[str, Series] = {}
    for tag in acc.Tags().get("scalars", []):
        if tag.startswith("hparam/"):  # the HParams dashboard's copy of the final metrics
            continue
        events = sorted(acc.Scalars(tag), key=lambda e: e.step)
        out[tag] = Series([e.step for e in events], [float(e.value) for e in events], "tb")
    return out


@dataclass
class _Jsonl:
    series: dict[str, Series] = field(default_factory=dict)
    epoch_ends: list[tuple[int, int]] = field(default_factory=list)
    final: dict[str, Any] | None = None
    last_time: float | None = None


def _read_jsonl(path: Path) -> _Jsonl:
    out = _Jsonl()
    if not path.is_file():
        return out
    epoch_step: dict[int, int] = {}
    for rec in read_metrics(path):
        t = _float(rec.get("time"))
        if t is not None:
            out.last_time = t
        kind = rec.get("kind")
        if kind == "final":
            out.final = rec
            continue
        step = int(rec.get("step", 0))
        if kind == "epoch" and "epoch" in rec:
            epoch_step[int(rec["epoch"])] = step
        for key, value in rec.items():
            v = _float(value)
            if key in _JSONL_META or v is None:
                continue
            s = out.series.setdefault(key, Series(source="jsonl"))
            s.steps.append(step)
            s.values.append(v)
    for s in out.series.values():
        order = sorted(range(len(s.steps)), key=s.steps.__getitem__)
        s.steps = [s.steps[i] for i in order]
        s.values = [s.values[i] for i in order]
    out.epoch_ends = sorted(epoch_step.items())
    return out


def load_run(path: Path | str) -> Run:
    """Read a run directory back: config, scalar series (TensorBoard, else metrics.jsonl), status."""
    from omegaconf import OmegaConf

    path = Path(path)
    if not is_run_dir(path):
        raise RunDirError(f"'{path}' is not a run directory (it needs config.yaml and metrics.jsonl)")
    try:
        config = OmegaConf.to_container(OmegaConf.load(path / CONFIG_FILE), resolve=False)
    except Exception as err:
        raise RunDirError(f"cannot read '{path / CONFIG_FILE}': {str(err).splitlines()[0]}") from None
    flat = flatten(config if isinstance(config, dict) else {})
    js = _read_jsonl(path / METRICS_FILE)
    series = js.series
    for tag, tb in _read_tb(path / TB_DIR).items():
        old = series.get(tag)
        # TensorBoard flushes every few seconds, metrics.jsonl every line: while a run is going
        # on, the jsonl copy can be ahead; otherwise tensorboard's own reading is the one used.
        if old is None or not old.steps or (tb.steps and tb.steps[-1] >= old.steps[-1]):
            series[tag] = tb
    final = js.final or {}
    # no final record: still running, or killed before it could write one
    status = str(final.get("status", "completed")) if js.final is not None else "in progress"
    wall = _float(final.get("wall_time"))
    throughput = _float(final.get("train/throughput", final.get("throughput")))  # before: "throughput"
    for tag in ("train/throughput", "throughput"):
        if throughput is None and series.get(tag) and series[tag].values:
            throughput = series[tag].values[-1]
    params = final.get("params")
    return Run(
        path, flat, series, js.epoch_ends, status,
        wall_time=wall if wall is not None else js.last_time,
        throughput=throughput,
        params=int(params) if isinstance(params, (int, float)) else None,
    )


def _has_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _runs_below(folder: Path) -> list[Path]:
    """Run directories under a folder (a sweep dir, a date dir, runs/), not looking inside runs."""
    found: list[Path] = []
    try:
        children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:  # unreadable folder: nothing to find there
        return found
    for child in children:
        if is_run_dir(child):
            found.append(child)
        elif not child.is_symlink():  # no link loops
            found.extend(_runs_below(child))
    return found


def find_runs(args: Sequence[str | Path]) -> tuple[list[Path], list[str]]:
    """Run directories named by the arguments: run dirs, folders holding runs (sweeps, dates),
    globs. Returns (runs in order, without repeats; one warning line per argument skipped)."""
    runs: list[Path] = []
    warnings: list[str] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            runs.append(p)

    for arg in args:
        text = str(arg)
        paths = [Path(p) for p in sorted(glob.glob(text))] if _has_glob(text) else [Path(text)]
        if not paths:
            warnings.append(f"'{text}' matches nothing; skipped")
        for p in paths:
            if is_run_dir(p):
                add(p)
            elif not p.exists():
                warnings.append(f"'{p}' does not exist; skipped")
            elif p.is_dir() and (below := _runs_below(p)):
                for r in below:
                    add(r)
            else:
                warnings.append(f"'{p}' is not a run directory (no config.yaml + metrics.jsonl) "
                                "and holds none; skipped")
    return runs, warnings


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
    paths, warnings = find_runs(args)
    runs = []
    for p in paths:
        try:
            runs.append(load_run(p))
        except RunDirError as err:
            warnings.append(f"{err}; skipped")
    if not runs:
        why = "; ".join(warnings) if warnings else "no arguments"
        raise RunDirError(f"no run directories found ({why}); pass runs/<date>/<run>, a sweep folder or a glob")
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


def render(comp: Comparison, fmt: str = "table") -> str:
    """The comparison as text: table (rich, no colour), markdown, csv or json."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt} is not a valid choice; choose one of: {', '.join(FORMATS)}")
    cols = comp.columns
    if fmt == "json":
        out = [{c: _plain(r.get(c)) for c in cols + ["path"]} for r in comp.rows]
        return json.dumps(out, indent=2, default=str)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        for r in comp.rows:
            w.writerow(["" if r.get(c) is None else
                        (_key(r[c]) if isinstance(r[c], (list, dict)) else _plain(r[c])) for c in cols])
        return buf.getvalue().rstrip("\n")
    cells = [[_cell(c, r.get(c)) for c in cols] for r in comp.rows]
    if fmt == "markdown":
        right = [c not in ("run", "status") and c not in comp.config_keys for c in cols]
        lines = ["| " + " | ".join(cols) + " |",
                 "|" + "|".join("---:" if r else "---" for r in right) + "|"]
        lines += ["| " + " | ".join(x.replace("|", "\\|") for x in row) + " |" for row in cells]
        return "\n".join(lines)
    from rich.console import Console
    from rich.table import Table

    table = Table(show_edge=False, header_style="bold")
    for c in cols:
        numeric = c not in ("run", "status") and c not in comp.config_keys
        table.add_column(c, justify="right" if numeric else "left", no_wrap=True)
    for row in cells:
        table.add_row(*row)
    buf = io.StringIO()
    width = sum(max(len(c), *(len(r[i]) for r in cells)) + 3 for i, c in enumerate(cols)) if cells else 80
    Console(file=buf, width=max(width, 40), color_system=None, highlight=False).print(table)
    return buf.getvalue().rstrip("\n")


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

    for port in range(start, start + 100) if start else [0]:
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RunDirError(f"no free port from {start} to {start + 99}; choose one with --port")
