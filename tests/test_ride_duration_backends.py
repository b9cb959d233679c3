"""The ride-duration example, unchanged, on W&B offline and on Neptune (offline and debug).

Each test runs the whole flow with only ``TRACKKIT_BACKEND`` (and the backend's mode) chosen,
then reads what it recorded through the backend's own reader, never through trackkit: W&B's
``leet inspect`` on the offline runs' ``.wandb`` files, Neptune's offline operation logs
parsed line by line, Neptune's own ``fetch()`` on the debug-mode objects, and the offline
registries' sqlite files with ``sqlite3``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import pickle
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import trackkit

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `examples` is a package of the repository, not installed
    sys.path.insert(0, str(REPO))

from examples.ride_duration import __main__ as flow  # noqa: E402
from examples.ride_duration import train  # noqa: E402

from test_ride_duration import (  # noqa: E402
    RIDE,
    gunicorn,
    is_own_tool,
    post_ride,
    printed_command,
    printed_serving_command,
    printed_settings,
)

#: the small flow of test_ride_duration.py: 2000 rides a month, the four baselines, one search
#: trial, 20 boosting rounds
SMALL = ["--rows", "2000", "--trials", "1", "--rounds", "20"]
EXPERIMENT, MODEL_NAME = "ride-duration", "ride-duration"
PREDICTIONS = "predictions/green_tripdata_2021-04_predictions.parquet"
#: settings a developer's shell might carry that would change where runs go
INHERITED = (
    "TRACKKIT_BACKEND", "TRACKKIT_EXPERIMENT", "TRACKKIT_OFFLINE", "TRACKKIT_DIR",
    "TRACKKIT_STRICT", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "WANDB_MODE", "WANDB_DIR",
    "WANDB_ENTITY", "WANDB_PROJECT", "WANDB_API_KEY", "WANDB_BASE_URL", "NEPTUNE_PROJECT",
    "NEPTUNE_API_TOKEN", "NEPTUNE_MODE", "NEPTUNE_DATA_DIRECTORY",
    "RIDE_DURATION_ROWS", "RIDE_DURATION_MODELS", "RIDE_DURATION_TRIALS", "RIDE_DURATION_ROUNDS",
)  # fmt: skip


def run_example(backend: str, workdir: Path) -> str:
    """``python -m examples.ride_duration`` as a user runs it, offline; return its stdout."""
    env = {k: v for k, v in os.environ.items() if k not in INHERITED}
    env.update(TRACKKIT_BACKEND=backend, TRACKKIT_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "examples.ride_duration", *SMALL],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def check_output(output: str) -> str:
    """Check the progress lines and the summary; return the flow's id."""
    for stage in range(1, 7):
        assert f"[{stage}/6] " in output
    assert "5 training runs in 'ride-duration' (4 models, 1 search trial; tag flow_id=" in output
    assert "registered:  ride-duration version 1 (versions kept: 1)" in output
    assert "aliases:     production -> v1 (new), staging -> v1" in output
    assert "'model_name': 'ride-duration', 'model_version': 1}" in output
    # nothing but the example's own report on stdout: no SDK's messages
    report = re.compile(r"(\[\d/6\] |      |Summary|Look at|Serve the|  |$)")
    assert all(report.match(line) for line in output.splitlines()), output
    assert "[neptune]" not in output and "wandb:" not in output
    found = re.search(r"tag flow_id=(\w+)\)", output)
    assert found, output
    return found[1]


def expected_model_types() -> list[str]:
    return sorted([*train.MODEL_TYPES, "xgboost"])  # the baselines and one search trial


def check_params(params: dict[str, str]) -> None:
    """The nested params of one training run, as flat keys with text values."""
    assert params["data.train_path"].endswith("green_tripdata_2021-01.parquet")
    assert params["data.valid_path"].endswith("green_tripdata_2021-02.parquet")
    assert params["data.synthetic"] in ("True", "true") and params["data.seed"] == "42"
    assert params["features.categorical"] == '["PU_DO"]'
    assert int(params["data.valid_rows"]) > 1000
    if params["model.type"] == "lasso":
        assert float(params["model.alpha"]) == 0.1
    if params["model.type"] == "xgboost":
        assert int(params["model.max_rounds"]) == 20
        assert {"max_depth", "learning_rate", "early_stopping_rounds"} <= {
            k.split(".", 1)[1] for k in params if k.startswith("model.")
        }


