"""Reading runs back on Neptune: metric history, artifact listings, experiments, registered
models, run links and the offline hint.

Offline runs are checked against the operation logs the client wrote (parsed here, as the
documented layout says) and against ``neptune sync``'s own collection of offline objects;
debug runs against the client's own objects (``fetch``, ``fetch_values``). A server cannot run
here: its paths run against ``FakeNeptuneServer`` of tests/test_neptune.py, named as such.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import trackkit
from trackkit.entities import ArtifactInfo, MetricPoint
from trackkit.errors import NotFound

neptune = pytest.importorskip("neptune")

from test_neptune import TOKEN, FakeNeptuneServer  # noqa: E402

BASE = 1_750_000_000_000


@pytest.fixture(autouse=True)
def _no_neptune_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "NEPTUNE_PROJECT",
        "NEPTUNE_API_TOKEN",
        "NEPTUNE_MODE",
        "NEPTUNE_DATA_DIRECTORY",
        "TRACKKIT_OFFLINE",
        "TRACKKIT_DIR",
    ):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def offline(tmp_path: Path) -> Iterator[trackkit.Tracker]:
    tracker = trackkit.get_tracker(
        "neptune",
        mode="offline",
        data_dir=tmp_path / ".neptune",
        registry_path=tmp_path / "registry.db",
    )
    yield tracker
    tracker.close()


@pytest.fixture
def debug() -> Iterator[trackkit.Tracker]:
    tracker = trackkit.get_tracker("neptune", mode="debug")
    yield tracker
    tracker.close()


def _log_points(run: trackkit.Run) -> None:
    for step in (3, 0, 2, 1):
        run.log_metric("loss", 10.0 - step, step=step, timestamp=BASE + 7 * step)
    run.log_metric("loss", 99.0, step=2, timestamp=BASE + 1)  # a second point at step 2


def _logged_ops(data_dir: Path, run_id: str) -> list[dict[str, Any]]:
    """The operations of an offline run, from the client's own log files."""
    ops = []
    for directory in sorted((data_dir / "offline").glob(f"run__{run_id}__*")):
        for log in sorted(directory.glob("data-*.log"), key=lambda p: int(p.stem.split("-")[1])):
            ops += [json.loads(line)["obj"] for line in log.read_text().splitlines()]
    return ops


# -- metric history ------------------------------------------------------------------------------
def test_history_offline_is_every_point_of_the_operation_logs(
    offline: trackkit.Tracker, tmp_path: Path
) -> None:
    with offline.start_run(experiment="hist") as run:
        _log_points(run)
        assert len(offline.get_metric_history(run.id, "loss")) == 5  # open: flushed first
    logged = []
    for op in _logged_ops(tmp_path / ".neptune", run.id):
        if op["type"] == "LogFloats" and op["path"] == ["metrics", "loss"]:
            logged += [(v["step"], v["value"], round(v["ts"] * 1000)) for v in op["values"]]
        if op["type"] == "LogStrings" and op["path"] == ["trackkit", "points", "loss"]:
            logged += [(*json.loads(v["value"]), round(v["ts"] * 1000)) for v in op["values"]]
    history = offline.get_metric_history(run.id, "loss")
    assert sorted((p.step, p.value, p.timestamp) for p in history) == sorted(logged)
    assert [(p.step, p.value) for p in history] == [
        (0, 10.0),
        (1, 9.0),
        (2, 99.0),
        (2, 8.0),
        (3, 7.0),
    ]
    assert history[0] == MetricPoint(0, 10.0, BASE)
    with pytest.raises(NotFound):
        offline.get_metric_history("no-such-run", "loss")


