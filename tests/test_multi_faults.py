"""A real `mlflow server` dies mid-run and comes back while W&B (offline) keeps receiving.

The dead server costs W&B nothing: its lane delivers every point and the run's end while
MLflow is still down. Once the server is back, MLflow gets the rest. Both backends' own
readers then show every point exactly once and the run FINISHED.
"""

from __future__ import annotations

import statistics
import time
import warnings
from pathlib import Path

import pytest

import trackkit
from conftest import _free_port, healthy, start_mlflow_server
from conftest import stop_mlflow_server as _stop
from trackkit.multi import MultiRun

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("wandb")
pytestmark = pytest.mark.server

from wandb_reader import FAST, WANDB_VARIABLES, WandbReader  # noqa: E402


@pytest.fixture(autouse=True)
def _wandb_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in WANDB_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_mlflow_server_dies_and_comes_back_while_wandb_keeps_receiving(tmp_path: Path) -> None:
    port = _free_port()
    server, url = start_mlflow_server(tmp_path / "srv", port)
    tracker = trackkit.get_tracker(
        ["mlflow", "wandb"],
        mlflow={"tracking_uri": url},
        wandb={"mode": "offline", "dir": tmp_path / "w", "settings": FAST},
        flush_interval=0.2,
        end_timeout=600,  # the restarted server may take minutes on a loaded machine
    )
    restarted = None
    points, costs = 600, []
    try:
        with pytest.warns(trackkit.TrackkitWarning, match="mlflow .* backend failed"):
            run = tracker.start_run(experiment="outage")
            assert isinstance(run, MultiRun)
            run.log_params({"model": {"alpha": 0.5}})
            for i in range(points):
                if i == 200:
                    _stop(server)  # the service dies mid-run
                started = time.perf_counter()
                run.log_metric("loss", 1.0 / (i + 1))
                run.log_metric("acc", i / points, step=i)
                costs.append(time.perf_counter() - started)
                time.sleep(0.005)  # a training step
            run.close("FINISHED")  # both ends queued; nothing waits yet
            # W&B's lane finishes on its own while MLflow is still down
            assert run.runs["wandb"].flush(timeout=300)
            assert run.runs["wandb"].delivered
            assert not healthy(url) and not run.runs["mlflow"].delivered
            lanes = tracker.describe().splitlines()
            assert "failing (" in lanes[0] and lanes[1].endswith("all delivered"), lanes
            reader = WandbReader(tmp_path / "w")
            wandb_id = run.ids["wandb"]
            assert sorted(reader.metric_points(wandb_id, "loss")) == [
                (i, 1.0 / (i + 1)) for i in range(points)
            ]
            assert reader.status(wandb_id) == "FINISHED"
            restarted, _ = start_mlflow_server(tmp_path / "srv", port)  # it comes back
            run.settle("FINISHED")  # and MLflow gets the rest
        assert run.delivered
        client = mlflow.MlflowClient(tracking_uri=url)
        for key in ("loss", "acc"):
            steps = sorted(m.step for m in client.get_metric_history(run.id, key))
            assert steps == list(range(points)), key  # every point exactly once
            assert sorted(p[0] for p in reader.metric_points(wandb_id, key)) == steps
        assert client.get_run(run.id).info.status == "FINISHED"
        assert client.get_run(run.id).data.params == reader.params(wandb_id)
        assert not run.runs["mlflow"].journal.path.exists()
        assert not run.runs["wandb"].journal.path.exists()
        print(
            f"\nlog_metric during the outage: median {statistics.median(costs) * 1e6:.1f} us, "
            f"worst {max(costs) * 1000:.2f} ms"
        )
        assert max(costs) < 1.0  # the loop never waited on the network
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tracker.close()
        if restarted is not None:
            _stop(restarted)
