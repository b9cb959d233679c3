"""What every course script shares: the taxi data, the course's features and its metric.

There is no download: the months are the synthetic NYC TLC files of the ride-duration example
(``examples/ride_duration/data.py``, the exact 2021 green-taxi schema), written into
``./data`` on first use. Put real ``green_tripdata_2021-0[1-3].parquet`` files there to use
them instead. ``COURSE_ROWS`` sets the rides per synthetic month (default 5000).
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse

from examples.ride_duration import data

DATA_DIR = Path("data")
TRAIN, VALID, TEST = "2021-01", "2021-02", "2021-03"
TARGET = data.TARGET


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        raise SystemExit(f"${name} must be a whole number, got {raw!r}") from None


def month_path(month: str) -> Path:
    """The green-taxi file of ``month`` in ./data, written (synthetic) when missing."""
    try:
        return data.find_month(DATA_DIR, "green", month)
    except data.DataError:
        rows = env_int("COURSE_ROWS", 5000)
        (path,) = data.write_synthetic_months(DATA_DIR, [month], rows)
        return path


def read_dataframe(month: str) -> pd.DataFrame:
    """The course's ``read_dataframe``: durations of 1 to 60 minutes, ``PU_DO`` added."""
    return data.read_dataframe(month_path(month))


def to_dicts(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The course's features: the pickup-dropoff pair and the distance of each ride."""
    return data.to_dicts(df)


def vectorize(dv: Any, df: pd.DataFrame, *, fit: bool = False) -> Any:
    """``dv.transform`` (``fit_transform`` when ``fit``) as a CSC matrix with 32-bit indices:
    scikit-learn 1.9's DictVectorizer gives int64 indices, which Lasso refuses."""
    dicts = to_dicts(df)
    X = dv.fit_transform(dicts) if fit else dv.transform(dicts)
    return scipy.sparse.csc_matrix(X)


def rmse(y_true: Any, y_pred: Any) -> float:
    """``mean_squared_error(..., squared=False)`` of the course (removed from scikit-learn)."""
    diff = np.asarray(y_true, dtype=float) - np.asarray(y_pred, dtype=float)
    return float(np.sqrt(np.mean(diff**2)))


def developer() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in a container
        return "unknown"
