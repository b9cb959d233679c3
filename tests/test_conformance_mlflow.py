"""The conformance suite on MLflow: a sqlite store, and a real `mlflow server` on 127.0.0.1.

Everything is read back through ``mlflow.MlflowClient``, never through trackkit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import trackkit
from trackkit.testing import ConformanceSuite

pytest.importorskip("mlflow")


class MLflowReader:
    """Reads runs and the registry with MLflow's own client."""

    def __init__(self, tracking_uri: str, tmp: Path) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.uri = tracking_uri
        self.tmp = tmp

    def params(self, run_id: str) -> dict[str, str]:
        return dict(self.client.get_run(run_id).data.params)

    def metric_points(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in self.client.get_metric_history(run_id, key)]

    def tags(self, run_id: str) -> dict[str, str]:
        tags = self.client.get_run(run_id).data.tags
        return {k: v for k, v in tags.items() if not k.startswith("mlflow.")}

    def status(self, run_id: str) -> str:
        return str(self.client.get_run(run_id).info.status)

    def artifact_files(self, run_id: str) -> set[str]:
        found: set[str] = set()
        todo: list[Any] = [None]
        while todo:
            for item in self.client.list_artifacts(run_id, todo.pop()):
                (todo.append(item.path) if item.is_dir else found.add(item.path))
        return found

    def artifact_text(self, run_id: str, path: str) -> str:
        import mlflow

        local = mlflow.artifacts.download_artifacts(
            run_id=run_id,
            artifact_path=path,
            dst_path=str(self.tmp / "read"),
            tracking_uri=self.uri,
        )
        return Path(local).read_text()

    def alias_version(self, name: str, alias: str) -> int | None:
        aliases = self.client.get_registered_model(name).aliases
        return int(aliases[alias]) if alias in aliases else None

    def model_versions(self, name: str) -> list[int]:
        return sorted(int(v.version) for v in self.client.search_model_versions(f"name = '{name}'"))

    def parent_id(self, run_id: str) -> str | None:
        return self.client.get_run(run_id).data.tags.get("mlflow.parentRunId")


class TestMLflowSqlite(ConformanceSuite):
    @pytest.fixture
    def tracker(self, sqlite_uri: str) -> trackkit.Tracker:
        return trackkit.get_tracker("mlflow", tracking_uri=sqlite_uri)

    @pytest.fixture
    def reader(self, sqlite_uri: str, tmp_path: Path) -> MLflowReader:
        return MLflowReader(sqlite_uri, tmp_path)


@pytest.mark.server
class TestMLflowServer(ConformanceSuite):
    @pytest.fixture
    def experiment_name(self, request: pytest.FixtureRequest) -> str:
        return f"conformance-{request.node.name}"[:200]

    @pytest.fixture
    def tracker(self, mlflow_server: str, experiment_name: str) -> trackkit.Tracker:
        self.experiment = experiment_name  # one experiment per test on the shared server
        # end() returns once the server took everything: on a loaded machine that can take
        # longer than the default 30 s, and these tests check delivery, not the timeout
        return trackkit.get_tracker("mlflow", tracking_uri=mlflow_server, end_timeout=600)

    @pytest.fixture
    def reader(self, mlflow_server: str, tmp_path: Path) -> MLflowReader:
        return MLflowReader(mlflow_server, tmp_path)
