"""Tracker and Run: the behaviour users program against, identical on every backend."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import sqlite3
import tempfile
import uuid
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from trackkit import _heap, _lifecycle, env, normalize, search
from trackkit import journal as jn
from trackkit._secrets import redact, scrub
from trackkit.backend import call, require
from trackkit.backend import start_run as start_backend_run
from trackkit.entities import (
    ArtifactInfo,
    MetricPoint,
    ModelRef,
    ModelVersion,
    RegisteredModel,
    RunHandle,
    RunInfo,
)
from trackkit.errors import (
    BackendError,
    InvalidInput,
    JournalError,
    NotFound,
    TrackkitError,
    TrackkitWarning,
)
from trackkit.run import STATUSES, Run
from trackkit.writer import Writer, started_id

if TYPE_CHECKING:
    from pandas import DataFrame

    from trackkit.backend import Backend
    from trackkit.local_registry import LocalRegistry
    from trackkit.models import Package

__all__ = [
    "DEFAULT_BACKEND",
    "DEFAULT_EXPERIMENT",
    "DEFERRABLE",
    "STAGES",
    "STATUSES",
    "Run",
    "Tracker",
    "get_tracker",
]

DEFAULT_BACKEND = "mlflow"
DEFAULT_EXPERIMENT = "Default"
TRACKER_OPTIONS = ("strict", "journal_dir", "flush_interval", "end_timeout", "memory_bound")
#: the Tracker calls ``defer`` journals and ``trackkit sync`` replays: registry changes only
DEFERRABLE = (
    "register_model",
    "set_model_alias",
    "delete_model_alias",
    "update_model_version",
    "update_registered_model",
    "set_model_version_tag",
    "set_registered_model_tag",
)
#: MLflow's deprecated registry stages, each mapped to the alias of its lower-cased name
STAGES = ("staging", "production", "archived")
_stage_warned = False


def stage_alias(stage: str, where: str) -> str:
    """The alias that stands for registry ``stage`` (any case); warns once per process.

    Raises:
        InvalidInput: ``stage`` is not Staging, Production or Archived.
    """
    global _stage_warned
    if not isinstance(stage, str) or stage.lower() not in STAGES:
        raise InvalidInput(
            f"stage must be one of Staging, Production, Archived (any case), got {stage!r}"
        )
    alias = stage.lower()
    if not _stage_warned:
        _stage_warned = True
        warnings.warn(
            f"{where}: registry stages are deprecated (MLflow replaced them with aliases); "
            f"trackkit maps stage {stage!r} to the alias {alias!r}: use the alias instead "
            f"(models:/<name>@{alias}, get_model_version(name, alias={alias!r}), "
            f"set_model_alias(name, {alias!r}, version)). This warning is shown once.",
            TrackkitWarning,
            stacklevel=3,
        )
    return alias


def get_tracker(backend: str | None = None, **options: Any) -> Tracker:
    """Create a Tracker on a backend.

    Args:
        backend: a registered backend name; defaults to ``$TRACKKIT_BACKEND``, else ``"mlflow"``.
        **options: trackkit's own options (``strict``, ``journal_dir``, ``flush_interval``,
            ``end_timeout``, ``memory_bound``; see :class:`Tracker`); every other option goes
            to the backend (e.g. ``tracking_uri`` for MLflow).

    Raises:
        UnknownBackendError: no backend has that name (the message suggests the closest).
        MissingDependencyError: the backend's SDK is not installed (the message names the extra).
        InvalidInput: the backend does not accept one of ``options``.
    """
    from trackkit.plugins import get_plugin_manager

    own = {k: options.pop(k) for k in TRACKER_OPTIONS if k in options}
    name = backend or os.environ.get("TRACKKIT_BACKEND") or DEFAULT_BACKEND
    if not isinstance(name, str) or "," in name:
        raise InvalidInput(
            f"{name!r} names several backends: trackkit.get_tracker takes several "
            "(trackkit.tracker.get_tracker one)"
        )
    cls = get_plugin_manager().backend_class(name.strip())
    try:
        instance = cls(**options)
    except TypeError as e:
        message = f"the {name} backend rejected its options: {redact(str(e))}"
        raise InvalidInput(message) from scrub(e)
    return Tracker(instance, **own)


def _text(value: Any, what: str) -> str:
    """``value`` if it is a non-empty string; else InvalidInput naming ``what``."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{what} must be a non-empty string, got {value!r}")
    return value


