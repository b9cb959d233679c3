"""The ride-duration example (examples/ride_duration): data, the Lasso fix, the whole flow on
MLflow (a sqlite store and a real `mlflow server`), batch scoring and the web service served by
a real gunicorn, all checked through MLflow's own client, never through trackkit.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import pickle
import pickletools
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import trackkit
from conftest import SERVER_START_TIMEOUT

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `examples` is a package of the repository, not installed
    sys.path.insert(0, str(REPO))

from examples.ride_duration import __main__ as flow  # noqa: E402
from examples.ride_duration import data, registry, train  # noqa: E402

#: settings that choose where runs and models are (a printed command must carry its own)
SETTINGS = re.compile(r"^(TRACKKIT_|MLFLOW_|WANDB_|NEPTUNE_|RIDE_DURATION_)")
#: a small flow: 2000 rides a month, the four baselines, one search trial, 20 rounds
SMALL = ["--rows", "2000", "--trials", "1", "--rounds", "20"]
RIDE = {"PULocationID": 74, "DOLocationID": 75, "trip_distance": 1.8}


# -- data ----------------------------------------------------------------------------------
@pytest.mark.parametrize("taxi", ["green", "yellow"])
def test_synthetic_months_have_the_tlc_schema(tmp_path: Path, taxi: str) -> None:
    paths = data.write_synthetic_months(tmp_path, ["2021-01", "2021-12"], 2000, taxi=taxi)

    assert [p.name for p in paths] == [
        f"{taxi}_tripdata_2021-01.parquet",
        f"{taxi}_tripdata_2021-12.parquet",
    ]
    prefix = "lpep" if taxi == "green" else "tpep"
    for path in paths:
        schema = pq.read_schema(path)
        assert schema.names[:3] == [
            "VendorID",
            f"{prefix}_pickup_datetime",
            f"{prefix}_dropoff_datetime",
        ]
        assert schema.equals(data.SCHEMAS[taxi])
        table = pq.read_table(path).to_pandas()
        assert len(table) == 2000
        for zone in ("PULocationID", "DOLocationID"):
            assert table[zone].between(1, 265).all()
        month = path.name[-15:-8]
        assert (table[f"{prefix}_pickup_datetime"].dt.strftime("%Y-%m") == month).all()
    # skewed: a few zones get most pickups, as in the real files
    pickups = pq.read_table(paths[0]).to_pandas()["PULocationID"].value_counts(normalize=True)
    assert pickups.iloc[:10].sum() > 0.4


def test_synthetic_months_are_deterministic_by_seed(tmp_path: Path) -> None:
    one = data.synthetic_month("green", "2021-03", 500, seed=1)
    again = data.synthetic_month("green", "2021-03", 500, seed=1)
    other = data.synthetic_month("green", "2021-03", 500, seed=2)
    assert one.equals(again)
    assert not one.equals(other)
    (a,) = data.write_synthetic_months(tmp_path / "a", ["2021-03"], 500, seed=1)
    (b,) = data.write_synthetic_months(tmp_path / "b", ["2021-03"], 500, seed=1)
    assert a.read_bytes() == b.read_bytes()


def test_read_dataframe_keeps_rides_of_1_to_60_minutes_and_builds_pu_do(tmp_path: Path) -> None:
    (path,) = data.write_synthetic_months(tmp_path, ["2021-01"], 5000)
    raw = pq.read_table(path).to_pandas()
    minutes = (raw.lpep_dropoff_datetime - raw.lpep_pickup_datetime).dt.total_seconds() / 60
    outliers = ~minutes.between(1, 60)

    df = data.read_dataframe(path)

    assert 0 < outliers.sum() < 0.1 * len(raw)  # the generator's outliers, a few percent
    assert (minutes < 0).any() and (minutes > 60).any() and minutes.between(0, 1, "left").any()
    assert len(df) == (~outliers).sum()
    assert df.attrs["rows_read"] == 5000
    assert df.duration.between(1, 60).all()
    assert df.PULocationID.map(type).eq(str).all()
    assert (df.PULocationID + "_" + df.DOLocationID == df.PU_DO).all()
    kept = raw[~outliers].reset_index(drop=True)
    assert (df.PULocationID == kept.PULocationID.astype(str)).all()
    np.testing.assert_allclose(df.duration, minutes[~outliers].to_numpy())
    assert data.to_dicts(df)[0] == {"PU_DO": df.PU_DO[0], "trip_distance": df.trip_distance[0]}


def test_read_dataframe_reads_csv_and_yellow_files(tmp_path: Path) -> None:
    (parquet,) = data.write_synthetic_months(tmp_path / "p", ["2021-02"], 1500, taxi="yellow")
    (csv,) = data.write_synthetic_months(
        tmp_path / "c", ["2021-02"], 1500, taxi="yellow", fmt="csv"
    )
    assert csv.name == "yellow_tripdata_2021-02.csv"
    from_parquet, from_csv = data.read_dataframe(parquet), data.read_dataframe(csv)
    assert list(from_csv.PU_DO) == list(from_parquet.PU_DO)
    np.testing.assert_allclose(from_csv.duration, from_parquet.duration)
    assert data.find_month(tmp_path / "c", "yellow", "2021-02") == csv


def test_read_dataframe_normalizes_float_zone_ids(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "lpep_pickup_datetime": ["2021-01-01 10:00:00", "2021-01-01 11:00:00"],
            "lpep_dropoff_datetime": ["2021-01-01 10:12:30", "2021-01-01 11:00:20"],
            "PULocationID": [74.0, 75.0],
            "DOLocationID": [166.0, 42.0],
            "trip_distance": [2.1, 0.0],
        }
    )
    frame.to_csv(tmp_path / "f.csv", index=False)
    df = data.read_dataframe(tmp_path / "f.csv")
    assert list(df.PU_DO) == ["74_166"]  # the 20-second ride is filtered out
    assert df.duration[0] == pytest.approx(12.5)


def test_read_dataframe_rejects_files_that_are_not_tlc_trips(tmp_path: Path) -> None:
    pd.DataFrame({"pickup": [1], "PULocationID": [1]}).to_parquet(tmp_path / "x.parquet")
    with pytest.raises(data.DataError, match="no lpep_/tpep_ pickup and dropoff"):
        data.read_dataframe(tmp_path / "x.parquet")
    pd.DataFrame(
        {"tpep_pickup_datetime": ["2021-01-01"], "tpep_dropoff_datetime": ["2021-01-01"]}
    ).to_csv(tmp_path / "y.csv", index=False)
    with pytest.raises(data.DataError, match=r"lacks the columns \['PULocationID'"):
        data.read_dataframe(tmp_path / "y.csv")
    with pytest.raises(data.DataError, match=r"green_tripdata_2021-05\.parquet"):
        data.find_month(tmp_path, "green", "2021-05")
    with pytest.raises(data.DataError, match="YYYY-MM"):
        data.file_name("green", "2021-13")


def test_prepare_features_checks_a_ride() -> None:
    assert data.prepare_features(RIDE) == {"PU_DO": "74_75", "trip_distance": 1.8}
    assert data.prepare_features({**RIDE, "PULocationID": "74", "trip_distance": 2}) == {
        "PU_DO": "74_75",
        "trip_distance": 2.0,
    }
    bad = [
        ({"PULocationID": 1}, "missing field"),
        ({**RIDE, "PULocationID": 0}, "PULocationID must be a taxi zone ID from 1 to 265"),
        ({**RIDE, "DOLocationID": 266}, "DOLocationID must be"),
        ({**RIDE, "DOLocationID": True}, "DOLocationID must be"),
        ({**RIDE, "trip_distance": -1}, "trip_distance must be"),
        ({**RIDE, "trip_distance": "far"}, "trip_distance must be"),
        ({**RIDE, "trip_distance": float("nan")}, "trip_distance must be"),
    ]
    for ride, message in bad:
        with pytest.raises(data.DataError, match=message):
            data.prepare_features(ride)


# -- the Lasso fix -------------------------------------------------------------------------
def test_lasso_needs_the_int32_indices_step_and_it_changes_no_result(tmp_path: Path) -> None:
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import Lasso
    from sklearn.pipeline import make_pipeline

    (path,) = data.write_synthetic_months(tmp_path, ["2021-01"], 3000)
    df = data.read_dataframe(path)
    rows, target = data.to_dicts(df), df.duration.to_numpy()
    vectorized = DictVectorizer().fit_transform(rows)
    if vectorized.indices.dtype == np.int64:  # scikit-learn 1.9 with scipy 1.17
        with pytest.raises(ValueError, match="32-bit integer indices"):
            Lasso(alpha=0.1).fit(vectorized, target)

    fixed = make_pipeline(DictVectorizer(), train.int32_indices(), Lasso(alpha=0.1))
    fixed.fit(rows, target)
    assert fixed[:-1].transform(rows).indices.dtype == np.int32
    dense = make_pipeline(DictVectorizer(sparse=False), Lasso(alpha=0.1)).fit(rows, target)
    np.testing.assert_allclose(fixed.predict(rows[:200]), dense.predict(rows[:200]), atol=1e-6)

    # it pickles as library objects only: loading the model needs no example code
    blob = pickle.dumps(fixed)
    modules = {arg for op, arg, _ in pickletools.genops(blob) if op.name == "SHORT_BINUNICODE"}
    assert not any(str(m).startswith("examples") for m in modules)
    assert "scipy.sparse._csc" in modules
    np.testing.assert_allclose(pickle.loads(blob).predict(rows[:5]), fixed.predict(rows[:5]))


# -- helpers: the flow, MLflow's reader, gunicorn -----------------------------------------
def run_flow(argv: list[str], tracking_uri: str, workdir: Path) -> tuple[dict[str, Any], str]:
    """Run `python -m examples.ride_duration` in-process; return its result and output."""
    tracker = trackkit.get_tracker(
        "mlflow", tracking_uri=tracking_uri, journal_dir=workdir / ".trackkit"
    )
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            done = flow.main(argv, tracker)
    finally:
        tracker.close()
    return done, out.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def printed_serving_command(output: str) -> str:
    """The gunicorn command the flow printed for the user, exactly as printed."""
    (line,) = [x.strip() for x in output.splitlines() if "gunicorn --bind 127.0.0.1:9696" in x]
    return line


def is_own_tool(word: str, name: str, cwd: Path) -> bool:
    """Whether ``word``, typed in a shell in ``cwd``, runs this environment's ``name`` script."""
    found = shutil.which(word) if "/" not in word else str(cwd / word)
    own = Path(sys.executable).parent / name
    return found is not None and Path(found).exists() and os.path.samefile(found, own)


