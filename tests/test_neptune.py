"""The Neptune backend beyond the conformance suite.

The field layout (escapes, clashes), the step handling (out-of-order, repeated, independent and
huge steps), modes and secrets, the offline registry's deferred calls replayed by
``trackkit sync``, tags mirrored into ``sys/tags``, and the server code paths. What is checked
is read back with the neptune client (debug mode) or from the operation logs it wrote (offline).
No Neptune server can run here: the server paths run against ``FakeNeptuneServer``.
"""

from __future__ import annotations

import base64
import itertools
import json
import random
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import trackkit
from trackkit.backends.neptune import KeyPaths, NeptuneBackend, key_of, to_nql
from trackkit.errors import BackendError, InvalidInput, NotFound, UnsupportedOperation
from trackkit.search import parse_filter

neptune = pytest.importorskip("neptune")

SECRET = "sekret-key-0123456789abcdef"
TOKEN = base64.b64encode(
    json.dumps({"api_address": "https://neptune.example.com", "api_key": SECRET}).encode()
).decode()


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


@pytest.fixture(params=["debug", "offline"])
def tracker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[trackkit.Tracker]:
    tracker = trackkit.get_tracker("neptune", mode=request.param, data_dir=tmp_path / ".neptune")
    yield tracker
    tracker.close()


def offline_ops(data_dir: Path, run_id: str) -> list[dict[str, Any]]:
    """Every operation the client logged for an offline run, parsed from its data-*.log files."""
    ops = []
    for directory in sorted((data_dir / "offline").glob(f"run__{run_id}__*")):
        for log in sorted(directory.glob("data-*.log")):
            ops += [json.loads(line)["obj"] for line in log.read_text().splitlines()]
    return ops


def stored_fields(tracker: trackkit.Tracker, run_id: str) -> dict[str, Any]:
    """Field path -> value (atoms) or list of (step, value) (series), read from Neptune's data."""
    backend = tracker.backend
    if backend.mode == "offline":  # type: ignore[attr-defined]
        found: dict[str, Any] = {}
        for op in offline_ops(backend.data_dir, run_id):  # type: ignore[attr-defined]
            path = "/".join(op["path"])
            if op["type"].startswith("Assign"):
                found[path] = op["value"]
            elif op["type"] in ("LogFloats", "LogStrings"):
                found.setdefault(path, []).extend((v["step"], v["value"]) for v in op["values"])
        return found
    run = backend.run_object(run_id)  # type: ignore[attr-defined]
    found = {}

    def walk(tree: dict[str, Any], prefix: str) -> None:
        for name, value in tree.items():
            path = f"{prefix}/{name}" if prefix else name
            if isinstance(value, dict):
                walk(value, path)
            elif isinstance(
                value, neptune.attributes.FloatSeries | neptune.attributes.StringSeries
            ):
                frame = value.fetch_values(progress_bar=False)
                found[path] = list(zip(frame["step"], frame["value"], strict=True))
            elif not isinstance(value, neptune.attributes.File | neptune.attributes.FileSet):
                found[path] = value.fetch()

    walk(run.get_structure(), "")
    return found


# -- the key layout ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("earlier", "key", "path"),
    [
        ([], "model.alpha", ("model", "alpha")),
        ([], "data/train", ("data%2Ftrain",)),
        ([], "100%", ("100%25",)),
        ([], "a..b", ("a", ".b")),
        ([], "a.", ("a.",)),
        ([], ".a", (".a",)),
        (["model"], "model.alpha", ("model.alpha",)),
        (["model.alpha"], "model", ("model", "%")),
        (["a.b"], "a.b.c", ("a", "b.c")),
        (["a", "a.b.c"], "a.b", ("a.b", "%")),
    ],
)
def test_key_paths_put_values_and_namespaces_apart(
    earlier: list[str], key: str, path: tuple[str, ...]
) -> None:
    paths = KeyPaths()
    for other in earlier:
        paths.path(other)
    assert paths.path(key) == path
    assert key_of(path) == key


def test_every_key_round_trips_and_no_path_is_both_a_value_and_a_namespace() -> None:
    alphabet = ["a", "b", ".", "/", "%", "2F"]
    keys = ["".join(k) for n in range(1, 5) for k in itertools.product(alphabet, repeat=n)]
    for seed in range(3):
        random.Random(seed).shuffle(keys)
        paths = KeyPaths()
        placed = {key: paths.path(key) for key in keys}
        assert {key: paths.path(key) for key in keys} == placed  # stable
        assert len(set(placed.values())) == len(keys)  # one path per key
        for key, path in placed.items():
            assert key_of(path) == key
            assert all(segment and "/" not in segment for segment in path)
        fields = set(placed.values())
        for path in fields:
            assert not any(path[:i] in fields for i in range(1, len(path)))


TRICKY = {
    "model": "lasso",
    "model.alpha": 0.5,
    "data/train": "a.parquet",
    "100%": True,
    "a..b": 2**40,
    "x.": -3,
    "%": "self",
}