def check_curves(
    valid: list[tuple[int, float]], training: list[tuple[int, float]], metrics: dict[str, float]
) -> None:
    """xgboost's per-round curves: one point per round at steps 0..n-1, the best one = rmse."""
    assert [step for step, _ in sorted(valid)] == list(range(len(valid)))
    assert [step for step, _ in sorted(training)] == list(range(len(training)))
    assert len(training) == len(valid) >= 2
    by_step = dict(valid)
    assert by_step[int(metrics["best_iteration"])] == pytest.approx(metrics["rmse"], rel=1e-4)


def check_vectorizer(pickled: bytes) -> None:
    """The run's preprocessor file is the fitted DictVectorizer, as the course logs it."""
    vectorizer = pickle.loads(pickled)
    assert type(vectorizer).__name__ == "DictVectorizer"
    assert "trip_distance" in vectorizer.vocabulary_
    assert any(key.startswith("PU_DO=") for key in vectorizer.vocabulary_)


def check_predictions(logged: bytes, workdir: Path, rides: float) -> None:
    """The scoring run's file is the predictions parquet the flow wrote, one row per ride."""
    written = workdir / "output" / Path(PREDICTIONS).name
    assert logged == written.read_bytes()
    frame = pd.read_parquet(written)
    assert len(frame) == int(rides) > 1000
    assert (frame.model_version == 1).all()
    assert frame.predicted_duration.between(0, 90).all()


def check_registry(path: Path, best_run: str, *, in_source: str | None = None) -> None:
    """The offline registry's sqlite file: version 1 of the best run, staging and production."""
    assert path.is_file(), path
    with contextlib.closing(sqlite3.connect(path)) as db:
        versions = db.execute(
            "SELECT version, source, run_id, description FROM versions WHERE name = ?",
            (MODEL_NAME,),
        ).fetchall()
        aliases = dict(
            db.execute("SELECT alias, version FROM aliases WHERE name = ?", (MODEL_NAME,))
        )
    ((version, source, run_id, description),) = versions
    assert version == 1
    assert aliases == {"staging": 1, "production": 1}
    assert (in_source or best_run) in source
    assert run_id == best_run
    assert "on green_tripdata_2021-03.parquet" in description
    assert "promoted to production (the first production version)" in description


# -- W&B offline -----------------------------------------------------------------------------
def test_the_whole_flow_on_wandb_offline(tmp_path: Path) -> None:
    pytest.importorskip("wandb")
    from wandb_reader import WandbReader

    output = run_example("wandb", tmp_path)
    flow_id = check_output(output)

    reader = WandbReader(tmp_path / ".trackkit")
    by_project: dict[str, list[str]] = {}
    for directory in sorted(reader.wandb_dir.glob("offline-run-*")):
        run_id = directory.name.rsplit("-", 1)[1]
        projects = {record["project"] for record in reader.records(run_id, "run")}
        assert len(projects) == 1, projects
        by_project.setdefault(projects.pop(), []).append(run_id)
    assert sorted(by_project) == [EXPERIMENT, f"{EXPERIMENT}-scoring"]

    # every run of the experiment is a training run of this flow, but the search's parent run
    runs = [r for r in by_project[EXPERIMENT] if reader.tags(r).get("flow_id") == flow_id]
    parents = [r for r in by_project[EXPERIMENT] if r not in runs]
    assert [reader.tags(r).get("search") for r in parents] == ["hyperopt-tpe"]
    assert len(runs) == len(by_project[EXPERIMENT]) - 1
    config_types = sorted(str(reader.config(r)["model.type"]) for r in runs)
    assert config_types == expected_model_types()
    for run_id in runs:
        params, summary = reader.params(run_id), reader.summary(run_id)
        check_params(params)
        assert reader.status(run_id) == "FINISHED"
        assert reader.tags(run_id)["model_type"] == params["model.type"]
        assert 0 < summary["mae"] < summary["rmse"] < 15
        assert "preprocessor/preprocessor.b" in reader.artifact_files(run_id)
        (log,) = reader.logs(run_id)
        check_vectorizer((log.parent / "files/artifacts/preprocessor/preprocessor.b").read_bytes())
        if params["model.type"] == "xgboost":
            check_curves(
                reader.metric_points(run_id, "round/valid_rmse"),
                reader.metric_points(run_id, "round/train_rmse"),
                summary,
            )
    best = min(runs, key=lambda r: reader.summary(r)["rmse"])
    # the example registers by URI text; the backend finds the run from it
    check_registry(
        tmp_path / ".trackkit" / "trackkit-wandb" / "registry.db", best, in_source=f"model-{best}:"
    )

    (scoring,) = by_project[f"{EXPERIMENT}-scoring"]
    params = reader.params(scoring)
    assert params["model.uri"] == "models:/ride-duration@production"
    assert params["model.version"] == "1"
    assert PREDICTIONS in reader.artifact_files(scoring)
    (log,) = reader.logs(scoring)
    logged = (log.parent / "files" / "artifacts" / PREDICTIONS).read_bytes()
    check_predictions(logged, tmp_path, reader.summary(scoring)["rides"])

    # where to look: W&B's own terminal viewer on the offline runs, and how to upload them
    tool, *args = printed_command(output, " leet ")
    assert is_own_tool(tool, "wandb", tmp_path) and args == ["leet", ".trackkit/wandb"]
    tool, *args = printed_command(output, " sync .trackkit/wandb/offline-run-* && ")
    assert is_own_tool(tool, "wandb", tmp_path)
    assert args[:3] == ["sync", ".trackkit/wandb/offline-run-*", "&&"]
    assert is_own_tool(args[3], "trackkit", tmp_path) and args[4:] == ["sync"]
    check_serving_as_printed(output, tmp_path, "wandb")


