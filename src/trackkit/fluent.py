"""Module-level functions in the course's fluent style, acting on the active run.

``trackkit.start_run()`` starts a run on the default tracker (``get_tracker()``, or the one
given to :func:`set_tracker`) and makes it active; the other functions act on the active run.
A run entered with ``with tracker.start_run(...) as run:`` is active too, in its thread, for
the block (see :mod:`trackkit._active`).
"""

from __future__ import annotations

import inspect
import os
import threading
import warnings
from typing import TYPE_CHECKING, Any, Literal, overload

from trackkit import _active
from trackkit._secrets import redact
from trackkit.errors import InvalidInput, TrackkitError, TrackkitWarning, UnsupportedOperation

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from pandas import DataFrame

    from trackkit.entities import ModelRef, ModelVersion, RunInfo
    from trackkit.models import Signature
    from trackkit.run import Run
    from trackkit.tracker import Tracker

_lock = threading.Lock()
_default: Tracker | None = None
_last: Run | None = None
_experiment: str | None = None  # set_experiment
_tracking_uri: str | None = None  # set_tracking_uri, used when the default tracker is created


def get_default_tracker() -> Tracker:
    """The tracker the module-level functions use, created with ``get_tracker()`` on first use."""
    global _default
    with _lock:
        if _default is None:
            from trackkit.multi import get_tracker  # TRACKKIT_BACKEND may list several

            options = {} if _tracking_uri is None else _uri_options(_tracking_uri)
            _default = get_tracker(**options)
        return _default


def set_tracker(tracker: Tracker | None) -> None:
    """Use ``tracker`` for the module-level functions (``None``: create one again on next use).

    ``None`` also forgets :func:`set_experiment` and :func:`set_tracking_uri`.
    """
    global _default, _experiment, _tracking_uri
    with _lock:
        _default = tracker
        if tracker is None:
            _experiment = _tracking_uri = None


def _uri_options(uri: str) -> dict[str, Any]:
    """The ``get_tracker`` options that give ``uri`` to the backend ``TRACKKIT_BACKEND`` names,
    or, when it lists several, to the one of them that takes a tracking URI.

    Raises:
        UnsupportedOperation: no backend named takes one.
        InvalidInput: several do (which one is meant is not known).
    """
    from trackkit.multi import backend_names
    from trackkit.plugins import get_plugin_manager
    from trackkit.tracker import DEFAULT_BACKEND

    names = backend_names(os.environ.get("TRACKKIT_BACKEND") or DEFAULT_BACKEND)
    classes = {name: get_plugin_manager().backend_class(name) for name in names}
    takers = [
        n for n, cls in classes.items() if "tracking_uri" in inspect.signature(cls).parameters
    ]
    if len(names) == 1:
        if not takers:
            raise UnsupportedOperation(
                f"the {names[0]} backend has no tracking URI; instead, pass its options to "
                f"trackkit.get_tracker({names[0]!r}, ...) and use trackkit.set_tracker(tracker)"
            )
        return {"tracking_uri": uri}
    example = f"trackkit.get_tracker({names!r}, {names[0]}={{...}}, ...)"
    if not takers:
        raise UnsupportedOperation(
            f"none of the backends {', '.join(names)} has a tracking URI; instead, pass each "
            f"its options, {example}, and use trackkit.set_tracker(tracker)"
        )
    if len(takers) > 1:
        raise InvalidInput(
            f"the backends {', '.join(takers)} (TRACKKIT_BACKEND) each take a tracking URI, so "
            f"which one is meant is not known; pass each its own, {example}, and use "
            "trackkit.set_tracker(tracker)"
        )
    return {takers[0]: {"tracking_uri": uri}}


def set_tracking_uri(uri: str | os.PathLike[str]) -> None:
    """Use the tracking service at ``uri`` for the module-level functions (MLflow's call).

    The default tracker is created again on its next use, on the backend ``TRACKKIT_BACKEND``
    names, with ``tracking_uri=uri``. When it names several backends
    (``TRACKKIT_BACKEND=mlflow,wandb``), ``uri`` goes to the one that takes a tracking URI
    (MLflow), and the others keep their own settings.

    Raises:
        UnsupportedOperation: no backend named takes a tracking URI (W&B and Neptune are
            chosen with their own options: ``get_tracker("wandb", project=...)`` and
            ``set_tracker``).
        InvalidInput: several backends named take one.
        TrackkitError: a run is active (end it first).
    """
    global _default, _tracking_uri
    if not isinstance(uri, (str, os.PathLike)) or not os.fspath(uri):
        raise InvalidInput(f"tracking URI must be a non-empty string, got {uri!r}")
    _uri_options(os.fspath(uri))  # refused before anything changes
    if active_run() is not None:
        raise TrackkitError("end the active run before changing the tracking URI")
    with _lock:
        old, _default = _default, None
        _tracking_uri = os.fspath(uri)
    if old is not None:
        old.close()


def get_tracking_uri() -> str:
    """The tracking URI the module-level functions use (with several backends, the one of
    the backend that has one).

    Raises:
        UnsupportedOperation: no backend of the default tracker has a tracking URI.
    """
    from trackkit.multi import MultiTracker

    tracker = get_default_tracker()
    lanes = tracker.lanes if isinstance(tracker, MultiTracker) else {"": tracker}
    for lane in lanes.values():
        uri = getattr(lane.backend, "tracking_uri", None)
        if isinstance(uri, str):
            return uri
    names = [lane.backend.name for lane in lanes.values()]
    which = (
        f"the {names[0]} backend has no tracking URI"
        if len(names) == 1
        else f"none of the backends {', '.join(names)} has a tracking URI"
    )
    raise UnsupportedOperation(f"{which}; instead, see trackkit.get_default_tracker().describe()")


