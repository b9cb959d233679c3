"""The local journal: a run's operations not yet acknowledged by the backend, on disk.

One sqlite file (WAL mode) per run under ``<trackkit dir>/journal/``. The background writer
appends what a run logs, sends it in batches, and deletes what the backend acknowledged, so
an operation is either in the journal or at the backend, never lost and never sent twice
once acknowledged. A journal left behind (the service was unreachable, or the process was
killed) is replayed by ``trackkit sync``. While a process owns a journal it holds an
exclusive lock on ``<file>.lock``; sync skips journals whose owner is alive.

Read back, a journal is untrusted input (it may come from someone else, or be damaged):
:func:`untrusted_reason` says whether sync may touch a file at all, :meth:`Journal.examine`
finds damage, and :meth:`Journal.set_aside` moves a damaged file aside and salvages what it
can. See ``docs/reliability.md`` for the file format and the threat model.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import pickle
import re
import shutil
import sqlite3
import stat
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from trackkit.errors import InvalidInput, TrackkitError

DEFAULT_DIR = ".trackkit"
#: the journal's file format (sqlite ``user_version``); formats 1 (a row per operation) and 2
#: (chunks without checksums) are upgraded when opened
FORMAT = 3
#: sqlite ``application_id`` of a trackkit journal ("tkjl"): with the format, the file's marker
MARKER = 0x746B6A6C
#: operations per stored chunk
CHUNK = 1000
NAN = float("nan")
DIR_ENV = "TRACKKIT_DIR"
#: the names trackkit gives journals: a run's local id, or a tracker's deferred calls
NAME = re.compile(r"(?:local|deferred)-[0-9a-f]{32}\.db")
#: the suffix of a damaged journal moved aside by sync (never picked up again)
DAMAGED = ".damaged"

# Operation kinds, the first field of an operation.
METRIC, PARAM, TAG, END, ARTIFACT, START, DEFERRED = "m", "p", "t", "e", "a", "s", "d"
#: kinds the writer sends together through Backend.log_batch
BATCHED = frozenset((METRIC, PARAM, TAG))
#: metadata a journal must hold to be replayed
REQUIRED_META = ("backend", "options")
#: operation numbers tried one by one past a damaged page before salvage gives up on the rest
PROBES = 200_000

_SQLITE_HEADER = b"SQLite format 3\x00"
_COMPANIONS = ("-wal", "-shm", ".lock")


class JournalDamaged(TrackkitError):
    """A journal's content fails its checks (checksum, count, numbering, sqlite's own)."""


class Refused(TrackkitError):
    """``trackkit sync`` must not replay this file (not trackkit's, another user's, read-only)."""


class Op(NamedTuple):
    """One journaled operation. Unused fields are None."""

    kind: str
    key: str | None = None
    num: float | None = None
    step: int | None = None
    ts: int | None = None
    text: str | None = None


#: An operation as queued and journaled: a plain tuple in :class:`Op`'s field order. The hot
#: path builds these directly: plain tuples of numbers and strings are untracked by Python's
#: cycle collector, so a long queue of them adds nothing to every full collection's work
#: (an ``Op`` namedtuple stays tracked), which in a process that imported an SDK is the
#: difference between ~10 and ~14 full collections while sending 50,000 points.
Entry = tuple[str, str | None, float | None, int | None, int | None, str | None]

#: A journaled operation with its sequence number: ``(seq, kind, key, num, step, ts, text)``.
Row = tuple[int, str, str | None, float | None, int | None, int | None, str | None]


class _PlainData(pickle.Unpickler):
    """Unpickles plain data only: a journal can never name code to run."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"a journal holds plain data only, not {module}.{name}")


def _loads(blob: bytes) -> list[Entry]:
    return list(_PlainData(io.BytesIO(blob)).load())


def _chunk(first: int, count: int, blob: Any, crc: int | None) -> list[Entry]:
    """A stored chunk's operations, after checking its checksum, count and shape."""
    where = f"operations {first}-{first + count - 1}"
    if not isinstance(blob, bytes):
        raise JournalDamaged(f"{where}: no data")
    if crc is not None and zlib.crc32(blob) != crc:
        raise JournalDamaged(f"{where} fail their checksum")
    try:
        ops = _loads(blob)
    except Exception as e:  # any unpickling error: the bytes are not what was written
        raise JournalDamaged(f"{where} are unreadable ({type(e).__name__}: {e})") from e
    if len(ops) != count or not all(type(o) is tuple and len(o) == 6 for o in ops):
        raise JournalDamaged(f"{where}: {len(ops)} operations where {count} were written")
    return ops


#: the integers a sqlite INTEGER holds; others go in as the bytes of their decimal text
_SQLITE_INT = range(-(2**63), 2**63)