def check_serving_as_printed(output: str, workdir: Path, backend: str) -> None:
    """The printed serving command carries the backend's settings: run as printed, in a shell
    that has none of them, the service answers with this backend's version 1."""
    serving = printed_serving_command(output)
    settings = printed_settings(serving)
    assert settings["TRACKKIT_BACKEND"] == backend and settings["TRACKKIT_OFFLINE"] == "1"
    assert settings["PYTHONPATH"].startswith(str(REPO))  # where this run found `examples`
    with gunicorn(workdir, {}, printed=serving, inherit=False) as url:
        status, answer = post_ride(url, RIDE)
    assert status == 200, answer
    assert answer["backend"] == backend
    assert (answer["model_name"], answer["model_version"]) == (MODEL_NAME, 1)


# -- Neptune offline ---------------------------------------------------------------------------
def decode(segments: list[str]) -> str:
    """The documented decoding of a field path below parameters/, metrics/ or tags/."""
    if len(segments) > 1 and segments[-1] == "%":
        segments = segments[:-1]
    unescape = lambda s: re.sub(r"%(25|2F)", lambda m: "%" if m[1] == "25" else "/", s)  # noqa: E731
    return ".".join(unescape(s) for s in segments)


class OfflineRun:
    """One Neptune offline run, from the operation logs the client wrote (data-*.log)."""

    def __init__(self, directory: Path) -> None:
        self.atoms: dict[tuple[str, ...], Any] = {}
        self.floats: dict[str, list[tuple[int, float]]] = {}
        self.files: dict[str, Path] = {}
        logs = sorted(directory.glob("data-*.log"), key=lambda p: int(p.stem.split("-")[1]))
        assert logs, f"no operation log in {directory}"
        for log in logs:
            for line in log.read_text().splitlines():
                op = json.loads(line)["obj"]
                path = tuple(op["path"])
                if op["type"].startswith("Assign"):
                    self.atoms[path] = op["value"]
                elif op["type"] == "LogFloats" and path[0] == "metrics":
                    points = [(int(v["step"]), float(v["value"])) for v in op["values"]]
                    self.floats.setdefault(decode(list(path[1:])), []).extend(points)
                elif op["type"] == "UploadFile" and path[0] == "artifacts":
                    self.files["/".join(path[1:])] = directory / "upload_path" / op["tmp_file_name"]
        self.id = str(self.atoms[("trackkit", "run_id")])

    def below(self, root: str) -> dict[str, Any]:
        return {decode(list(p[1:])): v for p, v in self.atoms.items() if p[0] == root}

    def params(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.below("parameters").items()}

    def metrics(self) -> dict[str, float]:
        return {key: points[-1][1] for key, points in self.floats.items()}


