"""The journal file: numbering, chunks with checksums and counts, acknowledgements in any
order, set-aside operations, format upgrades, plain data only, private modes; damage found
and contained, and files sync must not touch. No SDK needed: sync-level checks use the
``example`` backend plugin, whose runs are JSON files read back directly."""

from __future__ import annotations

import fcntl
import json
import math
import os
import pickle
import re
import sqlite3
import stat
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from typing import Any

import pytest

import trackkit
from trackkit import cli
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


def test_refused_operations_with_integers_sqlite_cannot_hold_are_kept_exactly(
    tmp_path: Path,
) -> None:
    """A backend that refuses a step or timestamp past sqlite's 64-bit range (one that takes any
    integer accepted it at the call) has it set aside like any other, never an OverflowError."""
    journal = jn.Journal(tmp_path / "r.db")
    huge = [
        (jn.METRIC, "k", 1.0, 2**63, 1_700_000_000_000, None),
        (jn.METRIC, "k", 2.0, 3, 2**64, None),
        (jn.METRIC, "k", 3.0, -(2**70), 5, None),
    ]
    journal.append([*_points(2), *huge])
    rows = journal.pending(10)
    journal.reject(rows[2:], "OverflowError: too large")
    assert [r[0] for r in journal.pending(10)] == [1, 2]
    assert journal.rejected() == [(r, "OverflowError: too large") for r in rows[2:]]
    journal.close()
    assert jn.Journal(tmp_path / "r.db").rejected() == [
        (r, "OverflowError: too large") for r in rows[2:]
    ]


def _header(path: Path) -> tuple[int, int]:
    """The format marker in the main file's header: (user_version, application_id)."""
    data = path.read_bytes()[:100]
    return int.from_bytes(data[60:64], "big"), int.from_bytes(data[68:72], "big")


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
    assert journal.examine().problems == ["its metadata lacks backend, options"]
    journal.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == jn.FORMAT
    assert db.execute("SELECT name FROM sqlite_master WHERE name = 'ops'").fetchone() is None
    db.close()
    assert _header(path) == (jn.FORMAT, jn.MARKER)  # in the main file, not only in the WAL


