"""Neptune runs as the generic records ``trackkit.copy`` writes to any backend.

A run's trackkit layout becomes its params, metrics, tags and artifacts; its own Neptune fields
(written by plain Neptune code) are kept too: single values as params, float series as
metrics, everything else as artifacts under ``neptune/``. See docs/neptune.md, "Moving data out".
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from trackkit.backends.neptune.keys import ARTIFACTS, F_DESCRIPTION, RESERVED_ROOTS, key_of
from trackkit.backends.neptune.offline import outside_warning, read_offline_runs
from trackkit.backends.neptune.view import NeptuneRunData, RunView, run_view
from trackkit.copy import CopyResult, SourceRun, bytes_source, file_source, write_runs
from trackkit.errors import TrackkitWarning

if TYPE_CHECKING:
    from trackkit.tracker import Tracker


def _native(view: RunView, data: NeptuneRunData, run: SourceRun, include_system: bool) -> None:
    """A run's own Neptune fields (not trackkit's layout): params, metrics and files."""

    def wanted(path: str) -> bool:
        root = path.split("/", 1)[0]
        return path not in view.used and (include_system or root not in RESERVED_ROOTS)

    for path, value in data.atoms.items():
        if wanted(path):
            key = key_of(path.split("/"))
            if key in run.params:
                run.notes.append(f"{path}: param {key!r} exists already; not copied")
            else:
                run.params[key] = value
    for path, points in data.float_series.items():
        if not wanted(path) or not points:
            continue
        key = key_of(path.split("/"))
        steps = [p[0] for p in points]
        if any(s is None or not float(s).is_integer() or s < 0 for s in steps):
            run.notes.append(f"{path}: steps are not whole numbers; copied as steps 0..n-1")
            steps = list(range(len(points)))
        run.metrics.setdefault(key, []).extend(
            (int(s), v, None if ts is None else round(ts * 1000))  # type: ignore[arg-type]
            for s, (_, v, ts) in zip(steps, points, strict=True)
        )
    for path, series in data.string_series.items():
        if wanted(path) and series:
            text = "".join(f"{value}\n" for _, value, _ in series)
            run.files[f"neptune/{path}.txt"] = bytes_source(text.encode("utf-8"))
    for path, source in data.files.items():
        if wanted(path) and not path.startswith(ARTIFACTS + "/"):
            suffix = data.file_extensions.get(path, "")
            name = path if not suffix or path.endswith(f".{suffix}") else f"{path}.{suffix}"
            run.files[f"neptune/{name}"] = source
    for path, files in data.file_sets.items():
        if wanted(path):
            for local in files:
                run.files[f"neptune/{path}/{local.name}"] = file_source(local)
    for path, images in data.images.items():
        if wanted(path):
            for i, (_, content, label) in enumerate(images):
                run.files[f"neptune/{path}/{label or f'{i}.png'}"] = bytes_source(content)


def source_run(data: NeptuneRunData, include_system: bool = False) -> SourceRun:
    """The record of one Neptune run; ``include_system`` also keeps ``sys``, ``monitoring``
    and ``source_code`` fields. The tag ``neptune.run_id`` names the source run, and
    ``neptune.parent_id`` its parent for a nested run."""
    view = run_view(data)
    run = SourceRun(
        id=data.id,
        name=view.name,
        experiment=view.experiment,
        status=view.status,
        params=dict(view.params),
        metrics={k: list(v) for k, v in view.metrics.items()},
        tags=dict(view.tags),
        files=dict(view.artifacts),
        start_time=view.start_time,
        end_time=view.end_time,
        notes=[*data.skipped, *(f"{f}: read from outside its folder" for f in data.outside)],
        backend="neptune",
        parent_id=view.parent_id or None,
    )
    _native(view, data, run, include_system)
    run.tags.setdefault("neptune.run_id", data.id)
    if view.parent_id:  # also nested under its parent's copy where the destination can
        run.tags.setdefault("neptune.parent_id", view.parent_id)
    if view.labels:
        run.tags.setdefault("neptune.tags", json.dumps(sorted(view.labels)))
    description = data.atoms.get(F_DESCRIPTION)
    if isinstance(description, str) and description:
        run.tags.setdefault("neptune.description", description)
    return run


def copy_runs(
    source: str | Path,
    destination: Tracker,
    *,
    experiment: str | None = None,
    run_ids: Sequence[str] | None = None,
    include_system: bool = False,
) -> list[CopyResult]:
    """Copy Neptune offline runs into the backend of ``destination``.

    Each run becomes a new run there with the same name, params, every metric point at its
    step (with its timestamp), tags and files; its status is kept (a run that never ended is
    ended ``KILLED``). The destination run gets the tag ``neptune.run_id`` naming its source,
    and the tags of every copy (``trackkit.source.*``, see ``trackkit.copy``): copying again
    creates nothing new.

    Args:
        source: a ``.neptune`` directory, a directory containing one, its ``offline/``
            directory, or one offline run directory.
        destination: a Tracker on any backend, e.g. ``trackkit.get_tracker("mlflow")``.
        experiment: the destination experiment; default: the one trackkit recorded in the run,
            else the tracker's default.
        run_ids: copy only these runs (the ids in the offline directory names).
        include_system: also copy Neptune's ``sys``, ``monitoring`` and ``source_code`` fields.

    Returns:
        One CopyResult per run. A run that fails is reported (``error``) and ended ``FAILED``
        in the destination; the others are still copied.

    Raises:
        InvalidInput: ``source`` holds no Neptune offline data.
        NotFound: a run of ``run_ids`` is not in ``source``.
    """
    return write_runs(source_runs(source, run_ids, include_system), destination, experiment)


def source_runs(
    source: str | Path,
    run_ids: Sequence[str] | None = None,
    include_system: bool = False,
    outside_files: bool = False,
) -> list[SourceRun]:
    """The record of each Neptune offline run in ``source`` (see :func:`copy_runs`).

    ``outside_files``: also read the files the logs name outside the folder a run was made in
    (only for data you trust); a TrackkitWarning names each file read so.
    """
    found = read_offline_runs(source, run_ids, outside_files=outside_files)
    message = outside_warning(found)
    if message is not None:
        warnings.warn(message, TrackkitWarning, stacklevel=2)
    return [source_run(data, include_system) for data in found]
