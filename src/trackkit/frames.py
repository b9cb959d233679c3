"""Runs and metric histories as tables: flat records for the command line, pandas DataFrames.

The DataFrame of runs has ``mlflow.search_runs``'s layout, column for column and dtype for
dtype: ``run_id``, ``experiment_id``, ``status``, ``artifact_uri``, ``start_time``,
``end_time``, then ``metrics.<key>``, ``params.<key>`` and ``tags.<key>`` (the backend's
system tags included), and after them ``run_name``, ``parent_id`` and ``backend``. It is built
from :class:`~trackkit.entities.RunInfo`, so it is the same on every backend and mode. A
column no run has a value in keeps the dtype of its kind (text, UTC times), where MLflow's
would fall back to ``object``. pandas is imported only here, and only when a frame is asked
for.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from trackkit._lazy import import_sdk
from trackkit.search import epoch_ms

if TYPE_CHECKING:
    from types import ModuleType

    from pandas import DataFrame

    from trackkit.entities import MetricPoint, RunInfo

#: the columns of every run, in MLflow's order
INFO_COLUMNS = ("run_id", "experiment_id", "status", "artifact_uri", "start_time", "end_time")
#: trackkit's columns after MLflow's
EXTRA_COLUMNS = ("run_name", "parent_id", "backend")
#: the long-format metric history: one row per point
HISTORY_COLUMNS = ("run_id", "run_name", "key", "step", "value", "timestamp")
#: the pip extra that installs pandas
PANDAS_EXTRA = "pandas"
OUTPUT_FORMATS = ("list", "pandas")


def pandas(purpose: str = "output_format='pandas'") -> ModuleType:
    """The pandas module.

    Raises:
        MissingDependencyError: pandas is not installed (the message names the extra).
    """
    return import_sdk("pandas", extra=PANDAS_EXTRA, purpose=purpose)


def run_record(info: RunInfo, backend: str) -> dict[str, Any]:
    """One run as a flat mapping from the frame's column names to its values.

    Times stay ``datetime`` (or None); a key the run lacks is absent from the mapping.
    """
    record: dict[str, Any] = {
        "run_id": info.id,
        "experiment_id": info.experiment_id if info.experiment_id is not None else info.experiment,
        "status": info.status,
        "artifact_uri": info.artifact_uri,
        "start_time": info.start_time,
        "end_time": info.end_time,
    }
    record.update({f"metrics.{k}": v for k, v in info.metrics.items()})
    record.update({f"params.{k}": v for k, v in info.params.items()})
    record.update({f"tags.{k}": v for k, v in {**info.system_tags, **info.tags}.items()})
    record.update({"run_name": info.name, "parent_id": info.parent_id, "backend": backend})
    return record


def columns(records: Iterable[dict[str, Any]]) -> list[str]:
    """The frame's columns for ``records``: MLflow's, then metrics, params and tags (each
    sorted by key), then trackkit's."""
    keys: set[str] = set()
    for record in records:
        keys.update(record)
    grouped = [
        sorted(k for k in keys if k.startswith(prefix))
        for prefix in ("metrics.", "params.", "tags.")
    ]
    return [*INFO_COLUMNS, *(k for group in grouped for k in group), *EXTRA_COLUMNS]


def _missing(column: str) -> Any:
    """What a run without ``column`` holds in the frame: NaN for a metric, else None."""
    return math.nan if column.startswith("metrics.") else None


def runs_frame(runs: Sequence[RunInfo], backend: str) -> DataFrame:
    """``runs`` as a DataFrame in ``mlflow.search_runs``'s layout, rows in the given order.

    Raises:
        MissingDependencyError: pandas is not installed.
    """
    pd = pandas()
    records = [run_record(info, backend) for info in runs]
    # the dtypes pandas gives MLflow's text and time columns: a column with no value at all
    # (every run without a parent; no run) gets them too, so the layout never depends on data
    text = pd.Series(["text"]).dtype
    moment = pd.Series([pd.to_datetime(0, unit="ms", utc=True)]).dtype
    data: dict[str, Any] = {}
    for column in columns(records):
        values = [record.get(column, _missing(column)) for record in records]
        if column in ("start_time", "end_time"):
            # as MLflow converts its millisecond times, so the values and dtypes are MLflow's
            values = [pd.to_datetime(epoch_ms(v), unit="ms", utc=True) for v in values]
            empty = all(v is None for v in values)
            data[column] = pd.Series(values, dtype=moment) if empty else values
        elif column.startswith("metrics."):
            data[column] = values
        else:
            empty = all(v is None for v in values)
            data[column] = pd.Series(values, dtype=text) if empty else values
    return pd.DataFrame(data)


def history_frame(rows: Sequence[tuple[str, str, str, MetricPoint]]) -> DataFrame:
    """Metric points as a long DataFrame: ``run_id``, ``run_name``, ``key``, ``step`` (int64),
    ``value`` (float64) and ``timestamp`` (UTC datetimes), one row per point.

    ``rows`` holds (run id, run name, key, point) in the order the rows should have.

    Raises:
        MissingDependencyError: pandas is not installed.
    """
    pd = pandas()
    return pd.DataFrame(
        {
            "run_id": pd.Series([r[0] for r in rows], dtype="str"),
            "run_name": pd.Series([r[1] for r in rows], dtype="str"),
            "key": pd.Series([r[2] for r in rows], dtype="str"),
            "step": pd.Series([r[3].step for r in rows], dtype="int64"),
            "value": pd.Series([r[3].value for r in rows], dtype="float64"),
            "timestamp": pd.to_datetime(
                pd.Series([r[3].timestamp for r in rows], dtype="int64"), unit="ms", utc=True
            ),
        },
        columns=list(HISTORY_COLUMNS),
    )
