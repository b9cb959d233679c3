"""The journal file: numbering, chunks, acknowledgements in any order, set-aside operations,
the format upgrade, and plain data only. No SDK needed; read back with sqlite3 where it matters."""

from __future__ import annotations

import fcntl
import math
import pickle
import sqlite3
from pathlib import Path

import pytest

from trackkit import journal as jn
from trackkit.errors import TrackkitError


def _points(n: int, start: int = 0) -> list[jn.Entry]:
    return [(jn.METRIC, "m", float(i), i, 1_700_000_000_000 + i, None) for i in range(start, n)]


def _chunks(path: Path) -> list[tuple[int, int]]:
    db = sqlite3.connect(path)
    try:
        return [(a, b) for a, b in db.execute("SELECT first, count FROM chunks ORDER BY first")]
    finally:
        db.close()


def test_operations_come_back_in_order_numbered_in_chunks(tmp_path: Path) -> None:
    journal = jn.Journal(tmp_path / "r.db")
    journal.append(_points(2500))
    journal.append([jn.Op(jn.TAG, "t", text="v"), (jn.METRIC, "nan", math.nan, 0, 1, None)])
    assert _chunks(journal.path) == [(1, 1000), (1001, 1000), (2001, 500), (2501, 2)]
    rows = journal.pending(3000)
    assert [r[0] for r in rows] == list(range(1, 2503))
    assert rows[0] == (1, jn.METRIC, "m", 0.0, 0, 1_700_000_000_000, None)
    assert rows[2500] == (2501, jn.TAG, "t", None, None, None, "v")
    assert type(rows[2500]) is tuple and math.isnan(rows[2501][3] or 0.0)
    assert journal.pending(3) == rows[:3]
    assert journal.count() == 2502 and journal.count(jn.TAG) == 1
    journal.close()


def test_acknowledgements_in_any_order_forget_exactly_what_was_sent(tmp_path: Path) -> None:
    journal = jn.Journal(tmp_path / "r.db")
    journal.append(_points(3000))
    journal.ack_range(1001, 2000)  # a second lane finished first
    assert _chunks(journal.path) == [(1, 1000), (2001, 1000)]
    assert [r[0] for r in journal.pending(2)] == [1, 2]
    journal.ack_range(1, 400)
    assert journal.pending(1)[0][0] == 401
    journal.ack_range(401, 1000)
    assert _chunks(journal.path) == [(2001, 1000)]
    journal.ack_range(2501, 2600)
    journal.close()

    # what was acknowledged stays forgotten in the file, not only in this object
    again = jn.Journal(tmp_path / "r.db")
    seqs = [r[0] for r in again.pending(5000)]
    assert seqs == list(range(2001, 2501)) + list(range(2601, 3001))
    assert not again.empty()
    again.ack(seqs[:500])
    again.ack(seqs[500:])
    assert again.empty() and again.pending(10) == [] and _chunks(again.path) == []
    again.close()


def test_numbers_never_repeat_after_everything_was_acknowledged(tmp_path: Path) -> None:
    journal = jn.Journal(tmp_path / "r.db")
    journal.append(_points(10))
    journal.ack_range(1, 10)
    journal.close()
    journal = jn.Journal(tmp_path / "r.db")
    journal.append(_points(3))
    assert [r[0] for r in journal.pending(10)] == [11, 12, 13]
    journal.close()


def test_refused_operations_are_kept_aside_and_never_pending(tmp_path: Path) -> None:
    journal = jn.Journal(tmp_path / "r.db")
    journal.append([*_points(5), (jn.METRIC, "bad", math.nan, 5, 9, None)])
    rows = journal.pending(10)
    journal.reject([rows[2], rows[5]], "InvalidInput: no")
    assert [r[0] for r in journal.pending(10)] == [1, 2, 4, 5]
    refused = journal.rejected()
    assert [(r[0], reason) for r, reason in refused] == [
        (3, "InvalidInput: no"),
        (6, "InvalidInput: no"),
    ]
    assert refused[0][0] == rows[2] and math.isnan(refused[1][0][3] or 0.0)
    journal.ack_range(1, 6)
    assert journal.empty() and len(journal.rejected()) == 2
    assert journal.remove() == Path(f"{tmp_path / 'r.db'}.rejected")


