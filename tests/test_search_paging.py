"""Searches that need more than one page of MLflow's answer return every run, in order.

MLflow's sqlite store answers up to 50,000 runs a page (``SEARCH_PAGE``); the backend follows
its page tokens past that. Here the page is made small so a few runs take several pages, and
the result is compared with what ``MlflowClient`` itself returns on the same store.
"""

from __future__ import annotations

import pytest

import trackkit
from trackkit.errors import InvalidInput

pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient

from trackkit.backends import mlflow as mlflow_backend


@pytest.fixture
def many(mlflow_client: MlflowClient) -> list[str]:
    """30 runs with a metric, created with MLflow's own client."""
    experiment = mlflow_client.create_experiment("many")
    ids = []
    for i in range(30):
        run = mlflow_client.create_run(experiment, run_name=f"r{i:02d}")
        mlflow_client.log_metric(run.info.run_id, "rmse", float((i * 7) % 30))
        mlflow_client.set_terminated(run.info.run_id)
        ids.append(run.info.run_id)
    return ids


def test_a_search_follows_mlflow_s_page_tokens_to_the_last_run(
    mlflow_tracker: trackkit.Tracker,
    mlflow_client: MlflowClient,
    many: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mlflow_backend, "SEARCH_PAGE", 7)  # 30 runs: 5 pages
    experiment = mlflow_client.get_experiment_by_name("many")
    assert experiment is not None
    native = mlflow_client.search_runs(
        [experiment.experiment_id], order_by=["metrics.rmse ASC"], max_results=1000
    )
    found = mlflow_tracker.search_runs("many", order_by="metrics.rmse", max_results=50_000)
    assert [r.id for r in found] == [r.info.run_id for r in native] and len(found) == 30
    assert [
        r.id for r in mlflow_tracker.search_runs("many", order_by="metrics.rmse", max_results=12)
    ] == [r.info.run_id for r in native[:12]]
    # a filter MLflow evaluates exactly, without an order: the first page is MLflow's own
    newest = mlflow_tracker.search_runs("many", filter="metrics.rmse >= 0", max_results=20)
    assert {r.id for r in newest} <= set(many) and len(newest) == 20
    assert set(r.id for r in mlflow_tracker.search_runs("many", max_results=50_000)) == set(many)


def test_max_results_is_bounded_at_50000(mlflow_tracker: trackkit.Tracker) -> None:
    with pytest.raises(InvalidInput, match="50000"):
        mlflow_tracker.search_runs("many", max_results=50_001)
