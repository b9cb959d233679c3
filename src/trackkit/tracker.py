"""Tracker and Run: the behaviour users program against, identical on every backend."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import threading
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from time import time as _time
from typing import TYPE_CHECKING, Any, TypeVar

from trackkit import _lifecycle, normalize
from trackkit import journal as jn
from trackkit._secrets import redact
from trackkit.entities import ModelRef, ModelVersion, RunHandle, RunInfo
from trackkit.errors import BackendError, InvalidInput, NotFound, TrackkitError, TrackkitWarning
from trackkit.writer import Writer

if TYPE_CHECKING:
    from types import TracebackType

    from trackkit.backend import Backend
    from trackkit.entities import ParamValue

T = TypeVar("T")

DEFAULT_BACKEND = "mlflow"
DEFAULT_EXPERIMENT = "Default"
STATUSES = ("FINISHED", "FAILED", "KILLED")
TRACKER_OPTIONS = ("strict", "journal_dir", "flush_interval", "end_timeout", "memory_bound")
RENAMES_ARTIFACT = "trackkit/renamed_keys.json"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return float(raw)
    except ValueError:
        raise InvalidInput(f"${name} must be a number of seconds, got {raw!r}") from None


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
        raise InvalidInput(f"the {name} backend rejected its options: {redact(str(e))}") from e
    return Tracker(instance, **own)


def _call(backend: Backend, operation: str, fn: Callable[[], T]) -> T:
    """Run one SDK-facing call; wrap SDK failures in BackendError with context."""
    try:
        return fn()
    except TrackkitError:
        raise
    except Exception as e:
        message = f"the {backend.describe()} backend failed to {operation}: {type(e).__name__}: {e}"
        raise BackendError(redact(message)) from e


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


class Run:
    """One tracked run; use it as a context manager, or call :meth:`end`.

    Log calls validate and queue; the tracker's background writer journals and sends (see
    ``docs/reliability.md``). ``id`` is the backend's run id; a run started while the service
    was unreachable has a provisional ``local-...`` id until ``trackkit sync`` creates it.
    """

    def __init__(
        self, tracker: Tracker, handle: RunHandle | None, experiment: str, name: str | None
    ) -> None:
        self._tracker = tracker
        self._backend = tracker.backend
        self._writer = tracker._writer
        self._limits = tracker.backend.limits
        local_id = f"local-{uuid.uuid4().hex}"
        self.id = handle.id if handle else local_id
        self.name = handle.name if handle else (name or local_id)
        self.experiment = handle.experiment if handle else experiment
        self._lock = threading.Lock()
        self._journal_lock = threading.Lock()
        self._params: dict[str, str] = dict(handle.params) if handle else {}
        self._steps: dict[str, int] = dict(handle.last_steps) if handle else {}
        self._keys = {kind: normalize.KeyRules(self._limits) for kind in ("param", "metric", "tag")}
        self._metric_keys: dict[str, str] = {}  # hot-path cache of accepted metric names
        self.renames: dict[str, dict[str, str]] = {}
        self._renames_logged = 0
        self._queue: list[jn.Entry] = []
        self._bound = tracker.memory_bound
        self._meta: dict[str, Any] = {
            "run_id": handle.id if handle else None,
            "local_id": local_id,
            "experiment": self.experiment,
            "name": name,
            "backend": self._backend.name,
            "options": self._backend.replay_options(),
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }
        self.journal = jn.Journal.create(tracker.journal_dir, local_id, self._meta)
        self.status: str | None = None
        #: where operations the backend refused for good were kept, once the run is delivered
        self.rejected_at: Path | None = None
        #: True once the backend acknowledged everything, the end included (journal removed)
        self.delivered = False

    def __repr__(self) -> str:
        state = self.status or "RUNNING"
        return (
            f"Run(id={self.id!r}, name={self.name!r}, experiment={self.experiment!r}, "
            f"backend={self._backend.name!r}, status={state!r})"
        )

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        status = _lifecycle.status_for(exc_type, exc)
        if exc_type is None:
            self.end(status)
            return
        try:
            self.end(status)
        except Exception as end_error:  # the body's exception is the one to propagate
            warnings.warn(
                f"run {self.id} could not be ended {status}: {end_error}",
                TrackkitWarning,
                stacklevel=2,
            )

    @property
    def ended(self) -> bool:
        return self.status is not None

    def _check_open(self) -> None:
        if self.status is not None:
            raise TrackkitError(f"run {self.id} has ended ({self.status}); start a new run to log")
        if self._writer.failure is not None:
            if self._writer.strict:
                self._raise_failure("deliver logged data")
            self._writer.report(stacklevel=4)

    def _raise_failure(self, what: str) -> None:
        error = self._writer.failure
        raise BackendError(
            redact(
                f"the {self._backend.describe()} backend failed to {what} (strict mode): "
                f"{type(error).__name__}: {error}; the data is kept in journal {self.journal.path}"
            )
        ) from error

    def _enqueue(self, ops: Sequence[jn.Entry]) -> int:
        """Queue operations (caller holds ``_lock``); return the queue's size for
        :meth:`_queue_full`, which the caller calls once it released the lock."""
        self._queue.extend(ops)
        return len(self._queue)

    def _queue_full(self, size: int) -> None:
        """Past the bound, wake the journal thread; past twice the bound, spill right here
        (every log call applies the same bound; call without holding ``_lock``)."""
        if size < self._bound:
            return
        if size >= 2 * self._bound:
            self._to_journal()
        else:
            self._writer.queue_full()

    def _to_journal(self) -> None:
        """Move queued operations into the journal, keeping their order (writer threads)."""
        with self._journal_lock:
            with self._lock:
                ops, self._queue = self._queue, []
            self.journal.append(ops)

    def journal_empty(self) -> bool:
        with self._lock:
            queued = bool(self._queue)
        return not queued and self.journal.empty()

    def _claim(self, kind: str, names: Mapping[str, str]) -> None:
        """Record the names a call logged; warn once about each rename (stack: user code)."""
        for key, stored in self._keys[kind].claim(names).items():
            self.renames.setdefault(kind, {})[key] = stored
            where = RENAMES_ARTIFACT if self._backend.capabilities.artifacts else "Run.renames"
            warnings.warn(
                f"{kind} name {key!r} has characters the {self._backend.name} backend does not "
                f"allow; it is logged as {stored!r} (the mapping is kept in {where})",
                TrackkitWarning,
                stacklevel=4,
            )

    # -- params -----------------------------------------------------------------------------
    def log_param(self, key: str, value: Any) -> None:
        """Log one param; a mapping value is flattened under ``key`` with ``.``."""
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params; nested mappings are flattened with ``.``.

        The whole call is validated before anything is kept. Logging a param again with the
        same value is a no-op; with a different value it raises InvalidInput (params are
        immutable).
        """
        flat = normalize.flatten(params, "params")
        names = self._keys["param"].check_all(flat, "param")
        staged: dict[str, tuple[ParamValue, str]] = {}
        for key, raw in flat.items():
            value = normalize.param_value(key, raw)
            staged[names[key]] = (value, normalize.value_text(value))
        with self._lock:
            self._check_open()
            for stored, (_, text) in list(staged.items()):
                previous = self._params.get(stored)
                if previous is None:
                    continue
                if previous != text and previous != self._stored_text(stored, text, "params"):
                    raise InvalidInput(
                        f"param {stored!r} is already {previous[:200]!r} in run {self.id}; "
                        "params cannot change: log the new value under another name, "
                        "or start a new run"
                    )
                del staged[stored]
        shortened = {s: self._keep_long_value("params", s, t) for s, (_, t) in staged.items()}
        with self._lock:
            ops = []
            for stored, (value, text) in staged.items():
                if stored in self._params:
                    continue  # logged meanwhile by another thread with the same value
                self._params[stored] = text
                short = shortened[stored]
                kept = short if short is not None else value
                ops.append(jn.Op(jn.PARAM, stored, text=json.dumps(kept)))
            size = self._enqueue(ops)
        self._queue_full(size)
        self._claim("param", names)

    def _stored_text(self, stored: str, text: str, kind: str) -> str | None:
        limits = self._limits
        limit = limits.param_value_length if kind == "params" else limits.tag_value_length
        return normalize.truncate(text, limit, f"{normalize.LONG_VALUES_DIR}/{kind}/{stored}.txt")

    def _keep_long_value(self, kind: str, stored: str, text: str) -> str | None:
        """Store an over-long value whole as an artifact; return the truncated form to log."""
        short = self._stored_text(stored, text, kind)
        if short is not None:
            if not self._backend.capabilities.artifacts:
                raise InvalidInput(
                    f"{kind[:-1]} {stored!r} is {len(text)} characters, over the "
                    f"{self._backend.name} backend's limit, and this backend cannot store the "
                    "whole value as an artifact; log it shorter"
                )
            self.log_text(text, f"{normalize.LONG_VALUES_DIR}/{kind}/{stored}.txt")
        return short

    # -- metrics ----------------------------------------------------------------------------
    def log_metric(
        self, key: str, value: Any, step: int | None = None, timestamp: Any = None
    ) -> None:
        """Log one metric point; it returns at once (the writer sends it in the background).

        Args:
            key: the metric name.
            value: a real number (bools become 1.0/0.0; NaN and infinities are kept, as far as
                the backend can hold them: MLflow stores ±inf as ±1.797e308).
            step: a non-negative integer; when omitted, one more than this key's highest step
                so far (0 for its first point). Steps are counted per key.
            timestamp: a datetime or int milliseconds since the epoch; defaults to now.

        Raises:
            InvalidInput: the name, value, step or timestamp is not acceptable.
        """
        known = self._metric_keys.get(key) if type(key) is str else None
        stored = self._keys["metric"].check(key, "metric") if known is None else known
        number = value if type(value) is float else normalize.metric_value(key, value)
        ts = int(_time() * 1000) if timestamp is None else normalize.timestamp_ms(key, timestamp)
        if step is not None and (type(step) is not int or not 0 <= step <= normalize.MAX_STEP):
            step = normalize.step_value(key, step)
        with self._lock:
            if self.status is not None or self._writer.failure is not None:
                self._check_open()
            last = self._steps.get(stored, -1)
            if step is None:
                step = last + 1
            if step > last:
                self._steps[stored] = step
            self._queue.append((jn.METRIC, stored, number, step, ts, None))  # see jn.Entry
            size = len(self._queue)
        if size >= self._bound:
            self._queue_full(size)
        if known is None:
            self._claim("metric", {key: stored})
            self._metric_keys[key] = stored

    def log_metrics(
        self, metrics: Mapping[str, Any], step: int | None = None, timestamp: Any = None
    ) -> None:
        """Log several metrics at one step (nested mappings are flattened with ``.``)."""
        flat = normalize.flatten(metrics, "metrics")
        ts = int(_time() * 1000) if timestamp is None else normalize.timestamp_ms("*", timestamp)
        explicit = None if step is None else normalize.step_value("*", step)
        names = self._keys["metric"].check_all(flat, "metric")
        points = [(names[key], normalize.metric_value(key, raw)) for key, raw in flat.items()]
        with self._lock:
            self._check_open()
            ops = []
            for stored, number in points:
                last = self._steps.get(stored, -1)
                at = last + 1 if explicit is None else explicit
                if at > last:
                    self._steps[stored] = at
                ops.append((jn.METRIC, stored, number, at, ts, None))
            size = self._enqueue(ops)
        self._queue_full(size)
        self._claim("metric", names)

    # -- tags -------------------------------------------------------------------------------
    def set_tag(self, key: str, value: Any) -> None:
        """Set a tag (tags can change; values are stored as text)."""
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set several tags; nested mappings are flattened with ``.``."""
        flat = normalize.flatten(tags, "tags")
        names = self._keys["tag"].check_all(flat, "tag")
        staged = {
            names[key]: normalize.value_text(normalize.param_value(key, raw))
            for key, raw in flat.items()
        }
        with self._lock:
            self._check_open()
        kept = {}
        for stored, text in staged.items():
            short = self._keep_long_value("tags", stored, text)
            kept[stored] = short if short is not None else text
        with self._lock:
            size = self._enqueue([jn.Op(jn.TAG, stored, text=t) for stored, t in kept.items()])
        self._queue_full(size)
        self._claim("tag", names)

    # -- artifacts --------------------------------------------------------------------------
    def log_artifact(self, local_path: str | os.PathLike[str], path: str | None = None) -> None:
        """Store a file or a directory under ``path`` (a run-relative directory).

        A file lands at ``path/<file name>``, a directory at ``path/<directory name>/...``.
        If the service is unreachable, a copy is journaled and uploaded later.

        Raises:
            InvalidInput: ``local_path`` does not exist, or ``path`` leaves the run.
            UnsupportedOperation: the backend stores no artifacts.
        """
        directory = normalize.artifact_dir(path)
        if not isinstance(local_path, (str, os.PathLike)):
            raise InvalidInput(f"local_path must be a path, got {type(local_path).__name__}")
        local = Path(local_path)
        if not local.exists():
            raise InvalidInput(f"artifact {str(local)!r} does not exist")
        self._tracker._require("artifacts", "log_artifact", "log the data as params or tags")
        with self._lock:
            self._check_open()
        if self._meta["run_id"] is not None and self._writer.failure is None:
            try:
                self._backend.log_artifact(self.id, local, directory)
                return
            except TrackkitError:
                raise
            except Exception as e:
                if self._writer.strict:
                    raise BackendError(redact(f"log artifact {local.name!r}: {e}")) from e
                self._writer._failed(e, where=str(self.journal.path))
        copy = self.journal.files_dir() / uuid.uuid4().hex / local.name
        copy.parent.mkdir(parents=True)
        if local.is_dir():
            shutil.copytree(local, copy)
        else:
            shutil.copy2(local, copy)
        with self._lock:
            size = self._enqueue([jn.Op(jn.ARTIFACT, directory, text=str(copy))])
        self._queue_full(size)

    def _log_generated(self, file: str, write: Callable[[Path], None]) -> None:
        directory, name = normalize.artifact_file(file)
        with tempfile.TemporaryDirectory(prefix="trackkit-") as tmp:
            local = Path(tmp) / name
            write(local)
            self.log_artifact(local, directory)

    def log_text(self, text: str, file: str) -> None:
        """Store ``text`` as the artifact file ``file`` (e.g. ``"notes/summary.txt"``)."""
        if not isinstance(text, str):
            raise InvalidInput(f"log_text takes a str, got {type(text).__name__}")
        self._log_generated(file, lambda p: _write_text(p, text))

    def log_dict(self, obj: Any, file: str) -> None:
        """Store a dict (or list) as JSON or YAML, chosen by the file's extension."""
        data = normalize.jsonable(obj, f"log_dict({file!r})")
        suffix = Path(str(file)).suffix.lower()
        if suffix == ".json":
            content = json.dumps(data, indent=2, allow_nan=True) + "\n"
        elif suffix in (".yaml", ".yml"):
            from trackkit._lazy import import_sdk

            yaml = import_sdk("yaml", extra="ml", purpose="log_dict to YAML")
            content = yaml.safe_dump(data, sort_keys=False)
        else:
            raise InvalidInput(f"log_dict file {file!r} must end in .json, .yaml or .yml")
        self._log_generated(file, lambda p: _write_text(p, content))

    def log_figure(self, figure: Any, file: str) -> None:
        """Store a matplotlib figure as an image; the extension picks the format (.png, .svg...)."""
        if not hasattr(figure, "savefig"):
            raise InvalidInput(f"log_figure takes a matplotlib Figure, got {type(figure).__name__}")
        if not Path(str(file)).suffix:
            raise InvalidInput(f"figure file {file!r} needs an extension such as .png or .svg")
        self._log_generated(file, lambda p: figure.savefig(p))

    def log_table(self, table: Any, file: str) -> None:
        """Store a pandas DataFrame as .parquet, .csv or .json, by extension.

        A ``.json`` table is the backend's native table where it has one (MLflow's
        ``log_table``, shown in its UI), else JSON records.
        """
        suffix = Path(str(file)).suffix.lower()
        writers = {
            ".parquet": lambda p: table.to_parquet(p, index=False),
            ".csv": lambda p: table.to_csv(p, index=False),
            ".json": lambda p: table.to_json(p, orient="records"),
        }
        if not hasattr(table, "to_parquet"):
            raise InvalidInput(f"log_table takes a pandas DataFrame, got {type(table).__name__}")
        if suffix not in writers:
            raise InvalidInput(f"table file {file!r} must end in .parquet, .csv or .json")
        if suffix == ".json" and self._backend.capabilities.native_tables:
            directory, name = normalize.artifact_file(file)
            where = f"{directory}/{name}" if directory else name
            with self._lock:
                self._check_open()
            _call(
                self._backend,
                f"log table {where!r}",
                lambda: self._backend.log_table(self.id, table, where),
            )
            return
        self._log_generated(file, writers[suffix])

    # -- models -----------------------------------------------------------------------------
    def log_model(self, model: Any, name: str = "model", *, flavor: str | None = None) -> ModelRef:
        """Store a model in the run, in a form ``load_model`` restores to the same object.

        Args:
            model: a scikit-learn estimator or pipeline, or an xgboost model.
            name: where the model is stored in the run.
            flavor: ``"sklearn"`` or ``"xgboost"``; detected from the model when omitted.

        Returns:
            A ModelRef to pass to ``Tracker.register_model`` or ``Tracker.load_model``.
        """
        from trackkit import models

        where = normalize.artifact_dir(name)
        if where is None:
            raise InvalidInput("log_model needs a non-empty name")
        chosen = models.check_flavor(flavor) if flavor else models.detect_flavor(model)
        self._tracker._require("models", "log_model", "pickle the model and use log_artifact")
        with self._lock:
            self._check_open()
        return _call(
            self._backend,
            f"log model {where!r}",
            lambda: self._backend.log_model(self.id, model, where, chosen),
        )

    # -- sending ----------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Send everything logged so far and wait until the backend acknowledged it.

        Returns True once all of it was delivered, False if the service failed (the data stays
        in the journal and is retried) or ``timeout`` seconds passed (default: the tracker's
        ``end_timeout``). In strict mode a failure raises BackendError instead.
        """
        self._log_renames()
        wait = self._tracker.end_timeout if timeout is None else timeout
        delivered = self._writer.flush(self, wait)
        if not delivered and self._writer.failure is not None:
            if self._writer.strict:
                self._raise_failure("deliver logged data")
            self._writer.report()
        return delivered

    def _log_renames(self) -> None:
        count = sum(len(r) for r in self.renames.values())
        if count != self._renames_logged and self._backend.capabilities.artifacts:
            self._renames_logged = count
            self.log_dict(self.renames, RENAMES_ARTIFACT)

    def end(self, status: str = "FINISHED") -> None:
        """Send what is pending and end the run with ``status`` (FINISHED, FAILED or KILLED).

        Waits up to the tracker's ``end_timeout`` for the backend; what it has not
        acknowledged by then stays in the journal (retried while the process lives, and by
        ``trackkit sync`` after). Ending an ended run again does nothing.
        """
        if status not in STATUSES:
            raise InvalidInput(f"run status must be one of {STATUSES}, got {status!r}")
        if self.status is not None:
            return
        self._log_renames()
        with self._lock:
            if self.status is not None:
                return
            self.status = status
            self._queue.append(jn.Op(jn.END, ts=int(_time() * 1000), text=status))
        _lifecycle.forget(self)
        if self._writer.flush(self, self._tracker.end_timeout):
            if self.rejected_at is not None:
                warnings.warn(
                    f"run {self.id}: the {self._backend.name} backend refused some operations "
                    f"for good; they are kept in {self.rejected_at} (table `rejected`, with "
                    "the reasons), everything else was delivered",
                    TrackkitWarning,
                    stacklevel=2,
                )
            return
        if self._writer.strict and self._writer.failure is not None:
            self._raise_failure(f"end run {self.id}")
        self._writer.report()
        warnings.warn(
            f"run {self.id} ended {status}, but the {redact(self._backend.describe())} backend "
            f"has not acknowledged all of it yet; it is kept in journal {self.journal.path}, "
            "retried while this process runs, and replayed by `trackkit sync`",
            TrackkitWarning,
            stacklevel=2,
        )


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
        self.strict = _env_flag("TRACKKIT_STRICT") if strict is None else bool(strict)
        self.journal_dir = jn.journal_dir(journal_dir)
        interval = (
            _env_float("TRACKKIT_FLUSH_INTERVAL", 1.0) if flush_interval is None else flush_interval
        )
        self.end_timeout = (
            _env_float("TRACKKIT_END_TIMEOUT", 30.0) if end_timeout is None else end_timeout
        )
        self.memory_bound = 50_000 if memory_bound is None else memory_bound
        for label, number in (("flush_interval", interval), ("end_timeout", self.end_timeout)):
            if isinstance(number, bool) or not isinstance(number, (int, float)) or number <= 0:
                raise InvalidInput(f"{label} must be a positive number of seconds, got {number!r}")
        if (
            isinstance(self.memory_bound, bool)
            or not isinstance(self.memory_bound, int)
            or (self.memory_bound < 1)
        ):
            raise InvalidInput(f"memory_bound must be a positive int, got {self.memory_bound!r}")
        self._writer = Writer(
            backend, interval=float(interval), memory_bound=self.memory_bound, strict=self.strict
        )
        self._deferred: jn.Journal | None = None
        backend._deferrer = self.defer  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"Tracker(backend={redact(self.backend.describe())!r})"

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def _require(self, capability: str, operation: str, alternative: str) -> None:
        if not getattr(self.backend.capabilities, capability):
            raise self.backend.unsupported(operation, alternative)

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
            self._require("resume", "start_run(run_id=...)", "start a new run")
        try:
            handle: RunHandle | None = self.backend.start_run(experiment, name, run_id)
        except TrackkitError:
            raise
        except Exception as e:
            if run_id is not None or self.strict:
                what = f"start a run in experiment {experiment!r}"
                raise BackendError(
                    redact(f"the {self.backend.describe()} backend failed to {what}: {e}")
                ) from e
            self._writer._failed(e, where=str(self.journal_dir))
            self._writer.report(stacklevel=2)
            handle = None  # a local run: `trackkit sync` creates it at the backend later
        run = Run(self, handle, experiment or "", name)
        self._writer.add(run)
        _lifecycle.remember(run)
        if tags:
            run.set_tags(tags)
        return run

    def get_run(self, run_id: str) -> RunInfo:
        """The run's current params, latest metrics, tags and status."""
        self._require("search_runs", "get_run", "keep the Run object")
        _lifecycle.flush_open(self)
        return _call(self.backend, f"get run {run_id}", lambda: self.backend.get_run(run_id))

    def search_runs(
        self,
        experiment: str | Sequence[str] | None = None,
        filter: str | None = None,
        order_by: str | Sequence[str] | None = None,
        max_results: int = 100,
    ) -> list[RunInfo]:
        """Find runs with MLflow's filter syntax.

        Args:
            experiment: a name or list of names; defaults as in ``start_run``.
            filter: e.g. ``"metrics.rmse < 6.8 and params.model = 'lasso'"``.
            order_by: e.g. ``["metrics.rmse ASC"]``.
            max_results: at most this many runs (1 to 50,000).
        """
        self._require("search_runs", "search_runs", "compare runs in the backend's UI")
        if experiment is None:
            experiment = os.environ.get("TRACKKIT_EXPERIMENT") or DEFAULT_EXPERIMENT
        names = [experiment] if isinstance(experiment, str) else list(experiment)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise InvalidInput(f"experiment must be a name or a list of names, got {experiment!r}")
        orders = [order_by] if isinstance(order_by, str) else list(order_by or [])
        if filter is not None and not isinstance(filter, str):
            raise InvalidInput(f"filter must be a string, got {type(filter).__name__}")
        if (
            isinstance(max_results, bool)
            or not isinstance(max_results, int)
            or not (1 <= max_results <= 50_000)
        ):
            raise InvalidInput(f"max_results must be an int from 1 to 50000, got {max_results!r}")
        _lifecycle.flush_open(self)
        return _call(
            self.backend,
            "search runs",
            lambda: self.backend.search_runs(names, filter or None, orders, max_results),
        )

    def download_artifacts(
        self, run_id: str, path: str = "", dst: str | os.PathLike[str] | None = None
    ) -> Path:
        """Copy a run's artifact (file or directory) to ``dst`` (a new temporary directory when
        omitted) and return the local path of the copy."""
        self._require("download_artifacts", "download_artifacts", "keep a local copy")
        clean = normalize.artifact_dir(path) or ""
        target = Path(dst) if dst is not None else Path(tempfile.mkdtemp(prefix="trackkit-"))
        target.mkdir(parents=True, exist_ok=True)
        return _call(
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
        self._require("registry", "register_model", "load the model from its run")
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
        return _call(
            self.backend,
            f"register {uri!r} as {name!r}",
            lambda: self.backend.create_model_version(name, uri, run_id, description),
        )

    def list_model_versions(self, name: str) -> list[ModelVersion]:
        """Every version of a registered model, oldest first."""
        self._require("registry", "list_model_versions", "keep the ModelRefs you logged")
        name = normalize.model_name(name)
        versions = _call(
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
        self._require("registry", "get_model_version", "keep the ModelRefs you logged")
        name = normalize.model_name(name)
        if version is not None and alias is not None:
            raise InvalidInput("pass version or alias, not both")
        if alias is not None:
            if isinstance(alias, str) and alias.lower() == "latest":
                return self._latest(name)
            if isinstance(alias, str) and re.fullmatch(r"[vV][0-9]+", alias):
                version = int(alias[1:])
            else:
                checked = normalize.alias(alias)
                return _call(
                    self.backend,
                    f"get {name}@{checked}",
                    lambda: self.backend.get_model_version_by_alias(name, checked),
                )
        if version is None or (isinstance(version, str) and version.lower() == "latest"):
            return self._latest(name)
        number = normalize.model_version(version)
        return _call(
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
        self._require("registry", "set_model_alias", "record the chosen version in a tag")
        name, checked, number = (
            normalize.model_name(name),
            normalize.alias(alias),
            normalize.model_version(version),
        )
        _call(
            self.backend,
            f"set alias {checked!r} of {name!r} to version {number}",
            lambda: self.backend.set_model_alias(name, checked, number),
        )

    def delete_model_alias(self, name: str, alias: str) -> None:
        """Remove ``alias`` from the model."""
        self._require("registry", "delete_model_alias", "record the chosen version in a tag")
        name, checked = normalize.model_name(name), normalize.alias(alias)
        _call(
            self.backend,
            f"delete alias {checked!r} of {name!r}",
            lambda: self.backend.delete_model_alias(name, checked),
        )

    def update_model_version(self, name: str, version: int | str, description: str) -> ModelVersion:
        """Set the description of a model version."""
        self._require("registry", "update_model_version", "log the description as a tag")
        name, number = normalize.model_name(name), normalize.model_version(version)
        if not isinstance(description, str):
            raise InvalidInput(f"description must be a string, got {type(description).__name__}")
        return _call(
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
            return _call(
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
                return _call(self.backend, f"load {model}", lambda: self.backend.load_model(model))
        elif ":/" in model:
            return _call(self.backend, f"load {model}", lambda: self.backend.load_model(model))
        else:
            name = model
        found = self.get_model_version(name, version=version, alias=alias)
        return _call(
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
            operation: a public Tracker method, e.g. ``"set_model_alias"``.
            **arguments: its keyword arguments (JSON-serializable).

        Returns:
            The journal file holding it.
        """
        if operation.startswith("_") or not callable(getattr(Tracker, operation, None)):
            raise InvalidInput(f"cannot defer {operation!r}: not a Tracker method")
        text = json.dumps(normalize.jsonable(arguments, f"defer({operation!r})"))
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
        return self._deferred.path

    def close(self) -> None:
        """Flush open runs, stop the background writer and release the backend."""
        self.flush()
        self._writer.stop()
        if self._deferred is not None:
            self._deferred.close()
        self.backend.close()
