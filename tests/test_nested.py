"""Nested runs: a child run knows its parent, stored natively and read back by the SDK's reader.

MLflow stores the link as the ``mlflow.parentRunId`` tag (its UI nests runs by it); a backend
that does not declare ``nested_runs`` answers ``start_run(parent=...)`` with
UnsupportedOperation, and a third-party backend written before nested runs keeps working.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import trackkit
from recording import RecordingBackend
from trackkit.backend import Capabilities
from trackkit.entities import RunHandle
from trackkit.errors import InvalidInput, NotFound, UnsupportedOperation

mlflow = pytest.importorskip("mlflow")

PARENT_TAG = "mlflow.parentRunId"


def test_mlflow_stores_the_parent_tag_its_ui_nests_by(
    mlflow_tracker: trackkit.Tracker, mlflow_client
) -> None:  # type: ignore[no-untyped-def]
    with mlflow_tracker.start_run(experiment="search", name="parent") as parent:
        with mlflow_tracker.start_run(name="trial-0", parent=parent) as child:
            child.log_metric("loss", 0.5)
        grandchild = mlflow_tracker.start_run(parent=child.id, experiment="search")
        grandchild.end()
    assert child.experiment == "search"  # a child defaults to its parent's experiment
    run = mlflow_client.get_run(child.id)
    assert run.data.tags[PARENT_TAG] == parent.id
    assert mlflow_client.get_run(grandchild.id).data.tags[PARENT_TAG] == child.id
    assert PARENT_TAG not in mlflow_client.get_run(parent.id).data.tags
    # MLflow's own search finds the children by the tag, as its UI does
    experiment = mlflow_client.get_experiment_by_name("search").experiment_id
    found = mlflow_client.search_runs([experiment], f"tags.`{PARENT_TAG}` = '{parent.id}'")
    assert [r.info.run_id for r in found] == [child.id]
    assert mlflow_tracker.get_run(child.id).parent_id == parent.id
    assert mlflow_tracker.get_run(parent.id).parent_id is None


def test_fluent_nested_makes_the_active_run_the_parent(sqlite_uri: str, mlflow_client) -> None:  # type: ignore[no-untyped-def]
    trackkit.set_tracker(trackkit.get_tracker("mlflow", tracking_uri=sqlite_uri))
    trackkit.set_experiment("fluent-search")
    with trackkit.start_run(name="outer") as outer:
        with trackkit.start_run(nested=True, name="inner") as inner:
            trackkit.log_metric("loss", 1.0)
        assert trackkit.active_run() is outer
    assert inner.experiment == outer.experiment == "fluent-search"
    assert mlflow_client.get_run(inner.id).data.tags[PARENT_TAG] == outer.id
    # nested=True with no active run starts a top-level run, as in MLflow
    with trackkit.start_run(nested=True) as alone:
        pass
    assert PARENT_TAG not in mlflow_client.get_run(alone.id).data.tags
    last = trackkit.last_active_run()
    assert last is not None and last.id == alone.id and last.status == "FINISHED"
    trackkit.get_default_tracker().close()


def test_bad_parents_are_refused(mlflow_tracker: trackkit.Tracker) -> None:
    with pytest.raises(InvalidInput, match="parent must be a Run or a run id"):
        mlflow_tracker.start_run(parent=42)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="not with run_id"):
        mlflow_tracker.start_run(parent="abc", run_id="def")
    with pytest.raises(NotFound, match="parent run"):
        mlflow_tracker.start_run(parent="0" * 32)
    mlflow_tracker.close()


class _OldBackend(RecordingBackend):
    """A third-party backend written before nested runs: start_run has no parent_id."""

    name = "old"


class _NestingBackend(RecordingBackend):
    name = "nesting"
    capabilities = Capabilities(nested_runs=True)

    def __init__(self) -> None:
        super().__init__()
        self.parents: dict[str, str | None] = {}

    def start_run(  # type: ignore[override]
        self,
        experiment: str | None,
        name: str | None,
        run_id: str | None,
        *,
        parent_id: str | None = None,
    ) -> RunHandle:
        handle = RunHandle(id=f"n{len(self.parents)}", name=name or "n", experiment="e")
        self.parents[handle.id] = parent_id
        return handle


def test_a_backend_without_nested_runs_keeps_working_and_refuses_a_parent(tmp_path: Path) -> None:
    tracker = trackkit.Tracker(_OldBackend(), journal_dir=tmp_path / "j")
    with tracker.start_run(experiment="e") as run:  # no parent: the old signature is called
        run.log_metric("m", 1.0)
        with pytest.raises(UnsupportedOperation, match="old backend does not support"):
            tracker.start_run(parent=run)
    tracker.close()


def test_the_core_passes_parent_id_only_when_a_parent_is_given(tmp_path: Path) -> None:
    backend = _NestingBackend()
    tracker = trackkit.Tracker(backend, journal_dir=tmp_path / "j")
    with tracker.start_run(experiment="e") as parent, tracker.start_run(parent=parent):
        pass
    assert backend.parents == {"n0": None, "n1": "n0"}
    tracker.close()


def test_a_child_started_while_the_server_is_down_keeps_its_parent_through_sync(
    tmp_path: Path,
) -> None:
    from conftest import _free_port, start_mlflow_server, stop_mlflow_server

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    tracker = trackkit.get_tracker("mlflow", tracking_uri=url, flush_interval=0.2, end_timeout=1)
    with pytest.warns(trackkit.TrackkitWarning):
        parent = tracker.start_run(experiment="offline-search", name="search")
        with parent:
            for i in range(3):
                with tracker.start_run(name=f"trial-{i}", parent=parent) as child:
                    child.log_metric("loss", float(i))
    tracker.close()
    assert parent.id.startswith("local-") and child.parent_id == parent.id

    (tmp_path / "srv").mkdir()
    server, _ = start_mlflow_server(tmp_path / "srv", port)
    try:
        results = trackkit.sync(tracking_uri=url)
        assert sorted(r.outcome for r in results) == ["delivered"] * 4
        client = mlflow.MlflowClient(tracking_uri=url)
        experiment = client.get_experiment_by_name("offline-search").experiment_id
        runs = {r.info.run_name: r for r in client.search_runs([experiment])}
        assert sorted(runs) == ["search", "trial-0", "trial-1", "trial-2"]
        parent_id = runs["search"].info.run_id
        for i in range(3):
            assert runs[f"trial-{i}"].data.tags[PARENT_TAG] == parent_id
        assert PARENT_TAG not in runs["search"].data.tags
    finally:
        stop_mlflow_server(server)
