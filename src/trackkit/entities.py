"""Plain data classes exchanged between users, the core and backends."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

#: A parameter value after normalization.
ParamValue = str | int | float | bool


class Metric(NamedTuple):
    """One metric point, as the core hands it to a backend."""

    key: str
    value: float
    step: int
    timestamp: int  # milliseconds since the epoch


@dataclass(frozen=True)
class RunHandle:
    """What a backend returns when it starts or resumes a run.

    ``params`` and ``last_steps`` describe what a resumed run already holds, so the core can
    keep params immutable and continue each metric's step counter; both are empty for a new run.
    """

    id: str
    name: str
    experiment: str
    params: dict[str, str] = field(default_factory=dict)
    last_steps: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelRef:
    """A model logged in a run: pass it to ``Tracker.register_model``."""

    run_id: str
    name: str
    uri: str
    flavor: str
    backend: str


@dataclass(frozen=True)
class ModelVersion:
    """One version of a registered model."""

    name: str
    version: int
    aliases: tuple[str, ...]
    run_id: str | None
    source: str
    description: str | None
    created_at: datetime | None


@dataclass(frozen=True)
class RunInfo:
    """A run as ``search_runs`` returns it; ``metrics`` holds the latest value per key."""

    id: str
    name: str
    experiment: str
    status: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    start_time: datetime | None
    end_time: datetime | None
