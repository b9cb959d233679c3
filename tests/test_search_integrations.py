"""Optuna and hyperopt: each trial is a child run of the search's run, read back with MLflow's client.

On a backend without nested runs (Neptune debug, narrowed to declare none), trials are
top-level runs tagged with the search's run id, and nothing crashes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import trackkit
from trackkit.errors import MissingDependencyError
from trackkit.integrations import SEARCH_RUN_TAG

PARENT_TAG = "mlflow.parentRunId"


def _without_nested_runs(tracker: trackkit.Tracker) -> trackkit.Tracker:
    """The tracker's backend, narrowed to a backend that stores no parent link."""
    capabilities = dataclasses.replace(tracker.backend.capabilities, nested_runs=False)
    tracker.backend.capabilities = capabilities  # an instance may narrow its capabilities
    return tracker


@pytest.fixture
def tracker(sqlite_uri: str) -> Iterator[trackkit.Tracker]:
    pytest.importorskip("mlflow")
    tracker = trackkit.get_tracker("mlflow", tracking_uri=sqlite_uri)
    trackkit.set_tracker(tracker)
    yield tracker
    tracker.close()


def _children(client: Any, parent_id: str) -> dict[str, Any]:
    experiment = client.get_run(parent_id).info.experiment_id
    runs = client.search_runs([experiment], f"tags.`{PARENT_TAG}` = '{parent_id}'")
    return {r.info.run_name: r for r in runs}


def test_optuna_trials_are_child_runs_with_their_states(
    tracker: trackkit.Tracker, mlflow_client: Any
) -> None:
    optuna = pytest.importorskip("optuna")
    from trackkit.integrations.optuna import TrackkitCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: Any) -> float:
        x = trial.suggest_float("x", -4.0, 4.0)
        depth = trial.suggest_int("max_depth", 2, 8)
        if trial.number == 1:
            trial.report(9.0, step=0)
            raise optuna.TrialPruned()
        if trial.number == 2:
            raise ValueError("a broken trial")
        return (x - 1.0) ** 2 + depth

    study = optuna.create_study(
        study_name="xgb-search", sampler=optuna.samplers.RandomSampler(seed=0)
    )
    with trackkit.start_run(experiment="search", name="search") as parent:
        study.optimize(
            objective,
            n_trials=5,
            callbacks=[TrackkitCallback(metric_name="rmse")],
            catch=(ValueError,),
        )
    trials = _children(mlflow_client, parent.id)
    assert sorted(trials) == [f"trial-{i}" for i in range(5)]
    done = trials["trial-0"]
    assert done.info.status == "FINISHED"
    assert float(done.data.params["x"]) == pytest.approx(study.trials[0].params["x"])
    assert done.data.params["max_depth"] == str(study.trials[0].params["max_depth"])
    assert done.data.metrics["rmse"] == pytest.approx(study.trials[0].value)
    assert done.data.tags["optuna.trial_number"] == "0"
    assert done.data.tags["optuna.state"] == "COMPLETE"
    assert done.data.tags["optuna.study"] == "xgb-search"
    pruned = trials["trial-1"]
    assert pruned.info.status == "KILLED" and pruned.data.tags["pruned"] == "true"
    history = mlflow_client.get_metric_history(pruned.info.run_id, "intermediate_value")
    assert [(m.step, m.value) for m in history] == [(0, 9.0)]
    # Optuna gives a pruned trial its last reported value
    assert pruned.data.metrics["rmse"] == study.trials[1].value == 9.0
    assert trials["trial-2"].info.status == "FAILED"
    assert trials["trial-2"].data.tags["optuna.state"] == "FAIL"
    # the parent holds no trial data; search through trackkit sees the children too
    found = tracker.search_runs("search", filter=f"attributes.parent_id = '{parent.id}'")
    assert len(found) == 5


def test_optuna_multi_objective_values(tracker: trackkit.Tracker, mlflow_client: Any) -> None:
    optuna = pytest.importorskip("optuna")
    from trackkit.integrations.optuna import TrackkitCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize", "maximize"])
    with trackkit.start_run() as parent:
        study.optimize(
            lambda t: (t.suggest_float("a", 0, 1), 2.0),
            n_trials=2,
            callbacks=[TrackkitCallback()],
        )
    for run in _children(mlflow_client, parent.id).values():
        assert set(run.data.metrics) == {"value_0", "value_1"}
        assert run.data.tags["optuna.direction"] == "minimize,maximize"