def _int_cell(value: Any) -> Any:
    """An integer column's value as sqlite can keep it exactly (see :func:`_int_value`)."""
    if isinstance(value, int) and value not in _SQLITE_INT:
        return str(value).encode()
    return value


def _int_value(cell: Any) -> Any:
    return int(cell.decode()) if isinstance(cell, bytes) else cell


def _rejected(r: Sequence[Any]) -> tuple[Row, str]:
    """A row of the ``rejected`` table as the operation it was and the backend's reason."""
    entry = _unplain(r[1], r[2], r[3], _int_value(r[4]), _int_value(r[5]), r[6])
    return (r[0], *entry), r[7]


def _plain(row: Row) -> Row:
    """A row as sqlite keeps it (NaN would read back as NULL: it goes in as text; integers past
    64 bits as blobs, which sqlite never converts)."""
    row = (*row[:4], _int_cell(row[4]), _int_cell(row[5]), row[6])
    if row[3] is not None and row[3] != row[3]:
        return (*row[:3], None, *row[4:6], "nan")
    return row


def _unplain(
    kind: str,
    key: str | None,
    num: float | None,
    step: int | None,
    ts: int | None,
    text: str | None,
) -> Entry:
    """An operation as a sqlite row held it (the reverse of :func:`_plain`)."""
    if kind == METRIC and num is None:
        return (kind, key, NAN, step, ts, None)
    return (kind, key, num, step, ts, text)


# -- private files ---------------------------------------------------------------------------------
def journal_dir(option: str | os.PathLike[str] | None = None) -> Path:
    """Where journals live: the option, else ``$TRACKKIT_DIR``, else ``./.trackkit``; absolute."""
    base = Path(option or os.environ.get(DIR_ENV) or DEFAULT_DIR)
    return (base / "journal").resolve()


def private_dir(path: Path, levels: int = 2) -> Path:
    """Create ``path`` and its missing parents; ``path`` and the ``levels - 1`` directories
    above it (the trackkit directory above ``journal/``) get mode 0700, parents above those
    the usual mode. Existing directories are left as they are."""
    missing: list[Path] = []
    at = path
    while not os.path.lexists(at) and at != at.parent:
        missing.append(at)
        at = at.parent
    for directory in reversed(missing):
        private = directory == path or directory in list(path.parents)[: levels - 1]
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700 if private else 0o777)
    return path


