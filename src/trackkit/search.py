"""The search grammar: a filter and an order are parsed once, and runs are matched and sorted here.

The grammar is MLflow's (``docs/concepts.md``, "Searching runs"), so a filter that works on
MLflow works on every backend, with the same answer. A backend receives the parsed
:class:`Query`; it may translate it into its server's own pre-filter, and the core checks
every row that comes back with :func:`select`.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

from trackkit.entities import RunInfo
from trackkit.errors import InvalidInput

__all__ = [
    "ATTRIBUTES",
    "NUMERIC_ATTRIBUTES",
    "Clause",
    "Order",
    "Query",
    "build_query",
    "epoch_ms",
    "matches",
    "parse_filter",
    "parse_order",
    "select",
    "sort_runs",
    "value_of",
]

#: every spelling of an entity MLflow accepts (case-sensitive, as in MLflow) -> its name here
ENTITIES = {
    "metric": "metrics", "metrics": "metrics",
    "param": "params", "params": "params", "parameter": "params", "parameters": "params",
    "tag": "tags", "tags": "tags",
    "attribute": "attributes", "attributes": "attributes", "attr": "attributes", "run": "attributes",
}  # fmt: skip
#: run attributes a filter or order_by may name; text ones first, then times (in ms)
TEXT_ATTRIBUTES = ("run_id", "run_name", "status", "parent_id")
NUMERIC_ATTRIBUTES = ("start_time", "end_time")
ATTRIBUTES = TEXT_ATTRIBUTES + NUMERIC_ATTRIBUTES
#: MLflow's other names of attributes
ATTRIBUTE_ALIASES = {
    "created": "start_time",
    "Created": "start_time",
    "run name": "run_name",
    "Run name": "run_name",
    "Run Name": "run_name",
}
NUMBER_OPS = ("=", "!=", "<", "<=", ">", ">=")
TEXT_OPS = ("=", "!=", "LIKE", "ILIKE", "IN", "NOT IN")
NULL_OPS = ("IS NULL", "IS NOT NULL")  # params and tags only, as in MLflow

_STRING = r"""'(?:[^'\\]|''|\\.)*'|"(?:[^"\\]|""|\\.)*\""""
_TOKEN = re.compile(
    rf"""
      (?P<space>\s+)
    | (?P<string>{_STRING})
    | (?P<number>-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?![\w.`'"]))
    | (?P<name>(?:`[^`]*`|\w+)(?:\.(?:`[^`]*`|{_STRING}|\w+(?:\.\w+)*))?)
    | (?P<op>[=!<>]+)
    | (?P<punct>[(),])
    """,
    re.VERBOSE,
)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True)
class Clause:
    """One condition: ``<entity>.<key> <op> <value>``.

    ``entity`` is metrics, params, tags or attributes; ``key`` is the attribute's own name
    for attributes (aliases resolved). ``value`` is a float for metrics and times, a str, a
    tuple of str for IN / NOT IN, and None for IS NULL / IS NOT NULL.
    """

    entity: str
    key: str
    op: str  # one of NUMBER_OPS, TEXT_OPS or NULL_OPS
    value: Any


@dataclass(frozen=True)
class Order:
    """One ``order_by`` item: ``metrics.rmse ASC``."""

    entity: str
    key: str
    ascending: bool


@dataclass(frozen=True)
class Query:
    """A parsed search: what a backend's ``search_runs`` receives.

    ``filter`` and ``order_by`` keep the texts the user wrote (already checked), for a backend
    whose server speaks the same syntax.
    """

    experiments: tuple[str, ...]
    clauses: tuple[Clause, ...] = ()
    orders: tuple[Order, ...] = ()
    max_results: int = 100
    filter: str | None = None
    order_by: tuple[str, ...] = ()


# -- parsing ------------------------------------------------------------------------------------
class _Problem(Exception):
    """A parse failure; the caller turns it into InvalidInput naming the whole text."""


def _unquote(token: str) -> str:
    """The text of a quoted token: a doubled quote or ``\\<quote>`` is the quote, ``\\\\`` one
    backslash; every other backslash is kept as it is (``'C:\\data'``)."""
    quote, body = token[0], token[1:-1]
    if quote == "`":
        return body
    return re.sub(rf"{quote}{quote}|\\{quote}|\\\\", lambda m: m[0][-1], body)


