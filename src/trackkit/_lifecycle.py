"""Open runs in this process, and how they end when the process does.

- A run still open at interpreter exit is ended FINISHED, or FAILED if an uncaught exception
  ends the process (KILLED for KeyboardInterrupt), after its data is flushed.
- On SIGTERM, open runs are flushed and ended KILLED, then the process goes on to exit as
  it would have (the previous handler runs, or the default action is re-raised).
- SIGINT raises KeyboardInterrupt as usual; a run's context manager ends it KILLED.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import warnings
from types import FrameType
from typing import TYPE_CHECKING, Any

from trackkit.errors import TrackkitWarning

if TYPE_CHECKING:
    from trackkit.run import Run
    from trackkit.tracker import Tracker

_lock = threading.Lock()
_open: dict[int, Run] = {}
_installed = False
_exit_status = "FINISHED"


def status_for(exc_type: type[BaseException] | None, exc: BaseException | None) -> str:
    """The status a run ends with when ``exc`` leaves it."""
    if exc_type is None:
        return "FINISHED"
    if issubclass(exc_type, KeyboardInterrupt):
        return "KILLED"
    if issubclass(exc_type, SystemExit):
        code = getattr(exc, "code", None)
        return "FINISHED" if code in (None, 0) else "FAILED"
    return "FAILED"


def _install() -> None:
    global _installed
    _installed = True
    atexit.register(_at_exit)
    previous_hook = sys.excepthook

    def excepthook(*args: Any) -> None:
        global _exit_status
        _exit_status = status_for(args[0], args[1])
        previous_hook(*args)

    sys.excepthook = excepthook
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGTERM)
        if previous is not signal.SIG_IGN:

            def on_sigterm(signum: int, frame: FrameType | None) -> None:
                end_all("KILLED")
                if callable(previous):
                    previous(signum, frame)
                    return
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGTERM)

            signal.signal(signal.SIGTERM, on_sigterm)


def remember(run: Run) -> None:
    with _lock:
        _open[id(run)] = run
        if not _installed:
            _install()


def forget(run: Run) -> None:
    with _lock:
        _open.pop(id(run), None)


def open_runs(tracker: Tracker | None = None) -> list[Run]:
    with _lock:
        runs = list(_open.values())
    return [r for r in runs if tracker is None or r.tracker is tracker]


def flush_open(tracker: Tracker) -> None:
    for run in open_runs(tracker):
        run.flush()


def end_all(status: str) -> None:
    """End every open run with ``status``; never raises (the process is going away)."""
    for run in open_runs():
        try:
            run.end(status)
        except Exception as e:
            warnings.warn(
                f"trackkit could not end run {run.id}: {e}", TrackkitWarning, stacklevel=1
            )


def _at_exit() -> None:
    end_all(_exit_status)
