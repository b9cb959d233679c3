"""Where a run's operations wait when its journal file cannot be written.

A journal file can stop accepting writes in the middle of a run (a full disk, a file-size
limit, a permission change, an I/O error), or be impossible to create at all (an unwritable
trackkit directory). The run's outbox then moves what it holds into a :class:`MemoryJournal`:
the calls the writer makes on a journal (:class:`Store`), over a list in memory. The writer
goes on sending from it exactly as it sends from disk; only a process that dies before the
backend took the operations loses them, and that is reported, never silent.
"""

from __future__ import annotations

import bisect
import threading
from typing import TYPE_CHECKING, Any, Protocol

from trackkit import journal as jn
from trackkit.errors import InvalidInput

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path


class Store(Protocol):
    """What the writer and ``trackkit sync`` use of a journal (on disk or in memory)."""

    path: Path

    def append(self, ops: Sequence[jn.Entry]) -> None: ...
    def pending(self, limit: int) -> list[jn.Row]: ...
    def ack(self, seqs: Sequence[int]) -> None: ...
    def ack_range(self, first: int, last: int) -> None: ...
    def reject(self, rows: Sequence[jn.Row], reason: str) -> None: ...
    def rejected(self) -> list[tuple[jn.Row, str]]: ...
    def set_meta(self, **values: Any) -> None: ...
    def meta(self) -> dict[str, Any]: ...
    def count(self, kind: str | None = None) -> int: ...
    def empty(self) -> bool: ...
    def files_dir(self) -> Path: ...
    def kept_file(self, text: str | None) -> Path: ...
    def discard_file(self, local: Path) -> None: ...


def _seq(row: jn.Row) -> int:
    return row[0]


class MemoryJournal:
    """A journal's calls over a list in memory (thread-safe). ``path`` is the journal file it
    stands in for; ``disk``, that file when it exists, still answers for the artifact copies
    kept beside it (any other attribute is looked up there)."""

    def __init__(
        self,
        path: Path,
        rows: Sequence[jn.Row] = (),
        next_seq: int = 1,
        disk: jn.Journal | None = None,
    ) -> None:
        self.path = path
        self._disk = disk
        self._lock = threading.Lock()
        self._rows: list[jn.Row] = sorted(rows, key=_seq)
        self._next = max([next_seq, *(r[0] + 1 for r in self._rows)])
        self._refused: list[tuple[jn.Row, str]] = []
        self._meta: dict[str, Any] = {}

    def append(self, ops: Sequence[jn.Entry]) -> None:
        with self._lock:
            first = self._next
            self._rows += [(first + i, *op) for i, op in enumerate(ops)]
            self._next = first + len(ops)

    def pending(self, limit: int) -> list[jn.Row]:
        with self._lock:
            return self._rows[:limit]

    def ack(self, seqs: Sequence[int]) -> None:
        if seqs:
            self.ack_range(min(seqs), max(seqs))

    def ack_range(self, first: int, last: int) -> None:
        with self._lock:
            lo = bisect.bisect_left(self._rows, first, key=_seq)
            hi = bisect.bisect_right(self._rows, last, key=_seq)
            del self._rows[lo:hi]

    def reject(self, rows: Sequence[jn.Row], reason: str) -> None:
        for row in rows:
            self.ack_range(row[0], row[0])
        with self._lock:
            self._refused += [(row, reason) for row in rows]

    def rejected(self) -> list[tuple[jn.Row, str]]:
        with self._lock:
            return list(self._refused)

    def set_meta(self, **values: Any) -> None:
        with self._lock:
            self._meta.update(values)

    def meta(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._meta)

    def count(self, kind: str | None = None) -> int:
        with self._lock:
            if kind is None:
                return len(self._rows)
            return sum(1 for r in self._rows if r[1] == kind)

    def empty(self) -> bool:
        with self._lock:
            return not self._rows

    def files_dir(self) -> Path:
        return self.path.with_suffix(".files")

    def kept_file(self, text: str | None) -> Path:
        """The artifact copy an operation names (copies live beside the journal file)."""
        if self._disk is None:
            raise InvalidInput(f"no artifact copy is kept for {self.path}: it was never created")
        return self._disk.kept_file(text)

    def discard_file(self, local: Path) -> None:
        if self._disk is not None:
            self._disk.discard_file(local)

    def put_tag(self, key: str, text: str) -> None:
        """Set tag ``key`` to ``text``, replacing any value of it not sent yet (one pending
        update, however often it changes)."""
        with self._lock:
            self._rows = [r for r in self._rows if not (r[1] == jn.TAG and r[2] == key)]
            self._rows.append((self._next, jn.TAG, key, None, None, None, text))
            self._next += 1

    def drop_oldest_points(self, count: int) -> int:
        """Forget the oldest ``count`` metric points (memory is full and the backend is not
        taking them); return how many were dropped. Params, tags and the run's end are kept."""
        with self._lock:
            kept: list[jn.Row] = []
            dropped = 0
            for row in self._rows:
                if dropped < count and row[1] == jn.METRIC:
                    dropped += 1
                else:
                    kept.append(row)
            self._rows = kept
            return dropped