def printed_command(output: str, marker: str) -> list[str]:
    """The words of the one printed line containing ``marker``, without its shell comment."""
    (line,) = [x for x in output.splitlines() if marker in x]
    return shlex.split(line, comments=True)


def printed_settings(command: str) -> dict[str, str]:
    """The NAME=value settings a printed command starts with."""
    settings = {}
    for word in shlex.split(command):
        name, sep, value = word.partition("=")
        if not sep or not name.isidentifier():
            break
        settings[name] = value
    return settings


@contextlib.contextmanager
def gunicorn(
    workdir: Path, env: dict[str, str], printed: str | None = None, inherit: bool = True
) -> Iterator[str]:
    """Serve examples.ride_duration.service:app with gunicorn on a free 127.0.0.1 port.

    ``printed``: run this command line, as the flow printed it, through the shell (only the
    port is changed) instead of the test's own gunicorn command. ``inherit=False``: the
    process gets no trackkit, MLflow, W&B or Neptune setting from this one, only ``env``.
    """
    port = _free_port()
    log_path = workdir / f"gunicorn-{port}.log"
    base = dict(os.environ)
    if not inherit:
        base = {k: v for k, v in base.items() if not SETTINGS.match(k)}
    if printed is None:
        command: list[str] | str = [
            sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
            "--timeout", "120", "examples.ride_duration.service:app",
        ]  # fmt: skip
        pythonpath = os.pathsep.join(p for p in (str(REPO), base.get("PYTHONPATH")) if p)
        full_env = {**base, "PYTHONPATH": pythonpath, **env}
    else:
        command = printed.replace("127.0.0.1:9696", f"127.0.0.1:{port}")
        full_env = {**base, **env}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            command, cwd=workdir, env=full_env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, shell=printed is not None,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT  # minutes on a loaded machine
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"gunicorn exited: {log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"gunicorn did not answer: {log_path.read_text()}"
                    ) from None
                time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{url}/predict", data=body, headers={"Content-Type": content_type}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def post_ride(url: str, ride: dict[str, Any]) -> tuple[int, Any]:
    return post(url, json.dumps(ride).encode())


