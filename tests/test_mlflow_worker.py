"""MLflow's batches written by a worker process (``batch_process=True``), read back with
MLflow's own client: every point exactly once, through a worker killed mid-run too."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import sys
import time
import traceback
from pathlib import Path

import pytest

import trackkit
from trackkit.backends import mlflow_worker
from trackkit.entities import Metric
from trackkit.writer import refused_for_good

pytest.importorskip("mlflow")

READY_TIMEOUT = 300.0  # a loaded 2-core machine imports MLflow slowly


def _ready(tracker: trackkit.Tracker) -> mlflow_worker.BatchProcess:
    worker = tracker.backend.batch_process  # type: ignore[attr-defined]
    assert worker is not None
    deadline = time.monotonic() + READY_TIMEOUT
    while not worker.ready:
        assert time.monotonic() < deadline, "the MLflow worker did not start"
        assert worker.restarts == 0, "the MLflow worker died while starting"
        time.sleep(0.05)
    return worker


def _gone(pid: int) -> bool:
    """True if no process ``pid`` exists (not even a zombie: it was reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _steps(client, run_id: str, key: str) -> list[int]:  # type: ignore[no-untyped-def]
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_the_worker_delivers_every_point_once(sqlite_uri: str, mlflow_client) -> None:  # type: ignore[no-untyped-def]
    tracker = trackkit.get_tracker(
        "mlflow", tracking_uri=sqlite_uri, batch_process=True, end_timeout=600
    )
    worker = _ready(tracker)
    with tracker.start_run(experiment="worker") as run:
        run.log_params({"lr": 0.1, "name": "a b", "nested": {"depth": 3}})
        run.set_tag("team", "x")
        for i in range(5000):
            run.log_metrics({"loss": 1.0 / (i + 1), "acc": i / 5000})
    assert worker.sent >= 5  # the worker wrote them, not this process
    assert _steps(mlflow_client, run.id, "loss") == list(range(5000))
    assert _steps(mlflow_client, run.id, "acc") == list(range(5000))
    found = mlflow_client.get_run(run.id)
    assert found.data.params == {"lr": "0.1", "name": "a b", "nested.depth": "3"}
    assert found.data.tags["team"] == "x"
    assert found.info.status == "FINISHED"
    pid = worker.pid
    tracker.close()
    assert pid is not None and _gone(pid)  # close leaves no process behind (reaped)


def test_sends_in_process_until_the_worker_is_ready(sqlite_uri: str, mlflow_client) -> None:  # type: ignore[no-untyped-def]
    tracker = trackkit.get_tracker("mlflow", tracking_uri=sqlite_uri, batch_process=True)
    worker = tracker.backend.batch_process  # type: ignore[attr-defined]
    assert worker is not None and not worker.ready  # MLflow takes seconds to import
    started = time.monotonic()
    with tracker.start_run(experiment="early") as run:
        run.log_metrics({"m": 1.0})
        run.flush()  # nothing waits for the worker
    assert time.monotonic() - started < 60
    assert _steps(mlflow_client, run.id, "m") == [0]
    tracker.close()
    assert worker.pid is None


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(
    sqlite_uri: str, mlflow_client
) -> None:  # type: ignore[no-untyped-def]
    tracker = trackkit.get_tracker(
        "mlflow", tracking_uri=sqlite_uri, batch_process=True, end_timeout=600
    )
    worker = _ready(tracker)
    first = worker.pid
    assert first is not None
    with tracker.start_run(experiment="killed") as run:
        for i in range(40_000):
            run.log_metric("m", float(i))
        tracker.writer.wake_journal()
        deadline = time.monotonic() + READY_TIMEOUT
        while worker.sent < 2:  # a few batches in: the worker is writing when it dies
            assert time.monotonic() < deadline
            time.sleep(0.001)
        os.kill(first, signal.SIGKILL)
        for i in range(40_000, 50_000):
            run.log_metric("m", float(i))
    assert _steps(mlflow_client, run.id, "m") == list(range(50_000))
    assert mlflow_client.get_run(run.id).info.status == "FINISHED"
    assert worker.restarts >= 1 and _gone(first)  # replaced, and the dead one reaped
    tracker.close()


def test_a_refused_batch_is_set_aside_with_its_reason(sqlite_uri: str, mlflow_client) -> None:  # type: ignore[no-untyped-def]
    """Errors come back from the worker with their types: the writer still tells a refusal
    (set aside, with the store's reason) from an outage (retried)."""
    tracker = trackkit.get_tracker(
        "mlflow", tracking_uri=sqlite_uri, batch_process=True, flush_interval=0.1, end_timeout=600
    )
    limits = tracker.backend.limits  # let the store itself refuse a timestamp it cannot hold
    tracker.backend.limits = dataclasses.replace(limits, max_timestamp=None)
    worker = _ready(tracker)
    run = tracker.start_run(experiment="refused")
    mlflow_client.delete_run(run.id)
    run.log_metrics({"m": 1.0, "n": 2.0})
    assert run.flush()
    refused = run.outbox.journal.rejected()
    assert sorted(row[2] for row, _ in refused) == ["m", "n"]
    assert all("InvalidInput" in reason and "deleted" in reason for _, reason in refused)
    mlflow_client.restore_run(run.id)
    run.log_metric("m", 3.0, timestamp=2**64)  # past sqlite's integers: OverflowError there
    run.log_metric("m", 4.0, step=7)
    with pytest.warns(trackkit.TrackkitWarning, match="refused some operations for good"):
        run.end()
    assert worker.sent >= 1
    assert [(m.step, m.value) for m in mlflow_client.get_metric_history(run.id, "m")] == [(7, 4.0)]
    assert run.rejected_at is not None
    db = sqlite3.connect(run.rejected_at)
    reasons = [r for (r,) in db.execute("SELECT reason FROM rejected ORDER BY rowid")]
    db.close()
    assert len(reasons) == 3 and "too large" in reasons[-1]
    tracker.close()


def test_a_secret_in_the_uri_never_appears_in_the_workers_errors(tmp_path: Path) -> None:
    port = _closed_port()
    secret = "s3cr3t-Pa55"
    uri = f"http://alice:{secret}@127.0.0.1:{port}"
    tracker = trackkit.get_tracker(
        "mlflow", tracking_uri=uri, batch_process=True, journal_dir=tmp_path / "j"
    )
    backend = tracker.backend
    worker = _ready(tracker)
    metric = Metric("m", 1.0, 0, 0)
    with pytest.raises(Exception) as caught:
        backend.log_batch("0123456789abcdef", [], [metric], [])
    assert worker.sent == 0 and worker.ready  # the worker answered (an error), it is alive
    shown = "".join(traceback.format_exception(caught.value))
    assert "Connection" in shown and secret not in shown
    chain = []
    at: BaseException | None = caught.value
    while at is not None:
        chain.append(at)
        at = at.__cause__ or at.__context__
    assert all(secret not in str(e) and secret not in repr(e) for e in chain)
    assert not refused_for_good(caught.value)  # an outage: retried
    pid = worker.pid
    tracker.close()
    assert pid is not None and _gone(pid)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_option_and_the_environment(monkeypatch: pytest.MonkeyPatch, sqlite_uri: str) -> None:
    with pytest.raises(trackkit.InvalidInput, match="batch_process"):
        trackkit.get_tracker("mlflow", tracking_uri=sqlite_uri, batch_process="maybe")
    # text, as `-o batch_process=false` passes it: "false" is off, never taken as on
    texted = trackkit.get_tracker("mlflow", tracking_uri=sqlite_uri, batch_process="false")
    assert texted.backend.batch_process is None  # type: ignore[attr-defined]
    assert trackkit.get_tracker("mlflow", tracking_uri=sqlite_uri).backend.batch_process is None  # type: ignore[attr-defined]
    monkeypatch.setenv(mlflow_worker.ENV, "1")
    tracker = trackkit.get_tracker("mlflow", tracking_uri=sqlite_uri)
    assert tracker.backend.batch_process is not None  # type: ignore[attr-defined]
    tracker.close()
    off = trackkit.get_tracker("mlflow", tracking_uri=sqlite_uri, batch_process=False)
    assert off.backend.batch_process is None  # type: ignore[attr-defined]


def test_an_unclear_environment_value_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, sqlite_uri: str
) -> None:
    monkeypatch.setenv(mlflow_worker.ENV, "sometimes")
    with pytest.raises(trackkit.InvalidInput, match=mlflow_worker.ENV):
        trackkit.get_tracker("mlflow", tracking_uri=sqlite_uri)


