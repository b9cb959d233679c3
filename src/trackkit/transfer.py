"""``trackkit.copy_runs``: runs, then registered models, from one backend to another.

:mod:`trackkit.reading` reads the source through its Tracker, :mod:`trackkit.copy` writes the
destination; this module puts them together, copies the registry (``models=True``) and shows
progress. See docs/copying.md.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trackkit.copy import SOURCE_VERSION, Copying, CopyResult, Destination, SourceRun
from trackkit.errors import InvalidInput, NotFound, TrackkitError

if TYPE_CHECKING:
    from trackkit.entities import ModelVersion, RegisteredModel, RunInfo
    from trackkit.tracker import Tracker


@dataclass(frozen=True)
class ModelCopyResult:
    """What was done with one registered model: versions created, skipped (copied before),
    and left out (with the reason in ``notes``)."""

    name: str
    created: tuple[int, ...] = ()  # the new versions' numbers in the destination
    skipped: tuple[int, ...] = ()  # source versions copied before
    aliases: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    error: str | None = None


@dataclass
class CopyReport:
    """What ``copy_runs`` did; iterating over it gives the runs' results."""

    runs: list[CopyResult] = field(default_factory=list)
    models: list[ModelCopyResult] = field(default_factory=list)
    dry_run: bool = False

    def __iter__(self) -> Iterator[CopyResult]:
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)

    def __getitem__(self, index: int) -> CopyResult:
        return self.runs[index]

    @property
    def failed(self) -> bool:
        return any(r.error for r in self.runs) or any(m.error for m in self.models)


