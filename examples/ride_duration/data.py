"""NYC TLC trip files: the course's loader and features, and a synthetic month generator.

Real files (``green_tripdata_2021-01.parquet``, ``yellow_tripdata_2021-01.csv``, ...) load with
:func:`read_dataframe`; with no internet, :func:`write_synthetic_months` writes files with the
exact TLC schema (the 2021 layout) whose durations depend on distance, zone pair and time of
day, so the models have something to learn.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

TAXIS = ("green", "yellow")
CATEGORICAL = ["PU_DO"]
NUMERICAL = ["trip_distance"]
TARGET = "duration"
MIN_DURATION, MAX_DURATION = 1.0, 60.0  # minutes, the course's filter
ZONES = 265  # TLC taxi zones are numbered 1..265 (264 and 265 are "unknown")
SUFFIXES = (".parquet", ".csv", ".csv.gz")

# The 2021 TLC schemas, column for column (the files changed types in 2023-02).
_STR, _F64, _I64, _TS = pa.string(), pa.float64(), pa.int64(), pa.timestamp("us")
SCHEMAS: dict[str, pa.Schema] = {
    "green": pa.schema(
        [
            ("VendorID", _I64),
            ("lpep_pickup_datetime", _TS),
            ("lpep_dropoff_datetime", _TS),
            ("store_and_fwd_flag", _STR),
            ("RatecodeID", _F64),
            ("PULocationID", _I64),
            ("DOLocationID", _I64),
            ("passenger_count", _F64),
            ("trip_distance", _F64),
            ("fare_amount", _F64),
            ("extra", _F64),
            ("mta_tax", _F64),
            ("tip_amount", _F64),
            ("tolls_amount", _F64),
            ("ehail_fee", pa.null()),
            ("improvement_surcharge", _F64),
            ("total_amount", _F64),
            ("payment_type", _F64),
            ("trip_type", _F64),
            ("congestion_surcharge", _F64),
        ]
    ),
    "yellow": pa.schema(
        [
            ("VendorID", _I64),
            ("tpep_pickup_datetime", _TS),
            ("tpep_dropoff_datetime", _TS),
            ("passenger_count", _F64),
            ("trip_distance", _F64),
            ("RatecodeID", _F64),
            ("store_and_fwd_flag", _STR),
            ("PULocationID", _I64),
            ("DOLocationID", _I64),
            ("payment_type", _I64),
            ("fare_amount", _F64),
            ("extra", _F64),
            ("mta_tax", _F64),
            ("tip_amount", _F64),
            ("tolls_amount", _F64),
            ("improvement_surcharge", _F64),
            ("total_amount", _F64),
            ("congestion_surcharge", _F64),
            ("airport_fee", _F64),
        ]
    ),
}


class DataError(ValueError):
    """A trip file is missing or does not look like a TLC trip file."""


# -- files ---------------------------------------------------------------------------------
def check_month(month: str) -> str:
    """Validate a ``YYYY-MM`` month."""
    if not isinstance(month, str) or not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month):
        raise DataError(f"a month is written YYYY-MM (e.g. 2021-01), got {month!r}")
    return month


def file_name(taxi: str, month: str, suffix: str = ".parquet") -> str:
    """The TLC file name, e.g. ``green_tripdata_2021-01.parquet``."""
    if taxi not in TAXIS:
        raise DataError(f"taxi must be one of {TAXIS}, got {taxi!r}")
    return f"{taxi}_tripdata_{check_month(month)}{suffix}"


def find_month(data_dir: str | Path, taxi: str, month: str) -> Path:
    """The trip file of one month in ``data_dir`` (parquet, else CSV, else gzipped CSV).

    Raises:
        DataError: no such file.
    """
    for suffix in SUFFIXES:
        path = Path(data_dir) / file_name(taxi, month, suffix)
        if path.is_file():
            return path
    names = ", ".join(file_name(taxi, month, s) for s in SUFFIXES)
    raise DataError(
        f"no {taxi} trip file for {month} in {data_dir}: expected one of {names} "
        "(download it from the NYC TLC trip record page, or use the synthetic data)"
    )


# -- the course's loader -------------------------------------------------------------------
def _datetime_columns(columns: Iterable[str], path: Path) -> tuple[str, str]:
    present = set(columns)
    for prefix in ("lpep_", "tpep_"):
        pickup, dropoff = f"{prefix}pickup_datetime", f"{prefix}dropoff_datetime"
        if pickup in present and dropoff in present:
            return pickup, dropoff
    raise DataError(
        f"{path} has no lpep_/tpep_ pickup and dropoff datetime columns; "
        f"is it a green or yellow TLC trip file? columns: {sorted(present)}"
    )


def _location_ids(series: pd.Series, name: str, path: Path) -> pd.Series:
    """Zone IDs as category strings ("74", never "74.0", whatever type the file used)."""
    numbers = pd.to_numeric(series, errors="coerce")
    whole = numbers.dropna()
    if not (whole == np.floor(whole)).all():
        raise DataError(f"{path}: {name} holds non-integer zone IDs")
    return numbers.astype("Int64").astype("string").astype(object)


def read_dataframe(path: str | Path) -> pd.DataFrame:
    """Read one TLC trip file the course's way.

    Adds ``duration`` (minutes from pickup to dropoff) and keeps rides of 1 to 60 minutes;
    turns ``PULocationID``/``DOLocationID`` into category strings and adds ``PU_DO``, the
    pickup-dropoff pair. Rides with no zone or distance are dropped too.
    ``df.attrs["rows_read"]`` holds the number of rides in the file.

    Raises:
        DataError: the file is missing, of an unknown format, or lacks the needed columns.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such trip file: {path}")
    name = path.name.lower()
    if name.endswith(".parquet"):
        df = pd.read_parquet(path)
    elif name.endswith((".csv", ".csv.gz")):
        df = pd.read_csv(path, low_memory=False)
    else:
        raise DataError(f"{path}: trip files are .parquet, .csv or .csv.gz")
    pickup, dropoff = _datetime_columns(df.columns, path)
    missing = [c for c in ("PULocationID", "DOLocationID", "trip_distance") if c not in df]
    if missing:
        raise DataError(f"{path} lacks the columns {missing}")
    rows_read = len(df)
    df[pickup] = pd.to_datetime(df[pickup])
    df[dropoff] = pd.to_datetime(df[dropoff])
    df[TARGET] = (df[dropoff] - df[pickup]).dt.total_seconds() / 60
    df = df[(df[TARGET] >= MIN_DURATION) & (df[TARGET] <= MAX_DURATION)].copy()
    df["trip_distance"] = pd.to_numeric(df["trip_distance"], errors="coerce")
    df = df.dropna(subset=["PULocationID", "DOLocationID", "trip_distance"])
    for column in ("PULocationID", "DOLocationID"):
        df[column] = _location_ids(df[column], column, path)
    df["PU_DO"] = df["PULocationID"] + "_" + df["DOLocationID"]
    df = df.reset_index(drop=True)
    df.attrs["rows_read"] = rows_read
    return df