class Tracker:
    """The entry point for runs, the model registry and run search on one backend.

    Create one with :func:`trackkit.get_tracker`.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        strict: bool | None = None,
        journal_dir: str | os.PathLike[str] | None = None,
        flush_interval: float | None = None,
        end_timeout: float | None = None,
        memory_bound: int | None = None,
    ) -> None:
        """Args:
        backend: the backend instance.
        strict: raise tracking-service failures instead of journaling them quietly
            (default: ``$TRACKKIT_STRICT``, else False).
        journal_dir: the trackkit directory (default ``$TRACKKIT_DIR``, else ``./.trackkit``).
        flush_interval: seconds between background sends (``$TRACKKIT_FLUSH_INTERVAL``, 1.0).
        end_timeout: seconds ``Run.end`` and ``flush`` wait for the backend
            (``$TRACKKIT_END_TIMEOUT``, 30).
        memory_bound: queued operations per run before the queue is journaled early (50,000);
            at twice that, the logging thread journals the queue itself (bounded memory).
        """
        self.backend = backend
        self.strict = env.flag("TRACKKIT_STRICT") if strict is None else bool(strict)
        self.journal_dir = jn.journal_dir(journal_dir)
        interval = (
            env.seconds("TRACKKIT_FLUSH_INTERVAL", 1.0)
            if flush_interval is None
            else flush_interval
        )
        self.end_timeout = (
            env.seconds("TRACKKIT_END_TIMEOUT", 30.0) if end_timeout is None else end_timeout
        )
        self.memory_bound = 50_000 if memory_bound is None else memory_bound
        for label, number in (("flush_interval", interval), ("end_timeout", self.end_timeout)):
            if (
                isinstance(number, bool)
                or not isinstance(number, (int, float))
                or not math.isfinite(number)
                or number <= 0
            ):
                raise InvalidInput(
                    f"{label} must be a positive, finite number of seconds, got {number!r}"
                )
        if (
            isinstance(self.memory_bound, bool)
            or not isinstance(self.memory_bound, int)
            or (self.memory_bound < 1)
        ):
            raise InvalidInput(f"memory_bound must be a positive int, got {self.memory_bound!r}")
        #: the background writer that journals and sends every run's operations
        self.writer = Writer(
            backend, interval=float(interval), memory_bound=self.memory_bound, strict=self.strict
        )
        self._deferred: jn.Journal | None = None
        self._local: LocalRegistry | None = None
        _heap.settle()  # building the backend may have loaded as much again as its SDK

    def __repr__(self) -> str:
        return f"Tracker(backend={redact(self.backend.describe())!r})"

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def describe(self) -> str:
        """Where this tracker sends and how delivery goes: its backend, the runs in delivery,
        what they have pending, and the failure being retried, if any (one line per backend)."""
        return self.writer.describe()

    def _offline_registry(self) -> LocalRegistry | None:
        """The local registry while the backend's own is out of reach; else None."""
        path = self.backend.offline_registry()
        if path is None:
            return None
        if self._local is None:
            from trackkit.local_registry import LocalRegistry

            self._local = LocalRegistry(path)
        return self._local

    # -- runs -------------------------------------------------------------------------------
    def start_run(
        self,
        experiment: str | None = None,
        name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        parent: Run | str | None = None,
        start_time: datetime | int | None = None,
    ) -> Run:
        """Start a run, or resume one by ``run_id``; use the Run as a context manager.

        Args:
            experiment: defaults to ``$TRACKKIT_EXPERIMENT``, else ``"Default"``; when resuming,
                to the run's own experiment (a different one raises InvalidInput).
            name: the run's display name; the backend picks one when omitted.
            tags: tags to set at once.
            run_id: resume this run instead of starting a new one.
            parent: start a child of this run (a Run or a run id); the backend stores the
                link natively (MLflow: the ``mlflow.parentRunId`` tag) and ``RunInfo.parent_id``
                reads it back. When omitted, a new run's experiment defaults to the parent's.
            start_time: when the new run started (a datetime, naive meaning local time, or int
                milliseconds since the epoch; default: now), for a run recorded after the fact
                (``trackkit copy`` keeps a source run's start time with it). Only on a backend
                that keeps run times (capability ``run_times``); the run is created at once or
                not at all (never only locally, for ``trackkit sync`` to create later).

        Raises:
            UnsupportedOperation: ``parent`` is given and the backend has no nested runs, or
                ``start_time`` is given and the backend does not keep run times.
        """
        parent_id = self._parent_id(parent, run_id)
        started = None if start_time is None else self._start_ms(start_time, run_id)
        if experiment is None and run_id is None and isinstance(parent, Run):
            experiment = parent.experiment
        if experiment is None and run_id is None:
            experiment = os.environ.get("TRACKKIT_EXPERIMENT") or DEFAULT_EXPERIMENT
        if experiment is not None and (not isinstance(experiment, str) or not experiment.strip()):
            raise InvalidInput(f"experiment must be a non-empty string, got {experiment!r}")
        if name is not None and not isinstance(name, str):
            raise InvalidInput(f"run name must be a string, got {type(name).__name__}")
        if tags is not None:
            normalize.flatten(tags, "tags")  # fail before creating the run
        if run_id is not None:
            if not isinstance(run_id, str) or not run_id:
                raise InvalidInput(f"run_id must be a non-empty string, got {run_id!r}")
            require(self.backend, "resume", "start_run(run_id=...)", "start a new run")
        if started is not None and parent_id is not None and parent_id.startswith("local-"):
            raise BackendError(
                f"a run with a start_time is created at once, and its parent {parent_id} exists "
                "only locally (its backend was unreachable): run `trackkit sync` first"
            )
        try:
            handle: RunHandle | None = (
                None  # the parent exists only locally: so does its child, until both are sent
                if parent_id is not None and parent_id.startswith("local-")
                else start_backend_run(self.backend, experiment, name, run_id, parent_id, started)
            )
        except TrackkitError:
            raise
        except Exception as e:
            if run_id is not None or self.strict or started is not None:
                what = f"start a run in experiment {experiment!r}"
                raise BackendError(
                    redact(f"the {self.backend.describe()} backend failed to {what}: {e}")
                ) from scrub(e)
            self.writer.record_failure(e, where=str(self.journal_dir))
            self.writer.report(stacklevel=2)
            handle = None  # a local run: `trackkit sync` creates it at the backend later
        run = Run(self, handle, experiment or "", name, parent_id=parent_id)
        if run.outbox.journal_error is not None and self.strict:
            error = run.outbox.journal_error
            if handle is not None:
                with contextlib.suppress(Exception):  # the error below is the one to report
                    self.backend.end_run(handle.id, "FAILED")
            raise JournalError(
                redact(
                    f"the journal {run.outbox.path} cannot be created (strict mode): "
                    f"{type(error).__name__}: {error}; make the trackkit directory writable "
                    "(journal_dir, $TRACKKIT_DIR)"
                )
            ) from error
        self.writer.add(run.outbox)  # an unwritable journal: one warning, the run in memory
        self.writer.report(stacklevel=2)
        _lifecycle.remember(run)
        if tags:
            run.set_tags(tags)
        return run

    def _start_ms(self, start_time: datetime | int, run_id: str | None) -> int:
        """``start_time`` in milliseconds since the epoch, checked (see :meth:`start_run`)."""
        if run_id is not None:
            raise InvalidInput("pass start_time to start a new run, not with run_id")
        require(self.backend, "run_times", "start_run(start_time=...)", "keep the time in a tag")
        # naive: local time, as log_metric's timestamps
        limit = self.backend.limits.max_timestamp
        return normalize.timestamp_ms("", start_time, limit, what="start_time")

    def _parent_id(self, parent: Run | str | None, run_id: str | None) -> str | None:
        """The backend id of ``parent`` (a local id while it exists only locally)."""
        if parent is None:
            return None
        if run_id is not None:
            raise InvalidInput("pass parent to start a new child run, not with run_id")
        if isinstance(parent, Run):
            if parent.tracker.backend is not self.backend:
                raise InvalidInput(f"the parent run {parent.id} belongs to another tracker")
            found = parent.id
        elif isinstance(parent, str) and parent.strip():
            found = parent
        else:
            raise InvalidInput(f"parent must be a Run or a run id, got {parent!r}")
        require(
            self.backend, "nested_runs", "start_run(parent=...)", "tag the run with its parent's id"
        )
        if found.startswith("local-"):
            found = started_id(found, self.journal_dir) or found
        return found

    def get_run(self, run_id: str) -> RunInfo:
        """The run's current params, latest metrics, tags and status."""
        require(self.backend, "search_runs", "get_run", "keep the Run object")
        _lifecycle.flush_open(self)
        return call(self.backend, f"get run {run_id}", lambda: self.backend.get_run(run_id))

    @overload
    def search_runs(
        self,
        experiment: str | Sequence[str] | None = None,
        filter: str | None = None,
        order_by: str | Sequence[str] | None = None,
        max_results: int = 100,
        *,
        output_format: Literal["list"] = "list",
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
    ) -> DataFrame: ...

    def search_runs(
        self,
        experiment: str | Sequence[str] | None = None,
        filter: str | None = None,
        order_by: str | Sequence[str] | None = None,
        max_results: int = 100,
        *,
        output_format: Literal["list", "pandas"] = "list",
    ) -> list[RunInfo] | DataFrame:
        """Find runs with MLflow's filter syntax; the same answer on every backend.

        Args:
            experiment: a name or list of names; defaults as in ``start_run``.
            filter: e.g. ``"metrics.rmse < 6.8 and params.model = 'lasso'"``.
            order_by: e.g. ``["metrics.rmse ASC"]``; ties are newest first, then by name.
            max_results: at most this many runs (1 to 50,000).
            output_format: ``"list"``, a list of RunInfo; ``"pandas"``, a DataFrame in
                ``mlflow.search_runs``'s layout (see :mod:`trackkit.frames`), rows in order.

        Raises:
            InvalidInput: an argument is malformed (checked before the backend is asked).
            MissingDependencyError: ``output_format="pandas"`` without pandas installed.
        """
        require(self.backend, "search_runs", "search_runs", "compare runs in the backend's UI")
        self._check_format(output_format, ("list", "pandas"))
        if experiment is None:
            experiment = os.environ.get("TRACKKIT_EXPERIMENT") or DEFAULT_EXPERIMENT
        query = search.build_query(experiment, filter, order_by, max_results)
        _lifecycle.flush_open(self)
        candidates = call(self.backend, "search runs", lambda: self.backend.search_runs(query))
        runs = search.select(query, candidates)
        if output_format == "pandas":
            from trackkit import frames

            return frames.runs_frame(runs, self.backend.name)
        return runs

    @staticmethod
    def _check_format(output_format: str, allowed: tuple[str, ...]) -> None:
        """Refuse an unknown output format; check that pandas is there before any work."""
        if output_format not in allowed:
            raise InvalidInput(
                f"output_format must be one of {', '.join(map(repr, allowed))}, "
                f"got {output_format!r}"
            )
        if output_format == "pandas":
            from trackkit import frames

            frames.pandas()

    # -- reading back -------------------------------------------------------------------------
    def get_metric_history(self, run_id: str, key: str) -> list[MetricPoint]:
        """Every point of one metric of a run, in step order (points of one step by
        timestamp), each with its step, value and timestamp (ms).

        Raises:
            NotFound: no such run, or the run has no metric ``key`` (the message lists its
                metrics).
        """
        require(
            self.backend, "metric_history", "get_metric_history", "read latest values (get_run)"
        )
        run_id, key = _text(run_id, "run_id"), _text(key, "metric key")
        _lifecycle.flush_open(self)
        points = self._history(run_id, key)
        if not points:
            known = sorted(self.get_run(run_id).metrics) if self._can_get_run() else []
            raise NotFound(
                f"run {run_id} has no metric {key!r}"
                + (f"; its metrics: {', '.join(known)}" if known else "; it has no metrics")
            )
        return points

    def _can_get_run(self) -> bool:
        return self.backend.capabilities.search_runs

    def _history(self, run_id: str, key: str) -> list[MetricPoint]:
        points = call(
            self.backend,
            f"read metric {key!r} of run {run_id}",
            lambda: self.backend.get_metric_history(run_id, key),
        )
        return sorted(points, key=lambda p: (p.step, p.timestamp))

    @overload
    def get_metric_histories(
        self,
        run_ids: str | Sequence[str],
        keys: str | Sequence[str] | None = None,
        *,
        output_format: Literal["pandas"] = "pandas",
    ) -> DataFrame: ...

    @overload
    def get_metric_histories(
        self,
        run_ids: str | Sequence[str],
        keys: str | Sequence[str] | None = None,
        *,
        output_format: Literal["dict"],
    ) -> dict[str, dict[str, list[MetricPoint]]]: ...

    def get_metric_histories(
        self,
        run_ids: str | Sequence[str],
        keys: str | Sequence[str] | None = None,
        *,
        output_format: Literal["pandas", "dict"] = "pandas",
    ) -> DataFrame | dict[str, dict[str, list[MetricPoint]]]:
        """Every point of several metrics of several runs, e.g. to plot their curves.

        Args:
            run_ids: a run id or a list of them.
            keys: a metric key or a list of them; None: every metric of each run. A run
                without one of them has no rows for it.
            output_format: ``"pandas"``, a long DataFrame with one row per point (columns
                ``run_id``, ``run_name``, ``key``, ``step``, ``value``, ``timestamp``), runs
                in the given order, then keys, then steps; ``"dict"``,
                ``{run_id: {key: [MetricPoint, ...]}}``.

        Raises:
            NotFound: a run does not exist, or no run has one of ``keys``.
            MissingDependencyError: ``output_format="pandas"`` without pandas installed.
        """
        require(
            self.backend, "metric_history", "get_metric_histories", "read latest values (get_run)"
        )
        self._check_format(output_format, ("pandas", "dict"))
        ids = [_text(r, "run_id") for r in ([run_ids] if isinstance(run_ids, str) else run_ids)]
        wanted = (
            None
            if keys is None
            else [_text(k, "metric key") for k in ([keys] if isinstance(keys, str) else keys)]
        )
        _lifecycle.flush_open(self)
        found: dict[str, dict[str, list[MetricPoint]]] = {}
        names: dict[str, str] = {}
        for run_id in dict.fromkeys(ids):
            info = self.get_run(run_id)
            names[run_id] = info.name
            own = (
                sorted(info.metrics) if wanted is None else [k for k in wanted if k in info.metrics]
            )
            found[run_id] = {key: self._history(run_id, key) for key in own}
        missing = [k for k in wanted or () if not any(k in keyed for keyed in found.values())]
        if missing:
            raise NotFound(
                f"no run among {', '.join(found)} has the metric(s) {', '.join(map(repr, missing))}"
            )
        if output_format == "dict":
            return found
        from trackkit import frames

        rows = [
            (run_id, names[run_id], key, point)
            for run_id, keyed in found.items()
            for key, points in keyed.items()
            for point in points
        ]
        return frames.history_frame(rows)

    def list_artifacts(
        self, run_id: str, path: str = "", recursive: bool = False
    ) -> list[ArtifactInfo]:
        """The artifacts directly under ``path`` of a run (the run's root by default), by path;
        with ``recursive``, every file and directory below it. A path that does not exist
        lists nothing. Copy them out with :meth:`download_artifacts`."""
        require(self.backend, "list_artifacts", "list_artifacts", "download paths you know")
        run_id = _text(run_id, "run_id")
        clean = normalize.artifact_dir(path) or ""
        _lifecycle.flush_open(self)
        found: list[ArtifactInfo] = []
        todo = [clean]
        while todo:
            entries = self._artifacts(run_id, todo.pop())
            found += entries
            if recursive:
                todo += [e.path for e in entries if e.is_dir]
        return sorted(found, key=lambda e: e.path)

    def _artifacts(self, run_id: str, path: str) -> list[ArtifactInfo]:
        return call(
            self.backend,
            f"list artifacts {path!r} of run {run_id}",
            lambda: self.backend.list_artifacts(run_id, path),
        )

    def list_experiments(self) -> list[str]:
        """The names of every experiment, sorted."""
        require(self.backend, "list_experiments", "list_experiments", "name your experiments")
        return sorted(call(self.backend, "list experiments", self.backend.list_experiments))

    def download_artifacts(
        self, run_id: str, path: str = "", dst: str | os.PathLike[str] | None = None
    ) -> Path:
        """Copy a run's artifact (file or directory) to ``dst`` (a new temporary directory when
        omitted) and return the local path of the copy."""
        require(self.backend, "download_artifacts", "download_artifacts", "keep a local copy")
        clean = normalize.artifact_dir(path) or ""
        target = Path(dst) if dst is not None else Path(tempfile.mkdtemp(prefix="trackkit-"))
        target.mkdir(parents=True, exist_ok=True)
        return call(
            self.backend,
            f"download artifact {clean!r} of run {run_id}",
            lambda: self.backend.download_artifacts(run_id, clean, target),
        )

    # -- registry ---------------------------------------------------------------------------
    def register_model(
        self, source: ModelRef | str, name: str, description: str | None = None
    ) -> ModelVersion:
        """Register a logged model as a new version of ``name`` (created if missing).

        Args:
            source: the ModelRef ``log_model`` returned, or the backend's own model URI.
            name: the registered model's name.
            description: the new version's description.
        """
        require(self.backend, "registry", "register_model", "load the model from its run")
        name = normalize.model_name(name)
        if isinstance(source, ModelRef):
            if source.backend != self.backend.name:
                raise InvalidInput(
                    f"this ModelRef was logged with the {source.backend} backend, not "
                    f"{self.backend.name}"
                )
            uri, run_id = source.uri, source.run_id
        elif isinstance(source, str) and source:
            uri, run_id = source, None
        else:
            raise InvalidInput(f"source must be a ModelRef or a model URI, got {source!r}")
        if description is not None and not isinstance(description, str):
            raise InvalidInput(f"description must be a string, got {type(description).__name__}")
        local = self._offline_registry()
        if local is not None:
            run_id = self.backend.check_registration(name, uri, run_id)
            created = local.create_model_version(name, uri, run_id, description)
            self.defer("register_model", source=uri, name=name, description=description)
            return created
        return call(
            self.backend,
            f"register {uri!r} as {name!r}",
            lambda: self.backend.create_model_version(name, uri, run_id, description),
        )

    def list_registered_models(self) -> list[RegisteredModel]:
        """Every registered model with its description, aliases, latest version and tags,
        by name; :meth:`list_model_versions` gives each one's versions."""
        require(self.backend, "registry", "list_registered_models", "name the model you want")
        local = self._offline_registry()
        if local is not None:
            return local.list_registered_models()
        require(
            self.backend,
            "list_registered_models",
            "list_registered_models",
            "list the versions of a model you name (list_model_versions)",
        )
        found = call(self.backend, "list registered models", self.backend.list_registered_models)
        return sorted(found, key=lambda m: m.name)

    def list_model_versions(self, name: str) -> list[ModelVersion]:
        """Every version of a registered model, oldest first."""
        require(self.backend, "registry", "list_model_versions", "keep the ModelRefs you logged")
        name = normalize.model_name(name)
        local = self._offline_registry()
        if local is not None:
            return local.list_model_versions(name)
        versions = call(
            self.backend,
            f"list versions of {name!r}",
            lambda: self.backend.list_model_versions(name),
        )
        return sorted(versions, key=lambda v: v.version)

    def get_model_version(
        self,
        name: str,
        version: int | str | None = None,
        alias: str | None = None,
        stage: str | None = None,
    ) -> ModelVersion:
        """One version, by number, alias or stage; with none of them, the latest version.

        ``alias="latest"`` is the newest version and ``alias="v3"`` is version 3, on every
        backend. ``stage="Production"`` (MLflow's deprecated stages, any case) is the alias
        ``production``; its first use in a process warns once.

        Raises:
            NotFound: no such model, version or alias.
        """
        require(self.backend, "registry", "get_model_version", "keep the ModelRefs you logged")
        name = normalize.model_name(name)
        if sum(x is not None for x in (version, alias, stage)) > 1:
            raise InvalidInput("pass one of version, alias or stage")
        if stage is not None:
            alias = stage_alias(stage, "get_model_version(stage=...)")
        elif isinstance(version, str) and version.lower() in STAGES:
            alias = stage_alias(version, f"model version {version!r}")
            version = None
        local = self._offline_registry()
        if alias is not None:
            if isinstance(alias, str) and alias.lower() == "latest":
                return self._latest(name)
            if isinstance(alias, str) and re.fullmatch(r"[vV][0-9]+", alias):
                version = int(alias[1:])
            else:
                checked = normalize.alias(alias)
                if local is not None:
                    return local.get_model_version_by_alias(name, checked)
                return call(
                    self.backend,
                    f"get {name}@{checked}",
                    lambda: self.backend.get_model_version_by_alias(name, checked),
                )
        if version is None or (isinstance(version, str) and version.lower() == "latest"):
            return self._latest(name)
        number = normalize.model_version(version)
        if local is not None:
            return local.get_model_version(name, number)
        return call(
            self.backend,
            f"get version {number} of {name!r}",
            lambda: self.backend.get_model_version(name, number),
        )

    def _latest(self, name: str) -> ModelVersion:
        versions = self.list_model_versions(name)
        if not versions:
            raise NotFound(f"registered model {name!r} has no versions")
        return versions[-1]

    def set_model_alias(self, name: str, alias: str, version: int | str) -> None:
        """Point ``alias`` at ``version``, moving it from any other version."""
        require(self.backend, "registry", "set_model_alias", "record the chosen version in a tag")
        name, checked, number = (
            normalize.model_name(name),
            normalize.alias(alias),
            normalize.model_version(version),
        )
        local = self._offline_registry()
        if local is not None:
            local.set_model_alias(name, checked, number)
            self.defer("set_model_alias", name=name, alias=checked, version=number)
            return
        call(
            self.backend,
            f"set alias {checked!r} of {name!r} to version {number}",
            lambda: self.backend.set_model_alias(name, checked, number),
        )

    def delete_model_alias(self, name: str, alias: str) -> None:
        """Remove ``alias`` from the model."""
        require(
            self.backend, "registry", "delete_model_alias", "record the chosen version in a tag"
        )
        name, checked = normalize.model_name(name), normalize.alias(alias)
        local = self._offline_registry()
        if local is not None:
            local.delete_model_alias(name, checked)
            self.defer("delete_model_alias", name=name, alias=checked)
            return
        call(
            self.backend,
            f"delete alias {checked!r} of {name!r}",
            lambda: self.backend.delete_model_alias(name, checked),
        )

    def transition_model_version_stage(
        self,
        name: str,
        version: int | str,
        stage: str,
        archive_existing_versions: bool = False,
    ) -> ModelVersion:
        """MLflow's stage transition, done with aliases: move the alias of ``stage``.

        ``stage`` is Staging, Production or Archived (any case): the alias with its lower-cased
        name moves to ``version``; ``None`` removes every stage alias from ``version``. With
        ``archive_existing_versions``, the version that held the alias before gets the alias
        ``archived``. The first use in a process warns once (use aliases instead).
        """
        require(self.backend, "registry", "transition_model_version_stage", "use set_model_alias")
        name, number = normalize.model_name(name), normalize.model_version(version)
        if isinstance(stage, str) and stage.lower() == "none":
            for alias in self.get_model_version(name, number).aliases:
                if alias in STAGES:
                    self.delete_model_alias(name, alias)
            return self.get_model_version(name, number)
        alias = stage_alias(stage, "transition_model_version_stage")
        previous = None
        if archive_existing_versions and alias != "archived":
            with contextlib.suppress(NotFound):
                previous = self.get_model_version(name, alias=alias).version
        self.set_model_alias(name, alias, number)
        if previous is not None and previous != number:
            self.set_model_alias(name, "archived", previous)
        if self._offline_registry() is None:
            call(
                self.backend,
                f"set the stage of version {number} of {name!r}",
                lambda: self.backend.set_model_stage(name, number, alias),
            )
        return self.get_model_version(name, number)

    def update_model_version(self, name: str, version: int | str, description: str) -> ModelVersion:
        """Set the description of a model version."""
        require(self.backend, "registry", "update_model_version", "log the description as a tag")
        name, number = normalize.model_name(name), normalize.model_version(version)
        if not isinstance(description, str):
            raise InvalidInput(f"description must be a string, got {type(description).__name__}")
        local = self._offline_registry()
        if local is not None:
            updated = local.update_model_version(name, number, description)
            self.defer("update_model_version", name=name, version=number, description=description)
            return updated
        return call(
            self.backend,
            f"update version {number} of {name!r}",
            lambda: self.backend.update_model_version(name, number, description),
        )

    def update_registered_model(self, name: str, description: str) -> RegisteredModel:
        """Set the description of the registered model ``name`` (it must exist).

        Raises:
            NotFound: no registered model ``name``.
        """
        require(
            self.backend,
            "registry",
            "update_registered_model",
            "describe each version with update_model_version",
        )
        name = normalize.model_name(name)
        if not isinstance(description, str):
            raise InvalidInput(f"description must be a string, got {type(description).__name__}")
        local = self._offline_registry()
        if local is not None:
            updated = local.update_registered_model(name, description)
            self.defer("update_registered_model", name=name, description=description)
            return updated
        return call(
            self.backend,
            f"update registered model {name!r}",
            lambda: self.backend.update_registered_model(name, description),
        )

    def set_model_version_tag(self, name: str, version: int | str, key: str, value: Any) -> None:
        """Set the tag ``key`` of a registered version to ``value`` (stored as text).

        Raises:
            NotFound: no such model or version.
        """
        require(
            self.backend,
            "registry",
            "set_model_version_tag",
            "describe the version with update_model_version",
        )
        name, number = normalize.model_name(name), normalize.model_version(version)
        if not isinstance(key, str) or not key.strip():
            raise InvalidInput(f"a model version tag key must be a non-empty string, got {key!r}")
        text = normalize.value_text(normalize.param_value(key, value))
        local = self._offline_registry()
        if local is not None:
            local.set_model_version_tag(name, number, key, text)
            self.defer("set_model_version_tag", name=name, version=number, key=key, value=text)
            return
        call(
            self.backend,
            f"set tag {key!r} of version {number} of {name!r}",
            lambda: self.backend.set_model_version_tag(name, number, key, text),
        )

    def set_registered_model_tag(self, name: str, key: str, value: Any) -> None:
        """Set the tag ``key`` of the registered model ``name`` to ``value`` (stored as text);
        :meth:`list_registered_models` reads it back in ``RegisteredModel.tags``.

        Raises:
            NotFound: no registered model ``name``.
            UnsupportedOperation: the backend's registered models hold no tags of their own
                (capability ``registered_model_tags``; W&B's Registry collections take plain
                labels only): tag each version with :meth:`set_model_version_tag`.
        """
        require(
            self.backend,
            "registered_model_tags",
            "set_registered_model_tag",
            "tag each version (set_model_version_tag)",
        )
        name = normalize.model_name(name)
        if not isinstance(key, str) or not key.strip():
            raise InvalidInput(
                f"a registered model tag key must be a non-empty string, got {key!r}"
            )
        text = normalize.value_text(normalize.param_value(key, value))
        local = self._offline_registry()
        if local is not None:
            local.set_registered_model_tag(name, key, text)
            self.defer("set_registered_model_tag", name=name, key=key, value=text)
            return
        call(
            self.backend,
            f"set tag {key!r} of registered model {name!r}",
            lambda: self.backend.set_registered_model_tag(name, key, text),
        )

    def load_model(
        self,
        model: str | ModelRef,
        version: int | str | None = None,
        alias: str | None = None,
    ) -> Any:
        """Load a model back as the original Python object.

        Args:
            model: a registered model name; a ``models:/<name>@<alias>``,
                ``models:/<name>/<version>`` or ``models:/<name>/<stage>`` URI (the stage's
                alias, e.g. ``Production`` -> ``production``); a ModelRef; a
                ``runs:/<run_id>/<name>`` URI; or the backend's own model URI.
            version: with a name: the version (default: latest).
            alias: with a name: the alias.
        """
        return self._load(model, version, alias)[0]

    def load_model_package(
        self,
        model: str | ModelRef,
        version: int | str | None = None,
        alias: str | None = None,
    ) -> Package:
        """Load a model with what was stored beside it: its flavor, signature and input example.

        Takes the arguments of :meth:`load_model`; ``Package.model`` is what ``load_model``
        returns.
        """
        from trackkit import models

        with models.capture() as opened:
            loaded, uri = self._load(model, version, alias)
        if opened:
            return dataclasses.replace(opened[-1], model=loaded)
        flavor, signature, example = call(
            self.backend, f"read model {uri}", lambda: self.backend.model_details(uri)
        )
        return models.Package(loaded, flavor or "python", signature, example, {})

    def _load(
        self, model: str | ModelRef, version: int | str | None, alias: str | None
    ) -> tuple[Any, str]:
        """The loaded model, and the URI it was loaded from."""
        if isinstance(model, ModelRef):
            ref = model
            loaded = call(
                self.backend, f"load model {ref.uri}", lambda: self.backend.load_model(ref.uri)
            )
            return loaded, ref.uri
        if not isinstance(model, str) or not model:
            raise InvalidInput(f"model must be a name, a URI or a ModelRef, got {model!r}")
        if model.startswith("models:/"):
            rest = model[len("models:/") :]
            if "@" in rest:
                name, alias = rest.split("@", 1)
                version = None
            elif "/" in rest:
                name, version = rest.split("/", 1)
                alias = None
                if version.lower() in STAGES:  # the course's models:/<name>/Production
                    alias = stage_alias(version, model)
                    version = None
            else:
                uri = model
                return call(self.backend, f"load {uri}", lambda: self.backend.load_model(uri)), uri
        elif ":/" in model:
            uri = model
            return call(self.backend, f"load {uri}", lambda: self.backend.load_model(uri)), uri
        else:
            name = model
        found = self.get_model_version(name, version=version, alias=alias)
        loaded = call(
            self.backend,
            f"load version {found.version} of {found.name!r}",
            lambda: self.backend.load_model_version(found),
        )
        return loaded, f"models:/{found.name}/{found.version}"

    # -- lifecycle --------------------------------------------------------------------------
    def flush(self) -> None:
        """Send what every open run of this tracker has pending."""
        _lifecycle.flush_open(self)

    def defer(self, operation: str, **arguments: Any) -> Path:
        """Journal a Tracker call the backend cannot make now; ``trackkit sync`` replays it.

        Args:
            operation: one of :data:`DEFERRABLE`, the registry calls, e.g. ``"set_model_alias"``.
            **arguments: its keyword arguments (JSON-serializable).

        Returns:
            The journal file holding it.
        """
        if operation not in DEFERRABLE:
            raise InvalidInput(
                f"cannot defer {operation!r}: only these registry calls can be deferred: "
                f"{', '.join(DEFERRABLE)}"
            )
        text = json.dumps(normalize.jsonable(arguments, f"defer({operation!r})"))
        try:
            if self._deferred is None:
                self._deferred = jn.Journal.create(
                    self.journal_dir,
                    f"deferred-{uuid.uuid4().hex}",
                    {
                        "kind": "deferred",
                        "backend": self.backend.name,
                        "options": self.backend.replay_options(),
                    },
                )
            self._deferred.append([jn.Op(jn.DEFERRED, operation, text=text)])
        except (OSError, sqlite3.Error) as e:
            raise JournalError(
                f"cannot defer {operation!r}: the journal in {self.journal_dir} cannot be "
                f"written ({type(e).__name__}: {e}); nothing was deferred"
            ) from e
        return self._deferred.path

    def close(self) -> None:
        """Flush open runs, stop the background writer and release the backend."""
        self.flush()
        self.writer.stop()
        if self._deferred is not None:
            self._deferred.close()
        if self._local is not None:
            self._local.close()
            self._local = None
        self.backend.close()
