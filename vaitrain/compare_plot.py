"""Curves of several runs on shared axes (matplotlib, the optional extra vaitrain[plot]).

One subplot per metric, one colour per run; a val/ metric's train/ twin (val/loss -> train/loss)
is drawn dashed in the same colour; epochs on whole-number ticks; losses on a log axis when they
span more than a factor of 10; the legend names only the keys that tell the runs apart.
"""
from __future__ import annotations

import io
import math
import sys
from pathlib import Path
from typing import Any, Sequence

from vaitrain.compare import Metric, Run, config_diff
from vaitrain.errors import VaitrainError


def run_label(run: Run, keys: Sequence[str]) -> str:
    """Legend text: the run's values of the config keys that differ, else its folder name;
    a group's choice `optim.name=sgd` reads `optim=sgd`."""
    if not keys:
        return run.name
    return ", ".join(f"{k[:-5] if k.endswith('.name') else k}={run.config.get(k, '-')}" for k in keys)


def telling_keys(runs: Sequence[Run], keys: Sequence[str]) -> list[str]:
    """The differing keys minus those the earlier ones already determine (optim.lr follows
    optim=sgd|adam when each optimizer ran with its default): the legend then says what was varied."""
    kept: list[str] = []
    for key in keys:
        seen: dict[tuple, str] = {}
        determined = bool(kept)
        for run in runs:
            given = tuple(str(run.config.get(k)) for k in kept)
            value = str(run.config.get(key))
            if seen.setdefault(given, value) != value:
                determined = False
                break
        if not determined:
            kept.append(key)
    return kept


def install_hint(extra: str) -> str:
    """The command that installs an extra the way this vaitrain was installed."""
    import vaitrain

    source = Path(vaitrain.__file__).resolve().parent.parent
    pip = f"{sys.executable} -m pip install"
    if (source / "pyproject.toml").is_file():  # a source checkout (pip install -e .)
        return f"{pip} -e '{source}[{extra}]'"
    return f"{pip} 'vaitrain[{extra}]'"


def _train_twin(tag: str) -> str | None:
    return "train/" + tag[4:] if tag.startswith("val/") else None


def plot_runs(runs: Sequence[Run], metrics: Sequence[Metric], path: Path | str) -> Any:
    """One subplot per metric, one line per run; saved as PNG to `path`. Returns the Figure."""
    from vaitrain.track.rundir import check_output

    check_output("--plot", Path(path))
    try:
        import matplotlib
    except ImportError:
        raise VaitrainError(f"--plot needs matplotlib, the plot extra: {install_hint('plot')}") from None
    matplotlib.use("Agg")  # files only, no display needed
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    keys = telling_keys(runs, config_diff(runs))
    by_epoch = all(r.epoch_ends for r in runs)  # one x unit for all runs
    n = max(len(metrics), 1)
    fig = Figure(figsize=(6.4, 3.2 * n), layout="constrained")
    axes = fig.subplots(n, 1, squeeze=False, sharex=True)[:, 0]
    for ax, metric in zip(axes, metrics):
        values: list[float] = []
        twin = _train_twin(metric.tag)
        drew_twin = False
        for i, run in enumerate(runs):
            for tag, style in ((metric.tag, "-"), (twin, "--")):
                s = run.series.get(tag) if tag else None
                if s is None or not s.values:
                    continue
                xs = [run.epoch_x(st) for st in s.steps] if by_epoch else s.steps
                ax.plot(xs, s.values, style, marker="o" if len(xs) < 30 and style == "-" else None, markersize=3,
                        color=f"C{i % 10}", label=run_label(run, keys) if style == "-" else None,
                        alpha=1.0 if style == "-" else 0.6)  # same colour in every subplot
                values += [v for v in s.values if math.isfinite(v)]
                drew_twin |= style == "--"
        title = f"{metric.tag} ({metric.mode} is better)" + (f"; dashed: {twin}" if drew_twin else "")
        ax.set_title(title, fontsize="medium")
        ax.set_ylabel(metric.tag)
        ax.grid(True, alpha=0.3)
        if metric.mode == "min" and values and min(values) > 0 and max(values) / min(values) > 10:
            ax.set_yscale("log")  # a diverging run would flatten every other curve
    axes[-1].set_xlabel("epoch" if by_epoch else "step")
    if by_epoch:
        axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # 1 epoch: tick 1, not 0.945, ...
    legend: dict[str, Any] = {}  # one entry per run, even if its first subplot has no line
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="outside lower center", fontsize="small",
                   ncols=2 if len(legend) > 3 and max(map(len, legend)) < 40 else 1)
    from vaitrain.track.files import write_bytes_atomic

    try:  # into memory, then renamed over the target: a full disk or a stop signal never leaves half a PNG
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        write_bytes_atomic(Path(path), buf.getvalue())
    except OSError as err:
        raise VaitrainError(f"cannot write the plot '{path}': {err.strerror or err}") from None
    return fig
