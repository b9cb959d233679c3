"""``trackkit copy`` between backends: MLflow to MLflow and to W&B offline, and back.

The source runs are written with trackkit into a real MLflow sqlite store; what each destination
holds is read with its own reader (``MlflowClient``, ``wandb leet inspect`` through
tests/wandb_reader.py), never through trackkit.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

import trackkit
from trackkit import reading
from trackkit.cli import main
from trackkit.copy import COPY_STATE, Destination
from trackkit.search import epoch_ms

pytest.importorskip("mlflow")
pytest.importorskip("sklearn")

T0 = 1_790_000_000_000
POINTS = 1500  # more than one batch of MLflow's (1000 metrics a call)


def _model() -> Any:
    from sklearn.linear_model import LinearRegression

    return LinearRegression().fit([[0.0], [1.0], [2.0]], [1.0, 3.0, 5.0])


def write_source(uri: str, tmp_path: Path) -> dict[str, str]:
    """Runs in an MLflow store: a parent with a child (points, files, a registered model), a
    failed run. Returns their ids by name."""
    folder = tmp_path / "bundle"
    (folder / "inner").mkdir(parents=True)
    (folder / "inner" / "b.bin").write_bytes(bytes(range(256)) * 40)
    (folder / "a.txt").write_text("a")
    tracker = trackkit.get_tracker("mlflow", tracking_uri=uri)
    parent = tracker.start_run(experiment="ride", name="search", tags={"kind": "search"})
    with parent:
        parent.log_param("space", "lasso")
        with tracker.start_run(name="trial", parent=parent, tags={"developer": "ana"}) as child:
            child.log_params({"model": {"alpha": 0.1}, "seed": 7, "prompt": "p" * 7000})
            for step in (5, 3, 10, 1):  # out of order
                child.log_metric("shuffled", float(step), step=step, timestamp=T0 + step)
            for i in range(POINTS):
                child.log_metric("loss", 1.0 / (i + 1), step=2 * i, timestamp=T0 + i)
            child.log_metric("loss", 0.25, step=0, timestamp=T0 + 99_999)  # two points at step 0
            child.log_artifact(folder, "data")
            child.log_text("text body", "reports/summary.txt")
            ref = child.log_model(_model(), "model", input_example=[[4.0]])
    failed = tracker.start_run(experiment="ride", name="broken")
    failed.log_metric("loss", 9.0, timestamp=T0)
    failed.end("FAILED")
    version = tracker.register_model(ref, "ride-model", description="first")
    tracker.set_model_version_tag("ride-model", version.version, "stage", "candidate")
    tracker.set_model_alias("ride-model", "champion", version.version)
    tracker.update_registered_model("ride-model", "the ride-duration model")
    tracker.set_registered_model_tag("ride-model", "team", "rides")
    tracker.close()
    return {"search": parent.id, "trial": child.id, "broken": failed.id}


def _history(client: Any, run_id: str, key: str) -> list[tuple[int, float, int]]:
    return sorted((m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key))


def _files(client: Any, run_id: str, path: str | None = None) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            found |= _files(client, run_id, item.path)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                found[item.path] = Path(
                    client.download_artifacts(run_id, item.path, tmp)
                ).read_bytes()
    return found


def _user_tags(tags: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in tags.items() if not k.startswith(("mlflow.", "trackkit."))}


def _copies(client: Any, experiment: str = "ride") -> dict[str, Any]:
    """The destination's runs by source run id."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return {}
    runs = client.search_runs([found.experiment_id])
    return {r.data.tags["trackkit.source.run_id"]: r for r in runs}