def test_the_whole_flow_on_neptune_offline(tmp_path: Path) -> None:
    pytest.importorskip("neptune")

    output = run_example("neptune", tmp_path)
    flow_id = check_output(output)

    # Neptune's offline data is in the trackkit directory, not in the working directory
    assert not (tmp_path / ".neptune").exists()
    offline = sorted((tmp_path / ".trackkit" / ".neptune" / "offline").glob("run__*"))
    runs = [OfflineRun(d) for d in offline]
    experiments = sorted({str(r.atoms[("trackkit", "experiment")]) for r in runs})
    assert experiments == [EXPERIMENT, f"{EXPERIMENT}-scoring"]
    in_experiment = [r for r in runs if r.atoms[("trackkit", "experiment")] == EXPERIMENT]
    # the search's parent run holds the search settings; every other run is a training run
    training = [r for r in in_experiment if "flow_id" in r.below("tags")]
    parents = [r for r in in_experiment if r not in training]
    assert [r.below("tags").get("search") for r in parents] == ["hyperopt-tpe"]
    assert all(r.below("tags")["flow_id"] == flow_id for r in training)
    assert sorted(r.params()["model.type"] for r in training) == expected_model_types()
    for run in training:
        params, metrics = run.params(), run.metrics()
        check_params(params)
        assert run.atoms[("trackkit", "status")] == "FINISHED"
        assert run.below("tags")["model_type"] == params["model.type"]
        assert 0 < metrics["mae"] < metrics["rmse"] < 15
        check_vectorizer(run.files["preprocessor/preprocessor.b"].read_bytes())
        if params["model.type"] == "xgboost":
            check_curves(run.floats["round/valid_rmse"], run.floats["round/train_rmse"], metrics)
    best = min(training, key=lambda r: r.metrics()["rmse"])
    check_registry(tmp_path / ".trackkit" / "neptune-registry.db", best.id)

    (scoring,) = [r for r in runs if r.atoms[("trackkit", "experiment")] != EXPERIMENT]
    assert scoring.params()["model.uri"] == "models:/ride-duration@production"
    assert scoring.params()["model.version"] == "1"
    check_predictions(scoring.files[PREDICTIONS].read_bytes(), tmp_path, scoring.metrics()["rides"])

    # where to look: the copy into MLflow runs as printed (its `mlflow ui` half is a server)
    assert " sync --path .trackkit --project WORKSPACE/PROJECT && " in output
    check_serving_as_printed(output, tmp_path, "neptune")
    copies = [x.strip() for x in output.splitlines() if " copy .trackkit/.neptune --to mlflow" in x]
    if importlib.util.find_spec("mlflow") is None:
        assert copies == []  # only offered when MLflow is installed
        return
    (look,) = copies
    copy_command = look.split(" && ")[0]
    done = subprocess.run(
        copy_command, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(done.stdout.splitlines()) == len(runs)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / '.trackkit' / 'neptune-runs.db'}")
    copied = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    copied_training = [r for r in copied if "flow_id" in r.data.tags]  # not the search's parent
    assert len(copied_training) == len(copied) - 1
    assert sorted(r.data.params["model.type"] for r in copied_training) == expected_model_types()