def check_bad_requests(url: str) -> None:
    cases = [
        (b"not json", "application/json", "send one ride as a JSON object"),
        (json.dumps(RIDE).encode(), "text/plain", "Content-Type: application/json"),
        (b"[74, 75, 1.8]", "application/json", "send one ride as a JSON object"),
        (json.dumps({"PULocationID": 74}).encode(), "application/json", "missing field(s): DOLocationID, trip_distance"),
        (json.dumps({**RIDE, "DOLocationID": 0}).encode(), "application/json", "DOLocationID must be a taxi zone ID"),
        (json.dumps({**RIDE, "trip_distance": "far"}).encode(), "application/json", "trip_distance must be"),
    ]  # fmt: skip
    for body, content_type, message in cases:
        status, answer = post(url, body, content_type)
        assert status == 400, (body, answer)
        assert message in answer["error"], (body, answer)
    with urllib.request.urlopen(f"{url}/health", timeout=10) as answer:
        health = json.loads(answer.read())
        assert health["status"] == "ok" and health["backend"] and health["model_version"]
    with pytest.raises(urllib.error.HTTPError) as wrong_method:
        urllib.request.urlopen(f"{url}/predict", timeout=10)
    assert wrong_method.value.code == 405
    assert "Method Not Allowed" in json.loads(wrong_method.value.read())["error"]


