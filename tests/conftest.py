"""Shared fixtures: real MLflow stores (sqlite, and a real `mlflow server` on 127.0.0.1)."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import trackkit
from trackkit import plugins
from trackkit.writer import Writer


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Each test runs in its own directory with no trackkit or MLflow settings inherited."""
    for var in (
        "TRACKKIT_BACKEND",
        "TRACKKIT_EXPERIMENT",
        "TRACKKIT_DISABLE_PLUGINS",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_REGISTRY_URI",
        "TRACKKIT_OFFLINE",
        "TRACKKIT_STRICT",
        "TRACKKIT_DIR",
        "NEPTUNE_PROJECT",
        "NEPTUNE_API_TOKEN",
        "NEPTUNE_MODE",
        "NEPTUNE_DATA_DIRECTORY",
        "WANDB_MODE",
        "WANDB_API_KEY",
    ):
        monkeypatch.delenv(var, raising=False)
    # MLflow's clients (the tests' readers, trackkit's sender, scripts the tests start) wait
    # this long for a server's answer: a loaded machine's single-worker server can take longer
    # than trackkit's default 30 s to read back thousands of points
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "300")
    monkeypatch.chdir(tmp_path)
    plugins.reset()
    trackkit.set_tracker(None)
    yield
    trackkit.set_tracker(None)
    plugins.reset()


@pytest.fixture(autouse=True)
def _stop_writers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Stop the background threads of every tracker a test left open.

    A tracker's journal and sender threads wake every ``flush_interval`` (tests use 1 ms) and
    retry an unreachable backend until the process ends: left running, hundreds of them kept a
    worker busy for the whole session (half a core each, measured), slowing every later test.
    """
    made: list[Writer] = []
    original = Writer.__init__

    @functools.wraps(original)
    def record(self: Writer, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(Writer, "__init__", record)
    yield
    for writer in made:
        with warnings.catch_warnings(), contextlib.suppress(Exception):
            warnings.simplefilter("ignore")  # lost-operation reports of an abandoned tracker
            writer.stop(timeout=2)


def neptune_offline_run(project: Path, code: str, *args: str) -> Path:
    """Run ``code`` (plain neptune client code, given ``args`` as ``sys.argv[1:]``) in
    ``project`` in Neptune's offline mode; the folder of the one offline run it wrote."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=project,
        env={**os.environ, "NEPTUNE_MODE": "offline"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [run_dir] = (project / ".neptune" / "offline").iterdir()
    return run_dir


@pytest.fixture(scope="session")
def _template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow database, created once (migrations take seconds)."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def sqlite_uri(_template_db: Path, tmp_path: Path) -> str:
    """A fresh sqlite tracking URI in this test's directory."""
    path = tmp_path / "mlflow.db"
    shutil.copy(_template_db, path)
    return f"sqlite:///{path}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: how long a server may take to answer /health: minutes on a loaded 2-core machine, seconds
#: on an idle one (each test's total time is bounded by pytest-timeout, see pyproject.toml)
SERVER_START_TIMEOUT = float(os.environ.get("TRACKKIT_TEST_SERVER_TIMEOUT", "300"))


class ServerStartError(RuntimeError):
    """An `mlflow server` exited or did not become healthy; the message holds its log."""


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _log_tail(workdir: Path, chars: int = 3000) -> str:
    try:
        return (workdir / "server.log").read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def start_mlflow_server(
    workdir: Path, port: int | None = None, timeout: float | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Start `mlflow server` on 127.0.0.1 with a sqlite store in ``workdir``; wait for /health.

    Waits while the process lives, up to ``timeout`` (default ``SERVER_START_TIMEOUT``). Without
    a given ``port``, a server that exits at once (its free port taken meanwhile) is started
    once more on another port.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    attempts = 1 if port is not None else 2
    for attempt in range(attempts):
        try:
            return _start_once(workdir, port or _free_port(), timeout or SERVER_START_TIMEOUT)
        except ServerStartError as e:
            if attempt + 1 == attempts or "did not become healthy" in str(e):
                raise
    raise AssertionError("unreachable")


def _start_once(workdir: Path, port: int, timeout: float) -> tuple[subprocess.Popen[bytes], str]:
    db = workdir / "server.db"
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{db}",
        "--artifacts-destination", str(workdir / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    # MLflow 3's job execution (GenAI evaluation, trace rollups) starts a job runner and seven
    # huey consumers, each importing mlflow: tens of CPU seconds a server that trackkit never
    # uses, and minutes of start-up on a loaded machine
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(workdir / "server.log", "ab")  # noqa: SIM115 - the child keeps its own copy
    # its own process group, so stopping it stops its workers too
    proc = subprocess.Popen(
        cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    pause = 0.05
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise ServerStartError(
                f"mlflow server on port {port} exited with status {proc.returncode} after "
                f"{time.monotonic() - started:.0f} s:\n{_log_tail(workdir)}"
            )
        if healthy(url):
            return proc, url
        time.sleep(pause)  # polling a condition: a short pause, growing to 1 s
        pause = min(pause * 2, 1.0)
    stop_mlflow_server(proc)
    raise ServerStartError(
        f"mlflow server on port {port} did not become healthy within {timeout:.0f} s "
        f"(TRACKKIT_TEST_SERVER_TIMEOUT):\n{_log_tail(workdir)}"
    )


def stop_mlflow_server(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Stop the server and every worker it started."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


class SharedServer:
    """One `mlflow server` shared by a session's tests, started when a test first needs it.

    A start that fails is not remembered: it fails the test that asked, and the next test that
    needs the server starts it again (a session-scoped fixture would re-raise one slow start
    for every test). A server that exited is started again too.
    """

    def __init__(self, workdirs: pytest.TempPathFactory, timeout: float | None = None) -> None:
        self._workdirs = workdirs
        self._proc: subprocess.Popen[bytes] | None = None
        self._url = ""
        self.timeout = timeout  # seconds a start may take (None: SERVER_START_TIMEOUT)

    def url(self) -> str:
        if self._proc is not None and self._proc.poll() is None:
            return self._url
        self.stop()
        workdir = self._workdirs.mktemp("mlflow-server")
        self._proc, self._url = start_mlflow_server(workdir, timeout=self.timeout)
        return self._url

    def stop(self) -> None:
        if self._proc is not None:
            proc, self._proc = self._proc, None
            stop_mlflow_server(proc, signal.SIGTERM)


@pytest.fixture(scope="session")
def _shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedServer]:
    server = SharedServer(tmp_path_factory)
    yield server
    server.stop()


@pytest.fixture
def mlflow_server(_shared_server: SharedServer) -> str:
    """The URL of a real `mlflow server` subprocess, shared by the session's tests."""
    pytest.importorskip("mlflow")
    return _shared_server.url()


@pytest.fixture
def mlflow_tracker(sqlite_uri: str) -> trackkit.Tracker:
    """A Tracker on a fresh sqlite store."""
    return trackkit.get_tracker("mlflow", tracking_uri=sqlite_uri)


@pytest.fixture
def mlflow_client(sqlite_uri: str):  # type: ignore[no-untyped-def]
    """MLflow's own client on the same store as ``mlflow_tracker``: the reader tests trust."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=sqlite_uri)


def pytest_report_header() -> str:
    return f"trackkit backends: {', '.join(trackkit.available_backends()) or 'none'}; cwd isolated per test; pid {os.getpid()}"