def _create_private(path: Path) -> None:
    """Create an empty file readable by its owner only (fails if anything is at ``path``)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    os.close(os.open(path, flags, 0o600))


def _copy_private(source: Path, target: Path) -> None:
    """Copy a file or a directory tree; directories 0700, files 0600; only regular files."""
    if source.is_dir():
        os.mkdir(target, 0o700)
        for child in sorted(source.iterdir()):
            _copy_private(child, target / child.name)
        return
    if not source.is_file():
        raise InvalidInput(f"{str(source)!r} is not a regular file or a directory")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with open(source, "rb") as src, open(os.open(target, flags, 0o600), "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def _owner_name(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _writable(path: Path, directory: bool = False) -> bool:
    mode = os.W_OK | (os.X_OK if directory else 0)
    if os.access in os.supports_effective_ids:
        return os.access(path, mode, effective_ids=True)
    return os.access(path, mode)


def untrusted_reason(path: Path) -> str | None:
    """Why ``trackkit sync`` must leave ``path`` alone; None for a journal it may replay.

    A journal is replayed only if trackkit created it for this user: its name is a journal
    name, it and its companion files (``-wal``, ``-shm``, ``.lock``, ``.files/``) are regular
    files (no symbolic links) owned by the current user, sync can update them (a journal it
    cannot update would be replayed again on every sync), and it carries trackkit's format
    marker. Nothing here writes to the file: a foreign file stays byte-identical.
    """
    if not NAME.fullmatch(path.name):
        return "not a journal trackkit created (its name)"
    me = os.geteuid()
    for suffix in ("", *_COMPANIONS, ".files"):
        file = Path(f"{path}{suffix}") if suffix != ".files" else path.with_suffix(".files")
        try:
            info = os.lstat(file)
        except FileNotFoundError:
            if not suffix:
                return "gone"
            continue
        if stat.S_ISLNK(info.st_mode):
            return f"{file.name} is a symbolic link"
        kind_ok = stat.S_ISDIR if suffix == ".files" else stat.S_ISREG
        if not kind_ok(info.st_mode):
            return f"{file.name} is not a regular {'directory' if suffix == '.files' else 'file'}"
        if info.st_uid != me:
            return f"{file.name} is owned by {_owner_name(info.st_uid)}, not by {_owner_name(me)}"
        if not _writable(file, directory=suffix == ".files"):
            return f"cannot update {file.name} (read-only); sync would replay it again every time"
    if not _writable(path.parent, directory=True):
        return (
            f"cannot update its directory {path.parent} (read-only); sync would replay it "
            "again every time"
        )
    with open(path, "rb") as f:
        header = f.read(100)
    if not header.startswith(_SQLITE_HEADER) or len(header) < 100:
        return None  # ours by name and owner, but not even sqlite any more: damage, set aside
    version = int.from_bytes(header[60:64], "big")
    application = int.from_bytes(header[68:72], "big")
    if application == MARKER:
        return _newer(path, version) if version > FORMAT else None
    if application != 0 or version > 2:
        return "not a journal trackkit created (no trackkit format marker)"
    return _legacy_reason(path)


def _newer(path: Path, version: int) -> str:
    return (
        f"journal {path} was written by a newer trackkit (format {version}, this one reads "
        f"{FORMAT}); sync it with that version"
    )


def _legacy_reason(path: Path) -> str | None:
    """Recognize a journal of format 1 or 2 (before the format marker) on a private copy."""
    with tempfile.TemporaryDirectory(prefix="trackkit-inspect-") as tmp:
        copy = Path(tmp) / "journal.db"
        shutil.copyfile(path, copy)
        if os.path.lexists(f"{path}-wal"):
            shutil.copyfile(f"{path}-wal", f"{copy}-wal")
        db = sqlite3.connect(copy)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            keys = {r[0] for r in db.execute("SELECT key FROM meta")} if "meta" in tables else ()
        except sqlite3.DatabaseError:
            return None  # ours by name and owner, unreadable: damage, set aside
        finally:
            db.close()
    if "backend" in keys and ({"chunks", "counter"} <= tables or "ops" in tables):
        return None
    return "not a journal trackkit created (neither a format marker nor a journal's tables)"


# -- the lock ---------------------------------------------------------------------------------------
class _Lock:
    """The exclusive lock on ``<journal>.lock``, held while a process owns the journal.

    The file also keeps the journal's high-water mark, the next operation number after the
    last append, outside sqlite: a WAL that loses committed appends (truncated, overwritten)
    takes the journal's own counter back with them, but not this number.
    """

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path

    @classmethod
    def acquire(cls, path: Path) -> _Lock | None:
        """Lock ``path`` (created 0600); None if another process holds it."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        while True:
            fd = os.open(path, flags, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            # the holder before us may have deleted the file after we opened it: a lock on a
            # deleted file locks nothing another process can see, so try again
            try:
                same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return cls(fd, path)
            os.close(fd)

    def mark(self, next_seq: int) -> None:
        os.pwrite(self.fd, b"%20d\n" % next_seq, 0)

    def high_water(self) -> int | None:
        text = os.pread(self.fd, 64, 0).strip()
        return int(text) if text.isdigit() else None

    def release(self, delete: bool = False) -> None:
        """Release the lock; with ``delete``, remove the lock file first (still holding it)."""
        if delete:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        os.close(self.fd)


# -- the journal ------------------------------------------------------------------------------------
class Examination(NamedTuple):
    """What :meth:`Journal.examine` found."""

    problems: list[str]  # empty when the journal is whole
    readable: int  # unacknowledged operations that can be read
    lost: int  # operations known to be missing or unreadable


class Journal:
    """A run's journal file. Thread-safe: one connection, guarded by a lock.

    Operations are numbered (``seq``) in the order they were appended and stored in chunks of
    up to :data:`CHUNK` plain tuples, pickled (protocol 5; read back by an unpickler that
    refuses anything but plain data), each with its operation count and a CRC-32 of its
    bytes. Acknowledged numbers are kept as ranges, so batches may be acknowledged in any
    order; a chunk is deleted once all of it is acknowledged. Storing chunks instead of a row
    per operation makes journaling ~10x cheaper (~0.3 µs a point instead of ~2.6 µs) and
    reading a batch back ~4x cheaper.

    ``Journal(path)`` creates the file if it is missing. ``own`` takes the journal's lock
    (``BlockingIOError`` if another process holds it); ``lock`` hands over one already held.
    """

    def __init__(
        self,
        path: Path,
        *,
        own: bool = True,
        lock: _Lock | None = None,
        create: bool = True,
        tolerant: bool = False,
    ) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._closed = False
        self._damage: list[str] = []  # problems met while opening (``tolerant`` only)
        self._owner = lock
        if create and not os.path.lexists(path):
            private_dir(path.parent)
        if own and lock is None:
            self._owner = _Lock.acquire(Path(f"{path}.lock"))
            if self._owner is None:
                raise BlockingIOError(f"journal {path} is in use by another process")
        fresh = False
        try:
            if not os.path.lexists(path):
                if not create:
                    raise FileNotFoundError(f"journal {path} is gone")
                _create_private(path)
                fresh = True
            self._db = sqlite3.connect(
                f"{path.absolute().as_uri()}?mode=rw",
                uri=True,
                check_same_thread=False,
                isolation_level=None,
            )
        except BaseException:
            if self._owner is not None and lock is None:
                # a lock file made for a journal that is gone (delivered by another sync)
                self._owner.release(delete=not os.path.lexists(path))
            raise
        try:
            self._open(fresh, tolerant)
        except BaseException:
            self._db.close()
            if self._owner is not None and lock is None:
                self._owner.release()
            raise

    def _open(self, fresh: bool, tolerant: bool) -> None:
        db = self._db
        if fresh:
            # the marker goes into the main file before WAL mode, so it is there for good
            db.execute(f"PRAGMA application_id = {MARKER}")
            db.execute(f"PRAGMA user_version = {FORMAT}")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        application = db.execute("PRAGMA application_id").fetchone()[0]
        if application not in (0, MARKER):
            raise Refused(f"{self.path} is not a trackkit journal (application_id {application})")
        if version > FORMAT:
            raise Refused(_newer(self.path, version))
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS chunks("
            "first INTEGER PRIMARY KEY, count INTEGER, ops BLOB, sum INTEGER)"
        )
        db.execute("CREATE TABLE IF NOT EXISTS acked(first INTEGER PRIMARY KEY, last INTEGER)")
        db.execute("CREATE TABLE IF NOT EXISTS counter(next INTEGER, done INTEGER)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS rejected(seq INTEGER PRIMARY KEY, kind TEXT, key TEXT, "
            "num REAL, step INTEGER, ts INTEGER, text TEXT, reason TEXT)"
        )
        if version < FORMAT:
            self._upgrade()
        self._next, self._acked = 1, []
        try:
            row = db.execute("SELECT next FROM counter").fetchone()
            if row is None:
                db.execute("INSERT INTO counter VALUES (1, 1)")
            else:
                self._next = int(row[0])
            self._acked = [
                (int(a), int(b)) for a, b in db.execute("SELECT * FROM acked ORDER BY 1")
            ]
        except (sqlite3.DatabaseError, TypeError, ValueError) as e:
            if not tolerant:
                raise
            self._damage.append(f"its counters are unreadable ({e})")

    def _upgrade(self) -> None:
        """Bring a format-1 or format-2 journal to this format in one transaction.

        Format 2 gains each chunk's checksum and the ``done`` mark; a format-1 journal's
        operations (a row each) move into chunks, numbered past every old number (set-aside
        rows keep theirs in ``rejected``).
        """
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            columns = {r[1] for r in db.execute("PRAGMA table_info(chunks)")}
            if "sum" not in columns:
                db.execute("ALTER TABLE chunks ADD COLUMN sum INTEGER")
                sums = [(zlib.crc32(b), f) for f, b in db.execute("SELECT first, ops FROM chunks")]
                db.executemany("UPDATE chunks SET sum = ? WHERE first = ?", sums)
            if "done" not in {r[1] for r in db.execute("PRAGMA table_info(counter)")}:
                db.execute("ALTER TABLE counter ADD COLUMN done INTEGER")
            if db.execute("SELECT COUNT(*) FROM counter").fetchone()[0] == 0:
                db.execute("INSERT INTO counter VALUES (1, 1)")
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'ops'").fetchone():
                (top,) = db.execute(
                    "SELECT MAX(m) FROM (SELECT MAX(seq) AS m FROM ops UNION ALL "
                    "SELECT MAX(seq) FROM rejected UNION ALL SELECT next - 1 FROM counter)"
                ).fetchone()
                self._next = (top or 0) + 1
                rows = db.execute("SELECT kind, key, num, step, ts, text FROM ops ORDER BY seq")
                self._insert([_unplain(*r) for r in rows])
                db.execute("DROP TABLE ops")
            db.execute("UPDATE counter SET done = (SELECT COALESCE(MIN(first), next) FROM chunks)")
            db.execute(f"PRAGMA application_id = {MARKER}")
            db.execute(f"PRAGMA user_version = {FORMAT}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        # the marker belongs in the main file's header, not only in the WAL
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @classmethod
    def create(cls, directory: Path, name: str, meta: dict[str, Any]) -> Journal:
        """A new journal ``<directory>/<name>.db`` (directory 0700, files 0600), owned."""
        private_dir(directory)
        journal = cls(directory / f"{name}.db")
        journal.set_meta(**meta)
        return journal

    @classmethod
    def try_open(cls, path: Path) -> Journal | None:
        """Open a journal for replay, or None if a live process owns it.

        Raises:
            FileNotFoundError: the journal is gone (another sync delivered it).
        """
        try:
            return cls(path, create=False)
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
    def _insert(self, ops: Sequence[Entry]) -> None:
        """Store ``ops`` as chunks numbered from ``_next`` (caller holds the lock, in a transaction)."""
        first = self._next
        chunks = [
            (first + i, len(part), blob, zlib.crc32(blob))
            for i in range(0, len(ops), CHUNK)
            # an Op is stored as the plain tuple it is (the reader takes plain data only)
            for part in ([o if type(o) is tuple else tuple(o) for o in ops[i : i + CHUNK]],)
            for blob in (pickle.dumps(part, 5),)
        ]
        self._db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?)", chunks)
        self._db.execute("UPDATE counter SET next = ?", (first + len(ops),))
        self._next = first + len(ops)

    def append(self, ops: Sequence[Entry]) -> None:
        """Append operations in one transaction (durable against a process crash on return)."""
        if not ops:
            return
        with self._lock:
            before = self._next
            self._db.execute("BEGIN")
            try:
                self._insert(ops)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._next = before
                raise
            if self._owner is not None:
                self._owner.mark(self._next)

    def _unacked(self, first: int, count: int) -> Iterator[tuple[int, int]]:
        """The unacknowledged ``[lo, hi)`` index ranges of a chunk starting at seq ``first``."""
        at, end = first, first + count
        for lo, hi in self._acked:
            if hi < at:
                continue
            if lo >= end:
                break
            if lo > at:
                yield at - first, lo - first
            at = hi + 1
        if at < end:
            yield at - first, count

    def _rows(self, limit: int | None = None) -> list[Row]:
        """Unacknowledged operations, oldest first (caller holds the lock).

        Raises:
            JournalDamaged: a chunk fails its checksum or count.
        """
        rows: list[Row] = []
        for first, count, blob, crc in self._db.execute(
            "SELECT first, count, ops, sum FROM chunks ORDER BY first"
        ):
            ops = _chunk(first, count, blob, crc)
            for lo, hi in self._unacked(first, count):
                rows += [(first + i, *ops[i]) for i in range(lo, hi)]
            if limit is not None and len(rows) >= limit:
                return rows[:limit]
        return rows

    def pending(self, limit: int) -> list[Row]:
        """The oldest ``limit`` unacknowledged operations, in the order they were logged."""
        with self._lock:
            return [] if self._closed else self._rows(limit)

    def ack(self, seqs: Sequence[int]) -> None:
        """Forget acknowledged operations: they are never sent again.

        ``seqs`` are the oldest pending operations (a prefix of ``pending``), so one range
        covers them all.
        """
        if seqs:
            self.ack_range(min(seqs), max(seqs))

    def ack_range(self, first: int, last: int) -> None:
        """Forget the acknowledged operations ``first`` to ``last`` (a batch sent on its own)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._ack(first, last)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _ack(self, first: int, last: int) -> None:
        """Record ``first..last`` as acknowledged and delete the chunks that are all
        acknowledged (caller holds the lock, inside a transaction)."""
        merged: list[tuple[int, int]] = []
        lo, hi = first, last
        for a, b in self._acked:
            if b + 1 < lo or a > hi + 1:
                merged.append((a, b))
            else:
                lo, hi = min(lo, a), max(hi, b)
        merged.append((lo, hi))
        merged.sort()
        db = self._db
        # chunks wholly inside the merged range are done (one partly inside it stays)
        for start, count in db.execute(
            "SELECT first, count FROM chunks WHERE first > ? AND first <= ?", (lo - CHUNK, hi)
        ).fetchall():
            if lo <= start and start + count - 1 <= hi:
                db.execute("DELETE FROM chunks WHERE first = ?", (start,))
        # ranges below the oldest chunk left describe nothing any more: everything below it
        # was delivered (``done``), which is what lets sync notice a chunk that went missing
        oldest = db.execute("SELECT MIN(first) FROM chunks").fetchone()[0]
        self._acked = [] if oldest is None else [(a, b) for a, b in merged if b >= oldest]
        db.execute("DELETE FROM acked")
        db.executemany("INSERT INTO acked VALUES (?, ?)", self._acked)
        db.execute("UPDATE counter SET done = ?", (self._next if oldest is None else oldest,))

    def reject(self, rows: Sequence[Row], reason: str) -> None:
        """Set aside operations the backend refused for good: kept, never sent again."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO rejected VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(*_plain(r), reason) for r in rows],
                )
                for r in rows:
                    self._ack(r[0], r[0])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def rejected(self) -> list[tuple[Row, str]]:
        """Operations set aside, with the backend's reason."""
        with self._lock:
            if self._closed:
                return []
            rows = self._db.execute(
                "SELECT seq, kind, key, num, step, ts, text, reason FROM rejected ORDER BY seq"
            ).fetchall()
        return [_rejected(r) for r in rows]

    def count(self, kind: str | None = None) -> int:
        """How many operations (of ``kind``) are not yet acknowledged."""
        with self._lock:
            if self._closed:
                return 0
            rows = self._rows()
        return len(rows) if kind is None else sum(1 for r in rows if r[1] == kind)

    def empty(self) -> bool:
        """True when every operation was acknowledged (a chunk lives while any of it is not)."""
        with self._lock:
            if self._closed:
                return True
            return self._db.execute("SELECT 1 FROM chunks LIMIT 1").fetchone() is None

    # -- artifact copies ----------------------------------------------------------------------
    def files_dir(self) -> Path:
        """Where copies of artifacts that could not be uploaded are kept."""
        return self.path.with_suffix(".files")

    def keep(self, local: Path) -> str:
        """Copy ``local`` into :meth:`files_dir` for a later upload (see :func:`keep`)."""
        return keep(self.files_dir(), local)

    def kept_file(self, text: str | None) -> Path:
        """The copy an ARTIFACT operation names, checked (see :func:`kept_file`)."""
        return kept_file(self.files_dir(), text)

    def discard_file(self, local: Path) -> None:
        """Delete an uploaded copy's own folder (see :func:`discard_file`)."""
        discard_file(self.files_dir(), local)

    # -- damage ---------------------------------------------------------------------------------
    def _scan(self) -> Iterator[tuple[int, int, list[Entry] | None, str | None]]:
        """Every chunk as ``(first, count, operations or None, problem or None)``, tolerating
        damage: a chunk that cannot be read is reported, and the scan goes on past it."""
        db = self._db
        try:
            keys = db.execute("SELECT first, count FROM chunks ORDER BY first").fetchall()
        except sqlite3.DatabaseError:
            keys = list(self._probe_keys())
        for first, count in keys:
            if not isinstance(first, int) or not isinstance(count, int) or count < 1:
                yield int(first or 0), 0, None, f"a chunk at {first!r} has a bad count {count!r}"
                continue
            try:
                blob, crc = db.execute(
                    "SELECT ops, sum FROM chunks WHERE first = ?", (first,)
                ).fetchone()
                yield first, count, _chunk(first, count, blob, crc), None
            except (sqlite3.DatabaseError, JournalDamaged) as e:
                yield first, count, None, str(e)

    def _probe_keys(self) -> Iterator[tuple[int, int]]:
        """Chunk keys one at a time when sqlite cannot walk the whole table (a damaged page)."""
        pos, end = 0, max(self._next, (self._owner.high_water() if self._owner else None) or 0)
        misses = 0
        while pos <= end and misses < PROBES:
            try:
                row = self._db.execute(
                    "SELECT first, count FROM chunks WHERE first >= ? ORDER BY first LIMIT 1",
                    (pos,),
                ).fetchone()
            except sqlite3.DatabaseError:
                pos, misses = pos + 1, misses + 1
                continue
            if row is None:
                return
            yield row[0], row[1]
            pos = row[0] + 1

    def examine(self) -> Examination:
        """Check the whole journal: sqlite's own check, every chunk's checksum and count, the
        numbering (every operation below the counter is in a chunk or acknowledged), the
        high-water mark in the lock file, and the metadata replay needs."""
        with self._lock:
            problems = list(self._damage)
            db = self._db
            try:
                found = [r[0] for r in db.execute("PRAGMA quick_check(3)")]
                if found != ["ok"]:
                    problems.append(f"sqlite finds damage ({'; '.join(map(str, found))})")
            except sqlite3.DatabaseError as e:
                problems.append(f"sqlite finds damage ({e})")
            try:
                meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
                problems += _meta_problems(meta)
            except (sqlite3.DatabaseError, ValueError) as e:
                problems.append(f"its metadata is unreadable ({e})")
            try:
                row = db.execute("SELECT done FROM counter").fetchone()
                done = int(row[0]) if row and row[0] is not None else None
            except (sqlite3.DatabaseError, TypeError, ValueError):
                done = None
            readable = lost = 0
            covered: list[tuple[int, int]] = list(self._acked)
            top = self._next
            for first, count, _ops, problem in self._scan():
                unacked = sum(hi - lo for lo, hi in self._unacked(first, count))
                if problem is not None:
                    problems.append(problem)
                    lost += unacked
                else:
                    readable += unacked
                if count > 0:
                    covered.append((first, first + count - 1))
                    top = max(top, first + count)
            if done is not None:
                gap = _uncovered(done, self._next - 1, covered)
                if gap:
                    problems.append(f"{gap} operations are missing from its chunks")
                    lost += gap
            high = self._owner.high_water() if self._owner is not None else None
            if high is not None and high > top:
                problems.append(
                    f"{high - top} operations written to it are gone (its WAL was cut short or "
                    "overwritten?)"
                )
                lost += high - top
            if top > self._next:
                problems.append("its counter is behind its chunks")
                self._next = top
        return Examination(problems, readable, lost)

    def probe_write(self) -> None:
        """Check that this journal can be updated (a write that changes nothing).

        Raises:
            Refused: the file or its directory is read-only.
        """
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("UPDATE counter SET next = next")
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as e:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                if "readonly" in str(e) or "read-only" in str(e) or "unable to open" in str(e):
                    raise Refused(
                        f"cannot update the journal ({e}); sync would replay it again every time"
                    ) from e
                raise

    def set_aside(self, why: str) -> tuple[Path, Journal | None, int]:
        """Move this damaged journal aside, to ``<name>.db.damaged``, and salvage it.

        Every readable, unacknowledged operation goes into a new healthy journal under the
        original name, with the same metadata and the operations set aside before; that one
        is returned still locked (None when nothing could be salvaged: the metadata is
        unreadable). This journal is closed. Returns ``(where it went, the salvage, how many
        operations were salvaged)``.
        """
        with self._lock:
            try:
                meta = {
                    k: json.loads(v) for k, v in self._db.execute("SELECT key, value FROM meta")
                }
            except (sqlite3.DatabaseError, ValueError):
                meta = {}
        salvage_path = Path(f"{self.path}.salvage")
        _remove_db(salvage_path)
        saved = 0
        salvage: Journal | None = None
        if not _meta_problems(meta):
            salvage = Journal(salvage_path, own=False)
            try:
                with self._lock:
                    refused = self._readable_rejected()
                    salvage._next = max(
                        [self._next, *(r[0][0] + 1 for r in refused)]
                    )  # numbers never repeat
                    salvage._db.execute(
                        "UPDATE counter SET next = ?, done = ?", (salvage._next,) * 2
                    )
                    for first, count, ops, _ in self._scan():
                        if ops is None:
                            continue
                        part = [
                            ops[i] for lo, hi in self._unacked(first, count) for i in range(lo, hi)
                        ]
                        salvage.append(part)
                        saved += len(part)
                for row, reason in refused:
                    salvage._db.execute(
                        "INSERT OR REPLACE INTO rejected VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (*_plain(row), reason),
                    )
                salvage.set_meta(**{**meta, "damaged": why})
            finally:
                salvage.close()
        with self._lock:
            self._closed = True
            self._db.close()
        aside = _free_name(Path(f"{self.path}{DAMAGED}"))
        os.rename(self.path, aside)
        if os.path.lexists(f"{self.path}-wal"):
            os.rename(f"{self.path}-wal", f"{aside}-wal")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{self.path}-shm")
        owner, self._owner = self._owner, None
        if salvage is None:
            if owner is not None:
                owner.release(delete=True)
            return aside, None, 0
        os.rename(salvage_path, self.path)
        journal = Journal(self.path, lock=owner, create=False)
        if owner is not None:
            owner.mark(journal._next)
        return aside, journal, saved

    def _readable_rejected(self) -> list[tuple[Row, str]]:
        try:
            rows = self._db.execute(
                "SELECT seq, kind, key, num, step, ts, text, reason FROM rejected ORDER BY seq"
            ).fetchall()
        except sqlite3.DatabaseError:
            return []
        kept = []
        for r in rows:
            with contextlib.suppress(ValueError):  # damage: a row that no longer reads back
                if isinstance(r[0], int):
                    kept.append(_rejected(r))
        return kept

    # -- lifecycle --------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._db.close()
        if self._owner is not None:
            self._owner.release()
            self._owner = None

    def remove(self) -> Path | None:
        """Delete the journal and its files (everything in it was delivered).

        A journal holding refused operations is kept instead, renamed ``<name>.db.rejected``
        (``trackkit sync`` no longer picks it up); its path is returned. Files are deleted
        while the lock is still held, so a concurrent sync never sees half a journal.
        """
        kept = bool(self.rejected())
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()
        owner, self._owner = self._owner, None
        try:
            if kept:
                target = Path(f"{self.path}.rejected")
                self.path.rename(target)
                return target
            _remove_db(self.path)
            shutil.rmtree(self.files_dir(), ignore_errors=True)
            return None
        finally:
            if owner is not None:
                owner.release(delete=True)


