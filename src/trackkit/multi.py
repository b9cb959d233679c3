"""Several backends at once: one run logged to each, every backend through its own lane.

``get_tracker(["mlflow", "wandb"], mlflow={...}, wandb={...})``, or
``TRACKKIT_BACKEND=mlflow,wandb``, gives a :class:`MultiTracker`. It holds one ordinary
:class:`~trackkit.tracker.Tracker` per backend, its *lane*: its own writer threads, journals,
backoff and batch shape. A run started on it is a :class:`MultiRun` holding one ordinary
:class:`~trackkit.run.Run` per backend. A MultiRun is itself a Run, under the strictest limits
of the chosen backends (:func:`combine_limits`), whose queue is a
:class:`~trackkit.outbox.FanOut` over its backends' outboxes: a log call is validated and
normalized once, by Run's own code, and the same operation is queued in every lane; each
lane's writer delivers it on its own, so a slow, failing or refusing backend delays no other,
nor the training loop. Each lane's journal names its own backend, so ``trackkit sync``
replays it there and only there.

Reads go to the first backend (the primary) or to the one named with ``backend=``; models
are logged, and registry changes made, on every backend that can hold them. An operation one
backend cannot do is done on the others and reported once (strict mode raises); one that
fails on a backend is left as that backend alone leaves it and reported each time. See
``docs/multiple-backends.md``.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from trackkit import normalize
from trackkit import tracker as single
from trackkit._secrets import redact
from trackkit.backend import Limits
from trackkit.entities import ModelRef, RunHandle
from trackkit.errors import (
    BackendError,
    InvalidInput,
    JournalError,
    TrackkitError,
    TrackkitWarning,
)
from trackkit.outbox import FanOut
from trackkit.run import Run
from trackkit.tracker import TRACKER_OPTIONS, Tracker

if TYPE_CHECKING:
    from datetime import datetime
    from pathlib import Path

    from pandas import DataFrame

    from trackkit.backend import Backend
    from trackkit.entities import (
        ArtifactInfo,
        MetricPoint,
        ModelVersion,
        RegisteredModel,
        RunInfo,
    )
    from trackkit.models import Package, Signature
    from trackkit.writer import Writer

__all__ = ["MultiRun", "MultiTracker", "backend_names", "combine_limits", "get_tracker"]

T = TypeVar("T")

#: a backend that can write its batches from a worker process takes this option (MLflow does);
#: with several backends it is on unless given, or unless the variable below is set
WORKER_OPTION = "batch_process"
WORKER_ENV = "TRACKKIT_MLFLOW_BATCH_PROCESS"
L = TypeVar("L")


# -- choosing backends ---------------------------------------------------------------------------
def backend_names(backend: str | Sequence[str]) -> list[str]:
    """The backend names in ``backend``: a list, or a comma-separated string.

    Raises:
        InvalidInput: the list is empty, names a backend twice, or holds a blank or non-string
            name.
    """
    raw: list[Any] = backend.split(",") if isinstance(backend, str) else list(backend)
    if not raw:
        raise InvalidInput("the list of backends is empty: name at least one, e.g. ['mlflow']")
    names = []
    for item in raw:
        if not isinstance(item, str) or not item.strip():
            raise InvalidInput(
                f"backend names must be non-empty strings, got {item!r} in {backend!r}"
            )
        names.append(item.strip())
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidInput(f"backend {twice[0]!r} is named twice in {backend!r}; name it once")
    return names


def _accepts(cls: type[Backend], option: str) -> bool:
    """Whether the backend class takes ``option`` by name."""
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False
    found = parameters.get(option)
    return found is not None and found.kind in (found.POSITIONAL_OR_KEYWORD, found.KEYWORD_ONLY)


def _split_options(names: list[str], options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each backend's options, from ``options`` given with several backends: trackkit's own at
    the top level (shared by every lane), a backend's own under its name."""
    from trackkit.plugins import get_plugin_manager

    manager = get_plugin_manager()
    classes = {name: manager.backend_class(name) for name in names}  # unknown: a clear error
    own = {k: v for k, v in options.items() if k in TRACKER_OPTIONS}
    lanes: dict[str, dict[str, Any]] = {name: dict(own) for name in names}
    for key, value in options.items():
        if key in TRACKER_OPTIONS:
            continue
        if key in lanes:
            if not isinstance(value, Mapping):
                raise InvalidInput(
                    f"the options of the {key} backend must be a mapping, e.g. "
                    f"{key}={{...}}, got {type(value).__name__}"
                )
            shared = [k for k in value if k in TRACKER_OPTIONS]
            if shared:
                raise InvalidInput(
                    f"{shared[0]!r} is one of trackkit's own options, shared by every backend "
                    f"(not a {key} option): pass it at the top level, "
                    f"get_tracker({names!r}, {shared[0]}=...)"
                )
            lanes[key].update(value)
            continue
        if key in manager.backends():
            raise InvalidInput(
                f"options are given for the {key} backend, which is not among the chosen "
                f"backends {names!r}"
            )
        owners = [n for n in names if _accepts(classes[n], key)]
        belongs = f"an option of the {owners[0]} backend" if owners else "not trackkit's own"
        raise InvalidInput(
            f"get_tracker option {key!r} is {belongs}: with several backends, pass each "
            f"backend's options under its name, e.g. get_tracker({names!r}, "
            f"{owners[0] if owners else names[0]}={{{key!r}: ...}}); trackkit's own options "
            f"({', '.join(TRACKER_OPTIONS)}) stay at the top level"
        )
    for name in names:  # the lanes share this process: see docs/multiple-backends.md
        if _accepts(classes[name], WORKER_OPTION) and not os.environ.get(WORKER_ENV):
            lanes[name].setdefault(WORKER_OPTION, True)
    return lanes