def set_experiment(name: str) -> None:
    """Start the next module-level runs in experiment ``name`` (when none is given)."""
    global _experiment
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput(f"experiment must be a non-empty string, got {name!r}")
    with _lock:
        _experiment = name


def active_run() -> Run | None:
    """The innermost active run that has not ended, or None: a run started with
    ``trackkit.start_run``, or one entered with ``with tracker.start_run(...) as run:`` in this
    thread (until its block ends)."""
    return _active.current()


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
    nested: bool = False,
    parent: Run | str | None = None,
) -> Run:
    """Start (or resume) a run on the default tracker and make it the active run.

    Args:
        experiment: defaults to :func:`set_experiment`'s, else as in ``Tracker.start_run``
            (a child run: its parent's).
        nested: make the active run (if any) the new run's parent, as MLflow's
            ``start_run(nested=True)``.
        parent: the parent run (a Run or a run id) instead of the active one. A child of a
            Run starts on that run's tracker (a run and its children share one backend).

    Raises:
        UnsupportedOperation: a parent applies and the backend has no nested runs.
    """
    if parent is None and nested:
        parent = active_run()
    if experiment is None and run_id is None and not hasattr(parent, "experiment"):
        experiment = _experiment  # a child run defaults to its parent's experiment
    tracker = getattr(parent, "tracker", None) or get_default_tracker()
    return start_active_run(
        tracker, experiment=experiment, name=name, tags=tags, run_id=run_id, parent=parent
    )


def start_active_run(
    tracker: Tracker,
    experiment: str | None = None,
    name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    run_id: str | None = None,
    parent: Run | str | None = None,
) -> Run:
    """``tracker.start_run(...)``, made the active run in every thread as :func:`start_run`
    makes its runs (the search integrations start trials on the search run's tracker)."""
    global _last
    run = tracker.start_run(
        experiment=experiment, name=name, tags=tags, run_id=run_id, parent=parent
    )
    _active.push(run, every_thread=True)
    with _lock:
        _last = run
    _activate(run)
    return run


def _activate(run: Run) -> None:
    """Tell the backend the run is the active one (MLflow: MLflow's own active run too)."""
    backend, backend_id = run.tracker.backend, run.outbox.run_id
    if backend_id is None:  # a run that exists only locally so far
        return
    try:
        backend.activate_run(backend_id)
    except Exception as e:  # the run itself is fine: only the backend's own view is not
        warnings.warn(
            redact(
                f"run {backend_id} is trackkit's active run but could not be made the "
                f"{backend.name} SDK's own ({type(e).__name__}: {e})"
            ),
            TrackkitWarning,
            stacklevel=3,
        )
        return
    run.on_end.append(lambda status: backend.deactivate_run(backend_id, status))


def last_active_run() -> RunInfo | None:
    """The run active now, else the last one started with ``trackkit.start_run`` (or by
    autologging), read back from the backend; None if there is none."""
    run = active_run() or _last
    if run is None:
        return None
    return run.tracker.get_run(run.id)


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


def log_text(text: str, file: str) -> None:
    _run().log_text(text, file)


def log_dict(obj: Any, file: str) -> None:
    _run().log_dict(obj, file)


def log_figure(figure: Any, file: str) -> None:
    _run().log_figure(figure, file)


def log_table(table: Any, file: str) -> None:
    _run().log_table(table, file)


def log_model(
    model: Any,
    name: str = "model",
    *,
    flavor: str | None = None,
    signature: Signature | Mapping[str, Any] | Any = None,
    input_example: Any = None,
) -> ModelRef:
    return _run().log_model(
        model, name, flavor=flavor, signature=signature, input_example=input_example
    )


def register_model(
    source: ModelRef | str, name: str, description: str | None = None
) -> ModelVersion:
    """Register a logged model on the default tracker (see ``Tracker.register_model``)."""
    return get_default_tracker().register_model(source, name, description=description)


def load_model(
    model: str | ModelRef, version: int | str | None = None, alias: str | None = None
) -> Any:
    """Load a model with the default tracker (see ``Tracker.load_model``)."""
    return get_default_tracker().load_model(model, version=version, alias=alias)


@overload
def search_runs(
    experiment: str | Sequence[str] | None = None,
    filter: str | None = None,
    order_by: str | Sequence[str] | None = None,
    max_results: int = 100,
    *,
    output_format: Literal["pandas"] = "pandas",
) -> DataFrame: ...


@overload
def search_runs(
    experiment: str | Sequence[str] | None = None,
    filter: str | None = None,
    order_by: str | Sequence[str] | None = None,
    max_results: int = 100,
    *,
    output_format: Literal["list"],
) -> list[RunInfo]: ...


def search_runs(
    experiment: str | Sequence[str] | None = None,
    filter: str | None = None,
    order_by: str | Sequence[str] | None = None,
    max_results: int = 100,
    *,
    output_format: Literal["pandas", "list"] = "pandas",
) -> DataFrame | list[RunInfo]:
    """Search runs on the default tracker; a pandas DataFrame by default, as
    ``mlflow.search_runs`` returns (see ``Tracker.search_runs`` for the arguments).

    ``experiment`` defaults to :func:`set_experiment`'s, else as in ``Tracker.search_runs``.

    Raises:
        MissingDependencyError: pandas is not installed (``pip install 'trackkit[pandas]'``);
            ``output_format="list"`` needs no pandas.
    """
    if experiment is None:
        experiment = _experiment
    tracker = get_default_tracker()
    if output_format == "list":
        return tracker.search_runs(experiment, filter, order_by, max_results, output_format="list")
    return tracker.search_runs(
        experiment, filter, order_by, max_results, output_format=output_format
    )
