"""The active runs: what ``trackkit.active_run()`` (and so autologging) logs into.

Two kinds of run are active until they end, the innermost first:

- a run started with ``trackkit.start_run()``, in every thread (as before: a search's worker
  threads log into the search's run);
- a run entered as a context manager, ``with tracker.start_run(...) as run:``, in the thread
  that entered it (``Run.__enter__`` calls :func:`entered`), as ``with mlflow.start_run():``
  makes a run MLflow's active one.

This module imports nothing of trackkit at run time, so ``trackkit.run`` can call it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trackkit.run import Run

_lock = threading.Lock()
#: (run, the thread it is active in, or None for every thread), innermost last
_entries: list[tuple[Run, int | None]] = []


def push(run: Run, *, every_thread: bool) -> None:
    """Make ``run`` the innermost active run (of this thread only, unless ``every_thread``);
    it stops being active when it ends. A run already active stays where it is."""
    thread = None if every_thread else threading.get_ident()
    with _lock:
        if any(known is run for known, _ in _entries):
            return
        _entries.append((run, thread))
    run.on_end.append(lambda status: _remove(run))


def entered(run: Run) -> None:
    """``Run.__enter__``: the run is active in this thread until it ends."""
    push(run, every_thread=False)


def _remove(run: Run) -> None:
    with _lock:
        _entries[:] = [(known, thread) for known, thread in _entries if known is not run]


def current() -> Run | None:
    """The innermost active run of this thread that has not ended, or None."""
    me = threading.get_ident()
    with _lock:
        _entries[:] = [(run, thread) for run, thread in _entries if not run.ended]
        for run, thread in reversed(_entries):
            if thread is None or thread == me:
                return run
    return None
