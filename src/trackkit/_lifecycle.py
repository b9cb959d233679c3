"""Open runs in this process: flushed on demand, and ended when the interpreter exits.

A run still open at exit is ended FINISHED, or FAILED if an uncaught exception is ending the
process, so no pending point is lost and no run stays RUNNING forever.
"""

from __future__ import annotations

import atexit
import sys
import threading
import warnings
from typing import TYPE_CHECKING, Any

from trackkit.errors import TrackkitWarning

if TYPE_CHECKING:
    from trackkit.tracker import Run, Tracker

_lock = threading.Lock()
_open: dict[int, Run] = {}
_installed = False
_crashed = False


def remember(run: Run) -> None:
    global _installed
    with _lock:
        _open[id(run)] = run
        if not _installed:
            _installed = True
            atexit.register(_end_all)
            previous = sys.excepthook

            def hook(*args: Any) -> None:
                global _crashed
                _crashed = True
                previous(*args)

            sys.excepthook = hook


def forget(run: Run) -> None:
    with _lock:
        _open.pop(id(run), None)


def open_runs(tracker: Tracker | None = None) -> list[Run]:
    with _lock:
        runs = list(_open.values())
    return [r for r in runs if tracker is None or r._tracker is tracker]


def flush_open(tracker: Tracker) -> None:
    for run in open_runs(tracker):
        run.flush()


def _end_all() -> None:
    status = "FAILED" if _crashed else "FINISHED"
    for run in open_runs():
        try:
            run.end(status)
        except Exception as e:  # at exit there is no caller left to raise to
            warnings.warn(
                f"trackkit could not end run {run.id} at exit: {e}", TrackkitWarning, stacklevel=1
            )
