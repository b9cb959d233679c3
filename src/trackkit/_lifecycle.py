"""Open runs in this process, and how they end when the process does.

- A run still open at interpreter exit is ended FINISHED, or FAILED if an uncaught exception
  ends the process (KILLED for KeyboardInterrupt), after its data is flushed.
- On SIGTERM, a helper thread ends open runs KILLED: it sends what it can within the
  tracker's ``end_timeout``, leaves the rest journaled, and then the process exits as it would
  have (the previous handler runs in the main thread, or the default action is re-raised).
  The signal handler itself only wakes that thread: it runs between two bytecodes of whatever
  the main thread was doing, maybe inside a log call holding the run's lock or a spill holding
  the journal's, so it must take no lock trackkit code holds. Once a run is ended this way, a
  trackkit call in the main thread waits for the exit instead of logging into the ended run.
- SIGINT raises KeyboardInterrupt as usual; a run's context manager ends it KILLED.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
import time
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
#: seconds the main thread gets to exit after the runs were ended, before the helper forces
#: the default action (the main thread may be inside a long call into C code)
GRACE = 0.5

_pid = 0
_previous: dict[int, Any] = {}
_signalled = threading.Event()  # a termination signal arrived: the helper ends the runs
_ended = threading.Event()  # the helper is done: the process may exit
_signum: int = signal.SIGTERM
_reraised = False


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
    global _installed, _pid
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
            _pid = os.getpid()
            _previous[signal.SIGTERM] = previous
            # started now, not in the handler: starting a thread takes locks of its own
            threading.Thread(target=_end_on_signal, name="trackkit-signal", daemon=True).start()
            signal.signal(signal.SIGTERM, _on_signal)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """The handler: wake the helper and return at once (see the module's docstring)."""
    global _signum
    if os.getpid() != _pid or _signalled.is_set():
        # a forked child (its runs are its parent's), the helper's own nudge once done, or a
        # second signal while ending: exit now, as without trackkit
        _reraise(signum, frame)
        return
    _signum = signum
    _signalled.set()


def _reraise(signum: int, frame: FrameType | None) -> None:
    """(main thread) Do what the signal would have done without trackkit."""
    global _reraised
    if _reraised:
        return
    _reraised = True
    previous = _previous.get(signum, signal.SIG_DFL)
    if previous is None:
        previous = signal.SIG_DFL
    signal.signal(signum, previous)
    if callable(previous):
        previous(signum, frame)
        return
    os.kill(os.getpid(), signum)


def _end_on_signal() -> None:
    """The helper thread: end every open run KILLED, then let the process exit."""
    _signalled.wait()
    started = time.monotonic()
    try:
        end_all("KILLED", started=started)
    finally:
        _ended.set()
    main = threading.main_thread()
    if main.ident is not None:
        with contextlib.suppress(Exception):
            signal.pthread_kill(main.ident, _signum)  # the handler re-raises in the main thread
    if _previous.get(_signum) in (signal.SIG_DFL, None):
        time.sleep(GRACE)
        _force_default(_signum)


def _force_default(signum: int) -> None:
    """The main thread did not get to re-raise the signal (it is inside a long call into C
    code): restore the default action at the OS level and raise it from here."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.signal.argtypes = (ctypes.c_int, ctypes.c_void_p)
        libc.signal(signum, None)  # SIG_DFL
        os.kill(os.getpid(), signum)


def terminating() -> bool:
    """True once a termination signal is being handled (runs are ended KILLED)."""
    return _signalled.is_set()


def wait_for_exit() -> None:
    """Wait until the signal's helper ended the runs; in the main thread, then exit as the
    signal would have made it (returns only if a previous handler let the process go on)."""
    _ended.wait()
    if threading.current_thread() is threading.main_thread():
        _reraise(_signum, None)


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


def end_all(status: str, started: float | None = None) -> None:
    """End every open run with ``status``; never raises (the process is going away).

    With ``started`` (a ``time.monotonic()``), every run is first marked ended at once, then
    each is given what is left of its tracker's ``end_timeout`` counted from ``started``:
    the signal path, which must finish in time. Runs another thread is ending are waited for
    too.
    """
    runs = open_runs()
    if started is None:
        for run in runs:
            try:
                run.end(status)
            except Exception as e:
                warnings.warn(
                    f"trackkit could not end run {run.id}: {e}", TrackkitWarning, stacklevel=1
                )
        return
    for run in runs:
        run.close(status)
    for run in runs:
        writer = run.tracker.writer
        remaining = started + run.tracker.end_timeout - time.monotonic()
        try:
            if not writer.flush(run.outbox, max(0.0, remaining)) and run.outbox.in_memory:
                writer.keep(run.outbox)
        except Exception:  # the journal keeps what was not sent
            continue
        finally:
            forget(run)


def _at_exit() -> None:
    if terminating():
        wait_for_exit()
    end_all(_exit_status)
