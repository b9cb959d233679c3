"""Real faults against a real `mlflow server`: it dies mid-run, it is down for a whole run,
and the training process is terminated or killed. MLflow's client must then show every point
exactly once and the run's final status."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import trackkit
from conftest import _free_port, start_mlflow_server
from conftest import stop_mlflow_server as _stop

mlflow = pytest.importorskip("mlflow")
pytestmark = pytest.mark.server


def _steps(client, run_id: str, key: str) -> list[int]:  # type: ignore[no-untyped-def]
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_server_dies_mid_run_and_comes_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = _free_port()
    server, url = start_mlflow_server(tmp_path, port)
    # end() waits until the restarted server took everything: minutes on a loaded machine
    tracker = trackkit.get_tracker("mlflow", tracking_uri=url, flush_interval=0.2, end_timeout=600)
    restarted: list[subprocess.Popen[bytes]] = []
    restart = threading.Thread(
        target=lambda: restarted.append(start_mlflow_server(tmp_path, port)[0])
    )
    worst, points = 0.0, 600
    try:
        warned = pytest.warns(trackkit.TrackkitWarning, match="backend failed")
        with warned, tracker.start_run(experiment="outage") as run:
            run.log_params({"model": {"alpha": 0.5}})
            for i in range(points):
                if i == 200:
                    _stop(server)  # the service dies mid-run
                if i == 300:
                    restart.start()  # and comes back while training goes on
                started = time.perf_counter()
                run.log_metric("loss", 1.0 / (i + 1))
                run.log_metric("acc", i / points, step=i)
                worst = max(worst, time.perf_counter() - started)
                time.sleep(0.01)
            restart.join()
        assert "backend failed" in caplog.text  # the outage was recorded
        client = mlflow.MlflowClient(tracking_uri=url)
        assert _steps(client, run.id, "loss") == list(range(points))  # each point exactly once
        assert _steps(client, run.id, "acc") == list(range(points))
        assert client.get_run(run.id).info.status == "FINISHED"
        assert client.get_run(run.id).data.params == {"model.alpha": "0.5"}
        assert not run.journal.path.exists()
        print(f"\nworst log_metric call during the outage: {worst * 1000:.2f} ms")
        # the loop never waited on the network (MLflow's own retries take seconds)
        assert worst < 1.0
    finally:
        tracker.close()
        for proc in restarted:
            _stop(proc)


def test_server_down_for_the_whole_run_then_sync(tmp_path: Path) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    (tmp_path / "notes.txt").write_text("kept")
    tracker = trackkit.get_tracker("mlflow", tracking_uri=url, flush_interval=0.2, end_timeout=2)
    before_start = int(time.time() * 1000)
    with pytest.warns(trackkit.TrackkitWarning) as warned:
        run = tracker.start_run(experiment="offline", name="while-down", tags={"team": "a"})
        with run:
            run.log_params({"lr": 0.1})
            for i in range(250):
                run.log_metric("loss", float(i))
            run.log_artifact(tmp_path / "notes.txt", "docs")
    ended = int(time.time() * 1000)
    tracker.close()
    assert run.id.startswith("local-")
    assert any("trackkit sync" in str(w.message) for w in warned)
    assert run.journal.path.exists()

    (tmp_path / "srv").mkdir()
    server, _ = start_mlflow_server(tmp_path / "srv", port)
    try:
        results = trackkit.sync(tracking_uri=url)  # the address the journal names: replayed
        assert [(r.kind, r.outcome) for r in results] == [("run", "delivered")]
        client = mlflow.MlflowClient(tracking_uri=url)
        [found] = client.search_runs([client.get_experiment_by_name("offline").experiment_id])
        assert found.info.run_id == results[0].run_id
        assert found.info.status == "FINISHED" and found.info.run_name == "while-down"
        # the run keeps the times it had in the training process, not the time of the sync
        assert before_start <= found.info.start_time <= found.info.end_time <= ended
        assert found.data.params == {"lr": "0.1"} and found.data.tags["team"] == "a"
        assert _steps(client, found.info.run_id, "loss") == list(range(250))
        assert [a.path for a in client.list_artifacts(found.info.run_id, "docs")] == [
            "docs/notes.txt"
        ]
        assert not run.journal.path.exists()
        assert trackkit.sync(tracking_uri=url) == []  # replaying again sends nothing twice
        assert _steps(client, found.info.run_id, "loss") == list(range(250))
    finally:
        _stop(server)


def test_a_run_started_while_the_server_is_down_takes_a_model_once_it_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit([[0.0], [1.0], [2.0]], [0.0, 1.0, 2.0])
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    tracker = trackkit.get_tracker("mlflow", tracking_uri=url, flush_interval=0.2, end_timeout=600)
    server = None
    try:
        with pytest.warns(trackkit.TrackkitWarning, match="backend failed"):
            run = tracker.start_run(experiment="late", name="started-while-down")
        provisional = run.id
        assert provisional.startswith("local-")
        # a round with nothing to send is no sign that the service answered
        assert run.flush(timeout=60)
        assert "reachable again" not in caplog.text
        for i in range(50):
            run.log_metric("loss", float(i))
        with pytest.raises(trackkit.BackendError, match="exists only locally"):
            run.log_model(model, "model")  # the service is still down: a clear refusal
        server, _ = start_mlflow_server(tmp_path / "srv", port)
        ref = run.log_model(model, "model")  # the run is created first, then takes the model
        assert not run.id.startswith("local-") and run.id != provisional
        run.end()
        assert caplog.text.count("reachable again") == 1
        client = mlflow.MlflowClient(tracking_uri=url)
        found = client.get_run(run.id)
        assert found.info.run_name == "started-while-down" and found.info.status == "FINISHED"
        assert _steps(client, run.id, "loss") == list(range(50))
        [logged] = client.search_logged_models(
            experiment_ids=[found.info.experiment_id], filter_string=f"source_run_id='{run.id}'"
        )
        assert logged.name == "model"
        assert tracker.load_model(ref).predict([[3.0]])[0] == pytest.approx(3.0)
    finally:
        tracker.close()
        if server is not None:
            _stop(server)


TRAINING = """
import faulthandler, signal, sys, time, trackkit
faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test's stack dump if it hangs
# on SIGTERM, the run ends once the server took everything: minutes on a loaded machine
tracker = trackkit.get_tracker(
    "mlflow", tracking_uri=sys.argv[1], flush_interval=0.2, end_timeout=600
)
run = tracker.start_run(experiment="signals")
print(run.id, flush=True)
for i in range(int(sys.argv[2])):
    run.log_metric("loss", float(i))