def mlflow_load(tracking_uri: str, uri: str) -> Any:
    """A model loaded by MLflow's own sklearn loader."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    try:
        return mlflow.sklearn.load_model(uri)
    finally:
        mlflow.set_tracking_uri(None)


def mlflow_prediction(tracking_uri: str, name: str, version: int) -> float:
    """What MLflow's own loader predicts for RIDE with that version."""
    model = mlflow_load(tracking_uri, f"models:/{name}/{version}")
    return float(model.predict([data.prepare_features(RIDE)])[0])


def aliases(client: Any, name: str) -> dict[str, int]:
    """A registered model's aliases (MLflow's REST store gives versions as text, sqlite as int)."""
    return {
        alias: int(version) for alias, version in client.get_registered_model(name).aliases.items()
    }


def runs_of(client: Any, experiment: str) -> list[Any]:
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    return list(client.search_runs([found.experiment_id], max_results=1000))


def check_training_runs(
    client: Any, experiment: str, flow_id: str, model_types: list[str], trials: int
) -> Any:
    """Check the runs of one flow through MLflow's client; return the best by rmse."""
    runs = [r for r in runs_of(client, experiment) if r.data.tags.get("flow_id") == flow_id]
    expected = sorted(model_types + ["xgboost"] * trials)
    assert sorted(r.data.params["model.type"] for r in runs) == expected
    for run in runs:
        params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
        assert run.info.status == "FINISHED"
        assert params["data.train_path"].endswith("green_tripdata_2021-01.parquet")
        assert params["data.valid_path"].endswith("green_tripdata_2021-02.parquet")
        assert params["data.synthetic"] == "True" and params["data.seed"] == "42"
        assert params["features.categorical"] == '["PU_DO"]'
        assert int(params["data.valid_rows"]) > 0
        assert tags["developer"] and tags["model_type"] == params["model.type"]
        assert 0 < metrics["mae"] < metrics["rmse"] < 15
        # the fitted vectorizer, as the course logs it
        listed = [a.path for a in client.list_artifacts(run.info.run_id, "preprocessor")]
        assert listed == ["preprocessor/preprocessor.b"]
        if params["model.type"] == "lasso":
            assert params["model.alpha"] == "0.1"
            # the Lasso pipeline, with its int32 step, loads back through MLflow's own loader
            lasso = mlflow_load(client.tracking_uri, tags["model_uri"])
            assert [name for name, _ in lasso.steps] == ["vectorizer", "int32_indices", "model"]
            assert float(lasso.predict([data.prepare_features(RIDE)])[0]) > 0
        if params["model.type"] == "xgboost":
            assert {"max_depth", "learning_rate", "max_rounds"} <= {
                k.split(".", 1)[1] for k in params if k.startswith("model.")
            }
            curve = client.get_metric_history(run.info.run_id, "round/valid_rmse")
            train_curve = client.get_metric_history(run.info.run_id, "round/train_rmse")
            assert [m.step for m in sorted(curve, key=lambda m: m.step)] == list(range(len(curve)))
            assert len(train_curve) == len(curve) >= 2
            best = int(metrics["best_iteration"])
            by_step = {m.step: m.value for m in curve}
            assert by_step[best] == pytest.approx(metrics["rmse"], rel=1e-4)
    # the vectorizer artifact is the real fitted DictVectorizer
    local = client.download_artifacts(runs[0].info.run_id, "preprocessor/preprocessor.b")
    with open(local, "rb") as f_in:
        vectorizer = pickle.load(f_in)
    assert "trip_distance" in vectorizer.vocabulary_
    assert any(key.startswith("PU_DO=") for key in vectorizer.vocabulary_)
    return min(runs, key=lambda r: r.data.metrics["rmse"])


