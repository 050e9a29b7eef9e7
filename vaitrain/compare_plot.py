"""Curves of several runs on shared axes (matplotlib, the optional extra vaitrain[plot])."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from vaitrain.compare import Metric, Run, config_diff
from vaitrain.errors import VaitrainError


def run_label(run: Run, keys: Sequence[str]) -> str:
    """Legend text: the run's values of the config keys that differ, else its folder name."""
    if not keys:
        return run.name
    return ", ".join(f"{k}={run.config.get(k, '-')}" for k in keys)


def plot_runs(runs: Sequence[Run], metrics: Sequence[Metric], path: Path | str) -> Any:
    """One subplot per metric, one line per run; saved as PNG to `path`. Returns the Figure."""
    try:
        import matplotlib
    except ImportError:
        raise VaitrainError("--plot needs matplotlib: install vaitrain[plot] (pip install 'vaitrain[plot]')") from None
    matplotlib.use("Agg")  # files only, no display needed
    from matplotlib.figure import Figure

    keys = config_diff(runs)
    by_epoch = all(r.epoch_ends for r in runs)  # one x unit for all runs
    n = max(len(metrics), 1)
    fig = Figure(figsize=(6.4, 3.2 * n), layout="constrained")
    axes = fig.subplots(n, 1, squeeze=False, sharex=True)[:, 0]
    for ax, metric in zip(axes, metrics):
        for i, run in enumerate(runs):
            s = run.series.get(metric.tag)
            if s is None or not s.values:
                continue
            xs = [run.epoch_x(st) for st in s.steps] if by_epoch else s.steps
            ax.plot(xs, s.values, marker="o" if len(xs) < 30 else None, markersize=3,
                    color=f"C{i % 10}", label=run_label(run, keys))  # same colour in every subplot
        ax.set_title(f"{metric.tag} ({metric.mode} is better)")
        ax.set_ylabel(metric.tag)
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel("epoch" if by_epoch else "step")
    legend: dict[str, Any] = {}  # one entry per run, even if its first subplot has no line
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="outside lower center", fontsize="small")
    try:
        fig.savefig(str(path), format="png", dpi=100)
    except OSError as err:
        raise VaitrainError(f"cannot write the plot '{path}': {err.strerror or err}") from None
    return fig
