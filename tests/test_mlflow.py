"""MLflow-specific behaviour: MLflow's own tools work on what trackkit writes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import trackkit
from trackkit.testing import _fitted_pipeline

mlflow = pytest.importorskip("mlflow")


def test_default_store_is_sqlite_in_the_working_directory(tmp_path: Path) -> None:
    tracker = trackkit.get_tracker()
    assert tracker.backend_name == "mlflow"
    assert tracker.backend.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"  # type: ignore[attr-defined]


def test_tracking_uri_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, sqlite_uri: str
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri)
    monkeypatch.setenv("TRACKKIT_BACKEND", "mlflow")
    assert trackkit.get_tracker().backend.tracking_uri == sqlite_uri  # type: ignore[attr-defined]


def test_logged_model_is_an_mlflow_model(mlflow_tracker, mlflow_client, sqlite_uri) -> None:  # type: ignore[no-untyped-def]
    pipeline, rows = _fitted_pipeline()
    with mlflow_tracker.start_run(experiment="e") as run:
        ref = run.log_model(pipeline, "model")
    mlflow_tracker.register_model(ref, "ride")
    mlflow_tracker.set_model_alias("ride", "production", 1)

    assert ref.uri.startswith("models:/m-")
    logged = mlflow_client.get_logged_model(ref.uri.split("/")[-1])
    assert logged.source_run_id == run.id and logged.name == "model"
    mlflow.set_tracking_uri(sqlite_uri)
    try:
        info = mlflow.models.get_model_info("models:/ride@production")
        assert {"sklearn", "python_function"} <= set(info.flavors)
        pyfunc = mlflow.pyfunc.load_model("models:/ride@production")
        # a DictVectorizer pipeline takes a list of dicts, as it was fitted
        assert list(pyfunc.predict(rows)) == pytest.approx(list(pipeline.predict(rows)))
    finally:
        mlflow.set_tracking_uri(None)
    # trackkit does not leave its URI behind in MLflow's process-wide state
    assert os.environ.get("MLFLOW_TRACKING_URI") is None


def test_registry_uses_aliases_not_stages(mlflow_tracker, mlflow_client) -> None:  # type: ignore[no-untyped-def]
    pipeline, _ = _fitted_pipeline()
    with mlflow_tracker.start_run(experiment="e") as run:
        ref = run.log_model(pipeline)
    mlflow_tracker.register_model(ref, "ride")
    mlflow_tracker.set_model_alias("ride", "staging", 1)
    version = mlflow_client.get_model_version("ride", "1")
    assert version.aliases == ["staging"]
    assert version.current_stage == "None"


def test_register_from_an_mlflow_uri(mlflow_tracker, mlflow_client) -> None:  # type: ignore[no-untyped-def]
    pipeline, rows = _fitted_pipeline()
    with mlflow_tracker.start_run(experiment="e") as run:
        ref = run.log_model(pipeline)
    version = mlflow_tracker.register_model(ref.uri, "by-uri")
    assert version.version == 1 and version.run_id == run.id
    assert list(mlflow_tracker.load_model("models:/by-uri/1").predict(rows)) == list(
        pipeline.predict(rows)
    )


def test_json_table_is_mlflow_native_table(mlflow_tracker, sqlite_uri) -> None:  # type: ignore[no-untyped-def]
    import pandas as pd

    frame = pd.DataFrame({"zone": ["a", "b"], "minutes": [12.5, 7.0]})
    with mlflow_tracker.start_run(experiment="e") as run:
        run.log_table(frame, "eval/predictions.json")
    client = mlflow.MlflowClient(tracking_uri=sqlite_uri)
    experiment_id = client.get_run(run.id).info.experiment_id
    read = client.load_table(experiment_id, "eval/predictions.json", run_ids=[run.id])
    assert read[list(frame.columns)].to_dict("list") == frame.to_dict("list")


def test_a_pipeline_with_an_xgboost_step_logs_and_loads(mlflow_tracker, sqlite_uri) -> None:  # type: ignore[no-untyped-def]
    xgboost = pytest.importorskip("xgboost")
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.pipeline import make_pipeline

    rows = [{"city": "lyon", "area": 40.0}, {"city": "nice", "area": 75.0}] * 10
    pipe = make_pipeline(DictVectorizer(), xgboost.XGBRegressor(n_estimators=3))
    pipe.fit(rows, [1.0, 2.0] * 10)
    with mlflow_tracker.start_run(experiment="e") as run:
        ref = run.log_model(pipe)
    assert list(mlflow_tracker.load_model(ref).predict(rows[:2])) == pytest.approx(
        list(pipe.predict(rows[:2]))
    )
    mlflow.set_tracking_uri(sqlite_uri)
    try:
        loaded = mlflow.sklearn.load_model(ref.uri)  # MLflow's own loader trusts the same types
    finally:
        mlflow.set_tracking_uri(None)
    assert list(loaded.predict(rows[:2])) == pytest.approx(list(pipe.predict(rows[:2])))


def test_xgboost_model_round_trip(mlflow_tracker) -> None:  # type: ignore[no-untyped-def]
    xgb = pytest.importorskip("xgboost")
    import numpy as np

    x = np.arange(40, dtype=float).reshape(20, 2)
    y = x[:, 0] * 2 + x[:, 1]
    model = xgb.XGBRegressor(n_estimators=5, max_depth=2).fit(x, y)
    with mlflow_tracker.start_run(experiment="e") as run:
        ref = run.log_model(model, "booster")
    assert ref.flavor == "xgboost"
    loaded = mlflow_tracker.load_model(ref)
    assert type(loaded) is xgb.XGBRegressor
    assert loaded.predict(x).tolist() == model.predict(x).tolist()


def test_resume_in_another_experiment_is_refused(mlflow_tracker) -> None:  # type: ignore[no-untyped-def]
    with mlflow_tracker.start_run(experiment="a") as run:
        pass
    with pytest.raises(trackkit.InvalidInput, match="belongs to experiment 'a'"):
        mlflow_tracker.start_run(experiment="b", run_id=run.id)
    with pytest.raises(trackkit.NotFound):
        mlflow_tracker.start_run(run_id="0" * 32)


def test_a_batch_is_written_before_log_batch_returns_even_with_mlflow_async_logging(
    monkeypatch: pytest.MonkeyPatch, mlflow_tracker, mlflow_client
) -> None:  # type: ignore[no-untyped-def]
    """The journal forgets a batch once log_batch returns: with MLflow's async logging on,
    MlflowClient.log_batch would only queue it (and never raise for a missing run)."""
    from trackkit.entities import Metric

    monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_LOGGING", "true")
    backend = mlflow_tracker.backend
    handle = backend.start_run("e", None, None)
    backend.log_batch(handle.id, [("p", 1)], [Metric("m", 0.5, 3, 1_700_000_000_000)], [("t", "v")])
    history = mlflow_client.get_metric_history(handle.id, "m")
    assert [(m.value, m.step) for m in history] == [(0.5, 3)]
    assert mlflow_client.get_run(handle.id).data.params == {"p": "1"}
    with pytest.raises(trackkit.NotFound):
        backend.log_batch("0" * 32, [], [Metric("m", 0.5, 3, 1_700_000_000_000)], [])


def test_metrics_go_to_mlflows_active_model_as_mlflows_client_would(
    monkeypatch: pytest.MonkeyPatch, mlflow_tracker, mlflow_client
) -> None:  # type: ignore[no-untyped-def]
    with mlflow_tracker.start_run(experiment="e") as run:
        pass
    experiment = mlflow_client.get_experiment_by_name("e").experiment_id
    model = mlflow_client.create_logged_model(experiment, source_run_id=run.id)
    monkeypatch.setenv("MLFLOW_ACTIVE_MODEL_ID", model.model_id)
    with mlflow_tracker.start_run(experiment="e", run_id=run.id) as resumed:
        resumed.log_metric("rmse", 4.5)
    assert [(m.key, m.value) for m in mlflow_client.get_logged_model(model.model_id).metrics] == [
        ("rmse", 4.5)
    ]


def test_context_tags_identify_the_source(mlflow_tracker, mlflow_client) -> None:  # type: ignore[no-untyped-def]
    with mlflow_tracker.start_run(experiment="e", name="named") as run:
        pass
    data = mlflow_client.get_run(run.id)
    assert data.info.run_name == "named" and run.name == "named"
    assert "mlflow.user" in data.data.tags and "mlflow.source.name" in data.data.tags


def test_bad_filter_is_invalid_input(mlflow_tracker) -> None:  # type: ignore[no-untyped-def]
    with mlflow_tracker.start_run(experiment="e"):
        pass
    with pytest.raises(trackkit.InvalidInput, match="unknown comparison '<<<'"):
        mlflow_tracker.search_runs("e", filter="metrics.rmse <<< 3")
    with pytest.raises(trackkit.NotFound, match="no MLflow experiment"):
        mlflow_tracker.search_runs("missing")


def test_password_in_tracking_uri_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cr3t-pa55word"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    uri = f"http://ana:{secret}@127.0.0.1:9"
    tracker = trackkit.get_tracker("mlflow", tracking_uri=uri, end_timeout=1)
    assert secret not in repr(tracker)
    with pytest.warns(trackkit.TrackkitWarning) as warned:
        run = tracker.start_run(experiment="e")  # unreachable: the run is kept locally
        run.log_param("a", 1)
        run.end()
    assert run.id.startswith("local-")
    assert all(secret not in str(w.message) for w in warned)
    assert "ana:***@127.0.0.1:9" in str(warned[0].message)
    journal_text = b"".join(p.read_bytes() for p in run.journal.path.parent.glob("*.db*"))
    assert secret.encode() not in journal_text and b"ana@127.0.0.1:9" in journal_text
    strict = trackkit.get_tracker("mlflow", tracking_uri=uri, strict=True)
    with pytest.raises(trackkit.BackendError) as caught:
        strict.start_run(experiment="e")
    assert secret not in str(caught.value)
    assert "ana:***@127.0.0.1:9" in str(caught.value)


def test_done_when_script_as_a_new_user_runs_it(sqlite_uri: str, tmp_path: Path) -> None:
    """The issue's acceptance script, run in a fresh interpreter with TRACKKIT_BACKEND=mlflow."""
    script = tmp_path / "user_script.py"
    script.write_text(
        textwrap.dedent(
            """
            import trackkit
            from sklearn.feature_extraction import DictVectorizer
            from sklearn.linear_model import Ridge
            from sklearn.pipeline import make_pipeline

            rows = [{"PU_DO": f"{i % 7}_{i % 3}", "trip_distance": i / 3} for i in range(60)]
            y = [r["trip_distance"] * 4 + 2 for r in rows]
            pipe = make_pipeline(DictVectorizer(), Ridge(alpha=0.5)).fit(rows, y)
            open("notes.txt", "w").write("hello")

            tracker = trackkit.get_tracker()
            with tracker.start_run(experiment="accept", tags={"developer": "ana"}) as run:
                run.log_params({"model": {"name": "ridge", "alpha": 0.5}, "data": {"train": "a.parquet"}})
                for epoch in range(3):
                    run.log_metric("loss", 1.0 / (epoch + 1), step=epoch)
                run.log_metric("rmse", 1.25)
                run.log_artifact("notes.txt", "docs")
                ref = run.log_model(pipe)
            v1 = tracker.register_model(ref, "accept-model")
            tracker.set_model_alias("accept-model", "production", v1.version)
            v2 = tracker.register_model(ref, "accept-model")
            tracker.set_model_alias("accept-model", "production", v2.version)
            model = tracker.load_model("models:/accept-model@production")
            print("RUN", run.id, "PRED", float(model.predict(rows[:1])[0]))
            """
        )
    )
    env = {**os.environ, "TRACKKIT_BACKEND": "mlflow", "MLFLOW_TRACKING_URI": sqlite_uri}
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = done.stdout.split("RUN ")[1].split()[0]
    prediction = float(done.stdout.split("PRED ")[1].split()[0])

    client = mlflow.MlflowClient(tracking_uri=sqlite_uri)
    data = client.get_run(run_id).data
    assert data.params == {"model.name": "ridge", "model.alpha": "0.5", "data.train": "a.parquet"}
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")] == [
        (0, 1.0), (1, 0.5), (2, 1 / 3)
    ]  # fmt: skip
    assert data.metrics["rmse"] == 1.25 and data.tags["developer"] == "ana"
    assert [a.path for a in client.list_artifacts(run_id, "docs")] == ["docs/notes.txt"]
    assert client.get_registered_model("accept-model").aliases == {"production": 2}
    mlflow.set_tracking_uri(sqlite_uri)
    try:
        native = mlflow.pyfunc.load_model("models:/accept-model@production")
        row = {"PU_DO": "0_0", "trip_distance": 0.0}
        assert float(native.predict([row])[0]) == pytest.approx(prediction)
    finally:
        mlflow.set_tracking_uri(None)


