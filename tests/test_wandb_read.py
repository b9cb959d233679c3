"""Reading runs back on W&B: metric history, artifact listings, experiments, registered
models, run links and the offline hint.

Offline runs are written with the real wandb SDK and checked against W&B's own reader of the
transaction log (``wandb leet inspect``, tests/wandb_reader.py) and its own ``wandb sync``.
What only a W&B server answers (the public API's history scan, run files, projects, the
Registry's collections, run pages) runs against the fake ``wandb.Api`` of tests/test_wandb.py:
no W&B server can run here.
"""

from __future__ import annotations

import math
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import trackkit
from trackkit.entities import ArtifactInfo, MetricPoint
from trackkit.errors import NotFound

wandb = pytest.importorskip("wandb")

from test_wandb import SECRET, FakeRun, FakeWandbApi  # noqa: E402
from trackkit.backends.wandb import WandbBackend  # noqa: E402
from wandb_reader import FAST, SPECIAL, WANDB_VARIABLES, WandbReader  # noqa: E402


@pytest.fixture(autouse=True)
def _wandb_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for variable in WANDB_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "w"


@pytest.fixture
def offline(root: Path) -> Iterator[trackkit.Tracker]:
    tracker = trackkit.get_tracker("wandb", mode="offline", dir=root, settings=FAST)
    yield tracker
    tracker.close()


@pytest.fixture
def reader(root: Path) -> WandbReader:
    return WandbReader(root)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeWandbApi:
    api = FakeWandbApi()
    monkeypatch.setattr(WandbBackend, "api_factory", lambda **_: api)
    return api


@pytest.fixture
def online(
    root: Path, fake: FakeWandbApi, monkeypatch: pytest.MonkeyPatch
) -> Iterator[trackkit.Tracker]:
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    tracker = trackkit.get_tracker("wandb", mode="online", dir=root, settings=FAST)
    yield tracker
    tracker.close()


def _points_in_reader(reader: WandbReader, run_id: str, key: str) -> list[MetricPoint]:
    """The metric's points as W&B's reader prints the history rows: each at its own step and
    time when its row carries them, else at the row's number and time."""
    found = []
    for row in reader.history(run_id):
        if key in row:
            value = row[key]
            value = SPECIAL[value] if isinstance(value, str) else float(value)
            step = row.get(f"{key}:step", row["_step"])
            seconds = row.get(f"{key}:timestamp", row["_timestamp"])
            found.append(MetricPoint(int(step), value, round(seconds * 1000)))
    return found


def _same(a: list[MetricPoint], b: list[MetricPoint]) -> bool:
    """Equal point lists, NaN equal to NaN."""
    return len(a) == len(b) and all(
        (p.step, p.timestamp) == (q.step, q.timestamp)
        and (p.value == q.value or (math.isnan(p.value) and math.isnan(q.value)))
        for p, q in zip(a, b, strict=True)
    )


# -- metric history, offline -------------------------------------------------------------------
def test_history_offline_is_every_point_w_and_b_recorded_across_a_resumed_run(
    offline: trackkit.Tracker, reader: WandbReader
) -> None:
    base = 1_750_000_000_000
    with offline.start_run(experiment="hist") as run:
        for step in (3, 0, 2, 1):
            run.log_metric("loss", 10.0 - step, step=step, timestamp=base + 7 * step)
        run.log_metric("loss", 99.0, step=2, timestamp=base + 1)  # a second point at step 2
        run.log_metric("odd", math.nan, step=0, timestamp=base)
        run.log_metric("odd", math.inf, step=1, timestamp=base + 1)
    with offline.start_run(run_id=run.id) as resumed:  # a second run directory, steps go on
        resumed.log_metric("loss", 5.0, timestamp=base + 100)
    assert len(reader.logs(run.id)) == 2
    history = offline.get_metric_history(run.id, "loss")
    native = _points_in_reader(reader, run.id, "loss")
    assert sorted(history) == sorted(native) and len(native) == 6
    assert [p.step for p in history] == [0, 1, 2, 2, 3, 4]
    assert [p.value for p in history][2:4] == [99.0, 8.0]  # one step's points by timestamp
    assert history[0] == MetricPoint(0, 10.0, base)
    odd = offline.get_metric_history(run.id, "odd")
    assert _same(odd, _points_in_reader(reader, run.id, "odd"))
    assert math.isnan(odd[0].value) and odd[1].value == math.inf
    with pytest.raises(NotFound, match="loss, odd"):
        offline.get_metric_history(run.id, "nope")
    with pytest.raises(NotFound, match="no W&B run"):
        offline.get_metric_history("no-such-run", "loss")


