"""The background writer: logging never waits on, and never dies of, the tracking service.

Log calls only validate and append to the run's in-memory queue. Per tracker, two daemon
threads do the rest:

- the *journal* thread moves queued operations into each run's on-disk journal every
  ``interval`` seconds (sooner when a queue passes ``memory_bound``), so a hard kill loses
  at most about one interval of points and memory stays bounded;
- the *sender* thread sends journaled operations in batches shaped to the backend's limits
  and deletes each batch from the journal once the backend acknowledged it. On a failure it
  keeps everything, reports once, and retries that run with exponential backoff; every other
  run goes on (runs are independent: one stuck run never holds up another).

A journal file that cannot be written is not a backend failure: the run's operations are kept
in memory and still sent (see :mod:`trackkit.outbox`).

``deliver`` is shared with ``trackkit sync``, which replays journals left on disk.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, overload

from trackkit import journal as jn
from trackkit import normalize
from trackkit._secrets import redact
from trackkit.backend import end_run as end_backend_run
from trackkit.backend import start_run as start_backend_run
from trackkit.entities import Metric
from trackkit.errors import InvalidInput, NotFound, TrackkitWarning
from trackkit.outbox import JournalFailure

if TYPE_CHECKING:
    from pathlib import Path

    from trackkit.backend import Backend
    from trackkit.entities import ParamValue
    from trackkit.memory_journal import Store
    from trackkit.outbox import Outbox

MAX_BACKOFF = 30.0
#: send steps (batches) one run gets per round before the next run's turn
ROUND = 10
#: the tag a run gets when metric points had to be dropped (see Writer.spill)
LOST_TAG = "trackkit.lost_points"
#: exception names that say the data itself broke a rule of the store (DB-API, SQLAlchemy)
_DATA_ERRORS = frozenset(("IntegrityError", "DataError"))
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


def refused_for_good(error: BaseException) -> bool:
    """Whether the backend refused the data itself (it would refuse it every time), rather
    than failed: trackkit's InvalidInput or NotFound, or, anywhere in the chain of causes, a
    number the store cannot hold (OverflowError) or a broken constraint (IntegrityError,
    DataError)."""
    seen: set[int] = set()
    at: BaseException | None = error
    while at is not None and id(at) not in seen:
        seen.add(id(at))
        if isinstance(at, (InvalidInput, NotFound, OverflowError)):
            return True
        if type(at).__name__ in _DATA_ERRORS:
            return True
        at = at.__cause__ or at.__context__
    return False


def _send_or_set_aside(backend: Backend, run_id: str, rows: list[jn.Row], journal: Store) -> None:
    """Send a batch; if the backend refuses it for good, find the refused operations by
    halving and set them aside in the journal (kept, reported), so they block nothing."""
    try:
        _send_batch(backend, run_id, rows)
    except Exception as e:
        if isinstance(e, JournalFailure) or not refused_for_good(e):
            raise
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
    backend: Backend, run_id: str, batches: list[list[jn.Row]], journal: Store
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


#: local id -> backend id of every run this process created from its journal, so a child
#: started while its parent existed only locally finds its parent's real id
_STARTED: dict[str, str] = {}


def started_id(local_id: str, directory: Path | None = None) -> str | None:
    """The backend's id of the run journaled as ``local_id``, once it was created; else None.

    Looks in this process first, then in that run's journal in ``directory`` (read only).
    """
    found = _STARTED.get(local_id)
    if found is None and directory is not None:
        path = directory / f"{local_id}.db"
        if path.is_file():
            try:
                parent = jn.Journal(path, own=False, create=False)
                try:
                    found = parent.meta().get("run_id") or None
                finally:
                    parent.close()
            except Exception:  # unreadable or gone: the parent is not known here
                found = None
    return None if found is None else str(found)


def ensure_started(journal: Store, backend: Backend, meta: dict[str, Any]) -> str:
    """The backend's id of the journal's run, creating the run there if it was started offline.

    A run with a parent is created as its child; a parent that was itself started offline must
    be created first (until then this raises, and the run is retried like any failed send).
    """
    run_id = meta.get("run_id")
    if not run_id:
        parent = meta.get("parent_id") or None
        if parent is not None and str(parent).startswith("local-"):
            resolved = started_id(str(parent), journal.path.parent)
            if resolved is None:
                raise RuntimeError(
                    f"the parent run {parent} of this run is not created at the backend yet; "
                    "the run is created once its parent is (trackkit sync sends the parent too)"
                )
            parent = resolved
            meta["parent_id"] = parent
            journal.set_meta(parent_id=parent)
        handle = start_backend_run(
            backend,
            meta["experiment"],
            meta.get("name"),
            None,
            parent_id=parent,
            start_time=_kept_time(backend, meta.get("started")),
        )
        run_id = handle.id
        meta["run_id"] = run_id
        journal.set_meta(run_id=run_id)
        if meta.get("local_id"):
            _STARTED[str(meta["local_id"])] = str(run_id)
    return str(run_id)


def _kept_time(backend: Backend, ms: Any) -> int | None:
    """``ms`` (a journal's time of a run's start or end) where ``backend`` keeps run times and
    it is a time the backend can hold; None (the backend's now) otherwise. A journal is
    untrusted input: anything else in it is ignored, not sent."""
    if not backend.capabilities.run_times or type(ms) is not int:
        return None
    try:
        return normalize.timestamp_ms("", ms, backend.limits.max_timestamp, what="a run time")
    except InvalidInput:
        return None


def deliver(
    journal: Store, backend: Backend, meta: dict[str, Any], budget: int | None = None
) -> bool:
    """Send everything in ``journal`` to ``backend``; True once the run's end was delivered.

    With ``budget``, stop after that many sends (the writer's turn for one run; the rest is
    sent on its next turn). Raises whatever the backend raises; what was not acknowledged
    stays in the journal.
    """
    ended = False
    lanes = max(1, backend.limits.concurrent_batches)
    steps = 0
    while budget is None or steps < budget:
        steps += 1
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
        seq, kind, key, _, _, ts, text = rows[0]
        if kind == jn.END:  # a run delivered late still ends when run.end() was called
            end_backend_run(backend, run_id, text or "FINISHED", _kept_time(backend, ts))
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
    return ended


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
        # Delivery rounds are numbered when they begin, so a flush only counts rounds that
        # began after it asked (a round already failing when it asked says nothing).
        self._begun = 0
        self._done = 0  # the number of the last round that finished
        #: the backend's last failure while any run's delivery is failing; None when all flow
        self.failure: BaseException | None = None
        self.failure_where = ""
        self._reported = False
        #: the first journal file that could not be written (the local disk, not the backend)
        self.journal_failure: BaseException | None = None
        self.journal_failure_where = ""
        self._journal_reported = False
        self._more = False
        self._started = False
        self._stopping = False

    # -- outboxes -----------------------------------------------------------------------------
    def add(self, outbox: Outbox) -> None:
        """Start delivering ``outbox`` (and start the threads with the first one)."""
        if outbox.journal_error is not None:
            self._journal_failed(outbox, outbox.journal_error)
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

    # -- the journal, and memory when it fails -------------------------------------------------
    def spill(self, outbox: Outbox, wait: bool = False) -> None:
        """Journal the outbox's queue now. If its journal file failed, the operations stay in
        memory, bounded: past twice ``memory_bound`` a logging thread (``wait``) waits while
        the backend takes them; while the backend is failing, the oldest metric points are
        dropped, counted, reported and tagged on the run (never silently)."""
        outbox.to_journal()
        if outbox.journal_error is None:
            return
        self._journal_failed(outbox, outbox.journal_error)
        capacity = 2 * self.memory_bound
        if outbox.held() <= capacity:
            return
        self._send_wake.set()
        if wait:
            with self._progress:
                while outbox.held() > capacity and outbox.failure is None and not self._stopping:
                    self._progress.wait(0.5)
                    self._send_wake.set()
        excess = outbox.held() - capacity
        if excess > 0 and outbox.failure is not None:
            dropped = outbox.drop_oldest_points(excess)
            if dropped:
                self._lost(outbox, dropped)

    def _lost(self, outbox: Outbox, dropped: int) -> None:
        outbox.put_lost_tag(LOST_TAG)  # the run carries the count: a tag sent with the rest
        logger.warning(
            "%s",
            redact(
                f"trackkit: dropped the oldest {dropped} metric points of run "
                f"{outbox.run_id or outbox.path.stem} ({outbox.lost} so far): its journal "
                f"{outbox.path} cannot be written ({self._cause(outbox.journal_error)}) and the "
                f"{self.backend.describe()} backend is not taking them "
                f"({self._cause(outbox.failure)}); the run is tagged {LOST_TAG}"
            ),
        )

    @staticmethod
    def _cause(error: BaseException | None) -> str:
        # sqlite's "cannot rollback" after a failed write hides the write's own error
        while error is not None and "rollback" in str(error) and error.__context__ is not None:
            error = error.__context__
        return f"{type(error).__name__}: {error}"

    def _journal_failed(self, outbox: Outbox, error: BaseException) -> None:
        """A journal file failed (any thread): logged at once, warned once in the user's thread."""
        if outbox.journal_error is None:
            outbox.journal_error = error
        if self.journal_failure is None:
            self.journal_failure, self.journal_failure_where = error, str(outbox.path)
            logger.warning("%s", self._journal_message())

    def _journal_message(self) -> str:
        return redact(
            f"trackkit: the journal {self.journal_failure_where} cannot be written "
            f"({self._cause(self.journal_failure)}); operations are kept in memory and still "
            f"sent to the {self.backend.describe()} backend, but what it has not taken when "
            "this process ends is lost (and reported); free disk space or make the trackkit "
            "directory writable (journal_dir, $TRACKKIT_DIR)"
        )

    def keep(self, outbox: Outbox) -> int:
        """Write what an outbox keeps in memory to its journal file, if the file takes it now;
        return how many operations it could not keep (lost if the process ends)."""
        return outbox.save_memory()

    # -- threads ------------------------------------------------------------------------------
    def _journal_loop(self) -> None:
        while not self._stopping:
            self._journal_wake.wait(self.interval)
            self._journal_wake.clear()
            for outbox in self._snapshot():
                try:
                    self.spill(outbox)
                except Exception:  # never let the thread die: the queue keeps the data
                    logger.exception("trackkit's journal thread hit an unexpected error")
            # a run whose sends fail waits out its own backoff (see _attempt)
            self._send_wake.set()

    def _send_loop(self) -> None:
        while not self._stopping:
            if not self._more:
                self._send_wake.wait(self._pause())
            self._send_wake.clear()
            try:
                self._more = self._attempt()
            except Exception:  # never let the thread die: the journal keeps the data
                self._more = False
                logger.exception("trackkit's background writer hit an unexpected error")

    def _pause(self) -> float:
        """How long the sender waits for work: the interval, or until a failing run's retry."""
        now = time.monotonic()
        retries = [o.retry_at - now for o in self._snapshot() if o.failure is not None]
        return self.interval if not retries else min(self.interval, max(0.01, min(retries)))

    def _attempt(self) -> bool:
        """One round: each run in turn sends up to ``ROUND`` batches; a run whose sends fail
        backs off alone. Returns True if a run has more to send at once."""
        with self._progress:
            self._begun += 1
            number = self._begun
        more = False
        answered = False  # the backend took a send this round (not merely: nothing to send)
        for outbox in self._snapshot():
            waiting = outbox.failure is not None and outbox.retry_at > time.monotonic()
            if waiting and not outbox.urgent:
                continue  # waiting out its backoff (a flush asks for an attempt now)
            outbox.urgent = False
            try:
                store = outbox.sendable()
                had_work = not store.empty()
                if deliver(store, self.backend, outbox.meta, budget=ROUND):
                    outbox.ended_sent = True
                done = store.empty()
                answered = answered or had_work
            except JournalFailure as e:  # the local disk, not the backend: go on from memory
                self._journal_failed(outbox, e.cause)
                more = True
                continue
            except Exception as e:
                outbox.failure, outbox.failed_attempt = e, number
                outbox.backoff = min(MAX_BACKOFF, max(0.5, outbox.backoff * 2))
                outbox.retry_at = time.monotonic() + outbox.backoff
                self.record_failure(e, where=str(outbox.path))
                continue
            outbox.failure, outbox.backoff = None, 0.0
            if done and outbox.ended_sent:
                self._finished(outbox)
            elif not done:
                more = True
        with self._progress:
            self._done = number
            if (
                self.failure is not None
                and answered
                and all(o.failure is None for o in self._snapshot())
            ):
                logger.warning(
                    "trackkit: the %s backend is reachable again; journaled operations "
                    "are delivered",
                    redact(self.backend.describe()),
                )
                self.failure, self._reported = None, False
            self._progress.notify_all()
        return more

    def record_failure(self, error: BaseException, where: str) -> None:
        """Record a failure (any thread); it is logged now and warned once in the user's thread."""
        first = self.failure is None
        self.failure, self.failure_where = error, where
        logger.debug("trackkit: send failure in %s: %s", where, redact(self._cause(error)))
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
        """Warn about the current failures once each (called from the user's thread)."""
        if self.failure is not None and not self._reported:
            self._reported = True
            warnings.warn(self._message(), TrackkitWarning, stacklevel=stacklevel + 1)
        if self.journal_failure is not None and not self._journal_reported:
            self._journal_reported = True
            warnings.warn(self._journal_message(), TrackkitWarning, stacklevel=stacklevel + 1)

    def describe(self) -> str:
        """One line on this writer's lane: its backend, the runs it delivers, what they have
        pending (queued or journaled), and the failure being retried, if any."""
        outboxes = self._snapshot()
        pending = 0
        for outbox in outboxes:
            try:
                pending += outbox.queued() + outbox.journal.count()
            except Exception:  # a journal that cannot be read: its state is in the failures
                continue
        runs = f"{len(outboxes)} run{'' if len(outboxes) == 1 else 's'}"
        state = f"{self.backend.describe()}: {runs} in delivery, {pending} operations pending"
        error = self.failure
        if error is not None:
            state += (
                f"; failing ({type(error).__name__}: {error}), retried with backoff, kept in "
                f"the journal ({self.failure_where})"
            )
        if self.journal_failure is not None:
            state += (
                f"; the journal {self.journal_failure_where} cannot be written "
                f"({self._cause(self.journal_failure)}), operations kept in memory"
            )
        if error is None and self.journal_failure is None:
            state += "; delivering" if pending else "; all delivered"
        return redact(" ".join(state.split()))

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
        self.spill(outbox)
        with self._progress:
            start = self._begun
        outbox.urgent = True
        self._send_wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._progress:
            while True:
                if outbox.delivered or (outbox.empty() and self._done > start):
                    return True
                if outbox.failed_attempt > start:
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._progress.wait(min(remaining, 1.0) if remaining is not None else 1.0)
                outbox.urgent = True
                self._send_wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the threads and release the journals of runs not fully delivered (for sync).

        Waits up to ``timeout`` seconds for a send in progress, so nothing sent goes
        unacknowledged. Operations that neither the backend nor the journal file took are
        reported lost.
        """
        self._stopping = True
        self._journal_wake.set()
        self._send_wake.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)
        for outbox in self._snapshot():
            try:
                lost = outbox.release()
            except Exception:
                continue
            if lost:
                warnings.warn(
                    redact(
                        f"trackkit: {lost} operations of run {outbox.run_id or outbox.path.stem} "
                        f"are lost: the {self.backend.describe()} backend did not take them and "
                        f"the journal {outbox.path} could not be written "
                        f"({self._cause(outbox.journal_error)})"
                    ),
                    TrackkitWarning,
                    stacklevel=3,
                )
