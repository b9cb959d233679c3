"""`trackkit sync` against journals it must not trust, and syncs that race: real
`python -m trackkit sync` processes, a real `mlflow server`, a server that records what it is
sent, real files. What reached MLflow is read back through MLflow's own client."""

from __future__ import annotations

import base64
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import trackkit
from trackkit import journal as jn

mlflow = pytest.importorskip("mlflow")

SECRET = "s3cret-Pa55"


def _journal(
    root: Path, meta: dict[str, Any], ops: list[jn.Entry], kind: str = "local"
) -> jn.Journal:
    """A journal as a process leaves it: ``root`` is the trackkit directory."""
    name = f"{kind}-{uuid.uuid4().hex}"
    journal = jn.Journal.create(jn.journal_dir(root), name, meta)
    journal.append(ops)
    return journal


def _run_meta(uri: str, experiment: str, name: str | None = None) -> dict[str, Any]:
    return {
        "run_id": None,  # started while the server was unreachable
        "experiment": experiment,
        "name": name,
        "backend": "mlflow",
        "options": {"tracking_uri": uri, "registry_uri": uri},
    }


def _points(n: int, key: str = "loss") -> list[jn.Entry]:
    return [(jn.METRIC, key, float(i), i, 1_700_000_000_000 + i, None) for i in range(n)]


def _env(**values: str) -> dict[str, str]:
    """The environment of a user's shell: no MLflow settings but those given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TRACKKIT_"))}
    env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    return {**env, **values}


def _sync(
    cwd: Path, *args: str, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "trackkit", "sync", *args],
        cwd=cwd,
        env=env if env is not None else _env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _lines(stdout: str) -> dict[str, str]:
    """The command's lines by journal name (the first line is the header)."""
    return {line.split()[0]: line for line in stdout.splitlines()[1:]}


def _steps(client, run_id: str, key: str = "loss") -> list[int]:  # type: ignore[no-untyped-def]
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def _runs(client, experiment: str) -> list[Any]:  # type: ignore[no-untyped-def]
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])


# -- concurrent syncs ------------------------------------------------------------------------------
@pytest.mark.server
@pytest.mark.parametrize("round_", [1, 2])
def test_concurrent_syncs_each_exit_0_and_deliver_everything_once(
    tmp_path: Path, mlflow_server: str, round_: int
) -> None:
    experiment = f"concurrent-{uuid.uuid4().hex[:8]}"
    journals, points = 8, 300  # the race is in locking and deleting files, not in volume
    for n in range(journals):
        _journal(
            tmp_path / ".trackkit", _run_meta(mlflow_server, experiment, f"r{n}"), _points(points)
        ).close()
    env = _env(MLFLOW_TRACKING_URI=mlflow_server)
    command = [sys.executable, "-m", "trackkit", "sync"]
    syncs = [
        subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=900) for p in syncs]  # three processes on a busy machine
    for proc, (out, err) in zip(syncs, outputs, strict=True):
        assert proc.returncode == 0, f"{out}\n{err}"
        assert "Traceback" not in err
    lines = [line for out, _ in outputs for line in _lines(out).values()]
    assert all(line.startswith("local-") for line in lines), lines  # one line per journal
    delivered = [line for line in lines if " delivered " in line]
    assert len(delivered) == journals  # each journal delivered by exactly one of them
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    runs = _runs(client, experiment)
    assert sorted(r.info.run_name for r in runs) == [f"r{n}" for n in range(journals)]
    for run in runs:
        assert _steps(client, run.info.run_id) == list(range(points))  # each point once
        assert run.info.status == "KILLED"
    assert sorted(os.listdir(jn.journal_dir(tmp_path / ".trackkit"))) == []  # nothing recreated
    later = _sync(tmp_path, env=env)
    assert (later.returncode, later.stdout) == (0, "nothing to sync\n"), later.stderr


