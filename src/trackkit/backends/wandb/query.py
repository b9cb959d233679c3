"""A parsed search (trackkit.search) translated into a W&B pre-filter and order.

The server's answer is only narrowed by these; the core checks every clause exactly on the runs
W&B returns, and sorts them when W&B cannot.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

from trackkit.backends.wandb.keys import MAX_WANDB_TAG
from trackkit.search import Clause, Order

_MONGO_OPS = {"!=": "$ne", "<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte"}


def _config_candidates(text: str) -> list[Any]:
    """The W&B config values whose trackkit text can equal ``text``."""
    found: list[Any] = [text]
    if text in ("True", "False"):
        found.append(text == "True")
    with contextlib.suppress(ValueError):
        found.append(int(text))
    with contextlib.suppress(ValueError):
        number = float(text)
        if math.isfinite(number):
            found.append(number)
    return found


def _server_clause(clause: Clause) -> dict[str, Any] | None:
    """A W&B (MongoDB-style) condition matching at least every run ``clause`` matches, or None.

    Config keys with a '.' are left to trackkit: W&B cannot filter them.
    """
    op, value, key = clause.op, clause.value, clause.key
    if clause.entity == "metrics":
        if key.count(".") > 4:  # W&B resolves summary names of at most 4 dots
            return None
        if not math.isfinite(value):
            return None
        path = f"summary_metrics.{key}"
        return {path: value} if op == "=" else {path: {_MONGO_OPS[op]: value}}
    if clause.entity == "params":
        if "." in key or op not in ("=", "IN"):
            return None
        texts = [value] if op == "=" else list(value)
        return {f"config.{key}": {"$in": [c for t in texts for c in _config_candidates(t)]}}
    if clause.entity == "tags":
        texts = [value] if op == "=" else list(value) if op == "IN" else []
        labels = [f"{key}:{t}" for t in texts]
        if not labels or any(len(label) > MAX_WANDB_TAG for label in labels):
            return None
        return {"tags": labels[0]} if op == "=" else {"tags": {"$in": labels}}
    column = {"run_name": "display_name", "run_id": "name"}.get(key)
    if column is None or op not in ("=", "IN"):
        return None
    return {column: value} if op == "=" else {column: {"$in": list(value)}}


def to_wandb_filter(clauses: Sequence[Clause]) -> dict[str, Any]:
    """The W&B ``Api.runs`` filter that narrows the search to (a superset of) the matches."""
    parts = [part for c in clauses if (part := _server_clause(c)) is not None]
    if not parts:
        return {}
    return parts[0] if len(parts) == 1 else {"$and": parts}


def to_wandb_order(orders: Sequence[Order]) -> str | None:
    """W&B's one-key ``order`` string for ``orders``, or None when trackkit must sort."""
    if len(orders) != 1:
        return "-created_at" if not orders else None
    (order,) = orders
    sign = "+" if order.ascending else "-"
    if order.entity == "metrics" and order.key.count(".") <= 4:
        return f"{sign}summary_metrics.{order.key}"
    if order.entity == "params" and "." not in order.key:
        return f"{sign}config.{order.key}.value"
    if order.entity == "attributes" and order.key == "start_time":
        return f"{sign}created_at"
    return None