def _format_2(path: Path, ops: list[jn.Entry], meta: dict[str, Any]) -> None:
    """A journal as trackkit wrote format 2: chunks without checksums, no marker."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT)")
    db.execute("CREATE TABLE chunks(first INTEGER PRIMARY KEY, count INTEGER, ops BLOB)")
    db.execute("CREATE TABLE acked(first INTEGER PRIMARY KEY, last INTEGER)")
    db.execute("CREATE TABLE counter(next INTEGER)")
    db.execute(
        "CREATE TABLE rejected(seq INTEGER PRIMARY KEY, kind TEXT, key TEXT, num REAL, "
        "step INTEGER, ts INTEGER, text TEXT, reason TEXT)"
    )
    db.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
    db.execute("INSERT INTO chunks VALUES (1, ?, ?)", (len(ops), pickle.dumps(ops, 5)))
    db.execute("INSERT INTO counter VALUES (?)", (len(ops) + 1,))
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()


def test_a_format_2_journal_gains_checksums_and_the_marker(tmp_path: Path) -> None:
    path = tmp_path / f"local-{'2' * 32}.db"
    _format_2(path, _points(5), {"backend": "example", "options": {}, "experiment": "e"})
    assert jn.untrusted_reason(path) is None  # recognized as trackkit's without a marker
    journal = jn.Journal(path)
    assert [r[0] for r in journal.pending(10)] == [1, 2, 3, 4, 5]
    assert journal.examine() == jn.Examination([], 5, 0)
    journal.append(_points(1))
    journal.close()
    db = sqlite3.connect(path)
    [(blob, crc)] = db.execute("SELECT ops, sum FROM chunks WHERE first = 1").fetchall()
    assert crc == zlib.crc32(blob)
    db.close()
    assert _header(path) == (jn.FORMAT, jn.MARKER)


def test_a_journal_from_a_newer_format_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / f"local-{'9' * 32}.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA application_id = {jn.MARKER}")
    db.execute(f"PRAGMA user_version = {jn.FORMAT + 1}")
    db.close()
    before = path.read_bytes()
    assert "newer trackkit" in (jn.untrusted_reason(path) or "")
    with pytest.raises(TrackkitError, match="newer trackkit"):
        jn.Journal(path)
    assert path.read_bytes() == before  # not touched
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
    blob = pickle.dumps([_Boom()], 5)  # with a valid checksum: a hostile file, not a torn one
    db.execute("UPDATE chunks SET ops = ?, sum = ?", (blob, zlib.crc32(blob)))
    db.commit()
    db.close()
    journal = jn.Journal(tmp_path / "r.db")
    with pytest.raises(jn.JournalDamaged, match="plain data only"):
        journal.pending(1)
    assert "plain data only" in " ".join(journal.examine().problems)
    journal.close()
    assert "code ran" not in capsys.readouterr().out


# -- modes ---------------------------------------------------------------------------------------
def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_journal_directories_are_0700_and_its_files_0600(tmp_path: Path) -> None:
    previous = os.umask(0o022)  # the usual umask, which makes files 0644 and directories 0755
    try:
        directory = jn.journal_dir(tmp_path / "projects" / "tk")
        journal = jn.Journal.create(directory, f"local-{'a' * 32}", {"backend": "example"})
        journal.append(_points(10))
        (tmp_path / "notes").mkdir()
        (tmp_path / "notes" / "a.txt").write_text("kept")
        copy = journal.keep(tmp_path / "notes")
        files = [journal.path, *(Path(f"{journal.path}{s}") for s in ("-wal", "-shm", ".lock"))]
        modes = {p.name: _mode(p) for p in files}
        copied = journal.files_dir() / copy
        modes.update(
            {
                "files": _mode(journal.files_dir()),
                "folder": _mode(copied.parent),
                "copy": _mode(copied),
                "copied file": _mode(copied / "a.txt"),
            }
        )
        journal.close()
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "projects" / "tk") == _mode(directory) == 0o700
    assert _mode(tmp_path / "projects") == 0o755  # above the trackkit directory: the usual mode
    name = journal.path.name
    assert modes == {
        name: 0o600,
        f"{name}-wal": 0o600,
        f"{name}-shm": 0o600,
        f"{name}.lock": 0o600,
        "files": 0o700,
        "folder": 0o700,
        "copy": 0o700,
        "copied file": 0o600,
    }
    assert _mode(tmp_path / "notes" / "a.txt") != 0o600  # the original keeps its own mode


# -- damage, found --------------------------------------------------------------------------------
def test_each_chunk_carries_its_checksum_and_count(tmp_path: Path) -> None:
    journal = jn.Journal(tmp_path / "r.db")
    journal.set_meta(backend="example", options={}, experiment="e")
    journal.append(_points(2500))
    assert journal.examine() == jn.Examination([], 2500, 0)
    journal.close()
    db = sqlite3.connect(tmp_path / "r.db")
    stored = db.execute("SELECT first, count, ops, sum FROM chunks ORDER BY first").fetchall()
    assert [(f, c, s == zlib.crc32(b)) for f, c, b, s in stored] == [
        (1, 1000, True),
        (1001, 1000, True),
        (2001, 500, True),
    ]
    flipped = bytearray(stored[0][2])
    flipped[len(flipped) // 2] ^= 0xFF  # one byte, as a bad sector or a stray write would
    db.execute("UPDATE chunks SET ops = ? WHERE first = 1", (bytes(flipped),))
    fewer = pickle.dumps(_points(1999, 1000), 5)  # whole and checksummed, but one short
    db.execute("UPDATE chunks SET ops = ?, sum = ? WHERE first = 1001", (fewer, zlib.crc32(fewer)))
    db.commit()
    db.close()
    journal = jn.Journal(tmp_path / "r.db")
    found = journal.examine()
    assert found.problems == [
        "operations 1-1000 fail their checksum",
        "operations 1001-2000: 999 operations where 1000 were written",
    ]
    assert (found.readable, found.lost) == (500, 2000)
    with pytest.raises(jn.JournalDamaged, match="checksum"):
        journal.pending(10)
    journal.close()


def test_a_chunk_gone_from_the_middle_is_missing_not_delivered(tmp_path: Path) -> None:
    journal = jn.Journal(tmp_path / "r.db")
    journal.set_meta(backend="example", options={}, experiment="e")
    journal.append(_points(3000))
    journal.ack_range(2001, 2100)  # partly acknowledged: a gap that is not damage
    journal.close()
    db = sqlite3.connect(tmp_path / "r.db")
    db.execute("DELETE FROM chunks WHERE first = 1001")
    db.commit()
    db.close()
    journal = jn.Journal(tmp_path / "r.db")
    assert journal.examine() == jn.Examination(
        ["1000 operations are missing from its chunks"], 1900, 1000
    )
    journal.close()


KILLED = """
import os, sys
from pathlib import Path
from trackkit import journal as jn
directory, name, appends, per = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
meta = {"run_id": None, "local_id": name[:-3], "experiment": "damage", "name": None,
        "backend": "example", "options": {}, "pid": os.getpid(), "host": "here"}