# -- Neptune debug (in memory, so in-process) --------------------------------------------------
def series(attribute: Any) -> list[Any]:
    """A series' values with Neptune's own fetch_values().

    neptune 1.14's debug backend ignores the offset of each page of 1000 points, so a series of
    n points comes back n * ceil(n / 1000) times over: keep the first copy.
    """
    values = list(attribute.fetch_values(progress_bar=False)["value"])
    total = len(values)
    n = next(n for n in range(1, total + 1) if n * -(-n // 1000) == total) if total else 0
    return values[:n]


def flatten(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out: dict[tuple[str, ...], Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, (*prefix, key)))
        else:
            out[(*prefix, key)] = value
    return out


def test_the_whole_flow_on_neptune_debug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("neptune")
    monkeypatch.setenv("TRACKKIT_BACKEND", "neptune")
    monkeypatch.setenv("NEPTUNE_MODE", "debug")
    tracker = trackkit.get_tracker()
    assert tracker.backend.mode == "debug"  # type: ignore[attr-defined]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            done = flow.main(SMALL, tracker)  # our tracker: main leaves it open for the reads
        assert check_output(out.getvalue()) == done["flow_id"]
        # nothing survives the process: the hints say so instead of printing commands
        assert "  # nothing: Neptune's debug mode kept the runs in this process's memory" in (
            out.getvalue()
        )
        assert "gunicorn --bind" not in out.getvalue()

        # Read back with Neptune's own fetch()/fetch_values()/download() on the client's
        # in-memory run and model objects (debug runs stay open until the tracker closes).
        backend: Any = tracker.backend
        results = done["runs"]
        assert sorted(r.model_type for r in results) == expected_model_types()
        for result in results:
            run = backend.run_object(result.run_id)
            params = {
                decode(list(p)): str(v) for p, v in flatten(run["parameters"].fetch()).items()
            }
            tags = {decode(list(p)): v for p, v in flatten(run["tags"].fetch()).items()}
            names = flatten(run.get_structure()["metrics"])
            metrics = {
                decode(list(p)): float(run["metrics/" + "/".join(p)].fetch_last()) for p in names
            }
            check_params(params)
            assert params["model.type"] == result.model_type
            assert tags["flow_id"] == done["flow_id"] and tags["model_type"] == result.model_type
            assert run["trackkit/status"].fetch() == "FINISHED"
            assert 0 < metrics["mae"] < metrics["rmse"] < 15
            assert metrics["rmse"] == pytest.approx(result.rmse)
            target = tmp_path / "read" / result.run_id / "preprocessor.b"
            target.parent.mkdir(parents=True)
            run["artifacts/preprocessor/preprocessor.b"].download(destination=str(target))
            check_vectorizer(target.read_bytes())
            if result.model_type == "xgboost":
                curves = {}
                for name in ("valid_rmse", "train_rmse"):
                    values = series(run[f"metrics/round%2F{name}"])
                    # debug mode numbers series points 0, 1, 2...; the steps are kept beside them
                    steps = series(run[f"trackkit/steps/round%2F{name}"])
                    curves[name] = [(int(s), float(v)) for s, v in zip(steps, values, strict=True)]
                check_curves(curves["valid_rmse"], curves["train_rmse"], metrics)

        model, versions = backend.model_objects(MODEL_NAME)
        aliases = {k: int(v) for k, v in model["trackkit"].fetch().get("aliases", {}).items()}
        assert aliases == {"staging": 1, "production": 1}
        (version,) = [v["trackkit"].fetch() for v in versions.values()]
        best = min(results, key=lambda r: r.rmse)
        assert version["version"] == 1 and version["run_id"] == best.run_id
        assert version["source"] == f"runs:/{best.run_id}/model"

        scored = done["scored"]
        run = backend.run_object(scored.run_id)
        scoring_params = {
            decode(list(p)): str(v) for p, v in flatten(run["parameters"].fetch()).items()
        }
        assert scoring_params["model.uri"] == "models:/ride-duration@production"
        assert scoring_params["model.version"] == "1"
        target = tmp_path / "read" / "predictions.parquet"
        run[f"artifacts/{PREDICTIONS}"].download(destination=str(target))
        check_predictions(target.read_bytes(), tmp_path, float(run["metrics/rides"].fetch_last()))
    finally:
        tracker.close()


# -- Neptune's own messages: off stdout, on stderr when asked --------------------------------
QUIET_SCRIPT = """
import logging, sys
import trackkit
if sys.argv[1] == "logging":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="LOG %(name)s %(message)s")
tracker = trackkit.get_tracker("neptune", mode="offline")
with tracker.start_run(experiment="quiet") as run:
    run.log_metric("loss", 0.5)
tracker.close()
print("report")
"""


@pytest.mark.parametrize("how", ["default", "verbose", "logging"])
def test_neptune_client_messages_never_reach_stdout(tmp_path: Path, how: str) -> None:
    pytest.importorskip("neptune")
    env = {k: v for k, v in os.environ.items() if k not in INHERITED}
    env.pop("TRACKKIT_VERBOSE", None)
    if how == "verbose":
        env["TRACKKIT_VERBOSE"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", QUIET_SCRIPT, how],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == "report\n"  # the program's own output only
    initialized = [line for line in done.stderr.splitlines() if "Neptune initialized" in line]
    if how == "default":
        assert initialized == []  # info lines go to the trackkit logger, unconfigured here
    elif how == "verbose":
        assert len(initialized) == 1 and initialized[0].startswith("[neptune] ")
    else:  # through the trackkit.neptune logger, the program's own logging shows them
        assert len(initialized) == 1 and initialized[0].startswith("LOG neptune ")
    assert list((tmp_path / ".trackkit" / ".neptune" / "offline").glob("run__*"))
    assert not (tmp_path / ".neptune").exists()
