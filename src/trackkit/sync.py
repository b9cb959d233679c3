"""``trackkit sync``: replay journals left on disk to their backends.

A journal is left behind when a run ended while its backend was unreachable, when the
process was killed, or when operations were deferred (e.g. registry calls made offline).
Replay is idempotent: acknowledged operations were deleted from the journal, so nothing is
sent twice; a run whose process died without ending it is ended KILLED.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trackkit import journal as jn
from trackkit._secrets import redact
from trackkit.errors import InvalidInput, TrackkitError, UnsupportedOperation
from trackkit.writer import deliver

if TYPE_CHECKING:
    from trackkit.tracker import Tracker


@dataclass(frozen=True)
class SyncResult:
    """What ``sync`` did with one journal file."""

    path: Path
    kind: str  # "run" or "deferred"
    run_id: str | None
    outcome: str  # "delivered", "partial", "live" (its process still runs) or "failed"
    operations: int  # operations delivered
    error: str | None = None


def _tracker(cache: dict[str, Tracker], meta: dict[str, Any], overrides: dict[str, Any]) -> Tracker:
    from trackkit.tracker import get_tracker

    options = {**meta.get("options", {}), **overrides}
    key = json.dumps([meta["backend"], options], sort_keys=True, default=str)
    if key not in cache:
        cache[key] = get_tracker(meta["backend"], **options)
    return cache[key]


def _replay_deferred(journal: jn.Journal, tracker: Tracker) -> int:
    from trackkit.tracker import DEFERRABLE

    if tracker.backend.offline_registry() is not None:
        raise UnsupportedOperation(
            f"cannot replay registry changes to {tracker.backend.describe()}: its registry is "
            "offline in this mode too; run `trackkit sync` with the backend online"
        )
    done = 0
    while rows := journal.pending(100):
        for seq, _, operation, _, _, _, args in rows:
            if operation not in DEFERRABLE:  # a journal is untrusted input: replay only these
                raise InvalidInput(
                    f"journal {journal.path} asks to replay {operation!r}, which is not a "
                    f"registry call trackkit defers ({', '.join(DEFERRABLE)})"
                )
            arguments = json.loads(args or "{}")
            if not isinstance(arguments, dict):
                raise InvalidInput(f"journal {journal.path} holds malformed arguments")
            getattr(tracker, operation)(**arguments)
            journal.ack([seq])
            done += 1
    return done


def sync(
    directory: str | os.PathLike[str] | None = None,
    backend: str | None = None,
    **options: Any,
) -> list[SyncResult]:
    """Replay every journal under the trackkit directory.

    Args:
        directory: the trackkit directory (default ``$TRACKKIT_DIR``, else ``./.trackkit``).
        backend: only replay journals of this backend (default: all).
        **options: backend options that override the recorded ones (e.g. ``tracking_uri``);
            give ``backend`` too when the directory holds journals of several backends.

    Returns:
        One SyncResult per journal file, in name order. Fully delivered journals are deleted.
    """
    results: list[SyncResult] = []
    trackers: dict[str, Tracker] = {}
    for path in sorted(jn.journal_dir(directory).glob("*.db")):
        try:
            journal = jn.Journal.try_open(path)
        except (TrackkitError, sqlite3.DatabaseError) as e:  # a newer format, a damaged file
            results.append(SyncResult(path, "run", None, "failed", 0, redact(str(e))))
            continue
        if journal is None:
            results.append(SyncResult(path, "run", None, "live", 0))
            continue
        meta = journal.meta()
        if backend is not None and meta.get("backend") != backend:
            journal.close()
            continue
        kind = "deferred" if meta.get("kind") == "deferred" else "run"
        before = journal.count()
        try:
            tracker = _tracker(trackers, meta, options)
            if kind == "deferred":
                _replay_deferred(journal, tracker)
                done = True
            else:
                if not meta.get("ended") and journal.count(jn.END) == 0:
                    # we hold its lock, so the process that logged this run is gone
                    journal.append([jn.Op(jn.END, ts=jn.now_ms(), text="KILLED")])
                    before += 1
                done = deliver(journal, tracker.backend, meta) or bool(meta.get("ended"))
            sent = before - journal.count()
            refused = len(journal.rejected())
            note = f"{refused} operations refused, kept in {path}.rejected" if refused else None
            outcome = "delivered" if done else "partial"
            results.append(SyncResult(path, kind, meta.get("run_id"), outcome, sent, note))
            if done:
                journal.remove()
            else:
                journal.close()
        except Exception as e:
            sent = before - journal.count()
            journal.close()
            error = redact(f"{type(e).__name__}: {e}")
            results.append(SyncResult(path, kind, meta.get("run_id"), "failed", sent, error))
    for tracker in trackers.values():
        tracker.close()
    return results
