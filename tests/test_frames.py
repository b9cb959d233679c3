"""Search results as DataFrames: MLflow's own ``mlflow.search_runs`` frame, column for column.

The same runs are read with ``mlflow.search_runs`` on the same sqlite store and compared with
trackkit's frame: the same columns, dtypes and values, plus ``run_name``, ``parent_id`` and
``backend``. The same script on W&B offline and Neptune offline/debug gives the same layout.
Without pandas (made unimportable in a subprocess), asking for a frame raises
MissingDependencyError naming the extra, and lists still work.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import trackkit
from trackkit.frames import EXTRA_COLUMNS, HISTORY_COLUMNS, INFO_COLUMNS

pd = pytest.importorskip("pandas")

EXPERIMENT = "frames"


def _log_runs(tracker: trackkit.Tracker) -> dict[str, trackkit.Run]:
    """Runs whose keys differ: missing params, metrics and tags, NaN, a failed and an open run."""
    runs: dict[str, trackkit.Run] = {}
    specs: list[dict[str, Any]] = [
        {"name": "lasso", "params": {"model": "lasso", "alpha": 0.1}, "metrics": {"rmse": 7.1}},
        {"name": "ridge", "params": {"model": "ridge"}, "metrics": {"rmse": 6.5, "r2": 0.6}},
        {"name": "nan", "params": {"model": "xgb", "depth": 7}, "metrics": {"rmse": math.nan}},
        {"name": "bare", "params": {}, "metrics": {}, "tags": {}},
    ]
    for spec in specs:
        run = tracker.start_run(
            experiment=EXPERIMENT, name=spec["name"], tags=spec.get("tags", {"dev": "ana"})
        )
        run.log_params(spec["params"])
        for step in range(3):  # the frame holds the latest value of each metric
            run.log_metrics({k: v + step for k, v in spec["metrics"].items()}, step=step)
        run.end("FAILED" if spec["name"] == "ridge" else "FINISHED")
        runs[spec["name"]] = run
    return runs


# -- MLflow: the same frame as mlflow.search_runs -----------------------------------------------
@pytest.fixture
def mlflow_runs(sqlite_uri: str) -> Iterator[tuple[trackkit.Tracker, dict[str, trackkit.Run]]]:
    pytest.importorskip("mlflow")
    tracker = trackkit.get_tracker("mlflow", tracking_uri=sqlite_uri)
    runs = _log_runs(tracker)
    child = tracker.start_run(experiment=EXPERIMENT, name="child", parent=runs["lasso"])
    child.log_metric("rmse", 5.0)
    runs["child"] = child  # left open: RUNNING, no end time
    yield tracker, runs
    child.end()
    tracker.close()


def _mlflow_frame(sqlite_uri: str, order_by: list[str]) -> Any:
    import mlflow

    mlflow.set_tracking_uri(sqlite_uri)
    try:
        return mlflow.search_runs(experiment_names=[EXPERIMENT], order_by=order_by)
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.parametrize(
    "order_by",
    [["metrics.rmse DESC"], ["attributes.run_name"], ["params.model ASC"], []],
    ids=["rmse", "name", "param", "default"],
)
def test_the_frame_is_mlflow_search_runs_frame(
    mlflow_runs: tuple[trackkit.Tracker, dict[str, trackkit.Run]],
    sqlite_uri: str,
    order_by: list[str],
) -> None:
    tracker, runs = mlflow_runs
    ours = tracker.search_runs(EXPERIMENT, order_by=order_by, output_format="pandas")
    theirs = _mlflow_frame(sqlite_uri, order_by)
    assert len(ours) == len(runs) == len(theirs)
    assert sorted(ours.columns) == sorted([*theirs.columns, *EXTRA_COLUMNS])
    assert list(ours.columns[:6]) == list(theirs.columns[:6]) == list(INFO_COLUMNS)
    assert "tags.mlflow.runName" in ours.columns and "tags.mlflow.parentRunId" in ours.columns
    # rows follow order_by, as trackkit's list does (MLflow orders ties its own way: compare
    # the values run by run)
    listed = tracker.search_runs(EXPERIMENT, order_by=order_by)
    assert list(ours["run_id"]) == [r.id for r in listed]
    if order_by and order_by != ["params.model ASC"]:  # no ties: MLflow's order is the same
        assert list(ours["run_id"]) == list(theirs["run_id"])
    mine = ours[list(theirs.columns)].sort_values("run_id").reset_index(drop=True)
    native = theirs.sort_values("run_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, native)  # values and dtypes
    assert dict(ours.dtypes[list(theirs.columns)]) == dict(theirs.dtypes)


def test_trackkit_columns_and_missing_values(
    mlflow_runs: tuple[trackkit.Tracker, dict[str, trackkit.Run]],
) -> None:
    tracker, runs = mlflow_runs
    frame = tracker.search_runs(EXPERIMENT, order_by="attributes.run_name", output_format="pandas")
    assert list(frame.columns[-3:]) == list(EXTRA_COLUMNS)
    rows = {row["run_name"]: row for row in frame.to_dict("records")}
    assert rows["child"]["parent_id"] == runs["lasso"].id
    assert rows["child"]["status"] == "RUNNING" and pd.isna(rows["child"]["end_time"])
    assert pd.isna(rows["lasso"]["parent_id"])
    assert set(frame["backend"]) == {"mlflow"}
    assert rows["lasso"]["metrics.rmse"] == 9.1  # the latest point, not the first
    assert math.isnan(rows["nan"]["metrics.rmse"]) and math.isnan(rows["bare"]["metrics.rmse"])
    assert rows["nan"]["params.depth"] == "7" and pd.isna(rows["lasso"]["params.depth"])
    assert rows["ridge"]["status"] == "FAILED"
    assert pd.isna(rows["bare"]["tags.dev"]) and rows["ridge"]["tags.dev"] == "ana"


def test_the_module_level_search_runs_returns_a_frame(
    mlflow_runs: tuple[trackkit.Tracker, dict[str, trackkit.Run]],
) -> None:
    tracker, _ = mlflow_runs
    trackkit.set_tracker(tracker)
    trackkit.set_experiment(EXPERIMENT)
    frame = trackkit.search_runs(filter="metrics.rmse < 9", order_by=["metrics.rmse"])
    assert isinstance(frame, pd.DataFrame)
    assert list(frame["run_name"]) == ["child", "ridge"]
    listed = trackkit.search_runs(EXPERIMENT, order_by="metrics.rmse", output_format="list")
    assert [r.name for r in listed][:3] == ["child", "ridge", "lasso"]
    assert isinstance(listed[0], trackkit.RunInfo)


def test_a_search_with_no_match_has_the_columns_and_their_kinds(
    mlflow_runs: tuple[trackkit.Tracker, dict[str, trackkit.Run]],
) -> None:
    tracker, _ = mlflow_runs
    frame = tracker.search_runs(EXPERIMENT, filter="params.model = 'svm'", output_format="pandas")
    assert list(frame.columns) == [*INFO_COLUMNS, *EXTRA_COLUMNS] and len(frame) == 0
    assert str(frame["start_time"].dt.tz) == "UTC"
    assert frame["run_id"].dtype == pd.Series(["x"]).dtype


@pytest.mark.parametrize("bad", ["dataframe", "Pandas", None, 1])
def test_an_unknown_output_format_is_refused(mlflow_tracker: trackkit.Tracker, bad: Any) -> None:
    with pytest.raises(
        trackkit.InvalidInput, match="output_format must be one of 'list', 'pandas'"
    ):
        mlflow_tracker.search_runs("x", output_format=bad)
    with pytest.raises(
        trackkit.InvalidInput, match="output_format must be one of 'pandas', 'dict'"
    ):
        mlflow_tracker.get_metric_histories("x", output_format=bad)


def test_a_run_without_the_metrics_has_an_empty_typed_history(
    mlflow_tracker: trackkit.Tracker,
) -> None:
    with mlflow_tracker.start_run(experiment=EXPERIMENT) as run:
        run.log_param("p", 1)
    frame = mlflow_tracker.get_metric_histories(run.id)
    assert list(frame.columns) == list(HISTORY_COLUMNS) and len(frame) == 0
    assert frame["step"].dtype == "int64" and frame["value"].dtype == "float64"
    assert str(frame["timestamp"].dt.tz) == "UTC"


# -- the same layout on W&B offline and Neptune offline/debug ------------------------------------
def _wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> trackkit.Tracker:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    return trackkit.get_tracker(
        "wandb",
        mode="offline",
        dir=tmp_path / "w",
        settings={"x_transaction_log_flush_interval": 0.1},
    )


def _neptune_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> trackkit.Tracker:
    pytest.importorskip("neptune")
    return trackkit.get_tracker(
        "neptune",
        mode="offline",
        data_dir=tmp_path / ".neptune",
        registry_path=tmp_path / "registry.db",
    )


def _neptune_debug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> trackkit.Tracker:
    pytest.importorskip("neptune")
    return trackkit.get_tracker("neptune", mode="debug")


OTHERS: dict[str, Callable[[Path, pytest.MonkeyPatch], trackkit.Tracker]] = {
    "wandb-offline": _wandb,
    "neptune-offline": _neptune_offline,
    "neptune-debug": _neptune_debug,
}


@pytest.mark.parametrize("backend", list(OTHERS))
def test_the_same_script_gives_the_same_layout_elsewhere(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_uri: str
) -> None:
    pytest.importorskip("mlflow")
    other = OTHERS[backend](tmp_path, monkeypatch)
    reference = trackkit.get_tracker("mlflow", tracking_uri=sqlite_uri)
    frames = {}
    for name, tracker in (("mlflow", reference), (backend, other)):
        try:
            _log_runs(tracker)
            frames[name] = tracker.search_runs(
                EXPERIMENT, order_by="attributes.run_name", output_format="pandas"
            )
        finally:
            tracker.close()
    mine, theirs = frames[backend], frames["mlflow"]
    # MLflow's own system tags (tags.mlflow.*) are MLflow's: every other column is the same
    shared = [c for c in theirs.columns if not c.startswith("tags.mlflow.")]
    assert [c for c in mine.columns if c in shared] == shared
    assert dict(mine.dtypes[shared]) == dict(theirs.dtypes[shared])
    assert set(frames[backend]["backend"]) == {other.backend.name}
    same = [c for c in shared if c.startswith(("metrics.", "params.", "tags.")) or c == "run_name"]
    pd.testing.assert_frame_equal(mine[same], theirs[same])
    assert list(mine["status"]) == list(theirs["status"])


# -- without pandas --------------------------------------------------------------------------------
NO_PANDAS = textwrap.dedent(
    """
    import json, sys
    sys.modules["pandas"] = None  # as if pandas were not installed
    import trackkit
    from trackkit.backend import Backend, Capabilities
    from trackkit.entities import MetricPoint, RunHandle, RunInfo

    class Plain(Backend):
        name = "plain"
        capabilities = Capabilities(artifacts=False, models=False, search_runs=True,
                                    metric_history=True)
        searches = 0

        def start_run(self, experiment, name, run_id):
            return RunHandle(id="r1", name="one", experiment=experiment or "e")

        def end_run(self, run_id, status):
            pass

        def log_batch(self, run_id, params, metrics, tags):
            pass

        def search_runs(self, query):
            Plain.searches += 1
            return [self.get_run("r1")]

        def get_run(self, run_id):
            return RunInfo("r1", "one", "e", "FINISHED", {}, {"m": 1.0}, {}, None, None)

        def get_metric_history(self, run_id, key):
            return [MetricPoint(0, 1.0, 0)]

    tracker = trackkit.Tracker(Plain(), journal_dir=sys.argv[1])
    out = {"list": [r.id for r in tracker.search_runs("e")]}
    out["history"] = len(tracker.get_metric_histories("r1", "m", output_format="dict")["r1"]["m"])
    for call in ("frame", "histories", "module"):
        try:
            if call == "frame":
                tracker.search_runs("e", output_format="pandas")
            elif call == "histories":
                tracker.get_metric_histories("r1", "m")
            else:
                trackkit.set_tracker(tracker)
                trackkit.search_runs("e")
        except trackkit.MissingDependencyError as e:
            out[call] = str(e)
    out["searches"] = Plain.searches
    out["pandas_loaded"] = sys.modules.get("pandas") is not None
    print(json.dumps(out))
    """
)


def test_without_pandas_a_frame_names_the_extra_and_lists_still_work(tmp_path: Path) -> None:
    script = tmp_path / "no_pandas.py"
    script.write_text(NO_PANDAS)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "journal")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["list"] == ["r1"] and out["history"] == 1
    for call in ("frame", "histories", "module"):
        assert "pip install 'trackkit[pandas]'" in out[call], out
        assert "'pandas' package, which is not installed" in out[call]
    assert out["searches"] == 1  # refused before the backend was asked
    assert not out["pandas_loaded"]