# what the journal thread does every flush_interval, done now, so the test does not depend on
# a busy machine scheduling that thread before the kill
run.outbox.to_journal()
print("logged", flush=True)
time.sleep(600)
"""


def _training(tmp_path: Path, url: str, points: int) -> tuple[subprocess.Popen[str], str]:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(TRAINING))
    proc = subprocess.Popen(
        [sys.executable, str(script), url, str(points)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "stderr.txt").open("w"),  # a file: a pipe could fill and block it
        text=True,
    )
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    assert proc.stdout.readline().strip() == "logged"
    return proc, run_id


def test_sigterm_flushes_and_ends_killed(tmp_path: Path, mlflow_server: str) -> None:
    proc, run_id = _training(tmp_path, mlflow_server, 3000)
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=660)  # end_timeout, and then some
    except subprocess.TimeoutExpired:  # keep the evidence: every thread's stack
        proc.send_signal(signal.SIGUSR1)
        time.sleep(2)
        proc.kill()
        pytest.fail("no exit 660 s after SIGTERM:\n" + (tmp_path / "stderr.txt").read_text())
    assert code == -signal.SIGTERM  # the process exits as it would have
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    assert client.get_run(run_id).info.status == "KILLED"
    assert _steps(client, run_id, "loss") == list(range(3000))


def test_sigkill_then_sync_sends_the_rest(tmp_path: Path, mlflow_server: str) -> None:
    proc, run_id = _training(tmp_path, mlflow_server, 10000)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    assert client.get_run(run_id).info.status == "RUNNING"
    done = subprocess.run(
        [sys.executable, "-m", "trackkit", "sync", "-o", f"tracking_uri={mlflow_server}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "delivered" in done.stdout
    assert client.get_run(run_id).info.status == "KILLED"
    assert _steps(client, run_id, "loss") == list(range(10000))
