"""`vaitrain report`: one self-contained HTML page for any runs or sweeps.

Everything is inside the file: plots are drawn with matplotlib (the extra vaitrain[plot], Agg
backend) and embedded as base64 PNG data URIs, TensorBoard's own sample images (confusion
matrices, predictions, segmentation overlays, RandWire graphs) are copied in as the PNGs they were
stored as, and the page has no script, stylesheet or font from elsewhere: it opens offline.

Sections: the runs, the config keys that differ, the best/final table (each number also in a
`data-value` attribute, exactly as read from the run's records), curves per metric, images per
run, predicted densities of Gaussian/MDN regression runs, layer statistics (a heat map of the
gradient norm by layer x step) and RandWire graphs. Nothing here prints.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from vaitrain.compare import Comparison, compare
from vaitrain.track.runs import Run, load_runs
from vaitrain.errors import RunDirError, VaitrainError
from vaitrain.track.files import write_text_atomic

WATCH_PREFIX = "watch/"  # trainer.layer_stats tags: watch/<stat>/<NNN>_<layer>
MAX_IMAGE_TAGS = 6  # per run: the newest image of each of the first few tags


def esc(text: Any) -> str:
    """HTML-escaped text; '://' broken with an entity so no http(s) URL appears in the page."""
    return html.escape(str(text)).replace("://", ":&#47;&#47;")


def figure(**kwargs: Any) -> Any:
    """A matplotlib Figure without pyplot (no display, no global state)."""
    try:
        import matplotlib
    except ImportError:
        raise VaitrainError("reports need matplotlib: install vaitrain[plot] (pip install 'vaitrain[plot]')") from None
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(layout="constrained", **kwargs)


def png_bytes(fig: Any, dpi: int = 90) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def img_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def table_html(columns: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    """A table; a float cell carries its exact value in data-value (what the tests compare)."""
    out = [f'<div class="scroll"><table class="{cls}"><thead><tr>' + "".join(f"<th>{esc(c)}</th>" for c in columns) + "</tr></thead><tbody>"]
    for row in rows:
        cells = []
        for v in row:
            attr = f' data-value="{v!r}"' if isinstance(v, float) else ""
            cells.append(f"<td{attr}>{esc(fmt(v))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


# ----------------------------------------------------------------------------- plots


def run_label(run: Run, keys: Sequence[str], limit: int = 60) -> str:
    """Legend text: the run's values of the differing keys, or its folder name when that is long."""
    text = ", ".join(f"{k}={run.config.get(k, '-')}" for k in keys)
    return text if keys and len(text) <= limit else run.name


def curve_tags(runs: Sequence[Run]) -> list[str]:
    """Scalar tags worth a curve: every train/val/test tag, layer statistics apart."""
    tags: list[str] = []
    for run in runs:
        tags.extend(t for t in run.series if t not in tags and not t.startswith(WATCH_PREFIX))
    return sorted(tags, key=lambda t: (not t.startswith("val/"), t))


LEGEND_INSIDE = 8  # a curves plot of more runs puts its legend below the axes


def curves_png(runs: Sequence[Run], tag: str, keys: Sequence[str]) -> bytes | None:
    """One metric, one line per run, against epochs (steps when a run has no epoch records);
    log y for losses spanning more than a decade."""
    from vaitrain.compare import metric_mode

    fig = figure(figsize=(6.4, 3.4))
    ax = fig.subplots()
    by_epoch = all(r.epoch_ends for r in runs)
    drawn, values = 0, []
    for i, run in enumerate(runs):
        s = run.series.get(tag)
        if s is None or not s.values:
            continue
        xs = [run.epoch_x(st) for st in s.steps] if by_epoch else s.steps
        ax.plot(xs, s.values, marker="o" if len(xs) < 30 else None, markersize=3, color=f"C{i % 10}",
                label=run_label(run, keys))
        values += [v for v in s.values if math.isfinite(v)]
        drawn += 1
    if not drawn:
        return None
    if values and min(values) > 0 and max(values) / min(values) > 30:
        ax.set_yscale("log")
    ax.set_title(f"{tag} ({metric_mode(tag)} is better)" if tag.startswith(("val", "test")) else tag)
    ax.set_xlabel("epoch" if by_epoch else "step")
    if by_epoch:  # whole epochs on the axis (train points between them stay where they fall)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # 1 epoch: tick 1, not 0.945, 0.96, ...
    ax.grid(True, alpha=0.3)
    if drawn <= LEGEND_INSIDE:
        ax.legend(fontsize="small")
    else:  # inside, 40 runs' names covered the curves (and collapsed the layout): below them instead
        fig.set_figheight(3.4 + 0.14 * drawn)  # one column: two of long run names are wider than the plot
        fig.legend(loc="outside lower center", fontsize="x-small")
    return png_bytes(fig)