def test_history_in_debug_mode_keeps_the_timestamps_neptune_s_memory_forgets(
    debug: trackkit.Tracker,
) -> None:
    with debug.start_run(experiment="hist") as run:
        _log_points(run)
    history = debug.get_metric_history(run.id, "loss")
    assert [(p.step, p.value, p.timestamp) for p in history] == [
        (0, 10.0, BASE),
        (1, 9.0, BASE + 7),
        (2, 99.0, BASE + 1),
        (2, 8.0, BASE + 14),
        (3, 7.0, BASE + 21),
    ]
    obj = debug.backend.run_object(run.id)  # type: ignore[attr-defined]
    # Neptune's own values, and the companion series that keep steps and timestamps
    values = list(obj["metrics/loss"].fetch_values(progress_bar=False)["value"])
    stamps = list(obj["trackkit/timestamps/loss"].fetch_values(progress_bar=False)["value"])
    assert sorted(values) == sorted(p.value for p in history if p.value != 99.0)
    assert sorted(stamps) == [BASE, BASE + 7, BASE + 14, BASE + 21]
    points = obj["trackkit/point_timestamps/loss"].fetch_values(progress_bar=False)
    assert list(points["value"]) == [BASE + 1]
    # the companions are trackkit's own fields, not the run's metrics
    assert set(debug.get_run(run.id).metrics) == {"loss"}


