"""Core behaviour that needs no tracking SDK: batching, the fluent API, exit handling, hints.

The backend here is ``RecordingBackend`` (tests/recording.py), a test double that records the
batches the core hands it, so the core's own contract (batch shapes, retries of unsent data,
statuses) can be checked exactly. Behaviour against real SDKs is checked by the conformance
suites.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import trackkit
from recording import RecordingBackend
from trackkit._secrets import redact
from trackkit.backend import Limits
from trackkit.tracker import Tracker


def test_batches_respect_every_limit_and_keep_order() -> None:
    backend = RecordingBackend()
    with Tracker(backend).start_run(experiment="e") as run:
        run.log_params({f"p{i}": i for i in range(3)})
        for i in range(7):
            run.log_metric("m", float(i))
        run.set_tag("t", "v")
    for params, metrics, tags in backend.batches:
        assert len(params) + len(tags) <= 2 and len(metrics) <= 3
        assert len(params) + len(metrics) + len(tags) <= 4
    assert [p for b in backend.batches for p in b[0]] == [("p0", 0), ("p1", 1), ("p2", 2)]
    assert [(m.step, m.value) for b in backend.batches for m in b[1]] == [
        (i, float(i)) for i in range(7)
    ]
    assert [t for b in backend.batches for t in b[2]] == [("t", "v")]
    assert backend.ended == {run.id: "FINISHED"}


def test_a_backend_taking_concurrent_batches_gets_every_point_once() -> None:
    """``Limits.concurrent_batches`` > 1: batches go out at once, each acknowledged on its own."""

    class ThreeLanes(RecordingBackend):
        limits = Limits(
            batch_metrics=10, batch_params_tags=10, batch_total=10, concurrent_batches=3
        )

    backend = ThreeLanes()
    backend.delay = 0.02  # the lanes overlap
    with Tracker(backend).start_run(experiment="e") as run:
        for i in range(95):
            run.log_metric("m", float(i))
    assert all(len(metrics) <= 10 for _, metrics, _ in backend.batches)
    sent = sorted(m.step for _, ms, _ in backend.batches for m in ms)
    assert sent == list(range(95))  # every point, none twice
    assert backend.ended == {run.id: "FINISHED"}
    assert run.delivered and not run.journal.path.exists()
    assert backend.most_in_flight == 3  # three lanes were used, never more


def test_a_failing_service_never_raises_and_loses_nothing() -> None:
    backend = RecordingBackend()
    run = Tracker(backend, flush_interval=0.05).start_run(experiment="e")
    run.log_param("a", 1)
    run.log_metric("loss", 0.5)
    backend.fail_next = True
    with pytest.warns(trackkit.TrackkitWarning, match="service unavailable"):
        assert run.flush() is False  # reported once, kept in the journal
    run.log_metric("loss", 0.4)  # the training loop goes on
    run.end()
    sent_metrics = [m for _, ms, _ in backend.batches for m in ms]
    assert [(m.step, m.value) for m in sent_metrics] == [(0, 0.5), (1, 0.4)]
    assert [p for ps, _, _ in backend.batches for p in ps] == [("a", 1)]
    assert backend.ended == {run.id: "FINISHED"}
    assert not run.journal.path.exists()  # delivered: the journal is gone


def test_end_returns_after_the_journal_is_gone_even_when_the_sender_ends_the_run_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sender may deliver END (and start removing the journal) before end() looks.

    Widen that window: the user's thread is slowed before it journals, and removing a
    journal is slowed; end() must still return only once the journal is gone.
    """
    from trackkit import journal as jn
    from trackkit.outbox import Outbox

    remove, to_journal = jn.Journal.remove, Outbox.to_journal

    def slow_remove(self: jn.Journal) -> Path | None:
        time.sleep(0.03)
        return remove(self)

    def slow_user_to_journal(self: Outbox) -> None:
        if threading.current_thread() is threading.main_thread():
            time.sleep(0.01)
        to_journal(self)

    monkeypatch.setattr(jn.Journal, "remove", slow_remove)
    monkeypatch.setattr(Outbox, "to_journal", slow_user_to_journal)
    for _ in range(20):
        backend = RecordingBackend()
        run = Tracker(backend, flush_interval=0.001).start_run(experiment="e")
        run.log_metric("m", 1.0)
        run.end()
        assert run.delivered
        assert not run.journal.path.exists()


def test_operations_refused_for_good_are_set_aside_not_retried_forever() -> None:
    backend = RecordingBackend()
    refuse = backend.log_batch

    def log_batch(run_id, params, metrics, tags):  # type: ignore[no-untyped-def]
        if any(m.key == "bad" for m in metrics):
            raise trackkit.InvalidInput("metric 'bad' is not allowed here")
        refuse(run_id, params, metrics, tags)

    backend.log_batch = log_batch  # type: ignore[method-assign]
    run = Tracker(backend).start_run(experiment="e")
    for i in range(3):
        run.log_metric("good", float(i))
    run.log_metric("bad", 1.0)
    run.log_metric("good", 3.0)
    with pytest.warns(trackkit.TrackkitWarning, match="refused some operations"):
        run.end()
    assert [m.value for _, ms, _ in backend.batches for m in ms] == [0.0, 1.0, 2.0, 3.0]
    assert backend.ended == {run.id: "FINISHED"}
    assert run.rejected_at is not None and run.rejected_at.name.endswith(".db.rejected")
    import sqlite3

    kept = sqlite3.connect(run.rejected_at).execute("SELECT key, num, reason FROM rejected")
    assert kept.fetchall() == [("bad", 1.0, "InvalidInput: metric 'bad' is not allowed here")]