# -- a journal sync cannot update ------------------------------------------------------------------
def _without_root_override() -> tuple[str, ...]:
    """A prefix that runs a command as this user without root's permission override."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("as root, a read-only file needs setpriv to stay read-only")
    return ("setpriv", "--bounding-set=-dac_override,-dac_read_search")


@pytest.mark.server
@pytest.mark.parametrize("what", ["file", "directory"])
def test_a_journal_sync_cannot_update_is_refused_and_never_replayed(
    tmp_path: Path, mlflow_server: str, what: str
) -> None:
    prefix = _without_root_override()
    experiment = f"read-only-{uuid.uuid4().hex[:8]}"
    journal = _journal(tmp_path / ".trackkit", _run_meta(mlflow_server, experiment), _points(50))
    journal.close()
    directory = journal.path.parent
    if what == "file":
        for path in directory.iterdir():
            path.chmod(0o444)
    else:
        directory.chmod(0o555)
    try:
        env = _env(MLFLOW_TRACKING_URI=mlflow_server)
        for _ in range(3):
            done = _sync(tmp_path, env=env, prefix=prefix)
            assert done.returncode == 3, done.stdout + done.stderr
            line = _lines(done.stdout)[journal.path.name]
            assert line.split()[3] == "refused"
            assert "read-only" in line and "sync would replay it again every time" in line
    finally:
        directory.chmod(0o700)
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    assert _runs(client, experiment) == []  # not one run created, let alone three
    for path in directory.iterdir():
        path.chmod(0o600)
    done = _sync(tmp_path, env=env)  # writable again: delivered once
    assert done.returncode == 0 and " delivered " in done.stdout, done.stdout + done.stderr
    [run] = _runs(client, experiment)
    assert _steps(client, run.info.run_id) == list(range(50))


# -- addresses and credentials --------------------------------------------------------------------
class _Recorder(http.server.ThreadingHTTPServer):
    """A server that records every request's method, path and headers, and fails them."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []

        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self) -> None:
                recorder.requests.append((self.command, self.path, dict(self.headers)))
                body = b'{"error_code": "INTERNAL_ERROR", "message": "recorded"}'
                self.send_response(500)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_DELETE = _any

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def recorder() -> Iterator[_Recorder]:
    server = _Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.server
