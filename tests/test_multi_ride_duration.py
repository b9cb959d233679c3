"""The ride-duration example, unchanged, on MLflow and W&B at once, and the course's way of
working on both.

``TRACKKIT_BACKEND=mlflow,wandb TRACKKIT_OFFLINE=1 python -m examples.ride_duration``: then
MLflow's own client (on the example's sqlite store) and W&B's own reader (``wandb leet
inspect`` on the offline runs, the offline registry's sqlite file) must show the same runs,
params, tags, metric points, statuses, models and registry aliases.

The course's scripts enter a run with ``with tracker.start_run() as run:`` and let
``trackkit.autolog``, a hyperopt search and ``trackkit.log_metric`` log into it: with two
backends, that run is the active run too, and both readers show what they logged.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

import trackkit
from test_ride_duration_backends import (
    EXPERIMENT,
    MODEL_NAME,
    check_output,
    check_params,
    check_registry,
    run_example,
)
from trackkit.multi import MultiRun

pytest.importorskip("wandb")
mlflow = pytest.importorskip("mlflow")

from wandb_reader import FAST, WANDB_VARIABLES, WandbReader  # noqa: E402


@pytest.fixture(autouse=True)
def _wandb_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in WANDB_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_the_whole_flow_on_mlflow_and_wandb_at_once(tmp_path: Path) -> None:
    output = run_example("mlflow,wandb", tmp_path)
    flow_id = check_output(output)
    assert "backend:     MultiTracker(backends=['mlflow (sqlite:///" in output

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    reader = WandbReader(tmp_path / ".trackkit")
    wandb_runs: dict[str, dict[str, str]] = {}  # project -> run name -> W&B run id
    for directory in sorted(reader.wandb_dir.glob("offline-run-*")):
        run_id = directory.name.rsplit("-", 1)[1]
        [record] = reader.records(run_id, "run")[-1:]
        wandb_runs.setdefault(record["project"], {})[record["display_name"]] = run_id
    for experiment in (EXPERIMENT, f"{EXPERIMENT}-scoring"):
        found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
        mlflow_runs = {r.info.run_name: r for r in found}
        # the same runs, under the same names (the primary's) on both backends
        assert sorted(mlflow_runs) == sorted(wandb_runs[experiment]), experiment
        for name, run in mlflow_runs.items():
            theirs = wandb_runs[experiment][name]
            assert run.data.params == reader.params(theirs), name
            mine = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
            assert mine == reader.tags(theirs), name
            assert run.info.status == reader.status(theirs) == "FINISHED", name
            for key in run.data.metrics:
                points = sorted(
                    (m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)
                )
                assert points == sorted(reader.metric_points(theirs, key)), (name, key)
            if run.data.tags.get("flow_id") == flow_id and experiment == EXPERIMENT:
                check_params(run.data.params)
    # every training run's model on both: MLflow's logged model, W&B's model artifact
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    trained = {
        r.info.run_id: r.info.run_name
        for r in client.search_runs([experiment_id], filter_string=f"tags.flow_id = '{flow_id}'")
    }
    logged = {m.source_run_id for m in client.search_logged_models([experiment_id])}
    assert logged == set(trained)
    for name in trained.values():
        kinds = [a["type"] for a in reader.artifacts(wandb_runs[EXPERIMENT][name])]
        assert "model" in kinds, name
    # the registry: version 1 of the best run, staging and production, on both
    registered = client.get_registered_model(MODEL_NAME)
    assert {k: int(v) for k, v in registered.aliases.items()} == {"staging": 1, "production": 1}
    [version] = client.search_model_versions(f"name = '{MODEL_NAME}'")
    best = trained[version.run_id]
    assert "promoted to production (the first production version)" in version.description
    best_wandb = wandb_runs[EXPERIMENT][best]
    check_registry(
        tmp_path / ".trackkit" / "trackkit-wandb" / "registry.db",
        best_wandb,
        in_source=f"model-{best_wandb}:",
    )


def test_a_with_block_run_is_the_active_run_on_both(sqlite_uri: str, tmp_path: Path) -> None:
    """``with tracker.start_run() as run:`` on two backends: autolog, a hyperopt search (its
    trials as child runs) and ``trackkit.log_metric`` inside it log to both."""
    pytest.importorskip("sklearn")
    pytest.importorskip("hyperopt")
    import numpy as np
    from hyperopt import STATUS_OK, Trials, fmin, hp, tpe
    from sklearn.linear_model import LinearRegression

    from trackkit.integrations.hyperopt import tracked

    tracker = trackkit.get_tracker(
        ["mlflow", "wandb"],
        mlflow={"tracking_uri": sqlite_uri},
        wandb={"mode": "offline", "dir": tmp_path / "w", "settings": FAST},
        journal_dir=tmp_path / "tk",
    )
    features = np.arange(20.0).reshape(-1, 1)

    def objective(params: dict[str, Any]) -> dict[str, Any]:
        trackkit.log_metric("inside", params["alpha"])  # the trial is the active run
        return {"loss": (params["alpha"] - 0.3) ** 2, "status": STATUS_OK}

    trackkit.autolog()
    try:
        with tracker.start_run(experiment="active", name="search") as run:
            assert isinstance(run, MultiRun) and trackkit.active_run() is run
            trackkit.log_metric("outer", 1.0)
            trackkit.log_param("data", "rides")
            LinearRegression().fit(features, 2.0 * features[:, 0] + 1.0)  # autologged
            trials = Trials()
            fmin(
                fn=tracked(objective),
                space={"alpha": hp.uniform("alpha", 0.0, 1.0)},
                algo=tpe.suggest,
                max_evals=3,
                trials=trials,
                rstate=np.random.default_rng(0),
                show_progressbar=False,
            )
            assert trackkit.active_run() is run  # each trial handed it back
        assert trackkit.active_run() is None
    finally:
        trackkit.autolog(disable=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tracker.close()

    client = mlflow.MlflowClient(tracking_uri=sqlite_uri)
    reader = WandbReader(tmp_path / "w")
    ids = run.ids
    mine = client.get_run(ids["mlflow"]).data
    assert mine.params == reader.params(ids["wandb"])
    assert mine.params["data"] == "rides" and mine.params["fit_intercept"] == "True"
    assert mine.tags["estimator_name"] == reader.tags(ids["wandb"])["estimator_name"]
    for key in ("outer", "training_score", "training_r2_score"):
        assert key in mine.metrics, key
        history = client.get_metric_history(ids["mlflow"], key)
        assert sorted((m.step, m.value) for m in history) == sorted(
            reader.metric_points(ids["wandb"], key)
        ), key
    models = client.search_logged_models(
        [client.get_run(ids["mlflow"]).info.experiment_id],
        filter_string=f"source_run_id = '{ids['mlflow']}'",
    )
    assert len(models) == 1  # autolog's model, on both
    assert "model" in [a["type"] for a in reader.artifacts(ids["wandb"])]
    # the trials: children of the run on both, each with its own metrics
    experiment = client.get_run(ids["mlflow"]).info.experiment_id
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{ids['mlflow']}'")
    assert sorted(c.info.run_name for c in children) == [f"trial-{i}" for i in range(3)]
    for child in children:
        theirs = tracker.run_ids(child.info.run_id)["wandb"]
        assert reader.parent_id(theirs) == ids["wandb"]
        assert child.data.params == reader.params(theirs)
        assert child.info.status == reader.status(theirs) == "FINISHED"
        for key in ("inside", "loss"):
            points = client.get_metric_history(child.info.run_id, key)
            assert [(m.step, m.value) for m in points] == reader.metric_points(theirs, key)
    assert run.delivered
