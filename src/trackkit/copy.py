"""Copying runs, the destination side: source runs, as generic records, written through a Tracker.

A reader turns what another backend or tool stored into :class:`SourceRun` records (any backend
through its read side: :mod:`trackkit.reading`; Neptune's offline files:
``trackkit.backends.neptune``). A :class:`Destination` writes each one as a run of its tracker,
knowing nothing of where it came from, and never twice: every copy is tagged with its source
(``trackkit.source.backend``, ``trackkit.source.run_id``) and with ``trackkit.copy``,
``partial`` until all of it was written, then ``complete``. Copying again skips a complete
copy and finishes a partial one. See docs/copying.md.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trackkit import normalize
from trackkit.backend import call
from trackkit.backend import end_run as end_backend_run
from trackkit.entities import Metric
from trackkit.errors import InvalidInput, NotFound, TrackkitError
from trackkit.search import epoch_ms

if TYPE_CHECKING:
    from trackkit.entities import ModelRef, RunInfo
    from trackkit.models import Package
    from trackkit.run import Run
    from trackkit.tracker import Tracker

#: writes one stored file to the given local path
FileSource = Callable[[Path], None]
#: the statuses a copied run keeps; any other (a run that never ended) becomes KILLED
ENDED = ("FINISHED", "FAILED", "KILLED")

#: the tags every copy carries
SOURCE_BACKEND = "trackkit.source.backend"
SOURCE_RUN = "trackkit.source.run_id"
SOURCE_EXPERIMENT = "trackkit.source.experiment"
SOURCE_PARENT = "trackkit.source.parent_id"
SOURCE_START = "trackkit.source.start_time"
SOURCE_END = "trackkit.source.end_time"
#: ``partial`` while a copy is written, ``complete`` once all of it was
COPY_STATE = "trackkit.copy"
#: the tag of a copied registered model version: ``<backend>:<name>/<version>`` of its source
SOURCE_VERSION = "trackkit.source.model_version"
#: every run of an experiment, as far as ``search_runs`` goes
MAX_RUNS = 50_000


def file_source(path: Path) -> FileSource:
    """A file source that copies the local file ``path``."""

    def copy(target: Path) -> None:
        shutil.copyfile(path, target)

    return copy


def bytes_source(content: bytes) -> FileSource:
    """A file source that writes ``content``."""

    def write(target: Path) -> None:
        target.write_bytes(content)

    return write


@dataclass(frozen=True)
class SourceModel:
    """A model logged in a source run: ``name`` is where it is in the run."""

    name: str
    uri: str
    load: Callable[[], Package]


@dataclass
class SourceRun:
    """One run to copy, as its reader found it."""

    id: str  # the run's id where it comes from
    name: str
    experiment: str | None  # None: the destination's default (or the one asked for)
    status: str
    params: dict[str, Any] = field(default_factory=dict)
    #: key -> [(step, value, timestamp_ms or None)]
    metrics: dict[str, list[tuple[int, float, int | None]]] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    #: artifact path (``dir/name``) -> its content
    files: dict[str, FileSource] = field(default_factory=dict)
    #: the source's times: the copy's own where the destination keeps run times
    #: (``run_times``), and the tags ``trackkit.source.start_time``/``end_time`` everywhere
    start_time: datetime | None = None
    end_time: datetime | None = None
    #: what the reader renamed, skipped or could not read, one line each
    notes: list[str] = field(default_factory=list)
    #: the source backend's name (``trackkit.source.backend``)
    backend: str = ""
    #: the parent run's id in the source, for a nested run
    parent_id: str | None = None
    #: the models logged in the run, copied with ``log_model`` so they load on the destination
    models: list[SourceModel] = field(default_factory=list)

    @property
    def points(self) -> int:
        return sum(len(p) for p in self.metrics.values())


@dataclass(frozen=True)
class CopyResult:
    """What was done with one source run."""

    source_id: str
    run_id: str | None  # the run in the destination (None: none was created)
    name: str
    experiment: str
    status: str
    params: int
    metric_points: int
    tags: int
    files: int
    notes: tuple[str, ...] = ()  # what was renamed, skipped or could not be read
    error: str | None = None
    #: ``copied``; ``resumed`` (an unfinished copy was finished); ``skipped`` (copied before);
    #: with ``dry_run``: ``would copy``, ``would resume``; ``failed``
    outcome: str = "copied"
    models: int = 0
    source_backend: str = ""


def _param_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def source_times(source: SourceRun) -> tuple[datetime | None, datetime | None]:
    """The start and end times a copy of ``source`` keeps.

    The source run's own, unless it is itself a copy whose tags hold the times of the run it
    was copied from (``trackkit.source.start_time``/``end_time``): a backend that cannot set
    run times (W&B, Neptune) gave it the time of that copy, so the tags are the real ones, and
    a copy of a copy (MLflow to W&B and back) keeps the first run's times.
    """
    start = _parse_time(source.tags.get(SOURCE_START)) or source.start_time
    end = _parse_time(source.tags.get(SOURCE_END)) or source.end_time
    return start, end


def _safe_model_name(name: str) -> str:
    return name.replace("/", "-")


@dataclass
class Copying:
    """A copy under way, between :meth:`Destination.start` and :meth:`Destination.finish`:
    its run holds its params and tags; what remains to write is here."""

    source: SourceRun
    target: str  # the destination experiment
    run: Run | None
    resumed: bool
    status: str  # the status the copy ends with
    params: dict[str, Any]
    metrics: dict[str, list[tuple[int, float, int | None]]]
    files: dict[str, FileSource]
    notes: list[str]
    #: (step, timestamp) of the points an unfinished copy holds already, by metric
    have: dict[str, Counter[tuple[int, int]]] = field(default_factory=dict)
    #: the source's end time (ms), set once the run ended, where the destination keeps it
    end_time: int | None = None
    models: int = 0


class Destination:
    """The destination side of a copy: finds earlier copies, writes runs, maps source ids.

    Args:
        tracker: a Tracker on any backend.
        experiment: put every run in this experiment (default: each run's own, else the
            tracker's default).
        dry_run: write nothing; report what would be done.
        on_points: called with a number of metric points each time so many were written.
    """

    def __init__(
        self,
        tracker: Tracker,
        experiment: str | None = None,
        dry_run: bool = False,
        on_points: Callable[[int], None] | None = None,
    ) -> None:
        self.tracker = tracker
        self.experiment = experiment
        self.dry_run = dry_run
        self.on_points = on_points or (lambda n: None)
        self._found: dict[str, dict[tuple[str, str], list[RunInfo]]] = {}
        #: (source backend, source run id) -> the destination run id
        self.run_ids: dict[tuple[str, str], str] = {}
        #: (source backend, source model URI) -> the model in the destination
        self.models: dict[tuple[str, str], ModelRef] = {}

    # -- earlier copies ------------------------------------------------------------------------
    def _earlier(self, experiment: str, backend: str, source_id: str) -> list[RunInfo]:
        if experiment not in self._found:
            index: dict[tuple[str, str], list[RunInfo]] = {}
            if self.tracker.backend.capabilities.search_runs:
                try:
                    runs = self.tracker.search_runs(experiment, max_results=MAX_RUNS)
                except NotFound:  # no such experiment yet: nothing was copied into it
                    runs = []
                for info in runs:
                    key = (info.tags.get(SOURCE_BACKEND, ""), info.tags.get(SOURCE_RUN, ""))
                    if all(key):
                        index.setdefault(key, []).append(info)
            self._found[experiment] = index
        return self._found[experiment].get((backend, source_id), [])

    def _target(self, source: SourceRun) -> str:
        from trackkit.tracker import DEFAULT_EXPERIMENT

        return (
            self.experiment
            or source.experiment
            or os.environ.get("TRACKKIT_EXPERIMENT")
            or DEFAULT_EXPERIMENT
        )

    def _map_models(self, source: SourceRun, run_id: str) -> int:
        """Remember the destination's copy of each of the source run's models; their count."""
        if not source.models or not self.tracker.backend.capabilities.models:
            return 0
        backend = self.tracker.backend
        there = {
            r.name: r
            for r in call(
                backend, f"list the models of run {run_id}", lambda: backend.list_models(run_id)
            )
        }
        for model in source.models:
            ref = there.get(model.name) or there.get(_safe_model_name(model.name))
            if ref is not None:
                self.models[(source.backend, model.uri)] = ref
        return sum(1 for m in source.models if (source.backend, m.uri) in self.models)

    # -- writing -------------------------------------------------------------------------------
    def write(self, source: SourceRun) -> CopyResult:
        """Copy one run, unless it was copied before; ``source`` is left unchanged.

        The new run has the source's name, params, every metric point at its step (with its
        timestamp), tags, files and models; its status is kept, and a run that never ended is
        ended ``KILLED``. Its start and end times are the source's where the destination keeps
        run times (``run_times``); they are also in the tags ``trackkit.source.start_time`` and
        ``trackkit.source.end_time``. If writing fails, the run is ended ``FAILED``, stays
        tagged ``trackkit.copy=partial`` (a later copy finishes it) and the error is reported.

        :meth:`start` then :meth:`finish`, in one go.
        """
        begun = self.start(source)
        return begun if isinstance(begun, CopyResult) else self.finish(begun)

    def start(self, source: SourceRun) -> CopyResult | Copying:
        """The first half of :meth:`write`: find an earlier copy, then start the run (or
        resume the unfinished copy) with its params and tags, delivered before any of its data.

        Returns the result at once for a run copied before, a dry run or a failure; else the
        copy under way, for :meth:`finish`. A copier may start the next run while it finishes
        this one (``trackkit.copy_runs`` does, from another thread).
        """
        target = self._target(source)
        notes = list(source.notes)
        earlier = self._earlier(target, source.backend, source.id) if source.backend else []
        complete = [r for r in earlier if r.tags.get(COPY_STATE) == "complete"]
        partial = [r for r in earlier if r.tags.get(COPY_STATE) != "complete"]
        if complete:
            done = complete[0]
            self.run_ids[(source.backend, source.id)] = done.id
            return self._result(
                source,
                target,
                run_id=done.id,
                status=done.status,
                notes=notes,
                outcome="skipped",
                models=self._map_models(source, done.id),
            )
        caps = self.tracker.backend.capabilities
        resume = partial[0] if partial and caps.resume and caps.metric_history else None
        if partial and resume is None:
            notes.append(
                f"an unfinished earlier copy ({', '.join(r.id for r in partial)}) cannot be "
                f"finished on the {self.tracker.backend.name} backend (it cannot resume runs or "
                "read metric history): the run is copied again; delete the unfinished one"
            )
        if self.dry_run:
            return self._result(
                source,
                target,
                run_id=None if resume is None else resume.id,
                status=source.status,
                notes=notes,
                outcome="would resume" if resume is not None else "would copy",
                models=len(source.models),
            )
        return self._start(source, target, resume, notes)

    def _result(
        self,
        source: SourceRun,
        target: str,
        *,
        run_id: str | None,
        status: str,
        notes: list[str],
        outcome: str,
        models: int = 0,
        error: str | None = None,
        copying: Copying | None = None,
    ) -> CopyResult:
        """The result for ``source``; counts from what a copy under way kept, else the source."""
        params = source.params if copying is None else copying.params
        metrics = source.metrics if copying is None else copying.metrics
        files = source.files if copying is None else copying.files
        return CopyResult(
            source_id=source.id,
            run_id=run_id,
            name=source.name,
            experiment=target,
            status=status,
            params=len(params),
            metric_points=sum(len(p) for p in metrics.values()),
            tags=len(source.tags),
            files=len(files),
            notes=tuple(notes),
            error=error,
            outcome=outcome,
            models=models,
            source_backend=source.backend,
        )

    def _parent(self, source: SourceRun, target: str, notes: list[str]) -> str | None:
        if not source.parent_id:
            return None
        parent = self.run_ids.get((source.backend, source.parent_id))
        if parent is None:
            done = [
                r
                for r in self._earlier(target, source.backend, source.parent_id)
                if r.tags.get(COPY_STATE) == "complete"
            ]
            parent = done[0].id if done else None
        if parent is None:
            notes.append(
                f"its parent run {source.parent_id} was not copied: the link is kept only in "
                f"the tag {SOURCE_PARENT}"
            )
        elif not self.tracker.backend.capabilities.nested_runs:
            notes.append(
                f"the {self.tracker.backend.name} backend has no nested runs: the parent is "
                f"named in the tag {SOURCE_PARENT} only"
            )
            parent = None
        return parent

    def _start(
        self, source: SourceRun, target: str, resume: RunInfo | None, notes: list[str]
    ) -> CopyResult | Copying:
        tags = dict(source.tags)
        if source.backend:
            tags.update({SOURCE_BACKEND: source.backend, SOURCE_RUN: source.id})
            if source.experiment:
                tags[SOURCE_EXPERIMENT] = source.experiment
        started, ended = source_times(source)
        for key, moment in ((SOURCE_START, started), (SOURCE_END, ended)):
            text = _iso(moment)
            if text is not None:
                tags[key] = text
        if source.parent_id:
            tags[SOURCE_PARENT] = source.parent_id
        tags[COPY_STATE] = "partial"
        status = source.status if source.status in ENDED else "KILLED"
        if status != source.status:
            notes.append(f"the run was still {source.status}; it is ended KILLED")
        keeps_times = self.tracker.backend.capabilities.run_times
        copying = Copying(
            source=source,
            target=target,
            run=None,
            resumed=resume is not None,
            status=status,
            params=dict(source.params),
            metrics={k: list(v) for k, v in source.metrics.items()},
            files=dict(source.files),
            notes=notes,
            end_time=epoch_ms(ended) if keeps_times else None,
        )
        try:
            if resume is not None:
                copying.run = self.tracker.start_run(run_id=resume.id)
                copying.run.set_tags(tags)
                copying.have = self._stored_points(resume.id)
            else:
                copying.run = self.tracker.start_run(
                    experiment=target,
                    name=source.name,
                    tags=tags,
                    parent=self._parent(source, target, notes),
                    start_time=epoch_ms(started) if keeps_times else None,
                )
            self.run_ids[(source.backend, source.id)] = copying.run.id
            self._params(copying.run, copying.params, notes)
            if copying.run.outbox.run_id is not None:
                # what names the copy (its source, ``partial``) reaches the backend before any
                # of its data, which then goes straight to the backend (see _metrics)
                copying.run.flush()
        except Exception as e:
            return self._failed(copying, e)
        return copying

    def finish(self, copying: Copying) -> CopyResult:
        """The second half of :meth:`write`: the metric points, files and models of a copy
        :meth:`start` began, then ``trackkit.copy=complete`` and the run's end."""
        run, source, notes = copying.run, copying.source, copying.notes
        assert run is not None
        error = None
        try:
            self._files(run, copying.files)
            copying.models = self._models(run, source, copying.resumed, notes)
            if (copying.files or source.models) and run.outbox.run_id is not None:
                run.flush()  # what they left queued is written before the copy is complete
            # the last batch of points also marks the copy complete: one write less a run
            if not self._metrics(run, copying.metrics, copying.have, notes, self._complete()):
                run.set_tag(COPY_STATE, "complete")
            run.end(copying.status)
            if not run.delivered:
                error = (
                    f"the {self.tracker.backend.describe()} backend has not acknowledged all of "
                    "the copy yet; copy again to finish it"
                )
            elif copying.end_time is not None:
                backend, end = self.tracker.backend, copying.end_time
                call(
                    backend,
                    f"set the end time of run {run.id}",
                    lambda: end_backend_run(backend, run.id, copying.status, end),
                )
        except Exception as e:
            return self._failed(copying, e)
        return self._result(
            source,
            run.experiment,
            run_id=run.id,
            status=copying.status if error is None else "FAILED",
            notes=notes,
            outcome="failed" if error else ("resumed" if copying.resumed else "copied"),
            models=copying.models,
            error=error,
            copying=copying,
        )

    def _failed(self, copying: Copying, e: Exception) -> CopyResult:
        """End a copy that failed ``FAILED`` (it stays ``partial``); its result."""
        run, notes = copying.run, copying.notes
        if run is not None and not run.ended:
            try:
                run.end("FAILED")
            except TrackkitError as end_error:
                notes.append(f"could not end the destination run: {end_error}")
        return self._result(
            copying.source,
            copying.target if run is None else run.experiment,
            run_id=None if run is None else run.id,
            status="FAILED",
            notes=notes,
            outcome="failed",
            models=copying.models,
            error=f"{type(e).__name__}: {e}",
            copying=copying,
        )

    def _stored_points(self, run_id: str) -> dict[str, Counter[tuple[int, int]]]:
        """(step, timestamp) of every point an unfinished copy holds already, by metric."""
        info = self.tracker.get_run(run_id)
        return {
            key: Counter(
                (p.step, p.timestamp) for p in self.tracker.get_metric_history(run_id, key)
            )
            for key in info.metrics
        }

    @staticmethod
    def _params(run: Run, params: dict[str, Any], notes: list[str]) -> None:
        """Log the params; a name the destination refuses is noted and left out."""
        try:
            run.log_params({k: _param_value(v) for k, v in params.items()})
            return
        except InvalidInput:
            pass  # find which, one by one
        for key, value in list(params.items()):
            try:
                run.log_param(key, _param_value(value))
            except InvalidInput as e:
                notes.append(f"param {key!r} not copied: {e}")
                del params[key]

    def _complete(self) -> list[tuple[str, str]]:
        """The tag that marks a copy complete, as the last batch of points can carry it: none
        where the destination would rename it (the Run sets it then)."""
        try:
            stored = normalize.KeyRules(self.tracker.backend.limits).check(COPY_STATE, "tag")
        except InvalidInput:
            return []
        return [(COPY_STATE, "complete")] if stored == COPY_STATE else []

    def _metrics(
        self,
        run: Run,
        metrics: dict[str, list[tuple[int, float, int | None]]],
        have: dict[str, Counter[tuple[int, int]]],
        notes: list[str],
        last_tags: Sequence[tuple[str, str]] = (),
    ) -> bool:
        """Log every point (skipping those an unfinished copy holds already); whether the last
        batch carried ``last_tags`` too.

        Points go to the backend's ``log_batch`` directly, in batches of its limits, from
        this thread: a copy can always be done again, so they need no journal (a failure
        fails the run, and copying again finishes it). The run's own queue was delivered
        before (:meth:`_start`), so they follow its tags. A run the backend has not created
        yet takes them through the Run instead.
        """
        backend = self.tracker.backend
        limits = backend.limits
        rules = normalize.KeyRules(limits)
        direct = run.outbox.run_id is not None
        size = max(1, min(limits.batch_metrics or 1000, limits.batch_total or 1000))
        batch: list[Metric] = []  # at most one batch more than sent: the last one is held

        def send(count: int, tags: Sequence[tuple[str, str]] = ()) -> None:
            points, kept = batch[:count], list(tags)
            del batch[:count]
            call(
                backend,
                f"log {len(points)} metric points to run {run.id}",
                lambda: backend.log_batch(run.id, [], points, kept),
            )
            self.on_points(len(points))

        now = int(time.time() * 1000)
        for key, points in list(metrics.items()):
            try:
                stored = rules.check(key, "metric")
            except InvalidInput as e:
                notes.append(f"metric {key!r} not copied: {e}")
                del metrics[key]
                continue
            if stored != key:
                notes.append(f"metric {key!r} is stored as {stored!r}")
            there = have.get(stored, Counter())
            for step, value, stamp in points:
                if stamp is not None and there[(step, stamp)] > 0:
                    there[(step, stamp)] -= 1
                    self.on_points(1)
                    continue
                if not direct:
                    run.log_metric(key, value, step=step, timestamp=stamp)
                    self.on_points(1)
                    continue
                at = now if stamp is None else stamp
                if not 0 <= step <= limits.max_step:
                    step = normalize.step_value(key, step, limits.max_step)
                if limits.max_timestamp is not None and not 0 <= at <= limits.max_timestamp:
                    at = normalize.timestamp_ms(key, at, limits.max_timestamp)
                number = value if type(value) is float else normalize.metric_value(key, value)
                batch.append(Metric(stored, number, step, at))
                if len(batch) > size:
                    send(size)
        room = min(size, limits.batch_total - len(last_tags))
        if not (batch and last_tags and room > 0 and len(last_tags) <= limits.batch_params_tags):
            if batch:
                send(len(batch))
            return False
        while len(batch) > room:
            send(room)
        send(len(batch), last_tags)
        return True

    @staticmethod
    def _files(run: Run, files: dict[str, FileSource]) -> None:
        with tempfile.TemporaryDirectory(prefix="trackkit-copy-") as tmp:
            for i, (path, source) in enumerate(sorted(files.items())):
                directory, _, name = path.rpartition("/")
                local = Path(tmp) / str(i) / name
                local.parent.mkdir()
                source(local)
                run.log_artifact(local, directory or None)
                local.unlink()

    def _models(self, run: Run, source: SourceRun, resumed: bool, notes: list[str]) -> int:
        """Log each model again, so it loads on the destination; the count copied."""
        if not source.models:
            return 0
        if not self.tracker.backend.capabilities.models:
            raise self.tracker.backend.unsupported(
                f"models (run {source.id} has {len(source.models)})", "copy without them"
            )
        if resumed:
            self._map_models(source, run.id)
        count = 0
        for model in source.models:
            if (source.backend, model.uri) in self.models:
                count += 1
                continue
            package = model.load()
            log = functools.partial(
                run.log_model,
                package.model,
                flavor=package.flavor,
                signature=package.signature,
                input_example=package.input_example,
            )
            try:
                normalize.artifact_dir(model.name)
                ref = log(model.name)
            except InvalidInput:
                if "/" not in model.name:
                    raise
                name = _safe_model_name(model.name)
                notes.append(f"model {model.name!r} is named {name!r} in the destination")
                ref = log(name)
            self.models[(source.backend, model.uri)] = ref
            count += 1
        return count


def write_run(source: SourceRun, destination: Tracker, experiment: str | None = None) -> CopyResult:
    """Copy one run into ``destination`` (see :meth:`Destination.write`)."""
    return Destination(destination, experiment).write(source)


def write_runs(
    sources: Iterable[SourceRun], destination: Tracker, experiment: str | None = None
) -> list[CopyResult]:
    """Copy each source run in turn: one that fails does not stop the others.

    Args:
        sources: the runs to copy.
        destination: a Tracker on any backend, e.g. ``trackkit.get_tracker("mlflow")``.
        experiment: the destination experiment; default: each run's own, else the tracker's
            default.
    """
    writer = Destination(destination, experiment)
    return [writer.write(source) for source in sources]
