"""vaitrain report (issue 14): one self-contained HTML page whose numbers are the runs' records,
checked as parsed HTML and, where chromium is installed, as a page a browser loads."""
from __future__ import annotations

import base64
import html.parser
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vaitrain.cli import app

SMALL = ["data.num_train=32", "data.num_val=16", "trainer.batch_size=16", "trainer.epochs=2", "trainer.threads=1",
         "trainer.device=cpu", "trainer.progress=none", "trainer.layer_stats=1"]
RUNS = {
    "plain": ["model=plain_cnn", "model.depth=4", "model.width=8", "model.down_every=2", "optim.lr=0.01"],
    "randwire": ["model=randwire_small", "model.channels=8", "model.nodes=8", "optim.lr=0.002"],
}
VOID = {"meta", "img", "br", "hr", "input", "link"}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Two real tiny runs (one with a RandWire graph, both with layer statistics) and their report."""
    root = tmp_path_factory.mktemp("report")
    runner = CliRunner()
    for overrides in RUNS.values():
        out = runner.invoke(app, ["train", *overrides, *SMALL, f"out_dir={root / 'runs'}"])
        assert out.exit_code == 0, out.output
    page = root / "report.html"
    out = runner.invoke(app, ["report", str(root / "runs"), "--out", str(page)])
    assert out.exit_code == 0, out.output
    runs = sorted(p.parent for p in (root / "runs").rglob("metrics.jsonl"))
    return page, runs


class Parsed(html.parser.HTMLParser):
    """Tags must nest and close; collects img sources, table cells with data-value, text."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.srcs: list[str] = []
        self.cells: list[tuple[str, str]] = []  # (data-value, text)
        self.text: list[str] = []
        self.rows: list[list[tuple[str | None, str]]] = []
        self._cell: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.srcs.append(a.get("src", ""))
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self._cell = a.get("data-value")
            self.rows[-1].append((self._cell, ""))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)
        if self.rows and self.stack and self.stack[-1] in ("td", "th"):
            value, text = self.rows[-1][-1]
            self.rows[-1][-1] = (value, text + data)


def parse(page: Path) -> Parsed:
    p = Parsed()
    p.feed(page.read_text())
    p.close()
    return p


def test_report_is_valid_self_contained_html(made):
    page, runs = made
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>")
    p = parse(page)
    assert not p.errors and p.stack == [], (p.errors, p.stack)
    assert not re.search(r"https?://", text)  # nothing from the network
    assert "<script" not in text and "<link" not in text
    from PIL import Image

    assert len(p.srcs) >= 6
    for src in p.srcs:
        assert src.startswith("data:image/png;base64,")
        img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        img.verify()
        assert img.size[0] > 10 and img.size[1] > 10
    words = " ".join(p.text)
    for run in runs:
        assert run.name in words
    for section in ("Config keys that differ", "Best and final metrics", "Curves", "layer statistics",
                    "RandWire graphs", "val/confusion", "val/samples"):
        assert section in words, section
    assert "model.name" in words  # the differing key


def test_report_numbers_are_the_runs_records(made):
    page, runs = made
    p = parse(page)
    header = next(r for r in p.rows if r and r[0][1] == "run" and any(t == "val/acc1.final" for _, t in r))
    cols = [t for _, t in header]
    checked = 0
    for run in runs:
        row = next(r for r in p.rows if r and r[0][1] == run.name and len(r) == len(cols))
        epochs = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()
                  if l.strip() and json.loads(l)["kind"] == "epoch"]
        for tag in ("val/acc1", "val/loss"):
            final = float(row[cols.index(f"{tag}.final")][0])
            best = float(row[cols.index(f"{tag}.best")][0])
            values = [e[tag] for e in epochs]
            assert final == pytest.approx(values[-1], rel=1e-6)  # TensorBoard keeps float32
            pick = min if tag == "val/loss" else max
            assert best == pytest.approx(pick(values), rel=1e-6)
            checked += 1
    assert checked == 4


def test_report_bad_input_is_one_line(tmp_path, made):
    runner = CliRunner()
    out = runner.invoke(app, ["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "r.html")])
    assert out.exit_code == 2 and "no run directories found" in out.output and "Traceback" not in out.output
    out = runner.invoke(app, ["report", str(made[1][0]), "--out", str(tmp_path / "r.txt")])
    assert out.exit_code == 2 and "FILE.html" in out.output
    assert not list(tmp_path.iterdir())


CHECK = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.body.setAttribute('data-images', imgs.map(i => i.complete && i.naturalWidth).join(','));
});</script>"""


def chromium(args: list[str], page: Path) -> subprocess.CompletedProcess:
    return subprocess.run([shutil.which("chromium") or "chromium", "--headless", "--no-sandbox", "--disable-gpu",
                           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium is not installed (apt-get install chromium); the HTML checks above still run")
def test_report_loads_in_headless_chromium(made, tmp_path):
    page, runs = made
    shown = chromium(["--dump-dom"], page)
    assert shown.returncode == 0, shown.stderr[-2000:]
    console = [l for l in shown.stderr.splitlines() if "CONSOLE" in l or "Uncaught" in l or "Failed to load" in l]
    assert not console, console  # the report itself logs nothing to the console
    for run in runs:  # the rendered page's text names every run
        assert run.name in shown.stdout
    # every image decodes in the browser: a copy with a check script writes naturalWidth into the DOM
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", CHECK + "</body>"))
    checked = chromium(["--dump-dom"], probe)
    widths = re.search(r'data-images="([^"]*)"', checked.stdout)
    assert widths, checked.stdout[:500]
    values = widths.group(1).split(",")
    assert len(values) == len(parse(page).srcs) and all(v.isdigit() and int(v) > 0 for v in values), values


def test_curves_have_whole_epoch_ticks(made, monkeypatch):
    """Epoch axes are ticked at whole epochs (a run of 2 epochs showed 1.0, 1.5, 2.0)."""
    import vaitrain.report as report
    from vaitrain.track.runs import load_run

    seen = []
    monkeypatch.setattr(report, "png_bytes", lambda fig, dpi=90: seen.append(fig) or b"png")
    _, runs = made
    loaded = [load_run(r) for r in runs]
    assert report.curves_png(loaded, "val/loss", []) == b"png"
    ax = seen[0].axes[0]
    ax.figure.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ax.get_xlabel() == "epoch" and ticks and all(float(t).is_integer() for t in ticks), ticks