def test_history_of_an_open_offline_run_holds_every_point_logged_so_far(
    offline: trackkit.Tracker, reader: WandbReader
) -> None:
    with offline.start_run(experiment="hist") as run:
        for step in range(300):
            run.log_metric("loss", step / 3, step=step)
        history = offline.get_metric_history(run.id, "loss")  # wandb writes every 0.5 s
        assert [p.step for p in history] == list(range(300))
        run.log_metric("loss", -1.0, step=300)
        last = offline.get_metric_history(run.id, "loss")[-1]
        assert (last.step, last.value) == (300, -1.0)
    assert len(reader.metric_points(run.id, "loss")) == 301


def test_history_of_a_run_wandb_logged_without_trackkit_uses_its_row_numbers(
    offline: trackkit.Tracker, root: Path
) -> None:
    settings = wandb.Settings(**FAST)
    run = wandb.init(  # a run of its own, whatever other runs this process has open
        project="plain", dir=str(root), mode="offline", settings=settings, reinit="create_new"
    )
    for i in range(4):
        run.log({"acc": i / 4})
    run.finish()
    history = offline.get_metric_history(run.id, "acc")
    assert [(p.step, p.value) for p in history] == [(i, i / 4) for i in range(4)]
    assert all(p.timestamp > 1_700_000_000_000 for p in history)


def test_a_run_in_the_earlier_layout_reads_back_and_resumes_the_same(
    offline: trackkit.Tracker, root: Path, reader: WandbReader
) -> None:
    """Runs trackkit logged before points sat at W&B's own step: every point carried its step
    ``<key>:step``, one row after another, whatever the steps; summary ``<key>:step``."""
    settings = wandb.Settings(**FAST)
    run = wandb.init(
        project="earlier", dir=str(root), mode="offline", settings=settings, reinit="create_new"
    )
    base = 1_750_000_000.0
    for key in ("loss", "acc"):
        run.define_metric(f"{key}:step", hidden=True)
        run.define_metric(key, step_metric=f"{key}:step", step_sync=False)
    rows = [
        {"_timestamp": base, "loss": 5.0, "loss:step": 5, "acc": 0.5, "acc:step": 0},
        {"_timestamp": base, "loss": 3.0, "loss:step": 3, "acc": 0.6, "acc:step": 1},
        {"_timestamp": base + 1.5, "loss": 10.0, "loss:step": 10},
    ]
    for row in rows:
        run.log(row)
    run.summary.update({"loss": 10.0, "loss:step": 10, "acc": 0.6, "acc:step": 1})
    run.finish()
    loss = offline.get_metric_history(run.id, "loss")
    assert [(p.step, p.value, p.timestamp) for p in loss] == [
        (3, 3.0, 1_750_000_000_000), (5, 5.0, 1_750_000_000_000), (10, 10.0, 1_750_000_001_500)
    ]  # fmt: skip
    assert _same(sorted(loss), sorted(_points_in_reader(reader, run.id, "loss")))
    info = offline.get_run(run.id)
    assert info.metrics == {"loss": 10.0, "acc": 0.6} and info.experiment == "earlier"
    with offline.start_run(run_id=run.id) as resumed:  # each key goes on after its step
        resumed.log_metrics({"loss": 1.0, "acc": 0.7})
    assert sorted(reader.metric_points(run.id, "loss"))[-1] == (11, 1.0)
    assert sorted(reader.metric_points(run.id, "acc"))[-1] == (2, 0.7)
    # the resumed row comes after W&B's last one (2), so `wandb sync` keeps it: loss at its
    # own step 11, acc's step 2 (below the rows W&B has) carried beside it
    [_, later] = reader.segments(run.id)
    [row] = [r["history"]["item"] for r in later if r["type"] == "history"]
    assert (row["_step"], row["acc:step"], "loss:step" in row) == (11, 2, False)


# -- artifacts, experiments, hints, offline ---------------------------------------------------
def test_list_artifacts_offline_are_the_files_w_and_b_recorded(
    offline: trackkit.Tracker, reader: WandbReader, tmp_path: Path
) -> None:
    folder = tmp_path / "folder"
    (folder / "deep").mkdir(parents=True)
    (folder / "deep" / "x.bin").write_bytes(bytes(range(256)) * 4)
    (folder / "y.txt").write_text("y")
    with offline.start_run(experiment="arts") as run:
        run.log_text("hello", "notes.txt")
        run.log_artifact(folder, "out")
        open_listing = offline.list_artifacts(run.id, recursive=True)
    files = {e.path: e.size for e in offline.list_artifacts(run.id, recursive=True) if not e.is_dir}
    assert set(files) == reader.artifact_files(run.id)
    assert files == {"notes.txt": 5, "out/folder/deep/x.bin": 1024, "out/folder/y.txt": 1}
    assert open_listing == offline.list_artifacts(run.id, recursive=True)
    assert offline.list_artifacts(run.id, "out/folder") == [
        ArtifactInfo("out/folder/deep", True, None),
        ArtifactInfo("out/folder/y.txt", False, 1),
    ]
    assert offline.list_artifacts(run.id, "notes.txt") == []  # a file has no entries
    # a run directory is untrusted input: a symlink in it (to anywhere) is not listed
    [log] = reader.logs(run.id)
    (log.parent / "files" / "artifacts" / "link").symlink_to(tmp_path)
    assert "link" not in {e.path for e in offline.list_artifacts(run.id)}
    with pytest.raises(NotFound):
        offline.list_artifacts("no-such-run")