def test_tricky_keys_are_stored_as_neptune_accepts_and_read_back(
    tracker: trackkit.Tracker,
) -> None:
    with tracker.start_run(experiment="keys") as run:
        run.log_params(TRICKY)
        run.set_tags({k: str(v) for k, v in TRICKY.items()})
        for key in TRICKY:
            run.log_metric(key, 1.5)
    stored = stored_fields(tracker, run.id)
    params = {key_of(p.split("/")[1:]): v for p, v in stored.items() if p.startswith("parameters/")}
    assert params == {**TRICKY, "a..b": str(2**40)}  # beyond Neptune's 32-bit ints: text
    tags = {key_of(p.split("/")[1:]): v for p, v in stored.items() if p.startswith("tags/")}
    assert tags == {k: str(v) for k, v in TRICKY.items()}
    assert stored["parameters/model"] == "lasso"
    assert stored["parameters/model.alpha"] == 0.5
    assert stored["parameters/data%2Ftrain"] == "a.parquet"
    info = tracker.get_run(run.id)
    assert info.params == {k: str(v) for k, v in TRICKY.items()}
    assert info.metrics == dict.fromkeys(TRICKY, 1.5)


# -- steps ---------------------------------------------------------------------------------------
def test_out_of_order_repeated_and_independent_steps_lose_no_point(
    tracker: trackkit.Tracker,
) -> None:
    with tracker.start_run(experiment="steps") as run:
        for step in (5, 3, 10, 1):  # each in its own batch: the order Neptune sees
            run.log_metric("shuffled", float(step), step=step)
            run.flush()
        for i in range(3):
            run.log_metric("train.loss", 1.0 / (i + 1), step=i * 100)
        for i in range(5):
            run.log_metric("val.loss", float(i))  # its own counter: 0..4
        run.flush()
        run.log_metric("train.loss", 9.0, step=50)  # late
        run.log_metric("shuffled", 11.0, step=10)  # a second point at a step
        run.log_metric("huge", 1.0, step=2**60)  # beyond float64's exact integers
    stored = stored_fields(tracker, run.id)

    def points(key: str) -> list[tuple[int, float]]:
        lane = [(int(s), v) for s, v in stored[f"metrics/{key}"]]
        if tracker.backend.mode == "debug":  # type: ignore[attr-defined]
            steps = [int(v) for _, v in stored[f"trackkit/steps/{key}"]]
            lane = [(s, v) for s, (_, v) in zip(steps, lane, strict=True)]
        late = [tuple(json.loads(v)) for _, v in stored.get(f"trackkit/points/{key}", [])]
        return sorted(lane + late)  # type: ignore[arg-type]

    assert points("shuffled") == [(1, 1.0), (3, 3.0), (5, 5.0), (10, 10.0), (10, 11.0)]
    assert points("train/loss") == [(0, 1.0), (50, 9.0), (100, 0.5), (200, 1 / 3)]
    assert points("val/loss") == [(i, float(i)) for i in range(5)]
    assert [v for _, v in stored["trackkit/points/huge"]] == [f"[{2**60}, 1.0]"]  # exact
    info = tracker.get_run(run.id)
    assert info.metrics["shuffled"] == 11.0  # highest step, logged last
    if tracker.backend.mode == "offline":  # type: ignore[attr-defined]
        # every series Neptune will upload has strictly increasing steps: the server takes them
        series: dict[str, list[float]] = {}
        for op in offline_ops(tracker.backend.data_dir, run.id):  # type: ignore[attr-defined]
            if op["type"] == "LogFloats":
                series.setdefault("/".join(op["path"]), []).extend(v["step"] for v in op["values"])
        assert series["metrics/shuffled"] == [5, 10]
        for steps in series.values():
            assert steps == sorted(set(steps))


def test_points_of_one_batch_are_appended_in_step_order(tmp_path: Path) -> None:
    tracker = trackkit.get_tracker("neptune", mode="offline", data_dir=tmp_path / ".neptune")
    with tracker.start_run(experiment="steps") as run:
        for step in (5, 3, 10, 1):
            run.log_metric("shuffled", float(step), step=step)
    stored = stored_fields(tracker, run.id)
    assert stored["metrics/shuffled"] == [(1, 1.0), (3, 3.0), (5, 5.0), (10, 10.0)]
    assert "trackkit/points/shuffled" not in stored
    tracker.close()


def test_resumed_run_continues_steps_and_places_late_points_beside(tmp_path: Path) -> None:
    tracker = trackkit.get_tracker("neptune", mode="debug")
    with tracker.start_run(experiment="resume") as first:
        first.log_metric("loss", 1.0, step=10)
    with tracker.start_run(run_id=first.id) as again:
        again.log_metric("loss", 0.5)  # step 11
        again.log_metric("loss", 0.7, step=2)  # earlier than the series holds
    stored = stored_fields(tracker, first.id)
    assert [v for _, v in stored["trackkit/steps/loss"]] == [10.0, 11.0]
    assert [v for _, v in stored["trackkit/points/loss"]] == ["[2, 0.7]"]
    assert stored["trackkit/status"] == "FINISHED"
    tracker.close()


