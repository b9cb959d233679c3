"""The read side on MLflow, checked against MLflow's own client on the same store.

Metric histories, artifact listings and downloads, experiment and registered-model listings
are compared with what ``MlflowClient`` reads; run links with a real ``mlflow server`` on
127.0.0.1, and the command a local store's run names is run as printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import trackkit
from trackkit.entities import ArtifactInfo, MetricPoint

pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient

from conftest import _free_port, stop_mlflow_server
from trackkit.backends.mlflow import MLflowBackend, ui_base


# -- metric history --------------------------------------------------------------------------------
def test_history_is_every_point_as_mlflow_stores_it(
    mlflow_tracker: trackkit.Tracker, mlflow_client: MlflowClient
) -> None:
    base = 1_750_000_000_000
    with mlflow_tracker.start_run(experiment="hist") as run:
        for step in (4, 0, 2, 1, 3):
            run.log_metric("loss", 10.0 - step, step=step, timestamp=base + 10 * step)
        run.log_metric("loss", 99.0, step=2, timestamp=base + 1)  # a second point at step 2
    with mlflow_tracker.start_run(run_id=run.id) as resumed:  # steps continue after 4
        resumed.log_metric("loss", 5.0)
    history = mlflow_tracker.get_metric_history(run.id, "loss")
    native = mlflow_client.get_metric_history(run.id, "loss")
    assert sorted(history) == sorted(MetricPoint(m.step, m.value, m.timestamp) for m in native)
    assert [p.step for p in history] == [0, 1, 2, 2, 3, 4, 5]
    assert [p.value for p in history][2:4] == [99.0, 8.0]  # one step's points by timestamp
    assert history[0] == MetricPoint(0, 10.0, base)


def test_history_of_an_open_run_includes_what_is_still_queued(
    mlflow_tracker: trackkit.Tracker,
) -> None:
    with mlflow_tracker.start_run(experiment="hist") as run:
        for i in range(50):
            run.log_metric("acc", i / 50)
        assert len(mlflow_tracker.get_metric_history(run.id, "acc")) == 50


def test_history_of_what_does_not_exist_is_not_found(mlflow_tracker: trackkit.Tracker) -> None:
    with mlflow_tracker.start_run(experiment="hist") as run:
        run.log_metric("rmse", 1.0)
        run.log_metric("r2", 0.5)
    with pytest.raises(trackkit.NotFound, match=r"has no metric 'rsme'; its metrics: r2, rmse"):
        mlflow_tracker.get_metric_history(run.id, "rsme")
    with pytest.raises(trackkit.NotFound, match="no-such-run"):
        mlflow_tracker.get_metric_history("no-such-run", "rmse")
    with pytest.raises(trackkit.NotFound, match="no-such-run"):
        mlflow_tracker.get_metric_histories([run.id, "no-such-run"], "rmse")
    for bad in ("", None, 3):
        with pytest.raises(trackkit.InvalidInput, match="metric key"):
            mlflow_tracker.get_metric_history(run.id, bad)  # type: ignore[arg-type]


def test_histories_of_several_runs(
    mlflow_tracker: trackkit.Tracker, mlflow_client: MlflowClient
) -> None:
    runs = []
    for name in ("a", "b"):
        with mlflow_tracker.start_run(experiment="hist", name=name) as run:
            for step in range(3):
                run.log_metrics({"loss": 1.0 / (step + 1), "acc": step / 3}, step=step)
        runs.append(run)
    found = mlflow_tracker.get_metric_histories(
        [r.id for r in runs], ["loss"], output_format="dict"
    )
    assert list(found) == [runs[0].id, runs[1].id]
    for run in runs:
        native = mlflow_client.get_metric_history(run.id, "loss")
        assert found[run.id]["loss"] == sorted(
            (MetricPoint(m.step, m.value, m.timestamp) for m in native), key=lambda p: p.step
        )
    frame = mlflow_tracker.get_metric_histories([r.id for r in runs])  # every key
    assert sorted(set(frame["key"])) == ["acc", "loss"] and len(frame) == 12
    assert list(frame["run_name"][:6]) == ["a"] * 6 and list(frame["key"][:3]) == ["acc"] * 3


# -- artifacts -------------------------------------------------------------------------------------
def test_artifacts_list_as_mlflow_lists_them_and_download_byte_identical(
    mlflow_tracker: trackkit.Tracker, mlflow_client: MlflowClient, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    (data / "deep" / "er").mkdir(parents=True)
    (data / "blob.bin").write_bytes(bytes(range(256)) * 40)
    (data / "deep" / "er" / "x.txt").write_text("x\n")
    with mlflow_tracker.start_run(experiment="art") as run:
        run.log_artifact(data, "inputs")
        run.log_text("top", "top.txt")
    listed = mlflow_tracker.list_artifacts(run.id, recursive=True)
    native: list[ArtifactInfo] = []
    todo: list[str | None] = [None]
    while todo:
        for f in mlflow_client.list_artifacts(run.id, todo.pop()):
            native.append(ArtifactInfo(f.path, f.is_dir, None if f.is_dir else f.file_size))
            if f.is_dir:
                todo.append(f.path)
    assert listed == sorted(native, key=lambda e: e.path)
    assert [e.path for e in mlflow_tracker.list_artifacts(run.id)] == ["inputs", "top.txt"]
    assert mlflow_tracker.list_artifacts(run.id, "./inputs/data/deep/") == [
        ArtifactInfo("inputs/data/deep/er", True, None)
    ]
    assert mlflow_tracker.list_artifacts(run.id, "inputs/missing") == []
    files = {e.path: e.size for e in listed if not e.is_dir}
    assert files == {
        "inputs/data/blob.bin": 256 * 40,
        "inputs/data/deep/er/x.txt": 2,
        "top.txt": 3,
    }
    for path in ("inputs/data/blob.bin", "inputs/data/deep/er/x.txt"):
        local = mlflow_tracker.download_artifacts(run.id, path, tmp_path / "copy")
        original = data / Path(path).relative_to("inputs/data")
        assert Path(local).read_bytes() == original.read_bytes()
    with pytest.raises(trackkit.InvalidInput):
        mlflow_tracker.list_artifacts(run.id, "../outside")
    with pytest.raises(trackkit.NotFound):
        mlflow_tracker.list_artifacts("no-such-run")


# -- experiments and registered models -----------------------------------------------------------
def test_experiments_list_as_mlflow_lists_them(
    mlflow_tracker: trackkit.Tracker, mlflow_client: MlflowClient
) -> None:
    for name in ("b-exp", "a-exp"):
        with mlflow_tracker.start_run(experiment=name):
            pass
    mlflow_client.delete_experiment(mlflow_client.create_experiment("deleted-exp"))
    native = {e.name for e in mlflow_client.search_experiments()}
    assert mlflow_tracker.list_experiments() == sorted(native) == ["Default", "a-exp", "b-exp"]


def test_registered_models_list_as_mlflow_holds_them(
    mlflow_tracker: trackkit.Tracker, mlflow_client: MlflowClient
) -> None:
    with mlflow_tracker.start_run(experiment="reg") as run:
        ref = run.log_model({"weights": [1, 2]}, "model", flavor="python")
    for _ in range(3):
        mlflow_tracker.register_model(ref, "ride")
    mlflow_tracker.register_model(ref, "alpha")
    mlflow_tracker.set_model_alias("ride", "production", 2)
    mlflow_tracker.set_model_alias("ride", "staging", 3)
    # what another MLflow user may have set: a model description and tags
    mlflow_client.update_registered_model("ride", description="ride duration")
    mlflow_client.set_registered_model_tag("ride", "team", "rides")
    models = mlflow_tracker.list_registered_models()
    assert [m.name for m in models] == ["alpha", "ride"]
    ride = models[1]
    native = mlflow_client.get_registered_model("ride")
    assert ride.description == native.description == "ride duration"
    assert ride.tags == native.tags == {"team": "rides"}
    assert ride.aliases == {a: int(v) for a, v in native.aliases.items()}
    assert ride.aliases == {"production": 2, "staging": 3}
    assert ride.latest_version == 3
    assert models[0].latest_version == 1 and models[0].description is None
    versions = mlflow_tracker.list_model_versions("ride")
    assert [(v.version, v.aliases) for v in versions] == [
        (1, ()),
        (2, ("production",)),
        (3, ("staging",)),
    ]


def test_an_offline_registry_lists_its_models(tmp_path: Path) -> None:
    from trackkit.local_registry import LocalRegistry

    registry = LocalRegistry(tmp_path / "registry.db")
    try:
        registry.create_model_version("b", "runs:/r/m", "r", "one")
        registry.create_model_version("b", "runs:/r/m", "r", None)
        registry.create_model_version("a", "runs:/r/m", "r", None)
        registry.set_model_alias("b", "prod", 1)
        listed = registry.list_registered_models()
    finally:
        registry.close()
    assert [(m.name, m.latest_version, m.aliases) for m in listed] == [
        ("a", 1, {}),
        ("b", 2, {"prod": 1}),
    ]


# -- run links -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("uri", "base"),
    [
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("https://user:s3cret@mlflow.example.org/", "https://mlflow.example.org"),
        ("http://tok@host:8080/prefix/mlflow/?x=1#frag", "http://host:8080/prefix/mlflow"),
        ("http://[::1]:5000", "http://[::1]:5000"),
        ("sqlite:///mlflow.db", None),
        ("postgresql://u:p@db/mlflow", None),
        ("databricks", None),
    ],
)
def test_the_ui_address_never_carries_credentials(uri: str, base: str | None) -> None:
    assert ui_base(uri) == base


def test_a_server_run_links_to_its_page(mlflow_server: str) -> None:
    tracker = trackkit.get_tracker("mlflow", tracking_uri=mlflow_server)
    try:
        with tracker.start_run(experiment="links") as run:
            run.log_metric("m", 1.0)
        client = MlflowClient(tracking_uri=mlflow_server)
        experiment_id = client.get_run(run.id).info.experiment_id
        expected = f"{mlflow_server}/#/experiments/{experiment_id}/runs/{run.id}"
        assert run.url == expected
        assert tracker.get_run(run.id).url == expected
        [found] = tracker.search_runs("links")
        assert found.url == expected
        assert run.describe() == f"run {run.id}: {expected}"
        with urllib.request.urlopen(expected, timeout=30) as page:  # the UI serves it
            assert page.status == 200 and b"<html" in page.read().lower()
        # a backend on a fresh process knows the run's experiment only from the server
        fresh = MLflowBackend(tracking_uri=mlflow_server)
        assert fresh.run_url(run.id) == expected
    finally:
        tracker.close()


def test_a_password_in_the_server_address_stays_out_of_links(mlflow_server: str) -> None:
    address = mlflow_server.replace("http://", "http://ana:s3cret@")
    backend = MLflowBackend(tracking_uri=address)
    backend._run_experiments["abc"] = "7"
    assert backend.run_url("abc") == f"{mlflow_server}/#/experiments/7/runs/abc"
    assert backend.run_hint("abc") is None


@pytest.mark.server
def test_a_local_store_names_the_command_that_shows_the_run(sqlite_uri: str) -> None:
    tracker = trackkit.get_tracker("mlflow", tracking_uri=sqlite_uri)
    try:
        with tracker.start_run(experiment="local") as run:
            run.log_metric("m", 1.0)
        assert run.url is None and tracker.get_run(run.id).url is None
        shown = run.describe()
    finally:
        tracker.close()
    command = re.search(r"see it with `([^`]+)`, then open (\S+)", shown)
    assert command is not None, shown
    argv = shlex.split(command[1])
    assert argv[0] == str(Path(sys.executable).parent / "mlflow")  # works without activating
    assert argv[1:] == ["ui", "--backend-store-uri", sqlite_uri]
    assert command[2].endswith(f"/runs/{run.id}")
    # the command works as printed (on a free port, one worker): its server has the run.
    # Without MLflow's job execution (GenAI jobs, trace rollups), which would start a job
    # runner and seven huey consumers, each importing mlflow, for a UI that shows one run
    port = _free_port()
    proc = subprocess.Popen(
        [*argv, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300  # `import mlflow` alone takes long on a busy machine
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/get?run_id={run.id}"
        while True:
            assert proc.poll() is None, "mlflow ui exited"
            try:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    assert json.load(answer)["run"]["info"]["run_id"] == run.id
                    break
            except OSError:
                assert time.monotonic() < deadline, "mlflow ui did not answer in 300 s"
                time.sleep(0.5)
    finally:
        stop_mlflow_server(proc, signal.SIGTERM)


def test_a_run_that_exists_only_locally_has_no_link(tmp_path: Path) -> None:
    port = _free_port()  # nothing listens there
    tracker = trackkit.get_tracker("mlflow", tracking_uri=f"http://127.0.0.1:{port}")
    with pytest.warns(trackkit.TrackkitWarning) as warned:
        try:
            run = tracker.start_run(experiment="offline")
            assert run.id.startswith("local-") and run.url is None
            assert "exists only locally" in run.describe()
            assert "`trackkit sync` creates it" in run.describe()
            run.end()
        finally:
            with contextlib.suppress(trackkit.TrackkitError):
                tracker.close()
    assert "backend failed" in str(warned[0].message)