journal = jn.Journal.create(directory, name[:-3], meta)
for a in range(appends):
    journal.append([("m", "loss", float(s), s, 1_700_000_000_000 + s, None)
                    for s in range(a * per, (a + 1) * per)])
if sys.argv[5] == "close":
    journal.close()  # the WAL goes into the main file
os._exit(0)  # else as if killed: no close, no checkpoint; the WAL holds every append
"""


def _journal_of_a_killed_process(
    directory: Path, name: str, appends: int = 10, per: int = 500, close: bool = False
) -> Path:
    """A run's journal left by a real process: ``appends`` commits of ``per`` points (value ==
    step), killed before it could end the run."""
    script = directory.parent / "killed.py"
    script.write_text(textwrap.dedent(KILLED))
    command = [sys.executable, str(script), str(directory), name, str(appends), str(per)]
    subprocess.run([*command, "close" if close else "kill"], check=True, timeout=120)
    return directory / name


NAMES = [f"local-{c * 32}.db" for c in "abcdef"]


def test_the_lock_files_mark_finds_appends_a_truncated_wal_lost(tmp_path: Path) -> None:
    directory = jn.journal_dir(tmp_path)
    path = _journal_of_a_killed_process(directory, NAMES[0])
    wal = Path(f"{path}-wal")
    os.truncate(wal, wal.stat().st_size // 2)
    journal = jn.Journal(path, create=False)
    found = journal.examine()
    assert found.readable + found.lost == 5000 and 0 < found.readable < 5000
    [problem] = found.problems
    assert problem.endswith("written to it are gone (its WAL was cut short or overwritten?)")
    assert problem.startswith(f"{found.lost} ")
    journal.close()


# -- what sync may touch --------------------------------------------------------------------------
def _foreign_sqlite(path: Path) -> bytes:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes(text TEXT)")
    db.execute("INSERT INTO notes VALUES ('mine')")
    db.commit()
    db.close()
    return path.read_bytes()


def pwd_name(uid: int) -> str:
    import pwd

    return pwd.getpwuid(uid).pw_name


def _owned_by_nobody(path: Path) -> bool:
    """Give ``path`` to the user ``nobody``; False where that needs root and this is not."""
    import pwd

    if os.geteuid() != 0:
        return False
    os.chown(path, pwd.getpwnam("nobody").pw_uid, -1)
    return True


def test_sync_touches_only_journals_trackkit_created_for_this_user(tmp_path: Path) -> None:
    directory = jn.journal_dir(tmp_path)
    directory.mkdir(parents=True)
    foreign_named_like_a_journal = directory / NAMES[0]
    foreign = directory / "notes.db"
    others = directory / NAMES[2]
    images = {p: _foreign_sqlite(p) for p in (foreign_named_like_a_journal, foreign)}
    meta = {"backend": "example", "options": {}, "experiment": "e"}
    journal = jn.Journal.create(directory, NAMES[2][:-3], meta)
    journal.append(_points(3))
    journal.close()
    chowned = _owned_by_nobody(others)
    images[others] = others.read_bytes()
    target = tmp_path / "elsewhere.db"
    images[target] = _foreign_sqlite(target)
    (directory / NAMES[3]).symlink_to(target)

    results = {r.path.name: (r.outcome, r.error) for r in trackkit.sync(tmp_path)}
    others_result = results.pop(NAMES[2])
    assert results == {
        NAMES[0]: (
            "refused",
            "not a journal trackkit created (neither a format marker nor a journal's tables)",
        ),
        NAMES[3]: ("refused", f"{NAMES[3]} is a symbolic link"),
        "notes.db": ("refused", "not a journal trackkit created (its name)"),
    }
    if chowned:
        me = f"{pwd_name(os.geteuid())} (uid {os.geteuid()})"
        assert others_result == (
            "refused",
            f"{NAMES[2]} is owned by nobody (uid 65534), not by {me}",
        )
    else:  # without root it stays this user's journal, replayed as usual
        assert others_result[0] != "refused"
        del images[others]
    for path, image in images.items():
        assert path.read_bytes() == image, f"{path} was changed"
    # nothing was created beside the files it refused (no lock, WAL or SHM file)
    created = {p.name for p in directory.iterdir()} - {NAMES[0], NAMES[3], "notes.db"}
    assert not {n for n in created if n.startswith((NAMES[0], NAMES[3], "notes.db"))}
    if chowned:
        assert created == {NAMES[2], f"{NAMES[2]}.lock"}  # its own lock, from when it was written
    assert not Path(f"{target}-wal").exists() and not Path(f"{target}-shm").exists()


def test_artifact_copies_are_taken_only_from_the_journals_own_folder(tmp_path: Path) -> None:
    journal = jn.Journal(tmp_path / "j" / f"{NAMES[0]}")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key.txt").write_text("private")
    kept = journal.keep(secret / "key.txt")
    assert journal.kept_file(kept) == journal.files_dir() / kept
    assert journal.kept_file(str(journal.files_dir() / kept)) == journal.files_dir() / kept
    (journal.files_dir() / "f").mkdir()
    (journal.files_dir() / "f" / "link").symlink_to(secret / "key.txt")
    (journal.files_dir() / "d").mkdir()
    (journal.files_dir() / "d" / "tree").mkdir()
    (journal.files_dir() / "d" / "tree" / "inner").symlink_to(secret)
    (journal.files_dir() / "p").mkdir()
    os.mkfifo(journal.files_dir() / "p" / "fifo")
    refused = {
        str(secret / "key.txt"): "is not inside",
        "../../secret/key.txt": "is not inside",
        f"{kept.split('/')[0]}/../../../secret/key.txt": "is not inside",
        "key.txt": "is not a copy trackkit kept",
        "f/link": "is a link or not yours",
        "d/tree": "holds 'inner', which is not a regular file or directory",
        "p/fifo": "is not a regular file",
        "gone/key.txt": "is missing",
        "": "is not inside",
    }
    for text, message in refused.items():
        with pytest.raises(trackkit.InvalidInput, match=message):
            journal.kept_file(text)
    journal.discard_file(secret / "key.txt")  # not a folder of the journal's: nothing happens
    journal.discard_file(journal.files_dir() / kept)
    assert (secret / "key.txt").read_text() == "private"
    assert not (journal.files_dir() / kept).exists()
    journal.close()


# -- sync and damage --------------------------------------------------------------------------------
def _example() -> None:
    if "example" not in trackkit.available_backends():
        pytest.skip("needs the trackkit-example plugin")


def _delivered(tmp_path: Path) -> dict[str, Any]:
    """What the example backend holds: each run's status and its (step, value) points."""
    runs = {}
    for meta_file in (tmp_path / "trackkit-example-runs").glob("*/*/meta.json"):
        meta = json.loads(meta_file.read_text())
        lines = (meta_file.parent / "metrics.jsonl").read_text().splitlines()
        points = sorted((p["step"], p["value"]) for p in map(json.loads, lines))
        runs[meta["id"]] = (meta["status"], points)
    return runs