def test_the_whole_flow_on_mlflow_sqlite_then_serve_it_with_gunicorn(
    sqlite_uri: str, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=sqlite_uri)
    done, output = run_flow(SMALL, sqlite_uri, tmp_path)

    # progress per stage and the final summary
    for stage in range(1, 7):
        assert f"[{stage}/6] " in output
    assert "registered:  ride-duration version 1 (versions kept: 1)" in output
    assert "aliases:     production -> v1 (new), staging -> v1" in output
    # what to type next: this environment's own tools, this store
    tool, *args = printed_command(output, " ui --backend-store-uri ")
    assert is_own_tool(tool, "mlflow", tmp_path)
    assert args == ["ui", "--backend-store-uri", "sqlite:///mlflow.db"]
    serving = printed_serving_command(output)
    assert is_own_tool(shlex.split(serving)[0], "gunicorn", tmp_path)
    assert printed_settings(serving) == {}  # MLflow's default store, in this directory

    best = check_training_runs(
        client, "ride-duration", done["flow_id"], list(train.MODEL_TYPES), trials=1
    )

    # registry: the best run's model is version 1, staging and production, described
    assert aliases(client, "ride-duration") == {"staging": 1, "production": 1}
    assert client.get_registered_model("ride-duration").description == (
        "NYC taxi ride duration (minutes) from pickup/dropoff zones and trip distance"
    )
    v1 = client.get_model_version("ride-duration", "1")
    assert v1.run_id == best.info.run_id
    assert "test rmse" in v1.description and "on green_tripdata_2021-03.parquet" in v1.description
    assert "promoted to production (the first production version)" in v1.description
    assert f"validation rmse {best.data.metrics['rmse']:.3f}" in v1.description

    # batch scoring: a predictions parquet, also logged in a scoring run
    (scoring_run,) = runs_of(client, "ride-duration-scoring")
    predictions_file = tmp_path / "output" / "green_tripdata_2021-04_predictions.parquet"
    predictions = pd.read_parquet(predictions_file)
    month = data.read_dataframe(tmp_path / "data" / "synthetic" / "green_tripdata_2021-04.parquet")
    assert len(predictions) == len(month) == int(scoring_run.data.metrics["rides"])
    assert list(predictions.columns) == [
        "ride_id", "pickup_datetime", "PULocationID", "DOLocationID", "trip_distance",
        "actual_duration", "predicted_duration", "diff", "model_version",
    ]  # fmt: skip
    assert predictions.ride_id[0] == "2021/04_0" and (predictions.model_version == 1).all()
    np.testing.assert_allclose(predictions.actual_duration, month.duration)
    assert predictions.predicted_duration.between(0, 90).all()
    assert scoring_run.data.params["model.uri"] == "models:/ride-duration@production"
    assert scoring_run.data.params["model.version"] == "1"
    logged = client.download_artifacts(
        scoring_run.info.run_id, f"predictions/{predictions_file.name}", str(tmp_path / "dl")
    )
    pd.testing.assert_frame_equal(pd.read_parquet(logged), predictions)

    # the web service, started with the command the flow printed, answers with version 1
    env = {"PYTHONPATH": str(REPO)}  # `examples` is found from the repository root
    expected = mlflow_prediction(sqlite_uri, "ride-duration", 1)
    with gunicorn(tmp_path, env, printed=serving, inherit=False) as url:
        status, answer = post_ride(url, RIDE)
        assert status == 200, answer
        assert answer["model_name"] == "ride-duration" and answer["model_version"] == 1
        assert answer["backend"] == "mlflow"
        assert answer["duration"] == pytest.approx(expected, abs=0.006)
        check_bad_requests(url)
    env = {"MLFLOW_TRACKING_URI": sqlite_uri}

    # the same command again: version 2, promoted (same data, same scores), version 1 kept
    _, output = run_flow(SMALL, sqlite_uri, tmp_path)
    assert "aliases:     production -> v2 (was v1), staging -> v2" in output
    assert aliases(client, "ride-duration") == {
        "staging": 2,
        "production": 2,
    }
    assert {int(v.version) for v in client.search_model_versions("name = 'ride-duration'")} == {
        1,
        2,
    }
    v2 = client.get_model_version("ride-duration", "2")
    assert "promoted to production, replacing version 1" in v2.description
    assert client.get_model_version("ride-duration", "1").description == v1.description

    # after a restart, the service answers with the new production version
    with gunicorn(tmp_path, env) as url:
        status, answer = post_ride(url, RIDE)
        assert status == 200 and answer["model_version"] == 2, answer