def check_mlflow_copy(
    source_uri: str,
    copy_uri: str,
    ids: dict[str, str],
    copy_ids: dict[str, str] | None = None,
    models: bool = True,
) -> None:
    """Every run of the source has a copy with the same data, read with MlflowClient.

    ``copy_ids`` maps source run ids to their copies (default: the copies' source tags)."""
    from mlflow.tracking import MlflowClient

    src, dst = MlflowClient(tracking_uri=source_uri), MlflowClient(tracking_uri=copy_uri)
    if copy_ids is None:
        copies = _copies(dst)
    else:
        copies = {source_id: dst.get_run(run_id) for source_id, run_id in copy_ids.items()}
    assert set(copies) == set(ids.values())
    for name, source_id in ids.items():
        original, copy = src.get_run(source_id), copies[source_id]
        assert copy.info.run_name == name
        assert copy.info.status == original.info.status
        # MLflow keeps run times: the source's (through a copy on W&B too, from its tags)
        assert copy.info.start_time == original.info.start_time
        assert copy.info.end_time == original.info.end_time
        assert copy.data.params == original.data.params
        assert _user_tags(copy.data.tags) == _user_tags(original.data.tags)
        assert copy.data.tags[COPY_STATE] == "complete"
        assert copy.data.tags["trackkit.source.backend"] in ("mlflow", "wandb")
        for key in original.data.metrics:
            assert _history(dst, copy.info.run_id, key) == _history(src, source_id, key), key
        assert set(copy.data.metrics) == set(original.data.metrics)
        assert _files(dst, copy.info.run_id) == _files(src, source_id)
    trial = copies[ids["trial"]]
    assert trial.data.tags["mlflow.parentRunId"] == copies[ids["search"]].info.run_id
    assert "mlflow.parentRunId" not in copies[ids["search"]].data.tags
    if not models:
        return
    [logged] = dst.search_logged_models(
        experiment_ids=[trial.info.experiment_id],
        filter_string=f"source_run_id = '{trial.info.run_id}'",
    )
    assert logged.name == "model"
    restored = _load(dst, logged.model_id)
    assert restored.predict([[4.0], [10.0]]).tolist() == pytest.approx([9.0, 21.0])


def _load(client: Any, model_id: str) -> Any:
    """A logged model of the client's store, loaded with MLflow's own sklearn loader."""
    import mlflow

    location = client.get_logged_model(model_id).artifact_location
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=tmp)
        return mlflow.sklearn.load_model(local)


def check_registry_copy(copy_uri: str, trial_copy: str, model_tags: bool = True) -> None:
    """The registered model points at ``trial_copy``, the copy of the run that logged it.
    ``model_tags``: the model's own tags came along (not through W&B, whose Registry
    collections hold none)."""
    from mlflow.tracking import MlflowClient

    dst = MlflowClient(tracking_uri=copy_uri)
    model = dst.get_registered_model("ride-model")
    assert model.description == "the ride-duration model"
    assert model.tags == ({"team": "rides"} if model_tags else {})
    [version] = dst.search_model_versions("name = 'ride-model'")
    assert version.run_id == trial_copy
    assert version.description == "first"
    assert version.tags["stage"] == "candidate"
    assert dst.get_model_version_by_alias("ride-model", "champion").version == version.version
    champion = dst.get_model_version_by_alias("ride-model", "champion")
    loaded = _load(dst, champion.source.removeprefix("models:/"))
    assert loaded.predict([[4.0]]).tolist() == pytest.approx([9.0])


@pytest.fixture
def source(sqlite_uri: str, tmp_path: Path) -> tuple[str, dict[str, str]]:
    return sqlite_uri, write_source(sqlite_uri, tmp_path)


def _store(tmp_path: Path, name: str) -> str:
    return f"sqlite:///{tmp_path / name}"


