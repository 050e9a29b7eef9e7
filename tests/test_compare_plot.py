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
    # (optim.lr differs too, but each optimizer ran with one lr: the legend names what was varied)
    assert labels == ["optim=sgd", "optim=adam", "optim=adamw", "optim=alrao"]
    assert axes[0].get_lines()[1].get_color() == axes[1].get_lines()[1].get_color()


def test_missing_matplotlib_is_one_clear_error(tmp_path: Path, runs: list, monkeypatch: pytest.MonkeyPatch) -> None:
    from vaitrain.compare_plot import plot_runs

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(VaitrainError, match=r"needs matplotlib, the plot extra: .* -m pip install .*\[plot\]"):
        plot_runs(runs, compare(runs).metrics, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plot_reads_well(tmp_path: Path) -> None:
    """Whole-number epoch ticks, a log loss axis when a run diverged, train/loss dashed beside
    val/loss, and a legend of the keys that were varied (a key that follows another is left out)."""
    from vaitrain.compare_plot import plot_runs, telling_keys

    root = tmp_path / "r"
    paths = [write_run(root, {"val/acc1": [0.1, 0.5, 0.6], "val/loss": loss}, train_loss=[2.5, 2.0, 1.5], tb=False,
                       config=merged(**{"optim.name": name, "optim.lr": lr, "norm.name": norm}))
             for name, lr, norm, loss in (("sgd", 0.1, "batch", [900.0, 200.0, 90.0]),
                                          ("sgd", 0.1, "group", [2.0, 1.0, 0.9]),
                                          ("adam", 0.001, "batch", [2.1, 1.2, 0.8]))]
    runs = [load_run(p) for p in paths]
    assert telling_keys(runs, ["optim.name", "optim.lr", "norm.name"]) == ["optim.name", "norm.name"]
    fig = plot_runs(runs, compare(runs).metrics, tmp_path / "c.png")
    acc, loss = fig.get_axes()
    assert loss.get_yscale() == "log" and acc.get_yscale() == "linear"
    ticks = [t for t in loss.get_xticks() if 1 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks)
    dashed = [l for l in loss.get_lines() if l.get_linestyle() == "--"]
    assert len(dashed) == 3 and "dashed: train/loss" in loss.get_title()
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["optim=sgd, norm=batch", "optim=sgd, norm=group", "optim=adam, norm=batch"]


def test_install_hint_fits_a_source_checkout() -> None:
    import vaitrain
    from vaitrain.compare_plot import install_hint

    source = Path(vaitrain.__file__).resolve().parent.parent
    assert install_hint("plot") == f"{sys.executable} -m pip install -e '{source}[plot]'"
