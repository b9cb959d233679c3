"""The write path under faults from outside: a journal that cannot be written (a file-size
limit, an unwritable directory), SIGTERM at random moments of a tight logging loop, a value the
store refuses, and bad input that used to get raw errors or hang. Real files, real signals, a
real MLflow store and a real `mlflow server`; results are read back through MLflow's client."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import trackkit
from conftest import start_mlflow_server
from conftest import stop_mlflow_server as _stop

mlflow = pytest.importorskip("mlflow")


def _steps(client, run_id: str, key: str) -> list[int]:  # type: ignore[no-untyped-def]
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def _child(  # type: ignore[no-untyped-def]
    script: str, *args: str, cwd: Path, prefix: list[str] | None = None, timeout: float = 300
):
    """Run ``script`` in a fresh interpreter; its output through pipes (a file-size limit
    does not apply to them)."""
    path = cwd / "child.py"
    path.write_text(textwrap.dedent(script))
    return subprocess.run(
        [*(prefix or []), sys.executable, str(path), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- 1. a journal that cannot be written ------------------------------------------------------
STOPS_GROWING = """
import resource, signal, sys, trackkit
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
tracker = trackkit.get_tracker("mlflow", tracking_uri=sys.argv[1], flush_interval=0.2,
                               end_timeout=180)
with tracker.start_run(experiment="full-disk") as run:
    for i in range(50_000):
        if i == 5_000:
            run.outbox.to_journal()  # the journal holds data, then its file system is full
            resource.setrlimit(resource.RLIMIT_FSIZE, (65_536, 65_536))
        run.log_metric("loss", float(i))
print("RUN", run.id, run.delivered, run.lost)
"""


@pytest.mark.server
def test_a_journal_that_stops_growing_loses_nothing(tmp_path: Path, mlflow_server: str) -> None:
    done = _child(STOPS_GROWING, mlflow_server, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run_id, delivered, lost = done.stdout.split("RUN ")[1].split()
    assert (delivered, lost) == ("True", "0")
    # one warning names the journal and the cause; never "backend failed"
    assert done.stderr.count("TrackkitWarning: trackkit: the journal") == 1, done.stderr[-3000:]
    assert "cannot be written" in done.stderr and ".trackkit/journal/local-" in done.stderr
    assert "disk I/O error" in done.stderr or "full" in done.stderr  # the cause, as sqlite says it
    assert "backend failed" not in done.stderr
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    assert _steps(client, run_id, "loss") == list(range(50_000))
    assert client.get_run(run_id).info.status == "FINISHED"
    assert list((tmp_path / ".trackkit" / "journal").glob("*.db")) == []  # delivered


UNWRITABLE = """
import sys, warnings, trackkit
warnings.simplefilter("always")
tracker = trackkit.get_tracker("mlflow", tracking_uri=sys.argv[1], flush_interval=0.2)
for n in range(2):
    with tracker.start_run(experiment="read-only") as run:
        run.log_params({"lr": 0.1})
        for i in range(3000):
            run.log_metric("loss", float(i))
    print("RUN", run.id, run.delivered)
try:
    trackkit.get_tracker("mlflow", tracking_uri=sys.argv[1], strict=True).start_run()
except trackkit.JournalError as e:
    print("STRICT", e)
"""


def _without_root_powers() -> list[str]:
    """A command prefix that makes root obey file modes (as any user would)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("needs setpriv (util-linux) to drop root's file-mode override")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search,-fowner"]


