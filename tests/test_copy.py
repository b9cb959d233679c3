"""``trackkit copy``: Neptune offline runs moved into MLflow, read back with ``MlflowClient``.

The Neptune runs are written offline, by trackkit's Neptune backend or by the neptune client
directly (a run from plain Neptune code); what MLflow holds afterwards is read with MLflow's own
client only.
"""

from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

import trackkit
from conftest import neptune_offline_run
from trackkit.backends.neptune import copy_runs, read_offline_runs
from trackkit.cli import build_parser
from trackkit.errors import InvalidInput, NotFound

neptune = pytest.importorskip("neptune")
pytest.importorskip("mlflow")

T0 = 1_790_000_000_000  # a fixed timestamp (ms), so copied timestamps can be compared


@pytest.fixture(autouse=True)
def _no_neptune_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("NEPTUNE_PROJECT", "NEPTUNE_API_TOKEN", "NEPTUNE_MODE", "TRACKKIT_OFFLINE"):
        monkeypatch.delenv(var, raising=False)


def history(client: Any, run_id: str, key: str) -> list[tuple[int, float, int]]:
    return sorted((m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key))


def artifact_files(client: Any, run_id: str, path: str | None = None) -> set[str]:
    found: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifact_files(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def artifact_text(client: Any, run_id: str, path: str, tmp: Path) -> str:
    local = client.download_artifacts(run_id, path, str(tmp))
    return Path(local).read_text()


def write_trackkit_run(data_dir: Path, tmp_path: Path) -> str:
    from sklearn.linear_model import LinearRegression

    folder = tmp_path / "bundle"
    (folder / "inner").mkdir(parents=True)
    (folder / "inner" / "b.txt").write_text("b")
    tracker = trackkit.get_tracker("neptune", mode="offline", data_dir=data_dir)
    with tracker.start_run(experiment="ride", name="lasso-1", tags={"developer": "ana"}) as run:
        run.log_params({"model": {"type": "lasso", "alpha": 0.1}, "seed": 7, "fast": True})
        run.log_params({"model.type.v": 2, "data/train": "a.parquet", "big": 2**40})
        run.log_param("prompt", "p" * 20_000)  # over Neptune's limit (16,384) and MLflow's
        for step in (5, 3, 10, 1):  # out of order, across batches
            run.log_metric("shuffled", float(step), step=step, timestamp=T0 + step)
            run.flush()
        for i in range(1500):
            run.log_metric("train.loss", 1.0 / (i + 1), step=2 * i, timestamp=T0 + i)
        run.log_metric("odd", float("nan"), timestamp=T0)
        run.log_metric("odd", float("inf"), timestamp=T0)
        run.log_artifact(folder, "data")
        run.log_text("text body", "reports/summary.txt")
        run.log_dict({"a": 1}, "config.json")
        run.log_model(LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0]), "model")
    tracker.close()
    return run.id


