"""The bench report as files (JSON, CSV) and as table cells for the CLI. (run.py fills it; this
module imports nothing of the measuring side.)"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from vaitrain.errors import ConfigError, RunDirError


@dataclass
class BenchReport:
    rows: list[dict[str, Any]]
    environment: dict[str, Any]
    settings: dict[str, Any]
    out: Optional[str] = None


def write_out(report: BenchReport, path: str | Path) -> Path:
    """Rows + environment as .json ({environment, settings, rows}) or .csv (one line per row,
    the environment in env_* columns)."""
    from vaitrain.track.files import write_text_atomic

    path = check_out(path)
    if path.suffix == ".json":
        text = json.dumps({"environment": report.environment, "settings": report.settings,
                           "rows": report.rows}, indent=2, default=str) + "\n"
    else:
        text = _csv(report)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)
    except OSError as err:
        raise RunDirError(f"cannot write {path}: {err.strerror or err}") from None
    return path


def check_out(path: str | Path) -> Path:
    """The output file must be .json or .csv; checked before anything is measured."""
    path = Path(path)
    if path.suffix not in (".json", ".csv"):
        raise ConfigError(f"--out {path}: the file must end in .json or .csv")
    from vaitrain.track.rundir import check_output

    check_output("--out", path)
    return path


def _csv(report: BenchReport) -> str:
    env = {f"env_{k}": v for k, v in report.environment.items()}
    keys: list[str] = []
    for row in report.rows:
        keys += [k for k in row if k not in keys]
    from vaitrain.csv_cells import dict_csv_text  # cells a spreadsheet would run as formulas are quoted

    return dict_csv_text(keys + list(env), ({**row, **env} for row in report.rows))


def _num(v: Optional[float], digits: int = 3) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def _ratio(r: dict[str, Any], key: str) -> str:
    return f"{r[key]:.3f}" if key in r else "-"


Column = tuple[str, Callable[[dict[str, Any]], str]]


def _cells(rows: list[dict[str, Any]], cols: list[Column]) -> list[list[str]]:
    keep = ("model", "px", "batch")
    return [[fn(r) if r.get("status") == "ok" or name in keep else "-" for name, fn in cols] for r in rows]


def tables(report: BenchReport) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, columns, rows of strings) per terminal table, each narrow enough for 80 columns:
    speed; vaitrain vs the baseline (if any); compute; the data path (if timed)."""
    rows = report.rows
    has = lambda key: any(key in r for r in rows)  # noqa: E731
    env, s = report.environment, report.settings
    first = rows[0] if rows else {}
    title = (f"{env['device_name']} ({env['device']}, {env['threads']} threads), {first.get('precision', '')}"
             f"{', channels_last' if s.get('channels_last') else ''}{', compiled' if s.get('compile') else ''}: "
             f"median of {s['repeats']} x {s['steps']} steps after {s['warmup']} warm-up")
    name: Column = ("model", lambda r: r.get("label", r["model"]))
    speed: list[Column] = [
        name,
        ("px", lambda r: str(r["image_size"])),
        ("batch", lambda r: str(r["batch"]) + ("*" if r["batch"] != r["batch_asked"] else "")),
    ]
    if has("train_img_s"):
        speed += [("train img/s", lambda r: _num(r.get("train_img_s"))),
                  ("step ms", lambda r: _num(r.get("train_ms"))),
                  ("p10-p90", lambda r: f"{_num(r.get('train_ms_p10'))}-{_num(r.get('train_ms_p90'))}")]
    if has("forward_ms"):
        speed += [("fwd/bwd/opt ms", lambda r: "/".join(_num(r.get(f"{k}_ms"))
                                                       for k in ("forward", "backward", "optimizer")))]
    if has("infer_img_s"):
        speed += [("infer img/s", lambda r: _num(r.get("infer_img_s")))]
    if has("peak_mem_mb"):
        speed += [("peak MiB", lambda r: _num(r.get("peak_mem_mb")))]
    out = [(title, speed)]
    if has("baseline_params"):
        kind = next(r["baseline"] for r in rows if "baseline" in r)
        base: list[Column] = [name]
        for mode in ("train", "infer"):
            if has(f"baseline_{mode}_img_s"):
                base += [(f"{mode} img/s", lambda r, m=mode: _num(r.get(f"{m}_img_s"))),
                         ("baseline", lambda r, m=mode: _num(r.get(f"baseline_{m}_img_s"))),
                         ("ratio", lambda r, m=mode: _ratio(r, f"{m}_ratio"))]
        out.append((f"vaitrain vs {kind} (ratio: median over back-to-back repeats)", base))
    if has("fwd_gflop"):
        comp: list[Column] = [
            name, ("params", lambda r: f"{r['params'] / 1e6:.2f}M" if "params" in r else "-"),
            ("GFLOP/img fwd", lambda r: _num(r.get("fwd_gflop"))),
            ("GFLOP/img train", lambda r: _num(r.get("train_gflop"))),
            ("train TFLOP/s", lambda r: _num(r.get("train_tflops")))]
        if has("peak_fraction"):
            comp += [("of peak", lambda r: f"{100 * r['peak_fraction']:.0f}% of {_num(r.get('peak_tflops'))}"
                      if "peak_fraction" in r else "-")]
        if s.get("compile") and has("train_warmup_s"):
            comp += [("compile+warm-up s", lambda r: _num(r.get("train_warmup_s")))]
        out.append(("compute (FLOPs by torch.utils.flop_counter)", comp))
    if has("loader_img_s"):
        data: list[Column] = [name, ("batch", lambda r: str(r["batch"])),
                              ("loader img/s", lambda r: _num(r.get("loader_img_s"))),
                              ("epoch img/s", lambda r: _num(r.get("epoch_img_s"))),
                              ("model img/s", lambda r: _num(r.get("train_img_s"))),
                              ("ratio", lambda r: _ratio(r, "epoch_vs_model")),
                              ("input %", lambda r: f"{100 * r['epoch_input_share']:.1f}"
                               if r.get("epoch_input_share") is not None else "-")]
        out.append(("data path: the loader alone; a training epoch end to end (loader + step) vs the "
                    "model alone; input % = the epoch's time spent producing batches", data))
    return [(t, [c for c, _ in cols], _cells(rows, cols)) for t, cols in out]


def notes(report: BenchReport) -> list[str]:
    """One line per row that has something to say (halved batch, failure, baseline details)."""
    lines = []
    for r in report.rows:
        if r.get("note"):
            lines.append(f"{r.get('label', r['model'])}: {'FAILED: ' if r.get('status') != 'ok' else ''}{r['note']}")
    return lines
