"""trackkit.autolog(): scikit-learn, xgboost and LightGBM fits log into the active run.

Read back through MLflow's own client (params, metrics at their rounds, logged models with
their signatures), and on W&B offline and Neptune offline through their own readers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackkit
from trackkit.integrations import autolog as autolog_module

mlflow = pytest.importorskip("mlflow")
sklearn = pytest.importorskip("sklearn")

from sklearn.feature_extraction import DictVectorizer  # noqa: E402
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402

ROWS = [{"PU_DO": f"{i % 4}_{i % 3}", "trip_distance": float(i % 7) + 0.5} for i in range(60)]
TARGET = [3.0 * r["trip_distance"] + len(r["PU_DO"]) for r in ROWS]


@pytest.fixture
def tracker(sqlite_uri: str) -> Iterator[trackkit.Tracker]:
    tracker = trackkit.get_tracker("mlflow", tracking_uri=sqlite_uri)
    trackkit.set_tracker(tracker)
    trackkit.autolog()
    yield tracker
    trackkit.autolog(disable=True)
    tracker.close()


def _runs(client: Any, experiment: str = "Default") -> list[Any]:
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else list(client.search_runs([found.experiment_id]))


def _models(client: Any, run_id: str) -> list[Any]:
    experiment = client.get_run(run_id).info.experiment_id
    return list(
        client.search_logged_models([experiment], filter_string=f"source_run_id = '{run_id}'")
    )


def _steps(client: Any, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_a_pipeline_fit_logs_once_into_the_active_run(
    tracker: trackkit.Tracker, mlflow_client: Any
) -> None:
    pipe = make_pipeline(DictVectorizer(), LinearRegression())
    with trackkit.start_run(experiment="auto") as run:
        pipe.fit(ROWS, TARGET)
    data = mlflow_client.get_run(run.id).data
    # the pipeline's params, flattened as trackkit flattens params (inner fits log nothing)
    assert data.params["linearregression__fit_intercept"] == "True"
    assert data.params["dictvectorizer__sparse"] == "True"
    assert data.tags["estimator_name"] == "Pipeline"
    assert data.tags["estimator_class"] == "sklearn.pipeline.Pipeline"
    for key in (
        "training_score",
        "training_mean_squared_error",
        "training_root_mean_squared_error",
        "training_mean_absolute_error",
        "training_r2_score",
    ):
        assert key in data.metrics, key
    predicted = pipe.predict(ROWS)
    rmse = float(np.sqrt(np.mean((np.asarray(TARGET) - predicted) ** 2)))
    assert data.metrics["training_root_mean_squared_error"] == pytest.approx(rmse)
    assert data.metrics["training_score"] == pytest.approx(pipe.score(ROWS, TARGET))
    [model] = _models(mlflow_client, run.id)  # one model: the pipeline's, not its steps'
    info = mlflow.models.get_model_info(f"models:/{model.model_id}")
    assert info.signature.inputs.input_names() == ["PU_DO", "trip_distance"]
    assert "sklearn" in info.flavors
    loaded = tracker.load_model(f"models:/{model.model_id}")
    assert list(loaded.predict(ROWS[:3])) == list(predicted[:3])
    assert [r.info.run_id for r in _runs(mlflow_client, "auto")] == [run.id]


def test_without_an_active_run_each_fit_gets_a_run_of_its_own(
    tracker: trackkit.Tracker, mlflow_client: Any
) -> None:
    X = np.arange(40, dtype=float).reshape(20, 2)
    y = X @ np.array([1.0, 2.0])
    Ridge(alpha=0.5).fit(X, y)
    LinearRegression().fit(X, y)
    runs = _runs(mlflow_client)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.params.get("alpha") for r in runs} == {"0.5", None}
    assert trackkit.active_run() is None
    last = trackkit.last_active_run()
    assert last is not None and last.params.get("fit_intercept") == "True"
    [model] = _models(mlflow_client, last.id)
    signature = mlflow.models.get_model_info(f"models:/{model.model_id}").signature
    assert signature.inputs.to_dict() == [
        {"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": (-1, 2)}}
    ]
    assert signature.outputs is not None


def test_a_failing_fit_ends_its_own_run_failed(
    tracker: trackkit.Tracker, mlflow_client: Any
) -> None:
    with pytest.raises(ValueError):
        LinearRegression().fit([[1.0], [2.0]], [1.0])  # inconsistent lengths
    [run] = _runs(mlflow_client)
    assert run.info.status == "FAILED"


def test_a_search_logs_once_with_its_best_params(
    tracker: trackkit.Tracker, mlflow_client: Any
) -> None:
    X = np.random.default_rng(0).normal(size=(40, 3))
    y = X @ np.array([1.0, -2.0, 0.5])
    with trackkit.start_run() as run:
        GridSearchCV(Ridge(), {"alpha": [0.1, 1.0, 10.0]}, cv=3).fit(X, y)
    data = mlflow_client.get_run(run.id).data
    assert data.params["best_alpha"] == "0.1"
    assert data.params["estimator"] == "Ridge()"
    assert "best_cv_score" in data.metrics and "training_score" in data.metrics
    assert len(_models(mlflow_client, run.id)) == 1
    assert len(_runs(mlflow_client)) == 1  # the search's 9 fits opened no runs


def test_classifier_metrics_as_mlflow_computes_them(
    tracker: trackkit.Tracker, mlflow_client: Any
) -> None:
    from sklearn.datasets import load_iris
    from sklearn.metrics import f1_score, log_loss

    X, y = load_iris(return_X_y=True)
    with trackkit.start_run() as run:
        model = LogisticRegression(max_iter=500).fit(X, y)
    metrics = mlflow_client.get_run(run.id).data.metrics
    assert metrics["training_f1_score"] == pytest.approx(
        f1_score(y, model.predict(X), average="weighted")
    )
    assert metrics["training_log_loss"] == pytest.approx(log_loss(y, model.predict_proba(X)))
    for key in (
        "training_precision_score",
        "training_recall_score",
        "training_accuracy_score",
        "training_roc_auc",
    ):
        assert key in metrics, key


def test_xgboost_train_logs_each_round_at_its_step(
    tracker: trackkit.Tracker, mlflow_client: Any
) -> None:
    xgb = pytest.importorskip("xgboost")
    rng = np.random.default_rng(1)
    X = rng.normal(size=(80, 3))
    y = X @ np.array([2.0, 0.0, -1.0])
    train, valid = xgb.DMatrix(X[:60], y[:60]), xgb.DMatrix(X[60:], y[60:])
    params = {"max_depth": 3, "learning_rate": 0.3, "objective": "reg:squarederror"}
    with trackkit.start_run() as run:
        booster = xgb.train(
            params, train, num_boost_round=8, evals=[(train, "train"), (valid, "validation")]
        )
    assert params == {"max_depth": 3, "learning_rate": 0.3, "objective": "reg:squarederror"}
    data = mlflow_client.get_run(run.id).data
    assert data.params["max_depth"] == "3" and data.params["num_boost_round"] == "8"
    points = _steps(mlflow_client, run.id, "validation-rmse")
    assert [s for s, _ in points] == list(range(8))
    assert [s for s, _ in _steps(mlflow_client, run.id, "train-rmse")] == list(range(8))
    [model] = _models(mlflow_client, run.id)
    info = mlflow.models.get_model_info(f"models:/{model.model_id}")
    assert "xgboost" in info.flavors
    assert info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 3)
    loaded = tracker.load_model(f"models:/{model.model_id}")
    assert np.allclose(loaded.predict(valid), booster.predict(valid))


def test_the_xgboost_sklearn_api_logs_rounds_params_and_model(
    tracker: trackkit.Tracker, mlflow_client: Any
) -> None:
    xgb = pytest.importorskip("xgboost")
    X = np.random.default_rng(2).normal(size=(60, 2))
    y = X[:, 0] * 3
    with trackkit.start_run() as run:
        xgb.XGBRegressor(n_estimators=5, max_depth=2).fit(X, y, eval_set=[(X, y)], verbose=False)
    data = mlflow_client.get_run(run.id).data
    assert data.params["n_estimators"] == "5" and data.params["max_depth"] == "2"
    assert [s for s, _ in _steps(mlflow_client, run.id, "validation_0-rmse")] == list(range(5))
    assert "training_r2_score" in data.metrics
    assert len(_models(mlflow_client, run.id)) == 1


def test_lightgbm_train_and_its_sklearn_api(tracker: trackkit.Tracker, mlflow_client: Any) -> None:
    lgb = pytest.importorskip("lightgbm")
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 3))
    y = X @ np.array([1.0, 2.0, 0.0])
    train = lgb.Dataset(X[:150], y[:150])
    valid = lgb.Dataset(X[150:], y[150:], reference=train)
    callbacks: list[Any] = []
    with trackkit.start_run() as run:
        booster = lgb.train(
            {"objective": "regression", "verbose": -1, "num_leaves": 7},
            train,
            num_boost_round=6,
            valid_sets=[valid],
            valid_names=["valid"],
            callbacks=callbacks,
        )
    assert callbacks == []  # the caller's list is left alone
    data = mlflow_client.get_run(run.id).data
    assert data.params["num_leaves"] == "7" and data.params["num_boost_round"] == "6"
    assert [s for s, _ in _steps(mlflow_client, run.id, "valid-l2")] == list(range(6))
    [model] = _models(mlflow_client, run.id)
    loaded = tracker.load_model(f"models:/{model.model_id}")
    assert np.allclose(loaded.predict(X[:5]), booster.predict(X[:5]))
    pyfunc = mlflow.pyfunc.load_model(f"models:/{model.model_id}")
    assert np.allclose(pyfunc.predict(X[:5]), booster.predict(X[:5]))

    with trackkit.start_run() as run2:
        lgb.LGBMRegressor(n_estimators=4, verbose=-1).fit(X, y, eval_set=[(X[150:], y[150:])])
    assert [s for s, _ in _steps(mlflow_client, run2.id, "valid_0-l2")] == list(range(4))
    assert mlflow_client.get_run(run2.id).data.params["n_estimators"] == "4"
    assert len(_models(mlflow_client, run2.id)) == 1


def test_disable_restores_every_function_exactly(
    tracker: trackkit.Tracker, mlflow_client: Any
) -> None:
    xgb = pytest.importorskip("xgboost")
    lgb = pytest.importorskip("lightgbm")
    from sklearn.model_selection._search import BaseSearchCV
    from sklearn.pipeline import Pipeline

    owners = [
        (LinearRegression, "fit"),
        (Pipeline, "fit"),
        (BaseSearchCV, "fit"),
        (xgb, "train"),
        (xgb.XGBRegressor, "fit") if "fit" in vars(xgb.XGBRegressor) else (xgb.XGBModel, "fit"),
        (lgb, "train"),
        (lgb.LGBMRegressor, "fit"),
    ]
    originals = [vars(owner)[name].__wrapped__ for owner, name in owners]  # patched now
    trackkit.autolog(disable=True)
    assert not autolog_module.is_enabled()
    assert [vars(owner)[name] for owner, name in owners] == originals
    LinearRegression().fit([[1.0], [2.0]], [1.0, 2.0])
    assert _runs(mlflow_client) == []
    # enabling twice patches once; enabling without xgboost leaves it alone
    trackkit.autolog(xgboost=False, lightgbm=False)
    trackkit.autolog(xgboost=False, lightgbm=False)
    assert vars(LinearRegression)["fit"].__wrapped__ is originals[0]
    assert vars(xgb)["train"] is originals[3]


def test_log_models_false_logs_no_model(tracker: trackkit.Tracker, mlflow_client: Any) -> None:
    trackkit.autolog(log_models=False)
    with trackkit.start_run() as run:
        LinearRegression().fit([[1.0], [2.0], [3.0]], [1.0, 2.0, 3.0])
    assert "training_score" in mlflow_client.get_run(run.id).data.metrics
    assert _models(mlflow_client, run.id) == []


# -- the same on W&B offline and Neptune offline ---------------------------------------------------
def _fit_pipeline_with_autolog(tracker: trackkit.Tracker) -> tuple[trackkit.Run, Any]:
    trackkit.set_tracker(tracker)
    trackkit.autolog()
    try:
        pipe = make_pipeline(DictVectorizer(), LinearRegression())
        with trackkit.start_run(experiment="auto") as run:
            pipe.fit(ROWS, TARGET)
    finally:
        trackkit.autolog(disable=True)
    return run, pipe


def test_autolog_on_wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    if "wandb" not in trackkit.available_backends():
        pytest.skip("the wandb backend is not registered in this environment")
    from wandb_reader import FAST, WANDB_VARIABLES, WandbReader

    for variable in WANDB_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    tracker = trackkit.get_tracker("wandb", mode="offline", dir=tmp_path / "w", settings=FAST)
    run, pipe = _fit_pipeline_with_autolog(tracker)
    reader = WandbReader(tmp_path / "w")
    assert reader.params(run.id)["linearregression__fit_intercept"] == "True"
    [(step, value)] = reader.metric_points(run.id, "training_score")
    assert step == 0 and value == pytest.approx(pipe.score(ROWS, TARGET))
    assert reader.tags(run.id)["estimator_name"] == "Pipeline"
    [ref_run] = tracker.search_runs("auto")
    assert ref_run.id == run.id
    tracker.close()


def test_autolog_on_neptune_offline(tmp_path: Path) -> None:
    pytest.importorskip("neptune")
    from test_conformance_neptune import NeptuneOfflineReader

    tracker = trackkit.get_tracker(
        "neptune", mode="offline", data_dir=tmp_path / ".neptune", registry_path=tmp_path / "r.db"
    )
    run, pipe = _fit_pipeline_with_autolog(tracker)
    tracker.close()
    reader = NeptuneOfflineReader(tmp_path / ".neptune", tmp_path / "r.db")
    assert reader.params(run.id)["linearregression__fit_intercept"] == "True"
    [(step, value)] = reader.metric_points(run.id, "training_score")
    assert step == 0 and value == pytest.approx(pipe.score(ROWS, TARGET))
    files = reader.artifact_files(run.id)
    assert "model/trackkit-model.json" in files and "model/model.pkl" in files
    import json

    info = json.loads(reader.artifact_text(run.id, "model/trackkit-model.json"))
    assert [c["name"] for c in info["signature"]["inputs"]] == ["PU_DO", "trip_distance"]