def test_a_trackkit_neptune_run_copied_into_mlflow_keeps_everything(
    sqlite_uri: str, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    data_dir = tmp_path / ".neptune"
    source_id = write_trackkit_run(data_dir, tmp_path)
    destination = trackkit.get_tracker("mlflow", tracking_uri=sqlite_uri)
    [result] = copy_runs(data_dir, destination)
    destination.close()
    assert result.error is None and result.source_id == source_id
    assert result.metric_points == 4 + 1500 + 2

    client = MlflowClient(tracking_uri=sqlite_uri)
    run = client.get_run(result.run_id)
    assert run.info.run_name == "lasso-1" and run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "ride"
    params = dict(run.data.params)
    prompt = params.pop("prompt")
    assert params == {
        "model.type": "lasso",
        "model.alpha": "0.1",
        "seed": "7",
        "fast": "True",
        "model.type.v": "2",
        "data/train": "a.parquet",
        "big": str(2**40),
    }
    assert len(prompt) == 6000 and prompt.startswith("p" * 100) and "truncated" in prompt
    long_value = "trackkit/long_values/params/prompt.txt"
    assert artifact_text(client, result.run_id, long_value, tmp_path / "a") == "p" * 20_000

    assert history(client, result.run_id, "shuffled") == [
        (s, float(s), T0 + s) for s in (1, 3, 5, 10)
    ]
    assert history(client, result.run_id, "train.loss") == [
        (2 * i, 1.0 / (i + 1), T0 + i) for i in range(1500)
    ]
    [(s1, nan, _), (s2, inf, _)] = history(client, result.run_id, "odd")
    assert (s1, s2) == (0, 1) and math.isnan(nan) and inf == sys.float_info.max

    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
    source_tags = {k: tags.pop(k) for k in list(tags) if k.startswith("trackkit.source.")}
    assert tags == {"developer": "ana", "neptune.run_id": source_id, "trackkit.copy": "complete"}
    assert source_tags.keys() == {
        "trackkit.source.backend", "trackkit.source.run_id", "trackkit.source.experiment",
        "trackkit.source.start_time", "trackkit.source.end_time",
    }  # fmt: skip
    assert (source_tags["trackkit.source.backend"], source_tags["trackkit.source.run_id"]) == (
        "neptune",
        source_id,
    )
    files = artifact_files(client, result.run_id)
    assert {
        "data/bundle/inner/b.txt",
        "reports/summary.txt",
        "config.json",
        "model/trackkit-model.json",
        "model/model.pkl",
        long_value,
    } <= files
    assert artifact_text(client, result.run_id, "reports/summary.txt", tmp_path / "b") == (
        "text body"
    )
    from trackkit.models import load_package

    model_dir = Path(client.download_artifacts(result.run_id, "model", str(tmp_path / "m")))
    assert load_package(model_dir).predict([[2.0]])[0] == pytest.approx(2.0)


def test_a_run_written_with_the_neptune_client_itself_is_copied(
    sqlite_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient
    from neptune.types import File

    data_dir = tmp_path / ".neptune"
    monkeypatch.setenv("NEPTUNE_DATA_DIRECTORY", str(data_dir))
    run = neptune.init_run(
        mode="offline", name="plain", capture_hardware_metrics=False, source_files=[]
    )
    run["params"] = {"lr": 0.01, "optimizer": "adam"}
    run["train/loss"].extend([0.9, 0.5, 0.3], steps=[0, 10, 20])
    run["eval/acc"] = 0.9
    run["misc/" + "k" * 300] = "longer than MLflow's 250-character names"
    run["sys/tags"].add(["baseline", "v2"])
    run["data/sample"].upload(File.from_content("a,b\n1,2\n", extension="csv"))
    run["notes"].append("first line")
    run.stop()

    destination = trackkit.get_tracker("mlflow", tracking_uri=sqlite_uri)
    [result] = copy_runs(data_dir, destination, experiment="from-neptune")
    destination.close()
    assert result.params == 3 and any("not copied" in note for note in result.notes)
    client = MlflowClient(tracking_uri=sqlite_uri)
    copied = client.get_run(result.run_id)
    assert copied.info.run_name == "plain"
    assert dict(copied.data.params) == {
        "params.lr": "0.01",
        "params.optimizer": "adam",
        "eval.acc": "0.9",
    }
    assert [(m.step, m.value) for m in client.get_metric_history(result.run_id, "train.loss")] == [
        (0, 0.9), (10, 0.5), (20, 0.3),
    ]  # fmt: skip
    assert json.loads(copied.data.tags["neptune.tags"]) == ["baseline", "v2"]
    assert artifact_files(client, result.run_id) == {"neptune/data/sample.csv", "neptune/notes.txt"}
    text = artifact_text(client, result.run_id, "neptune/data/sample.csv", tmp_path / "s")
    assert text == "a,b\n1,2\n"


def test_the_copy_command(sqlite_uri: str, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    data_dir = tmp_path / ".neptune"
    tracker = trackkit.get_tracker("neptune", mode="offline", data_dir=data_dir)
    ids = []
    for rmse in (6.5, 7.1):
        with tracker.start_run(experiment="cmp") as run:
            run.log_metric("rmse", rmse)
        ids.append(run.id)
    tracker.close()
    parser = build_parser()
    argv = ["copy", str(tmp_path), "--to", "mlflow", "-o", f"tracking_uri={sqlite_uri}"]
    args = parser.parse_args([*argv, "--experiment", "moved", "--run", ids[1], "--json"])
    out = io.StringIO()
    assert args.run(args, out) == 0
    [row] = json.loads(out.getvalue())
    assert row["source_id"] == ids[1] and row["experiment"] == "moved" and row["error"] is None
    client = MlflowClient(tracking_uri=sqlite_uri)
    assert client.get_run(row["run_id"]).data.metrics == {"rmse": 7.1}

    args = parser.parse_args(argv)
    out = io.StringIO()
    assert args.run(args, out) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and all("1 metric points" in line for line in lines)
    experiment = client.get_experiment_by_name("cmp")
    assert len(client.search_runs([experiment.experiment_id])) == 2


def test_an_unfinished_run_is_ended_killed_and_bad_sources_are_refused(
    sqlite_uri: str, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    from trackkit.backends.neptune import NeptuneBackend
    from trackkit.entities import Metric

    data_dir = tmp_path / ".neptune"
    backend = NeptuneBackend(mode="offline", data_dir=data_dir)
    handle = backend.start_run("crashed", "half", None)
    backend.log_batch(handle.id, [("lr", 0.1)], [Metric("loss", 1.0, 0, T0)], [])
    backend.run_object(handle.id).stop()  # the process died: the run never ended
    [data] = read_offline_runs(data_dir)
    assert data.atoms["trackkit/status"] == "RUNNING"

    destination = trackkit.get_tracker("mlflow", tracking_uri=sqlite_uri)
    [result] = copy_runs(data_dir / "offline", destination)
    assert result.status == "KILLED" and any("RUNNING" in n for n in result.notes)
    assert MlflowClient(tracking_uri=sqlite_uri).get_run(result.run_id).info.status == "KILLED"
    with pytest.raises(InvalidInput, match="no Neptune offline data"):
        copy_runs(tmp_path / "nothing-here", destination)
    with pytest.raises(NotFound, match="no-such-run"):
        copy_runs(data_dir, destination, run_ids=["no-such-run"])
    destination.close()


def test_a_nested_run_keeps_its_parent_as_a_tag(sqlite_uri: str, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    data_dir = tmp_path / ".neptune"
    tracker = trackkit.get_tracker("neptune", mode="offline", data_dir=data_dir)
    parent = tracker.start_run(experiment="tune", name="search")
    with parent, tracker.start_run(name="trial", parent=parent) as child:
        child.log_metric("loss", 0.5)
    tracker.close()
    destination = trackkit.get_tracker("mlflow", tracking_uri=sqlite_uri)
    results = {r.name: r for r in copy_runs(data_dir, destination)}
    destination.close()
    client = MlflowClient(tracking_uri=sqlite_uri)
    tags = client.get_run(results["trial"].run_id).data.tags
    assert tags["neptune.parent_id"] == parent.id and tags["neptune.run_id"] == child.id
    assert "neptune.parent_id" not in client.get_run(results["search"].run_id).data.tags
    assert results["trial"].params == 0  # trackkit/parent_id is the link, not a param


OUTSIDE = """
import sys
import neptune
run = neptune.init_run(mode="offline", project="ws/p", name="plain")
run["trackkit/experiment"] = "ride"
run["artifacts/data/outside.bin"].upload(sys.argv[1])
run["artifacts/data/inside.txt"].upload("inside.txt")
run["loss"].append(0.5)
run.stop()
"""


def test_files_outside_the_runs_folder_are_copied_only_with_outside_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run made by plain neptune code names a file outside its project folder: both forms
    of the command leave it out, with a note; ``--outside-files`` copies it and warns, naming
    it. What MLflow holds is read with MlflowClient."""
    import tempfile
    import warnings

    from mlflow.tracking import MlflowClient

    from trackkit.cli import main
    from trackkit.errors import TrackkitWarning

    outside = tmp_path / "elsewhere" / "outside.bin"
    outside.parent.mkdir()
    outside.write_bytes(bytes(range(256)) * 3)
    project = tmp_path / "project"
    project.mkdir()
    (project / "inside.txt").write_text("inside")
    run_dir = neptune_offline_run(project, OUTSIDE, str(outside))
    run_id = run_dir.name.split("__")[1]

    def files(uri: str, run: str) -> dict[str, bytes]:
        client = MlflowClient(tracking_uri=uri)
        found = {}
        for path in artifact_files(client, run):
            with tempfile.TemporaryDirectory() as tmp:
                found[path] = Path(client.download_artifacts(run, path, tmp)).read_bytes()
        return found

    data_dir = f"data_dir={project / '.neptune'}"
    forms = {
        "path": ["copy", str(project / ".neptune")],
        "from": [
            "copy",
            "--from",
            "neptune",
            "-o",
            "mode=offline",
            "-o",
            data_dir,
            "--run",
            run_id,
        ],
    }
    for form, argv in forms.items():
        uri = f"sqlite:///{tmp_path / f'{form}.db'}"
        to = ["--to", "mlflow", "-o", f"tracking_uri={uri}", "--json"]
        with warnings.catch_warnings():
            warnings.simplefilter("error", TrackkitWarning)  # none without the flag
            assert main([*argv, *to]) == 0, form
        out = json.loads(capsys.readouterr().out)
        [row] = out if form == "path" else out["runs"]
        assert files(uri, row["run_id"]) == {"data/inside.txt": b"inside"}, form
        if form == "path":  # the reader of the files notes what it left out, and why
            assert any("--outside-files" in n and str(outside) in n for n in row["notes"])

        uri = f"sqlite:///{tmp_path / f'{form}-trusted.db'}"
        to = ["--to", "mlflow", "-o", f"tracking_uri={uri}", "--json"]
        with pytest.warns(TrackkitWarning, match="outside the folder") as caught:
            assert main([*argv, *to, "--outside-files"]) == 0, form
        assert any(str(outside) in str(w.message) for w in caught), form
        out = json.loads(capsys.readouterr().out)
        [row] = out if form == "path" else out["runs"]
        assert files(uri, row["run_id"]) == {
            "data/inside.txt": b"inside",
            "data/outside.bin": outside.read_bytes(),
        }, form

    # the flag belongs to Neptune offline data
    assert main(["copy", "--from", "mlflow", "--to", "mlflow", "--outside-files"]) == 2
    assert "--outside-files applies to Neptune offline data" in capsys.readouterr().err


def test_an_offline_run_read_again_after_it_changed(tmp_path: Path) -> None:
    """The neptune backend keeps offline runs it read (a copier reads each run several times),
    and reads a run again once its files change: new points, a new run."""
    tracker = trackkit.get_tracker("neptune", mode="offline", data_dir=tmp_path / ".neptune")
    run = tracker.start_run(experiment="ride", name="open")
    run.log_metric("loss", 1.0, step=0, timestamp=T0)
    run.flush()
    assert [p.value for p in tracker.get_metric_history(run.id, "loss")] == [1.0]
    assert [p.value for p in tracker.get_metric_history(run.id, "loss")] == [1.0]  # kept
    run.log_metric("loss", 0.5, step=1, timestamp=T0 + 1)
    run.flush()
    assert [p.value for p in tracker.get_metric_history(run.id, "loss")] == [1.0, 0.5]
    run.end()
    with tracker.start_run(experiment="ride", name="second") as other:
        other.log_metric("loss", 2.0)
    found = {r.name: r for r in tracker.search_runs("ride")}
    assert set(found) == {"open", "second"} and found["open"].status == "FINISHED"
    assert found["second"].metrics == {"loss": 2.0}
    tracker.close()