def _tokens(text: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            rest = text[position:]
            if rest[0] in "'\"`":
                raise _Problem(f"a quote is never closed in {rest[:30]!r}")
            if found and found[-1][0] == "name" and not rest[0].isspace():
                raise _Problem(
                    f"cannot read {rest[:30]!r}: a key with characters other than letters, "
                    "digits, '_' and '.' goes in backticks, e.g. params.`data-set`"
                )
            raise _Problem(f"cannot read {rest[:30]!r}")
        kind = match.lastgroup or ""
        if kind != "space":
            found.append((kind, match[kind]))
        position = match.end()
    return found


def _name(raw: str) -> tuple[str, str]:
    """``metrics.rmse`` -> ("metrics", "rmse"); a bare attribute -> ("attributes", key)."""
    head, dot, rest = raw.partition(".") if not raw.startswith("`") else _split_quoted(raw)
    entity_word = head[1:-1] if head.startswith("`") else head
    if not dot:
        key, entity = entity_word, "attributes"
    else:
        entity = ENTITIES.get(entity_word, "")
        if not entity:
            raise _Problem(
                f"unknown entity {entity_word!r} in {raw!r}: "
                "use metrics.<key>, params.<key>, tags.<key> or attributes.<name>"
            )
        key = _unquote(rest) if rest[:1] in ("`", "'", '"') else rest
    if not key:
        raise _Problem(f"{raw!r} names no key")
    if entity == "attributes":
        key = ATTRIBUTE_ALIASES.get(key, key)
        if key == "experiment":
            raise _Problem(
                "attributes.experiment is not searched or ordered by: "
                "pass the experiment names to search_runs(experiment=...)"
            )
        if key not in ATTRIBUTES:
            where = f"attributes.{key}" if dot else repr(key)
            raise _Problem(
                f"{where} is not an attribute (use {', '.join(ATTRIBUTES)}); "
                "name other keys as metrics.<key>, params.<key> or tags.<key>"
            )
    return entity, key


def _split_quoted(raw: str) -> tuple[str, str, str]:
    close = raw.index("`", 1)
    head, rest = raw[: close + 1], raw[close + 1 :]
    return (head, ".", rest[1:]) if rest.startswith(".") else (head, "", "")


def _shown(entity: str, key: str) -> str:
    return f"{entity}.{key}"


class _Reader:
    """Walks the tokens of one filter."""

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.i = 0

    def more(self) -> bool:
        return self.i < len(self.tokens)

    def peek_word(self) -> str:
        if not self.more():
            return ""
        kind, raw = self.tokens[self.i]
        return raw.upper() if kind == "name" else ""

    def take(self, expected: str) -> tuple[str, str]:
        if not self.more():
            raise _Problem(f"ends too early: expected {expected}")
        self.i += 1
        return self.tokens[self.i - 1]


def _comparison(reader: _Reader, shown: str) -> str:
    kind, raw = reader.take(f"a comparison after {shown}")
    word = raw.upper() if kind == "name" else ""
    if kind == "op":
        op = "!=" if raw == "<>" else raw
        if op not in NUMBER_OPS:
            raise _Problem(f"unknown comparison {raw!r} after {shown}")
        return op
    if word in ("LIKE", "ILIKE", "IN"):
        return word
    if word == "NOT":
        following = reader.peek_word()
        if following == "IN":
            reader.take("IN")
            return "NOT IN"
        raise _Problem(f"unknown comparison 'NOT {following or '...'}' after {shown}")
    if word == "IS":
        if reader.peek_word() == "NOT":
            reader.take("NOT")
            if reader.peek_word() == "NULL":
                reader.take("NULL")
                return "IS NOT NULL"
        elif reader.peek_word() == "NULL":
            reader.take("NULL")
            return "IS NULL"
        raise _Problem(f"{shown} IS must be followed by NULL or NOT NULL")
    raise _Problem(f"expected a comparison after {shown}, got {raw!r}")


def _allowed(entity: str, key: str) -> tuple[str, ...]:
    if entity == "metrics" or key in NUMERIC_ATTRIBUTES:
        return NUMBER_OPS
    if entity in ("params", "tags"):
        return TEXT_OPS + NULL_OPS
    return TEXT_OPS


def _value(reader: _Reader, entity: str, key: str, op: str) -> Any:
    shown = _shown(entity, key)
    if op in NULL_OPS:
        return None
    if op in ("IN", "NOT IN"):
        kind, raw = reader.take(f"a list after {op}")
        if (kind, raw) != ("punct", "("):
            raise _Problem(f"{shown} {op} takes a list of quoted strings in parentheses")
        items: list[str] = []
        while True:
            kind, raw = reader.take(f"a quoted string in the {op} list")
            if (kind, raw) == ("punct", ")") and not items:
                raise _Problem(f"{shown} {op} takes at least one quoted string")
            if kind != "string":
                raise _Problem(f"{shown} {op} takes quoted strings, got {raw!r}")
            items.append(_unquote(raw))
            kind, raw = reader.take(f"',' or ')' in the {op} list")
            if (kind, raw) == ("punct", ")"):
                return tuple(items)
            if (kind, raw) != ("punct", ","):
                raise _Problem(f"expected ',' or ')' in the {op} list, got {raw!r}")
    kind, raw = reader.take(f"a value for {shown} {op}")
    if entity == "metrics" or key in NUMERIC_ATTRIBUTES:
        if kind != "number":
            raise _Problem(f"{shown} compares with a number, got {raw}")
        return float(raw)
    if kind != "string":
        raise _Problem(f"{shown} compares with a quoted string, got {raw}")
    return _unquote(raw)


def _fail(what: str, text: str, problem: _Problem) -> InvalidInput:
    return InvalidInput(f"{what} {text!r}: {problem}")


def parse_filter(text: str | None) -> tuple[Clause, ...]:
    """Parse a filter such as ``metrics.rmse < 7 and params.model = 'lasso'``.

    Raises:
        InvalidInput: the filter is not in the grammar; the message quotes it and says why.
    """
    if text is None:
        return ()
    if not isinstance(text, str):
        raise InvalidInput(f"filter must be a string, got {type(text).__name__}")
    if not text.strip():
        return ()
    try:
        reader = _Reader(_tokens(text))
        clauses: list[Clause] = []
        while True:
            kind, raw = reader.take("a name such as metrics.rmse")
            if kind != "name" or raw.upper() in ("AND", "OR", "NOT"):
                raise _Problem(f"expected a name such as metrics.rmse, got {raw!r}")
            entity, key = _name(raw)
            shown = _shown(entity, key)
            op = _comparison(reader, shown)
            allowed = _allowed(entity, key)
            if op not in allowed:
                raise _Problem(f"{shown} takes {', '.join(allowed)}; not {op}")
            clauses.append(Clause(entity, key, op, _value(reader, entity, key, op)))
            if not reader.more():
                return tuple(clauses)
            kind, raw = reader.take("AND")
            if kind != "name" or raw.upper() != "AND":
                raise _Problem(f"conditions are joined with AND, got {raw!r}")
    except _Problem as e:
        raise _fail("search filter", text, e) from None


def parse_order(order_by: str | Sequence[str] | None) -> tuple[Order, ...]:
    """Parse ``["metrics.rmse ASC", "attributes.start_time DESC"]`` (ASC when omitted).

    Raises:
        InvalidInput: an item is not ``<name> [ASC|DESC]``.
    """
    if order_by is None:
        return ()
    items = [order_by] if isinstance(order_by, str) else order_by
    if not isinstance(items, Sequence) or not all(isinstance(i, str) for i in items):
        raise InvalidInput(f"order_by must be a string or a list of strings, got {order_by!r}")
    orders = []
    for item in items:
        try:
            tokens = _tokens(item)
            if not tokens:
                raise _Problem("names nothing to order by")
            kind, raw = tokens[0]
            if kind != "name":
                raise _Problem(f"expected a name such as metrics.rmse, got {raw!r}")
            entity, key = _name(raw)
            ascending = True
            if len(tokens) > 1:
                kind, word = tokens[1]
                if kind != "name" or word.upper() not in ("ASC", "DESC"):
                    raise _Problem(f"expected ASC or DESC after the name, got {word!r}")
                ascending = word.upper() == "ASC"
            if len(tokens) > 2:
                raise _Problem(f"has {tokens[2][1]!r} after ASC or DESC")
        except _Problem as e:
            raise _fail("order_by item", item, e) from None
        orders.append(Order(entity, key, ascending))
    return tuple(orders)


def build_query(
    experiments: str | Sequence[str],
    filter: str | None = None,
    order_by: str | Sequence[str] | None = None,
    max_results: int = 100,
) -> Query:
    """Check and parse every argument of ``search_runs``.

    Raises:
        InvalidInput: an argument is malformed; no backend is involved yet.
    """
    names = [experiments] if isinstance(experiments, str) else list(experiments)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise InvalidInput(f"experiment must be a name or a list of names, got {experiments!r}")
    if filter is not None and not isinstance(filter, str):
        raise InvalidInput(f"filter must be a string, got {type(filter).__name__}")
    if (
        isinstance(max_results, bool)
        or not isinstance(max_results, int)
        or not (1 <= max_results <= 50_000)
    ):
        raise InvalidInput(f"max_results must be an int from 1 to 50000, got {max_results!r}")
    clauses = parse_filter(filter)
    orders = parse_order(order_by)
    texts = (order_by,) if isinstance(order_by, str) else tuple(order_by or ())
    return Query(
        experiments=tuple(names),
        clauses=clauses,
        orders=orders,
        max_results=max_results,
        filter=filter if filter and filter.strip() else None,
        order_by=texts,
    )


# -- evaluation -----------------------------------------------------------------------------
def epoch_ms(moment: datetime | None) -> int | None:
    """Milliseconds since the epoch, rounded down; a naive datetime is taken as UTC."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - _EPOCH) // _MS


def value_of(info: RunInfo, entity: str, key: str) -> float | str | None:
    """The value a clause or order on ``entity.key`` reads from a run; None when it is missing."""
    if entity == "metrics":
        metric = info.metrics.get(key)
        return None if metric is None else float(metric)
    if entity in ("params", "tags"):
        text = (info.params if entity == "params" else info.tags).get(key)
        return None if text is None else str(text)
    if key == "run_id":
        return info.id
    if key == "run_name":
        return info.name
    if key == "status":
        return info.status
    if key == "parent_id":
        return info.parent_id
    moment = epoch_ms(info.start_time if key == "start_time" else info.end_time)
    return None if moment is None else float(moment)


@lru_cache(maxsize=256)
def _like(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.compile(regex, re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _holds(clause: Clause, info: RunInfo) -> bool:
    actual = value_of(info, clause.entity, clause.key)
    if clause.op in NULL_OPS:
        return (actual is None) == (clause.op == "IS NULL")
    if actual is None:
        return False  # a missing value never matches, as in MLflow
    if clause.op == "IN":
        return actual in clause.value
    if clause.op == "NOT IN":
        return actual not in clause.value
    if clause.op in ("LIKE", "ILIKE"):
        return _like(clause.value, clause.op == "ILIKE").fullmatch(str(actual)) is not None
    return _COMPARE[clause.op](actual, clause.value)


def matches(clauses: Iterable[Clause], info: RunInfo) -> bool:
    """Whether ``info`` satisfies every clause."""
    return all(_holds(clause, info) for clause in clauses)


def _sorted_by(runs: list[RunInfo], entity: str, key: str, ascending: bool) -> list[RunInfo]:
    """A stable sort on one key: values in order, then NaN, then runs without the value."""
    present: list[tuple[Any, RunInfo]] = []
    nan: list[RunInfo] = []
    missing: list[RunInfo] = []
    for run in runs:
        value = value_of(run, entity, key)
        if value is None:
            missing.append(run)
        elif isinstance(value, float) and math.isnan(value):
            nan.append(run)
        else:
            present.append((value, run))
    present.sort(key=lambda pair: pair[0], reverse=not ascending)
    return [run for _, run in present] + nan + missing


def sort_runs(runs: Iterable[RunInfo], orders: Sequence[Order] = ()) -> list[RunInfo]:
    """Sort by ``orders``, then newest first (``start_time`` DESC), then by name, then by id.

    For each key, runs without the value come last, after NaN, whatever the direction.
    """
    ordered = sorted(runs, key=lambda run: (run.name, run.id))
    ordered = _sorted_by(ordered, "attributes", "start_time", ascending=False)
    for order in reversed(orders):
        ordered = _sorted_by(ordered, order.entity, order.key, order.ascending)
    return ordered


def select(query: Query, runs: Iterable[RunInfo]) -> list[RunInfo]:
    """The answer to ``query`` from a backend's candidate runs: filtered, sorted and cut."""
    seen: set[str] = set()
    kept = []
    for run in runs:
        if run.id not in seen and matches(query.clauses, run):
            seen.add(run.id)
            kept.append(run)
    return sort_runs(kept, query.orders)[: query.max_results]
