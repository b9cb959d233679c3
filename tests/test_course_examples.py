"""The course's own code (examples/course), unchanged, on every backend, read back with each
backend's own reader: MLflow's client (a sqlite store and a real local ``mlflow server``),
W&B's ``leet inspect`` on the offline runs, Neptune's offline operation logs, and Neptune's
own ``fetch()`` on the debug-mode objects (in memory, so inside the scripts' process).

Also: a run entered with ``with tracker.start_run() as run:`` is the active run of its thread,
for autologging and the search integrations too.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import sqlite3
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest

import trackkit
from trackkit.errors import TrackkitWarning

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `examples` is a package of the repository, not installed
    sys.path.insert(0, str(REPO))

pytest.importorskip("sklearn")
pytest.importorskip("xgboost")
pytest.importorskip("hyperopt")

from examples.course import EXPERIMENT, MODEL_NAME, SCORING_EXPERIMENT, SCRIPTS  # noqa: E402

from conftest import start_mlflow_server, stop_mlflow_server  # noqa: E402

#: small and quick: 1500 rides a month, 10 boosting rounds at most, 2 search trials
SMALL = {"COURSE_ROWS": "1500", "COURSE_ROUNDS": "10", "COURSE_TRIALS": "2"}
TRIALS = 2
INHERITED = (
    "TRACKKIT_BACKEND", "TRACKKIT_EXPERIMENT", "TRACKKIT_OFFLINE", "TRACKKIT_DIR",
    "TRACKKIT_STRICT", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "WANDB_MODE", "WANDB_DIR",
    "WANDB_ENTITY", "WANDB_PROJECT", "WANDB_API_KEY", "WANDB_BASE_URL", "NEPTUNE_PROJECT",
    "NEPTUNE_API_TOKEN", "NEPTUNE_MODE", "NEPTUNE_DATA_DIRECTORY",
    "COURSE_ROWS", "COURSE_ROUNDS", "COURSE_TRIALS",
)  # fmt: skip
LINEAR = ("linear_regression", "lasso", "ridge")
#: the signature every linear model's input example gives
INPUTS = [
    {"type": "string", "name": "PU_DO", "required": True},
    {"type": "double", "name": "trip_distance", "required": True},
]
PARAMS = {"learning_rate", "max_depth", "min_child_weight", "objective", "num_boost_round"}


def run_course(workdir: Path, module: str = "examples.course", **env: str) -> str:
    """``python -m <module>`` as a user runs it from a shell with only ``env`` set."""
    clean = {k: v for k, v in os.environ.items() if k not in INHERITED}
    clean.update(SMALL, **env)
    clean["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), clean.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", module],
        cwd=workdir,
        env=clean,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def check_steps(points: list[tuple[int, float]]) -> None:
    """A per-round curve: one point per round, at steps 0, 1, 2..., falling overall."""
    steps = sorted(step for step, _ in points)
    assert steps == list(range(len(points))) and len(points) >= 2, steps
    values = [value for _, value in sorted(points)]
    assert values[-1] < values[0]


def check_pair(pair: Any) -> None:
    """The course's pickled (dv, model) pair, loaded back as such."""
    dv, model = pair
    assert type(dv).__name__ == "DictVectorizer" and "trip_distance" in dv.vocabulary_
    assert type(model).__name__ in ("Lasso", "Booster")


# -- MLflow ----------------------------------------------------------------------------------------
def check_mlflow(uri: str, workdir: Path) -> None:
    """Everything the course logged, through MLflow's own client and pyfunc loader."""
    import mlflow

    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)  # mlflow.models / mlflow.pyfunc read from the global URIs
    mlflow.set_registry_uri(uri)
    try:
        check_mlflow_store(uri, workdir)
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])