# -- status, tags, artifacts ----------------------------------------------------------------------
def test_status_is_recorded_and_neptune_failed_flag_follows(tracker: trackkit.Tracker) -> None:
    with tracker.start_run(experiment="status") as ok:
        pass
    bad = tracker.start_run(experiment="status")
    bad.end("KILLED")
    for run, status, failed in ((ok, "FINISHED", False), (bad, "KILLED", True)):
        stored = stored_fields(tracker, run.id)
        assert stored["trackkit/status"] == status
        assert stored["sys/failed"] is failed


def test_tags_are_mirrored_into_sys_tags_as_labels(tmp_path: Path) -> None:
    tracker = trackkit.get_tracker("neptune", mode="debug")
    with tracker.start_run(experiment="tags", tags={"stage": "draft", "team": "ml"}) as run:
        run.flush()
        run.set_tag("stage", "final")
        run.set_tag("notes", "x" * 200)  # too long for a label: kept in tags/ only
    labels = tracker.backend.run_object(run.id)["sys/tags"].fetch()  # type: ignore[attr-defined]
    assert labels == {"stage:final", "team:ml"}
    assert tracker.get_run(run.id).tags == {"stage": "final", "team": "ml", "notes": "x" * 200}
    tracker.close()


def test_artifacts_are_copied_when_logged_and_paths_cannot_be_file_and_folder(
    tracker: trackkit.Tracker, tmp_path: Path
) -> None:
    source = tmp_path / "weights.bin"
    source.write_bytes(b"\x00\x01")
    with tracker.start_run(experiment="files") as run:
        run.log_artifact(source, "out")
        source.unlink()  # Neptune keeps its own copy (offline: in upload_path/)
        with pytest.raises(InvalidInput, match="already a file"):
            run.log_text("x", "out/weights.bin/inner.txt")
    local = tracker.download_artifacts(run.id, "out", tmp_path / "dl")
    assert (local / "weights.bin").read_bytes() == b"\x00\x01"


def test_a_key_of_the_longest_length_fits_neptune_paths(tmp_path: Path) -> None:
    tracker = trackkit.get_tracker("neptune", mode="offline", data_dir=tmp_path / ".neptune")
    key = "é/" * 124 + "éé"  # 250 characters, each escaped or two bytes long
    with tracker.start_run(experiment="long") as run:
        run.log_metric(key, 1.0, step=10**17)  # beyond exact floats: the points series
        with pytest.raises(InvalidInput, match="250"):
            run.log_param("k" * 251, 1)
    [path] = [
        op["path"]
        for op in offline_ops(tmp_path / ".neptune", run.id)
        if op["type"] == "LogStrings"
    ]
    assert len("/".join(path).encode()) <= 1024
    assert key_of(path[2:]) == key
    tracker.close()


# -- modes, options and secrets --------------------------------------------------------------------
def test_mode_defaults_to_offline_without_a_server(monkeypatch: pytest.MonkeyPatch) -> None:
    assert NeptuneBackend().mode == "offline"
    monkeypatch.setenv("NEPTUNE_PROJECT", "ws/proj")
    monkeypatch.setenv("NEPTUNE_API_TOKEN", TOKEN)
    assert NeptuneBackend().mode == "async"
    monkeypatch.setenv("TRACKKIT_OFFLINE", "1")
    assert NeptuneBackend().mode == "offline"
    assert NeptuneBackend(mode="sync").mode == "sync"  # an explicit mode wins
    monkeypatch.delenv("TRACKKIT_OFFLINE")
    monkeypatch.setenv("NEPTUNE_MODE", "debug")
    assert NeptuneBackend().mode == "debug"


