"""--plot: a PNG with one subplot per metric and one line per run, legend from differing keys."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fake_runs import merged, write_run
from vaitrain.compare import compare, load_run
from vaitrain.errors import VaitrainError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list:
    root = tmp_path_factory.mktemp("plot")
    paths = [
        write_run(root, {"val/acc1": [0.1, 0.5, 0.6], "val/loss": [2.0, 1.0, 0.9]}, tb=False,
                  config=merged(**{"optim.name": name, "optim.lr": lr}))
        for name, lr in (("sgd", 0.1), ("adam", 0.001), ("adamw", 0.001))
    ]
    # a run without val/loss: its line is missing from that subplot only
    paths.append(write_run(root, {"val/acc1": [0.2, 0.3]}, tb=False, config=merged(**{"optim.name": "alrao"})))
    return [load_run(p) for p in paths]


def test_png_with_one_line_per_run(tmp_path: Path, runs: list) -> None:
    from vaitrain.compare_plot import plot_runs

    metrics = compare(runs).metrics
    out = tmp_path / "curves.png"
    fig = plot_runs(runs, metrics, out)
    assert out.read_bytes()[:8] == PNG_SIGNATURE and out.stat().st_size > 1000
    axes = fig.get_axes()
    assert [ax.get_title().split()[0] for ax in axes] == ["val/acc1", "val/loss"]
    assert [len(ax.get_lines()) for ax in axes] == [4, 3]
    # x is the epoch: points at 1, 2, 3
    assert list(axes[0].get_lines()[0].get_xdata()) == [1.0, 2.0, 3.0]
    assert list(axes[0].get_lines()[0].get_ydata()) == [0.1, 0.5, 0.6]
    # one legend entry per run, from the config keys that differ; the same colour in each subplot
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["optim.name=sgd, optim.lr=0.1", "optim.name=adam, optim.lr=0.001",
                      "optim.name=adamw, optim.lr=0.001", "optim.name=alrao, optim.lr=0.1"]
    assert axes[0].get_lines()[1].get_color() == axes[1].get_lines()[1].get_color()


def test_missing_matplotlib_is_one_clear_error(tmp_path: Path, runs: list, monkeypatch: pytest.MonkeyPatch) -> None:
    from vaitrain.compare_plot import plot_runs

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(VaitrainError, match=r"install vaitrain\[plot\]"):
        plot_runs(runs, compare(runs).metrics, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
