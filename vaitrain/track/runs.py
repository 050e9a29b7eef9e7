"""Reading run directories back, in one place: the overrides a run was started with (resume,
`vaitrain eval`), its config as dotted keys, its scalar series (TensorBoard events, metrics.jsonl),
epochs and status (`load_run`), and which arguments name runs (`find_runs`)."""
from __future__ import annotations

import bisect
import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from vaitrain.errors import RunDirError
from vaitrain.track.metrics_log import read_metrics
from vaitrain.track.rundir import CONFIG_FILE, METRICS_FILE, OVERRIDES_FILE, TB_DIR, check_run_files, is_run_dir

# metrics.jsonl keys that describe a record rather than measure something
_JSONL_META = {"kind", "epoch", "step", "time", "status", "params", "wall_time"}


def saved_overrides(run_dir: Path) -> list[str]:
    """The command-line overrides a run was started with (overrides.txt), without its resume=."""
    saved_file = Path(run_dir) / OVERRIDES_FILE
    if not saved_file.is_file():  # every run writes one (empty when run with the defaults)
        raise RunDirError(f"{saved_file} is missing: the run's settings cannot be re-created without it; write "
                          "the run's command-line overrides into it, one per line (an empty file for the defaults)")
    try:
        # utf-8-sig: an overrides.txt saved by Windows Notepad starts with a byte-order mark
        lines = saved_file.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise RunDirError(f"cannot read {saved_file} ({getattr(err, 'strerror', None) or err}): it should hold the "
                          "run's overrides, one per line, as UTF-8 text") from None
    saved = [l.strip() for l in lines if l.strip() and not l.lstrip().startswith("#")]  # "# resumed at ..." notes
    return [o for o in saved if not o.startswith("resume=")]


def config_from_yaml(text: str, where: str) -> Any:
    """A run's saved config (config.yaml, or its copy in a checkpoint) as plain containers. YAML
    aliases are refused before anything is built: vaitrain never writes them, and a few lines of
    nested aliases expand to billions of values (a 'billion laughs' file). Tags such as
    !!python/object are refused by the safe loader. Any failure is one RunDirError naming `where`."""
    import yaml
    from omegaconf import OmegaConf

    try:
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader)):
            raise RunDirError(f"'{where}' uses YAML aliases (*name), which vaitrain never writes: refused (they can "
                              "expand without bound); restore the file vaitrain wrote")
        return OmegaConf.to_container(OmegaConf.create(text), resolve=False) if text.strip() else {}
    except RunDirError:
        raise
    except Exception as err:  # YAML syntax, a tag, a top level OmegaConf cannot hold
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RunDirError(f"cannot read '{where}': {first}") from None


def printable(value: Any) -> Any:
    """Text from a run's files shown escaped where it is not printable: a config value holding
    terminal escapes (ESC ] 0; ... sets the window title, ESC [2J clears it) must not reach the
    terminal through compare-runs. Other values are returned as they are."""
    if not isinstance(value, str) or value.isprintable():
        return value
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)


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
        return printable(self.path.name)

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
    path = Path(path)
    if not is_run_dir(path):
        raise RunDirError(f"'{path}' is not a run directory (it needs config.yaml and metrics.jsonl)")
    check_run_files(path, folders=False)
    try:
        text = (path / CONFIG_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise RunDirError(f"cannot read '{path / CONFIG_FILE}': {err}") from None
    config = config_from_yaml(text, str(path / CONFIG_FILE))
    flat = {printable(k): printable(v) for k, v in flatten(config if isinstance(config, dict) else {}).items()}
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
    """Run directories under a folder (a sweep dir, a date dir, runs/), not looking inside runs; in
    sorted order, depth first, without recursion (a tree thousands of folders deep is no crash)."""
    def children(parent: Path) -> Iterator[Path]:
        try:
            return iter(sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")))
        except OSError:  # unreadable folder: nothing to find there
            return iter(())

    found: list[Path] = []
    stack = [children(folder)]
    while stack:
        child = next(stack[-1], None)
        if child is None:
            stack.pop()
        elif is_run_dir(child):
            found.append(child)
        elif not child.is_symlink():  # no link loops
            stack.append(children(child))
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


def load_runs(paths: Sequence[str | Path]) -> tuple[list[Run], list[str]]:
    """find_runs + load_run: the runs and the warning lines (arguments that hold no run, folders
    that cannot be read). No run at all is an error."""
    found, warnings = find_runs(paths)
    runs = []
    for p in found:
        try:
            runs.append(load_run(p))
        except RunDirError as err:
            warnings.append(f"{err}; skipped")
    if not runs:
        why = "; ".join(warnings) if warnings else "no arguments"
        raise RunDirError(f"no run directories found ({why}); pass runs/<date>/<run>, a sweep folder or a glob")
    return runs, warnings