class _Progress:
    """A rich progress bar (runs, points) on a terminal's stderr; nothing elsewhere."""

    def __init__(self, show: bool | None) -> None:
        self._bar: Any = None
        if show is None:
            show = sys.stderr.isatty()
        if not show:
            return
        try:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )
        except ImportError:  # the cli extra is not installed: no bar
            return
        # on stderr: stdout holds the report, and stays clean in a pipe
        self._bar = Progress(
            TextColumn("{task.description:>13}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        self.runs = self._bar.add_task("runs", total=None)
        self.points = self._bar.add_task("metric points", total=0)

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def total_runs(self, count: int) -> None:
        if self._bar is not None:
            self._bar.update(self.runs, total=count)

    def more_points(self, count: int) -> None:
        if self._bar is not None:
            total = self._bar.tasks[self.points].total or 0
            self._bar.update(self.points, total=total + count)

    def points_done(self, count: int) -> None:
        if self._bar is not None and count:
            self._bar.advance(self.points, count)

    def run_done(self) -> None:
        if self._bar is not None:
            self._bar.advance(self.runs, 1)


def copy_runs(
    source: Tracker | str | os.PathLike[str],
    destination: Tracker,
    *,
    experiments: str | Sequence[str] | None = None,
    run_ids: Sequence[str] | None = None,
    into: str | None = None,
    models: bool = False,
    dry_run: bool = False,
    progress: bool | None = False,
    include_system: bool = False,
    experiment: str | None = None,
    outside_files: bool = False,
) -> CopyReport:
    """Copy runs (and with ``models``, registered models) from one backend to another.

    Each run becomes a run of ``destination`` with its name, params, every metric point at
    its step with its timestamp, tags, status, artifacts (byte for byte), models (logged
    again, so they load on the destination) and parent link; it is tagged with its source
    (``trackkit.source.backend``, ``trackkit.source.run_id``, start and end times). Copying
    again creates nothing new, and finishes a copy that was interrupted.

    Args:
        source: a Tracker on any backend that can be read back (``trackkit.get_tracker(...)``),
            or the path of Neptune offline data (a ``.neptune`` directory; read from disk).
        destination: a Tracker on any backend.
        experiments: copy the runs of these source experiments (default: every experiment).
        run_ids: copy these runs only.
        into: put every run in this destination experiment (default: each run's own).
        models: also copy the registered models whose versions come from the copied runs,
            with their descriptions, version tags and aliases.
        dry_run: read everything, write nothing; the report says what would be done.
        progress: show a progress bar on stderr (None: when it is a terminal; needs rich).
        include_system: Neptune offline data only: also copy ``sys``, ``monitoring`` and
            ``source_code`` fields.
        experiment: the former name of ``into``.
        outside_files: Neptune offline data only: also copy the files a run's logs name outside
            the folder it was made in (only for data you trust; a TrackkitWarning names each
            one). For a neptune tracker source, pass ``outside_files=True`` to its
            ``get_tracker`` instead.

    Returns:
        A CopyReport; iterating over it gives one CopyResult per run. A run that fails is
        reported (``error``); the others are still copied.

    Raises:
        UnsupportedOperation: the source cannot be read back (it names the capability).
        NotFound: a run of ``run_ids`` or an experiment does not exist.
        InvalidInput: ``source`` is a path that holds no Neptune offline data.
    """
    if into is not None and experiment is not None and into != experiment:
        raise InvalidInput("pass the destination experiment once (into)")
    into = into or experiment
    if isinstance(experiments, str):
        experiments = [experiments]
    if isinstance(source, (str, os.PathLike)):
        return _copy_neptune_files(
            source, destination, experiments, run_ids, into, models, dry_run, progress,
            include_system, outside_files,
        )  # fmt: skip
    if include_system:
        raise InvalidInput("include_system applies to Neptune offline data (a path) only")
    if outside_files:
        raise InvalidInput(
            "outside_files applies to Neptune offline data read from a path; for a neptune "
            "tracker, pass outside_files=True to get_tracker('neptune', ...)"
        )
    from trackkit import reading

    if models:
        from trackkit.backend import require

        require(source.backend, "registry", "copying registered models", "copy without --models")
        require(
            destination.backend, "registry", "copying registered models", "copy without --models"
        )
    infos = reading.run_infos(source, experiments, run_ids)
    report = CopyReport(dry_run=dry_run)
    with _Progress(progress) as bar:
        writer = Destination(destination, into, dry_run=dry_run, on_points=bar.points_done)

        def read(info: RunInfo) -> SourceRun | CopyResult:
            try:
                return reading.source_run(source, info)
            except TrackkitError as e:
                return CopyResult(
                    source_id=info.id, run_id=None, name=info.name,
                    experiment=into or info.experiment, status="FAILED", params=0,
                    metric_points=0, tags=0, files=0,
                    error=f"reading the run failed: {type(e).__name__}: {e}",
                    outcome="failed", source_backend=source.backend.name,
                )  # fmt: skip

        _write_all([functools.partial(read, info) for info in infos], writer, bar, report)
        if models:
            report.models = copy_registered_models(source, writer, {i.id for i in infos})
    return report


def _write_all(
    reads: Sequence[Callable[[], SourceRun | CopyResult]],
    writer: Destination,
    bar: _Progress,
    report: CopyReport,
) -> None:
    """Write each run ``reads`` gives (or report its failure to read), in order.

    The next run is read, and its copy started (:meth:`Destination.start`: its run created
    with its params and tags), in another thread while this one's points, files and models are
    written (:meth:`Destination.finish`): what one waits on (the source, a journal, the
    backend's replies) overlaps with the other's work. Both threads write to the destination,
    each to its own run.
    """
    bar.total_runs(len(reads))

    def prepare(read: Callable[[], SourceRun | CopyResult]) -> tuple[int, CopyResult | Copying]:
        record = read()
        if isinstance(record, CopyResult):
            return 0, record
        return record.points, writer.start(record)

    with ThreadPoolExecutor(1, "trackkit-copy-read") as pool:
        ahead = pool.submit(prepare, reads[0]) if reads else None
        for k in range(len(reads)):
            assert ahead is not None
            points, begun = ahead.result()
            ahead = pool.submit(prepare, reads[k + 1]) if k + 1 < len(reads) else None
            bar.more_points(points)
            if isinstance(begun, CopyResult):  # copied before, a dry run, or failed
                bar.points_done(points)
                report.runs.append(begun)
            else:
                report.runs.append(writer.finish(begun))  # it counts its points as it goes
            bar.run_done()


def _copy_neptune_files(
    source: str | os.PathLike[str],
    destination: Tracker,
    experiments: Sequence[str] | None,
    run_ids: Sequence[str] | None,
    into: str | None,
    models: bool,
    dry_run: bool,
    progress: bool | None,
    include_system: bool,
    outside_files: bool,
) -> CopyReport:
    from trackkit.backends.neptune.export import source_runs

    if experiments:
        raise InvalidInput(
            "experiments selects runs of a backend; with Neptune offline files, select runs "
            "by id (run_ids)"
        )
    if models:
        raise InvalidInput(
            "Neptune offline files hold no registered models (Neptune's registry cannot be "
            "used offline); copy without models"
        )
    report = CopyReport(dry_run=dry_run)
    with _Progress(progress) as bar:
        writer = Destination(destination, into, dry_run=dry_run, on_points=bar.points_done)
        records = source_runs(Path(source), run_ids, include_system, outside_files)
        _write_all([functools.partial(lambda r: r, r) for r in records], writer, bar, report)
    return report


# -- the registry ---------------------------------------------------------------------------------
def copy_registered_models(
    source: Tracker, writer: Destination, run_ids: set[str]
) -> list[ModelCopyResult]:
    """Copy every registered model of ``source`` with a version from one of ``run_ids``: each
    such version (description, tags) points at the copy of its model, then the aliases and the
    model's description and tags (where the destination's registered models hold tags; else
    a note names them). Versions copied before (tag ``trackkit.source.model_version``) are
    skipped; versions from other runs are left out, and named in the notes."""
    results = []
    for model in source.list_registered_models():
        versions = source.list_model_versions(model.name)
        if not any(v.run_id in run_ids for v in versions):
            continue
        try:
            results.append(_copy_model(source, writer, model, versions, run_ids))
        except TrackkitError as e:
            results.append(ModelCopyResult(name=model.name, error=f"{type(e).__name__}: {e}"))
    return results


def _copy_model(
    source: Tracker,
    writer: Destination,
    model: RegisteredModel,
    versions: list[ModelVersion],
    run_ids: set[str],
) -> ModelCopyResult:
    dest = writer.tracker
    backend = source.backend.name
    notes: list[str] = []
    try:
        existing = dest.list_model_versions(model.name)
    except NotFound:
        existing = []
    copied = {v.tags.get(SOURCE_VERSION): v.version for v in existing if v.tags.get(SOURCE_VERSION)}
    numbers: dict[int, int] = {}  # source version -> destination version
    created: list[int] = []
    skipped: list[int] = []
    for version in versions:
        mark = f"{backend}:{model.name}/{version.version}"
        if mark in copied:
            numbers[version.version] = copied[mark]
            skipped.append(version.version)
            continue
        if version.run_id not in run_ids:
            notes.append(
                f"version {version.version} not copied: its run "
                f"{version.run_id or '(none)'} is not among the copied runs"
            )
            continue
        if writer.dry_run:
            created.append(version.version)  # the source's number: nothing is created
            continue
        ref = writer.models.get((backend, version.source))
        if ref is None:
            notes.append(
                f"version {version.version} not copied: its model {version.source} was not "
                f"found among the models of run {version.run_id}"
            )
            continue
        new = dest.register_model(ref, model.name, description=version.description)
        numbers[version.version] = new.version
        created.append(new.version)
        for key, value in sorted(version.tags.items()):
            dest.set_model_version_tag(model.name, new.version, key, value)
        dest.set_model_version_tag(model.name, new.version, SOURCE_VERSION, mark)
    aliases = []
    if not writer.dry_run:
        for alias, number in sorted(model.aliases.items()):
            if number in numbers:
                dest.set_model_alias(model.name, alias, numbers[number])
                aliases.append(alias)
            else:
                notes.append(f"alias {alias!r} not copied: its version {number} was not copied")
        if model.description and numbers:
            dest.update_registered_model(model.name, model.description)
    if model.tags and not dest.backend.capabilities.registered_model_tags:
        notes.append(
            f"the registered model's tags ({', '.join(sorted(model.tags))}) are not copied: "
            f"the {dest.backend.name} backend's registered models hold no tags of their own"
        )
    elif model.tags and numbers and not writer.dry_run:
        for key, value in sorted(model.tags.items()):
            dest.set_registered_model_tag(model.name, key, value)
    return ModelCopyResult(
        name=model.name,
        created=tuple(created),
        skipped=tuple(skipped),
        aliases=tuple(aliases),
        notes=tuple(notes),
    )