@pytest.mark.server
def test_flow_and_service_on_a_real_mlflow_server(mlflow_server: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    suffix = uuid.uuid4().hex[:8]  # the server is shared by the session's tests
    name, experiment = f"ride-duration-{suffix}", f"ride-duration-{suffix}"
    argv = ["--rows", "2000", "--models", "xgboost", "--trials", "1", "--rounds", "15"]
    argv += ["--experiment", experiment, "--model-name", name]
    done, output = run_flow(argv, mlflow_server, tmp_path)

    assert f"# open {mlflow_server} in a browser" in output  # the tracker's own server
    serving = printed_serving_command(output)
    assert printed_settings(serving) == {
        "MLFLOW_TRACKING_URI": mlflow_server,
        "RIDE_DURATION_MODEL_URI": f"models:/{name}@production",
    }
    best = check_training_runs(client, experiment, done["flow_id"], ["xgboost"], trials=1)
    assert aliases(client, name) == {"staging": 1, "production": 1}
    assert client.get_model_version(name, "1").run_id == best.info.run_id
    (scoring_run,) = runs_of(client, f"{experiment}-scoring")
    assert [a.path for a in client.list_artifacts(scoring_run.info.run_id, "predictions")] == [
        "predictions/green_tripdata_2021-04_predictions.parquet"
    ]

    env = {
        "MLFLOW_TRACKING_URI": mlflow_server,
        "RIDE_DURATION_MODEL_URI": f"models:/{name}@production",
    }
    expected = mlflow_prediction(mlflow_server, name, 1)
    printed_env = {"PYTHONPATH": str(REPO)}
    with gunicorn(tmp_path, printed_env, printed=serving, inherit=False) as url:
        status, answer = post_ride(url, RIDE)
        assert status == 200 and answer["model_name"] == name and answer["model_version"] == 1
        assert answer["duration"] == pytest.approx(expected, abs=0.006)
        check_bad_requests(url)

    # promote a new version (a ridge run) through the example's registry code
    tracker = trackkit.get_tracker(
        "mlflow", tracking_uri=mlflow_server, journal_dir=tmp_path / ".tk"
    )
    try:
        training = train.TrainingData.load(
            tmp_path / "data" / "synthetic" / "green_tripdata_2021-01.parquet",
            tmp_path / "data" / "synthetic" / "green_tripdata_2021-02.parquet",
        )
        ridge = train.train(tracker, training, "ridge", experiment=experiment)
        version = tracker.register_model(ridge.model, name)
        registry.promote(tracker, name, version.version, "ridge, promoted by hand")
    finally:
        tracker.close()
    assert aliases(client, name) == {"staging": 1, "production": 2}
    assert client.get_model_version(name, "2").description == "ridge, promoted by hand"
    assert client.get_model_version(name, "1").status == "READY"  # the old version is kept

    with gunicorn(tmp_path, env) as url:
        status, answer = post_ride(url, RIDE)
        assert status == 200 and answer["model_version"] == 2, answer
        assert answer["duration"] == pytest.approx(
            mlflow_prediction(mlflow_server, name, 2), abs=0.006
        )


def test_service_without_a_production_model_fails_at_start_with_a_clear_message(
    sqlite_uri: str,
) -> None:
    from examples.ride_duration import service

    tracker = trackkit.get_tracker("mlflow", tracking_uri=sqlite_uri)
    with pytest.raises(RuntimeError, match=r"no model at models:/ride-duration@production .*"
                       r"run `python -m examples.ride_duration` first"):  # fmt: skip
        service.create_app(tracker)
    tracker.close()


def test_flow_with_real_data_dir_names_the_missing_files(sqlite_uri: str, tmp_path: Path) -> None:
    (tmp_path / "tlc").mkdir()
    with pytest.raises(SystemExit, match=r"no green trip file for 2021-01 in .*tlc: expected one of "
                       r"green_tripdata_2021-01.parquet"):  # fmt: skip
        run_flow(["--data-dir", str(tmp_path / "tlc")], sqlite_uri, tmp_path)


def run_module(workdir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m examples.ride_duration`` from ``workdir``, with no inherited settings."""
    clean = {k: v for k, v in os.environ.items() if not SETTINGS.match(k)}
    paths = [*env.pop("PYTHONPATH", "").split(os.pathsep), str(REPO), clean.get("PYTHONPATH")]
    clean["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return subprocess.run(
        [sys.executable, "-m", "examples.ride_duration", *SMALL, *args],
        cwd=workdir,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_an_unknown_backend_is_one_line_and_status_2(tmp_path: Path) -> None:
    done = run_module(tmp_path, {"TRACKKIT_BACKEND": "mlflw"})
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("error: unknown trackkit backend 'mlflw'"), done.stderr
    assert done.stderr.count("\n") == 1 and "'mlflow'" in done.stderr
    assert not (tmp_path / "data").exists()  # it stopped before doing anything


def test_a_missing_sdk_names_the_install_command_without_a_traceback(tmp_path: Path) -> None:
    env = {"TRACKKIT_BACKEND": "wandb"}
    if importlib.util.find_spec("wandb") is not None:
        # Installed here: hide it behind a package that fails to import as a missing one does.
        hidden = tmp_path / "hide-wandb" / "wandb"
        hidden.mkdir(parents=True)
        (hidden / "__init__.py").write_text(
            "raise ModuleNotFoundError(\"No module named 'wandb'\", name='wandb')\n"
        )
        env["PYTHONPATH"] = str(hidden.parent)
    done = run_module(tmp_path, dict(env))
    assert (done.returncode, done.stdout) == (1, ""), done.stderr
    first, second = done.stderr.splitlines()
    assert first.startswith("error: the wandb backend needs the 'wandb' package")
    assert "pip install 'trackkit[wandb]'" in first
    # the command for this environment: its own python (the bare name when this shell finds
    # that one first, as in an activated venv or tox), this checkout in development mode
    found = shutil.which("python")
    python = str(Path(sys.executable))
    if found and os.path.samefile(found, sys.executable):
        python = "python"
    assert second == f"install it here with: {python} -m pip install -e '{REPO}[wandb]'"
    # TRACKKIT_DEBUG=1 brings the traceback back
    debug = run_module(tmp_path, {**env, "TRACKKIT_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert "MissingDependencyError" in debug.stderr


def test_wandb_online_without_a_key_says_what_to_set(tmp_path: Path) -> None:
    pytest.importorskip("wandb")
    home = tmp_path / "home"  # no ~/.netrc with a W&B key
    home.mkdir()
    done = run_module(tmp_path, {"TRACKKIT_BACKEND": "wandb", "HOME": str(home)})
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "set WANDB_API_KEY" in done.stderr and "TRACKKIT_OFFLINE=1" in done.stderr


def test_flow_rejects_bad_options() -> None:
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()) as err:
        flow.parse_args(["--models", "ridge,forest"])
    assert "unknown model(s) ['forest']" in err.getvalue()
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()) as err:
        flow.parse_args(["--test", "March"])
    assert "YYYY-MM" in err.getvalue()


def test_registry_model_uris() -> None:
    assert registry.parse_model_uri("models:/ride-duration@production") == (
        "ride-duration",
        None,
        "production",
    )
    assert registry.parse_model_uri("models:/ride-duration/3") == ("ride-duration", 3, None)
    for bad in ("runs:/abc/model", "models:/ride-duration", "models:/ride-duration/x"):
        with pytest.raises(ValueError, match="models:/"):
            registry.parse_model_uri(bad)


def test_dockerfile_serves_the_tested_app_and_copies_files_that_exist() -> None:
    dockerfile = (REPO / "examples" / "ride_duration" / "Dockerfile").read_text()
    lines = [line.strip() for line in dockerfile.splitlines()]
    assert any(line.startswith("FROM python:3.") for line in lines)
    assert "cannot be built on this machine" in dockerfile  # no Docker engine runs here
    for line in lines:
        if line.startswith("COPY "):
            *sources, _ = line.split()[1:]
            for source in sources:
                assert (REPO / source).exists(), line
    (entrypoint,) = [line for line in lines if line.startswith("ENTRYPOINT")]
    assert json.loads(entrypoint.removeprefix("ENTRYPOINT")) == [
        "gunicorn", "--bind=0.0.0.0:9696", "examples.ride_duration.service:app",
    ]  # fmt: skip
    (install,) = [line for line in lines if line.startswith("RUN pip install") and "flask" in line]
    assert "gunicorn" in install and ".[mlflow,ml]" in install