def get_tracker(backend: str | Sequence[str] | None = None, **options: Any) -> Tracker:
    """Create a Tracker on one backend, or on several at once.

    Args:
        backend: a registered backend name; several as a list or a comma-separated string
            (``["mlflow", "wandb"]``, ``"mlflow,wandb"``), the first one the primary; defaults
            to ``$TRACKKIT_BACKEND`` (which may list several the same way), else ``"mlflow"``.
        **options: trackkit's own options (``strict``, ``journal_dir``, ``flush_interval``,
            ``end_timeout``, ``memory_bound``; see :class:`Tracker`). With one backend, every
            other option goes to it (e.g. ``tracking_uri`` for MLflow); with several, each
            backend's options go in a mapping under its name, e.g.
            ``mlflow={"tracking_uri": ...}, wandb={"project": ...}``.

    Returns:
        A :class:`Tracker`; with several backends, a :class:`MultiTracker`.

    Raises:
        UnknownBackendError: no backend has that name (the message suggests the closest).
        MissingDependencyError: the backend's SDK is not installed (the message names the extra).
        InvalidInput: a backend does not accept one of ``options``; with several backends, a
            backend's option is given at the top level, the list is empty, or a backend is
            named twice.
    """
    chosen: str | Sequence[str] | None = backend
    if chosen is None:
        chosen = os.environ.get("TRACKKIT_BACKEND") or None
    if chosen is None or (isinstance(chosen, str) and "," not in chosen):
        return single.get_tracker(chosen, **options)  # one backend: exactly as before
    names = backend_names(chosen)
    lane_options = _split_options(names, options)
    if len(names) == 1:
        return single.get_tracker(names[0], **lane_options[names[0]])
    lanes: dict[str, Tracker] = {}
    try:
        for name in names:
            lanes[name] = single.get_tracker(name, **lane_options[name])
    except BaseException:
        for made in lanes.values():
            with contextlib.suppress(Exception):
                made.close()
        raise
    return MultiTracker(lanes)


def combine_limits(limits: Sequence[Limits]) -> Limits:
    """The strictest of several backends' limits: what every one of them accepts.

    Lengths, batch sizes, steps and timestamps: the smallest (``None``, no limit, only where
    none has one); forbidden key characters: those any of them forbids.
    """

    def least(values: Sequence[int | None]) -> int | None:
        present = [v for v in values if v is not None]
        return min(present) if present else None

    patterns = list(dict.fromkeys(x.key_invalid_chars for x in limits if x.key_invalid_chars))
    chars = "|".join(f"(?:{p})" for p in patterns) if len(patterns) > 1 else None
    return Limits(
        key_length=least([x.key_length for x in limits]),
        param_value_length=least([x.param_value_length for x in limits]),
        tag_value_length=least([x.tag_value_length for x in limits]),
        key_invalid_chars=chars or (patterns[0] if patterns else None),
        batch_metrics=min(x.batch_metrics for x in limits),
        batch_params_tags=min(x.batch_params_tags for x in limits),
        batch_total=min(x.batch_total for x in limits),
        concurrent_batches=min(x.concurrent_batches for x in limits),
        max_step=min(x.max_step for x in limits),
        max_timestamp=least([x.max_timestamp for x in limits]),
    )