# -- artifact copies --------------------------------------------------------------------------------
def keep(files: Path, local: Path) -> str:
    """Copy a file or directory into a journal's own folder ``files`` (0700 directories, 0600
    files, regular files only) for a later upload.

    Returns the text an ARTIFACT operation holds: the copy's path relative to ``files``
    (``<folder>/<name>``), so a journal may move with its folder.
    """
    folder = uuid.uuid4().hex
    os.mkdir(private_dir(files, levels=1) / folder, 0o700)
    _copy_private(local, files / folder / local.name)
    return f"{folder}/{local.name}"


def kept_file(files: Path, text: str | None) -> Path:
    """The copy an ARTIFACT operation names, checked to lie inside its journal's folder.

    A journal is untrusted input: the operation may name only a file or directory inside
    ``files`` (``<folder>/<name>``, relative, or absolute as older journals hold it), with
    no ``..``, no symbolic link anywhere on the way or inside, owned by the current user,
    and regular files only.

    Raises:
        InvalidInput: it names anything else.
    """
    named = Path(text or "")
    if not text or ".." in named.parts or "\x00" in text:
        raise InvalidInput(f"the artifact copy {text!r} is not inside {files}")
    local = named if named.is_absolute() else files / named
    try:
        inside = local.relative_to(files)
    except ValueError:
        raise InvalidInput(f"the artifact copy {text!r} is not inside {files}") from None
    if len(inside.parts) != 2:
        raise InvalidInput(f"the artifact copy {text!r} is not a copy trackkit kept in {files}")
    at = files
    for part in ("", *inside.parts):
        at = at / part if part else at
        try:
            info = os.lstat(at)
        except FileNotFoundError:
            raise InvalidInput(f"the artifact copy {str(local)!r} is missing") from None
        if stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid():
            raise InvalidInput(f"the artifact copy {str(at)!r} is a link or not yours")
    if stat.S_ISDIR(os.lstat(local).st_mode):
        for root, dirs, names in os.walk(local):
            for name in (*dirs, *names):
                mode = os.lstat(os.path.join(root, name)).st_mode
                if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                    raise InvalidInput(
                        f"the artifact copy {str(local)!r} holds {name!r}, which is not a "
                        "regular file or directory"
                    )
    elif not stat.S_ISREG(os.lstat(local).st_mode):
        raise InvalidInput(f"the artifact copy {str(local)!r} is not a regular file")
    return local