def test_offline_backend_cannot_resume() -> None:
    tracker = trackkit.get_tracker("neptune", mode="offline")
    assert NeptuneBackend.capabilities.resume is True
    assert tracker.backend.capabilities.resume is False
    with pytest.raises(UnsupportedOperation, match="run_id"):
        tracker.start_run(run_id="0b1e")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "read-only"}, "mode must be one of"),
        ({"mode": "async", "api_token": TOKEN}, "NEPTUNE_PROJECT"),
        ({"mode": "async", "project": "ws/proj"}, "NEPTUNE_API_TOKEN"),
        ({"mode": "async", "project": "ws/proj", "api_token": "not-a-token"}, "not valid"),
        ({"tracking_uri": "x"}, "rejected its options"),
        ({"monitoring": "maybe"}, "monitoring must be True or False"),
        ({"outside_files": 1}, "outside_files must be True or False"),
    ],
)
def test_bad_configuration_is_refused_clearly(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        trackkit.get_tracker("neptune", **options)
    assert "not-a-token" not in str(caught.value)


@pytest.mark.parametrize(("text", "on"), [("false", False), ("0", False), ("True", True)])
def test_on_off_options_given_as_text_mean_what_they_say(
    tmp_path: Path, text: str, on: bool
) -> None:
    """``-o monitoring=false`` passes the text "false": it must turn monitoring off."""
    backend = trackkit.get_tracker(
        "neptune", data_dir=tmp_path, monitoring=text, outside_files=text
    ).backend
    assert (backend.monitoring, backend.outside_files) == (on, on)  # type: ignore[attr-defined]


def test_tokens_never_show(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = FakeNeptuneServer(monkeypatch, fail_with="refused token {token}")
    options = {"project": "ws/proj", "api_token": TOKEN, "api_url": "https://nep.local"}
    tracker = trackkit.get_tracker("neptune", mode="async", strict=True, **options)
    backend = tracker.backend
    shown = [
        repr(tracker),
        backend.describe(),
        json.dumps(backend.replay_options()),
        repr(vars(backend)),
    ]
    assert shown[0] == "Tracker(backend='neptune (async, project ws/proj on https://nep.local)')"
    with pytest.raises(BackendError) as caught:
        tracker.start_run(experiment="e")
    assert "refused token ***" in str(caught.value)
    assert caught.value.__cause__ is not None and caught.value.__cause__.__cause__ is None
    shown.append(str(caught.value))
    # not strict: the run goes on locally (journaled); the warning and the log are clean too
    lenient = trackkit.get_tracker(
        "neptune", mode="async", journal_dir=tmp_path, end_timeout=0.5, **options
    )
    with pytest.warns(trackkit.TrackkitWarning) as warned:
        run = lenient.start_run(experiment="e")
        run.end()  # kept in the journal for `trackkit sync`
    assert run.id.startswith("local-")
    assert any("refused token ***" in str(w.message) for w in warned)
    shown += [str(w.message) for w in warned] + [caplog.text]
    shown.append(b"".join(p.read_bytes() for p in tmp_path.rglob("*.db")).decode("latin-1"))
    for text in shown:
        assert TOKEN not in text and server.tokens[-1] not in text and SECRET not in text
    sent = json.loads(base64.b64decode(server.tokens[-1]))  # the client got the real token,
    assert sent == {
        "api_address": "https://nep.local",
        "api_url": "https://nep.local",
        "api_key": SECRET,
    }
    tracker.close()
    lenient.close()


def _all_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def test_a_password_in_api_url_is_never_written_or_shown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    password = "pw-7f3a9c1e-secret"
    url = f"https://ana:{password}@nep.local"
    # offline: Neptune's run files, the offline registry, the run's and the deferred journals
    offline = trackkit.get_tracker(
        "neptune",
        mode="offline",
        project="ws/proj",
        api_url=url,
        data_dir=tmp_path / "off" / ".neptune",
        registry_path=tmp_path / "off" / "registry.db",
        journal_dir=tmp_path / "off" / "tk",
    )
    with offline.start_run(experiment="e") as run:
        run.log_metric("m", 1.0)
    offline.register_model(f"runs:/{run.id}/model", "ride")
    offline.set_model_alias("ride", "production", 1)
    backend = offline.backend
    shown = [repr(offline), backend.describe(), repr(vars(backend))]
    assert backend.replay_options()["api_url"] == "https://ana@nep.local"
    offline.close()
    written = _all_bytes(tmp_path / "off")
    assert b"https://ana@nep.local" in written  # the journal names the address, not the password
    assert list((tmp_path / "off" / ".neptune" / "offline").glob("run__*/data-*.log"))
    # replayed with the whole address given again: it is the journal's address, so it is used
    server = FakeNeptuneServer(monkeypatch)
    monkeypatch.setenv("NEPTUNE_API_TOKEN", TOKEN)
    results = trackkit.sync(tmp_path / "off" / "tk", "neptune", api_url=url)
    assert [(r.kind, r.outcome, r.operations) for r in results] == [("deferred", "delivered", 2)]
    assert json.loads(base64.b64decode(server.tokens[-1]))["api_url"] == url
    monkeypatch.delenv("NEPTUNE_API_TOKEN")

    # a server that refuses: the message, the warning, the log and the run's journal are clean
    server = FakeNeptuneServer(monkeypatch, fail_with=f"cannot reach {url} with {{token}}")
    options = {"project": "ws/proj", "api_token": TOKEN, "api_url": url}
    strict = trackkit.get_tracker("neptune", mode="async", strict=True, **options)
    with pytest.raises(BackendError) as caught:
        strict.start_run(experiment="e")
    assert "cannot reach *** with ***" in str(caught.value)
    shown += [
        repr(strict),
        strict.backend.describe(),
        repr(vars(strict.backend)),
        str(caught.value),
    ]
    assert strict.backend.describe() == "neptune (async, project ws/proj on https://ana@nep.local)"
    lenient = trackkit.get_tracker(
        "neptune", mode="async", journal_dir=tmp_path / "srv", end_timeout=0.5, **options
    )
    with pytest.warns(trackkit.TrackkitWarning) as warned:
        lenient.start_run(experiment="e").end()  # kept in the journal for `trackkit sync`
    shown += [str(w.message) for w in warned] + [caplog.text]
    strict.close()
    lenient.close()
    # the client itself was given the whole address, inside the token
    assert json.loads(base64.b64decode(server.tokens[-1]))["api_url"] == url
    written += _all_bytes(tmp_path / "srv")
    assert b"https://ana@nep.local" in _all_bytes(tmp_path / "srv")
    for text in shown:
        assert password not in text, text
    assert password.encode() not in written


# -- the offline registry, deferred to the server ----------------------------------------------------
def test_offline_registry_defers_its_calls_and_sync_repeats_them_on_the_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0])
    monkeypatch.setenv("NEPTUNE_API_TOKEN", TOKEN)  # configured, but offline is asked for
    monkeypatch.setenv("TRACKKIT_OFFLINE", "1")
    tracker = trackkit.get_tracker("neptune", project="ws/proj", journal_dir=tmp_path / "tk")
    assert tracker.backend.mode == "offline"  # type: ignore[attr-defined]
    with tracker.start_run(experiment="ride") as run:
        ref = run.log_model(model, "model")
    v1 = tracker.register_model(ref, "ride", description="first")
    tracker.set_model_alias("ride", "production", 1)
    tracker.set_model_alias("ride", "champion", 1)
    tracker.delete_model_alias("ride", "champion")
    assert tracker.get_model_version("ride", alias="production").version == v1.version == 1
    assert tracker.load_model("models:/ride@production").predict([[2.0]])[0] == pytest.approx(2.0)
    tracker.close()
    [journal] = list((tmp_path / "tk" / "journal").glob("deferred-*.db"))
    assert TOKEN not in journal.read_bytes().decode("latin-1")

    # the run reaches the server with `neptune sync` (it keeps trackkit/run_id); then:
    server = FakeNeptuneServer(monkeypatch)
    server.add_run(run.id, experiment="ride")
    monkeypatch.delenv("TRACKKIT_OFFLINE")
    results = trackkit.sync(tmp_path / "tk")
    assert [(r.kind, r.outcome, r.operations) for r in results] == [("deferred", "delivered", 4)]
    options = next(c[1] for c in server.calls if c[0] == "init_model")
    assert options["mode"] == "async" and options["project"] == "ws/proj"
    model_obj = server.models["PROJ-RIDE"]
    assert model_obj["trackkit/aliases"].fetch() == {"production": 1}
    version = server.versions["PROJ-RIDE"][1]
    assert version["trackkit/source"].fetch() == f"runs:/{run.id}/model"
    assert version["sys/description"].fetch() == "first"
    assert version["sys/stage"].fetch() == "production"