def test_a_format_1_journal_is_upgraded_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE ops(seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT, key TEXT, num REAL, "
        "step INTEGER, ts INTEGER, text TEXT)"
    )
    db.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT)")
    db.execute("""INSERT INTO meta VALUES ('run_id', '"abc"')""")
    db.executemany(
        "INSERT INTO ops(kind, key, num, step, ts, text) VALUES (?, ?, ?, ?, ?, ?)",
        [
            ("m", "a", 1.5, 0, 7, None),
            ("m", "a", None, 1, 8, "nan"),
            ("e", None, None, None, 9, "FINISHED"),
        ],
    )
    db.execute("DELETE FROM ops WHERE seq = 1")  # the first one was acknowledged
    db.execute(
        "CREATE TABLE rejected(seq INTEGER PRIMARY KEY, kind TEXT, key TEXT, num REAL, "
        "step INTEGER, ts INTEGER, text TEXT, reason TEXT)"
    )
    db.execute("INSERT INTO rejected VALUES (9, 't', 'x', NULL, NULL, NULL, 'v', 'refused')")
    db.commit()
    db.close()
    journal = jn.Journal(path)
    rows = journal.pending(10)
    assert [r[1:3] for r in rows] == [("m", "a"), ("e", None)]
    assert math.isnan(rows[0][3] or 0.0) and rows[1][6] == "FINISHED"
    # numbering goes on past every old number, so a later refusal cannot overwrite row 9
    assert [r[0] for r in rows] == [10, 11]
    assert [(r[0], reason) for r, reason in journal.rejected()] == [(9, "refused")]
    assert journal.meta() == {"run_id": "abc"}
    journal.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == jn.FORMAT
    assert db.execute("SELECT name FROM sqlite_master WHERE name = 'ops'").fetchone() is None
    db.close()


def test_a_journal_from_a_newer_format_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {jn.FORMAT + 1}")
    db.close()
    with pytest.raises(TrackkitError, match="newer trackkit"):
        jn.Journal(path)
    # the refused open released its lock: another process (or this one) may open it later
    with open(f"{path}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)


class _Boom:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (print, ("code ran",))


def test_a_journal_never_runs_code_from_its_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = jn.Journal(tmp_path / "r.db")
    journal.append(_points(1))
    journal.close()
    db = sqlite3.connect(tmp_path / "r.db")
    db.execute("UPDATE chunks SET ops = ?", (pickle.dumps([_Boom()], 5),))
    db.commit()
    db.close()
    journal = jn.Journal(tmp_path / "r.db")
    with pytest.raises(pickle.UnpicklingError, match="plain data only"):
        journal.pending(1)
    journal.close()
    assert "code ran" not in capsys.readouterr().out


def test_sync_reports_an_unreadable_journal_and_goes_on(tmp_path: Path) -> None:
    """A journal of a newer format, or a damaged file, is a failed result, not a crash."""
    import trackkit

    directory = jn.journal_dir(tmp_path)
    directory.mkdir(parents=True)
    newer = sqlite3.connect(directory / "a-newer.db")
    newer.execute(f"PRAGMA user_version = {jn.FORMAT + 1}")
    newer.close()
    (directory / "b-damaged.db").write_bytes(b"not a database" * 100)
    results = trackkit.sync(tmp_path)
    assert [(r.path.name, r.outcome) for r in results] == [
        ("a-newer.db", "failed"),
        ("b-damaged.db", "failed"),
    ]
    assert "newer trackkit" in (results[0].error or "")
