"""Copying runs: source runs, as generic records, written to any backend through a Tracker.

A reader turns what another tool stored into :class:`SourceRun` records (today Neptune's
offline logs: ``trackkit.backends.neptune``, which ``trackkit.copy_runs`` and the
``trackkit copy`` command use); :func:`write_runs` creates one destination run per record.
It knows nothing of where the records came from. See docs/neptune.md, "Moving data out".
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trackkit.errors import InvalidInput, TrackkitError

if TYPE_CHECKING:
    from trackkit.run import Run
    from trackkit.tracker import Tracker

#: writes one stored file to the given local path
FileSource = Callable[[Path], None]
#: the statuses a copied run keeps; any other (a run that never ended) becomes KILLED
ENDED = ("FINISHED", "FAILED", "KILLED")


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
    #: the source's times; the destination run keeps its own (a Tracker sets them)
    start_time: datetime | None = None
    end_time: datetime | None = None
    #: what the reader renamed, skipped or could not read, one line each
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CopyResult:
    """What was done with one source run."""

    source_id: str
    run_id: str | None  # the run created in the destination
    name: str
    experiment: str
    status: str
    params: int
    metric_points: int
    tags: int
    files: int
    notes: tuple[str, ...] = ()  # what was renamed, skipped or could not be read
    error: str | None = None


def _param_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _write(
    run: Run,
    params: dict[str, Any],
    metrics: dict[str, list[tuple[int, float, int | None]]],
    files: dict[str, FileSource],
    notes: list[str],
) -> None:
    """Log a source run into ``run``; a name the destination refuses is noted and left out."""
    for key, value in list(params.items()):
        try:
            run.log_param(key, _param_value(value))
        except InvalidInput as e:
            notes.append(f"param {key!r} not copied: {e}")
            del params[key]
    for key, points in list(metrics.items()):
        try:
            for step, value, stamp in points:
                run.log_metric(key, value, step=step, timestamp=stamp)
        except InvalidInput as e:  # refused at its first point: none of it was logged
            notes.append(f"metric {key!r} not copied: {e}")
            del metrics[key]
    with tempfile.TemporaryDirectory(prefix="trackkit-copy-") as tmp:
        for i, (path, source) in enumerate(sorted(files.items())):
            directory, _, name = path.rpartition("/")
            local = Path(tmp) / str(i) / name
            local.parent.mkdir()
            source(local)
            run.log_artifact(local, directory or None)
            local.unlink()


def write_run(source: SourceRun, destination: Tracker, experiment: str | None = None) -> CopyResult:
    """Create one run in ``destination`` holding ``source``; ``source`` is left unchanged.

    The new run has the source's name, params, every metric point at its step (with its
    timestamp), tags and files; its status is kept, and a run that never ended is ended
    ``KILLED``. If writing fails, the run is ended ``FAILED`` and the error is reported.
    """
    params, tags, files = dict(source.params), dict(source.tags), dict(source.files)
    metrics = {k: list(v) for k, v in source.metrics.items()}
    notes = list(source.notes)
    status = source.status if source.status in ENDED else "KILLED"
    if status != source.status:
        notes.append(f"the run was still {source.status}; it is ended KILLED")
    target = experiment or source.experiment
    run: Run | None = None
    error = None
    try:
        run = destination.start_run(experiment=target, name=source.name, tags=tags)
        _write(run, params, metrics, files, notes)
        run.end(status)
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
        if run is not None and not run.ended:
            try:
                run.end("FAILED")
            except TrackkitError as end_error:
                notes.append(f"could not end the destination run: {end_error}")
    return CopyResult(
        source_id=source.id,
        run_id=None if run is None else run.id,
        name=source.name,
        experiment=run.experiment if run is not None else (target or ""),
        status=status if error is None else "FAILED",
        params=len(params),
        metric_points=sum(len(p) for p in metrics.values()),
        tags=len(tags),
        files=len(files),
        notes=tuple(notes),
        error=error,
    )


def write_runs(
    sources: Iterable[SourceRun], destination: Tracker, experiment: str | None = None
) -> list[CopyResult]:
    """:func:`write_run` for each source run in turn: one that fails does not stop the others.

    Args:
        sources: the runs to copy.
        destination: a Tracker on any backend, e.g. ``trackkit.get_tracker("mlflow")``.
        experiment: the destination experiment; default: each run's own, else the tracker's
            default.
    """
    return [write_run(source, destination, experiment) for source in sources]