# -- search: the parsed filter translated into MLflow's own ------------------------------------
def test_filters_translate_to_mlflow_filter_strings() -> None:
    from trackkit.backends.mlflow import to_mlflow_filter
    from trackkit.search import parse_filter

    def translate(text: str) -> tuple[str, bool]:
        return to_mlflow_filter(parse_filter(text))

    assert translate("metrics.rmse < 7 and params.model = 'lasso'") == (
        "metrics.`rmse` < 7 and params.`model` = 'lasso'",
        True,
    )
    assert translate("metric.`val loss` <> 0.5 and tags.n = 'it''s'") == (
        'metrics.`val loss` != 0.5 and tags.`n` = "it\'s"',
        True,
    )
    assert translate("created >= 1700000000000 and run_id IN ('a1', 'b-2')") == (
        "attributes.start_time >= 1700000000000 and attributes.run_id IN ('a1', 'b-2')",
        True,
    )
    assert translate("params.x IS NULL and status LIKE 'FIN%'") == (
        "params.`x` IS NULL and attributes.status LIKE 'FIN%'",
        True,
    )
    # left out, so MLflow returns a superset that trackkit narrows
    for text in (
        "params.model IN ('a', 'b')",  # MLflow has IN for run_id only
        "tags.dev NOT IN ('a')",
        "attributes.status IN ('FAILED')",
        "tags.n = 'both '' and \"'",  # both quote kinds: MLflow cannot hold it
        "params.path = 'C:\\\\'",  # a trailing backslash would escape MLflow's closing quote
        "metrics.m < 1e999",
    ):
        assert translate(text) == ("", False), text
    assert translate("params.a = 'x' and params.b IN ('y')") == ("params.`a` = 'x'", False)


