"""Several backends at once: choosing them, one normalization for all, what one backend cannot
do, reads, visible state, and a backend that is down.

The pair here is MLflow (a real sqlite store, read back with ``MlflowClient``) and the
``example`` plugin of ``examples/trackkit-example`` (runs as JSON files, read back from its
files): it has no registry, no nested runs and no search, so it shows what happens to an
operation one backend cannot do. MLflow with W&B offline is ``test_multi_conformance.py``.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import trackkit
from conftest import _free_port
from trackkit import tracker as single
from trackkit.backend import Limits
from trackkit.multi import MultiRun, MultiTracker, combine_limits
from trackkit.normalize import LONG_VALUES_DIR
from trackkit.run import Run
from trackkit.tracker import Tracker

mlflow = pytest.importorskip("mlflow")


@pytest.fixture(autouse=True)
def _example_plugin() -> None:
    if "example" not in trackkit.available_backends():
        pytest.skip("needs the trackkit-example plugin (pip install -e examples/trackkit-example)")


class ExampleFiles:
    """The example backend's runs, read from its own files (not through trackkit)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def run_dir(self, run_id: str) -> Path:
        [found] = self.root.glob(f"*/{run_id}/meta.json")
        return found.parent

    def params(self, run_id: str) -> dict[str, str]:
        return dict(json.loads((self.run_dir(run_id) / "params.json").read_text()))

    def tags(self, run_id: str) -> dict[str, str]:
        return dict(json.loads((self.run_dir(run_id) / "tags.json").read_text()))

    def points(self, run_id: str, key: str) -> list[tuple[int, float]]:
        lines = (self.run_dir(run_id) / "metrics.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
        return sorted((r["step"], r["value"]) for r in rows if r["key"] == key)

    def meta(self, run_id: str) -> dict[str, Any]:
        return dict(json.loads((self.run_dir(run_id) / "meta.json").read_text()))

    def artifact(self, run_id: str, path: str) -> str:
        return (self.run_dir(run_id) / "artifacts" / path).read_text()


def _pair(sqlite_uri: str, tmp_path: Path, **options: Any) -> Iterator[MultiTracker]:
    """MLflow on ``sqlite_uri`` and the example backend under ``tmp_path/ex``, closed after."""
    tracker = trackkit.get_tracker(
        ["mlflow", "example"],
        mlflow={"tracking_uri": sqlite_uri},
        example={"root": tmp_path / "ex"},
        **options,
    )
    assert isinstance(tracker, MultiTracker)
    yield tracker
    tracker.close()


@pytest.fixture
def pair(sqlite_uri: str, tmp_path: Path) -> Iterator[MultiTracker]:
    yield from _pair(sqlite_uri, tmp_path, flush_interval=0.05)


@pytest.fixture
def strict_pair(sqlite_uri: str, tmp_path: Path) -> Iterator[MultiTracker]:
    yield from _pair(sqlite_uri, tmp_path, strict=True)


@pytest.fixture
def files(tmp_path: Path) -> ExampleFiles:
    return ExampleFiles(tmp_path / "ex")


# -- choosing backends ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("backend", "options", "message"),
    [
        ([], {}, "the list of backends is empty"),
        (["mlflow", "mlflow"], {}, "'mlflow' is named twice"),
        ("mlflow,", {}, "non-empty strings, got ''"),
        (["mlflow", 3], {}, "non-empty strings, got 3"),
        (
            ["mlflow", "example"],
            {"tracking_uri": "sqlite:///x.db"},
            "option 'tracking_uri' is an option of the mlflow backend: with several backends, "
            "pass each backend's options under its name, e.g. get_tracker(['mlflow', "
            "'example'], mlflow={'tracking_uri': ...})",
        ),
        (["mlflow", "example"], {"bogus": 1}, "option 'bogus' is not trackkit's own"),
        (
            ["mlflow", "example"],
            {"mlflow": {"strict": True}},
            "'strict' is one of trackkit's own options, shared by every backend (not a mlflow "
            "option): pass it at the top level",
        ),
        (["mlflow", "example"], {"mlflow": "x"}, "the options of the mlflow backend must be a mapping"),
        (["mlflow", "example"], {"wandb": {}}, "options are given for the wandb backend, which is not among the chosen"),
    ],
)  # fmt: skip
def test_bad_choices_are_refused_before_any_backend_is_made(
    backend: Any, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(trackkit.InvalidInput) as refused:
        trackkit.get_tracker(backend, **options)
    assert message in str(refused.value)


def test_an_unknown_name_in_the_list_is_named() -> None:
    with pytest.raises(trackkit.UnknownBackendError, match="'mlfow'; did you mean 'mlflow'"):
        trackkit.get_tracker(["example", "mlfow"])
    with pytest.raises(trackkit.InvalidInput, match="names several backends"):
        single.get_tracker("mlflow,example")  # the one-backend factory says where to go


def test_the_environment_variable_lists_backends(
    monkeypatch: pytest.MonkeyPatch, sqlite_uri: str
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri)  # each SDK's own variables apply
    monkeypatch.setenv("TRACKKIT_BACKEND", " mlflow , example ")
    tracker = trackkit.get_tracker(end_timeout=5)
    try:
        assert isinstance(tracker, MultiTracker) and tracker.backend_names == ["mlflow", "example"]
        assert tracker.backend.name == "mlflow"  # the primary
        assert all(lane.end_timeout == 5 for lane in tracker.lanes.values())  # shared options
        assert "sqlite" in repr(tracker) and "example (" in repr(tracker)
    finally:
        tracker.close()
    monkeypatch.setenv("TRACKKIT_BACKEND", "mlflow")
    alone = trackkit.get_tracker()
    assert type(alone) is Tracker  # one backend: the single-backend Tracker, as before
    alone.close()
    one = trackkit.get_tracker(["mlflow"], mlflow={"tracking_uri": sqlite_uri})
    assert type(one) is Tracker and one.backend.describe().endswith(".db)")
    one.close()


def test_limits_combine_to_the_strictest() -> None:
    combined = combine_limits(
        [
            Limits(key_length=250, param_value_length=6000, key_invalid_chars=r"[^/\w.\- ]"),
            Limits(param_value_length=None, tag_value_length=500, key_invalid_chars="[:]"),
            Limits(batch_metrics=10, max_step=2**31 - 1, max_timestamp=2**40),
        ]
    )
    assert (combined.key_length, combined.param_value_length, combined.tag_value_length) == (
        250,
        6000,
        500,
    )
    assert (combined.batch_metrics, combined.batch_params_tags, combined.batch_total) == (
        10,
        100,
        1000,
    )
    assert (combined.max_step, combined.max_timestamp) == (2**31 - 1, 2**40)
    assert combined.key_invalid_chars is not None
    from trackkit.normalize import KeyRules

    assert KeyRules(combined).check("acc@top:5", "metric") == "acc_top_5"  # both forbid
    assert combine_limits([Limits(), Limits()]) == Limits()


# -- writing --------------------------------------------------------------------------------------
def test_one_normalization_for_every_backend(pair: MultiTracker, files: ExampleFiles) -> None:
    """MLflow's limits are the stricter: both backends store MLflow's names and truncations."""
    config = {"prompt": "x" * 7000, "model": {"alpha": 0.5}}
    renamed = pytest.warns(trackkit.TrackkitWarning, match="renamed_keys")
    with renamed, pair.start_run(experiment="norm", tags={"team:a": "ml"}) as run:
        run.log_params(config)
        for i in range(3):
            run.log_metric("acc@top5", i / 10)
        run.log_metrics({"loss": 0.5, "nested": {"v": math.inf}}, step=7)
    assert config["prompt"] == "x" * 7000 and config["model"] == {"alpha": 0.5}  # untouched
    assert isinstance(run, MultiRun) and isinstance(run, Run)
    client = mlflow.MlflowClient(tracking_uri=pair.lanes["mlflow"].backend.tracking_uri)  # type: ignore[attr-defined]
    ids = run.ids
    assert ids["mlflow"] == run.id and set(ids) == {"mlflow", "example"}
    stored = client.get_run(ids["mlflow"]).data
    assert stored.params == files.params(ids["example"])  # the same keys and values
    assert (
        len(stored.params["prompt"]) <= 6000 and "truncated by trackkit" in stored.params["prompt"]
    )
    assert stored.params["model.alpha"] == "0.5"
    assert stored.tags["team_a"] == "ml" and files.tags(ids["example"])["team_a"] == "ml"
    steps = [(m.step, m.value) for m in client.get_metric_history(ids["mlflow"], "acc_top5")]
    assert (
        sorted(steps) == files.points(ids["example"], "acc_top5") == [(0, 0.0), (1, 0.1), (2, 0.2)]
    )
    assert files.points(ids["example"], "nested.v") == [(7, math.inf)]
    # the whole value and the renames, as artifacts on both
    whole = f"{LONG_VALUES_DIR}/params/prompt.txt"
    assert files.artifact(ids["example"], whole) == "x" * 7000
    local = client.download_artifacts(ids["mlflow"], whole, str(pair.journal_dir.parent))
    assert Path(local).read_text() == "x" * 7000
    renames = json.loads(files.artifact(ids["example"], "trackkit/renamed_keys.json"))
    assert renames == {"metric": {"acc@top5": "acc_top5"}, "tag": {"team:a": "team_a"}}
    assert (
        client.get_run(ids["mlflow"]).info.status
        == files.meta(ids["example"])["status"]
        == "FINISHED"
    )
    assert (
        files.meta(ids["example"])["name"]
        == run.name
        == client.get_run(ids["mlflow"]).info.run_name
    )


def test_params_stay_immutable_and_resume_continues_on_every_backend(
    pair: MultiTracker, files: ExampleFiles
) -> None:
    with pair.start_run(experiment="resume") as first:
        first.log_param("lr", 0.1)
        first.log_metric("loss", 1.0)
        with pytest.raises(trackkit.InvalidInput, match="params cannot change"):
            first.log_param("lr", 0.2)
    with pair.start_run(run_id=first.ids["example"]) as again:  # any backend's id will do
        again.log_param("lr", 0.1)
        with pytest.raises(trackkit.InvalidInput, match="params cannot change"):
            again.log_param("lr", 0.3)
        again.log_metric("loss", 0.5)
    assert again.ids == first.ids
    assert files.points(first.ids["example"], "loss") == [(0, 1.0), (1, 0.5)]
    client = mlflow.MlflowClient(tracking_uri=pair.lanes["mlflow"].backend.tracking_uri)  # type: ignore[attr-defined]
    assert sorted(m.step for m in client.get_metric_history(first.id, "loss")) == [0, 1]
    with pytest.raises(trackkit.InvalidInput, match="pass them, start_run\\(run_id=\\{'mlflow'"):
        pair.start_run(run_id="not-a-run-of-this-tracker")


def test_what_one_backend_cannot_do_is_done_on_the_others_and_reported_once(
    pair: MultiTracker, files: ExampleFiles
) -> None:
    sklearn = pytest.importorskip("sklearn.linear_model")
    model = sklearn.LinearRegression().fit([[0.0], [1.0], [2.0]], [0.0, 2.0, 4.0])
    with pair.start_run(experiment="models") as parent:
        ref = parent.log_model(model)  # both store models
        with pytest.warns(trackkit.TrackkitWarning, match="not done on the example backend") as w:
            child = pair.start_run(parent=parent, name="child")
        assert "it has no nested runs" in str(w[0].message)
        child.end()
    assert ref.backend == "mlflow" and ref.run_id == parent.id
    assert pair.get_run(child.id).parent_id == parent.id  # MLflow nests it
    assert files.meta(child.ids["example"])["name"] == "child"  # the example run exists too
    assert pair.load_model(ref).predict([[3.0]])[0] == pytest.approx(6.0)
    files_ref = f"runs:/{parent.ids['example']}/model"
    assert pair.load_model(files_ref, backend="example").predict([[3.0]])[0] == pytest.approx(6.0)

    with pytest.warns(trackkit.TrackkitWarning) as warned:
        version = pair.register_model(ref, "ride")
        pair.set_model_alias("ride", "production", version.version)
        pair.register_model(ref, "ride")  # the same operation again: no second warning
    messages = [str(x.message) for x in warned]
    assert len(messages) == 2, messages
    assert all("not done on the example backend" in m for m in messages)
    assert "register_model: not done" in messages[0] and "does not support" in messages[0]
    assert "set_model_alias: not done" in messages[1]
    client = mlflow.MlflowClient(tracking_uri=pair.lanes["mlflow"].backend.tracking_uri)  # type: ignore[attr-defined]
    assert {k: int(v) for k, v in client.get_registered_model("ride").aliases.items()} == {
        "production": 1
    }
    assert pair.get_model_version("ride", alias="production").version == 1


def test_a_start_time_and_a_model_tag_go_where_they_can_be_kept(
    pair: MultiTracker, files: ExampleFiles
) -> None:
    """MLflow keeps run times and registered models' tags; the example backend neither: the
    run starts there now, the tag is not set there, each reported once."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    started = 1_600_000_000_123
    with pytest.warns(trackkit.TrackkitWarning) as warned:
        with pair.start_run(experiment="times", start_time=started) as run:
            run.log_metric("m", 1.0)
            ref = run.log_model(sklearn.LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0]))
        pair.register_model(ref, "timed")
        pair.set_registered_model_tag("timed", "team", "rides")
        with pair.start_run(experiment="times", start_time=started):
            pass
    messages = [str(w.message) for w in warned]
    skipped = [m for m in messages if "not done on the example backend" in m]
    assert len(skipped) == 3, messages  # once per operation: start time, register, model tag
    assert skipped[0].startswith("start_run(start_time=...): not done on the example backend")
    assert skipped[2].startswith("set_registered_model_tag: not done on the example backend")
    client = mlflow.MlflowClient(tracking_uri=pair.lanes["mlflow"].backend.tracking_uri)  # type: ignore[attr-defined]
    assert client.get_run(run.ids["mlflow"]).info.start_time == started
    assert client.get_registered_model("timed").tags == {"team": "rides"}
    assert files.meta(run.ids["example"])["status"] == "FINISHED"  # started there too
    with pytest.raises(trackkit.InvalidInput, match="not with run_id"):
        pair.start_run(run_id=run.id, start_time=started)


def test_a_search_on_backends_not_all_nesting_tags_its_trials_even_in_strict_mode(
    strict_pair: MultiTracker, sqlite_uri: str, tmp_path: Path, files: ExampleFiles
) -> None:
    """The example backend has no nested runs: an optuna search's trials are top-level runs
    tagged with the search run's id on both backends, and strict mode does not refuse them."""
    optuna = pytest.importorskip("optuna")
    from trackkit.integrations import SEARCH_RUN_TAG
    from trackkit.integrations.optuna import TrackkitCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tracker = strict_pair
    with tracker.start_run(experiment="search", name="search") as parent:
        optuna.create_study().optimize(
            lambda t: t.suggest_float("x", 0, 1), n_trials=2, callbacks=[TrackkitCallback()]
        )
    client = mlflow.MlflowClient(tracking_uri=sqlite_uri)
    experiment = client.get_experiment_by_name("search").experiment_id
    trials = client.search_runs([experiment], f"tags.`{SEARCH_RUN_TAG}` = '{parent.id}'")
    assert sorted(r.info.run_name for r in trials) == ["trial-0", "trial-1"]
    assert all("mlflow.parentRunId" not in r.data.tags for r in trials)
    example_trials = [
        p.parent.name
        for p in (tmp_path / "ex").glob("*/*/tags.json")
        if json.loads(p.read_text()).get(SEARCH_RUN_TAG) == parent.id  # the search run's id
    ]
    assert len(example_trials) == 2
    assert all(files.meta(t)["status"] == "FINISHED" for t in example_trials)


def test_strict_mode_raises_before_doing_anything(
    strict_pair: MultiTracker, sqlite_uri: str
) -> None:
    tracker = strict_pair
    with tracker.start_run(experiment="strict") as run:
        run.log_text("kept", "notes.txt")
        with pytest.raises(trackkit.UnsupportedOperation, match="example backend does not support"):
            tracker.start_run(parent=run)
        with pytest.raises(
            trackkit.UnsupportedOperation,
            match="example backend does not support register_model",
        ):
            tracker.register_model(f"runs:/{run.id}/notes.txt", "strict-model")
        with pytest.raises(
            trackkit.UnsupportedOperation,
            match=r"example backend does not support start_run\(start_time=...\)",
        ):
            tracker.start_run(experiment="strict", start_time=1_600_000_000_000)
    client = mlflow.MlflowClient(tracking_uri=sqlite_uri)
    assert client.search_registered_models() == []  # nothing registered anywhere
    assert len(client.search_runs([client.get_experiment_by_name("strict").experiment_id])) == 1


def test_set_tracking_uri_goes_to_the_backend_that_takes_one(
    monkeypatch: pytest.MonkeyPatch, sqlite_uri: str, tmp_path: Path
) -> None:
    """``TRACKKIT_BACKEND`` lists several backends: the URI goes to the one that takes a
    tracking URI (MLflow), even when it is not the primary; the other keeps its own settings."""
    monkeypatch.setenv("TRACKKIT_BACKEND", "example,mlflow")
    monkeypatch.setenv("TRACKKIT_EXPERIMENT", "uri")
    trackkit.set_tracking_uri(sqlite_uri)
    tracker = trackkit.get_default_tracker()
    try:
        assert isinstance(tracker, MultiTracker) and tracker.backend_names == ["example", "mlflow"]
        assert trackkit.get_tracking_uri() == sqlite_uri  # the MLflow backend's
        with trackkit.start_run() as run:
            trackkit.log_metric("m", 2.0)
    finally:
        tracker.close()
    client = mlflow.MlflowClient(tracking_uri=sqlite_uri)
    assert [m.value for m in client.get_metric_history(run.ids["mlflow"], "m")] == [2.0]
    default_place = ExampleFiles(tmp_path / "trackkit-example-runs")  # the example's own
    assert default_place.points(run.ids["example"], "m") == [(0, 2.0)]
    trackkit.set_tracker(None)
    monkeypatch.setenv("TRACKKIT_BACKEND", "example,wandb")
    with pytest.raises(
        trackkit.UnsupportedOperation,
        match="none of the backends example, wandb has a tracking URI; instead, pass each its "
        r"options, trackkit.get_tracker\(\['example', 'wandb'\], example=\{...\}",
    ):
        trackkit.set_tracking_uri(sqlite_uri)


# -- reading ---------------------------------------------------------------------------------------
def test_reads_go_to_the_primary_or_the_backend_named(pair: MultiTracker, tmp_path: Path) -> None:
    with pair.start_run(experiment="reads", name="r") as run:
        run.log_metric("loss", 0.5)
        run.log_text("hello", "notes/x.txt")
    [found] = pair.search_runs("reads")
    assert found.id == run.id and found.metrics == {"loss": 0.5}  # MLflow's
    assert pair.get_run(run.ids["example"]).id == run.id  # any backend's id names the run
    with pytest.raises(trackkit.UnsupportedOperation, match="the example backend does not support"):
        pair.search_runs("reads", backend="example")
    got = pair.download_artifacts(run.id, "notes/x.txt", tmp_path / "dl", backend="example")
    assert got.read_text() == "hello"
    assert pair.get_metric_history(run.id, "loss")[0].value == 0.5
    with pytest.raises(trackkit.InvalidInput, match="one of this tracker's backends"):
        pair.get_run(run.id, backend="wandb")


# -- visible state and a backend that is down ------------------------------------------------------
def test_a_dead_backend_costs_the_other_nothing_and_describe_shows_each_lane(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    files: ExampleFiles,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    dead = f"http://127.0.0.1:{_free_port()}"
    tracker = trackkit.get_tracker(
        ["mlflow", "example"],
        mlflow={"tracking_uri": dead},
        example={"root": tmp_path / "ex"},
        flush_interval=0.05,
        end_timeout=2,
    )
    try:
        with pytest.warns(trackkit.TrackkitWarning) as warned:
            run = tracker.start_run(experiment="outage")
            for i in range(2000):
                run.log_metric("loss", float(i))
            assert run.runs["example"].flush(timeout=60)  # the example lane delivers alone
            assert not run.runs["mlflow"].flush(timeout=60)  # a failed attempt to send
            shown = tracker.describe().splitlines()
            run.end()
        assert run.id.startswith("local-")  # MLflow's run exists only locally
        assert shown[0].startswith(f"mlflow ({dead}): 1 run in delivery, ")
        assert "failing (" in shown[0] and shown[0].endswith("(primary)")
        assert shown[1].endswith("0 operations pending; all delivered"), shown[1]
        assert any("the mlflow" in str(w.message) and "failed" in str(w.message) for w in warned)
        assert any("not acknowledged all of it yet" in str(w.message) for w in warned)
        example_id = run.ids["example"]
        assert files.points(example_id, "loss") == [(i, float(i)) for i in range(2000)]
        assert files.meta(example_id)["status"] == "FINISHED"
        assert run.runs["mlflow"].journal.path.exists()  # kept for `trackkit sync`
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tracker.close()
    # sync shows each lane's journal with its backend: only MLflow's is left, still failing
    [result] = trackkit.sync(tracking_uri=dead, backend="mlflow")
    assert (result.backend, result.outcome) == ("mlflow", "failed")
    assert trackkit.sync(backend="example") == []
    from trackkit.cli import main

    capsys.readouterr()
    assert main(["sync", "--backend", "mlflow", "-o", f"tracking_uri={dead}"]) == 1
    header, line = capsys.readouterr().out.splitlines()
    assert header.split()[:6] == ["JOURNAL", "KIND", "RUN", "OUTCOME", "SENT", "BACKEND"]
    assert line.split()[3:6] == ["failed", "0", "mlflow"] and "127.0.0.1" in line


def test_a_model_one_backend_cannot_take_is_reported_each_time_and_the_others_keep_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, files: ExampleFiles
) -> None:
    """MLflow's server is down: a model cannot be journaled, so, as with MLflow alone, it is
    not stored there (a clear report, naming the backend, for each model), while the other
    backend stores it; an artifact is journaled for MLflow, as with MLflow alone."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    model = sklearn.LinearRegression().fit([[0.0], [1.0], [2.0]], [0.0, 2.0, 4.0])
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    tracker = trackkit.get_tracker(
        ["mlflow", "example"],
        mlflow={"tracking_uri": f"http://127.0.0.1:{_free_port()}"},
        example={"root": tmp_path / "ex"},
        flush_interval=0.05,
        end_timeout=1,
    )
    runs, refs = [], []
    try:
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            for name in ("first", "second"):
                with tracker.start_run(experiment="models", name=name) as run:
                    refs.append(run.log_model(model))
                    run.log_text("kept", "notes.txt")
                runs.append(run)
                lane = run.runs["mlflow"]  # its journal keeps the artifact for `trackkit sync`
                assert [p.name for p in lane.journal.files_dir().rglob("*.txt")] == ["notes.txt"]
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tracker.close()
    reports = [w for w in warned if "failed on the mlflow backend" in str(w.message)]
    failed = [str(w.message) for w in reports]
    assert len(failed) == 2, failed  # each model, not once per tracker
    assert {w.filename for w in reports} == {__file__}  # shown at the call that lost it
    for run, message in zip(runs, failed, strict=True):
        assert message.startswith(f"log_model('model') in run {run.id} failed on the mlflow ")
        assert "BackendError: the mlflow" in message and "it was done on example" in message
        assert "do it again there alone (run.runs['mlflow'])" in message
    for run, ref in zip(runs, refs, strict=True):
        assert (ref.backend, ref.run_id) == ("example", run.ids["example"])
        assert tracker.load_model(ref).predict([[3.0]])[0] == pytest.approx(6.0)
        assert files.artifact(run.ids["example"], "notes.txt") == "kept"
        assert files.meta(run.ids["example"])["status"] == "FINISHED"


def test_a_multi_run_is_a_run_checked_by_runs_own_code() -> None:
    """Each rule lives once: a MultiRun is a Run whose own validation and normalization
    (params, tags, metrics, renames, long values, the model's checks) it does not override;
    it overrides only what each backend does on its own. A MultiTracker has no writer of its
    own: each public Tracker method is routed or fanned out."""
    checked_once = {
        "log_param",
        "log_params",
        "log_metric",
        "log_metrics",
        "set_tag",
        "set_tags",
        "log_model",
        "end",
        "settle",
        "logged",
        "_check_open",
        "_claim",
        "_keep_long_value",
        "_stored_text",
        "_log_renames",
        "_enqueue",
    }
    assert checked_once & set(vars(MultiRun)) == set()
    each_backend = {"check_delivery", "log_artifact", "log_table", "store_model", "flush"}
    assert each_backend | {
        "close",
        "await_end",
        "describe",
        "delivered",
        "lost",
        "backends",
    } <= set(vars(MultiRun))
    public = {n for n in vars(Tracker) if not n.startswith("_")}
    missing = sorted(public - set(vars(MultiTracker)) - {"backend_name"})
    assert missing == [], f"MultiTracker inherits {missing} from Tracker"
