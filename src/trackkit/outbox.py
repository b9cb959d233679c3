"""A run's outbox: what it logged, on its way to the backend.

An outbox holds one run's in-memory queue, its journal and the metadata ``trackkit sync``
needs to replay it (backend, options, the backend's run id once known). The run only puts
operations into it; the writer moves them to the journal, sends them, and marks the outbox
delivered once the backend acknowledged everything, the end included.

If the journal file cannot be written (a full disk, a file-size limit, permissions, an I/O
error) or created, the outbox keeps its operations in a
:class:`~trackkit.memory_journal.MemoryJournal` instead, and they are still sent: a journal
failure is never taken for a backend failure, and never loses an operation silently.

A run logged to several backends at once (:mod:`trackkit.multi`) has one outbox per backend,
each with its own writer, and puts every operation into all of them through a :class:`FanOut`.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from trackkit import journal as jn
from trackkit.memory_journal import MemoryJournal

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trackkit.memory_journal import Store


class JournalFailure(Exception):
    """A call on the journal file failed: the local disk, not the backend (``cause`` says why)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


class _Guarded:
    """The outbox's journal file as the writer uses it: an error of the file itself becomes
    :class:`JournalFailure`, so it is never taken for the backend's."""

    def __init__(self, journal: jn.Journal, outbox: Outbox) -> None:
        self._journal = journal
        self._outbox = outbox
        self.path = journal.path

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self._journal, method)(*args, **kwargs)
        except Exception as e:
            raise JournalFailure(e) from e

    def append(self, ops: Sequence[jn.Entry]) -> None:
        self._call("append", ops)

    def pending(self, limit: int) -> list[jn.Row]:
        rows: list[jn.Row] = self._call("pending", limit)
        return rows

    def ack(self, seqs: Sequence[int]) -> None:
        if seqs:
            self.ack_range(min(seqs), max(seqs))

    def ack_range(self, first: int, last: int) -> None:
        try:
            self._journal.ack_range(first, last)
        except Exception as e:
            # the backend has these: they must not be sent again from memory
            self._outbox.sent_unacked(first, last)
            raise JournalFailure(e) from e

    def reject(self, rows: Sequence[jn.Row], reason: str) -> None:
        try:
            self._journal.reject(rows, reason)
        except OverflowError:  # a number sqlite cannot hold either: kept in memory, reported
            for row in rows:
                self.ack_range(row[0], row[0])
            self._outbox.refused_here += [(row, reason) for row in rows]
        except Exception as e:
            raise JournalFailure(e) from e

    def rejected(self) -> list[tuple[jn.Row, str]]:
        found: list[tuple[jn.Row, str]] = self._call("rejected")
        return found

    def set_meta(self, **values: Any) -> None:
        self._call("set_meta", **values)

    def meta(self) -> dict[str, Any]:
        found: dict[str, Any] = self._call("meta")
        return found

    def count(self, kind: str | None = None) -> int:
        return int(self._call("count", kind))

    def empty(self) -> bool:
        return bool(self._call("empty"))

    def files_dir(self) -> Path:
        return self._journal.files_dir()

    def kept_file(self, text: str | None) -> Path:
        return self._journal.kept_file(text)  # raises InvalidInput for a foreign path

    def discard_file(self, local: Path) -> None:
        self._call("discard_file", local)


class Sink(Protocol):
    """Where a run puts the operations it validated: its :class:`Outbox`, or a
    :class:`FanOut` over several. The run holds ``lock`` while it puts."""

    lock: threading.Lock

    def put(self, entry: jn.Entry) -> int: ...

    def put_all(self, entries: Sequence[jn.Entry]) -> int: ...


def _remove_partial(path: Path) -> None:
    """Remove what a journal that could not be created left behind (best effort)."""
    for suffix in ("", "-wal", "-shm", ".lock"):
        with contextlib.suppress(OSError):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