@pytest.mark.server
def test_an_unwritable_trackkit_directory_warns_once_and_runs_in_memory(
    tmp_path: Path, mlflow_server: str
) -> None:
    (tmp_path / ".trackkit").mkdir(mode=0o555)
    (tmp_path / ".trackkit").chmod(0o555)
    done = _child(UNWRITABLE, mlflow_server, cwd=tmp_path, prefix=_without_root_powers())
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "PermissionError" in done.stderr
    assert done.stderr.count("TrackkitWarning: trackkit: the journal") == 1, done.stderr
    runs = [line.split()[1:] for line in done.stdout.splitlines() if line.startswith("RUN ")]
    assert [delivered for _, delivered in runs] == ["True", "True"]
    assert "STRICT the journal" in done.stdout and "cannot be created" in done.stdout
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    for run_id, _ in runs:
        assert _steps(client, run_id, "loss") == list(range(3000))
        assert client.get_run(run_id).data.params == {"lr": "0.1"}
        assert client.get_run(run_id).info.status == "FINISHED"


LOSES_POINTS = """
import os, sys, time, warnings, trackkit
warnings.simplefilter("always")
tracker = trackkit.get_tracker("mlflow", tracking_uri=sys.argv[1], flush_interval=0.1,
                               memory_bound=500, end_timeout=120)
run = tracker.start_run(experiment="lost")
run.log_metric("loss", -1.0, step=0)
deadline = time.monotonic() + 120
while not run.flush() and time.monotonic() < deadline:  # a loaded machine: until it answers
    time.sleep(0.5)
print("STARTED", run.id, run.delivered or run.journal.empty(), flush=True)
sys.stdin.readline()  # the server hangs now
# the writer learns that from a send that times out; MLflow's client would send it again
# after the timeout (trackkit retries sends itself), and the logging thread waits that long
os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
for i in range(1, 5001):
    run.log_metric("loss", float(i), step=i)
print("LOGGED", run.lost, flush=True)
sys.stdin.readline()  # the server goes on
del os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
deadline = time.monotonic() + 240
while not run.flush() and time.monotonic() < deadline:  # until it answers again
    time.sleep(0.5)
run.end()
while not run.delivered and time.monotonic() < deadline:  # a slow server: the writer goes on
    time.sleep(0.5)
print("ENDED", run.lost, run.delivered, flush=True)
"""