# -- the tracker ---------------------------------------------------------------------------------
class MultiTracker(Tracker):
    """A Tracker on several backends at once, each through its own lane.

    ``lanes`` maps each backend's name to its own :class:`Tracker` (the first is the
    primary); ``backend`` and ``writer`` are the primary's. Runs are created, and every log
    call delivered, on each backend; reads go to the primary, or to the backend named with
    ``backend=``; models and registry changes go to every backend that can hold them. Create
    one with :func:`trackkit.get_tracker`.
    """

    def __init__(self, lanes: Mapping[str, Tracker]) -> None:
        """Args:
        lanes: backend name -> a Tracker on that backend, in order; the first is the primary.
        """
        # Tracker.__init__ is not called: a MultiTracker sends nothing itself, its lanes do
        if len(lanes) < 2:
            raise InvalidInput("a MultiTracker needs at least two backends")
        self.lanes: dict[str, Tracker] = dict(lanes)
        self.primary: Tracker = next(iter(self.lanes.values()))
        self.backend = self.primary.backend
        self.writer = self.primary.writer
        self.strict = any(lane.strict for lane in self.lanes.values())
        self.journal_dir = self.primary.journal_dir
        self.end_timeout = self.primary.end_timeout
        self.memory_bound = self.primary.memory_bound
        #: the strictest limits of the backends: every log call is normalized under them once
        self.limits = combine_limits([lane.backend.limits for lane in self.lanes.values()])
        # a lane's run id (as first known) -> the runs of one MultiRun, to translate ids
        self._runs: dict[str, dict[str, Run]] = {}
        # a logged model's URI (on any lane) -> the ModelRef of each backend that holds it
        self._models: dict[str, dict[str, ModelRef]] = {}
        # (model name, the primary's version) -> each backend's version of the same model
        self._versions: dict[tuple[str, int], dict[str, int]] = {}
        self._reported: set[tuple[str, str]] = set()
        self._report_lock = threading.Lock()

    def __repr__(self) -> str:
        shown = [redact(lane.backend.describe()) for lane in self.lanes.values()]
        return f"MultiTracker(backends={shown!r})"

    @property
    def backend_names(self) -> list[str]:
        """The backends' names, the primary first."""
        return list(self.lanes)

    def describe(self) -> str:
        """One line per backend: where it sends, the runs in delivery, what is pending, and
        the failure being retried, if any."""
        lines = [lane.describe() for lane in self.lanes.values()]
        return "\n".join([f"{lines[0]} (primary)", *lines[1:]])

    # -- routing -----------------------------------------------------------------------------
    def _lane(self, backend: str | None) -> tuple[str, Tracker]:
        if backend is None:
            return next(iter(self.lanes.items()))
        if backend not in self.lanes:
            raise InvalidInput(
                f"backend must be one of this tracker's backends ({', '.join(self.lanes)}), "
                f"got {backend!r}"
            )
        return backend, self.lanes[backend]

    def _lane_id(self, run_id: str, name: str) -> str:
        """The id, on backend ``name``, of the run that has ``run_id`` on any backend (as far as
        this tracker started it); else ``run_id`` itself."""
        return self.run_ids(run_id).get(name, run_id) if isinstance(run_id, str) else run_id

    def run_ids(self, run_id: str) -> dict[str, str]:
        """Each backend's id of the run that has ``run_id`` on one of them (a run this tracker
        started); ``{}`` for a run it does not know."""
        runs = self._runs.get(run_id)
        if runs is None:
            runs = next(
                (
                    r
                    for r in self._runs.values()
                    if any(x.outbox.run_id == run_id for x in r.values())
                ),
                {},
            )
        return {name: run.id for name, run in runs.items()}

    def _report(self, name: str, operation: str, why: str, stacklevel: int = 3) -> None:
        """Warn once per backend and operation that ``operation`` was not done on ``name``."""
        with self._report_lock:
            if (name, operation) in self._reported:
                return
            self._reported.add((name, operation))
        others = ", ".join(n for n in self.lanes if n != name)
        warnings.warn(
            redact(
                f"{operation}: not done on the {name} backend ({why}); done on {others}. "
                "This warning is shown once per backend and operation."
            ),
            TrackkitWarning,
            stacklevel=stacklevel + 1,
        )

    def _capable(self, capability: str, operation: str, alternative: str) -> dict[str, Tracker]:
        """The lanes whose backend declares ``capability``; the others are reported once (in
        strict mode, refused with their UnsupportedOperation before anything is done)."""
        able = {n: t for n, t in self.lanes.items() if getattr(t.backend.capabilities, capability)}
        if not able:
            raise self.backend.unsupported(operation, alternative)
        for name, lane in self.lanes.items():
            if name not in able:
                if self.strict:
                    raise lane.backend.unsupported(
                        f"{operation} (strict mode: nothing was done on the other backends)",
                        alternative,
                    )
                self._report(name, operation, f"it does not support {operation}", stacklevel=4)
        return able

    def _each(
        self,
        lanes: Mapping[str, L],
        operation: str,
        action: Callable[[str, L], T],
        again: str = "tracker.lanes",
        stacklevel: int = 3,
    ) -> dict[str, T]:
        """Do ``action`` on every lane in order (a backend's Tracker, or its Run).

        A refusal by the first that is not a failure of its service or journal (invalid
        input, not found...) is raised before the others are asked. Otherwise a backend that
        fails is left as one backend alone leaves it (a ``BackendError``: not done there, not
        retried) and the others go on; each such failure is warned about, naming the backend
        and the call, and how to do it there again (on ``again[name]``). It is raised when no
        backend did it, or in strict mode (after every backend was asked).
        """
        done: dict[str, T] = {}
        failed: dict[str, TrackkitError] = {}
        first = next(iter(lanes), None)
        for name, lane in lanes.items():
            try:
                done[name] = action(name, lane)
            except TrackkitError as e:
                if name == first and not isinstance(e, (BackendError, JournalError)):
                    raise
                failed[name] = e
        if failed and (self.strict or not done):
            raise next(iter(failed.values()))
        for name, error in failed.items():
            warnings.warn(
                redact(
                    f"{operation} failed on the {name} backend ({type(error).__name__}: "
                    f"{error}); it was done on {', '.join(done)}. It is not retried: once "
                    f"that backend is reachable, do it again there alone ({again}[{name!r}])"
                ),
                TrackkitWarning,
                stacklevel=stacklevel,  # the caller's: 3 from a Tracker call, 5 from a Run's
            )
        return done

    @staticmethod
    def _first(done: Mapping[str, T]) -> T:
        return next(iter(done.values()))

    # -- runs ----------------------------------------------------------------------------------
    def start_run(
        self,
        experiment: str | None = None,
        name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        run_id: str | Mapping[str, str] | None = None,
        parent: Run | str | Mapping[str, str] | None = None,
        start_time: datetime | int | None = None,
    ) -> MultiRun:
        """Start a run on every backend (``Tracker.start_run``'s arguments), or resume one.

        Args:
            run_id: resume this run: the id of a run this tracker started (on any backend), or
                a mapping of each backend's name to its run id.
            parent: a MultiRun, the id of one this tracker started, or a mapping of each
                backend's name to the parent's id there. A backend without nested runs starts
                the run without its parent, reported once (strict mode: UnsupportedOperation).
            start_time: when the new run started, on every backend that keeps run times
                (``Tracker.start_run``); a backend that does not starts it now, reported once
                (strict mode: UnsupportedOperation).

        The run gets the primary's name on every backend when ``name`` is omitted.
        """
        if tags is not None:
            normalize.flatten(tags, "tags")  # fail before creating the run anywhere
        timed: Mapping[str, Tracker] = {}
        if start_time is not None:
            if run_id is not None:
                raise InvalidInput("pass start_time to start a new run, not with run_id")
            timed = self._capable(
                "run_times", "start_run(start_time=...)", "keep the time in a tag"
            )
        resumed = self._resume_ids(run_id)
        parents = self._parent_ids(parent, run_id)
        if resumed is not None:
            for lane in self.lanes.values():
                if not lane.backend.capabilities.resume:
                    raise lane.backend.unsupported(
                        "start_run(run_id=...) (so no backend resumed it)", "start a new run"
                    )
        runs: dict[str, Run] = {}
        try:
            for lane_name, lane in self.lanes.items():
                run = lane.start_run(
                    experiment=experiment,
                    name=name,
                    run_id=None if resumed is None else resumed[lane_name],
                    parent=parents.get(lane_name),
                    start_time=start_time if lane_name in timed else None,
                )
                runs[lane_name] = run
                if name is None and run.outbox.run_id is not None and resumed is None:
                    name = run.name  # every backend shows the run under the primary's name
        except BaseException:
            for started in runs.values():
                with contextlib.suppress(Exception):
                    started.end("FAILED")
            raise
        multi = MultiRun(self, runs)
        for run in runs.values():
            self._runs[run.id] = runs
        if tags:
            multi.set_tags(tags)
        return multi

    def _resume_ids(self, run_id: str | Mapping[str, str] | None) -> dict[str, str] | None:
        if run_id is None:
            return None
        if isinstance(run_id, Mapping):
            if set(run_id) != set(self.lanes) or not all(
                isinstance(v, str) and v for v in run_id.values()
            ):
                raise InvalidInput(
                    f"run_id as a mapping must give a run id for each backend "
                    f"({', '.join(self.lanes)}), got {dict(run_id)!r}"
                )
            return dict(run_id)
        if not isinstance(run_id, str) or not run_id:
            raise InvalidInput(f"run_id must be a non-empty string, got {run_id!r}")
        known = self.run_ids(run_id)
        if not known:
            raise InvalidInput(
                f"run {run_id} was not started by this tracker, so its id on each backend is "
                f"not known: pass them, start_run(run_id={{{', '.join(f'{n!r}: ...' for n in self.lanes)}}})"
            )
        return known

    def _parent_ids(
        self, parent: Run | str | Mapping[str, str] | None, run_id: object
    ) -> dict[str, Run | str]:
        if parent is None:
            return {}
        if run_id is not None:
            raise InvalidInput("pass parent to start a new child run, not with run_id")
        found: dict[str, Run | str]
        if isinstance(parent, MultiRun):
            if parent.tracker is not self:
                raise InvalidInput(f"the parent run {parent.id} belongs to another tracker")
            found = dict(parent.runs)
        elif isinstance(parent, Run):
            raise InvalidInput(
                f"the parent run {parent.id} is a run on one backend; pass the MultiRun this "
                "tracker started"
            )
        elif isinstance(parent, Mapping):
            found = {str(k): v for k, v in parent.items()}
            unknown = sorted(set(found) - set(self.lanes))
            if unknown:
                raise InvalidInput(f"parent names backends this tracker does not have: {unknown}")
        elif isinstance(parent, str) and parent.strip():
            found = {}
            for name in self.lanes:
                lane_id = self._lane_id(parent, name)
                if lane_id != parent or name == next(iter(self.lanes)):
                    found[name] = lane_id
        else:
            raise InvalidInput(f"parent must be a Run or a run id, got {parent!r}")
        for name, lane in self.lanes.items():
            if name not in found:
                if self.strict:
                    raise InvalidInput(
                        f"the parent run's id on the {name} backend is not known (strict mode)"
                    )
                self._report(name, "start_run(parent=...)", "the parent's id there is not known")
            elif not lane.backend.capabilities.nested_runs:
                if self.strict:
                    raise lane.backend.unsupported(
                        "start_run(parent=...) (strict mode: no run was started)",
                        "tag the run with its parent's id",
                    )
                del found[name]
                self._report(name, "start_run(parent=...)", "it has no nested runs")
        return found

    # -- reading: the primary, or the backend named ---------------------------------------------
    def get_run(self, run_id: str, *, backend: str | None = None) -> RunInfo:
        """The run as the primary (or ``backend``) has it; any backend's id of it will do."""
        name, lane = self._lane(backend)
        return lane.get_run(self._lane_id(run_id, name))

    @overload
    def search_runs(
        self,
        experiment: str | Sequence[str] | None = None,
        filter: str | None = None,
        order_by: str | Sequence[str] | None = None,
        max_results: int = 100,
        *,
        output_format: Literal["list"] = "list",
        backend: str | None = None,
    ) -> list[RunInfo]: ...

    @overload
    def search_runs(
        self,
        experiment: str | Sequence[str] | None = None,
        filter: str | None = None,
        order_by: str | Sequence[str] | None = None,
        max_results: int = 100,
        *,
        output_format: Literal["pandas"],
        backend: str | None = None,
    ) -> DataFrame: ...

    def search_runs(
        self,
        experiment: str | Sequence[str] | None = None,
        filter: str | None = None,
        order_by: str | Sequence[str] | None = None,
        max_results: int = 100,
        *,
        output_format: Literal["list", "pandas"] = "list",
        backend: str | None = None,
    ) -> list[RunInfo] | DataFrame:
        """``Tracker.search_runs`` on the primary, or on ``backend``."""
        lane = self._lane(backend)[1]
        if output_format == "pandas":
            return lane.search_runs(
                experiment, filter, order_by, max_results, output_format="pandas"
            )
        return lane.search_runs(experiment, filter, order_by, max_results, output_format="list")

    def get_metric_history(
        self, run_id: str, key: str, *, backend: str | None = None
    ) -> list[MetricPoint]:
        """``Tracker.get_metric_history`` on the primary, or on ``backend``."""
        name, lane = self._lane(backend)
        return lane.get_metric_history(self._lane_id(run_id, name), key)

    @overload
    def get_metric_histories(
        self,
        run_ids: str | Sequence[str],
        keys: str | Sequence[str] | None = None,
        *,
        output_format: Literal["pandas"] = "pandas",
        backend: str | None = None,
    ) -> DataFrame: ...

    @overload
    def get_metric_histories(
        self,
        run_ids: str | Sequence[str],
        keys: str | Sequence[str] | None = None,
        *,
        output_format: Literal["dict"],
        backend: str | None = None,
    ) -> dict[str, dict[str, list[MetricPoint]]]: ...

    def get_metric_histories(
        self,
        run_ids: str | Sequence[str],
        keys: str | Sequence[str] | None = None,
        *,
        output_format: Literal["pandas", "dict"] = "pandas",
        backend: str | None = None,
    ) -> DataFrame | dict[str, dict[str, list[MetricPoint]]]:
        """``Tracker.get_metric_histories`` on the primary, or on ``backend``."""
        name, lane = self._lane(backend)
        ids: Any = (
            self._lane_id(run_ids, name)
            if isinstance(run_ids, str)
            else [self._lane_id(r, name) for r in run_ids]
        )
        if output_format == "dict":
            return lane.get_metric_histories(ids, keys, output_format="dict")
        return lane.get_metric_histories(ids, keys, output_format=output_format)

    def list_artifacts(
        self, run_id: str, path: str = "", recursive: bool = False, *, backend: str | None = None
    ) -> list[ArtifactInfo]:
        """``Tracker.list_artifacts`` on the primary, or on ``backend``."""
        name, lane = self._lane(backend)
        return lane.list_artifacts(self._lane_id(run_id, name), path, recursive)

    def list_experiments(self, *, backend: str | None = None) -> list[str]:
        """``Tracker.list_experiments`` on the primary, or on ``backend``."""
        return self._lane(backend)[1].list_experiments()

    def download_artifacts(
        self,
        run_id: str,
        path: str = "",
        dst: str | os.PathLike[str] | None = None,
        *,
        backend: str | None = None,
    ) -> Path:
        """``Tracker.download_artifacts`` from the primary, or from ``backend``."""
        name, lane = self._lane(backend)
        return lane.download_artifacts(self._lane_id(run_id, name), path, dst)

    def list_registered_models(self, *, backend: str | None = None) -> list[RegisteredModel]:
        """``Tracker.list_registered_models`` on the primary, or on ``backend``."""
        return self._lane(backend)[1].list_registered_models()

    def list_model_versions(self, name: str, *, backend: str | None = None) -> list[ModelVersion]:
        """``Tracker.list_model_versions`` on the primary, or on ``backend``."""
        return self._lane(backend)[1].list_model_versions(name)

    def get_model_version(
        self,
        name: str,
        version: int | str | None = None,
        alias: str | None = None,
        stage: str | None = None,
        *,
        backend: str | None = None,
    ) -> ModelVersion:
        """``Tracker.get_model_version`` on the primary, or on ``backend``."""
        return self._lane(backend)[1].get_model_version(name, version, alias, stage)

    def load_model(
        self,
        model: str | ModelRef,
        version: int | str | None = None,
        alias: str | None = None,
        *,
        backend: str | None = None,
    ) -> Any:
        """``Tracker.load_model`` from the primary, or from ``backend`` (a ModelRef: from the
        backend that logged it)."""
        return self._model_lane(model, backend).load_model(model, version, alias)

    def load_model_package(
        self,
        model: str | ModelRef,
        version: int | str | None = None,
        alias: str | None = None,
        *,
        backend: str | None = None,
    ) -> Package:
        """``Tracker.load_model_package`` from the primary, or from ``backend``."""
        return self._model_lane(model, backend).load_model_package(model, version, alias)

    def _model_lane(self, model: object, backend: str | None) -> Tracker:
        if backend is None and isinstance(model, ModelRef) and model.backend in self.lanes:
            backend = model.backend
        return self._lane(backend)[1]

    # -- the registry: every backend that has one -------------------------------------------------
    def _remember_models(self, refs: Mapping[str, ModelRef]) -> None:
        for ref in refs.values():
            self._models[ref.uri] = dict(refs)

    def _version(self, name: str, number: int, lane: str) -> int:
        return self._versions.get((name, number), {}).get(lane, number)

    def register_model(
        self, source: ModelRef | str, name: str, description: str | None = None
    ) -> ModelVersion:
        """Register the model on every backend with a registry that holds a copy of it: a
        model logged by a run of this tracker (its ModelRef or URI from any backend). A
        backend without a copy is reported once. Returns the primary's new version."""
        name = normalize.model_name(name)
        uri = source.uri if isinstance(source, ModelRef) else source
        copies: dict[str, ModelRef | str] = (
            dict(self._models.get(uri, {})) if isinstance(uri, str) else {}
        )
        if not copies:
            owner = source.backend if isinstance(source, ModelRef) else next(iter(self.lanes))
            copies = {owner: source}
        lanes = self._capable("registry", "register_model", "load the model from its run")
        for lane_name in lanes:
            if lane_name not in copies:
                if self.strict:
                    raise InvalidInput(
                        f"the {lane_name} backend holds no copy of model {uri!r} (strict mode: "
                        "nothing was registered); log the model with a run of this tracker"
                    )
                self._report(
                    lane_name, "register_model", f"it holds no copy of model {uri!r}", stacklevel=3
                )
        holders = {n: t for n, t in lanes.items() if n in copies}
        if not holders:
            raise InvalidInput(f"no backend with a registry holds a copy of model {uri!r}")
        done = self._each(
            holders,
            f"register_model({name!r})",
            lambda n, t: t.register_model(copies[n], name, description),
        )
        first = self._first(done)
        numbers = {n: v.version for n, v in done.items()}
        self._versions[(name, first.version)] = numbers
        primary = next(iter(self.lanes))
        if primary in numbers:
            self._versions[(name, numbers[primary])] = numbers
        return done.get(primary, first)

    def set_model_alias(self, name: str, alias: str, version: int | str) -> None:
        """Point ``alias`` at ``version`` (the primary's number) on every backend."""
        name, checked = normalize.model_name(name), normalize.alias(alias)
        number = normalize.model_version(version)
        lanes = self._capable("registry", "set_model_alias", "record the chosen version in a tag")
        self._each(
            lanes,
            f"set_model_alias({name!r}, {checked!r})",
            lambda n, t: t.set_model_alias(name, checked, self._version(name, number, n)),
        )

    def delete_model_alias(self, name: str, alias: str) -> None:
        """Remove ``alias`` from the model on every backend."""
        name, checked = normalize.model_name(name), normalize.alias(alias)
        lanes = self._capable(
            "registry", "delete_model_alias", "record the chosen version in a tag"
        )
        self._each(
            lanes,
            f"delete_model_alias({name!r}, {checked!r})",
            lambda n, t: t.delete_model_alias(name, checked),
        )

    def transition_model_version_stage(
        self,
        name: str,
        version: int | str,
        stage: str,
        archive_existing_versions: bool = False,
    ) -> ModelVersion:
        """``Tracker.transition_model_version_stage`` on every backend; the primary's answer."""
        name, number = normalize.model_name(name), normalize.model_version(version)
        lanes = self._capable("registry", "transition_model_version_stage", "use set_model_alias")
        done = self._each(
            lanes,
            f"transition_model_version_stage({name!r}, {stage!r})",
            lambda n, t: t.transition_model_version_stage(
                name, self._version(name, number, n), stage, archive_existing_versions
            ),
        )
        return done.get(next(iter(self.lanes)), self._first(done))

    def update_model_version(self, name: str, version: int | str, description: str) -> ModelVersion:
        """Describe ``version`` (the primary's number) on every backend; the primary's answer."""
        name, number = normalize.model_name(name), normalize.model_version(version)
        lanes = self._capable("registry", "update_model_version", "log the description as a tag")
        done = self._each(
            lanes,
            f"update_model_version({name!r}, {number})",
            lambda n, t: t.update_model_version(name, self._version(name, number, n), description),
        )
        return done.get(next(iter(self.lanes)), self._first(done))

    def set_registered_model_tag(self, name: str, key: str, value: Any) -> None:
        """Tag the registered model on every backend whose registered models hold tags."""
        name = normalize.model_name(name)
        lanes = self._capable(
            "registered_model_tags",
            "set_registered_model_tag",
            "tag each version (set_model_version_tag)",
        )
        self._each(
            lanes,
            f"set_registered_model_tag({name!r}, {key!r})",
            lambda n, t: t.set_registered_model_tag(name, key, value),
        )

    def update_registered_model(self, name: str, description: str) -> RegisteredModel:
        """Describe the registered model on every backend; the primary's answer."""
        name = normalize.model_name(name)
        lanes = self._capable(
            "registry",
            "update_registered_model",
            "describe each version with update_model_version",
        )
        done = self._each(
            lanes,
            f"update_registered_model({name!r})",
            lambda n, t: t.update_registered_model(name, description),
        )
        return done.get(next(iter(self.lanes)), self._first(done))

    def set_model_version_tag(self, name: str, version: int | str, key: str, value: Any) -> None:
        """Tag ``version`` (the primary's number) on every backend."""
        name, number = normalize.model_name(name), normalize.model_version(version)
        lanes = self._capable(
            "registry",
            "set_model_version_tag",
            "describe the version with update_model_version",
        )
        self._each(
            lanes,
            f"set_model_version_tag({name!r}, {number}, {key!r})",
            lambda n, t: t.set_model_version_tag(name, self._version(name, number, n), key, value),
        )

    # -- lifecycle ---------------------------------------------------------------------------------
    def flush(self) -> None:
        """Send what every open run has pending, on every backend."""
        for lane in self.lanes.values():
            lane.flush()

    def defer(self, operation: str, **arguments: Any) -> Path:
        """Journal a registry call for every backend (``Tracker.defer``); the primary's file."""
        paths = [lane.defer(operation, **arguments) for lane in self.lanes.values()]
        return paths[0]

    def close(self) -> None:
        """Close every lane (``Tracker.close``), even if one of them fails."""
        errors: list[BaseException] = []
        for lane in self.lanes.values():
            try:
                lane.close()
            except Exception as e:
                errors.append(e)
        if errors:
            raise errors[0]