class Outbox:
    """One run's queue, journal and replay metadata.

    ``lock`` guards the queue. The run that owns the outbox holds it while it updates its own
    state and puts operations, so a log call takes one lock. The writer owns the rest: the
    journal, the delivery state (``failure``, ``backoff``...) and the switch to memory.
    """

    def __init__(self, journal_dir: Path, local_id: str, meta: dict[str, Any]) -> None:
        self.lock = threading.Lock()
        self._journal_lock = threading.Lock()
        self._queue: list[jn.Entry] = []
        self.meta = dict(meta)
        self.path = journal_dir / f"{local_id}.db"
        #: why the journal file cannot be written; None while it can
        self.journal_error: BaseException | None = None
        #: metric points dropped from memory while neither journal nor backend could take them
        self.lost = 0
        self._held: list[jn.Entry] = []  # refused by the journal file, not yet in memory
        self._unacked: list[tuple[int, int]] = []  # sent, but the journal could not record it
        self._disk: jn.Journal | None = None
        self._loaded: list[int] = []  # numbers of the journal file's operations moved to memory
        self._disk_unread = False  # the journal file could not be read back: keep it for sync
        try:
            self._disk = jn.Journal.create(journal_dir, local_id, self.meta)
        except Exception as e:  # an unwritable directory: operate in memory
            self.journal_error = e
            _remove_partial(self.path)
        self._memory: MemoryJournal | None = None
        if self._disk is None:
            self._memory = MemoryJournal(self.path)
        #: where operations the backend refused for good were kept, once delivered
        self.rejected_at: Path | None = None
        #: True once the backend acknowledged everything, the end included (journal removed)
        self.delivered = False
        # delivery state, owned by the writer
        self.failure: BaseException | None = None
        self.failed_attempt = -1
        self.backoff = 0.0
        self.retry_at = 0.0
        self.urgent = False
        self.ended_sent = False  # the backend has the run's end
        self._saved: set[int] = set()  # numbers of operations in memory also written to disk
        #: operations the backend refused for good that the journal file could not keep
        self.refused_here: list[tuple[jn.Row, str]] = []

    @property
    def journal(self) -> Store:
        """Where the operations not yet acknowledged are: the journal file, or memory."""
        return self._memory if self._memory is not None else self._disk  # type: ignore[return-value]

    @property
    def in_memory(self) -> bool:
        """True once operations are kept in memory because the journal file failed."""
        return self._memory is not None

    @property
    def run_id(self) -> str | None:
        """The backend's id of the run; None while it exists only locally."""
        value = self.meta.get("run_id")
        return str(value) if value else None

    def put(self, entry: jn.Entry) -> int:
        """Queue one operation (caller holds ``lock``); return the queue's length."""
        queue = self._queue
        queue.append(entry)
        return len(queue)

    def put_all(self, entries: Sequence[jn.Entry]) -> int:
        """Queue operations in order (caller holds ``lock``); return the queue's length."""
        self._queue.extend(entries)
        return len(self._queue)

    def queued(self) -> int:
        """How many operations wait in memory before the journal."""
        with self.lock:
            return len(self._queue)

    def held(self) -> int:
        """How many operations wait in memory because the journal file failed."""
        with self._journal_lock:
            memory = self._memory.count() if self._memory is not None else 0
            return len(self._held) + memory

    def to_journal(self) -> None:
        """Move queued operations into the journal, keeping their order.

        If the journal file refuses them, they are kept in memory (``journal_error`` says
        why); an interrupt (KeyboardInterrupt) before they are kept puts them back in the queue.
        """
        with self._journal_lock:
            entries: list[jn.Entry] = []
            try:
                with self.lock:
                    entries, self._queue = self._queue, []
                if entries:
                    self._store(entries)
            except BaseException:
                if entries:
                    with self.lock:
                        self._queue[:0] = entries
                raise

    def _store(self, entries: list[jn.Entry]) -> None:
        """(caller holds ``_journal_lock``) Keep ``entries``: journal file, or memory."""
        if self._memory is not None:
            self._memory.append(entries)
            return
        if self.journal_error is None and self._disk is not None:
            try:
                self._disk.append(entries)
                return
            except Exception as e:
                self.journal_error = e
        self._held += entries

    def keep(self, local: Path) -> str:
        """Copy an artifact beside the journal file for a later upload; return the text of
        its ARTIFACT operation. Raises OSError if the copy cannot be made."""
        if self._disk is None:
            raise OSError(f"the journal {self.path} could not be created ({self.journal_error})")
        return self._disk.keep(local)

    def sendable(self) -> Store:
        """The journal the writer sends from (sender thread only): the journal file, guarded,
        or, once it failed, the operations in memory."""
        if self.journal_error is not None and self._memory is None:
            self._to_memory()
        if self._memory is not None:
            return self._memory
        assert self._disk is not None
        return _Guarded(self._disk, self)

    def sent_unacked(self, first: int, last: int) -> None:
        """The backend has ``first..last`` but the journal file could not record it."""
        self._unacked.append((first, last))

    def _to_memory(self) -> None:
        """Move what the journal file holds, and what it refused, into memory."""
        with self._journal_lock:
            rows: list[jn.Row] = []
            if self._disk is not None:
                try:
                    rows = self._disk.pending(sys.maxsize)
                except Exception:
                    self._disk_unread = True
            rows = [r for r in rows if not any(a <= r[0] <= b for a, b in self._unacked)]
            self._loaded = [r[0] for r in rows]
            top = max((b for _, b in self._unacked), default=0)
            memory = MemoryJournal(self.path, rows, next_seq=top + 1, disk=self._disk)
            memory.append(self._held)
            self._held = []
            memory.set_meta(**self.meta)
            self._memory = memory

    def put_lost_tag(self, key: str) -> None:
        """Tag the run with how many points were lost (one pending update, never piling up)."""
        with self._journal_lock:
            if self._memory is not None:
                self._memory.put_tag(key, str(self.lost))
                return
            self._held = [e for e in self._held if not (e[0] == jn.TAG and e[1] == key)]
            self._held.append((jn.TAG, key, None, None, None, str(self.lost)))

    def drop_oldest_points(self, count: int) -> int:
        """Forget the oldest ``count`` metric points kept in memory; return how many."""
        with self._journal_lock:
            if self._memory is not None:
                dropped = self._memory.drop_oldest_points(count)
            else:
                kept, dropped = [], 0
                for entry in self._held:
                    if dropped < count and entry[0] == jn.METRIC:
                        dropped += 1
                    else:
                        kept.append(entry)
                self._held = kept
        self.lost += dropped
        return dropped

    def empty(self) -> bool:
        """Nothing queued, held or journaled is left to send."""
        with self.lock:
            queued = bool(self._queue)
        with self._journal_lock:
            held = bool(self._held)
        try:
            return not queued and not held and self.journal.empty()
        except Exception:  # the journal file cannot be read: not known to be empty
            return False

    def refused(self) -> list[tuple[jn.Row, str]]:
        """Operations the backend refused for good that are kept in memory only (the journal
        file was failing, or could not hold them)."""
        memory = self._memory.rejected() if self._memory is not None else []
        return self.refused_here + memory

    def finish(self) -> None:
        """Remove the delivered journal (keeping refused operations aside) and mark it done."""
        if self._disk is not None:
            if self._disk_unread:
                self._disk.close()  # what it holds could not be read: `trackkit sync` may
            else:
                self.rejected_at = self._disk.remove()
        self.delivered = True

    def release(self) -> int:
        """Journal what is queued and close the journal, leaving it for ``trackkit sync``.

        Returns how many operations kept in memory could be written neither to the backend
        nor to the journal file (lost with this process).
        """
        lost = 0
        try:
            self.to_journal()
        finally:
            with self._journal_lock:
                lost = self._save_memory() if self._memory is not None else len(self._held)
                if self._disk is not None:
                    self._disk.close()
        return lost

    def save_memory(self) -> int:
        """Write what memory holds to the journal file, if the file takes it now; return how
        many operations it did not take (0 when nothing is kept in memory)."""
        self.to_journal()
        with self._journal_lock:
            return 0 if self._memory is None else self._save_memory()

    def _save_memory(self) -> int:
        """(caller holds ``_journal_lock``) See :meth:`save_memory`."""
        assert self._memory is not None
        rows = self._memory.pending(sys.maxsize)
        loaded = set(self._loaded)
        fresh = [r for r in rows if r[0] not in loaded and r[0] not in self._saved]
        if self._disk is None:
            return len(fresh)
        try:
            self._disk.append([r[1:] for r in fresh])
        except Exception:
            return len(fresh)
        self._saved.update(r[0] for r in fresh)
        left = {r[0] for r in rows}
        spans: list[list[int]] = []  # delivered runs of the loaded numbers, between those left
        for seq in self._loaded:
            if seq in left:
                spans.append([])
            elif spans and spans[-1]:
                spans[-1][1] = seq
            else:
                spans.append([seq, seq])
        with contextlib.suppress(Exception):  # else sync sends those again: MLflow keeps one
            for first, last in (s for s in spans if s):
                self._disk.ack_range(first, last)
        return 0


class FanOut:
    """The queue of a run logged to several backends: every operation put is put into each
    backend's outbox, in order, under that outbox's own lock.

    So an operation is validated once, by the run, and each backend's writer journals and
    delivers its copy on its own: a backend that is slow, down or refusing holds up no other.
    ``lock`` is the run's; an outbox's own lock is taken inside it, never the other way round.
    """

    def __init__(self, outboxes: Sequence[Outbox]) -> None:
        self.lock = threading.Lock()
        self.outboxes = tuple(outboxes)

    def put(self, entry: jn.Entry) -> int:
        """Queue one operation in every outbox (caller holds ``lock``); return the longest
        queue's length."""
        size = 0
        for outbox in self.outboxes:
            with outbox.lock:
                size = max(size, outbox.put(entry))
        return size

    def put_all(self, entries: Sequence[jn.Entry]) -> int:
        """Queue operations in order in every outbox (caller holds ``lock``); return the
        longest queue's length."""
        size = 0
        for outbox in self.outboxes:
            with outbox.lock:
                size = max(size, outbox.put_all(entries))
        return size
