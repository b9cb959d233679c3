"""A run's outbox: what it logged, on its way to the backend.

An outbox holds one run's in-memory queue, its journal on disk and the metadata
``trackkit sync`` needs to replay it (backend, options, the backend's run id once known). The
run only puts operations into it; the writer moves them to the journal, sends them, and marks
the outbox delivered once the backend acknowledged everything, the end included.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from trackkit import journal as jn

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path


class Outbox:
    """One run's queue, journal and replay metadata.

    ``lock`` guards the queue. The run that owns the outbox holds it while it updates its own
    state and puts operations, so a log call takes one lock.
    """

    def __init__(self, journal_dir: Path, local_id: str, meta: dict[str, Any]) -> None:
        self.lock = threading.Lock()
        self._journal_lock = threading.Lock()
        self._queue: list[jn.Entry] = []
        self.meta = dict(meta)
        self.journal = jn.Journal.create(journal_dir, local_id, self.meta)
        #: where operations the backend refused for good were kept, once delivered
        self.rejected_at: Path | None = None
        #: True once the backend acknowledged everything, the end included (journal removed)
        self.delivered = False

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
        """How many operations wait in memory."""
        with self.lock:
            return len(self._queue)

    def to_journal(self) -> None:
        """Move queued operations into the journal, keeping their order."""
        with self._journal_lock:
            with self.lock:
                entries, self._queue = self._queue, []
            self.journal.append(entries)

    def empty(self) -> bool:
        """Nothing queued and nothing journaled is left to send."""
        with self.lock:
            queued = bool(self._queue)
        return not queued and self.journal.empty()

    def finish(self) -> None:
        """Remove the delivered journal (keeping refused operations aside) and mark it done."""
        self.rejected_at = self.journal.remove()
        self.delivered = True

    def release(self) -> None:
        """Journal what is queued and close the journal, leaving it for ``trackkit sync``."""
        try:
            self.to_journal()
        finally:
            self.journal.close()
