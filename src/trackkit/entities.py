"""Plain data classes exchanged between users, the core and backends."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from trackkit.models import Signature

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
    #: the model's input/output schema: given to ``log_model`` or inferred from its input example
    signature: Signature | None = None
    #: the input example given to ``log_model`` (stored with the model)
    input_example: Any = field(default=None, compare=False, repr=False)


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
    #: the version's tags (``Tracker.set_model_version_tag``); left out of the hash
    tags: dict[str, str] = field(default_factory=dict, hash=False)


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
    #: the parent run's id for a nested run (``start_run(parent=...)``), else None
    parent_id: str | None = None
    #: the run's page in the backend's UI; None where there is none (a local store, an
    #: offline mode: ``Run.describe()`` names the command that shows the run)
    url: str | None = None
    #: the experiment's id in the backend (MLflow's experiment id); None where the backend
    #: names experiments only
    experiment_id: str | None = None
    #: where the backend stores the run's artifacts (MLflow's ``artifact_uri``), if it says
    artifact_uri: str | None = None
    #: the backend's own system tags, left out of ``tags`` (MLflow's ``mlflow.*``)
    system_tags: dict[str, str] = field(default_factory=dict)


class MetricPoint(NamedTuple):
    """One stored point of a metric, as ``get_metric_history`` returns it."""

    step: int
    value: float
    timestamp: int  # milliseconds since the epoch


@dataclass(frozen=True)
class ArtifactInfo:
    """One entry of a run's artifacts, as ``list_artifacts`` returns it."""

    #: the run-relative path, with ``/`` separators
    path: str
    is_dir: bool
    #: the file's size in bytes; None for a directory, or where the backend does not say
    size: int | None = None


@dataclass(frozen=True)
class RegisteredModel:
    """A registered model, as ``list_registered_models`` returns it."""

    name: str
    description: str | None
    #: alias -> the version it points at
    aliases: dict[str, int]
    #: the highest version number; None for a model without versions
    latest_version: int | None
    tags: dict[str, str] = field(default_factory=dict)