def check_mlflow_store(uri: str, workdir: Path) -> None:
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    by_name = {run.info.run_name: run for run in runs}
    # no stray run anywhere else: the autologged fit without a run got a run in the experiment
    default = client.get_experiment_by_name("Default")
    assert default is None or not client.search_runs([default.experiment_id])

    # tracking: two Lasso runs with the course's params, metric and pickled artifact
    lasso = [r for r in runs if r.data.tags.get("model") == "lasso" and "alpha" in r.data.params]
    assert sorted(r.data.params["alpha"] for r in lasso) == ["0.01", "0.1"]
    for run in lasso:
        assert run.data.params["train-data-path"].endswith("green_tripdata_2021-01.parquet")
        assert 0 < run.data.metrics["rmse"] < 15
        path = client.download_artifacts(run.info.run_id, "model_pickle/lin_reg.bin", str(workdir))
        check_pair(pickle.loads(Path(path).read_bytes()))

    # autolog: xgboost's params, validation rmse at each round, the booster with a signature
    xgb_run = by_name["xgboost-autolog"]
    assert set(xgb_run.data.params) >= PARAMS
    history = client.get_metric_history(xgb_run.info.run_id, "validation-rmse")
    check_steps([(m.step, m.value) for m in history])
    info = mlflow.models.get_model_info(f"runs:/{xgb_run.info.run_id}/model")
    assert info.flavors.keys() >= {"xgboost", "python_function"}
    assert info.signature is not None and info.signature.inputs is not None
    ridge = by_name["ridge-autolog"]  # autologged into `with tracker.start_run()`
    assert ridge.data.params["alpha"] == "1.0"
    assert ridge.data.tags["estimator_name"] == "Ridge"
    assert 0 < ridge.data.metrics["training_r2_score"] <= 1
    assert mlflow.models.get_model_info(f"runs:/{ridge.info.run_id}/model").signature
    started = [r for r in runs if r.data.tags.get("estimator_name") == "LinearRegression"]
    assert len(started) == 1 and started[0].info.status == "FINISHED"  # a run of its own

    # model logging: each pipeline with its signature; pyfunc predicts what the object does
    for name in LINEAR:
        run_id = by_name[name].info.run_id
        model_info = mlflow.models.get_model_info(f"runs:/{run_id}/model")
        assert model_info.signature.inputs.to_dict() == INPUTS
        # the URI log_model returned: MLflow 3's logged model, from this run
        assert mlflow.models.get_model_info(by_name[name].data.tags["model_uri"]).run_id == run_id
    booster = by_name["xgboost"]
    assert booster.data.params["max_depth"] == "30"
    info = mlflow.models.get_model_info(f"runs:/{booster.info.run_id}/models_mlflow")
    assert "xgboost" in info.flavors and info.signature is not None
    check_pair(trackkit.get_tracker("mlflow", tracking_uri=uri).load_model(
        f"runs:/{booster.info.run_id}/model_pair"
    ))  # fmt: skip

    # the search: its trials are child runs of the search run (MLflow's UI nests them)
    search = by_name["xgboost-search"]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == search.info.run_id]
    assert sorted(r.info.run_name for r in trials) == [f"trial-{i}" for i in range(TRIALS)]
    for trial in trials:
        assert {"max_depth", "learning_rate", "reg_alpha"} <= set(trial.data.params)
        assert trial.data.metrics["loss"] == pytest.approx(trial.data.metrics["rmse"])
    assert search.data.metrics["best_rmse"] == min(t.data.metrics["rmse"] for t in trials)

    # the registry: the best linear run's model, moved to Staging, then Production
    best = min((by_name[n] for n in LINEAR), key=lambda r: r.data.metrics["rmse"])
    registered = client.get_registered_model(MODEL_NAME)
    assert registered.description == "NYC green-taxi ride duration, in minutes"
    version = client.get_model_version_by_alias(MODEL_NAME, "production")
    assert client.get_model_version_by_alias(MODEL_NAME, "staging").version == version.version
    assert int(version.version) == 1 and version.run_id == best.info.run_id
    assert version.description == "The model version 1 was transitioned to Staging"
    assert version.tags["model"] == best.data.tags["model"]
    production = f"models:/{MODEL_NAME}@production"
    assert mlflow.models.get_model_info(production).signature.inputs.to_dict() == INPUTS
    # MLflow's own loader gives the pipeline, which predicts what trackkit's copy predicts
    rides = [{"PU_DO": "74_75", "trip_distance": 2.5}, {"PU_DO": "1_2", "trip_distance": 9.0}]
    loaded = trackkit.get_tracker("mlflow", tracking_uri=uri).load_model(production)
    expected = loaded.predict(rides)
    assert mlflow.sklearn.load_model(production).predict(rides) == pytest.approx(expected)
    # pyfunc predicts with the booster as xgboost itself does
    import xgboost

    dv_path = client.download_artifacts(
        booster.info.run_id, "preprocessor/preprocessor.b", str(workdir / "xgb")
    )
    # dense, as pyfunc takes a tensor (a dense zero is a value, a sparse one is missing)
    features = pickle.loads(Path(dv_path).read_bytes()).transform(rides).toarray()
    pyfunc = mlflow.pyfunc.load_model(f"runs:/{booster.info.run_id}/models_mlflow")
    own = mlflow.xgboost.load_model(f"runs:/{booster.info.run_id}/models_mlflow")
    assert pyfunc.predict(features) == pytest.approx(
        own.predict(xgboost.DMatrix(features)), rel=1e-5
    )

    # batch scoring: a run of its own experiment with the predictions file
    scoring = client.get_experiment_by_name(SCORING_EXPERIMENT)
    (scored,) = client.search_runs([scoring.experiment_id])
    assert scored.data.params["model_uri"] == f"models:/{MODEL_NAME}/Production"
    assert scored.data.params["run_uri"] == f"runs:/{best.info.run_id}/model"
    path = client.download_artifacts(
        scored.info.run_id, "predictions/green_tripdata_2021-03_predictions.parquet", str(workdir)
    )
    frame = pd.read_parquet(path)
    assert len(frame) == scored.data.metrics["rides"] > 1000
    assert (frame.model_version == 1).all()


