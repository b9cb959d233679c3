"""The background writer: logging never waits on, and never dies of, the tracking service.

Log calls only validate and append to the run's in-memory queue. Per tracker, two daemon
threads do the rest:

- the *journal* thread moves queued operations into each run's on-disk journal every
  ``interval`` seconds (sooner when a queue passes ``memory_bound``), so a hard kill loses
  at most about one interval of points and memory stays bounded;
- the *sender* thread sends journaled operations in batches shaped to the backend's limits
  and deletes each batch from the journal once the backend acknowledged it. On a failure it
  keeps everything, reports once, and retries with exponential backoff.

``deliver`` is shared with ``trackkit sync``, which replays journals left on disk.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from trackkit import journal as jn
from trackkit._secrets import redact
from trackkit.entities import Metric
from trackkit.errors import InvalidInput, NotFound, TrackkitWarning

if TYPE_CHECKING:
    from trackkit.backend import Backend
    from trackkit.entities import ParamValue
    from trackkit.outbox import Outbox

MAX_BACKOFF = 30.0
logger = logging.getLogger("trackkit")


def _batch(rows: list[jn.Row], backend: Backend) -> list[jn.Row]:
    """The longest prefix of batchable rows that fits in one ``log_batch`` call."""
    limits = backend.limits
    metrics = params_tags = 0
    chosen: list[jn.Row] = []
    for row in rows:
        kind = row[1]
        if kind not in jn.BATCHED:
            break
        if kind == jn.METRIC:
            if metrics + 1 > limits.batch_metrics:
                break
            metrics += 1
        else:
            if params_tags + 1 > limits.batch_params_tags:
                break
            params_tags += 1
        if metrics + params_tags > limits.batch_total:
            break
        chosen.append(row)
    return chosen


def _metric(row: jn.Row) -> Metric:
    return Metric(row[2], row[3], row[4], row[5])  # type: ignore[arg-type]


class _Metrics(Sequence[Metric]):
    """A batch's metric points as a sequence of :class:`Metric`, made one at a time.

    A backend usually converts each point into its SDK's own object; building every
    ``Metric`` up front would keep a second thousand objects alive per batch for Python's
    cycle collector to walk (plain journal rows are untracked by it), which costs more than
    the conversion itself in a process holding a large SDK.
    """

    __slots__ = ("_rows",)

    def __init__(self, rows: list[jn.Row]) -> None:
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, index: int) -> Metric: ...
    @overload
    def __getitem__(self, index: slice) -> list[Metric]: ...
    def __getitem__(self, index: int | slice) -> Metric | list[Metric]:
        if isinstance(index, slice):
            return [_metric(r) for r in self._rows[index]]
        return _metric(self._rows[index])

    def __iter__(self) -> Iterator[Metric]:
        return map(_metric, self._rows)

    def __repr__(self) -> str:
        return f"<{len(self)} metric points>"


def _send_batch(backend: Backend, run_id: str, rows: list[jn.Row]) -> None:
    params: list[tuple[str, ParamValue]] = []
    points: list[jn.Row] = []
    tags: dict[str, str] = {}  # a tag set twice in one batch: its last value wins
    for row in rows:
        kind, key, text = row[1], row[2], row[6]
        if kind == jn.METRIC:
            points.append(row)
        elif kind == jn.PARAM:
            params.append((key, json.loads(text)))  # type: ignore[arg-type]
        else:
            tags[key] = text  # type: ignore[index,assignment]
    backend.log_batch(run_id, params, _Metrics(points), list(tags.items()))


def _send_or_set_aside(
    backend: Backend, run_id: str, rows: list[jn.Row], journal: jn.Journal
) -> None:
    """Send a batch; if the backend refuses it for good, find the refused operations by
    halving and set them aside in the journal (kept, reported), so they block nothing."""
    try:
        _send_batch(backend, run_id, rows)
    except (InvalidInput, NotFound) as e:
        if len(rows) == 1:
            journal.reject(rows, redact(f"{type(e).__name__}: {e}"))
            logger.error(
                "trackkit: the %s backend refused %r for good (%s); it is kept in %s",
                redact(backend.describe()),
                rows[0][2],
                redact(str(e)),
                journal.path,
            )
            return
        half = len(rows) // 2
        _send_or_set_aside(backend, run_id, rows[:half], journal)
        _send_or_set_aside(backend, run_id, rows[half:], journal)


def _send_concurrently(
    backend: Backend, run_id: str, batches: list[list[jn.Row]], journal: jn.Journal
) -> None:
    """Send consecutive batches at once (one in this thread); acknowledge each one sent."""
    errors: list[BaseException] = []

    def send(batch: list[jn.Row]) -> None:
        try:
            _send_or_set_aside(backend, run_id, batch, journal)
            journal.ack_range(batch[0][0], batch[-1][0])
        except BaseException as e:
            errors.append(e)

    helpers = [threading.Thread(target=send, args=(b,), daemon=True) for b in batches[1:]]
    for helper in helpers:
        helper.start()
    send(batches[0])
    for helper in helpers:
        helper.join()
    if errors:
        raise errors[0]


def ensure_started(journal: jn.Journal, backend: Backend, meta: dict[str, Any]) -> str:
    """The backend's id of the journal's run, creating the run there if it was started offline."""
    run_id = meta.get("run_id")
    if not run_id:
        handle = backend.start_run(meta["experiment"], meta.get("name"), None)
        run_id = handle.id
        meta["run_id"] = run_id
        journal.set_meta(run_id=run_id)
    return str(run_id)


def deliver(journal: jn.Journal, backend: Backend, meta: dict[str, Any]) -> bool:
    """Send everything in ``journal`` to ``backend``; True once the run's end was delivered.

    Raises whatever the backend raises; what was not acknowledged stays in the journal.
    """
    ended = False
    lanes = max(1, backend.limits.concurrent_batches)
    while True:
        rows = journal.pending(max(backend.limits.batch_total, 1) * lanes)
        if not rows:
            return ended
        run_id = ensure_started(journal, backend, meta)
        batches: list[list[jn.Row]] = []
        while len(batches) < lanes and (batch := _batch(rows, backend)):
            batches.append(batch)
            rows = rows[len(batch) :]
        if batches:
            _send_concurrently(backend, run_id, batches, journal)
            continue
        seq, kind, key, _, _, _, text = rows[0]
        if kind == jn.END:
            backend.end_run(run_id, text or "FINISHED")
            journal.set_meta(ended=text or "FINISHED")
            ended = True
        elif kind == jn.ARTIFACT:
            # a journal is untrusted input: upload (and then delete) only a copy inside the
            # journal's own folder; anything else is set aside with the reason
            try:
                local = journal.kept_file(text)
            except InvalidInput as e:
                journal.reject([rows[0]], redact(str(e)))
                logger.error(
                    "trackkit: %s; the operation is kept in %s", redact(str(e)), journal.path
                )
                continue
            backend.log_artifact(run_id, local, key)
            journal.discard_file(local)
        journal.ack([seq])


class Writer:
    """The background writer of one tracker."""

    def __init__(
        self,
        backend: Backend,
        *,
        interval: float = 1.0,
        memory_bound: int = 100_000,
        strict: bool = False,
    ) -> None:
        self.backend = backend
        self.interval = interval
        self.memory_bound = memory_bound
        self.strict = strict
        self._outboxes: list[Outbox] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._journal_wake = threading.Event()
        self._send_wake = threading.Event()
        self._progress = threading.Condition()
        # Delivery attempts are numbered when they begin, so a flush only counts attempts that
        # began after it asked (an attempt already failing when it asked says nothing).
        self._begun = 0
        self._done = 0  # the number of the last attempt that finished
        self._failed_attempt = -1  # the number of the last attempt that failed
        self.failure: BaseException | None = None
        self.failure_where = ""
        self._reported = False
        self._backoff = 0.0
        self._started = False
        self._stopping = False

    # -- outboxes -----------------------------------------------------------------------------
    def add(self, outbox: Outbox) -> None:
        """Start delivering ``outbox`` (and start the threads with the first one)."""
        with self._lock:
            self._outboxes.append(outbox)
            if not self._started:
                self._started = True
                for target, name in ((self._journal_loop, "journal"), (self._send_loop, "sender")):
                    thread = threading.Thread(target=target, name=f"trackkit-{name}", daemon=True)
                    thread.start()
                    self._threads.append(thread)

    def wake_journal(self) -> None:
        """Journal queued operations now rather than at the next interval (a queue is full)."""
        self._journal_wake.set()

    def _snapshot(self) -> list[Outbox]:
        with self._lock:
            return list(self._outboxes)

    # -- threads ------------------------------------------------------------------------------
    def _journal_loop(self) -> None:
        while not self._stopping:
            self._journal_wake.wait(self.interval)
            self._journal_wake.clear()
            for outbox in self._snapshot():
                try:
                    outbox.to_journal()
                except Exception as e:  # a full disk must not kill the thread
                    self.record_failure(e, where=str(outbox.journal.path))
            # after a failure the sender waits out its backoff: waking it here would retry
            # every interval (one refused request a second per process, e.g. a wrong password)
            if self.failure is None:
                self._send_wake.set()

    def _send_loop(self) -> None:
        while not self._stopping:
            # after a failure, wait out the backoff unless a flush asks for an attempt now
            self._send_wake.wait(self._backoff or self.interval)
            self._send_wake.clear()
            try:
                self._attempt()
            except Exception:  # never let the thread die: the journal keeps the data
                logger.exception("trackkit's background writer hit an unexpected error")

    def _attempt(self) -> None:
        with self._progress:
            self._begun += 1
            number = self._begun
        ok = True
        for outbox in self._snapshot():
            try:
                if deliver(outbox.journal, self.backend, outbox.meta):
                    self._finished(outbox)
            except Exception as e:
                ok = False
                self.record_failure(e, where=str(outbox.journal.path))
                break
        with self._progress:
            self._done = number
            if ok:
                if self.failure is not None:
                    logger.warning(
                        "trackkit: the %s backend is reachable again; journaled operations "
                        "are delivered",
                        redact(self.backend.describe()),
                    )
                self.failure, self._reported, self._backoff = None, False, 0.0
            else:
                self._failed_attempt = number
                self._backoff = min(MAX_BACKOFF, max(0.5, self._backoff * 2))
            self._progress.notify_all()

    def record_failure(self, error: BaseException, where: str) -> None:
        """Record a failure (any thread); it is logged now and warned once in the user's thread."""
        first = self.failure is None
        self.failure, self.failure_where = error, where
        logger.debug("trackkit: send failure in %s", where, exc_info=error)
        if first:
            logger.warning("%s", self._message())

    def _message(self) -> str:
        error = self.failure
        return redact(
            f"trackkit: the {self.backend.describe()} backend failed "
            f"({type(error).__name__}: {error}); training goes on, operations are kept in the "
            f"journal ({self.failure_where}) and retried; `trackkit sync` replays them later"
        )

    def report(self, stacklevel: int = 3) -> None:
        """Warn about the current failure once (called from the user's thread)."""
        if self.failure is not None and not self._reported:
            self._reported = True
            warnings.warn(self._message(), TrackkitWarning, stacklevel=stacklevel + 1)

    def _finished(self, outbox: Outbox) -> None:
        with self._lock:
            if outbox in self._outboxes:
                self._outboxes.remove(outbox)
        # only now is the run done: a flush waiting on it must see the journal gone and
        # ``rejected_at`` set, not merely the outbox dropped from the list
        with self._progress:
            outbox.finish()
            self._progress.notify_all()

    # -- waiting ------------------------------------------------------------------------------
    def flush(self, outbox: Outbox, timeout: float | None) -> bool:
        """Journal the outbox's queue and deliver it now; False if delivery failed or timed out."""
        outbox.to_journal()
        with self._progress:
            start = self._begun
        self._send_wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._progress:
            while True:
                if outbox.delivered or (outbox.empty() and self._done > start):
                    return True
                if self._failed_attempt > start:
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._progress.wait(remaining if remaining is not None else 1.0)
                self._send_wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the threads and release the journals of runs not fully delivered (for sync).

        Waits up to ``timeout`` seconds for a send in progress, so nothing sent goes
        unacknowledged.
        """
        self._stopping = True
        self._journal_wake.set()
        self._send_wake.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)
        for outbox in self._snapshot():
            with contextlib.suppress(Exception):
                outbox.release()