# -- the server code paths, against a fake server ------------------------------------------------------
def test_server_runs_resume_and_read_back(monkeypatch: pytest.MonkeyPatch) -> None:
    server = FakeNeptuneServer(monkeypatch)
    tracker = trackkit.get_tracker("neptune", mode="async", project="ws/proj", api_token=TOKEN)
    with tracker.start_run(experiment="srv", name="first") as run:
        run.log_params({"lr": 0.1})
        for step in (3, 1):
            run.log_metric("loss", float(step), step=step)
            run.flush()
    assert run.id == "PROJ-1"
    assert server.runs["PROJ-1"].stopped == 1  # ended: the client object is stopped
    stored = server.runs["PROJ-1"]
    assert stored["parameters/lr"].fetch() == 0.1
    assert stored["trackkit/points/loss"].fetch_last() == "[1, 1.0]"
    with tracker.start_run(run_id="PROJ-1") as again:  # reopened with_id on the server
        again.log_metric("loss", 0.5)
    assert again.experiment == "srv"
    info = tracker.get_run("PROJ-1")
    assert info.params == {"lr": "0.1"} and info.status == "FINISHED"
    with pytest.raises(NotFound):
        tracker.get_run("PROJ-99")
    tracker.close()


def test_server_search_translates_the_filter_and_filters_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = FakeNeptuneServer(monkeypatch)
    tracker = trackkit.get_tracker("neptune", mode="sync", project="ws/proj", api_token=TOKEN)
    for model, rmse in (("lasso", 7.1), ("ridge", 6.5), ("lasso", 6.2)):
        with tracker.start_run(experiment="cmp", tags={"dev": "ana"}) as run:
            run.log_params({"model": model})
            run.log_metric("rmse", rmse)
    found = tracker.search_runs(
        "cmp", filter="metrics.rmse < 7 and params.model = 'lasso'", order_by=["metrics.rmse"]
    )
    assert [(r.params["model"], r.metrics["rmse"]) for r in found] == [("lasso", 6.2)]
    query = server.queries[-1]
    assert query["query"] == (
        '(`trackkit/experiment`:string = "cmp") AND (last(`metrics/rmse`:floatSeries) < 7) '
        'AND (`parameters/model`:string = "lasso")'
    )
    assert query["limit"] is None  # ordered by trackkit: every match is fetched
    found = tracker.search_runs("cmp", filter="tags.dev = 'ana'", max_results=2)
    # the server orders by creation time, not as trackkit does: it is never cut
    assert server.queries[-1]["limit"] is None
    assert [r.metrics["rmse"] for r in found] == [6.2, 6.5]  # newest first
    tracker.close()