def test_every_translated_table_filter_is_valid_mlflow() -> None:
    """MLflow's own parser accepts what trackkit sends it for every case of the filter table."""
    from mlflow.utils.search_utils import SearchUtils

    from trackkit.backends.mlflow import to_mlflow_filter
    from trackkit.search import parse_filter
    from trackkit.testing import FILTER_CASES

    sent = 0
    for case in FILTER_CASES:
        if case.error is None and case.filter:
            text = case.filter.replace("{id:", "x{").replace("{start:", "1{")
            text = re.sub(r"\{[\w-]+\}", "1", text)
            mlflow_text, _exact = to_mlflow_filter(parse_filter(text))
            SearchUtils.parse_search_filter(mlflow_text)
            sent += bool(mlflow_text)
    assert sent > 40


def test_same_millisecond_ties_are_cut_by_name(mlflow_tracker, mlflow_client) -> None:  # type: ignore[no-untyped-def]
    """MLflow breaks ties of start time by run id, trackkit by name: the cut takes both into
    account (the backend also fetches every run sharing the last start time of the page)."""
    experiment = mlflow_client.create_experiment("ties")
    ids = sorted(mlflow_client.create_run(experiment, start_time=1_000).info.run_id for _ in "abcd")
    for run_id, name in zip(ids, "dcba", strict=True):  # MLflow's first ids get the last names
        mlflow_client.update_run(run_id, name=name)
    mlflow_client.create_run(experiment, run_name="z", start_time=2_000)
    found = mlflow_tracker.search_runs("ties", max_results=3)
    assert [r.name for r in found] == ["z", "a", "b"]
    found = mlflow_tracker.search_runs("ties", filter="attributes.start_time < 1500", max_results=2)
    assert [r.name for r in found] == ["a", "b"]