def test_every_log_call_keeps_the_queue_bounded() -> None:
    backend = RecordingBackend()
    run = Tracker(backend, memory_bound=5, flush_interval=3600).start_run(experiment="e")
    largest = 0
    for i in range(40):
        run.log_metrics({"a": i, "b": i}, step=i)
        run.set_tags({"t": str(i)})
        largest = max(largest, run.outbox.queued())
    assert largest < 2 * 5 + 3  # spilled to the journal, not grown
    run.end()
    assert [m.step for _, ms, _ in backend.batches for m in ms if m.key == "a"] == list(range(40))


def test_strict_mode_raises_the_failure() -> None:
    backend = RecordingBackend()
    run = Tracker(backend, strict=True).start_run(experiment="e")
    run.log_metric("loss", 0.5)
    backend.fail_next = True
    with pytest.raises(trackkit.BackendError, match=r"strict mode.*service unavailable"):
        run.flush()
    run.end()  # the next attempt succeeds; nothing was lost
    assert [m.value for _, ms, _ in backend.batches for m in ms] == [0.5]


def test_unsupported_operations_name_backend_and_alternative(tmp_path: Path) -> None:
    tracker = Tracker(RecordingBackend())
    with (
        tracker.start_run(experiment="e") as run,
        pytest.raises(
            trackkit.UnsupportedOperation,
            match="recording backend does not support log_artifact; instead",
        ),
    ):
        run.log_text("x", "a.txt")
    with pytest.raises(trackkit.UnsupportedOperation, match="register_model"):
        tracker.register_model("runs:/x/model", "m")
    with pytest.raises(trackkit.UnsupportedOperation, match="search_runs"):
        tracker.search_runs("e")


def test_fluent_functions_act_on_the_active_run() -> None:
    backend = RecordingBackend()
    trackkit.set_tracker(Tracker(backend))
    assert trackkit.active_run() is None
    with pytest.raises(trackkit.TrackkitError, match="no active run"):
        trackkit.log_metric("x", 1)
    with trackkit.start_run(experiment="e") as outer:
        trackkit.log_params({"a": {"b": 1}})
        trackkit.log_metric("m", 2.0)
        trackkit.set_tags({"t": "v"})
        assert trackkit.active_run() is outer
        inner = trackkit.start_run(experiment="e")
        assert trackkit.active_run() is inner
        trackkit.end_run("KILLED")
        assert trackkit.active_run() is outer
    assert trackkit.active_run() is None
    trackkit.end_run()  # nothing active: does nothing
    assert backend.ended == {inner.id: "KILLED", outer.id: "FINISHED"}
    sent = [x for ps, ms, ts in backend.batches for x in (*ps, *ms, *ts)]
    assert ("a.b", 1) in sent and ("t", "v") in sent


@pytest.mark.parametrize(
    ("ending", "status"),
    [
        ("pass", "FINISHED"),
        ("raise SystemExit(3)", "FINISHED"),
        ("raise RuntimeError('x')", "FAILED"),
    ],
)
def test_open_runs_are_ended_at_interpreter_exit(ending: str, status: str, tmp_path: Path) -> None:
    """A run never ended is flushed and ended at exit: FAILED if an exception ends the process."""
    script = tmp_path / "script.py"
    out = tmp_path / "out.txt"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            import atexit
            from recording import RecordingBackend
            from trackkit.tracker import Tracker

            backend = RecordingBackend()

            def report():
                points = [m.value for _, ms, _ in backend.batches for m in ms]
                open({str(out)!r}, "w").write(f"{{backend.ended}} {{points}}")

            atexit.register(report)  # registered first, so it runs after trackkit's handler
            run = Tracker(backend).start_run(experiment="e")
            run.log_metric("loss", 0.1)
            {ending}
            """
        )
    )
    subprocess.run([sys.executable, str(script)], capture_output=True, timeout=60, check=False)
    assert out.read_text() == f"{{'r0': '{status}'}} [0.1]"


def test_redact_masks_credentials() -> None:
    assert redact("http://ana:pw123@host:5000/x") == "http://ana:***@host:5000/x"
    assert redact("postgresql://u:p@db/mlflow") == "postgresql://u:***@db/mlflow"
    assert redact("https://h/api?token=abc&x=1") == "https://h/api?token=***&x=1"
    assert redact("http://host:5000") == "http://host:5000"


def test_secret_env_values_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2-long")
    assert redact("auth failed for hunter2-long") == "auth failed for ***"


@pytest.mark.skipif(
    importlib.util.find_spec("mlflow") is not None, reason="needs an env without mlflow"
)
def test_missing_sdk_names_the_extra() -> None:
    assert "mlflow" in trackkit.available_backends()
    with pytest.raises(
        trackkit.MissingDependencyError, match=r"pip install 'trackkit\[mlflow\]'"
    ) as caught:
        trackkit.get_tracker("mlflow")
    assert isinstance(caught.value, ImportError)


def test_unknown_backend_suggests_the_closest() -> None:
    with pytest.raises(trackkit.UnknownBackendError, match="did you mean 'mlflow'") as caught:
        trackkit.get_tracker("mlfow")
    assert "Available: " in str(caught.value)
