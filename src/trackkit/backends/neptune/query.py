"""A parsed search (``trackkit.search``) translated into Neptune's query language (NQL).

The translation only narrows what a server returns: the core evaluates the whole filter again
on the rows, so a clause NQL cannot express is simply left out.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from trackkit.backends.neptune.keys import (
    F_EXPERIMENT,
    F_NAME,
    F_PARENT,
    F_STATUS,
    INT32,
    METRICS,
    PARAMS,
    TAGS,
    default_path,
)

if TYPE_CHECKING:
    from trackkit.search import Clause


def nql_string(value: str) -> str | None:
    """``value`` as an NQL string literal, or None where NQL cannot quote it."""
    return None if '"' in value or "\\" in value else f'"{value}"'


def _nql_number(value: float) -> str:
    return repr(int(value)) if value.is_integer() else repr(value)


def _nql_param_equals(path: str, text: str) -> str | None:
    """Every typed field a param with this text may be stored as (params keep their type)."""
    quoted = nql_string(text)
    if quoted is None:
        return None
    options = [f"(`{path}`:string = {quoted})"]
    if text in ("True", "False"):
        options.append(f"(`{path}`:bool = {text.lower()})")
    with contextlib.suppress(ValueError):
        number = float(text)
        if math.isfinite(number):
            if re.fullmatch(r"[-+]?\d+", text) and INT32[0] <= int(text) <= INT32[1]:
                options.append(f"(`{path}`:integer = {int(text)})")
            elif repr(number) == text:
                options.append(f"(`{path}`:float = {text})")
    return options[0] if len(options) == 1 else "(" + " OR ".join(options) + ")"


def _nql_condition(c: Clause) -> str | None:
    """The Neptune query for one clause, or None when only the core can evaluate it."""
    if "`" in c.key:
        return None
    if c.entity == "metrics":
        if not math.isfinite(c.value):
            return None
        return (
            f"(last(`{METRICS}/{default_path(c.key)}`:floatSeries) {c.op} {_nql_number(c.value)})"
        )
    if c.entity == "attributes":
        fields = {"status": F_STATUS, "run_name": F_NAME, "parent_id": F_PARENT}
        path = fields.get(c.key)
        if path is None:
            return None
        kind, key = "string-field", path
    else:
        kind, key = c.entity, f"{PARAMS if c.entity == 'params' else TAGS}/{default_path(c.key)}"
    values = c.value if c.op in ("IN",) else (c.value,) if c.op in ("=",) else None
    if values is not None:
        if kind == "params":
            options = [_nql_param_equals(key, v) for v in values]
        else:
            options = [
                None if (q := nql_string(v)) is None else f"(`{key}`:string = {q})" for v in values
            ]
        if any(o is None for o in options) or not options:
            return None
        return (
            options[0] if len(options) == 1 else "(" + " OR ".join(o or "" for o in options) + ")"
        )
    if c.op == "LIKE" and kind != "params":
        inner = c.value[1:-1] if len(c.value) >= 2 and c.value[0] == c.value[-1] == "%" else None
        if inner and not re.search(r"[%_]", inner) and (q := nql_string(inner)) is not None:
            return f"(`{key}`:string CONTAINS {q})"
    return None


def to_nql(clauses: Sequence[Clause], experiments: Sequence[str]) -> tuple[str, bool]:
    """Neptune's query for ``clauses`` in ``experiments``, and whether it is exact.

    Clauses Neptune's query language cannot express are left to the core, which evaluates the
    whole filter again on what the server returns; the query then only narrows the search.
    """
    parts: list[str] = []
    quoted = [nql_string(e) for e in experiments]
    if all(q is not None for q in quoted):
        options = [f"(`{F_EXPERIMENT}`:string = {q})" for q in quoted]
        parts.append(options[0] if len(options) == 1 else "(" + " OR ".join(options) + ")")
    exact = len(parts) == 1
    for c in clauses:
        translated = _nql_condition(c)
        if translated is None:
            exact = False
        else:
            parts.append(translated)
    return " AND ".join(parts), exact
