"""Run: the handle of one tracked run; it validates what is logged and hands it to its outbox."""

from __future__ import annotations

import json
import os
import socket
import stat
import tempfile
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from time import time as _time
from time import time_ns
from typing import TYPE_CHECKING, Any, Protocol

from trackkit import _active, _lifecycle, normalize
from trackkit import journal as jn
from trackkit._secrets import redact, scrub
from trackkit.backend import call, require
from trackkit.errors import (
    BackendError,
    InvalidInput,
    JournalError,
    TrackkitError,
    TrackkitWarning,
)
from trackkit.outbox import Outbox

if TYPE_CHECKING:
    from types import TracebackType

    from trackkit.backend import Backend, Limits
    from trackkit.entities import ModelRef, ParamValue, RunHandle
    from trackkit.memory_journal import Store
    from trackkit.models import Signature
    from trackkit.outbox import Sink
    from trackkit.tracker import Tracker

STATUSES = ("FINISHED", "FAILED", "KILLED")
RENAMES_ARTIFACT = "trackkit/renamed_keys.json"


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _special_files(local: Path) -> list[str]:
    """What under ``local`` (itself included, links followed) is neither a regular file nor a
    directory: a FIFO, socket or device would block or never end an upload."""
    found: list[str] = []
    seen: set[tuple[int, int]] = set()

    def visit(path: Path) -> None:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            if (info.st_dev, info.st_ino) in seen:
                return
            seen.add((info.st_dev, info.st_ino))
            for child in sorted(path.iterdir()):
                visit(child)
        elif not stat.S_ISREG(info.st_mode):
            found.append(str(path))

    visit(local)
    return found


class Watched(Protocol):
    """What a log call reads of its writer before it queues: a failure makes it check (and
    report, or raise in strict mode) before logging. A :class:`~trackkit.writer.Writer`, or
    the writers of a multi-backend run's backends."""

    @property
    def failure(self) -> BaseException | None: ...

    @property
    def journal_failure(self) -> BaseException | None: ...