def _garbage_in_the_middle(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek((size // 2) // 4096 * 4096 + 100)
        f.write(os.urandom(3000))


def test_sync_delivers_every_healthy_journal_whatever_its_neighbours(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A torn WAL, garbage in a file's pages, a chunk failing its checksum, a file that is not
    a database and one without metadata, next to two healthy journals: both healthy ones
    are delivered, the damaged ones are moved aside with a reason and what they held is
    salvaged, nothing is reported delivered that was not, and the command exits 0."""
    _example()
    directory = jn.journal_dir(tmp_path)
    healthy = [_journal_of_a_killed_process(directory, n) for n in (NAMES[0], NAMES[5])]
    torn = _journal_of_a_killed_process(directory, NAMES[1])
    os.truncate(f"{torn}-wal", Path(f"{torn}-wal").stat().st_size * 2 // 3)
    garbage = _journal_of_a_killed_process(directory, NAMES[2], close=True)
    _garbage_in_the_middle(garbage)
    checksum = _journal_of_a_killed_process(directory, NAMES[3], close=True)
    db = sqlite3.connect(checksum)
    db.execute("UPDATE chunks SET ops = ? WHERE first = 2001", (pickle.dumps(_points(500), 5),))
    db.commit()
    db.close()
    not_a_database = directory / NAMES[4]
    not_a_database.write_bytes(os.urandom(8192))
    no_meta = jn.Journal.create(directory, f"local-{'0' * 32}", {})
    no_meta.append(_points(10))
    no_meta.close()

    assert cli.main(["sync", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert len(lines) == 7, out  # one line each
    for path in healthy:
        assert lines[path.name].split()[3:5] == ["delivered", "5001"]  # and the end
    for name in (NAMES[1], NAMES[2], NAMES[3], NAMES[4], f"local-{'0' * 32}.db"):
        assert lines[name].split()[3] == "damaged", lines[name]
        assert f"moved to {name}.damaged" in lines[name]
        assert Path(directory / f"{name}.damaged").exists()
    assert "operations written to it are gone" in lines[NAMES[1]]
    assert "operations 2001-2500 fail their checksum" in lines[NAMES[3]]
    assert "unreadable" in lines[NAMES[4]] and "nothing could be salvaged" in lines[NAMES[4]]
    assert lines[f"local-{'0' * 32}.db"].endswith(
        "damaged: its metadata lacks backend, options; moved to "
        f"local-{'0' * 32}.db.damaged; nothing can be replayed without its metadata"
    )
    assert not list(directory.glob("*.db"))  # nothing left to replay

    runs = _delivered(tmp_path)
    every = [(s, float(s)) for s in range(5000)]
    by_points = sorted(runs.values(), key=lambda r: len(r[1]))
    assert all(status == "KILLED" for status, _ in runs.values())
    assert [points for _, points in by_points].count(every) == 2  # the healthy ones, whole
    assert len(runs) == 5  # no run for the file that is not a database, nor the meta-less one
    for _, points in runs.values():
        assert all(value == step for step, value in points)  # no garbage ever sent
    checksum_run = runs[lines[NAMES[3]].split()[2]][1]
    assert checksum_run == [x for x in every if not 2000 <= x[0] < 2500]
    assert lines[NAMES[3]].endswith("; 4500 operations salvaged, 500 lost")
    for name in (NAMES[1], NAMES[2]):  # salvaged + lost is what was written; salvaged was sent
        line = lines[name]
        [(salvaged, lost)] = re.findall(r"(\d+) operations salvaged, (\d+) lost$", line)
        assert int(salvaged) + int(lost) == 5000 and 0 < int(salvaged) < 5000, line
        assert int(line.split()[4]) == int(salvaged) + 1  # and the run's end
        assert len(runs[line.split()[2]][1]) == int(salvaged)

    assert cli.main(["sync", "--dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "nothing to sync\n"


def test_sync_reports_an_unreadable_journal_and_goes_on(tmp_path: Path) -> None:
    """A journal of a newer format is refused untouched; a file that is not a database is
    set aside; neither stops sync."""
    directory = jn.journal_dir(tmp_path)
    directory.mkdir(parents=True)
    newer = sqlite3.connect(directory / NAMES[0])
    newer.execute(f"PRAGMA application_id = {jn.MARKER}")
    newer.execute(f"PRAGMA user_version = {jn.FORMAT + 1}")
    newer.close()
    (directory / NAMES[1]).write_bytes(b"not a database" * 100)
    results = trackkit.sync(tmp_path)
    assert [(r.path.name, r.outcome) for r in results] == [
        (NAMES[0], "refused"),
        (NAMES[1], "damaged"),
    ]
    assert "newer trackkit" in (results[0].error or "")
    assert (directory / NAMES[0]).exists() and (directory / f"{NAMES[1]}.damaged").exists()


def test_metadata_replay_cannot_use_is_damage_not_a_failure_forever(tmp_path: Path) -> None:
    """Old sync raised KeyError on such journals every time; now each is set aside once."""
    _example()
    directory = jn.journal_dir(tmp_path)
    bad = {
        NAMES[0]: {"backend": "example", "options": {}},  # a run with neither id nor experiment
        NAMES[1]: {"backend": "example", "options": "root=/"},
        NAMES[2]: {"backend": ["example"], "options": {}},
    }
    for name, meta in bad.items():
        journal = jn.Journal.create(directory, name[:-3], meta)
        journal.append(_points(3))
        journal.close()
    results = {r.path.name: (r.outcome, r.error) for r in trackkit.sync(tmp_path)}
    tail = "nothing can be replayed without its metadata"
    assert results == {
        NAMES[0]: (
            "damaged",
            "damaged: its metadata names neither the run nor its experiment; moved to "
            f"{NAMES[0]}.damaged; {tail}",
        ),
        NAMES[1]: (
            "damaged",
            f"damaged: its metadata names no backend and options; moved to {NAMES[1]}.damaged; "
            f"{tail}",
        ),
        NAMES[2]: (
            "damaged",
            f"damaged: its metadata names no backend and options; moved to {NAMES[2]}.damaged; "
            f"{tail}",
        ),
    }
    assert trackkit.sync(tmp_path) == []


def test_trackkit_sync_is_the_function_whatever_was_imported_first(tmp_path: Path) -> None:
    """Touching `trackkit.SyncResult` or importing the module that holds `sync` first once left
    `trackkit.sync` naming a module, so `trackkit.sync(...)` failed with "'module' object is
    not callable" for the rest of the process."""
    code = (
        "import sys, trackkit; trackkit.SyncResult; import trackkit.replay; "
        "from trackkit import cli; "
        "assert callable(trackkit.sync), trackkit.sync; "
        "assert trackkit.sync(sys.argv[1]) == []"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_trackkit_sync_stays_the_function_after_the_command_ran(tmp_path: Path) -> None:
    """`trackkit sync` in a process that never touched trackkit.sync before."""
    code = (
        "import sys, trackkit; from trackkit import cli; "
        "assert cli.main(['sync', '--dir', sys.argv[1]]) == 0; "
        "assert callable(trackkit.sync) and trackkit.sync(sys.argv[1]) == []"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
