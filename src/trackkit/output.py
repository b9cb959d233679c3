"""Rows printed by the reading commands: a table, CSV or JSON.

A table on a terminal is drawn with rich (``pip install 'trackkit[cli]'``), imported only
here and only then; anywhere else (a pipe, a file, a terminal without rich) it is plain text:
aligned columns, no colour, no box characters, never cut to the terminal's width. CSV and JSON
keep every value whole: full-precision numbers, ISO 8601 times in UTC.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, TextIO

FORMATS = ("table", "csv", "json")
#: what a table shows for a missing value
MISSING = "-"


def _finite(value: float) -> float | str:
    """A float JSON can hold, or the name JavaScript gives it (``NaN``, ``Infinity``)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def cell(value: Any) -> str:
    """A value as a table shows it: short numbers, times to the second in UTC."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return format(value, ".6g")
    if isinstance(value, datetime):
        return _utc(value).strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def exact(value: Any) -> Any:
    """A value as JSON holds it: numbers whole, times ISO 8601 in UTC, None for missing."""
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, datetime):
        return _utc(value).isoformat(timespec="milliseconds")
    return value


def _csv_text(value: Any) -> str:
    value = exact(value)
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def is_terminal(out: TextIO) -> bool:
    isatty = getattr(out, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # a closed stream
        return False


def plain_table(header: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    """Aligned columns separated by two spaces; numbers are not cut."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def _rich_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO, title: str | None
) -> bool:
    """Draw the table with rich; False when rich is not installed."""
    try:
        from rich import box
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        return False
    table = Table(title=title, box=box.SIMPLE_HEAD, header_style="bold")
    for i, name in enumerate(header):
        numeric = all(_numeric(r[i]) for r in rows) and bool(rows)
        table.add_column(name, justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        table.add_row(*row)
    Console(file=out).print(table)
    return True


def _numeric(text: str) -> bool:
    if text == MISSING:
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def write(
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    fmt: str,
    out: TextIO,
    title: str | None = None,
) -> None:
    """Print ``rows`` under ``header`` as ``fmt`` (table, csv or json).

    JSON is a list of objects, one per row, keyed by the header.
    """
    if fmt == "json":
        json.dump([dict(zip(header, map(exact, r), strict=True)) for r in rows], out, indent=2)
        out.write("\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([_csv_text(v) for v in r] for r in rows)
    else:
        shown = [[cell(v) for v in r] for r in rows]
        if not (is_terminal(out) and _rich_table(header, shown, out, title)):
            plain_table(header, shown, out)