def to_dicts(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The model's input rows: ``PU_DO`` and ``trip_distance`` of each ride."""
    return df[CATEGORICAL + NUMERICAL].to_dict(orient="records")  # type: ignore[no-any-return]


def prepare_features(ride: Mapping[str, Any]) -> dict[str, Any]:
    """One ride's JSON (``PULocationID``, ``DOLocationID``, ``trip_distance``) as model input.

    Raises:
        DataError: a field is missing or out of range (the message names it).
    """
    if not isinstance(ride, Mapping):
        raise DataError("a ride is a JSON object with PULocationID, DOLocationID, trip_distance")
    missing = [k for k in ("PULocationID", "DOLocationID", "trip_distance") if k not in ride]
    if missing:
        raise DataError(f"missing field(s): {', '.join(missing)}")
    zones = []
    for key in ("PULocationID", "DOLocationID"):
        value = ride[key]
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= ZONES:
            raise DataError(f"{key} must be a taxi zone ID from 1 to {ZONES}, got {value!r}")
        zones.append(value)
    distance = ride["trip_distance"]
    if (
        isinstance(distance, bool)
        or not isinstance(distance, (int, float))
        or not math.isfinite(distance)
        or distance < 0
    ):
        raise DataError(f"trip_distance must be a number of miles >= 0, got {distance!r}")
    return {"PU_DO": f"{zones[0]}_{zones[1]}", "trip_distance": float(distance)}


# -- synthetic data ------------------------------------------------------------------------
def _city(seed: int) -> dict[str, np.ndarray]:
    """The fixed geography every synthetic month shares: where zones are, how busy they are."""
    rng = np.random.default_rng([seed, 0])
    xy = rng.uniform(0.0, 9.0, size=(ZONES + 1, 2))  # miles; index 0 unused
    congestion = rng.lognormal(0.0, 0.25, size=ZONES + 1)
    pair_minutes = rng.normal(0.0, 0.8, size=(ZONES + 1, ZONES + 1))  # e.g. bridges, one-ways
    hubs = rng.choice(np.arange(1, ZONES - 1), size=40, replace=False)
    hub_weights = 1.0 / np.arange(1, 41) ** 1.1  # a few zones get most pickups
    return {
        "xy": xy,
        "congestion": congestion,
        "pair_minutes": pair_minutes,
        "hubs": hubs,
        "hub_weights": hub_weights / hub_weights.sum(),
    }


def _zones(rng: np.random.Generator, city: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    hubs = rng.choice(city["hubs"], size=n, p=city["hub_weights"])
    anywhere = rng.integers(1, ZONES + 1, size=n)
    return np.where(rng.random(n) < 0.85, hubs, anywhere)


def synthetic_month(taxi: str, month: str, rows: int, seed: int = 42) -> pa.Table:
    """One month of synthetic rides in the exact TLC schema of ``taxi``, deterministic by seed.

    Duration grows with distance, slows with the zones' congestion and at rush hour, has a
    per-pair offset and noise; about 2% of rides are outliers (negative, under a minute, or
    hours long) that :func:`read_dataframe` filters out.
    """
    file_name(taxi, month)  # validates both
    if rows < 1:
        raise DataError(f"rows must be at least 1, got {rows}")
    year, mon = (int(part) for part in month.split("-"))
    city = _city(seed)
    rng = np.random.default_rng([seed, year, mon, TAXIS.index(taxi)])

    pu = _zones(rng, city, rows)
    near = np.argsort(
        np.linalg.norm(city["xy"][1:, None, :] - city["xy"][None, 1:, :], axis=2), axis=1
    )[:, :8]  # the 8 nearest zones of each zone (itself first)
    do = np.where(
        rng.random(rows) < 0.45,
        near[pu - 1, rng.integers(0, 8, size=rows)] + 1,
        _zones(rng, city, rows),
    )

    first = np.datetime64(f"{month}-01", "D")
    days = int(
        (np.datetime64(f"{year + mon // 12}-{mon % 12 + 1:02d}-01", "D") - first).astype(int)
    )
    start = first.astype("datetime64[s]")
    hour_weights = np.array(
        [2, 1.5, 1, 0.8, 0.8, 1, 2, 4, 6, 5, 4, 4, 4.5, 4.5, 5, 6, 7, 7.5, 7, 6, 5, 4, 3.5, 2.5]
    )
    hour = rng.choice(24, size=rows, p=hour_weights / hour_weights.sum())
    seconds = rng.integers(0, days, size=rows) * 86400 + hour * 3600 + rng.integers(0, 3600, rows)
    pickup = start + seconds.astype("timedelta64[s]")
    weekday = ((pickup.astype("datetime64[D]").astype(int) + 3) % 7) < 5  # 1970-01-01: Thu

    straight = np.linalg.norm(city["xy"][pu] - city["xy"][do], axis=1)
    base = np.where(pu == do, rng.uniform(0.3, 1.5, rows), 1.3 * straight + 0.4)
    distance = np.round(base * rng.lognormal(0.0, 0.12, rows), 2)
    rush = weekday & (((hour >= 7) & (hour <= 9)) | ((hour >= 16) & (hour <= 19)))
    night = (hour <= 5) | (hour >= 22)
    mph = 15.0 / np.sqrt(city["congestion"][pu] * city["congestion"][do])
    mph = mph * (0.45 + 1.3 * (1.0 - np.exp(-distance / 2.5)))  # longer rides reach highways
    mph = mph * np.where(rush, 0.7, 1.0) * np.where(night, 1.3, 1.0)
    minutes = 1.5 + 60.0 * distance / mph + city["pair_minutes"][pu, do]
    minutes = minutes + rng.normal(0.0, 1.5 + 0.08 * minutes)
    minutes = np.maximum(minutes, 1.2)

    kind = rng.random(rows)  # outliers the course's 1-60 minute filter removes
    minutes = np.where(kind < 0.006, -rng.uniform(0.5, 30.0, rows), minutes)  # clock errors
    short = (kind >= 0.006) & (kind < 0.012)  # cancelled on the spot
    minutes = np.where(short, rng.uniform(0.0, 0.95, rows), minutes)
    distance = np.where(short, 0.0, distance)
    minutes = np.where((kind >= 0.012) & (kind < 0.02), rng.uniform(61.0, 1440.0, rows), minutes)
    dropoff = pickup + np.round(minutes * 60).astype(np.int64).astype("timedelta64[s]")

    fare = np.round(2.5 + 2.5 * distance + 0.5 * np.maximum(minutes, 0.0).clip(max=120), 2)
    extra = np.where(night, 0.5, np.where(rush, 1.0, 0.0))
    card = rng.random(rows) < 0.6
    tip = np.where(card, np.round(fare * rng.uniform(0.1, 0.25, rows), 2), 0.0)
    tolls = np.where(rng.random(rows) < 0.03, 6.12, 0.0)
    manhattan = city["xy"][do][:, 0] > 6.5
    congestion_fee = np.where(manhattan, 2.75, 0.0)
    total = np.round(fare + extra + 0.5 + tip + tolls + 0.3 + congestion_fee, 2)
    unknown = rng.random(rows) < 0.03  # dispatched rides with no vendor-reported details

    def maybe(values: np.ndarray) -> pa.Array:
        return pa.array(values.astype(float), mask=unknown, type=_F64)

    ratecode = np.where(rng.random(rows) < 0.97, 1, 5)
    passengers = rng.choice([1, 1, 1, 1, 2, 3, 5], size=rows)
    payment = np.where(card, 1, 2)
    prefix = "lpep_" if taxi == "green" else "tpep_"
    columns: dict[str, Any] = {
        "VendorID": pa.array(np.where(rng.random(rows) < 0.8, 2, 1), _I64),
        f"{prefix}pickup_datetime": pa.array(pickup.astype("datetime64[us]"), _TS),
        f"{prefix}dropoff_datetime": pa.array(dropoff.astype("datetime64[us]"), _TS),
        "store_and_fwd_flag": pa.array(
            np.where(rng.random(rows) < 0.01, "Y", "N"), mask=unknown, type=_STR
        ),
        "RatecodeID": maybe(ratecode),
        "PULocationID": pa.array(pu, _I64),
        "DOLocationID": pa.array(do, _I64),
        "passenger_count": maybe(passengers),
        "trip_distance": pa.array(distance, _F64),
        "fare_amount": pa.array(fare, _F64),
        "extra": pa.array(extra, _F64),
        "mta_tax": pa.array(np.full(rows, 0.5), _F64),
        "tip_amount": pa.array(tip, _F64),
        "tolls_amount": pa.array(tolls, _F64),
        "ehail_fee": pa.nulls(rows),
        "improvement_surcharge": pa.array(np.full(rows, 0.3), _F64),
        "total_amount": pa.array(total, _F64),
        "payment_type": maybe(payment) if taxi == "green" else pa.array(payment, _I64),
        "trip_type": maybe(np.where(rng.random(rows) < 0.98, 1, 2)),
        "congestion_surcharge": pa.array(congestion_fee, _F64),
        "airport_fee": pa.array(np.where(rng.random(rows) < 0.02, 1.25, 0.0), _F64),
    }
    schema = SCHEMAS[taxi]
    return pa.table([columns[name] for name in schema.names], schema=schema)


def write_synthetic_months(
    data_dir: str | Path,
    months: Iterable[str],
    rows: int,
    *,
    taxi: str = "green",
    seed: int = 42,
    fmt: str = "parquet",
) -> list[Path]:
    """Write one synthetic TLC file per month into ``data_dir``; return their paths.

    Args:
        data_dir: created if missing.
        months: ``YYYY-MM`` months.
        rows: rides per month (before the duration filter).
        taxi: ``"green"`` or ``"yellow"`` (the column names and types differ).
        seed: the same seed writes the same files.
        fmt: ``"parquet"`` or ``"csv"``.
    """
    if fmt not in ("parquet", "csv"):
        raise DataError(f"fmt must be 'parquet' or 'csv', got {fmt!r}")
    directory = Path(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for month in months:
        table = synthetic_month(taxi, month, rows, seed)
        path = directory / file_name(taxi, month, f".{fmt}")
        if fmt == "parquet":
            pq.write_table(table, path)
        else:
            table.to_pandas().to_csv(path, index=False)
        paths.append(path)
    return paths
