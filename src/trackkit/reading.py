"""Runs of any backend read back, through a Tracker, as the records ``trackkit.copy`` writes.

Everything goes through the read side of the Backend contract (``search_runs``/``get_run``,
``get_metric_histories``, ``list_artifacts``/``download_artifacts``, ``list_models``), so any
backend that declares it can be copied from. What a source cannot give is named: a missing
required capability raises UnsupportedOperation before anything is copied; a missing optional
one (artifacts, models) becomes a note on each run. See docs/copying.md.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from trackkit import normalize
from trackkit.backend import call, require
from trackkit.copy import FileSource, SourceModel, SourceRun
from trackkit.errors import NotFound

if TYPE_CHECKING:
    from trackkit.entities import ModelRef, RunInfo
    from trackkit.models import Package
    from trackkit.tracker import Tracker

#: MLflow's system tags that name the run itself or its links: the destination sets its own
IDENTITY_TAGS = frozenset({"mlflow.runName", "mlflow.parentRunId", "mlflow.log-model.history"})
#: every run of an experiment, as far as ``search_runs`` goes
MAX_RUNS = 50_000


def check_source(tracker: Tracker) -> None:
    """Raise UnsupportedOperation naming what cannot be copied from ``tracker``'s backend."""
    backend = tracker.backend
    require(backend, "search_runs", "reading runs to copy them", "copy from another backend")
    require(
        backend,
        "metric_history",
        "reading every metric point (get_metric_history) to copy runs",
        "log the points again from your own records",
    )


def run_infos(
    tracker: Tracker,
    experiments: Sequence[str] | None = None,
    run_ids: Sequence[str] | None = None,
) -> list[RunInfo]:
    """The runs to copy, oldest first, each parent before its children.

    ``run_ids`` picks runs by id; ``experiments``, every run of each (default: every
    experiment, which needs ``list_experiments``). Both: the runs of ``run_ids`` in them.

    Raises:
        NotFound: a run of ``run_ids`` does not exist (or is in none of ``experiments``).
    """
    check_source(tracker)
    if run_ids:
        infos = [tracker.get_run(run_id) for run_id in dict.fromkeys(run_ids)]
        if experiments:
            outside = [i.id for i in infos if i.experiment not in experiments]
            if outside:
                raise NotFound(
                    f"run {outside[0]} is not in the experiment(s) {', '.join(experiments)}"
                )
    else:
        named = experiments is not None
        if experiments is None:
            require(
                tracker.backend,
                "list_experiments",
                "copying every experiment",
                "name the experiments to copy (--experiment)",
            )
            experiments = tracker.list_experiments()
        infos = []
        for experiment in dict.fromkeys(experiments):
            try:
                infos += tracker.search_runs(experiment, max_results=MAX_RUNS)
            except NotFound:
                if named:  # asked for by name: it must exist
                    raise
                # listed, but without runs where the backend looks for them: nothing to copy
    return parents_first(infos)


def parents_first(infos: Sequence[RunInfo]) -> list[RunInfo]:
    """``infos`` oldest first, with every parent among them before its children."""
    ordered = sorted(infos, key=lambda i: (i.start_time is None, i.start_time or 0, i.id))
    by_id = {i.id: i for i in ordered}
    done: dict[str, RunInfo] = {}

    def visit(info: RunInfo, seen: frozenset[str]) -> None:
        if info.id in done:
            return
        parent = by_id.get(info.parent_id or "")
        if parent is not None and parent.id not in seen:
            visit(parent, seen | {info.id})
        done[info.id] = info

    for info in ordered:
        visit(info, frozenset())
    return list(done.values())


def _download(tracker: Tracker, run_id: str, path: str) -> FileSource:
    def write(target: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="trackkit-copy-") as tmp:
            local = tracker.download_artifacts(run_id, path, tmp)
            shutil.move(str(local), target)

    return write


def _loader(tracker: Tracker, ref: ModelRef) -> SourceModel:
    def load() -> Package:
        return tracker.load_model_package(ref.uri)

    return SourceModel(name=ref.name, uri=ref.uri, load=load)


def _whole_values(
    tracker: Tracker, info: RunInfo, kind: str, values: dict[str, str], files: dict[str, FileSource]
) -> None:
    """Values trackkit cut at the source's limit get their whole text back from the artifact
    that keeps it; that artifact is then not copied (the destination keeps its own if needed)."""
    for key, value in list(values.items()):
        path = normalize.long_value_file(kind, key)
        if path in files and value.endswith(normalize.TRUNCATION_MARKER.format(path=path)):
            with tempfile.TemporaryDirectory(prefix="trackkit-copy-") as tmp:
                local = Path(tmp) / "value.txt"
                files.pop(path)(local)
                values[key] = local.read_text(encoding="utf-8")


def source_run(tracker: Tracker, info: RunInfo) -> SourceRun:
    """The record of one run: every param, metric point, tag, file and model it holds."""
    backend = tracker.backend
    run = SourceRun(
        id=info.id,
        name=info.name,
        experiment=info.experiment,
        status=info.status,
        params=dict(info.params),
        tags={
            **{k: v for k, v in info.system_tags.items() if k not in IDENTITY_TAGS},
            **info.tags,
        },
        start_time=info.start_time,
        end_time=info.end_time,
        backend=backend.name,
        parent_id=info.parent_id,
    )
    keys = sorted(info.metrics)
    histories = call(
        backend,
        f"read the metrics of run {info.id}",
        lambda: backend.get_metric_histories(info.id, keys),
    )
    for key in keys:
        # a point is (step, value, timestamp) already: sorted by step, then as stored
        run.metrics[key] = sorted(histories.get(key, ()))
    caps = backend.capabilities
    refs: list[ModelRef] = []
    if caps.models:
        refs = call(
            backend, f"list the models of run {info.id}", lambda: backend.list_models(info.id)
        )
        run.models = [_loader(tracker, ref) for ref in refs]
    if caps.list_artifacts and caps.download_artifacts:
        # a model stored as artifacts (a trackkit package) is copied as a model, not as files
        inside = tuple(f"{r.name}/" for r in refs if r.uri == f"runs:/{info.id}/{r.name}")
        for entry in tracker.list_artifacts(info.id, recursive=True):
            if not entry.is_dir and not entry.path.startswith(inside):
                run.files[entry.path] = _download(tracker, info.id, entry.path)
        _whole_values(tracker, info, "params", run.params, run.files)
        _whole_values(tracker, info, "tags", run.tags, run.files)
    elif caps.artifacts:
        run.notes.append(
            f"artifacts not copied: the {backend.name} backend cannot list or download them "
            "(capabilities list_artifacts, download_artifacts)"
        )
    return run


def read_runs(tracker: Tracker, infos: Sequence[RunInfo]) -> Iterator[SourceRun]:
    """:func:`source_run` for each run in turn (one run's data in memory at a time)."""
    for info in infos:
        yield source_run(tracker, info)