def test_server_runs_keep_their_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    server = FakeNeptuneServer(monkeypatch)
    tracker = trackkit.get_tracker("neptune", mode="sync", project="ws/proj", api_token=TOKEN)
    with tracker.start_run(experiment="tune", name="search") as parent:
        for i in range(2):
            with tracker.start_run(name=f"trial-{i}", parent=parent) as child:
                child.log_metric("loss", float(i))
    assert server.runs["PROJ-2"]["trackkit/parent_id"].fetch() == parent.id == "PROJ-1"
    assert "parent_id" not in server.runs["PROJ-1"]["trackkit"].fetch()
    assert tracker.get_run(child.id).parent_id == "PROJ-1"  # read back from the server run
    assert tracker.get_run(parent.id).parent_id is None
    found = tracker.search_runs("tune", filter=f"attributes.parent_id = '{parent.id}'")
    assert server.queries[-1]["query"] == (
        '(`trackkit/experiment`:string = "tune") AND (`trackkit/parent_id`:string = "PROJ-1")'
    )
    # the rows of the runs table carry the link too (the fake server does not filter)
    assert [(r.name, r.parent_id) for r in found] == [("trial-1", "PROJ-1"), ("trial-0", "PROJ-1")]
    tracker.close()


@pytest.mark.filterwarnings("ignore:transition_model_version_stage:trackkit.errors.TrackkitWarning")
def test_stage_transitions_set_the_versions_neptune_stage() -> None:
    tracker = trackkit.get_tracker("neptune", mode="debug")
    for _ in range(2):
        tracker.register_model("runs:/r/model", "ride")
    _, versions = tracker.backend.model_objects("ride")  # type: ignore[attr-defined]

    def stages() -> tuple[str, str]:
        return versions[1]["sys/stage"].fetch(), versions[2]["sys/stage"].fetch()

    tracker.transition_model_version_stage("ride", 1, "Production")
    assert stages() == ("production", "none")
    tracker.transition_model_version_stage("ride", 1, "Staging")  # as MLflow: now Staging,
    assert stages() == ("staging", "none")
    assert tracker.get_model_version("ride", 1).aliases == ("production", "staging")  # both held
    tracker.transition_model_version_stage("ride", 2, "Production", archive_existing_versions=True)
    assert stages() == ("archived", "production")
    tracker.transition_model_version_stage("ride", 2, "None")
    assert stages() == ("archived", "none")
    tracker.set_model_alias("ride", "staging", 2)  # moved: version 1 keeps only `archived`
    assert stages() == ("archived", "staging")
    tracker.backend.set_model_stage("ride", 1, "production")  # the primitive itself
    assert stages() == ("production", "staging")
    with pytest.raises(InvalidInput, match="not 'retired'"):
        tracker.backend.set_model_stage("ride", 1, "retired")
    with pytest.raises(NotFound):
        tracker.backend.set_model_stage("ride", 3, "staging")
    tracker.close()


