"""The local journal: a run's operations not yet acknowledged by the backend, on disk.

One sqlite file (WAL mode) per run under ``<trackkit dir>/journal/``. The background writer
appends what a run logs, sends it in batches, and deletes what the backend acknowledged, so
an operation is either in the journal or at the backend, never lost and never sent twice
once acknowledged. A journal left behind (the service was unreachable, or the process was
killed) is replayed by ``trackkit sync``. While a process owns a journal it holds an
exclusive lock on ``<file>.lock``; sync skips journals whose owner is alive.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

DEFAULT_DIR = ".trackkit"
NAN = float("nan")
DIR_ENV = "TRACKKIT_DIR"

# Operation kinds, in the `kind` column.
METRIC, PARAM, TAG, END, ARTIFACT, START, DEFERRED = "m", "p", "t", "e", "a", "s", "d"
#: kinds the writer sends together through Backend.log_batch
BATCHED = frozenset((METRIC, PARAM, TAG))


class Op(NamedTuple):
    """One journaled operation. Unused fields are None."""

    kind: str
    key: str | None = None
    num: float | None = None
    step: int | None = None
    ts: int | None = None
    text: str | None = None


class Row(NamedTuple):
    seq: int
    op: Op


def journal_dir(option: str | os.PathLike[str] | None = None) -> Path:
    """Where journals live: the option, else ``$TRACKKIT_DIR``, else ``./.trackkit``; absolute."""
    base = Path(option or os.environ.get(DIR_ENV) or DEFAULT_DIR)
    return (base / "journal").resolve()


class Journal:
    """A run's journal file. Thread-safe: one connection, guarded by a lock."""

    def __init__(self, path: Path, *, own: bool = True) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._closed = False
        self._lock_file: Any = None
        if own:
            self._lock_file = open(f"{path}.lock", "a+")  # noqa: SIM115 - held while owned
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._lock_file.close()
                raise
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS ops(seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT, "
            "key TEXT, num REAL, step INTEGER, ts INTEGER, text TEXT)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS rejected(seq INTEGER PRIMARY KEY, kind TEXT, key TEXT, "
            "num REAL, step INTEGER, ts INTEGER, text TEXT, reason TEXT)"
        )

    @classmethod
    def create(cls, directory: Path, name: str, meta: dict[str, Any]) -> Journal:
        directory.mkdir(parents=True, exist_ok=True)
        journal = cls(directory / f"{name}.db")
        journal.set_meta(**meta)
        return journal

    @classmethod
    def try_open(cls, path: Path) -> Journal | None:
        """Open a journal for replay, or None if a live process owns it."""
        try:
            return cls(path)
        except BlockingIOError:
            return None

    # -- metadata ---------------------------------------------------------------------------
    def set_meta(self, **values: Any) -> None:
        rows = [(k, json.dumps(v)) for k, v in values.items()]
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", rows)

    def meta(self) -> dict[str, Any]:
        with self._lock:
            rows = self._db.execute("SELECT key, value FROM meta").fetchall()
        return {k: json.loads(v) for k, v in rows}

    # -- operations -------------------------------------------------------------------------
    def append(self, ops: Sequence[Op]) -> None:
        """Append operations in one transaction (durable against a process crash on return)."""
        if not ops:
            return
        # sqlite stores NaN as NULL: keep it as text instead
        ops = [o._replace(num=None, text="nan") if o.num != o.num else o for o in ops]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO ops(kind, key, num, step, ts, text) VALUES (?, ?, ?, ?, ?, ?)", ops
            )
            self._db.execute("COMMIT")

    def pending(self, limit: int) -> list[Row]:
        """The oldest ``limit`` unacknowledged operations, in the order they were logged."""
        with self._lock:
            if self._closed:
                return []
            rows = self._db.execute(
                "SELECT seq, kind, key, num, step, ts, text FROM ops ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [
            Row(
                r[0], Op(r[1], r[2], NAN, *r[4:]) if r[1] == METRIC and r[3] is None else Op(*r[1:])
            )
            for r in rows
        ]

    def ack(self, seqs: Sequence[int]) -> None:
        """Forget acknowledged operations: they are never sent again.

        ``seqs`` are the oldest pending operations (a prefix of ``pending``), so one range
        delete forgets them all.
        """
        if seqs:
            with self._lock:
                self._db.execute("DELETE FROM ops WHERE seq <= ?", (max(seqs),))

    def reject(self, rows: Sequence[Row], reason: str) -> None:
        """Set aside operations the backend refused for good: kept, never sent again."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO rejected VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.seq, *r.op, reason) for r in rows],
            )
            self._db.executemany("DELETE FROM ops WHERE seq = ?", [(r.seq,) for r in rows])
            self._db.execute("COMMIT")

    def rejected(self) -> list[tuple[Row, str]]:
        """Operations set aside, with the backend's reason."""
        with self._lock:
            if self._closed:
                return []
            rows = self._db.execute(
                "SELECT seq, kind, key, num, step, ts, text, reason FROM rejected ORDER BY seq"
            ).fetchall()
        return [(Row(r[0], Op(*r[1:7])), r[7]) for r in rows]

    def ack_range(self, first: int, last: int) -> None:
        """Forget the acknowledged operations ``first`` to ``last`` (a batch sent on its own)."""
        with self._lock:
            self._db.execute("DELETE FROM ops WHERE seq BETWEEN ? AND ?", (first, last))

    def count(self, kind: str | None = None) -> int:
        """How many operations (of ``kind``) are not yet acknowledged."""
        with self._lock:
            if self._closed:
                return 0
            if kind is None:
                return int(self._db.execute("SELECT COUNT(*) FROM ops").fetchone()[0])
            query = "SELECT COUNT(*) FROM ops WHERE kind = ?"
            return int(self._db.execute(query, (kind,)).fetchone()[0])

    def files_dir(self) -> Path:
        """Where copies of artifacts that could not be uploaded are kept."""
        return self.path.with_suffix(".files")

    # -- lifecycle --------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._db.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def remove(self) -> Path | None:
        """Delete the journal and its files (everything in it was delivered).

        A journal holding refused operations is kept instead, renamed ``<name>.db.rejected``
        (``trackkit sync`` no longer picks it up); its path is returned.
        """
        kept = bool(self.rejected())
        self.close()
        if kept:
            target = Path(f"{self.path}.rejected")
            self.path.rename(target)
            Path(f"{self.path}.lock").unlink(missing_ok=True)
            return target
        for suffix in ("", "-wal", "-shm", ".lock"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        shutil.rmtree(self.files_dir(), ignore_errors=True)
        return None


def now_ms() -> int:
    return int(time.time() * 1000)