def test_a_journal_naming_another_server_is_refused_and_never_gets_credentials(
    tmp_path: Path, mlflow_server: str, recorder: _Recorder
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    netrc = home / ".netrc"  # credentials a client may pick up for 127.0.0.1 by itself
    netrc.write_text(f"machine 127.0.0.1 login netrc-user password {SECRET}-netrc\n")
    netrc.chmod(0o600)
    env = _env(
        HOME=str(home),
        MLFLOW_TRACKING_URI=mlflow_server,
        MLFLOW_TRACKING_USERNAME="alice",
        MLFLOW_TRACKING_PASSWORD=SECRET,
    )
    mine, theirs = f"mine-{uuid.uuid4().hex[:8]}", f"theirs-{uuid.uuid4().hex[:8]}"
    own = _journal(tmp_path / ".trackkit", _run_meta(mlflow_server, mine), _points(20))
    foreign = _journal(tmp_path / ".trackkit", _run_meta(recorder.url, theirs), _points(20))
    own.close()
    foreign.close()

    done = _sync(tmp_path, env=env)
    assert done.returncode == 3, done.stdout + done.stderr  # one refused, nothing failed
    lines = _lines(done.stdout)
    assert lines[own.path.name].split()[3] == "delivered"  # the user's own server: replayed
    refused = lines[foreign.path.name]
    assert refused.split()[3] == "refused"
    assert f"it names tracking_uri={recorder.url}, registry_uri={recorder.url}" in refused
    assert f"your configuration selects tracking_uri={mlflow_server}" in refused
    assert "--trust-journal-address" in refused
    assert recorder.requests == []  # nothing at all went to the journal's address
    assert foreign.path.exists()  # left for the user to decide
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    assert _runs(client, theirs) == []  # nor was it sent to the user's server instead
    [run] = _runs(client, mine)
    assert _steps(client, run.info.run_id) == list(range(20))

    trusted = _sync(tmp_path, "--trust-journal-address", env=env)
    assert recorder.requests, "the trusted address was not tried"
    assert f"to tracking_uri={recorder.url}" in trusted.stderr  # shown before replaying
    secrets = (SECRET, base64.b64encode(f"alice:{SECRET}".encode()).decode(), "netrc-user")
    for method, path, headers in recorder.requests:
        assert "Authorization" not in headers, (method, path)
        assert not any(s in value for s in secrets for value in headers.values())
    assert trusted.returncode == 1  # the recorder fails every request: kept for later
    assert _lines(trusted.stdout)[foreign.path.name].split()[3] == "failed"
    assert foreign.path.exists()


@pytest.mark.server
def test_the_users_own_address_given_with_o_is_replayed(tmp_path: Path, mlflow_server: str) -> None:
    experiment = f"own-{uuid.uuid4().hex[:8]}"
    meta = _run_meta(mlflow_server, experiment)
    # credentials a journal names are never used (trackkit records none)
    meta["options"]["tracking_token"] = "the journal author's"
    _journal(tmp_path / ".trackkit", meta, _points(5)).close()
    done = _sync(tmp_path, "-o", f"tracking_uri={mlflow_server}/")  # a trailing / is the same
    assert done.returncode == 0, done.stdout + done.stderr
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    [run] = _runs(client, experiment)
    assert _steps(client, run.info.run_id) == list(range(5))


# -- artifacts only from the journal's own folder --------------------------------------------------
def test_artifact_operations_upload_only_the_journals_own_copies(
    tmp_path: Path, sqlite_uri: str, mlflow_client: Any
) -> None:
    secret = tmp_path / "secret"
    (secret / "ssh").mkdir(parents=True)
    (secret / "ssh" / "id_rsa").write_text("PRIVATE KEY")
    (tmp_path / "report.txt").write_text("mine")
    journal = _journal(tmp_path / ".trackkit", _run_meta(sqlite_uri, "artifacts"), _points(3))
    kept = journal.keep(tmp_path / "report.txt")
    (journal.files_dir() / "link").mkdir()
    (journal.files_dir() / "link" / "id_rsa").symlink_to(secret / "ssh" / "id_rsa")
    journal.append(
        [
            (jn.ARTIFACT, "docs", None, None, None, kept),
            (jn.ARTIFACT, "stolen", None, None, None, str(secret / "ssh" / "id_rsa")),
            (jn.ARTIFACT, "stolen", None, None, None, "../../../secret/ssh/id_rsa"),
            (jn.ARTIFACT, "stolen", None, None, None, "link/id_rsa"),
            (jn.TAG, "after", None, None, None, "still delivered"),
        ]
    )
    journal.close()

    [result] = trackkit.sync(tracking_uri=sqlite_uri)
    assert result.outcome == "delivered"
    assert result.error == f"3 operations refused, kept in {journal.path.name}.rejected"
    run = mlflow_client.get_run(result.run_id)
    assert run.data.tags["after"] == "still delivered"
    assert [a.path for a in mlflow_client.list_artifacts(result.run_id)] == ["docs"]
    assert [a.path for a in mlflow_client.list_artifacts(result.run_id, "docs")] == [
        "docs/report.txt"
    ]
    assert (secret / "ssh" / "id_rsa").read_text() == "PRIVATE KEY"  # not deleted
    kept_aside = jn.Journal(Path(f"{journal.path}.rejected"), own=False)
    reasons = [reason for _, reason in kept_aside.rejected()]
    kept_aside.close()
    assert [r.split(" is ")[-1] for r in reasons] == [
        f"not inside {journal.files_dir()}",
        f"not inside {journal.files_dir()}",
        "a link or not yours",
    ]


# -- deferred calls: an allow-list, and no model is ever loaded ------------------------------------
LOUD_MODEL = """
import sys
import mlflow

class Loud(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        open({marker!r}, "w").write("the model's code ran")

    def predict(self, context, model_input):
        return model_input

mlflow.set_tracking_uri(sys.argv[1])
with mlflow.start_run():
    # pinned requirements: MLflow would otherwise load the model to infer them
    info = mlflow.pyfunc.log_model(name="model", python_model=Loud(), pip_requirements=["mlflow"])
print(info.model_uri)
"""


def test_a_journals_run_times_are_kept_when_sound_and_ignored_otherwise(
    tmp_path: Path, sqlite_uri: str, mlflow_client: Any
) -> None:
    """A run created by sync keeps its start and end times from the journal; a time that is
    not a whole number of ms a store can hold (planted, or damaged) is ignored, not sent."""
    start, end = 1_700_000_000_000, 1_700_000_100_000
    cases = {
        "sound": (start, end),
        "text": ("soon", end),
        "huge": (2**70, 2**70),
        "negative": (-5, -5),
        "flag": (True, None),
    }
    for name, (started, ended) in cases.items():
        meta = {**_run_meta(sqlite_uri, "times", name), "started": started}
        _journal(
            tmp_path / ".trackkit",
            meta,
            [*_points(2), (jn.END, None, None, None, ended, "FINISHED")],
        ).close()
    before = int(time.time() * 1000)
    results = trackkit.sync(tracking_uri=sqlite_uri)
    assert sorted(r.outcome for r in results) == ["delivered"] * len(cases)
    runs = {r.info.run_name: r.info for r in _runs(mlflow_client, "times")}
    assert (runs["sound"].start_time, runs["sound"].end_time) == (start, end)
    assert runs["text"].start_time >= before and runs["text"].end_time == end
    for name in ("huge", "negative", "flag"):
        assert runs[name].start_time >= before and runs[name].end_time >= before, name
        assert runs[name].status == "FINISHED"


def test_deferred_replay_runs_only_registry_calls_and_never_loads_a_model(
    tmp_path: Path, sqlite_uri: str, mlflow_client: Any
) -> None:
    marker = tmp_path / "code-ran"
    script = tmp_path / "loud.py"
    script.write_text(LOUD_MODEL.format(marker=str(marker)))
    logged = subprocess.run(
        [sys.executable, str(script), sqlite_uri],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert logged.returncode == 0, logged.stderr
    model_uri = logged.stdout.split()[-1]
    assert not marker.exists()
    meta = {"kind": "deferred", "backend": "mlflow", "options": {"tracking_uri": sqlite_uri}}
    calls = [
        ("load_model", {"uri": model_uri}),
        ("register_model", {"source": model_uri, "name": "loud", "description": None}),
        ("_latest", {"name": "loud"}),
        ("set_model_alias", {"name": "loud", "alias": "production", "version": 1}),
        ("set_model_alias", {"name": "loud", "bogus": 1}),
    ]
    ops = [(jn.DEFERRED, name, None, None, None, json.dumps(args)) for name, args in calls]
    journal = _journal(tmp_path / ".trackkit", meta, ops, kind="deferred")
    journal.close()

    done = _sync(tmp_path, env=_env(MLFLOW_TRACKING_URI=sqlite_uri))
    assert done.returncode == 0, done.stdout + done.stderr
    line = _lines(done.stdout)[journal.path.name]
    assert line.split()[3:5] == ["delivered", "2"]
    assert f"3 operations refused, kept in {journal.path.name}.rejected" in line
    assert not marker.exists(), "replaying the journal ran the model's code"
    assert mlflow_client.get_registered_model("loud").aliases == {"production": 1}
    aside = jn.Journal(Path(f"{journal.path}.rejected"), own=False)
    refused = [(row[2], reason) for row, reason in aside.rejected()]
    aside.close()
    assert [name for name, _ in refused] == ["load_model", "_latest", "set_model_alias"]
    assert "is not a registry call trackkit defers" in refused[0][1]
    assert refused[2][1].startswith("TypeError")
    mlflow.pyfunc.load_model(model_uri)  # the check can fail: loading it does run its code
    assert marker.exists()


# -- modes of what a real run leaves behind --------------------------------------------------------
def test_a_real_runs_journal_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    previous = os.umask(0o022)
    try:
        tracker = trackkit.get_tracker("mlflow", tracking_uri="http://127.0.0.1:9", end_timeout=1)
        with pytest.warns(trackkit.TrackkitWarning):
            run = tracker.start_run(experiment="unreachable")
            for i in range(100):
                run.log_metric("m", float(i))
            run.flush()
            modes = {
                p.name: oct(p.stat().st_mode & 0o777)
                for p in (tmp_path / ".trackkit").rglob("*")
                if p.suffix != ".files" and ".files" not in p.parts[-2:-1]
            }
            run.end()
        tracker.close()
    finally:
        os.umask(previous)
    name = run.journal.path.name
    assert oct((tmp_path / ".trackkit").stat().st_mode & 0o777) == "0o700"
    assert {k: v for k, v in modes.items() if k.startswith((name, "journal"))} == {
        "journal": "0o700",
        name: "0o600",
        f"{name}-wal": "0o600",
        f"{name}-shm": "0o600",
        f"{name}.lock": "0o600",
    }
