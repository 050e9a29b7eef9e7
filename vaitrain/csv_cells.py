"""CSV that a spreadsheet opens as data, never as formulas (every CSV vaitrain writes goes here).

Class names (folder names), CSV column names, paths and config values come from the user's files;
a cell starting with = + - @ (or a tab / carriage return) is run as a formula by Excel, LibreOffice
and Google Sheets (`=HYPERLINK(...)`, `@SUM(...)`, DDE). OWASP's defence: such a text cell is
written with a leading single quote, which spreadsheets show as text. Numbers (including text that
is a plain number such as "-2.5" or "-inf") are left as they are.
"""
from __future__ import annotations

import csv
import io
import re
from typing import Any, Iterable, Sequence

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# -inf / -nan too: compare-runs writes a non-finite metric as str(float); quoted, a CSV reader got the
# text "'-inf" for val/loss while "inf" and "nan" stayed numbers
_NUMBER = re.compile(r"[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|inf|infinity|nan)", re.IGNORECASE)


def safe_cell(value: Any) -> Any:
    """value, or "'" + value for a text cell a spreadsheet would read as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def csv_text(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """header and rows as CSV text ('\\n' line ends), every cell passed through safe_cell."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([safe_cell(h) for h in header])
    for row in rows:
        w.writerow([safe_cell(v) for v in row])
    return buf.getvalue()


def dict_csv_text(fieldnames: Sequence[str], rows: Iterable[dict[str, Any]], restval: Any = "") -> str:
    """Dict rows as CSV text under fieldnames (a missing key: restval), cells through safe_cell."""
    return csv_text(fieldnames, ([row.get(k, restval) for k in fieldnames] for row in rows))