class Run:
    """One tracked run; use it as a context manager, or call :meth:`end`.

    Log calls validate and queue; the tracker's background writer journals and sends (see
    ``docs/reliability.md``). ``id`` is the backend's run id; a run started while the service
    was unreachable has a provisional ``local-...`` id until ``trackkit sync`` creates it.
    """

    def __init__(
        self,
        tracker: Tracker,
        handle: RunHandle | None,
        experiment: str,
        name: str | None,
        parent_id: str | None = None,
        *,
        limits: Limits | None = None,
        outbox: Outbox | None = None,
        sink: Sink | None = None,
    ) -> None:
        """Args:
        tracker: the tracker the run belongs to.
        handle: the backend's run, as it started or resumed it; None for a run that exists
            only locally until its backend is reachable.
        experiment, name, parent_id: as ``Tracker.start_run`` was given them.
        limits: what names and values are checked against (default: the backend's); a run
            on several backends gives their strictest.
        outbox: the outbox to report delivery from (default: a new one, with its journal).
        sink: where operations are queued (default: ``outbox``); a run on several backends
            gives a :class:`~trackkit.outbox.FanOut` over theirs.
        """
        self.tracker = tracker
        self._backend = tracker.backend
        self._writer = tracker.writer
        self._watch: Watched = self._writer
        self._limits = tracker.backend.limits if limits is None else limits
        self._max_step = self._limits.max_step
        self._max_timestamp = self._limits.max_timestamp
        # time-ordered, so journals sort in start order and a parent is replayed before its child
        local_id = f"local-{time_ns():016x}{uuid.uuid4().hex[:16]}"
        self._first_id = handle.id if handle else local_id
        self.name = handle.name if handle else (name or local_id)
        self.experiment = handle.experiment if handle else experiment
        #: the parent run's id (``start_run(parent=...)``); a ``local-...`` id while the parent
        #: exists only locally
        self.parent_id = parent_id
        self._params: dict[str, str] = dict(handle.params) if handle else {}
        self._steps: dict[str, int] = dict(handle.last_steps) if handle else {}
        self._keys = {kind: normalize.KeyRules(self._limits) for kind in ("param", "metric", "tag")}
        self._metric_keys: dict[str, str] = {}  # hot-path cache of accepted metric names
        self.renames: dict[str, dict[str, str]] = {}
        self._renames_logged = 0
        self._bound = tracker.memory_bound
        if outbox is None:
            meta: dict[str, Any] = {
                "run_id": handle.id if handle else None,
                "local_id": local_id,
                "experiment": self.experiment,
                "name": name,
                "parent_id": parent_id,
                # when a run that exists only locally started (ms): it is created later, with
                # this start time where the backend keeps run times
                "started": None if handle else int(_time() * 1000),
                "backend": self._backend.name,
                "options": self._backend.replay_options(),
                "pid": os.getpid(),
                "host": socket.gethostname(),
            }
            outbox = Outbox(tracker.journal_dir, local_id, meta)
        self.outbox = outbox
        self._sink: Sink = outbox if sink is None else sink
        #: called with the status when the run ends, in the thread that ends it, before the
        #: wait for delivery (``trackkit.start_run`` uses it to hand the active run back)
        self.on_end: list[Callable[[str], None]] = []
        #: called with the status once the run is marked ended and its end queued (by
        #: :meth:`close`, holding the run's lock: it must take none)
        self.on_close: list[Callable[[str], None]] = []
        self._lock = self._sink.lock  # one lock guards the run's state and its queue
        self.status: str | None = None

    @property
    def id(self) -> str:
        """The backend's run id. A run started while its service was unreachable has a
        provisional ``local-...`` id until the writer (once the service is back) or
        ``trackkit sync`` creates it there; from then on this is the backend's id."""
        return self.outbox.run_id or self._first_id

    def __repr__(self) -> str:
        state = self.status or "RUNNING"
        return (
            f"Run(id={self.id!r}, name={self.name!r}, experiment={self.experiment!r}, "
            f"backend={self._backend.name!r}, status={state!r})"
        )

    def __enter__(self) -> Run:
        _active.entered(self)  # the active run of this thread (autolog, trackkit.log_*)
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

    @property
    def journal(self) -> Store:
        """The run's journal (what is not yet acknowledged by the backend): its file, or,
        while that file cannot be written, the operations kept in memory."""
        return self.outbox.journal

    @property
    def lost(self) -> int:
        """Metric points dropped because neither the journal file nor the backend took them
        (0 unless both failed at once; the run is then tagged ``trackkit.lost_points``)."""
        return self.outbox.lost

    @property
    def delivered(self) -> bool:
        """True once the backend acknowledged everything, the end included."""
        return self.outbox.delivered

    @property
    def rejected_at(self) -> Path | None:
        """Where operations the backend refused for good were kept, once delivered."""
        return self.outbox.rejected_at

    @property
    def url(self) -> str | None:
        """The run's page in the backend's UI (an MLflow server, W&B online, a Neptune server);
        None where there is none: a local store, an offline mode, or a run that exists only
        locally until ``trackkit sync``. :meth:`describe` then says how to see it."""
        run_id = self.outbox.run_id
        if run_id is None:
            return None
        return call(
            self._backend, f"get the address of run {run_id}", lambda: self._backend.run_url(run_id)
        )

    def describe(self) -> str:
        """One line saying where to see the run: its URL, or the command that shows it."""
        run_id = self.outbox.run_id
        if run_id is None:
            return (
                f"run {self.id} exists only locally (its backend was unreachable); "
                f"`trackkit sync` creates it on {self._backend.describe()}"
            )
        url = self.url
        if url is not None:
            return f"run {run_id}: {url}"
        hint = call(self._backend, f"describe run {run_id}", lambda: self._backend.run_hint(run_id))
        where = f"run {run_id} on {self._backend.describe()}"
        return f"{where}; {hint}" if hint else where

    def _check_open(self) -> None:
        """(caller holds ``_lock``) Refuse a call on an ended run; report or raise failures."""
        if self.status is not None:
            if _lifecycle.terminating():
                # ended by a signal: wait (without the lock) for the process to exit as it would
                self._lock.release()
                try:
                    _lifecycle.wait_for_exit()
                finally:
                    self._lock.acquire()
            raise TrackkitError(f"run {self.id} has ended ({self.status}); start a new run to log")
        self.check_delivery(stacklevel=5)

    def check_delivery(self, stacklevel: int = 3) -> None:
        """Warn once about the writer's failures (the backend's, the journal's), or raise them
        in strict mode: what every log call checks before it queues."""
        writer = self._writer
        if writer.failure is not None or writer.journal_failure is not None:
            if writer.strict:
                if writer.failure is not None:
                    self._raise_failure("deliver logged data")
                raise JournalError(
                    redact(
                        f"the journal {writer.journal_failure_where} cannot be written (strict "
                        f"mode): {type(writer.journal_failure).__name__}: "
                        f"{writer.journal_failure}; what was logged before is kept in memory "
                        "and still sent"
                    )
                ) from (None if writer.journal_failure is None else scrub(writer.journal_failure))
            writer.report(stacklevel=stacklevel)

    def _raise_failure(self, what: str) -> None:
        error = self._writer.failure
        raise BackendError(
            redact(
                f"the {self._backend.describe()} backend failed to {what} (strict mode): "
                f"{type(error).__name__}: {error}; the data is kept in journal {self.journal.path}"
            )
        ) from (None if error is None else scrub(error))

    def _enqueue(self, ops: Sequence[jn.Entry]) -> int:
        """Queue operations (caller holds ``_lock``); return the queue's size for
        :meth:`_queue_full`, which the caller calls once it released the lock."""
        return self._sink.put_all(ops)

    def _queue_full(self, size: int) -> None:
        """Past the bound, wake the journal thread; past twice the bound, spill right here
        (every log call applies the same bound; call without holding ``_lock``)."""
        if size < self._bound:
            return
        if size >= 2 * self._bound:
            self._writer.spill(self.outbox, wait=True)
        else:
            self._writer.wake_journal()

    def make_room(self) -> None:
        """Apply the memory bound to what is queued now (see :meth:`_queue_full`)."""
        self._queue_full(self.outbox.queued())

    def backends(self) -> list[Backend]:
        """The backends the run is logged to: one, or each backend of a run on several (what
        is checked at the call, such as a capability, must hold on each)."""
        return [self._backend]

    def _limited_by(self) -> str:
        """Whose limits names and values are checked against, for messages."""
        names = [b.name for b in self.backends()]
        if len(names) == 1:
            return f"the {names[0]} backend"
        return f"one of the backends ({', '.join(names)})"

    def _claim(self, kind: str, names: Mapping[str, str]) -> None:
        """Record the names a call logged; warn once about each rename (stack: user code)."""
        for key, stored in self._keys[kind].claim(names).items():
            self.renames.setdefault(kind, {})[key] = stored
            kept = any(b.capabilities.artifacts for b in self.backends())
            where = RENAMES_ARTIFACT if kept else "Run.renames"
            warnings.warn(
                f"{kind} name {key!r} has characters {self._limited_by()} does not "
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
            # claimed at once: a concurrent call with another value is refused, not taken
            for stored, (_, text) in staged.items():
                self._params[stored] = text
        try:
            shortened = {s: self._keep_long_value("params", s, t) for s, (_, t) in staged.items()}
        except BaseException:
            with self._lock:
                for stored in staged:
                    self._params.pop(stored, None)
            raise
        with self._lock:
            ops = []
            for stored, (value, _) in staged.items():
                short = shortened[stored]
                kept = short if short is not None else value
                ops.append(jn.Op(jn.PARAM, stored, text=json.dumps(kept)))
            size = self._enqueue(ops)
        self._queue_full(size)
        self._claim("param", names)

    def _stored_text(self, stored: str, text: str, kind: str) -> str | None:
        limits = self._limits
        limit = limits.param_value_length if kind == "params" else limits.tag_value_length
        return normalize.truncate(text, limit, normalize.long_value_file(kind, stored))

    def _keep_long_value(self, kind: str, stored: str, text: str) -> str | None:
        """Store an over-long value whole as an artifact; return the truncated form to log."""
        short = self._stored_text(stored, text, kind)
        if short is not None:
            lacking = [b.name for b in self.backends() if not b.capabilities.artifacts]
            if lacking:
                raise InvalidInput(
                    f"{kind[:-1]} {stored!r} is {len(text)} characters, over the limit of "
                    f"{self._limited_by()}, and the {lacking[0]} backend cannot store the "
                    "whole value as an artifact; log it shorter"
                )
            self.log_text(text, normalize.long_value_file(kind, stored))
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
        if timestamp is None:
            ts = int(_time() * 1000)
        else:
            ts = normalize.timestamp_ms(key, timestamp, self._max_timestamp)
        if step is not None and (type(step) is not int or not 0 <= step <= self._max_step):
            step = normalize.step_value(key, step, self._max_step)
        writer = self._watch
        with self._lock:
            if (
                self.status is not None
                or writer.failure is not None
                or writer.journal_failure is not None
            ):
                self._check_open()
            last = self._steps.get(stored, -1)
            if step is None:
                if last >= self._max_step:
                    normalize.next_step(key, last, self._max_step)  # raises InvalidInput
                step = last + 1
            if step > last:
                self._steps[stored] = step
            size = self._sink.put((jn.METRIC, stored, number, step, ts, None))  # see jn.Entry
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
        if timestamp is None:
            ts = int(_time() * 1000)
        else:
            ts = normalize.timestamp_ms("*", timestamp, self._max_timestamp)
        explicit = None if step is None else normalize.step_value("*", step, self._max_step)
        names = self._keys["metric"].check_all(flat, "metric")
        points = [(names[key], normalize.metric_value(key, raw)) for key, raw in flat.items()]
        with self._lock:
            self._check_open()
            ops = []
            steps = {}  # every step first: a refused one leaves nothing half-done
            for stored, _ in points:
                last = self._steps.get(stored, -1)
                if explicit is None:
                    steps[stored] = normalize.next_step(stored, last, self._max_step)
            for stored, number in points:
                last = self._steps.get(stored, -1)
                at = steps[stored] if explicit is None else explicit
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
            InvalidInput: ``local_path`` does not exist, names a NUL character, or is (or
                holds) a FIFO, socket or device; ``path`` leaves the run.
            UnsupportedOperation: the backend stores no artifacts.
            JournalError: the service failed and no copy could be kept for later either.
        """
        directory = normalize.artifact_dir(path)
        if not isinstance(local_path, (str, os.PathLike)):
            raise InvalidInput(f"local_path must be a path, got {type(local_path).__name__}")
        name = os.fsdecode(os.fspath(local_path))
        if "\0" in name:
            raise InvalidInput(f"artifact {name!r} contains a NUL character")
        local = Path(name)
        if not local.exists():
            raise InvalidInput(f"artifact {str(local)!r} does not exist")
        special = _special_files(local)
        if special:
            raise InvalidInput(
                f"artifact {str(local)!r} is or holds something other than regular files and "
                f"directories (a FIFO, socket or device), which cannot be uploaded: "
                f"{', '.join(repr(s) for s in special[:5])}"
            )
        require(self._backend, "artifacts", "log_artifact", "log the data as params or tags")
        with self._lock:
            self._check_open()
        if self.outbox.run_id is not None and self._writer.failure is None:
            try:
                self._backend.log_artifact(self.id, local, directory)
                return
            except TrackkitError:
                raise
            except Exception as e:
                if self._writer.strict:
                    raise BackendError(redact(f"log artifact {local.name!r}: {e}")) from scrub(e)
                self._writer.record_failure(e, where=str(self.journal.path))
        try:
            text = self.outbox.keep(local)
        except (OSError, JournalError) as e:
            raise JournalError(
                redact(
                    f"artifact {local.name!r} of run {self.id} could not be uploaded "
                    f"({self._writer.failure}) and no copy could be kept for later in "
                    f"{self.journal.files_dir()} ({type(e).__name__}: {e}); log it again once "
                    "the backend is reachable"
                )
            ) from e
        with self._lock:
            size = self._enqueue([jn.Op(jn.ARTIFACT, directory, text=text)])
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
            call(
                self._backend,
                f"log table {where!r}",
                lambda: self._backend.log_table(self.id, table, where),
            )
            return
        self._log_generated(file, writers[suffix])

    # -- models -----------------------------------------------------------------------------
    def log_model(
        self,
        model: Any,
        name: str = "model",
        *,
        flavor: str | None = None,
        signature: Any = None,
        input_example: Any = None,
    ) -> ModelRef:
        """Store a model in the run, in a form ``load_model`` restores to the same object.

        Args:
            model: a scikit-learn estimator or pipeline, an xgboost model, or any other
                picklable object (e.g. a ``(vectorizer, model)`` pair).
            name: where the model is stored in the run.
            flavor: ``"sklearn"``, ``"xgboost"`` or ``"python"``; detected when omitted.
            signature: the model's input/output schema: a :class:`trackkit.Signature`, an
                MLflow ``ModelSignature`` or a dict; inferred from ``input_example`` (and the
                model's prediction on it) when omitted.
            input_example: a few rows of input (DataFrame, array, sparse matrix, dict or list
                of dicts), stored with the model.

        Returns:
            A ModelRef (with the signature and input example) to pass to
            ``Tracker.register_model`` or ``Tracker.load_model``.
        """
        from trackkit import models

        where = normalize.artifact_dir(name)
        if where is None:
            raise InvalidInput("log_model needs a non-empty name")
        if flavor:
            chosen = models.check_flavor(flavor)
            if chosen == "python":
                models.check_picklable(model)
        else:
            chosen = models.detect_flavor(model)
        checked = models.as_signature(signature)
        if input_example is not None:
            models.encode_example(input_example)  # refuse what cannot be stored, up front
            if checked is None:
                checked = models.infer_signature(input_example, model)
        return self.store_model(model, where, chosen, checked, input_example)

    def store_model(
        self,
        model: Any,
        where: str,
        flavor: str,
        signature: Signature | None,
        input_example: Any,
    ) -> ModelRef:
        """The second half of :meth:`log_model`, once it checked its arguments (``where``,
        the model's place; ``flavor`` chosen; ``signature`` resolved): store the model on the
        backend. A multi-backend run checks once, then stores on each backend's run."""
        import dataclasses

        from trackkit.backend import log_model

        require(self._backend, "models", "log_model", "pickle the model and use log_artifact")
        with self._lock:
            self._check_open()
        if self.outbox.run_id is None:
            # started while the service was unreachable: a model needs the run at the backend,
            # so have the writer create it now (and send what was logged) if the service is back
            self._writer.flush(self.outbox, self.tracker.end_timeout)
            if self.outbox.run_id is None:
                raise BackendError(
                    redact(
                        f"the {self._backend.describe()} backend failed to log model "
                        f"{where!r}: run {self.id} exists only locally (the backend was "
                        "unreachable when the run started, and still is), and a model needs "
                        "the service; log it once the backend is reachable (`trackkit sync` "
                        "delivers the rest of the run)"
                    )
                )
        ref = call(
            self._backend,
            f"log model {where!r}",
            lambda: log_model(
                self._backend, self.id, model, where, flavor, signature, input_example
            ),
        )
        return dataclasses.replace(ref, signature=signature, input_example=input_example)

    def logged(self) -> tuple[dict[str, str], dict[str, int]]:
        """The params logged so far (as text) and each metric's highest step (a resumed run's
        come from the backend)."""
        with self._lock:
            return dict(self._params), dict(self._steps)

    # -- sending ----------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Send everything logged so far and wait until the backend acknowledged it.

        Returns True once all of it was delivered, False if the service failed (the data stays
        in the journal and is retried) or ``timeout`` seconds passed (default: the tracker's
        ``end_timeout``). In strict mode a failure raises BackendError instead.
        """
        self._log_renames()
        wait = self.tracker.end_timeout if timeout is None else timeout
        delivered = self._writer.flush(self.outbox, wait)
        if not delivered and self._writer.failure is not None:
            if self._writer.strict:
                self._raise_failure("deliver logged data")
            self._writer.report()
        return delivered

    def _log_renames(self) -> None:
        count = sum(len(r) for r in self.renames.values())
        if count != self._renames_logged and any(b.capabilities.artifacts for b in self.backends()):
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
        if _lifecycle.terminating():  # a signal ends every run KILLED; this process exits
            _lifecycle.wait_for_exit()
        if self.status is not None:
            return
        self._log_renames()
        if not self.close(status):
            return
        self.settle(status)

    def settle(self, status: str, timeout: float | None = None) -> None:
        """The second half of :meth:`end`, once :meth:`close` queued the end: call ``on_end``,
        wait up to ``timeout`` (default: the tracker's ``end_timeout``) for the backend, and
        warn about what it has not acknowledged. A multi-backend run closes every backend's
        run first, then settles each, so no backend's end waits for another's."""
        for callback in self.on_end:
            try:
                callback(status)
            except Exception as e:  # ending the run matters more
                warnings.warn(
                    redact(f"run {self.id}: at its end, {type(e).__name__}: {e}"),
                    TrackkitWarning,
                    stacklevel=3,
                )
        self.await_end(status, timeout)

    def await_end(self, status: str, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` (default: the tracker's ``end_timeout``) for the backend to
        acknowledge everything, the end included; warn about what it has not (:meth:`settle`)."""
        wait = self.tracker.end_timeout if timeout is None else timeout
        try:
            delivered = self._writer.flush(self.outbox, wait)
        finally:
            _lifecycle.forget(self)
        if not (self._writer.strict and self._writer.failure is not None):
            # a journal that failed after the last logging call is still warned about once
            self._writer.report(stacklevel=5)
        if self.lost:
            warnings.warn(
                f"run {self.id} ended {status} without {self.lost} metric points: they were "
                "dropped while neither its journal file nor the backend could take them (the "
                "run is tagged trackkit.lost_points; see the earlier warnings for why)",
                TrackkitWarning,
                stacklevel=4,
            )
        refused = self.outbox.refused()
        if refused:
            warnings.warn(
                redact(
                    f"run {self.id}: the {self._backend.name} backend refused "
                    f"{len(refused)} operations for good (first: {refused[0][0][2]!r}, "
                    f"{refused[0][1]}); the journal file could not keep them, so they are "
                    "reported here and in the log only"
                ),
                TrackkitWarning,
                stacklevel=4,
            )
        if delivered:
            if self.rejected_at is not None:
                warnings.warn(
                    f"run {self.id}: the {self._backend.name} backend refused some operations "
                    f"for good; they are kept in {self.rejected_at} (table `rejected`, with "
                    "the reasons), everything else was delivered",
                    TrackkitWarning,
                    stacklevel=4,
                )
            return
        if self._writer.strict and self._writer.failure is not None:
            self._raise_failure(f"end run {self.id}")
        unkept = self._writer.keep(self.outbox) if self.outbox.in_memory else 0
        where = (
            f"{unkept} operations are only in memory (the journal file cannot be written): "
            "they are retried while this process runs and lost if it ends first"
            if unkept
            else f"it is kept in journal {self.journal.path}, retried while this process runs, "
            "and replayed by `trackkit sync`"
        )
        warnings.warn(
            f"run {self.id} ended {status}, but the {redact(self._backend.describe())} backend "
            f"has not acknowledged all of it yet; {where}",
            TrackkitWarning,
            stacklevel=4,
        )

    def close(self, status: str) -> bool:
        """Mark the run ended with ``status`` and queue its end, without waiting for delivery;
        False if it had ended already. (The signal handler's helper uses this, then waits.)"""
        with self._lock:
            if self.status is not None:
                return False
            self.status = status
            self.outbox.put(jn.Op(jn.END, ts=int(_time() * 1000), text=status))
            for callback in self.on_close:
                callback(status)
        return True