def test_mlflow_to_mlflow_keeps_everything_and_a_second_copy_creates_nothing(
    source: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    uri, ids = source
    copy_uri = _store(tmp_path, "copy.db")
    src = trackkit.get_tracker("mlflow", tracking_uri=uri)
    dst = trackkit.get_tracker("mlflow", tracking_uri=copy_uri, strict=True)
    report = trackkit.copy_runs(src, dst, models=True)
    assert not report.failed, report
    by_name = {r.name: r for r in report}
    assert [r.outcome for r in report] == ["copied"] * 3
    assert by_name["trial"].metric_points == 4 + POINTS + 1 and by_name["trial"].models == 1
    [model] = report.models
    assert (model.name, model.created, model.aliases) == ("ride-model", (1,), ("champion",))
    check_mlflow_copy(uri, copy_uri, ids)
    check_registry_copy(
        copy_uri, _copies(MlflowClient(tracking_uri=copy_uri))[ids["trial"]].info.run_id
    )

    again = trackkit.copy_runs(src, dst, models=True)
    assert [r.outcome for r in again] == ["skipped"] * 3
    assert [r.run_id for r in again] == [r.run_id for r in report]
    assert [(m.created, m.skipped) for m in again.models] == [((), (1,))]
    client = MlflowClient(tracking_uri=copy_uri)
    assert len(_copies(client)) == 3
    assert len(client.search_runs([client.get_experiment_by_name("ride").experiment_id])) == 3
    assert len(client.search_model_versions("name = 'ride-model'")) == 1
    check_mlflow_copy(uri, copy_uri, ids)
    src.close()
    dst.close()


def test_a_dry_run_writes_nothing(source: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri, ids = source
    copy_uri = _store(tmp_path, "copy.db")
    src = trackkit.get_tracker("mlflow", tracking_uri=uri)
    dst = trackkit.get_tracker("mlflow", tracking_uri=copy_uri)
    report = trackkit.copy_runs(src, dst, models=True, dry_run=True)
    assert [r.outcome for r in report] == ["would copy"] * 3
    assert {r.source_id for r in report} == set(ids.values())
    assert [(m.name, m.created) for m in report.models] == [("ride-model", (1,))]
    client = MlflowClient(tracking_uri=copy_uri)
    assert client.get_experiment_by_name("ride") is None
    assert [e.name for e in client.search_experiments()] in ([], ["Default"])
    assert client.search_registered_models() == []
    src.close()
    dst.close()


class Interrupted(Exception):
    pass


def test_an_interrupted_copy_is_finished_without_duplicating_points(
    source: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    uri, ids = source
    copy_uri = _store(tmp_path, "copy.db")
    src = trackkit.get_tracker("mlflow", tracking_uri=uri)
    dst = trackkit.get_tracker("mlflow", tracking_uri=copy_uri, strict=True)
    written = []

    def stop_midway(count: int) -> None:  # after the first 1000 points of the run
        written.append(count)
        if sum(written) >= 1000:
            raise Interrupted

    info = src.get_run(ids["trial"])
    record = reading.source_run(src, info)
    result = Destination(dst, on_points=stop_midway).write(record)
    assert result.outcome == "failed" and "Interrupted" in (result.error or "")
    client = MlflowClient(tracking_uri=copy_uri)
    partial = client.get_run(result.run_id)
    assert partial.data.tags[COPY_STATE] == "partial"
    assert 0 < len(client.get_metric_history(result.run_id, "loss")) < POINTS + 1

    report = trackkit.copy_runs(src, dst, run_ids=[ids["trial"]])
    [resumed] = report
    assert (resumed.outcome, resumed.run_id, resumed.error) == ("resumed", result.run_id, None)
    done = client.get_run(result.run_id)
    assert done.data.tags[COPY_STATE] == "complete" and done.info.status == "FINISHED"
    for key in ("loss", "shuffled"):
        assert _history(client, result.run_id, key) == _history(
            MlflowClient(tracking_uri=uri), ids["trial"], key
        )
    assert len(_copies(client)) == 1
    assert [r.outcome for r in trackkit.copy_runs(src, dst, run_ids=[ids["trial"]])] == ["skipped"]
    src.close()
    dst.close()


KILLED_MIDWAY = """
import os, signal, sys
import trackkit
from trackkit import reading
from trackkit.copy import Destination

source = trackkit.get_tracker("mlflow", tracking_uri=sys.argv[1])
target = trackkit.get_tracker(
    "mlflow", tracking_uri=sys.argv[2], strict=True, journal_dir=sys.argv[4]
)
written = []

def kill(count):
    written.append(count)
    if sum(written) >= 1000:
        os.kill(os.getpid(), signal.SIGKILL)

record = reading.source_run(source, source.get_run(sys.argv[3]))
Destination(target, on_points=kill).write(record)
"""


def test_a_copy_killed_midway_is_finished_by_the_next_one(
    source: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    import signal
    import subprocess

    from mlflow.tracking import MlflowClient

    uri, ids = source
    copy_uri = _store(tmp_path, "copy.db")
    script = tmp_path / "killed.py"
    script.write_text(KILLED_MIDWAY)
    done = subprocess.run(
        [sys.executable, str(script), uri, copy_uri, ids["trial"], str(tmp_path / "journals")],
        capture_output=True,
        timeout=600,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode(errors="replace")
    client = MlflowClient(tracking_uri=copy_uri)
    [partial] = _copies(client).values()
    assert partial.info.status == "RUNNING" and partial.data.tags[COPY_STATE] == "partial"
    assert 0 < len(client.get_metric_history(partial.info.run_id, "loss")) < POINTS + 1

    src = trackkit.get_tracker("mlflow", tracking_uri=uri)
    dst = trackkit.get_tracker("mlflow", tracking_uri=copy_uri, strict=True)
    [resumed] = trackkit.copy_runs(src, dst, run_ids=[ids["trial"]])
    assert (resumed.outcome, resumed.run_id) == ("resumed", partial.info.run_id)
    check = MlflowClient(tracking_uri=uri)
    for key in ("loss", "shuffled"):
        assert _history(client, partial.info.run_id, key) == _history(check, ids["trial"], key)
    finished = client.get_run(partial.info.run_id)
    assert finished.info.status == "FINISHED" and finished.data.tags[COPY_STATE] == "complete"
    assert _files(client, partial.info.run_id) == _files(check, ids["trial"])
    assert len(_copies(client)) == 1
    src.close()
    dst.close()


def test_the_copy_command_takes_options_per_side(
    source: tuple[str, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow.tracking import MlflowClient

    uri, ids = source
    copy_uri = _store(tmp_path, "copy.db")
    argv = ["copy", "--from", "mlflow", "-o", f"tracking_uri={uri}"]
    argv += ["--to", "mlflow", "-o", f"tracking_uri={copy_uri}"]
    assert main([*argv, "--run", ids["broken"], "--into", "moved", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    [row] = out["runs"]
    assert (row["source_id"], row["experiment"], row["outcome"]) == (
        ids["broken"],
        "moved",
        "copied",
    )
    client = MlflowClient(tracking_uri=copy_uri)
    assert client.get_run(row["run_id"]).info.status == "FAILED"
    assert _copies(client, "moved").keys() == {ids["broken"]}

    assert main([*argv, "--experiment", "ride", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "dry run: nothing was written"
    assert sum("would copy" in line for line in lines) == 3  # not in "moved": copied there
    assert "\x1b" not in "".join(lines)  # a pipe: no progress bar, no colour

    assert main([*argv, "--experiment", "ride", "--quiet"]) == 0
    assert sum(" copied, " in line for line in capsys.readouterr().out.splitlines()) == 3
    assert len(_copies(client)) == 3

    # an option before the side it belongs to is refused, not guessed
    bad = ["copy", "-o", f"tracking_uri={uri}", "--from", "mlflow", "--to", "mlflow"]
    assert main(bad) == 2
    assert "put each -o after the --from NAME or --to NAME" in capsys.readouterr().err
    assert main(["copy", "--to", "mlflow"]) == 2
    assert "name the source once" in capsys.readouterr().err


def test_a_progress_bar_on_a_terminal_and_none_with_quiet(
    source: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    """The real command with its stderr on a pseudo-terminal and its stdout in a pipe."""
    import os
    import pty
    import subprocess

    uri, ids = source

    def run(*extra: str) -> tuple[str, str]:
        copy_uri = _store(tmp_path, f"copy{len(extra)}.db")
        argv = [sys.executable, "-m", "trackkit", "copy", "--from", "mlflow"]
        argv += ["-o", f"tracking_uri={uri}", "--to", "mlflow", "-o", f"tracking_uri={copy_uri}"]
        leader, follower = pty.openpty()
        done = subprocess.Popen(
            [*argv, "--run", ids["trial"], *extra],
            stdout=subprocess.PIPE,
            stderr=follower,
            env={**os.environ, "COLUMNS": "120", "TERM": "xterm"},
        )
        os.close(follower)
        err = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the command exited: the terminal is closed
                break
            if not chunk:
                break
            err += chunk
        out, _ = done.communicate(timeout=600)
        os.close(leader)
        assert done.returncode == 0, err.decode(errors="replace")
        return out.decode(), err.decode(errors="replace")

    out, err = run()
    assert "runs" in err and "metric points" in err and "1505/1505" in err
    first, note = out.splitlines()  # the report alone: one run, and the note on its parent
    assert " copied, " in first and "the link is kept only in the tag" in note
    assert "\x1b" not in out and "metric points \x1b" not in out
    out, err = run("--quiet")
    assert "metric points" not in err and " copied, " in out


def test_a_source_that_cannot_be_read_back_is_refused_by_name(tmp_path: Path) -> None:
    from trackkit.backend import Backend, Capabilities
    from trackkit.errors import UnsupportedOperation
    from trackkit.tracker import Tracker

    class WriteOnly(Backend):
        name = "write-only"
        capabilities = Capabilities(search_runs=True)

        def start_run(self, experiment: Any, name: Any, run_id: Any) -> Any:
            raise NotImplementedError

        def end_run(self, run_id: str, status: str) -> None:
            raise NotImplementedError

        def log_batch(self, run_id: str, params: Any, metrics: Any, tags: Any) -> None:
            raise NotImplementedError

    source = Tracker(WriteOnly(), journal_dir=tmp_path / "j")
    destination = trackkit.get_tracker("mlflow", tracking_uri=_store(tmp_path, "d.db"))
    with pytest.raises(UnsupportedOperation, match="write-only backend does not support reading"):
        trackkit.copy_runs(source, destination)
    source.close()
    destination.close()


# -- W&B offline --------------------------------------------------------------------------------
def _wandb_tracker(root: Path, monkeypatch: pytest.MonkeyPatch) -> trackkit.Tracker:
    pytest.importorskip("wandb")
    from wandb_reader import FAST, WANDB_VARIABLES

    for variable in WANDB_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    return trackkit.get_tracker("wandb", mode="offline", dir=root, settings=FAST, strict=True)


def test_mlflow_to_wandb_offline_checked_with_wandbs_reader(
    source: tuple[str, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wandb_reader import WandbReader

    uri, ids = source
    root = tmp_path / "w"
    wandb = _wandb_tracker(root, monkeypatch)
    src = trackkit.get_tracker("mlflow", tracking_uri=uri)
    report = trackkit.copy_runs(src, wandb, models=True)
    assert not report.failed, report
    copies = {r.source_id: r.run_id for r in report}
    reader = WandbReader(root)
    trial = copies[ids["trial"]]
    original = src.get_run(ids["trial"])
    # W&B holds longer values than MLflow: the param MLflow cut is whole again (from the
    # artifact that keeps it), and that artifact is not copied
    assert reader.params(trial) == {**original.params, "prompt": "p" * 7000}
    assert reader.status(trial) == "FINISHED" and reader.status(copies[ids["broken"]]) == "FAILED"
    tags = reader.tags(trial)
    assert {k: tags[k] for k in original.tags} == original.tags
    assert tags["trackkit.source.run_id"] == ids["trial"] and tags[COPY_STATE] == "complete"
    # W&B cannot set a run's times: the source's are in tags (read back on the way home)
    assert original.start_time is not None and original.end_time is not None
    assert tags["trackkit.source.start_time"] == original.start_time.isoformat(
        timespec="milliseconds"
    )
    assert tags["trackkit.source.end_time"] == original.end_time.isoformat(timespec="milliseconds")
    for key in ("loss", "shuffled"):
        expected = [(p.step, p.value) for p in src.get_metric_history(ids["trial"], key)]
        assert sorted(reader.metric_points(trial, key)) == sorted(expected), key
    assert reader.parent_id(trial) == copies[ids["search"]]
    files = reader.artifact_files(trial)
    assert {"data/bundle/a.txt", "data/bundle/inner/b.bin", "reports/summary.txt"} <= files
    assert reader.artifact_text(trial, "reports/summary.txt") == "text body"
    [model] = [a for a in reader.artifacts(trial) if a.get("type") == "model"]
    assert model["metadata"] and "sklearn" in model["metadata"]
    assert wandb.load_model("ride-model", alias="champion").predict([[4.0]]).tolist() == (
        pytest.approx([9.0])
    )
    assert reader.model_versions("ride-model") == [1]
    assert reader.alias_version("ride-model", "champion") == 1

    again = trackkit.copy_runs(src, wandb, models=True)
    assert [r.outcome for r in again] == ["skipped"] * 3
    assert reader.model_versions("ride-model") == [1]
    src.close()
    wandb.close()


def test_the_round_trip_mlflow_wandb_mlflow_keeps_everything(
    source: tuple[str, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, ids = source
    wandb = _wandb_tracker(tmp_path / "w", monkeypatch)
    src = trackkit.get_tracker("mlflow", tracking_uri=uri)
    there = trackkit.copy_runs(src, wandb, models=True)
    assert not there.failed, there
    back_uri = _store(tmp_path, "back.db")
    back = trackkit.get_tracker("mlflow", tracking_uri=back_uri, strict=True)
    report = trackkit.copy_runs(wandb, back, models=True)
    assert not report.failed, report
    assert [(m.name, m.created, m.aliases) for m in report.models] == [
        ("ride-model", (1,), ("champion",))
    ]
    returned = {r.source_id: r.run_id for r in report}
    copy_ids = {r.source_id: returned[r.run_id] for r in there if r.run_id}
    check_mlflow_copy(uri, back_uri, ids, copy_ids)
    check_registry_copy(back_uri, copy_ids[ids["trial"]], model_tags=False)
    [model] = there.models  # the model's tags could not be kept on W&B: the report says so
    assert any("tags (team) are not copied" in note for note in model.notes), model.notes
    again = trackkit.copy_runs(wandb, back, models=True)
    assert [r.outcome for r in again] == ["skipped"] * 3
    assert [(m.created, m.skipped) for m in again.models] == [((), (1,))]
    src.close()
    back.close()
    wandb.close()


# -- Neptune offline ----------------------------------------------------------------------------
def test_neptune_offline_to_mlflow_through_the_read_side(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("neptune")
    from mlflow.tracking import MlflowClient

    for var in ("NEPTUNE_PROJECT", "NEPTUNE_API_TOKEN", "NEPTUNE_MODE"):
        monkeypatch.delenv(var, raising=False)
    data_dir = tmp_path / ".neptune"
    payload = bytes(range(256)) * 10
    (tmp_path / "blob.bin").write_bytes(payload)
    neptune = trackkit.get_tracker("neptune", mode="offline", data_dir=data_dir)
    parent = neptune.start_run(experiment="ride", name="search")
    with parent, neptune.start_run(name="trial", parent=parent, tags={"developer": "ana"}) as run:
        run.log_params({"alpha": 0.1, "model": "lasso"})
        for i in range(1200):
            run.log_metric("loss", 1.0 / (i + 1), step=3 * i, timestamp=T0 + i)
        run.log_artifact(tmp_path / "blob.bin", "data")
        ref = run.log_model(_model(), "model")
    version = neptune.register_model(ref, "ride-model", description="from neptune")
    neptune.set_model_alias("ride-model", "champion", version.version)
    neptune.close()

    copy_uri = _store(tmp_path, "copy.db")
    argv = ["copy", "--from", "neptune", "-o", "mode=offline", "-o", f"data_dir={data_dir}"]
    argv += ["--to", "mlflow", "-o", f"tracking_uri={copy_uri}", "--models", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in out["runs"]}
    assert {r["outcome"] for r in rows.values()} == {"copied"}
    assert [(m["name"], m["created"], m["aliases"]) for m in out["models"]] == [
        ("ride-model", [1], ["champion"])
    ]
    client = MlflowClient(tracking_uri=copy_uri)
    trial = client.get_run(rows["trial"]["run_id"])
    assert trial.info.status == "FINISHED" and trial.info.run_name == "trial"
    assert trial.data.params == {"alpha": "0.1", "model": "lasso"}
    assert trial.data.tags["developer"] == "ana"
    assert trial.data.tags["trackkit.source.run_id"] == run.id
    assert trial.data.tags["mlflow.parentRunId"] == rows["search"]["run_id"]
    # the source's times (trackkit/start_time, trackkit/end_time in Neptune's offline log)
    reread = trackkit.get_tracker("neptune", mode="offline", data_dir=data_dir)
    original = reread.get_run(run.id)
    reread.close()
    assert trial.info.start_time == epoch_ms(original.start_time)
    assert trial.info.end_time == epoch_ms(original.end_time)
    assert _history(client, trial.info.run_id, "loss") == [
        (3 * i, 1.0 / (i + 1), T0 + i) for i in range(1200)
    ]
    assert _files(client, trial.info.run_id) == {"data/blob.bin": payload}
    [logged] = client.search_logged_models(
        experiment_ids=[trial.info.experiment_id],
        filter_string=f"source_run_id = '{trial.info.run_id}'",
    )
    assert _load(client, logged.model_id).predict([[4.0]]).tolist() == pytest.approx([9.0])
    champion = client.get_model_version_by_alias("ride-model", "champion")
    assert (champion.run_id, champion.description) == (trial.info.run_id, "from neptune")

    assert main(argv) == 0  # again: nothing new
    again = json.loads(capsys.readouterr().out)
    assert {r["outcome"] for r in again["runs"]} == {"skipped"}
    assert len(client.search_model_versions("name = 'ride-model'")) == 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