# -- artifacts, experiments --------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["offline", "debug"])
def test_list_artifacts_with_sizes(
    mode: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    tracker: trackkit.Tracker = request.getfixturevalue(mode)
    with tracker.start_run(experiment="arts") as run:
        run.log_text("hello", "notes.txt")
        run.log_dict({"a": 1}, "out/config.json")
        run.log_text("x" * 300, "out/deep/big.txt")
    listed = tracker.list_artifacts(run.id, recursive=True)
    copy = tracker.download_artifacts(run.id, "out/config.json", tmp_path / "c")
    assert listed == [
        ArtifactInfo("notes.txt", False, 5),
        ArtifactInfo("out", True),
        ArtifactInfo("out/config.json", False, copy.stat().st_size),
        ArtifactInfo("out/deep", True),
        ArtifactInfo("out/deep/big.txt", False, 300),
    ]
    if mode == "offline":  # the sizes of the files the client copied into its upload directory
        uploads = {}
        for op in _logged_ops(tmp_path / ".neptune", run.id):
            if op["type"] == "UploadFile" and op["path"][0] == "artifacts":
                [directory] = (tmp_path / ".neptune" / "offline").glob(f"run__{run.id}__*")
                local = directory / "upload_path" / op["tmp_file_name"]
                uploads["/".join(op["path"][1:])] = local.stat().st_size
        assert uploads == {e.path: e.size for e in listed if not e.is_dir}
    assert tracker.list_artifacts(run.id, "out") == [
        ArtifactInfo("out/config.json", False, copy.stat().st_size),
        ArtifactInfo("out/deep", True),
    ]
    assert tracker.list_artifacts(run.id, "nope") == []


@pytest.mark.parametrize("mode", ["offline", "debug"])
def test_list_experiments(mode: str, request: pytest.FixtureRequest) -> None:
    tracker: trackkit.Tracker = request.getfixturevalue(mode)
    for experiment in ("ride", "taxi", "ride"):
        with tracker.start_run(experiment=experiment) as run:
            run.log_metric("m", 1.0)
    with tracker.start_run(experiment="open") as run:
        assert tracker.list_experiments() == ["open", "ride", "taxi"]


# -- registered models ---------------------------------------------------------------------------
def test_registered_models_in_debug_mode_are_the_client_s_model_objects(
    debug: trackkit.Tracker,
) -> None:
    with debug.start_run(experiment="reg") as run:
        run.log_text("m", "model.txt")
    source = f"runs:/{run.id}/model.txt"
    debug.register_model(source, "ride-model", description="v1")
    debug.register_model(source, "ride-model")
    debug.register_model(source, "other")
    debug.set_model_alias("ride-model", "production", 1)
    debug.update_registered_model("ride-model", "ride durations")
    model, _ = debug.backend.model_objects("ride-model")  # type: ignore[attr-defined]
    model["sys/tags"].add(["team:taxi", "course"])
    listed = {m.name: m for m in debug.list_registered_models()}
    assert list(listed) == ["other", "ride-model"]
    ride = listed["ride-model"]
    assert (ride.description, ride.latest_version, ride.aliases) == (
        "ride durations",
        2,
        {"production": 1},
    )
    assert ride.tags == {"team": "taxi", "course": ""}
    assert model["sys/description"].fetch() == "ride durations"  # Neptune's own field
    assert listed["other"].latest_version == 1 and listed["other"].aliases == {}


def test_registered_models_offline_come_from_the_local_registry(
    offline: trackkit.Tracker,
) -> None:
    with offline.start_run(experiment="reg") as run:
        run.log_metric("m", 1.0)
    offline.register_model(f"runs:/{run.id}/model", "ride-model")
    offline.update_registered_model("ride-model", "ride durations")
    [model] = offline.list_registered_models()
    assert (model.name, model.description, model.latest_version) == (
        "ride-model",
        "ride durations",
        1,
    )
    assert offline.backend.list_registered_models() == [model]


# -- run links and hints -------------------------------------------------------------------------
def test_an_offline_run_names_the_neptune_sync_command_that_uploads_it(
    offline: trackkit.Tracker, tmp_path: Path
) -> None:
    from neptune.cli.collect import collect_offline_containers
    from neptune.cli.path_option import get_neptune_path

    with offline.start_run(experiment="hint") as run:
        run.log_metric("m", 1.0)
    assert run.url is None and offline.get_run(run.id).url is None
    shown = run.describe()
    command = shlex.split(shown[shown.index("`") + 1 : shown.rindex("`")])
    assert command[:2] == ["neptune", "sync"]
    options = dict(zip(command[2::2], command[3::2], strict=True))
    # neptune sync's own option handling and collection find this very run there
    found = get_neptune_path(None, None, options["--path"])
    ids = [str(c.container_id) for c in collect_offline_containers(path=found)]
    assert options["--object"] == f"offline/{run.id}" and run.id in ids
    assert options["--project"] == "WORKSPACE/PROJECT"


def test_a_debug_run_has_no_link(debug: trackkit.Tracker) -> None:
    with debug.start_run(experiment="x") as run:
        run.log_metric("m", 1.0)
    assert run.url is None and "memory" in run.describe()


def test_server_runs_link_to_their_page_and_list_experiments_and_models(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = FakeNeptuneServer(monkeypatch)
    options = {"project": "ws/proj", "api_token": TOKEN, "api_url": "https://u:pw@nep.local:8443"}
    tracker = trackkit.get_tracker("neptune", mode="async", **options)
    server.add_run("r-synced", "ride")
    with tracker.start_run(experiment="taxi") as run:
        run.log_metric("loss", 1.0, step=0, timestamp=BASE)
        run.log_metric("loss", 0.5, step=1, timestamp=BASE + 5)
    assert run.url == f"https://nep.local:8443/ws/proj/e/{run.id}"
    assert tracker.get_run(run.id).url == run.url
    urls = {i.id: i.url for i in tracker.search_runs(["ride", "taxi"])}
    assert urls == {"r-synced": "https://nep.local:8443/ws/proj/e/PROJ-1", run.id: run.url}
    assert tracker.list_experiments() == ["ride", "taxi"]
    history = tracker.get_metric_history(run.id, "loss")
    assert [(p.step, p.value) for p in history] == [(0, 1.0), (1, 0.5)]
    tracker.register_model(f"runs:/{run.id}/model", "ride-model", description="first")
    tracker.update_registered_model("ride-model", "ride durations")
    [model] = tracker.list_registered_models()
    assert (model.name, model.description, model.latest_version) == (
        "ride-model",
        "ride durations",
        1,
    )
    tracker.close()