def test_list_experiments_offline_with_and_without_a_fixed_project(
    offline: trackkit.Tracker, root: Path
) -> None:
    for experiment in ("ride", "taxi"):
        with offline.start_run(experiment=experiment) as run:
            run.log_metric("m", 1.0)
    fixed = trackkit.get_tracker("wandb", mode="offline", dir=root, project="shared", settings=FAST)
    with fixed.start_run(experiment="lasso") as run:
        run.log_metric("m", 1.0)
        assert fixed.list_experiments() == ["lasso", "ride", "taxi"]  # the open run too
    fixed.close()
    assert offline.list_experiments() == ["lasso", "ride", "taxi"]


def test_an_offline_run_names_the_wandb_sync_command_that_uploads_it(
    offline: trackkit.Tracker, reader: WandbReader
) -> None:
    with offline.start_run(experiment="hint") as run:
        run.log_metric("m", 1.0)
        assert run.url is None and "wandb sync" in run.describe()
    with offline.start_run(run_id=run.id) as resumed:
        resumed.log_metric("m", 2.0)
    shown = run.describe()
    assert offline.get_run(run.id).url is None
    command = shlex.split(shown[shown.index("`") + 1 : shown.rindex("`")])
    assert command[:2] == ["wandb", "sync"]
    assert [Path(p) for p in command[2:]] == [log.parent for log in reader.logs(run.id)]
    # W&B's own command takes it as printed (with --dry-run: no server here)
    wandb_cli = Path(sys.executable).parent / "wandb"
    done = subprocess.run(
        [str(wandb_cli), "sync", "--dry-run", *command[2:]],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert f"run-{run.id}.wandb" in done.stdout + done.stderr
    assert "Would sync 2 run(s)" in done.stdout + done.stderr


def test_list_models_offline_are_the_model_artifacts_w_and_b_recorded(
    offline: trackkit.Tracker, reader: WandbReader
) -> None:
    with offline.start_run(experiment="models") as run:
        first = run.log_model({"weights": [1, 2]}, "model")
        second = run.log_model({"weights": [3]}, "nested/other")
        run.log_text("not a model", "notes.txt")
    listed = offline.backend.list_models(run.id)
    assert [(m.name, m.uri, m.flavor) for m in listed] == sorted(
        (r.name, r.uri, r.flavor) for r in (first, second)
    )
    recorded = [a for a in reader.artifacts(run.id) if a["type"] == "model"]
    assert sorted(a["name"] for a in recorded) == sorted(
        m.uri.rsplit("/", 1)[1].split(":")[0] for m in listed
    )
    assert offline.load_model(listed[0].uri) == {"weights": [1, 2]}
    with pytest.raises(NotFound):
        offline.backend.list_models("no-such-run")


# -- online, against the fake wandb.Api ---------------------------------------------------------
def test_history_online_scans_w_and_b_history_with_each_key_s_own_step(
    online: trackkit.Tracker, fake: FakeWandbApi
) -> None:
    rows = [  # the earlier layout (every point with its step), then today's beside it
        {"_step": 0, "_timestamp": 1750000000.5, "loss": 3, "loss:step": 10},
        {"_step": 1, "_timestamp": 1750000001.25, "acc": 0.5, "acc:step": 0},
        {"_step": 2, "_timestamp": 1750000002.0, "loss": "NaN", "loss:step": 11},
        {"_step": 12, "_timestamp": 1750000003.0, "loss": 4, "acc": 0.75, "acc:step": 1},
        {"_step": 13, "_timestamp": 1750000004.0, "loss": 5, "loss:timestamp": 1750000005.5},
    ]
    fake.project_runs["ride"] = [
        FakeRun("r1", "ride", history=rows, summary={"loss": 1.0}),
        FakeRun("r2", "ride", history=[{"_step": 5, "_timestamp": 1.0, "acc": 1}]),
    ]
    backend = online.backend
    assert isinstance(backend, WandbBackend)
    backend.project = "ride"  # the runs were not started on this machine
    history = online.get_metric_history("r1", "loss")
    assert [(p.step, p.timestamp) for p in history] == [
        (10, 1750000000500), (11, 1750000002000), (12, 1750000003000), (13, 1750000005500)
    ]  # fmt: skip
    assert history[0].value == 3.0 and math.isnan(history[1].value)
    assert [p.value for p in history[2:]] == [4.0, 5.0]
    assert fake.calls[-1] == ("run", "ride/r1")
    # W&B's scan gives only rows holding every key asked: the key's rows, then those where
    # its points carry their own step or time
    assert fake.project_runs["ride"][0].scans == [
        ["loss", "_step", "_timestamp"], ["loss", "_step", "loss:step"],
        ["loss", "_step", "loss:timestamp"],
    ]  # fmt: skip
    acc = online.get_metric_history("r1", "acc")
    assert [(p.step, p.value) for p in acc] == [(0, 0.5), (1, 0.75)]
    # a run W&B logged without trackkit has no x-axis per key: its row numbers are the steps
    assert online.get_metric_history("r2", "acc") == [MetricPoint(5, 1.0, 1000)]


def test_list_artifacts_online_are_the_run_files_under_artifacts(
    online: trackkit.Tracker, fake: FakeWandbApi
) -> None:
    files = {"artifacts/out/a.txt": "AA", "artifacts/out/b/c.txt": "C", "output.log": "log"}
    fake.project_runs["ride"] = [FakeRun("r9", "ride", files=files)]
    online.backend.project = "ride"  # type: ignore[attr-defined]
    assert online.list_artifacts("r9") == [ArtifactInfo("out", True)]
    assert online.list_artifacts("r9", recursive=True) == [
        ArtifactInfo("out", True),
        ArtifactInfo("out/a.txt", False, 2),
        ArtifactInfo("out/b", True),
        ArtifactInfo("out/b/c.txt", False, 1),
    ]
    assert online.list_artifacts("r9", "missing") == []


def test_list_experiments_online_are_the_entity_s_projects_or_a_project_s_groups(
    online: trackkit.Tracker, fake: FakeWandbApi, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.project_runs["ride"] = [FakeRun("r1", "ride")]
    fake.project_runs["taxi"] = []
    fake.collections[("wandb-registry-model", "m")] = []
    assert online.list_experiments() == ["ride", "taxi"]  # registries are not experiments
    assert fake.calls[-1] == ("projects", None)
    fixed = trackkit.get_tracker("wandb", mode="online", dir=root, project="shared", entity="ana")
    fake.project_runs["shared"] = [
        FakeRun("a", "shared", summary={"trackkit:experiment": "lasso"}),
        FakeRun("b", "shared", summary={"trackkit:experiment": "ridge"}),
        FakeRun("c", "shared", summary={"trackkit:experiment": "lasso"}),
    ]
    assert fixed.list_experiments() == ["lasso", "ridge"]
    assert fake.calls[-1] == ("runs", "ana/shared", None, "+created_at", 1000)
    fixed.close()


def test_registered_models_online_are_the_registry_s_collections(
    online: trackkit.Tracker, fake: FakeWandbApi, tmp_path: Path
) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    for i in (1, 2):
        meta = {"trackkit": {"name": "m", "flavor": "sklearn", "run_id": f"r{i}", "ref": f"t{i}"}}
        fake.add_logged("ride", f"model-r{i}", package, meta, [f"t{i}"])
        online.register_model(f"wandb-artifact:///ana/ride/model-r{i}:t{i}", "ride-model")
    online.set_model_alias("ride-model", "champion", 1)
    online.update_registered_model("ride-model", "ride durations")
    fake.collection_info[("wandb-registry-model", "ride-model")].tags = ["team:taxi", "course"]
    [model] = online.list_registered_models()
    assert (model.name, model.description, model.latest_version) == (
        "ride-model",
        "ride durations",
        2,
    )
    assert model.aliases == {"champion": 1}
    assert model.tags == {"team": "taxi", "course": ""}
    assert ("artifact_collections", "wandb-registry-model", "model") in fake.calls


def test_run_links_online_are_w_and_b_run_pages_without_credentials(
    online: trackkit.Tracker, fake: FakeWandbApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.project_runs["ride"] = [FakeRun("r1", "ride"), FakeRun("r2", "ride")]
    monkeypatch.setattr(
        FakeRun,
        "url",
        property(lambda r: f"https://ana:{SECRET}@wandb.example/ana/ride/runs/{r.id}"),
    )
    backend = online.backend
    assert isinstance(backend, WandbBackend)
    backend.project = "ride"
    info = online.get_run("r1")
    assert info.url == "https://wandb.example/ana/ride/runs/r1"
    assert backend.run_url("r2") == "https://wandb.example/ana/ride/runs/r2"
    assert backend.run_hint("r2") is None
    assert {r.id: r.url for r in online.search_runs("ride")} == {
        "r1": "https://wandb.example/ana/ride/runs/r1",
        "r2": "https://wandb.example/ana/ride/runs/r2",
    }