def watch_series(run: Run, stat: str) -> tuple[list[str], list[int], list[list[float]]]:
    """(layer names in depth order, steps, values[layer][step]) of a layer statistic
    (grad_norm, act_std, act_mean) recorded with trainer.layer_stats; NaN where missing."""
    prefix = f"{WATCH_PREFIX}{stat}/"
    tags = sorted(t for t in run.series if t.startswith(prefix))
    steps = sorted({st for t in tags for st in run.series[t].steps})
    grid = []
    for t in tags:
        s = dict(zip(run.series[t].steps, run.series[t].values))
        grid.append([s.get(st, math.nan) for st in steps])
    return [t[len(prefix):] for t in tags], steps, grid


def layer_stats_png(run: Run) -> bytes | None:
    """Heat map of the weight-gradient norm by layer x step (log colour), and the activation std
    by depth at the first, middle and last recorded steps."""
    layers, steps, grid = watch_series(run, "grad_norm")
    if not layers or not steps:
        return None
    import numpy as np
    from matplotlib.colors import LogNorm

    data = np.array(grid, dtype=float)
    positive = data[np.isfinite(data) & (data > 0)]
    fig = figure(figsize=(11, max(3.2, 0.18 * len(layers) + 1.5)))
    ax_heat, ax_depth = fig.subplots(1, 2, width_ratios=[3, 2])
    norm = LogNorm(vmin=positive.min(), vmax=positive.max()) if positive.size else None
    im = ax_heat.imshow(np.where(data > 0, data, np.nan), aspect="auto", origin="lower", norm=norm,
                        cmap="viridis", extent=(-0.5, len(steps) - 0.5, 0.5, len(layers) + 0.5))
    ticks = np.linspace(0, len(steps) - 1, min(len(steps), 6)).round().astype(int)
    ax_heat.set_xticks(ticks, [str(steps[i]) for i in ticks])
    ax_heat.set_xlabel("step")
    ax_heat.set_ylabel("layer (input side at the bottom)")
    ax_heat.set_title("gradient norm of each layer's weight, by step")
    fig.colorbar(im, ax=ax_heat, label="||grad W|| (log)")
    a_layers, a_steps, a_grid = watch_series(run, "act_std")
    depth = list(range(1, len(a_layers) + 1))
    for j in sorted({0, len(a_steps) // 2, len(a_steps) - 1}) if a_steps else []:
        ax_depth.plot(depth, [row[j] for row in a_grid], marker="o", markersize=3, label=f"step {a_steps[j]}")
    ax_depth.set_yscale("log")
    ax_depth.set_xlabel("layer")
    from matplotlib.ticker import MaxNLocator

    ax_depth.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # layer 5, not 2.5
    ax_depth.set_title("activation std by depth")
    ax_depth.grid(True, which="both", alpha=0.3)
    if a_steps:
        ax_depth.legend(fontsize="small")
    return png_bytes(fig)


def tb_images(run: Run, limit: int = MAX_IMAGE_TAGS) -> list[tuple[str, int, bytes]]:
    """(tag, step, PNG bytes) of the newest image of each image tag in the run's TensorBoard files."""
    tb = run.path / "tb"
    if not tb.is_dir():
        return []
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    acc = EventAccumulator(str(tb), size_guidance={IMAGES: 1})
    try:
        acc.Reload()
    except Exception:  # a torn or foreign event file: no images, the rest of the report stands
        return []
    out = []
    for tag in sorted(acc.Tags().get("images", []))[:limit]:
        events = acc.Images(tag)
        if events:
            last = max(events, key=lambda e: e.step)
            out.append((tag, int(last.step), bytes(last.encoded_image_string)))
    return out


def graphs_png(run: Run) -> bytes | None:
    """RandWire stages drawn from graphs.json (networkx layout), when the run has one."""
    path = run.path / "graphs.json"
    if not path.is_file():
        return None
    try:
        stages = json.loads(path.read_text())["stages"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None
    import networkx as nx

    fig = figure(figsize=(4 * max(len(stages), 1), 4))
    axes = fig.subplots(1, max(len(stages), 1), squeeze=False)[0]
    for i, (ax, edges) in enumerate(zip(axes, stages)):
        g = nx.DiGraph([tuple(e) for e in edges])
        pos = nx.spring_layout(g, seed=0)
        nx.draw_networkx(g, pos, ax=ax, node_size=60, with_labels=False, arrowsize=6, width=0.5)
        ax.set_title(f"stage {i + 1}: {g.number_of_nodes()} nodes, {g.number_of_edges()} edges")
        ax.set_axis_off()
    return png_bytes(fig)


def density_png(run: Run, samples: int = 6) -> bytes | None:
    """For a gaussian/mdn regression run on position targets (x, y first): validation images with
    the predicted density of the position drawn over them and the target marked."""
    if run.config.get("task.name") != "regression" or run.config.get("task.head") not in ("gaussian", "mdn"):
        return None
    from vaitrain.lab.density import predicted_densities

    try:
        found = predicted_densities(run.path, samples)
    except VaitrainError:
        return None
    if found is None:
        return None
    images, grids, targets, extent = found
    fig = figure(figsize=(2.2 * len(images), 2.5))
    axes = fig.subplots(1, len(images), squeeze=False)[0]
    for ax, img, dens, t in zip(axes, images, grids, targets):
        ax.imshow(img, extent=extent)
        ax.contour(dens, levels=5, extent=extent, origin="upper", cmap="autumn", linewidths=1)
        ax.plot([t[0]], [t[1]], marker="x", color="cyan", markersize=8)
        ax.set_axis_off()
    fig.suptitle(f"{run.config.get('task.head')}: predicted density of the position (x = target)", fontsize="small")
    return png_bytes(fig)


# ----------------------------------------------------------------------------- the page

CSS = """body{font-family:sans-serif;margin:1.5em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5em 0;font-size:0.9em}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#eee}td:first-child{text-align:left}
img{max-width:100%;border:1px solid #ddd;margin:4px 0}
.claim{background:#eef6ee;border-left:4px solid #4a4;padding:0.4em 0.8em;margin:0.5em 0}
.contradicted{background:#fbeaea;border-left:4px solid #c33}
.small{color:#666;font-size:0.85em}
.scroll{overflow-x:auto}.grid{display:flex;flex-wrap:wrap;gap:6px}.grid img{max-width:49%}"""


@dataclass
class Section:
    title: str
    html: str


@dataclass
class ReportResult:
    out: Path
    runs: list[Run]
    comparison: Comparison
    warnings: list[str] = field(default_factory=list)


def run_sections(runs: Sequence[Run], comp: Comparison) -> list[Section]:
    keys = comp.config_keys
    sections = [Section("Runs", table_html(
        ["run", "status", "epochs", "wall time (s)", "path"],
        [[r.name, r.status, r.epochs_done, r.wall_time, str(r.path)] for r in runs]))]
    if keys:
        sections.append(Section("Config keys that differ", table_html(
            ["run", *keys], [[r.name, *[r.config.get(k) for k in keys]] for r in runs])))
    else:
        sections.append(Section("Config keys that differ", "<p>none: the runs share one config</p>"))
    cols = [c for c in comp.columns if c not in keys]
    sections.append(Section("Best and final metrics", table_html(cols, [[row.get(c) for c in cols] for row in comp.rows], "metrics")))
    curves = [img_tag(png, f"curve {tag}") for tag in curve_tags(runs) if (png := curves_png(runs, tag, keys))]
    if curves:
        sections.append(Section("Curves", '<div class="grid">' + "".join(curves) + "</div>"))
    for run in runs:
        parts = []
        for tag, step, png in tb_images(run):
            parts.append(f"<h4>{esc(tag)} (step {step})</h4>{img_tag(png, f'{run.name} {tag}')}")
        for name, png in (("predicted densities", density_png(run)), ("layer statistics", layer_stats_png(run)),
                          ("RandWire graphs", graphs_png(run))):
            if png:
                parts.append(f"<h4>{name}</h4>{img_tag(png, f'{run.name} {name}')}")
        if parts:
            sections.append(Section(f"Run {run.name}", "".join(parts)))
    return sections


def page(title: str, sections: Sequence[Section], intro: str = "") -> str:
    body = "".join(f"<h2>{esc(s.title)}</h2>{s.html}" for s in sections)
    made = _dt.datetime.now().isoformat(timespec="seconds")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>{intro}{body}"
            f'<p class="small">made by vaitrain at {made}</p></body></html>\n')


def build_report(paths: Sequence[str | Path], out: Path | str, *, title: str = "",
                 intro: str = "", before: Sequence[Section] = ()) -> ReportResult:
    """Read the runs (run dirs, sweep folders, globs), write the page to `out` atomically."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise VaitrainError(f"--out {out}: the report is an HTML page; name it FILE.html")
    from vaitrain.track.rundir import check_output

    check_output("--out", out)
    runs, warnings = load_runs(paths)
    comp = compare(runs)
    text = page(title or f"vaitrain report: {len(runs)} run{'s' * (len(runs) != 1)}",
                [*before, *run_sections(runs, comp)], intro)
    write_page(out, text)
    return ReportResult(out, runs, comp, warnings)


def write_page(out: Path, text: str, option: str = "--out") -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, text)
    except OSError as err:
        raise VaitrainError(f"cannot write the report '{out}': {err.strerror or err}; "
                            f"free space there or choose another folder with {option}") from None
