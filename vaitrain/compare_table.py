"""The `compare-runs` table for a terminal of a given width.

Wide comparisons (a sweep over 4 keys with 2 metrics is ~250 columns) are fitted, in this order:
run names lose the parts every run shares (`resnet20-shapes-cls`), headers are stacked on two
lines at their first '.' or '/' (`optim.` over `weight_decay`, `val/acc1` over `best`), then the
least telling columns are hidden (epoch of the best, params, wall time, epochs, img/s, final
values), each hidden one named under the table with `--wide` to show everything.
"""
from __future__ import annotations

import io
import re
from typing import Sequence

_CONSTANT_HIDDEN = ("status", "epochs", "params")  # shown only where they differ between runs
# hidden first .. last when the table does not fit
_HIDE_ORDER = (r"\.best_epoch$", r"^params$", r"^epochs$", r"^wall_time$", r"^img_per_s$", r"\.final$")
_TIME = re.compile(r"^\d\d-\d\d-\d\d-")
_ID = re.compile(r"[0-9a-f]{6}")


def short_run_names(names: Sequence[str]) -> list[str]:
    """Drop the '-'-separated parts that every run name has at the same place (keeping the time
    and the random id, which tell runs apart); a single run keeps its full name."""
    if len(names) < 2:
        return list(names)
    split = [_parts(n) for n in names]
    width = min(len(p) for p in split)
    if any(len(p) != width for p in split):
        return list(names)
    shared = [all(p[i] == split[0][i] for p in split) for i in range(width)]
    out = ["-".join(part for part, same in zip(p, shared) if not same) for p in split]
    if not all(out) or len(set(out)) < len(out):
        return list(names)
    # a sweep's job tags tell its runs apart: then the start time and the random id add nothing
    tags = ["-".join(part for i, part in enumerate(p) if not shared[i] and not _TIME.match(part + "-")
                     and not _ID.fullmatch(part)) for p in split]
    return tags if all(tags) and len(set(tags)) == len(tags) else out


def _parts(name: str) -> list[str]:
    m = _TIME.match(name)
    head = [name[: m.end() - 1]] if m else []
    return head + name[m.end() if m else 0:].split("-")


def stacked(header: str, cell_width: int = 0) -> str:
    """`optim.weight_decay` -> `optim.` / `weight_decay`; `val/acc1.best` -> `val/acc1` / `best`,
    when the header is wider than the column's cells."""
    if len(header) <= max(cell_width, 4):
        return header
    for sep in (".", "/"):
        if sep in header:
            i = header.rindex(sep) if header.count(sep) > 1 and sep == "." else header.index(sep)
            keep = sep if sep == "." and not _is_metric(header) else ""
            return header[: i + (1 if keep else 0)] + "\n" + header[i + 1:]
    return header


def _is_metric(header: str) -> bool:
    return "/" in header


def render_table(columns: list[str], cells: list[list[str]], right: list[bool], width: int | None) -> str:
    """A rich table (no colour) of `cells`; width=None: every column at full size (--wide)."""
    if width is None:
        return _draw(columns, cells, right, None, wide=True)
    run_col = columns.index("run") if "run" in columns else -1
    if run_col >= 0:
        short = short_run_names([row[run_col] for row in cells])
        cells = [row[:run_col] + [s] + row[run_col + 1:] for row, s in zip(cells, short)]
    shown = list(range(len(columns)))
    hidden: list[str] = []
    same: list[str] = []
    if len(cells) > 1:  # a column with one value for every run says nothing about their differences
        for i, col in enumerate(columns):
            values = {row[i] for row in cells}
            if col in _CONSTANT_HIDDEN and len(values) == 1:
                shown.remove(i)
                same.append(f"{col} {values.pop()}")
    text = _draw(columns, cells, right, shown, wide=False)
    if _widest(text) > width:  # many keys, few runs: one column per run, one row per key, none hidden
        flipped = _transposed(columns, cells, shown, run_col)
        if _widest(flipped) <= width:
            return _notes(flipped, same, [], width)
    for pattern in _HIDE_ORDER:
        if _widest(text) <= width:
            break
        for i in [i for i in shown if re.search(pattern, columns[i])]:
            shown.remove(i)
            hidden.append(columns[i])
        text = _draw(columns, cells, right, shown, wide=False)
    if _widest(text) > width:  # too many keys and runs: a block of `key  value` lines per run
        text = _blocks(columns, cells, shown, run_col)
    return _notes(text, same, hidden, width)


def _notes(text: str, same: list[str], hidden: list[str], width: int) -> str:
    if same:
        text += f"\n(every run: {', '.join(same)})"
    if hidden:
        text += f"\n({len(hidden)} columns hidden to fit {width} columns: {', '.join(hidden)}; --wide shows all)"
    return text


def _transposed(columns: list[str], cells: list[list[str]], shown: list[int], run_col: int) -> str:
    keys = [i for i in shown if i != run_col]
    names = [row[run_col] if run_col >= 0 else str(n) for n, row in enumerate(cells)]
    t_columns = ["", *names]
    t_cells = [[columns[i], *(row[i] for row in cells)] for i in keys]
    return _draw(t_columns, t_cells, [False] + [True] * len(names), None, wide=True)


def _blocks(columns: list[str], cells: list[list[str]], shown: list[int], run_col: int) -> str:
    keys = [i for i in shown if i != run_col]
    pad = max((len(columns[i]) for i in keys), default=0)
    out = []
    for n, row in enumerate(cells):
        out.append(row[run_col] if run_col >= 0 else f"run {n + 1}")
        out += [f"  {columns[i]:<{pad}}  {row[i]}" for i in keys if row[i] != "-"]  # "-": not in this run
    return "\n".join(out)


def _widest(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def _draw(columns: list[str], cells: list[list[str]], right: list[bool], shown: list[int] | None, *,
          wide: bool, fit: int | None = None) -> str:
    from rich.console import Console
    from rich.table import Table

    shown = list(range(len(columns))) if shown is None else shown
    table = Table(show_edge=False, header_style="bold")
    for i in shown:
        widest = max((len(r[i]) for r in cells), default=0)
        table.add_column(columns[i] if wide else stacked(columns[i], widest), justify="right" if right[i] else "left",
                         no_wrap=fit is None, overflow="fold")
    for row in cells:
        table.add_row(*[row[i] for i in shown])
    buf = io.StringIO()
    full = sum(max(len(columns[i]), *(len(r[i]) for r in cells)) + 3 for i in shown) if cells else 80
    Console(file=buf, width=fit or max(full, 40), color_system=None, highlight=False).print(table)
    return "\n".join(line.rstrip() for line in buf.getvalue().rstrip("\n").splitlines())