@pytest.mark.filterwarnings("ignore:transition_model_version_stage:trackkit.errors.TrackkitWarning")
def test_offline_stage_transitions_reach_the_server_stages_by_sync(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tracker = trackkit.get_tracker(
        "neptune", mode="offline", project="ws/proj", journal_dir=tmp_path / "tk"
    )
    for _ in range(2):
        tracker.register_model("runs:/r/model", "ride")
    tracker.transition_model_version_stage("ride", 1, "Production")
    tracker.transition_model_version_stage("ride", 1, "Staging")
    tracker.transition_model_version_stage("ride", 2, "Production", archive_existing_versions=True)
    tracker.close()
    # the core journaled the alias moves (no stage call while offline); replayed, they give the
    # stages the same calls give online
    server = FakeNeptuneServer(monkeypatch)
    monkeypatch.setenv("NEPTUNE_API_TOKEN", TOKEN)
    [result] = trackkit.sync(tmp_path / "tk")
    assert (result.outcome, result.operations) == ("delivered", 6)
    versions = server.versions["PROJ-RIDE"]
    assert [versions[n]["sys/stage"].fetch() for n in (1, 2)] == ["archived", "production"]
    assert versions[1]["trackkit/aliases"].fetch() == {"staging", "archived"}


def test_server_registry_uses_model_objects_and_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    server = FakeNeptuneServer(monkeypatch)
    server.taken_keys.add("RIDE")  # another model holds the natural key
    tracker = trackkit.get_tracker("neptune", mode="async", project="ws/proj", api_token=TOKEN)
    for i in range(2):
        tracker.register_model(f"runs:/PROJ-{i + 1}/model", "ride")
    tracker.set_model_alias("ride", "production", 1)
    tracker.set_model_alias("ride", "champion", 1)
    tracker.set_model_alias("ride", "production", 2)
    versions = server.versions["PROJ-RIDE2"]
    assert versions[1]["sys/stage"].fetch() == "none"
    assert versions[1]["trackkit/aliases"].fetch() == {"champion"}
    assert versions[2]["sys/stage"].fetch() == "production"
    assert [v.version for v in tracker.list_model_versions("ride")] == [1, 2]
    assert tracker.get_model_version("ride", alias="champion").run_id == "PROJ-1"
    tracker.close()
    # a new process finds the model by name in the models table
    fresh = trackkit.get_tracker("neptune", mode="async", project="ws/proj", api_token=TOKEN)
    assert fresh.get_model_version("ride", alias="production").version == 2
    fresh.close()


# -- filters: their translation (the grammar itself: tests/test_search.py) ---------------------------
@pytest.mark.parametrize(
    ("condition", "nql"),
    [
        ("metrics.val.loss >= 0.5", "(last(`metrics/val/loss`:floatSeries) >= 0.5)"),
        (
            "params.alpha = '0.1'",
            '((`parameters/alpha`:string = "0.1") OR (`parameters/alpha`:float = 0.1))',
        ),
        (
            "params.seed IN ('7', 'True')",
            '(((`parameters/seed`:string = "7") OR (`parameters/seed`:integer = 7)) OR '
            '((`parameters/seed`:string = "True") OR (`parameters/seed`:bool = true)))',
        ),
        ("tags.`data/set` LIKE '%taxi%'", '(`tags/data%2Fset`:string CONTAINS "taxi")'),
        ("attributes.status = 'FAILED'", '(`trackkit/status`:string = "FAILED")'),
        ("parent_id = 'PROJ-1'", '(`trackkit/parent_id`:string = "PROJ-1")'),
    ],
)
def test_filters_translate_to_neptune_queries(condition: str, nql: str) -> None:
    query, exact = to_nql(parse_filter(condition), ["e"])
    assert query == f'(`trackkit/experiment`:string = "e") AND {nql}'
    assert exact


def test_untranslatable_clauses_are_left_to_trackkit() -> None:
    query, exact = to_nql(parse_filter("params.m ILIKE 'a%' and tags.x = 'say \"hi\"'"), ["e"])
    assert query == '(`trackkit/experiment`:string = "e")'
    assert not exact


# -- import cost -----------------------------------------------------------------------------------------
def test_trackkit_and_its_neptune_modules_import_no_neptune() -> None:
    script = """
import io, json, sys
import trackkit
trackkit.available_backends()
import trackkit.backends.neptune, trackkit.copy
from trackkit.cli import main
out = io.StringIO()
sys.stdout, real = out, sys.stdout
main(["backends", "--json"])
sys.stdout = real
rows = {r["name"]: r for r in json.loads(out.getvalue())}
print(json.dumps({"neptune": sorted(m for m in sys.modules if m.split(".")[0] == "neptune"),
                  "row": rows["neptune"]["sdk_installed"]}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"neptune": [], "row": True}


# -- the fake server -------------------------------------------------------------------------------------
class Kept:
    """A client object as a server keeps it: ``stop()`` ends the session, not the data."""

    def __init__(self, obj: Any, **overrides: Any) -> None:
        self._obj = obj
        self.stopped = 0
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._obj, name)

    def __getitem__(self, path: str) -> Any:
        return self._obj[path]

    def __setitem__(self, path: str, value: Any) -> None:
        self._obj[path] = value

    def __delitem__(self, path: str) -> None:
        del self._obj[path]

    def stop(self) -> None:
        self.stopped += 1


class FakeTable:
    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    def to_rows(self) -> list[Any]:
        return list(self.rows)


class FakeRow:
    """A row of a runs or models table, shaped as the client's TableEntry."""

    def __init__(self, values: dict[str, tuple[Any, Any]]) -> None:
        self._values = values
        self._attributes = [SimpleNamespace(path=p, type=t) for p, (t, _) in values.items()]

    def get_attribute_value(self, path: str) -> Any:
        return self._values[path][1]

    def get_attribute_type(self, path: str) -> Any:
        return self._values[path][0]


class FakeNeptuneServer:
    """Stands in for a self-hosted Neptune server, which cannot run here.

    It replaces the client's ``init_run``, ``init_project``, ``init_model`` and
    ``init_model_version`` and hands out the client's own debug-mode objects with server-like
    ids (``PROJ-1``, ``PROJ-RIDE``, ``PROJ-RIDE-2``) that outlive ``stop()``, plus runs, models
    and versions tables. It records every call and query; it does not evaluate Neptune queries
    (except the lookup by ``trackkit/run_id``): trackkit filters what it returns again.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_with: str | None = None) -> None:
        names = ("init_run", "init_project", "init_model", "init_model_version")
        self.originals = {n: getattr(neptune, n) for n in names}
        self.fail_with = fail_with
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.tokens: list[str] = []
        self.runs: dict[str, Kept] = {}
        self.models: dict[str, Kept] = {}
        self.names: dict[str, str] = {}
        self.versions: dict[str, dict[int, Kept]] = {}
        self.taken_keys: set[str] = set()
        self.queries: list[dict[str, Any]] = []
        for name in names:
            monkeypatch.setattr(neptune, name, getattr(self, name))

    def _enter(self, call: str, options: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((call, dict(options)))
        assert options.pop("mode") in ("async", "sync", "read-only")
        assert options.pop("project") == "ws/proj"
        self.tokens.append(options.pop("api_token"))
        if self.fail_with:  # a client error that echoes the token it was given
            raise RuntimeError(self.fail_with.format(token=self.tokens[-1]))
        return options

    def _debug(self, call: str, **options: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.originals[call](mode="debug", **options)

    def add_run(self, trackkit_id: str, experiment: str) -> Kept:
        """A run as `neptune sync` leaves it on the server."""
        obj = self._debug("init_run", capture_hardware_metrics=False, source_files=[])
        sys_id = f"PROJ-{len(self.runs) + 1}"
        obj["sys/id"] = sys_id
        obj["trackkit/run_id"] = trackkit_id
        obj["trackkit/experiment"] = experiment
        self.runs[sys_id] = Kept(obj)
        return self.runs[sys_id]

    def init_run(self, with_id: str | None = None, **options: Any) -> Any:
        options = self._enter("init_run", options)
        if with_id is not None:
            if with_id not in self.runs:
                raise neptune.exceptions.RunNotFound(with_id)
            return self.runs[with_id]
        obj = self._debug("init_run", **options)
        sys_id = f"PROJ-{len(self.runs) + 1}"
        obj["sys/id"] = sys_id
        self.runs[sys_id] = Kept(obj)
        return self.runs[sys_id]

    def init_project(self, **options: Any) -> Any:
        self._enter("init_project", options)
        return SimpleNamespace(
            fetch_runs_table=self.fetch_runs_table,
            fetch_models_table=self.fetch_models_table,
            stop=lambda: None,
        )

    def fetch_runs_table(self, **options: Any) -> FakeTable:
        self.queries.append(options)
        rows = [self._row(obj) for obj in self.runs.values()]
        lookup = re.fullmatch(r'\(`trackkit/run_id`:string = "(.*)"\)', options.get("query") or "")
        if lookup:
            rows = [r for r in rows if r._values.get("trackkit/run_id", (0, 0))[1] == lookup[1]]
        return FakeTable(rows[: options.get("limit")])

    def _row(self, obj: Kept) -> FakeRow:
        from neptune.internal.backends.api_model import AttributeType

        types = neptune.attributes
        kinds = [
            (types.Float, AttributeType.FLOAT), (types.Integer, AttributeType.INT),
            (types.Boolean, AttributeType.BOOL), (types.String, AttributeType.STRING),
            (types.Datetime, AttributeType.DATETIME), (types.StringSet, AttributeType.STRING_SET),
        ]  # fmt: skip
        values: dict[str, tuple[Any, Any]] = {}

        def walk(tree: dict[str, Any], prefix: str) -> None:
            for name, attr in tree.items():
                path = f"{prefix}/{name}" if prefix else name
                if isinstance(attr, dict):
                    walk(attr, path)
                elif isinstance(attr, types.FloatSeries):
                    values[path] = (AttributeType.FLOAT_SERIES, attr.fetch_last())
                else:
                    for cls, kind in kinds:
                        if isinstance(attr, cls):
                            values[path] = (kind, attr.fetch())

        walk(obj.get_structure(), "")
        return FakeRow(values)

    def fetch_models_table(self, **options: Any) -> FakeTable:
        from neptune.internal.backends.api_model import AttributeType

        text = AttributeType.STRING
        return FakeTable(
            [FakeRow({"sys/id": (text, i), "sys/name": (text, n)}) for i, n in self.names.items()]
        )

    def init_model(self, with_id: str | None = None, **options: Any) -> Any:
        options = self._enter("init_model", options)
        if with_id is not None:
            return self.models[with_id]
        key = options["key"]
        if key in self.taken_keys:
            raise neptune.exceptions.NeptuneModelKeyAlreadyExistsError(key, "https://x/models")
        self.taken_keys.add(key)
        model_id = f"PROJ-{key}"
        obj = self._debug("init_model", key=key, name=options["name"])
        obj["sys/id"] = model_id
        versions = self.versions.setdefault(model_id, {})
        table = lambda **_: FakeTable(  # noqa: E731
            [FakeRow({"sys/id": ("string", f"{model_id}-{n}")}) for n in versions]
        )
        self.models[model_id] = Kept(obj, fetch_model_versions_table=table)
        self.names[model_id] = options["name"]
        return self.models[model_id]

    def init_model_version(self, with_id: str | None = None, **options: Any) -> Any:
        options = self._enter("init_model_version", options)
        if with_id is not None:
            model_id, number = with_id.rsplit("-", 1)
            return self.versions[model_id][int(number)]
        model_id = options["model"]
        versions = self.versions[model_id]
        number = len(versions) + 1
        obj = self._debug("init_model_version", model=model_id)
        obj["sys/id"] = f"{model_id}-{number}"
        versions[number] = Kept(obj)
        return versions[number]