def discard_file(files: Path, local: Path) -> None:
    """Delete an uploaded copy: its own folder inside ``files``, nothing else."""
    folder = local.parent
    if folder.parent == files and not folder.is_symlink():
        shutil.rmtree(folder, ignore_errors=True)


def set_aside_unreadable(path: Path) -> Path | None:
    """Move a journal that sqlite cannot open to ``<name>.db.damaged``; None if it is in use."""
    owner = _Lock.acquire(Path(f"{path}.lock"))
    if owner is None:
        return None
    try:
        if not os.path.lexists(path):
            return None
        aside = _free_name(Path(f"{path}{DAMAGED}"))
        os.rename(path, aside)
        if os.path.lexists(f"{path}-wal"):
            os.rename(f"{path}-wal", f"{aside}-wal")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}-shm")
        return aside
    finally:
        owner.release(delete=True)


def _meta_problems(meta: dict[str, Any]) -> list[str]:
    """What a journal's metadata lacks for replay (a run needs its id or its experiment)."""
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        return [f"its metadata lacks {', '.join(missing)}"]
    if not isinstance(meta["backend"], str) or not isinstance(meta["options"], dict):
        return ["its metadata names no backend and options"]
    if meta.get("kind") != "deferred" and not (meta.get("run_id") or meta.get("experiment")):
        return ["its metadata names neither the run nor its experiment"]
    return []


def is_damage(error: sqlite3.DatabaseError) -> bool:
    """Whether sqlite's error says the file is damaged (not merely busy or unwritable)."""
    text = str(error).lower()
    return isinstance(error, sqlite3.DatabaseError) and (
        "not a database" in text or "malformed" in text or "corrupt" in text
    )


def _uncovered(lo: int, hi: int, ranges: list[tuple[int, int]]) -> int:
    """How many numbers in ``lo..hi`` no range covers."""
    missing, at = 0, lo
    for a, b in sorted(ranges):
        if b < at:
            continue
        if a > hi:
            break
        if a > at:
            missing += a - at
        at = max(at, b + 1)
    return missing + max(0, hi - at + 1)


def _free_name(path: Path) -> Path:
    candidate, n = path, 1
    while os.path.lexists(candidate):
        candidate, n = Path(f"{path}.{n}"), n + 1
    return candidate


def _remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


def now_ms() -> int:
    return int(time.time() * 1000)
