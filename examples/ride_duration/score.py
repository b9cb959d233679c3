"""Batch scoring: the production model predicts a month of rides; the predictions are written
as parquet and logged as an artifact of a scoring run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

import trackkit
from examples.ride_duration import PRODUCTION_URI, SCORING_EXPERIMENT, data, registry
from examples.ride_duration.train import developer, scores


@dataclass(frozen=True)
class ScoreResult:
    """What a scoring run produced."""

    output: Path
    rides: int
    #: the registered version that predicted; None for a model scored from its run (runs:/)
    version: trackkit.ModelVersion | None
    run_id: str
    rmse: float
    mae: float


def _ride_ids(path: Path, count: int) -> list[str]:
    """The course's ride IDs, ``YYYY/MM_<row>``, or ``<file stem>_<row>``."""
    month = re.search(r"(\d{4})-(\d{2})", path.name)
    prefix = f"{month[1]}/{month[2]}" if month else path.name.split(".")[0]
    return [f"{prefix}_{i}" for i in range(count)]


def predict_month(model: object, rides: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The predictions table: one row per ride, with what was predicted and what happened."""
    predicted = model.predict(data.to_dicts(rides))  # type: ignore[attr-defined]
    pickup = next(c for c in rides.columns if c.endswith("pickup_datetime"))
    return pd.DataFrame(
        {
            "ride_id": _ride_ids(path, len(rides)),
            "pickup_datetime": rides[pickup].to_numpy(),
            "PULocationID": rides["PULocationID"].to_numpy(),
            "DOLocationID": rides["DOLocationID"].to_numpy(),
            "trip_distance": rides["trip_distance"].to_numpy(),
            "actual_duration": rides[data.TARGET].to_numpy(),
            "predicted_duration": predicted,
            "diff": rides[data.TARGET].to_numpy() - predicted,
        }
    )


def score(
    tracker: trackkit.Tracker,
    input_path: Path,
    output_dir: Path,
    *,
    model_uri: str = PRODUCTION_URI,
    experiment: str = SCORING_EXPERIMENT,
) -> ScoreResult:
    """Score one trip file with a model (default ``models:/ride-duration@production``).

    ``model_uri`` is a registered model (``models:/<name>@<alias>``, ``models:/<name>/<version>``)
    or, as the course also scores, a model logged in a run (``runs:/<run_id>/model``).
    Writes ``<output_dir>/<input name>_predictions.parquet`` and logs it, with the model's
    version (or run) and the month's rmse and mae, in a run of ``experiment``.
    """
    input_path = Path(input_path)
    if model_uri.startswith("runs:/"):
        model, version = tracker.load_model(model_uri), None
    else:
        model, version = registry.load_registered(tracker, model_uri)
    rides = data.read_dataframe(input_path)
    table = predict_month(model, rides, input_path)
    table["model_version"] = version.version if version is not None else None
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    output = output_dir / f"{input_path.name.split('.')[0]}_predictions.parquet"
    table.to_parquet(output, index=False)
    rmse, mae = scores(table["actual_duration"].to_numpy(), table["predicted_duration"].to_numpy())

    tags = {"developer": developer(), "model_uri": model_uri}
    if version is not None:
        tags["model_version"] = str(version.version)
    described: dict[str, object] = {"uri": model_uri}
    if version is not None:
        described.update(name=version.name, version=version.version)
    with tracker.start_run(experiment=experiment, name=f"score-{output.stem}", tags=tags) as run:
        run.log_params(
            {
                "input_path": str(input_path),
                "output_path": str(output),
                "model": described,
            }
        )
        run.log_metrics(
            {
                "rides": len(table),
                "rmse": rmse,
                "mae": mae,
                "mean_predicted_duration": float(table["predicted_duration"].mean()),
            }
        )
        run.log_artifact(output, "predictions")
    return ScoreResult(output, len(table), version, run.id, rmse, mae)