def test_several_backends_write_mlflows_batches_from_the_worker(
    monkeypatch: pytest.MonkeyPatch, sqlite_uri: str, tmp_path: Path
) -> None:
    """The lanes share one process, so MLflow's lane takes its worker unless told otherwise
    (the `example` plugin is the other lane: it has no such option and gets none)."""
    monkeypatch.delenv(mlflow_worker.ENV, raising=False)
    plain = {"mlflow": {"tracking_uri": sqlite_uri}, "journal_dir": tmp_path / "tk"}
    pair = trackkit.get_tracker(["mlflow", "example"], **plain)  # type: ignore[arg-type]
    try:
        assert pair.lanes["mlflow"].backend.batch_process is not None  # type: ignore[attr-defined]
    finally:
        pair.close()
    told = {"mlflow": {"tracking_uri": sqlite_uri, "batch_process": False}}
    pair = trackkit.get_tracker(["mlflow", "example"], **told, journal_dir=tmp_path / "tk")  # type: ignore[arg-type]
    assert pair.lanes["mlflow"].backend.batch_process is None  # type: ignore[attr-defined]
    pair.close()
    monkeypatch.setenv(mlflow_worker.ENV, "0")
    pair = trackkit.get_tracker(["mlflow", "example"], **plain)  # type: ignore[arg-type]
    assert pair.lanes["mlflow"].backend.batch_process is None  # type: ignore[attr-defined]
    pair.close()


def test_errors_come_back_with_their_types() -> None:
    """The chain of causes crosses the pipe as types this process knows, or stand-ins of the
    same name (what the writer's refusal check reads), never by importing anything."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    try:
        try:
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        except OverflowError as inner:
            raise MlflowException("bad value", error_code=INVALID_PARAMETER_VALUE) from inner
    except MlflowException as e:
        links = mlflow_worker._links(e)
    links.append(("no_such_module.exc", "IntegrityError", "UNIQUE constraint failed", {}))
    rebuilt = mlflow_worker.rebuild(links)
    assert isinstance(rebuilt, MlflowException) and rebuilt.error_code == "INVALID_PARAMETER_VALUE"
    assert isinstance(rebuilt.__cause__, OverflowError)
    last = rebuilt.__cause__.__cause__
    assert type(last).__name__ == "IntegrityError" and str(last) == "UNIQUE constraint failed"
    assert "no_such_module.exc" not in sys.modules
    assert refused_for_good(rebuilt)
