"""Shared fixtures: real MLflow stores (sqlite, and a real `mlflow server` on 127.0.0.1)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import trackkit
from trackkit import plugins


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
    monkeypatch.chdir(tmp_path)
    plugins.reset()
    trackkit.set_tracker(None)
    yield
    trackkit.set_tracker(None)
    plugins.reset()


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


def start_mlflow_server(
    workdir: Path, port: int | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Start `mlflow server` on 127.0.0.1 with a sqlite store in ``workdir``; wait for /health."""
    port = port or _free_port()
    db = workdir / "server.db"
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{db}",
        "--artifacts-destination", str(workdir / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    log = open(workdir / "server.log", "ab")  # noqa: SIM115 - the child keeps its own copy
    # its own process group, so stopping it stops its workers too
    proc = subprocess.Popen(
        cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"mlflow server exited: {(workdir / 'server.log').read_text()[-2000:]}"
            )
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.5)
    stop_mlflow_server(proc)
    raise RuntimeError("mlflow server did not become healthy within 120 s")


def stop_mlflow_server(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Stop the server and every worker it started."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a real `mlflow server` subprocess, shared by the session's tests."""
    pytest.importorskip("mlflow")
    workdir = tmp_path_factory.mktemp("mlflow-server")
    proc, url = start_mlflow_server(workdir)
    yield url
    stop_mlflow_server(proc, signal.SIGTERM)


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