@pytest.mark.server
def test_points_past_the_memory_bound_are_counted_tagged_and_warned(tmp_path: Path) -> None:
    """Neither journal nor backend can take points: the oldest are dropped, never silently."""
    server, url = start_mlflow_server(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    (work / ".trackkit").write_text("not a directory")  # no journal can be created here
    (work / "child.py").write_text(textwrap.dedent(LOSES_POINTS))
    child = subprocess.Popen(
        [sys.executable, "child.py", url],
        cwd=work,
        env={**os.environ, "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        _, run_id, sent = child.stdout.readline().split()
        assert sent == "True" and not run_id.startswith("local-"), run_id
        os.killpg(server.pid, signal.SIGSTOP)  # the server hangs: requests time out
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().startswith("LOGGED")
        os.killpg(server.pid, signal.SIGCONT)
        child.stdin.write("go\n")
        child.stdin.flush()
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err[-3000:]
        [ended] = [line.split() for line in out.splitlines() if line.startswith("ENDED")]
        lost = int(ended[1])
        assert 0 < lost < 5000 and ended[2] == "True", err[-4000:]
        assert "dropped the oldest" in err and "trackkit.lost_points" in err
        assert f"without {lost} metric points" in err  # the end says so too
        client = mlflow.MlflowClient(tracking_uri=url)
        found = client.get_run(run_id)
        assert found.data.tags["trackkit.lost_points"] == str(lost)
        steps = _steps(client, run_id, "loss")
        # the oldest were dropped: every point after them arrived, exactly once. A batch in
        # flight when the server hung timed out and was counted as dropped, but the server may
        # still have stored it when it woke: those are the oldest, and never more than a batch
        early = [s for s in steps if 0 < s <= lost]
        assert early == list(range(1, len(early) + 1)) and len(early) <= 1000, early[-5:]
        assert steps == [0, *early, *range(lost + 1, 5001)]
    finally:
        if child.poll() is None:
            child.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGCONT)
        _stop(server)


# -- 2. signals that always finish ------------------------------------------------------------
END_TIMEOUT = 5.0
POINTS = 5000
ZYGOTE = """
import faulthandler, json, mmap, os, signal, struct, sys, time
import mlflow, trackkit  # imported once; each trial is a fork of this process
url, end_timeout, points = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
for line in sys.stdin:
    shared = mmap.mmap(-1, 8)
    pid = os.fork()
    if pid == 0:
        faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test's dump if it hangs
        os.chdir(line.strip())
        tracker = trackkit.get_tracker("mlflow", tracking_uri=url, flush_interval=0.2,
                                       end_timeout=end_timeout, memory_bound=200)
        run = tracker.start_run(experiment="sigterm")
        print(json.dumps({"pid": os.getpid(), "run": run.id}), flush=True)
        for i in range(points):  # a tight loop; the main thread spills every 400 points
            run.log_metric("loss", float(i), step=i)
            shared[:8] = struct.pack("q", i + 1)  # how many calls returned
        time.sleep(600)
    _, status = os.waitpid(pid, 0)
    exited = time.monotonic()
    logged = struct.unpack("q", shared[:8])[0]
    print(json.dumps({"code": os.waitstatus_to_exitcode(status), "exited": exited,
                      "logged": logged}), flush=True)
"""


def _json_line(stream, key: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    """The next line of ``stream`` that is a JSON object with ``key`` (MLflow prints links)."""
    while line := stream.readline():
        if line.startswith("{") and key in (found := json.loads(line)):
            return found  # type: ignore[no-any-return]
    raise AssertionError(f"the zygote ended without a {key!r} line")


def _kill_quietly(pid: int) -> None:
    """Kill a trial that hung, after it printed every thread's stack (the failure's evidence,
    in the test's captured stderr)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGUSR1)
        time.sleep(2)
        os.kill(pid, signal.SIGKILL)


@pytest.mark.server
def test_sigterm_at_random_moments_always_exits_in_time_and_loses_nothing(
    tmp_path: Path, mlflow_server: str
) -> None:
    seed = random.randrange(1 << 30)
    print(f"\nseed {seed}")
    rng = random.Random(seed)
    (tmp_path / "zygote.py").write_text(textwrap.dedent(ZYGOTE))
    zygote = subprocess.Popen(
        [sys.executable, "zygote.py", mlflow_server, str(END_TIMEOUT), str(POINTS)],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert zygote.stdin is not None and zygote.stdout is not None
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    outcomes = []
    try:
        for trial in range(20):
            work = tmp_path / f"trial{trial}"
            work.mkdir()
            zygote.stdin.write(f"{work}\n")
            zygote.stdin.flush()
            started = _json_line(zygote.stdout, "pid")
            time.sleep(rng.uniform(0.0, 0.02))  # somewhere in the loop (or just after it)
            killed = time.monotonic()
            os.kill(started["pid"], signal.SIGTERM)
            timer = threading.Timer(END_TIMEOUT + 30, _kill_quietly, (started["pid"],))
            timer.start()
            result = _json_line(zygote.stdout, "code")
            timer.cancel()
            took = result["exited"] - killed
            assert result["code"] == -signal.SIGTERM, (trial, result)  # exits as it would have
            assert took <= END_TIMEOUT + 1, f"trial {trial}: exited {took:.1f} s after SIGTERM"
            run = client.get_run(started["run"])
            status = run.info.status
            if status == "RUNNING":  # the rest was journaled: sync completes it
                [synced] = trackkit.sync(work / ".trackkit", "mlflow", tracking_uri=mlflow_server)
                assert synced.outcome == "delivered", synced
                status = client.get_run(started["run"]).info.status
            steps = _steps(client, started["run"], "loss")
            # every call that returned is there, in order, once (the one the signal
            # interrupted may be there too)
            assert steps == list(range(len(steps))), trial
            assert len(steps) in (result["logged"], result["logged"] + 1), (trial, result)
            assert status == "KILLED", trial
            outcomes.append((run.info.status, len(steps), round(took, 2)))
    finally:
        zygote.stdin.close()
        zygote.wait(timeout=60)
    print("trials (status before sync, points, seconds to exit):", outcomes)


# -- 6. one bad operation never blocks the others ---------------------------------------------
def test_steps_and_timestamps_past_the_store_range_are_refused_at_the_call(
    mlflow_tracker, mlflow_client
) -> None:  # type: ignore[no-untyped-def]
    with mlflow_tracker.start_run(experiment="range") as run:
        run.log_metric("k", 1.0, step=2**63 - 1)  # the last step MLflow stores
        with pytest.raises(trackkit.InvalidInput, match="highest this backend stores"):
            run.log_metric("k", 2.0)  # its implicit step would be 2**63
        with pytest.raises(trackkit.InvalidInput, match="highest this backend stores"):
            run.log_metrics({"k": 2.0, "other": 1.0})
        with pytest.raises(trackkit.InvalidInput, match="between 0 and"):
            run.log_metric("k", 2.0, step=2**63)
        with pytest.raises(trackkit.InvalidInput, match="past the highest"):
            run.log_metric("t", 1.0, timestamp=2**64)
        for i in range(100):
            run.log_metric("after", float(i))
        run.log_metrics({"other": 5.0})  # the refused call above left nothing half-done
    assert _steps(mlflow_client, run.id, "after") == list(range(100))
    assert _steps(mlflow_client, run.id, "k") == [2**63 - 1]
    assert _steps(mlflow_client, run.id, "other") == [0]
    assert mlflow_client.get_run(run.id).info.status == "FINISHED"


def test_a_batch_the_store_refuses_for_good_blocks_no_other_run(
    sqlite_uri: str, mlflow_client
) -> None:  # type: ignore[no-untyped-def]
    """A limit trackkit does not know: the store's own refusal sets the point aside."""
    tracker = trackkit.get_tracker(
        "mlflow", tracking_uri=sqlite_uri, flush_interval=0.1, end_timeout=60
    )
    limits = tracker.backend.limits
    if "max_timestamp" in {f.name for f in dataclasses.fields(limits)}:
        tracker.backend.limits = dataclasses.replace(limits, max_timestamp=None)
    first = tracker.start_run(experiment="stuck", name="first")
    second = tracker.start_run(experiment="stuck", name="second")
    first.log_metric("k", 1.0, step=1000, timestamp=2**64)  # MLflow: OverflowError, every time
    for i in range(100):
        first.log_metric("k", float(i), step=i)
        second.log_metric("k", float(i))
    second.end()
    with pytest.warns(trackkit.TrackkitWarning, match="refused some operations for good"):
        first.end()
    for run in (first, second):
        assert _steps(mlflow_client, run.id, "k") == list(range(100))
        assert mlflow_client.get_run(run.id).info.status == "FINISHED"
    assert not first.outbox.in_memory  # the journal file kept working for everything else
    assert second.rejected_at is None
    # the refused point is kept exactly, with the store's reason, in the file the warning names
    # (its timestamp is past sqlite's integers: kept as the bytes of its decimal text)
    assert first.rejected_at is not None
    db = sqlite3.connect(first.rejected_at)
    [(key, step, ts, reason)] = db.execute("SELECT key, step, ts, reason FROM rejected").fetchall()
    db.close()
    assert (key, step, ts) == ("k", 1000, str(2**64).encode()) and "too large" in reason
    tracker.close()


# -- 7. bad input that got an unclear answer --------------------------------------------------
def test_a_nul_in_a_file_name_is_invalid_input(mlflow_tracker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with mlflow_tracker.start_run(experiment="nul") as run:
        with pytest.raises(trackkit.InvalidInput, match="NUL"):
            run.log_artifact(f"{tmp_path}/a\0b")
        with pytest.raises(trackkit.InvalidInput, match="NUL"):
            run.log_text("x", "notes/a\0b.txt")
        (tmp_path / "ok.txt").write_text("ok")
        with pytest.raises(trackkit.InvalidInput, match="NUL"):
            run.log_artifact(tmp_path / "ok.txt", "dir\0name")


def test_a_long_non_ascii_key_keeps_its_long_value_under_a_short_file_name(
    mlflow_tracker, mlflow_client, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    key, value = "é" * 250, "v" * 7000  # the key is 500 bytes: too long for a file name
    with mlflow_tracker.start_run(experiment="long") as run:
        run.log_param(key, value)
    stored = mlflow_client.get_run(run.id).data.params[key]
    where = stored.rsplit("full value in artifact ", 1)[1].rstrip("]")
    name = where.rsplit("/", 1)[1]
    assert where.startswith("trackkit/long_values/params/") and len(name.encode()) <= 255
    local = mlflow_client.download_artifacts(run.id, where, str(tmp_path))
    assert Path(local).read_text(encoding="utf-8") == value


def _special(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    holder = tmp_path / "holder"
    holder.mkdir()
    (holder / "ok.txt").write_text("ok")
    os.mkfifo(holder / "pipe")
    assert stat.S_ISSOCK(sock_path.stat().st_mode)
    return {"fifo": fifo, "socket": sock_path, "device": Path("/dev/null"), "dir": holder}


def test_special_files_are_refused_without_hanging(mlflow_tracker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    special = _special(tmp_path)
    run = mlflow_tracker.start_run(experiment="special")
    errors: dict[str, BaseException] = {}

    def attempt() -> None:
        for label, path in special.items():
            try:
                run.log_artifact(path)
            except BaseException as e:
                errors[label] = e

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "log_artifact hung on a special file"
    assert sorted(errors) == sorted(special)
    for error in errors.values():
        assert isinstance(error, trackkit.InvalidInput)
        assert "FIFO, socket or device" in str(error)
    run.end()


def test_a_tracking_uri_that_is_not_a_string_or_has_a_mistyped_scheme() -> None:
    with pytest.raises(trackkit.InvalidInput, match="must be a URI string"):
        trackkit.get_tracker("mlflow", tracking_uri=123)
    with pytest.raises(trackkit.InvalidInput, match=r"scheme 'htpp'.*did you mean http://") as e:
        trackkit.get_tracker("mlflow", tracking_uri="htpp://user:s3cret@127.0.0.1:5000")
    assert "s3cret" not in str(e.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TRACKKIT_FLUSH_INTERVAL", "inf"),
        ("TRACKKIT_FLUSH_INTERVAL", "nan"),
        ("TRACKKIT_FLUSH_INTERVAL", "soon"),
        ("TRACKKIT_END_TIMEOUT", "inf"),
        ("TRACKKIT_END_TIMEOUT", "-1"),
    ],
)
def test_timing_settings_that_are_not_finite_numbers_are_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, sqlite_uri: str, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(trackkit.InvalidInput, match=f"\\${variable}"):
        trackkit.get_tracker("mlflow", tracking_uri=sqlite_uri)


def test_concurrent_writers_of_one_param_learn_whether_their_value_was_kept(
    mlflow_tracker, mlflow_client, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    run = mlflow_tracker.start_run(experiment="race")
    start = threading.Barrier(8)
    kept: list[int] = []
    refused: list[BaseException] = []

    def write(n: int) -> None:
        value = f"{n}" * 7000  # over MLflow's limit: kept whole in an artifact, slowly
        start.wait()
        try:
            run.log_param("p", value)
            kept.append(n)
        except trackkit.InvalidInput as e:
            refused.append(e)

    workers = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    run.end()
    assert len(kept) == 1 and len(refused) == 7
    assert all("params cannot change" in str(e) for e in refused)
    [winner] = kept
    stored = mlflow_client.get_run(run.id).data.params["p"]
    assert stored.startswith(f"{winner}" * 100)
    where = stored.rsplit("full value in artifact ", 1)[1].rstrip("]")
    local = mlflow_client.download_artifacts(run.id, where, str(tmp_path))
    assert Path(local).read_text() == f"{winner}" * 7000  # no loser overwrote it