def test_hyperopt_evaluations_are_child_runs(tracker: trackkit.Tracker, mlflow_client: Any) -> None:
    hyperopt = pytest.importorskip("hyperopt")
    import numpy as np
    from hyperopt import STATUS_FAIL, STATUS_OK, Trials, fmin, hp, tpe

    from trackkit.integrations.hyperopt import tracked

    def objective(params: dict[str, Any]) -> dict[str, Any]:
        trackkit.log_metric("inside", 1.0)  # the trial is the active run while it runs
        if params["max_depth"] > 40:
            return {"status": STATUS_FAIL}
        return {"loss": (params["learning_rate"] - 0.1) ** 2, "status": STATUS_OK}

    space = {
        "max_depth": hp.quniform("max_depth", 4, 60, 1),
        "learning_rate": hp.loguniform("learning_rate", -3, 0),
        "objective": "reg:squarederror",
    }
    trials = Trials()
    with trackkit.start_run(experiment="hyper", name="search") as parent:
        fmin(
            fn=tracked(objective),
            space=space,
            algo=tpe.suggest,
            max_evals=6,
            trials=trials,
            rstate=np.random.default_rng(0),
            show_progressbar=False,
        )
    children = _children(mlflow_client, parent.id)
    assert sorted(children) == [f"trial-{i}" for i in range(6)]
    for i, result in enumerate(trials.results):
        run = children[f"trial-{i}"]
        assert run.data.metrics["inside"] == 1.0
        assert run.data.params["objective"] == "reg:squarederror"
        sampled = trials.trials[i]["misc"]["vals"]
        assert float(run.data.params["max_depth"]) == pytest.approx(sampled["max_depth"][0])
        if result["status"] == STATUS_OK:
            assert run.info.status == "FINISHED"
            assert run.data.metrics["loss"] == pytest.approx(result["loss"])
        else:
            assert run.info.status == "FAILED" and "loss" not in run.data.metrics
    assert trackkit.active_run() is None
    assert hyperopt is not None


def test_trials_on_a_backend_without_nested_runs_are_tagged(tmp_path: Path) -> None:
    optuna = pytest.importorskip("optuna")
    pytest.importorskip("neptune")
    from trackkit.integrations.optuna import TrackkitCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tracker = _without_nested_runs(trackkit.get_tracker("neptune", mode="debug"))
    trackkit.set_tracker(tracker)
    study = optuna.create_study()
    with trackkit.start_run(experiment="search", name="search") as parent:
        study.optimize(
            lambda t: t.suggest_float("x", 0, 1), n_trials=3, callbacks=[TrackkitCallback()]
        )
    trials = tracker.search_runs("search", filter=f"tags.`{SEARCH_RUN_TAG}` = '{parent.id}'")
    assert sorted(r.name for r in trials) == ["trial-0", "trial-1", "trial-2"]
    assert all(r.experiment == "search" and r.parent_id is None for r in trials)
    tracker.close()


def test_missing_libraries_name_their_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from trackkit.integrations import hyperopt as tk_hyperopt
    from trackkit.integrations import optuna as tk_optuna

    monkeypatch.setitem(sys.modules, "optuna", None)
    monkeypatch.setitem(sys.modules, "hyperopt", None)
    with pytest.raises(MissingDependencyError, match=r"trackkit\[optuna\]"):
        tk_optuna.TrackkitCallback()
    with pytest.raises(MissingDependencyError, match=r"trackkit\[hyperopt\]"):
        tk_hyperopt.tracked(lambda p: 0.0)


def _small_training(tmp_path: Path) -> Any:
    from examples.ride_duration import data
    from examples.ride_duration.train import TrainingData

    paths = data.write_synthetic_months(tmp_path / "data", ["2021-01", "2021-02"], rows=400)
    return TrainingData.load(paths[0], paths[1], synthetic=True, seed=42)


def test_the_example_search_puts_its_trials_under_one_parent(
    tracker: trackkit.Tracker, mlflow_client: Any, tmp_path: Path
) -> None:
    pytest.importorskip("hyperopt")
    pytest.importorskip("xgboost")
    from examples.ride_duration import search

    results = search.search(
        tracker, _small_training(tmp_path), 2, experiment="ride", rounds=5, tags={"flow_id": "f"}
    )
    experiment = mlflow_client.get_experiment_by_name("ride").experiment_id
    [parent] = mlflow_client.search_runs([experiment], "attributes.run_name = 'xgboost-search'")
    assert "flow_id" not in parent.data.tags  # the flow's training runs are the trials
    assert parent.data.metrics["best_rmse"] == pytest.approx(min(r.rmse for r in results))
    children = _children(mlflow_client, parent.info.run_id)
    assert sorted(children) == ["xgboost-search-0", "xgboost-search-1"]
    for result in results:
        run = children[result.run_name]
        assert run.info.run_id == result.run_id and run.info.status == "FINISHED"
        assert run.data.tags["flow_id"] == "f" and run.data.params["model.type"] == "xgboost"
        assert run.data.metrics["loss"] == pytest.approx(run.data.metrics["rmse"])


def test_the_example_search_runs_on_a_backend_without_nested_runs(tmp_path: Path) -> None:
    pytest.importorskip("hyperopt")
    pytest.importorskip("xgboost")
    pytest.importorskip("neptune")
    from examples.ride_duration import search

    tracker = _without_nested_runs(trackkit.get_tracker("neptune", mode="debug"))
    results = search.search(tracker, _small_training(tmp_path), 2, experiment="ride", rounds=5)
    [parent] = tracker.search_runs("ride", filter="attributes.run_name = 'xgboost-search'")
    trials = tracker.search_runs("ride", filter=f"tags.`{SEARCH_RUN_TAG}` = '{parent.id}'")
    assert sorted(t.id for t in trials) == sorted(r.run_id for r in results)
    tracker.close()
