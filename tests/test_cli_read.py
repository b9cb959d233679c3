"""``trackkit runs``, ``compare`` and ``history`` against a real MLflow sqlite store.

The commands run for real (``cli.main``, and the installed ``trackkit`` command in a
subprocess, on a pipe and on a pseudo-terminal); what they print is checked against what
MLflow's own client reads from the same store.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import os
import pty
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import trackkit
from trackkit.cli import main

pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient

EXPERIMENT = "cli-read"
ANSI = re.compile(r"\x1b\[")
BOX = re.compile("[─━│┃┏┓┗┛╭╮╰╯]")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, _template_db: Path) -> Iterator[dict[str, Any]]:
    """Three finished runs and a child, logged with trackkit into a sqlite store."""
    root = tmp_path_factory.mktemp("cli-read")
    shutil.copy(_template_db, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    tracker = trackkit.get_tracker("mlflow", tracking_uri=uri, journal_dir=root / ".trackkit")
    ids: dict[str, str] = {}
    try:
        for name, model, alpha, rmse in (
            ("lasso-1", "lasso", 0.1, 7.25),
            ("ridge-1", "ridge", 1.0, 6.5),
            ("lasso-2", "lasso", 0.5, math.nan),
        ):
            with tracker.start_run(experiment=EXPERIMENT, name=name, tags={"dev": "ana"}) as run:
                run.log_params({"model": model, "alpha": alpha})
                for step in range(4):
                    run.log_metric("rmse", rmse + 3 - step, step=step)
                run.log_metric("r2", 0.5)
            ids[name] = run.id
        with tracker.start_run(experiment="other", name="elsewhere") as run:
            run.log_metric("rmse", 1.0)
        ids["elsewhere"] = run.id
    finally:
        tracker.close()
    yield {"uri": uri, "ids": ids, "root": root, "client": MlflowClient(tracking_uri=uri)}


def cli(
    capsys: pytest.CaptureFixture[str], store: dict[str, Any], *args: str
) -> tuple[int, str, str]:
    code = main([*args, "-o", f"tracking_uri={store['uri']}"])
    out, err = capsys.readouterr()
    return code, out, err


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


# -- trackkit runs ---------------------------------------------------------------------------------
def test_runs_lists_what_mlflow_holds(
    capsys: pytest.CaptureFixture[str], store: dict[str, Any]
) -> None:
    code, out, err = cli(capsys, store, "runs", EXPERIMENT, "--format", "csv")
    assert (code, err) == (0, "")
    rows = _csv(out)
    assert list(rows[0]) == [
        "run_id", "run_name", "status", "start_time", "metrics.r2", "metrics.rmse",
        "params.alpha", "params.model",
    ]  # fmt: skip
    assert [r["run_name"] for r in rows] == ["lasso-2", "ridge-1", "lasso-1"]  # newest first
    client: MlflowClient = store["client"]
    for row in rows:
        native = client.get_run(row["run_id"])
        assert row["status"] == native.info.status == "FINISHED"
        assert row["params.alpha"] == native.data.params["alpha"]
        assert row["params.model"] == native.data.params["model"]
        rmse = native.data.metrics["rmse"]  # the last point
        assert (
            (row["metrics.rmse"] == "NaN")
            if math.isnan(rmse)
            else float(row["metrics.rmse"]) == rmse
        )
        started = dt.datetime.fromtimestamp(native.info.start_time / 1000, tz=dt.timezone.utc)
        assert row["start_time"] == started.isoformat(timespec="milliseconds")


def test_runs_filters_orders_and_cuts(
    capsys: pytest.CaptureFixture[str], store: dict[str, Any]
) -> None:
    code, out, _ = cli(
        capsys, store, "runs", EXPERIMENT, "--filter", "params.model = 'lasso'",
        "--order-by", "params.alpha DESC", "--format", "json",
    )  # fmt: skip
    assert code == 0
    assert [r["run_name"] for r in json.loads(out)] == ["lasso-2", "lasso-1"]
    code, out, _ = cli(
        capsys, store, "runs", EXPERIMENT, "--order-by", "metrics.rmse", "--max", "2",
        "--columns", "run_name,metrics.rmse", "--format", "json",
    )  # fmt: skip
    assert json.loads(out) == [
        {"run_name": "ridge-1", "metrics.rmse": 6.5},
        {"run_name": "lasso-1", "metrics.rmse": 7.25},
    ]
    code, out, _ = cli(
        capsys, store, "runs", EXPERIMENT, "other", "--columns", "run_name", "--format", "csv"
    )
    assert sorted(r["run_name"] for r in _csv(out)) == [
        "elsewhere",
        "lasso-1",
        "lasso-2",
        "ridge-1",
    ]


def test_runs_columns_take_patterns_and_system_tags(
    capsys: pytest.CaptureFixture[str], store: dict[str, Any]
) -> None:
    code, out, _ = cli(
        capsys, store, "runs", EXPERIMENT, "--columns", "run_name", "--columns",
        "tags.*,backend", "--format", "json",
    )  # fmt: skip
    first = json.loads(out)[0]
    assert list(first)[:: len(first) - 1] == ["run_name", "backend"]
    assert first["tags.dev"] == "ana" and first["backend"] == "mlflow"
    assert first["tags.mlflow.runName"] == "lasso-2"  # MLflow's own tags, as in its frame
    code, out, err = cli(capsys, store, "runs", EXPERIMENT, "--columns", "metrics.rsme")
    assert code == 2 and out == ""
    assert (
        err
        == "trackkit: error: no run found has a column 'metrics.rsme'; did you mean 'metrics.rmse'?\n"
    )


def test_runs_as_a_plain_table_off_a_terminal(
    capsys: pytest.CaptureFixture[str], store: dict[str, Any]
) -> None:
    code, out, _ = cli(
        capsys, store, "runs", EXPERIMENT, "--columns", "run_name,status,metrics.rmse"
    )
    assert code == 0
    assert not ANSI.search(out) and not BOX.search(out)
    lines = out.splitlines()
    assert lines[0].split() == ["run_name", "status", "metrics.rmse"]
    assert lines[1].split() == ["lasso-2", "FINISHED", "nan"]
    assert lines[3].split() == ["lasso-1", "FINISHED", "7.25"]
    assert len({line.index("FINISHED") for line in lines[1:]}) == 1  # aligned columns


def test_no_runs_and_missing_experiments(
    capsys: pytest.CaptureFixture[str], store: dict[str, Any]
) -> None:
    code, out, _ = cli(capsys, store, "runs", EXPERIMENT, "--filter", "params.model = 'svm'")
    assert (code, out) == (0, f"no runs found in {EXPERIMENT}\n")
    code, out, _ = cli(
        capsys, store, "runs", EXPERIMENT, "--filter", "params.model = 'svm'", "--format", "json"
    )
    assert (code, json.loads(out)) == (0, [])
    code, out, err = cli(capsys, store, "runs", "no-such-experiment")
    assert code == 2 and "no MLflow experiment named 'no-such-experiment'" in err
    assert err.startswith("trackkit: error: ") and err.count("\n") == 1
    code, _, err = cli(capsys, store, "runs", EXPERIMENT, "--filter", "metrics.rmse < 'x'")
    assert code == 2 and "compares with a number" in err
    code, _, err = cli(capsys, store, "runs", EXPERIMENT, "--max", "0")
    assert code == 2 and "max_results must be an int from 1 to 50000" in err


# -- trackkit compare ------------------------------------------------------------------------------
def test_compare_shows_runs_side_by_side(
    capsys: pytest.CaptureFixture[str], store: dict[str, Any]
) -> None:
    ids = store["ids"]
    a, b = ids["lasso-1"], ids["ridge-1"]
    code, out, _ = cli(capsys, store, "compare", a, b, "--format", "csv")
    assert code == 0
    rows = {r["field"]: r for r in _csv(out)}
    assert list(_csv(out)[0]) == ["field", a, b]
    client: MlflowClient = store["client"]
    for run_id in (a, b):
        native = client.get_run(run_id)
        assert rows["run_name"][run_id] == native.info.run_name
        for key, value in native.data.params.items():
            assert rows[f"params.{key}"][run_id] == value
        for key, value in native.data.metrics.items():
            assert float(rows[f"metrics.{key}"][run_id]) == value
    code, out, _ = cli(capsys, store, "compare", a, b, "--only-changed", "--format", "csv")
    assert [r["field"] for r in _csv(out)] == [
        "run_name",
        "params.alpha",
        "params.model",
        "metrics.rmse",
    ]


def test_compare_of_a_missing_run_is_one_line(
    capsys: pytest.CaptureFixture[str], store: dict[str, Any]
) -> None:
    code, out, err = cli(capsys, store, "compare", store["ids"]["lasso-1"], "nope")
    assert code == 2 and out == ""
    assert err.startswith("trackkit: error: ") and "nope" in err and err.count("\n") == 1


# -- trackkit history ------------------------------------------------------------------------------
def test_history_prints_every_point(
    capsys: pytest.CaptureFixture[str], store: dict[str, Any]
) -> None:
    run_id = store["ids"]["lasso-1"]
    code, out, _ = cli(capsys, store, "history", run_id, "rmse", "--format", "json")
    assert code == 0
    points = json.loads(out)
    native = sorted(store["client"].get_metric_history(run_id, "rmse"), key=lambda m: m.step)
    assert [(p["step"], p["value"]) for p in points] == [(m.step, m.value) for m in native]
    assert [p["timestamp"] for p in points] == [
        dt.datetime.fromtimestamp(m.timestamp / 1000, tz=dt.timezone.utc).isoformat(
            timespec="milliseconds"
        )
        for m in native
    ]
    code, out, _ = cli(capsys, store, "history", run_id, "rmse")
    assert out.splitlines()[0].split() == ["step", "value", "timestamp"]
    assert out.splitlines()[1].split()[:2] == ["0", "10.25"]
    code, out, err = cli(capsys, store, "history", run_id, "rsme")
    assert code == 2 and "has no metric 'rsme'; its metrics: r2, rmse" in err


# -- the installed command: pipes, terminals, other backends ---------------------------------------
def _trackkit(*args: str) -> list[str]:
    return [sys.executable, "-m", "trackkit", *args]


def test_the_command_pipes_cleanly(store: dict[str, Any]) -> None:
    done = subprocess.run(
        _trackkit("runs", EXPERIMENT, "-o", f"tracking_uri={store['uri']}", "--format", "csv"),
        capture_output=True, text=True, timeout=600, check=False, cwd=store["root"],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not ANSI.search(done.stdout) and len(_csv(done.stdout)) == 3
    # into a reader that stops early (as `| head -1` does): no traceback
    shell = subprocess.run(
        f"{' '.join(_trackkit('runs', EXPERIMENT, '-o', 'tracking_uri=' + store['uri']))} | head -1",
        shell=True, capture_output=True, text=True, timeout=600, check=False, cwd=store["root"],
    )  # fmt: skip
    assert shell.stdout.split() == ["run_id", "run_name", "status", "start_time", "metrics.r2",
                                    "metrics.rmse", "params.alpha", "params.model"]  # fmt: skip
    assert "Traceback" not in shell.stderr


def test_on_a_terminal_the_table_is_drawn_with_rich(store: dict[str, Any]) -> None:
    pytest.importorskip("rich")
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        _trackkit("runs", EXPERIMENT, "-o", f"tracking_uri={store['uri']}", "--columns", "run_name,metrics.rmse"),
        stdout=secondary, stderr=subprocess.PIPE, cwd=store["root"],
        env={**os.environ, "COLUMNS": "120", "TERM": "xterm"},
    )  # fmt: skip
    os.close(secondary)
    shown = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the command closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(primary)
    assert proc.wait(timeout=600) == 0, proc.stderr.read() if proc.stderr else ""
    text = shown.decode()
    assert ANSI.search(text) and "─" in text  # rich's header rule and bold header
    plain = ANSI.sub("", re.sub(r"\x1b\[[0-9;]*m", "", text))
    assert "3 runs" in plain and "lasso-1" in plain and "7.25" in plain


def test_other_backends_read_through_the_same_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    options = ["-o", "mode=offline", "-o", f"dir={tmp_path / 'w'}"]
    tracker = trackkit.get_tracker("wandb", mode="offline", dir=tmp_path / "w")
    try:
        with tracker.start_run(experiment=EXPERIMENT, name="w-1") as run:
            run.log_params({"model": "lasso"})
            run.log_metric("rmse", 6.0)
    finally:
        tracker.close()
    code = main(["runs", EXPERIMENT, "--backend", "wandb", *options, "--format", "json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    [row] = json.loads(out)
    assert (row["run_name"], row["params.model"], row["metrics.rmse"]) == ("w-1", "lasso", 6.0)
