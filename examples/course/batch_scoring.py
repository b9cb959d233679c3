"""Course 4.1 and 4.3: batch scoring with the model from the registry, or from its run.

    python -m examples.course.batch_scoring

Loads the Production model (``models:/<name>/Production``) and the same model from its run
(``runs:/<run_id>/model``, as the course scores in 4.3), predicts the durations of the test
month's rides, writes them to ``output/`` as parquet, and logs the file in a scoring run.
Run ``stage_loading`` first.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import trackkit
from examples.course import MODEL_NAME, SCORING_EXPERIMENT
from examples.course.common import TARGET, TEST, month_path, read_dataframe, rmse, to_dicts


def main(tracker: trackkit.Tracker | None = None) -> dict[str, Any]:
    if tracker is not None:
        trackkit.set_tracker(tracker)
    client = trackkit.get_default_tracker()

    production = client.get_model_version(MODEL_NAME, stage="Production")
    model_uri = f"models:/{MODEL_NAME}/Production"
    run_uri = f"runs:/{production.run_id}/model"
    model = trackkit.load_model(model_uri)
    from_run = trackkit.load_model(run_uri)

    df = read_dataframe(TEST)
    dicts = to_dicts(df)
    y_pred = model.predict(dicts)
    if not np.allclose(y_pred, from_run.predict(dicts)):
        raise SystemExit(f"{model_uri} and {run_uri} predict differently")
    result = pd.DataFrame(
        {
            "ride_id": [str(uuid.UUID(int=i)) for i in range(len(df))],
            "PU_DO": df["PU_DO"].values,
            "trip_distance": df["trip_distance"].values,
            "actual_duration": df[TARGET].values,
            "predicted_duration": y_pred,
            "diff": df[TARGET].values - y_pred,
            "model_version": production.version,
        }
    )
    output = Path("output") / f"green_tripdata_{TEST}_predictions.parquet"
    output.parent.mkdir(exist_ok=True)
    result.to_parquet(output, index=False)

    with trackkit.start_run(experiment=SCORING_EXPERIMENT, name=f"score-{TEST}") as run:
        trackkit.log_params(
            {"input": str(month_path(TEST)), "model_uri": model_uri, "run_uri": run_uri}
        )
        trackkit.log_metrics({"rides": len(result), "rmse": rmse(df[TARGET].values, y_pred)})
        trackkit.log_artifact(output, "predictions")
    print(
        f"scored {len(result)} rides with {model_uri} (version {production.version}) "
        f"and {run_uri}: {output}, run {run.id}"
    )
    return {
        "run": run.id,
        "rides": len(result),
        "version": production.version,
        "output": str(output),
    }


if __name__ == "__main__":
    main()