def test_each_course_script_on_mlflow_sqlite(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    for name in SCRIPTS:  # one process each, as the course runs them
        output = run_course(tmp_path, f"examples.course.{name}")
        assert "run" in output
    check_mlflow(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)


@pytest.mark.server
def test_the_course_on_a_local_mlflow_server(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    proc, url = start_mlflow_server(tmp_path / "server")
    try:
        work = tmp_path / "work"
        work.mkdir()
        run_course(work, MLFLOW_TRACKING_URI=url)
        assert not (work / "mlflow.db").exists()  # everything went to the server
        check_mlflow(url, work)
    finally:
        stop_mlflow_server(proc)


# -- W&B offline -----------------------------------------------------------------------------------
def test_the_course_on_wandb_offline(tmp_path: Path) -> None:
    pytest.importorskip("wandb")
    from wandb_reader import WandbReader

    output = run_course(tmp_path, TRACKKIT_BACKEND="wandb", TRACKKIT_OFFLINE="1")
    assert "wandb:" not in output  # W&B's messages stay off the scripts' output
    reader = WandbReader(tmp_path / ".trackkit")
    runs: dict[str, list[str]] = {}
    project: dict[str, str] = {}
    for directory in sorted(reader.wandb_dir.glob("offline-run-*")):
        run_id = directory.name.rsplit("-", 1)[1]
        (record, *_) = reader.records(run_id, "run")
        runs.setdefault(record.get("display_name") or "", []).append(run_id)
        project[run_id] = record["project"]
    assert sorted(set(project.values())) == [EXPERIMENT, SCORING_EXPERIMENT]
    (xgb_run,) = runs["xgboost-autolog"]
    assert set(reader.config(xgb_run)) >= PARAMS
    check_steps(reader.metric_points(xgb_run, "validation-rmse"))

    def package(run_id: str) -> dict[str, Any]:
        """The trackkit model package the run's model artifact holds (flavor, signature)."""
        (artifact,) = [a for a in reader.artifacts(run_id) if a["type"] == "model"]
        files = {f["path"]: f["local_path"] for f in artifact["manifest"]["contents"]}
        return json.loads(Path(files["trackkit-model.json"]).read_text())

    assert package(xgb_run)["flavor"] == "xgboost" and package(xgb_run)["signature"]
    (ridge,) = runs["ridge-autolog"]
    assert (
        reader.params(ridge)["alpha"] == "1.0" and reader.tags(ridge)["estimator_name"] == "Ridge"
    )
    for name in LINEAR:
        (run_id,) = runs[name]
        assert package(run_id)["signature"]["inputs"] == INPUTS
    (search,) = runs["xgboost-search"]
    trials = [r for name, ids in runs.items() if name.startswith("trial-") for r in ids]
    assert len(trials) == TRIALS
    for trial in trials:
        assert reader.parent_id(trial) == search and reader.group(trial) == search
        assert {"max_depth", "learning_rate"} <= set(reader.params(trial))
        assert reader.summary(trial)["loss"] == pytest.approx(reader.summary(trial)["rmse"])
    # the offline registry (trackkit's sqlite file; no W&B counterpart offline)
    best = min((runs[n][0] for n in LINEAR), key=lambda r: reader.summary(r)["rmse"])
    assert reader.model_versions(MODEL_NAME) == [1]
    assert reader.alias_version(MODEL_NAME, "production") == 1
    assert reader.alias_version(MODEL_NAME, "staging") == 1
    check_registry(reader.registry, best)
    (scored,) = runs["score-2021-03"]
    assert reader.params(scored)["run_uri"] == f"runs:/{best}/model"  # loaded on W&B too
    assert "predictions/green_tripdata_2021-03_predictions.parquet" in reader.artifact_files(scored)


def check_registry(path: Path, best_run: str) -> None:
    """An offline registry file: version 1 of the best run, its description and tag."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        ((run_id, description),) = db.execute(
            "SELECT run_id, description FROM versions WHERE name = ?", (MODEL_NAME,)
        ).fetchall()
    assert run_id == best_run
    assert description == "The model version 1 was transitioned to Staging"


# -- Neptune ---------------------------------------------------------------------------------------
def test_the_course_on_neptune_offline(tmp_path: Path) -> None:
    pytest.importorskip("neptune")
    from test_ride_duration_backends import OfflineRun

    run_course(tmp_path, TRACKKIT_BACKEND="neptune", TRACKKIT_OFFLINE="1")
    offline = sorted((tmp_path / ".trackkit" / ".neptune" / "offline").glob("run__*"))
    runs = [OfflineRun(d) for d in offline]
    by_name: dict[str, list[OfflineRun]] = {}
    for run in runs:
        by_name.setdefault(str(run.atoms.get(("sys", "name"), "")), []).append(run)
    (xgb_run,) = by_name["xgboost-autolog"]
    assert set(xgb_run.params()) >= PARAMS
    check_steps(xgb_run.floats["validation-rmse"])
    assert json.loads(xgb_run.files["model/trackkit-model.json"].read_text())["signature"]
    (ridge,) = by_name["ridge-autolog"]
    assert ridge.params()["alpha"] == "1.0"
    for name in LINEAR:
        (run,) = by_name[name]
        meta = json.loads(run.files["model/trackkit-model.json"].read_text())
        assert meta["signature"]["inputs"] == INPUTS
    (search,) = by_name["xgboost-search"]
    trials = [r for name, found in by_name.items() if name.startswith("trial-") for r in found]
    assert len(trials) == TRIALS
    for trial in trials:
        assert trial.atoms[("trackkit", "parent_id")] == search.id
        assert trial.metrics()["loss"] == pytest.approx(trial.metrics()["rmse"])
    best = min((by_name[n][0] for n in LINEAR), key=lambda r: r.metrics()["rmse"])
    registry = tmp_path / ".trackkit" / "neptune-registry.db"
    with contextlib.closing(sqlite3.connect(registry)) as db:
        aliases = dict(
            db.execute("SELECT alias, version FROM aliases WHERE name = ?", (MODEL_NAME,))
        )
    assert aliases == {"staging": 1, "production": 1}
    check_registry(registry, best.id)
    (scored,) = by_name["score-2021-03"]
    assert scored.params()["run_uri"] == f"runs:/{best.id}/model"
    assert "predictions/green_tripdata_2021-03_predictions.parquet" in scored.files


def test_the_course_on_neptune_debug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Debug mode keeps everything in this process: the scripts run here, one tracker."""
    pytest.importorskip("neptune")
    from examples.course import __main__ as course

    from test_ride_duration_backends import decode, flatten

    for key, value in SMALL.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("TRACKKIT_BACKEND", "neptune")
    monkeypatch.setenv("NEPTUNE_MODE", "debug")
    tracker = trackkit.get_tracker()
    assert tracker.backend.mode == "debug"  # type: ignore[attr-defined]
    backend: Any = tracker.backend
    try:
        with (
            contextlib.redirect_stdout(io.StringIO()),
            warnings.catch_warnings(record=True) as seen,
        ):
            warnings.simplefilter("always")
            done = course.main(tracker)
        # the course's stages warn (once per process, so maybe before this test); nothing else
        ours = [str(w.message) for w in seen if issubclass(w.category, TrackkitWarning)]
        assert all("stages are deprecated" in message for message in ours), ours

        def params(run_id: str) -> dict[str, str]:
            run = backend.run_object(run_id)
            return {decode(list(p)): str(v) for p, v in flatten(run["parameters"].fetch()).items()}

        xgb_run = backend.run_object(done["autolog"]["xgboost"])
        assert set(params(done["autolog"]["xgboost"])) >= PARAMS
        values = list(xgb_run["metrics/validation-rmse"].fetch_values(progress_bar=False)["value"])
        steps = xgb_run["trackkit/steps/validation-rmse"].fetch_values(progress_bar=False)["value"]
        check_steps(list(zip((int(s) for s in steps), values, strict=True)))
        assert params(done["autolog"]["ridge"])["alpha"] == "1.0"
        for name in LINEAR:
            run = backend.run_object(done["model_logging"]["runs"][name])
            target = tmp_path / name / "trackkit-model.json"
            target.parent.mkdir()
            run["artifacts/model/trackkit-model.json"].download(destination=str(target))
            assert json.loads(target.read_text())["signature"]["inputs"] == INPUTS

        search = done["search"]["search"]
        found = tracker.search_runs(
            EXPERIMENT, filter=f"attributes.parent_id = '{search}'", output_format="list"
        )
        assert len(found) == TRIALS
        for trial in found:  # the link as Neptune holds it
            assert backend.run_object(trial.id)["trackkit/parent_id"].fetch() == search
            assert {"max_depth", "learning_rate"} <= set(params(trial.id))

        # the registry: Neptune's own model and version objects, with the native stage
        model, versions = backend.model_objects(MODEL_NAME)
        aliases = {k: int(v) for k, v in model["trackkit"].fetch().get("aliases", {}).items()}
        assert aliases == {"staging": 1, "production": 1}
        (version,) = versions.values()
        assert version["sys/stage"].fetch() == "production"
        assert version["trackkit"].fetch()["run_id"] == done["registry"]["best_run"]
        assert done["stage_loading"]["production_rmse"] == done["stage_loading"]["staging_rmse"]
        scored = params(done["batch_scoring"]["run"])
        assert scored["run_uri"] == f"runs:/{done['registry']['best_run']}/model"
    finally:
        trackkit.set_tracker(None)
        tracker.close()


# -- the active run of a `with` block ----------------------------------------------------------
ROWS = [{"PU_DO": f"{i % 4}_{i % 3}", "trip_distance": float(i % 7) + 0.5} for i in range(40)]
TARGET = [3.0 * r["trip_distance"] + len(r["PU_DO"]) for r in ROWS]


def test_a_with_block_run_is_the_active_run_for_autolog(sqlite_uri: str) -> None:
    """Autologging logs into ``with tracker.start_run() as run:`` of a tracker that is not
    the default one, and starts no run of its own beside it."""
    from mlflow import MlflowClient
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline

    tracker = trackkit.get_tracker("mlflow", tracking_uri=sqlite_uri)
    trackkit.autolog()
    try:
        assert trackkit.active_run() is None
        with tracker.start_run(experiment="with-block") as run:
            assert trackkit.active_run() is run
            make_pipeline(DictVectorizer(), Ridge(alpha=0.5)).fit(ROWS, TARGET)
            trackkit.log_metric("extra", 1.0)  # the module-level functions see it too
        assert trackkit.active_run() is None
    finally:
        trackkit.autolog(disable=True)
        tracker.close()
    client = MlflowClient(tracking_uri=sqlite_uri)
    (logged,) = client.search_runs([client.get_experiment_by_name("with-block").experiment_id])
    assert logged.info.run_id == run.id
    assert logged.data.params["ridge__alpha"] == "0.5"
    assert logged.data.metrics["extra"] == 1.0 and "training_r2_score" in logged.data.metrics
    default = client.get_experiment_by_name("Default")
    assert default is None or not client.search_runs([default.experiment_id])


def test_a_with_block_run_is_active_in_its_own_thread_only(sqlite_uri: str) -> None:
    tracker = trackkit.get_tracker("mlflow", tracking_uri=sqlite_uri)
    seen: list[Any] = []
    try:
        with tracker.start_run(experiment="threads") as run:
            worker = threading.Thread(target=lambda: seen.append(trackkit.active_run()))
            worker.start()
            worker.join()
            assert trackkit.active_run() is run
            with tracker.start_run(experiment="threads") as inner:  # innermost first
                assert trackkit.active_run() is inner
            assert trackkit.active_run() is run
    finally:
        tracker.close()
    assert seen == [None]


def test_search_trials_start_on_the_with_block_runs_tracker(sqlite_uri: str) -> None:
    """Trials of an optuna search under ``with tracker.start_run()`` are that run's children,
    on its tracker, though the default tracker is another one."""
    optuna = pytest.importorskip("optuna")
    from mlflow import MlflowClient

    from trackkit.integrations.optuna import TrackkitCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tracker = trackkit.get_tracker("mlflow", tracking_uri=sqlite_uri)
    trackkit.set_tracker(trackkit.get_tracker("mlflow", tracking_uri="sqlite:///default.db"))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    try:
        with tracker.start_run(experiment="optuna-with", name="search") as search:
            study.optimize(
                lambda t: (t.suggest_float("x", -2, 2) - 1) ** 2,
                n_trials=2,
                callbacks=[TrackkitCallback(metric_name="loss")],
            )
    finally:
        tracker.close()
    client = MlflowClient(tracking_uri=sqlite_uri)
    runs = client.search_runs([client.get_experiment_by_name("optuna-with").experiment_id])
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == search.id]
    assert sorted(r.info.run_name for r in trials) == ["trial-0", "trial-1"]
    other = MlflowClient(tracking_uri="sqlite:///default.db")
    assert not [r for e in other.search_experiments() for r in other.search_runs([e.experiment_id])]
