"""The ride-duration example, unchanged, on MLflow and W&B at once.

``TRACKKIT_BACKEND=mlflow,wandb TRACKKIT_OFFLINE=1 python -m examples.ride_duration``: then
MLflow's own client (on the example's sqlite store) and W&B's own reader (``wandb leet
inspect`` on the offline runs, the offline registry's sqlite file) must show the same runs,
params, tags, metric points, statuses, models and registry aliases.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from test_ride_duration_backends import (
    EXPERIMENT,
    MODEL_NAME,
    check_output,
    check_params,
    check_registry,
    run_example,
)

pytest.importorskip("wandb")
mlflow = pytest.importorskip("mlflow")

from wandb_reader import WandbReader  # noqa: E402


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
