"""Module-level functions in the course's fluent style, acting on the active run.

``trackkit.start_run()`` starts a run on the default tracker (``get_tracker()``, or the one
given to :func:`set_tracker`) and makes it active; the other functions act on the active run.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from trackkit.errors import TrackkitError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from trackkit.entities import ModelRef
    from trackkit.run import Run
    from trackkit.tracker import Tracker

_lock = threading.Lock()
_default: Tracker | None = None
_stack: list[Run] = []


def get_default_tracker() -> Tracker:
    """The tracker the module-level functions use, created with ``get_tracker()`` on first use."""
    global _default
    with _lock:
        if _default is None:
            from trackkit.tracker import get_tracker

            _default = get_tracker()
        return _default


def set_tracker(tracker: Tracker | None) -> None:
    """Use ``tracker`` for the module-level functions (``None``: create one again on next use)."""
    global _default
    with _lock:
        _default = tracker


def active_run() -> Run | None:
    """The innermost run started with ``trackkit.start_run`` that has not ended, or None."""
    with _lock:
        while _stack and _stack[-1].ended:
            _stack.pop()
        return _stack[-1] if _stack else None


def _run() -> Run:
    run = active_run()
    if run is None:
        raise TrackkitError(
            "no active run: start one with `with trackkit.start_run():` before logging"
        )
    return run


def start_run(
    experiment: str | None = None,
    name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    run_id: str | None = None,
) -> Run:
    """Start (or resume) a run on the default tracker and make it the active run."""
    run = get_default_tracker().start_run(
        experiment=experiment, name=name, tags=tags, run_id=run_id
    )
    with _lock:
        _stack.append(run)
    return run


def end_run(status: str = "FINISHED") -> None:
    """End the active run; does nothing when no run is active."""
    run = active_run()
    if run is not None:
        run.end(status)


def log_param(key: str, value: Any) -> None:
    _run().log_param(key, value)


def log_params(params: Mapping[str, Any]) -> None:
    _run().log_params(params)


def log_metric(key: str, value: Any, step: int | None = None, timestamp: Any = None) -> None:
    _run().log_metric(key, value, step=step, timestamp=timestamp)


def log_metrics(metrics: Mapping[str, Any], step: int | None = None, timestamp: Any = None) -> None:
    _run().log_metrics(metrics, step=step, timestamp=timestamp)


def set_tag(key: str, value: Any) -> None:
    _run().set_tag(key, value)


def set_tags(tags: Mapping[str, Any]) -> None:
    _run().set_tags(tags)


def log_artifact(local_path: str | os.PathLike[str], path: str | None = None) -> None:
    _run().log_artifact(local_path, path)


def log_model(model: Any, name: str = "model", *, flavor: str | None = None) -> ModelRef:
    return _run().log_model(model, name, flavor=flavor)
