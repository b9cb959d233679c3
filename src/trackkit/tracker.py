"""Tracker and Run: the behaviour users program against, identical on every backend."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sqlite3
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trackkit import _lifecycle, env, normalize, search
from trackkit import journal as jn
from trackkit._secrets import redact, scrub
from trackkit.backend import call, require
from trackkit.entities import ModelRef, ModelVersion, RunHandle, RunInfo
from trackkit.errors import BackendError, InvalidInput, JournalError, NotFound, TrackkitError
from trackkit.run import STATUSES, Run
from trackkit.writer import Writer

if TYPE_CHECKING:
    from trackkit.backend import Backend
    from trackkit.local_registry import LocalRegistry

__all__ = [
    "DEFAULT_BACKEND",
    "DEFAULT_EXPERIMENT",
    "DEFERRABLE",
    "STATUSES",
    "Run",
    "Tracker",
    "get_tracker",
]

DEFAULT_BACKEND = "mlflow"
DEFAULT_EXPERIMENT = "Default"
TRACKER_OPTIONS = ("strict", "journal_dir", "flush_interval", "end_timeout", "memory_bound")
#: the Tracker calls ``defer`` journals and ``trackkit sync`` replays: registry changes only
DEFERRABLE = ("register_model", "set_model_alias", "delete_model_alias", "update_model_version")


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
    cls = get_plugin_manager().backend_class(name.strip())
    try:
        instance = cls(**options)
    except TypeError as e:
        message = f"the {name} backend rejected its options: {redact(str(e))}"
        raise InvalidInput(message) from scrub(e)
    return Tracker(instance, **own)


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

    def __repr__(self) -> str:
        return f"Tracker(backend={redact(self.backend.describe())!r})"

    @property
    def backend_name(self) -> str:
        return self.backend.name

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
    ) -> Run:
        """Start a run, or resume one by ``run_id``; use the Run as a context manager.

        Args:
            experiment: defaults to ``$TRACKKIT_EXPERIMENT``, else ``"Default"``; when resuming,
                to the run's own experiment (a different one raises InvalidInput).
            name: the run's display name; the backend picks one when omitted.
            tags: tags to set at once.
            run_id: resume this run instead of starting a new one.
        """
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
        try:
            handle: RunHandle | None = self.backend.start_run(experiment, name, run_id)
        except TrackkitError:
            raise
        except Exception as e:
            if run_id is not None or self.strict:
                what = f"start a run in experiment {experiment!r}"
                raise BackendError(
                    redact(f"the {self.backend.describe()} backend failed to {what}: {e}")
                ) from scrub(e)
            self.writer.record_failure(e, where=str(self.journal_dir))
            self.writer.report(stacklevel=2)
            handle = None  # a local run: `trackkit sync` creates it at the backend later
        run = Run(self, handle, experiment or "", name)
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

    def get_run(self, run_id: str) -> RunInfo:
        """The run's current params, latest metrics, tags and status."""
        require(self.backend, "search_runs", "get_run", "keep the Run object")
        _lifecycle.flush_open(self)
        return call(self.backend, f"get run {run_id}", lambda: self.backend.get_run(run_id))

    def search_runs(
        self,
        experiment: str | Sequence[str] | None = None,
        filter: str | None = None,
        order_by: str | Sequence[str] | None = None,
        max_results: int = 100,
    ) -> list[RunInfo]:
        """Find runs with MLflow's filter syntax; the same answer on every backend.

        Args:
            experiment: a name or list of names; defaults as in ``start_run``.
            filter: e.g. ``"metrics.rmse < 6.8 and params.model = 'lasso'"``.
            order_by: e.g. ``["metrics.rmse ASC"]``; ties are newest first, then by name.
            max_results: at most this many runs (1 to 50,000).

        Raises:
            InvalidInput: an argument is malformed (checked before the backend is asked).
        """
        require(self.backend, "search_runs", "search_runs", "compare runs in the backend's UI")
        if experiment is None:
            experiment = os.environ.get("TRACKKIT_EXPERIMENT") or DEFAULT_EXPERIMENT
        query = search.build_query(experiment, filter, order_by, max_results)
        _lifecycle.flush_open(self)
        candidates = call(self.backend, "search runs", lambda: self.backend.search_runs(query))
        return search.select(query, candidates)

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
        self, name: str, version: int | str | None = None, alias: str | None = None
    ) -> ModelVersion:
        """One version, by number or alias; with neither, the latest version.

        ``alias="latest"`` is the newest version and ``alias="v3"`` is version 3, on every
        backend.

        Raises:
            NotFound: no such model, version or alias.
        """
        require(self.backend, "registry", "get_model_version", "keep the ModelRefs you logged")
        name = normalize.model_name(name)
        if version is not None and alias is not None:
            raise InvalidInput("pass version or alias, not both")
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

    def load_model(
        self,
        model: str | ModelRef,
        version: int | str | None = None,
        alias: str | None = None,
    ) -> Any:
        """Load a model back as the original Python object.

        Args:
            model: a registered model name; a ``models:/<name>@<alias>`` or
                ``models:/<name>/<version>`` URI; a ModelRef; or the backend's own model URI.
            version: with a name: the version (default: latest).
            alias: with a name: the alias.
        """
        if isinstance(model, ModelRef):
            return call(
                self.backend, f"load model {model.uri}", lambda: self.backend.load_model(model.uri)
            )
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
            else:
                return call(self.backend, f"load {model}", lambda: self.backend.load_model(model))
        elif ":/" in model:
            return call(self.backend, f"load {model}", lambda: self.backend.load_model(model))
        else:
            name = model
        found = self.get_model_version(name, version=version, alias=alias)
        return call(
            self.backend,
            f"load version {found.version} of {found.name!r}",
            lambda: self.backend.load_model_version(found),
        )

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
