"""The bench report as files (JSON, CSV) and as table cells for the CLI."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Optional

from vaitrain.bench.run import BenchReport
from vaitrain.errors import ConfigError, RunDirError


def write_out(report: BenchReport, path: str | Path) -> Path:
    """Rows + environment as .json ({environment, settings, rows}) or .csv (one line per row,
    the environment in env_* columns)."""
    from vaitrain.track.files import write_text_atomic

    path = Path(path)
    if path.suffix == ".json":
        text = json.dumps({"environment": report.environment, "settings": report.settings,
                           "rows": report.rows}, indent=2, default=str) + "\n"
    elif path.suffix == ".csv":
        text = _csv(report)
    else:
        raise ConfigError(f"--out {path}: the file must end in .json or .csv")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)
    except OSError as err:
        raise RunDirError(f"cannot write {path}: {err.strerror or err}") from None
    return path


def _csv(report: BenchReport) -> str:
    env = {f"env_{k}": v for k, v in report.environment.items()}
    keys: list[str] = []
    for row in report.rows:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys + list(env), restval="")
    writer.writeheader()
    for row in report.rows:
        writer.writerow({**row, **env})
    return buf.getvalue()


def _num(v: Optional[float], digits: int = 3) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def _spread(row: dict[str, Any], mode: str) -> str:
    if f"{mode}_ms" not in row:
        return "-"
    return f"{_num(row[f'{mode}_ms'])} ({_num(row[f'{mode}_ms_p10'])}-{_num(row[f'{mode}_ms_p90'])})"


def table(report: BenchReport) -> tuple[str, list[str], list[list[str]]]:
    """(title, columns, rows of strings) for a terminal table; columns only where some row has data."""
    rows = report.rows
    has = lambda key: any(key in r for r in rows)  # noqa: E731
    env = report.environment
    s = report.settings
    first = rows[0] if rows else {}
    title = (f"vaitrain bench on {env['device_name']} ({env['device']}, {env['threads']} threads): "
             f"{first.get('precision', '')}"
             f"{', channels_last' if s.get('channels_last') else ''}{', compiled' if s.get('compile') else ''}; "
             f"median of {s['repeats']} x {s['steps']} steps after {s['warmup']} warm-up")
    cols: list[tuple[str, Any]] = [
        ("model", lambda r: r["model"]),
        ("px", lambda r: str(r["image_size"])),
        ("batch", lambda r: str(r["batch"]) + ("*" if r["batch"] != r["batch_asked"] else "")),
    ]
    if has("train_img_s"):
        cols += [("train img/s", lambda r: _num(r.get("train_img_s"))),
                 ("step ms med (p10-p90)", lambda r: _spread(r, "train"))]
    if has("baseline_train_img_s"):
        cols += [("baseline img/s", lambda r: _num(r.get("baseline_train_img_s"))),
                 ("ratio", lambda r: f"{r['train_ratio']:.3f}" if "train_ratio" in r else "-")]
    if has("forward_ms"):
        cols += [("fwd/bwd/opt ms", lambda r: "/".join(_num(r.get(f"{k}_ms")) for k in ("forward", "backward", "optimizer")))]
    if has("infer_img_s"):
        cols += [("infer img/s", lambda r: _num(r.get("infer_img_s")))]
    if has("baseline_infer_img_s"):
        cols += [("infer ratio", lambda r: f"{r['infer_ratio']:.3f}" if "infer_ratio" in r else "-")]
    if has("peak_mem_mb"):
        cols += [("peak MiB", lambda r: _num(r.get("peak_mem_mb")))]
    cols += [("params", lambda r: f"{r['params'] / 1e6:.2f}M" if "params" in r else "-")]
    if has("fwd_gflop"):
        cols += [("GFLOP/img fwd, train", lambda r: f"{_num(r.get('fwd_gflop'))}, {_num(r.get('train_gflop'))}"
                  if "fwd_gflop" in r else "-"),
                 ("TFLOP/s", lambda r: _num(r.get("train_tflops"))
                  + (f" ({100 * r['peak_fraction']:.0f}%)" if "peak_fraction" in r else ""))]
    if s.get("compile") and has("train_warmup_s"):
        cols += [("compile+warm-up s", lambda r: _num(r.get("train_warmup_s")))]
    if has("loader_img_s"):
        cols += [("loader img/s", lambda r: _num(r.get("loader_img_s"))),
                 ("epoch img/s (of model)", lambda r: f"{_num(r.get('epoch_img_s'))} ({r['epoch_vs_model']:.2f})"
                  if "epoch_vs_model" in r else "-")]
    cols += [("note", lambda r: r.get("note", ""))]
    cells = [[fn(r) if r.get("status") == "ok" or name in ("model", "px", "batch", "note") else "-"
              for name, fn in cols] for r in rows]
    return title, [name for name, _ in cols], cells