# -- the run -------------------------------------------------------------------------------------
class _Writers:
    """The writers of a multi-backend run's backends, as its log calls read them
    (:class:`trackkit.run.Watched`): ``failure`` is the first failure of any of them, its
    service's or its journal's, in one read (the hot path's); the call then checks each
    backend's writer (``MultiRun.check_delivery``), which tells the two apart."""

    __slots__ = ("_writers",)
    journal_failure = None  # in ``failure``

    def __init__(self, writers: Sequence[Writer]) -> None:
        self._writers = tuple(writers)

    @property
    def failure(self) -> BaseException | None:
        for writer in self._writers:
            if writer.failure is not None or writer.journal_failure is not None:
                return writer.failure or writer.journal_failure
        return None


class MultiRun(Run):
    """One run on several backends: ``runs`` maps each backend's name to its :class:`Run`.

    It is a :class:`Run` whose limits are the backends' strictest and whose queue is a
    :class:`~trackkit.outbox.FanOut` over their runs' outboxes: each log call is validated
    and normalized once, by ``Run``'s own code, and the same operations are queued for every
    backend, whose writer delivers them on its own. Calls that need each backend at once
    (artifacts, models) go to each backend's run. ``id`` is the primary's run id, ``ids`` each
    backend's. Log through the MultiRun: a backend's run in ``runs`` is there for its own
    state (``url``, ``journal``, ``delivered``, ``flush``).
    """

    def __init__(self, tracker: MultiTracker, runs: Mapping[str, Run]) -> None:
        #: backend name -> this run on that backend (its lane)
        self.runs: dict[str, Run] = dict(runs)
        self._lanes = tuple(self.runs.values())
        primary = self._lanes[0]
        params, steps = primary.logged()  # a resumed run's, so params stay immutable
        for run in self._lanes[1:]:
            for key, step in run.logged()[1].items():
                steps[key] = max(step, steps.get(key, -1))
        handle = RunHandle(primary.id, primary.name, primary.experiment, params, steps)
        self._closed = False
        super().__init__(
            tracker,
            handle,
            primary.experiment,
            primary.name,
            primary.parent_id,
            limits=tracker.limits,
            outbox=primary.outbox,
            sink=FanOut([run.outbox for run in self._lanes]),
        )
        self.tracker: MultiTracker = tracker
        self._watch = _Writers([run.tracker.writer for run in self._lanes])
        for run in self._lanes:  # a signal, or exit, ends the backends' runs one by one
            run.on_close.append(self._lane_closed)

    def _lane_closed(self, status: str) -> None:
        """A backend's run was closed (by this run, a signal, exit): this run has ended."""
        if self.status is None:
            self.status = status

    @property
    def ids(self) -> dict[str, str]:
        """Each backend's run id (a ``local-...`` id while it exists only locally)."""
        return {name: run.id for name, run in self.runs.items()}

    def __repr__(self) -> str:
        state = self.status or "RUNNING"
        return (
            f"MultiRun(ids={self.ids!r}, name={self.name!r}, experiment={self.experiment!r}, "
            f"status={state!r})"
        )

    @property
    def lost(self) -> int:
        """Metric points dropped on all backends together (see ``Run.lost``)."""
        return sum(run.lost for run in self._lanes)

    @property
    def delivered(self) -> bool:
        """True once every backend acknowledged everything, the end included."""
        return all(run.delivered for run in self._lanes)

    def describe(self) -> str:
        """One line per backend saying where to see the run."""
        return "\n".join(f"{name}: {run.describe()}" for name, run in self.runs.items())

    # -- what Run's own validation asks of its backend, answered for every backend ---------------
    def backends(self) -> list[Backend]:
        return [run.tracker.backend for run in self._lanes]

    def check_delivery(self, stacklevel: int = 3) -> None:
        """``Run.check_delivery`` for each backend's run: its writer's failures are warned
        about once, or raised in strict mode, naming that backend."""
        for run in self._lanes:
            run.check_delivery(stacklevel + 1)

    def _queue_full(self, size: int) -> None:
        if size >= self._bound:  # each backend's queue is bounded by its own writer
            for run in self._lanes:
                run.make_room()

    # -- what each backend does at once ------------------------------------------------------------
    def _able(self, capability: str, operation: str, alternative: str) -> dict[str, Run]:
        able = self.tracker._capable(capability, operation, alternative)
        return {name: run for name, run in self.runs.items() if name in able}

    def _on_each(
        self, capability: str, call: str, alternative: str, action: Callable[[Run], T]
    ) -> dict[str, T]:
        """``action`` on the run of every backend that declares ``capability`` (the others
        reported once): a backend that fails is reported, each time, and the others go on
        (see :meth:`MultiTracker._each`)."""
        operation = call.split("(", 1)[0]
        lanes = self._able(capability, operation, alternative)
        with self._lock:
            self._check_open()
        return self.tracker._each(
            lanes,
            f"{call} in run {self.id}",
            lambda _, run: action(run),
            again="run.runs",
            stacklevel=5,
        )

    def log_artifact(self, local_path: str | os.PathLike[str], path: str | None = None) -> None:
        """``Run.log_artifact`` on every backend that stores artifacts: each uploads it, or
        keeps a copy in its journal while its service is down, as it does alone."""
        shown = os.fspath(local_path) if isinstance(local_path, (str, os.PathLike)) else local_path
        self._on_each(
            "artifacts",
            f"log_artifact({shown!r})",
            "log the data as params or tags",
            lambda run: run.log_artifact(local_path, path),
        )

    def log_table(self, table: Any, file: str) -> None:
        """``Run.log_table`` on every backend (a native table where the backend has one)."""
        self._on_each(
            "artifacts",
            f"log_table({file!r})",
            "log the data as params or tags",
            lambda run: run.log_table(table, file),
        )

    def store_model(
        self,
        model: Any,
        where: str,
        flavor: str,
        signature: Signature | None,
        input_example: Any,
    ) -> ModelRef:
        """Store the model ``Run.log_model`` checked once on every backend that stores
        models; return the primary's ModelRef (``Tracker.register_model`` registers it on every
        backend that has it). A backend that fails (its service is down: ``BackendError``, as
        with one backend) is reported, naming it, and the others go on."""
        refs = self._on_each(
            "models",
            f"log_model({where!r})",
            "pickle the model and use log_artifact",
            lambda run: run.store_model(model, where, flavor, signature, input_example),
        )
        self.tracker._remember_models(refs)
        return refs.get(next(iter(self.runs)), MultiTracker._first(refs))

    # -- sending and ending ------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """``Run.flush`` on every backend within one ``timeout``; True if all delivered."""
        self._log_renames()
        wait = self.tracker.end_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        results = [run.flush(max(0.0, deadline - time.monotonic())) for run in self._lanes]
        return all(results)

    def close(self, status: str) -> bool:
        """Mark the run ended and queue its end on every backend, without waiting."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            self.status = status
            for run in self._lanes:
                run.close(status)
        return True

    def await_end(self, status: str, timeout: float | None = None) -> None:
        """Wait for every backend's delivery within one ``timeout`` (``Run.settle`` on each):
        every end was queued first, so a backend that is down delays no other's end."""
        wait = self.tracker.end_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        for run in self._lanes:
            run.settle(status, max(0.0, deadline - time.monotonic()))
