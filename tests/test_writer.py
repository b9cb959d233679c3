"""The background writer and journal on a real MLflow store: threads, processes, bounded
memory, deferred operations. Everything is read back through MLflow's client."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import trackkit
from trackkit import journal as jn
from trackkit.testing import _fitted_pipeline

mlflow = pytest.importorskip("mlflow")


def _steps(client, run_id: str, key: str) -> list[int]:  # type: ignore[no-untyped-def]
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_threads_logging_to_one_run_lose_nothing(mlflow_tracker, mlflow_client) -> None:  # type: ignore[no-untyped-def]
    per_thread, threads = 3000, 4
    with mlflow_tracker.start_run(experiment="threads") as run:

        def work(n: int) -> None:
            for i in range(per_thread):
                run.log_metric(f"own.{n}", float(i))
                run.log_metric("shared", float(i), step=n * per_thread + i)
            run.set_tag(f"thread.{n}", "done")

        workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    for n in range(threads):
        assert _steps(mlflow_client, run.id, f"own.{n}") == list(range(per_thread))
    assert _steps(mlflow_client, run.id, "shared") == list(range(per_thread * threads))
    assert {f"thread.{n}" for n in range(threads)} <= set(mlflow_client.get_run(run.id).data.tags)


PROCESS = """
import sys, trackkit
# end() waits for delivery as long as a loaded machine needs (not the default 30 s)
tracker = trackkit.get_tracker("mlflow", tracking_uri=sys.argv[1], end_timeout=600)
with tracker.start_run(experiment="processes", name=sys.argv[2]) as run:
    run.log_params({"worker": sys.argv[2]})
    for i in range(int(sys.argv[3])):
        run.log_metric("loss", 1.0 / (i + 1))
print("RUN", run.id)
"""


@pytest.mark.server
def test_processes_logging_to_one_server_lose_nothing(tmp_path: Path, mlflow_server: str) -> None:
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(PROCESS))
    points, count = 4000, 3
    procs = []
    for n in range(count):
        workdir = tmp_path / f"w{n}"
        workdir.mkdir()
        command = [sys.executable, str(script), mlflow_server, f"w{n}", str(points)]
        procs.append(subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, text=True))
    run_ids = [p.communicate(timeout=700)[0].split("RUN ")[1].split()[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    for n, run_id in enumerate(run_ids):
        assert _steps(client, run_id, "loss") == list(range(points))
        assert client.get_run(run_id).data.params == {"worker": f"w{n}"}
        assert client.get_run(run_id).info.status == "FINISHED"


def test_memory_stays_bounded_by_spilling_to_the_journal(sqlite_uri: str, mlflow_client) -> None:  # type: ignore[no-untyped-def]
    bound = 50
    tracker = trackkit.get_tracker(
        "mlflow", tracking_uri=sqlite_uri, memory_bound=bound, flush_interval=3600
    )
    with tracker.start_run(experiment="bounded") as run:
        largest = 0
        for i in range(2000):
            run.log_metric("m", float(i))
            largest = max(largest, run.outbox.queued())
        assert largest < 2 * bound  # the rest is on disk, not in memory
        assert run.journal.count() > 0
    assert _steps(mlflow_client, run.id, "m") == list(range(2000))


def test_deferred_operations_are_replayed_by_sync(mlflow_tracker, mlflow_client) -> None:  # type: ignore[no-untyped-def]
    pipeline, _ = _fitted_pipeline()
    with mlflow_tracker.start_run(experiment="deferred") as run:
        ref = run.log_model(pipeline)
    mlflow_tracker.register_model(ref, "ride")
    path = mlflow_tracker.defer("set_model_alias", name="ride", alias="production", version=1)
    mlflow_tracker.defer("update_model_version", name="ride", version=1, description="from sync")
    mlflow_tracker.close()
    assert mlflow_client.get_registered_model("ride").aliases == {}  # not applied yet

    [result] = trackkit.sync()
    assert (result.kind, result.outcome, result.operations) == ("deferred", "delivered", 2)
    assert mlflow_client.get_registered_model("ride").aliases == {"production": 1}
    assert mlflow_client.get_model_version("ride", "1").description == "from sync"
    assert not path.exists()
    assert trackkit.sync() == []


def test_defer_refuses_what_is_not_a_tracker_call(mlflow_tracker) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(trackkit.InvalidInput, match="only these registry calls can be deferred"):
        mlflow_tracker.defer("_latest", name="x")
    with pytest.raises(trackkit.InvalidInput, match="cannot be written as JSON"):
        mlflow_tracker.defer("set_model_alias", name=object())


def test_sync_skips_a_journal_whose_process_is_alive(mlflow_tracker) -> None:  # type: ignore[no-untyped-def]
    run = mlflow_tracker.start_run(experiment="live")
    run.log_metric("m", 1.0)
    results = trackkit.sync()
    assert [(r.outcome, r.path) for r in results] == [("live", run.journal.path)]
    run.end()
    assert trackkit.sync() == []


def test_a_journal_is_a_sqlite_file_of_plain_data_chunks(mlflow_tracker) -> None:  # type: ignore[no-untyped-def]
    """The journal is sqlite; operations are pickled chunks of plain tuples, numbered in order."""
    import pickle
    import sqlite3

    tracker = trackkit.get_tracker(
        "mlflow", tracking_uri=mlflow_tracker.backend.tracking_uri, flush_interval=3600
    )
    run = tracker.start_run(experiment="inspect")
    run.log_metric("m", 2.5, step=4)
    run.log_metric("m", float("nan"), step=5)
    run.outbox.to_journal()
    db = sqlite3.connect(run.journal.path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == jn.FORMAT
    ops = [op for (blob,) in db.execute("SELECT ops FROM chunks") for op in pickle.loads(blob)]
    assert ops[-2] == (jn.METRIC, "m", 2.5, 4, ops[-2][4], None)
    assert ops[-1][:2] == (jn.METRIC, "m") and ops[-1][2] != ops[-1][2]  # NaN kept as NaN
    run.end()


def test_sync_replays_only_the_backend_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    tracker = trackkit.get_tracker("mlflow", tracking_uri="http://127.0.0.1:9", end_timeout=1)
    with pytest.warns(trackkit.TrackkitWarning):
        run = tracker.start_run(experiment="unreachable")
        run.log_metric("m", 1.0)
        run.end()
    tracker.close()
    assert trackkit.sync(backend="example") == []  # another backend's journal is left alone
    assert run.journal.path.exists()
    # the journal names a server this configuration (the default sqlite store) does not select
    [result] = trackkit.sync(backend="mlflow")
    assert result.outcome == "refused" and "tracking_uri=http://127.0.0.1:9" in (result.error or "")
    [result] = trackkit.sync(backend="mlflow", tracking_uri="http://127.0.0.1:9")
    assert result.outcome == "failed" and "127.0.0.1:9" in (result.error or "")
    assert run.journal.path.exists()  # nothing lost: still there for a later sync
