"""The course's module-level vocabulary (``trackkit.set_experiment``, ``set_tracking_uri``,
``register_model``, ``load_model``, ``log_text``...), read back with MLflow's client; batch
scoring from a ``runs:/`` URI; MLflow's own autolog inside a trackkit run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import trackkit
from trackkit.errors import InvalidInput, TrackkitError, UnsupportedOperation

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("sklearn")

from sklearn.linear_model import LinearRegression  # noqa: E402


def test_the_course_notebook_with_trackkit(sqlite_uri: str, mlflow_client: Any) -> None:
    trackkit.set_tracking_uri(sqlite_uri)
    assert trackkit.get_tracking_uri() == sqlite_uri
    trackkit.set_experiment("nyc-taxi-experiment")
    with trackkit.start_run() as run:
        trackkit.set_tag("developer", "ana")
        trackkit.log_param("train-data-path", "./data/green_tripdata_2021-01.parquet")
        trackkit.log_param("alpha", 0.1)
        trackkit.log_metric("rmse", 6.4)
        trackkit.log_text("notes", "notes/summary.txt")
        trackkit.log_dict({"features": ["PU_DO", "trip_distance"]}, "config.json")
        trackkit.log_table(_frame(), "table.csv")
        trackkit.log_figure(_figure(), "plots/fit.png")
        model = LinearRegression().fit([[1.0], [2.0], [3.0]], [2.0, 4.0, 6.0])
        ref = trackkit.log_model(model, "model", input_example=[[1.5]])
    stored = mlflow_client.get_run(run.id)
    assert mlflow_client.get_experiment(stored.info.experiment_id).name == "nyc-taxi-experiment"
    assert stored.data.params["alpha"] == "0.1" and stored.data.tags["developer"] == "ana"
    files = {a.path for a in mlflow_client.list_artifacts(run.id)} | {
        a.path for d in ("notes", "plots") for a in mlflow_client.list_artifacts(run.id, d)
    }
    assert {"notes/summary.txt", "config.json", "table.csv", "plots/fit.png"} <= files
    local = mlflow_client.download_artifacts(run.id, "config.json")
    assert json.loads(Path(local).read_text()) == {"features": ["PU_DO", "trip_distance"]}
    assert mlflow.models.get_model_info(ref.uri).signature is not None

    version = trackkit.register_model(ref, "nyc-taxi-regressor")
    assert version.version == 1
    loaded = trackkit.load_model("models:/nyc-taxi-regressor/1")
    assert list(loaded.predict([[4.0]])) == list(model.predict([[4.0]]))
    assert trackkit.load_model(f"runs:/{run.id}/model").predict([[4.0]])[0] == pytest.approx(8.0)
    last = trackkit.last_active_run()
    assert last is not None and last.id == run.id and last.metrics["rmse"] == 6.4
    trackkit.get_default_tracker().close()


def _frame() -> Any:
    pd = pytest.importorskip("pandas")
    return pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})


def _figure() -> Any:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure()
    figure.add_subplot().plot([1, 2, 3])
    return figure


def test_tracking_uri_rules(sqlite_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidInput, match="tracking URI"):
        trackkit.set_tracking_uri("")
    trackkit.set_tracking_uri(sqlite_uri)
    with trackkit.start_run(), pytest.raises(TrackkitError, match="end the active run"):
        trackkit.set_tracking_uri("sqlite:///other.db")
    trackkit.get_default_tracker().close()
    trackkit.set_tracker(None)
    monkeypatch.setenv("TRACKKIT_BACKEND", "neptune")
    if "neptune" in trackkit.available_backends():
        with pytest.raises(UnsupportedOperation, match="neptune backend has no tracking URI"):
            trackkit.set_tracking_uri(sqlite_uri)
        pytest.importorskip("neptune")
        trackkit.set_tracker(trackkit.get_tracker("neptune", mode="debug"))
        with pytest.raises(UnsupportedOperation, match="has no tracking URI"):
            trackkit.get_tracking_uri()
        trackkit.get_default_tracker().close()


def test_mlflow_autolog_inside_a_trackkit_run_makes_no_stray_run(
    sqlite_uri: str, mlflow_client: Any
) -> None:
    """MLflow's own autolog logs into the trackkit run (the active run is MLflow's too)."""
    trackkit.set_tracking_uri(sqlite_uri)
    trackkit.set_experiment("mixed")
    mlflow.sklearn.autolog(log_models=False, silent=True)
    try:
        with trackkit.start_run() as run:
            LinearRegression().fit([[1.0], [2.0], [3.0]], [2.0, 4.0, 6.0])
            trackkit.log_metric("rmse", 1.0)
    finally:
        mlflow.sklearn.autolog(disable=True)
    default = mlflow_client.get_experiment_by_name("Default")
    strays = [] if default is None else mlflow_client.search_runs([default.experiment_id])
    assert strays == []
    [only] = mlflow_client.search_runs(
        [mlflow_client.get_experiment_by_name("mixed").experiment_id]
    )
    assert only.info.run_id == run.id and only.info.status == "FINISHED"
    assert only.data.params["fit_intercept"] == "True"  # MLflow's autologged params
    assert "training_score" in only.data.metrics and only.data.metrics["rmse"] == 1.0
    assert mlflow.active_run() is None
    trackkit.get_default_tracker().close()


def test_batch_scoring_from_a_run_uri(sqlite_uri: str, tmp_path: Path) -> None:
    pytest.importorskip("xgboost")
    from examples.ride_duration import data, score
    from examples.ride_duration.train import TrainingData, train

    paths = data.write_synthetic_months(tmp_path / "data", ["2021-01", "2021-02"], rows=600)
    tracker = trackkit.get_tracker("mlflow", tracking_uri=sqlite_uri)
    training = TrainingData.load(paths[0], paths[1], synthetic=True, seed=42)
    result = train(tracker, training, "linear_regression", experiment="runs-uri")
    scored = score.score(
        tracker, paths[1], tmp_path / "out", model_uri=f"runs:/{result.run_id}/model"
    )
    assert scored.version is None and scored.rides > 0
    [run] = tracker.search_runs("ride-duration-scoring")
    assert run.params["model.uri"] == f"runs:/{result.run_id}/model"
    assert run.tags["model_uri"] == f"runs:/{result.run_id}/model"
    assert scored.rmse == pytest.approx(result.rmse)  # the validation month, the same model
    tracker.close()
