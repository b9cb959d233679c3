"""Moving Neptune data out: read Neptune's offline run data from disk, write it to any backend.

The ``neptune`` client in offline mode appends every operation of a run as one JSON line to
``.neptune/offline/run__<id>__<pid>__<key>/data-<n>.log`` (``AssignFloat``, ``LogFloats``,
``UploadFile``...), keeps copies of uploaded files in ``upload_path/`` beside it and describes
the run in ``metadata.json``. :func:`read_offline_runs` replays those logs (no ``neptune``
package needed) and :func:`copy_runs` writes each run through a :class:`trackkit.Tracker`, so
the destination can be any backend. See docs/neptune.md, "Moving data out".
"""

from __future__ import annotations

import base64
import contextlib
import glob
import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trackkit.backends.neptune import (
    ARTIFACTS,
    RESERVED_ROOTS,
    NeptuneRunData,
    key_of,
    run_view,
)
from trackkit.errors import InvalidInput, TrackkitError

if TYPE_CHECKING:
    from trackkit.backends.neptune import FileSource, RunView
    from trackkit.run import Run
    from trackkit.tracker import Tracker

#: the layout version of offline directories this reader knows (neptune 1.x)
STRUCTURE_VERSIONS = (3,)


# -- reading offline runs --------------------------------------------------------------------------
def _offline_root(source: Path) -> Path:
    """The ``offline`` directory under ``source`` (a ``.neptune`` dir, its parent, or itself)."""
    for candidate in (source / "offline", source / ".neptune" / "offline", source):
        if candidate.is_dir() and candidate.name == "offline":
            return candidate
    raise InvalidInput(
        f"{source} holds no Neptune offline data: expected a .neptune directory, a directory "
        "containing one, its offline/ directory, or one offline run directory"
    )


def _container_id(directory: Path) -> str | None:
    """The run id in an offline directory name (``run__<id>__<pid>__<key>``), or None."""
    parts = directory.name.split("__")
    if len(parts) == 1:
        return parts[0]
    if len(parts) in (2, 4) and parts[0] == "run":
        return parts[1]
    return None


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "metadata.json").is_file() or any(path.glob("data-*.log")))


def offline_run_dirs(source: str | Path) -> dict[str, list[Path]]:
    """Every offline run under ``source``: run id -> its directories (one per process), oldest first.

    Raises:
        InvalidInput: ``source`` holds no Neptune offline data.
    """
    path = Path(source)
    if _is_run_dir(path) and _container_id(path):
        return {str(_container_id(path)): [path]}
    found: dict[str, list[tuple[str, Path]]] = {}
    for directory in sorted(_offline_root(path).iterdir()):
        run_id = _container_id(directory)
        if run_id is None or not _is_run_dir(directory):
            continue
        created = str(_metadata(directory).get("createdAt", ""))
        found.setdefault(run_id, []).append((created, directory))
    return {k: [d for _, d in sorted(v)] for k, v in sorted(found.items())}


def _metadata(directory: Path) -> dict[str, Any]:
    try:
        data = json.loads((directory / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _log_files(directory: Path) -> list[Path]:
    def first_version(path: Path) -> int:
        number = path.stem.split("-", 1)[-1]
        return int(number) if number.isdigit() else 0

    return sorted(directory.glob("data-*.log"), key=first_version)


def _int_file(path: Path) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def read_offline_runs(
    source: str | Path, run_ids: Sequence[str] | None = None
) -> list[NeptuneRunData]:
    """Replay the operation logs of every offline run under ``source`` (or of ``run_ids``).

    Returns:
        One :class:`~trackkit.backends.neptune.NeptuneRunData` per run, oldest first; what could
        not be read is listed in its ``skipped``.

    Raises:
        InvalidInput: ``source`` holds no Neptune offline data.
        NotFound: a run in ``run_ids`` is not there.
    """
    from trackkit.errors import NotFound

    directories = offline_run_dirs(source)
    if run_ids is not None:
        missing = [r for r in run_ids if r not in directories]
        if missing:
            raise NotFound(f"no Neptune offline run {missing[0]!r} under {source}")
        directories = {r: directories[r] for r in run_ids}
    runs = []
    for run_id, dirs in directories.items():
        data = NeptuneRunData(id=run_id)
        for directory in dirs:
            meta = _metadata(directory)
            version = meta.get("structureVersion")
            if version is not None and version not in STRUCTURE_VERSIONS:
                data.skipped.append(
                    f"{directory.name}: layout version {version} is not one this reader knows"
                )
            created = meta.get("createdAt")
            if data.created is None and isinstance(created, str):
                with contextlib.suppress(ValueError):
                    data.created = datetime.fromisoformat(created)
            _replay(directory, data)
        runs.append(data)
    runs.sort(key=lambda d: (d.created or datetime.min.replace(tzinfo=timezone.utc), d.id))
    return runs


def _replay(directory: Path, data: NeptuneRunData) -> None:
    acknowledged = _int_file(directory / "last_ack_version")
    for log in _log_files(directory):
        with open(log, encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    op = entry["obj"]
                    path = "/".join(op["path"])
                except (ValueError, KeyError, TypeError):
                    data.skipped.append(f"{log.name}:{number}: unreadable line")
                    continue
                if int(entry.get("version", acknowledged + 1)) <= acknowledged:
                    continue  # already sent to a server by the client itself
                _apply(op, path, directory, data)


def _forget(data: NeptuneRunData, path: str) -> None:
    prefix = path + "/"
    for store in (
        data.atoms, data.float_series, data.string_series, data.string_sets,
        data.files, data.file_sets, data.images,
    ):  # fmt: skip
        for key in [k for k in store if k == path or k.startswith(prefix)]:
            del store[key]


def _apply(op: dict[str, Any], path: str, directory: Path, data: NeptuneRunData) -> None:
    kind = op.get("type")
    if kind in ("AssignFloat", "AssignInt", "AssignBool", "AssignString"):
        data.atoms[path] = op["value"]
    elif kind == "AssignDatetime":
        data.atoms[path] = datetime.fromtimestamp(op["value"] / 1000, tz=timezone.utc)
    elif kind == "DeleteAttribute":
        _forget(data, path)
    elif kind == "LogFloats":
        data.float_series.setdefault(path, []).extend(
            (v.get("step"), float(v["value"]), v.get("ts")) for v in op["values"]
        )
    elif kind == "ClearFloatLog":
        data.float_series[path] = []
    elif kind == "ConfigFloatSeries":
        data.float_series.setdefault(path, [])
    elif kind == "LogStrings":
        data.string_series.setdefault(path, []).extend(
            (v.get("step"), str(v["value"]), v.get("ts")) for v in op["values"]
        )
    elif kind == "ClearStringLog":
        data.string_series[path] = []
    elif kind == "AddStrings":
        data.string_sets.setdefault(path, set()).update(op["values"])
    elif kind == "RemoveStrings":
        data.string_sets.setdefault(path, set()).difference_update(op["values"])
    elif kind == "ClearStringSet":
        data.string_sets[path] = set()
    elif kind == "UploadFile":
        tmp = op.get("tmp_file_name")
        local = directory / "upload_path" / tmp if tmp else Path(op.get("file_path") or "")
        if local.is_file():
            data.files[path] = _copier(local)
            data.file_extensions[path] = str(op.get("ext") or "")
        else:
            data.skipped.append(f"{path}: the uploaded file {str(local)!r} is gone")
    elif kind == "UploadFileContent":
        data.files[path] = _writer(base64.b64decode(op["file_content"]))
        data.file_extensions[path] = str(op.get("ext") or "")
    elif kind == "UploadFileSet":
        found = [
            Path(p)
            for pattern in op.get("file_globs", [])
            for p in glob.glob(pattern, recursive=True)
            if Path(p).is_file()
        ]
        if str(op.get("reset")) == "True":
            data.file_sets[path] = found
        else:
            data.file_sets.setdefault(path, []).extend(found)
    elif kind == "LogImages":
        for v in op["values"]:
            image = v.get("value") or {}
            payload = image.get("data") if isinstance(image, dict) else image
            if payload:
                name = image.get("name") if isinstance(image, dict) else None
                data.images.setdefault(path, []).append(
                    (v.get("step"), base64.b64decode(payload), name)
                )
    elif kind == "ClearImageLog":
        data.images[path] = []
    else:
        data.skipped.append(f"{path}: {kind} operations are not copied")


def _copier(source: Path) -> FileSource:
    def copy(target: Path) -> None:
        shutil.copyfile(source, target)

    return copy


def _writer(content: bytes) -> FileSource:
    def write(target: Path) -> None:
        target.write_bytes(content)

    return write


# -- copying ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CopyResult:
    """What :func:`copy_runs` did with one Neptune run."""

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


@dataclass
class _Plan:
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, list[tuple[int, float, int | None]]] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    files: dict[str, FileSource] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _native(view: RunView, data: NeptuneRunData, plan: _Plan, include_system: bool) -> None:
    """A run's own Neptune fields (not trackkit's layout): params, metrics and files."""

    def wanted(path: str) -> bool:
        root = path.split("/", 1)[0]
        return path not in view.used and (include_system or root not in RESERVED_ROOTS)

    for path, value in data.atoms.items():
        if wanted(path):
            key = key_of(path.split("/"))
            if key in plan.params:
                plan.notes.append(f"{path}: param {key!r} exists already; not copied")
            else:
                plan.params[key] = value
    for path, points in data.float_series.items():
        if not wanted(path) or not points:
            continue
        key = key_of(path.split("/"))
        steps = [p[0] for p in points]
        if any(s is None or not float(s).is_integer() or s < 0 for s in steps):
            plan.notes.append(f"{path}: steps are not whole numbers; copied as steps 0..n-1")
            steps = list(range(len(points)))
        plan.metrics.setdefault(key, []).extend(
            (int(s), v, None if ts is None else round(ts * 1000))  # type: ignore[arg-type]
            for s, (_, v, ts) in zip(steps, points, strict=True)
        )
    for path, series in data.string_series.items():
        if wanted(path) and series:
            text = "".join(f"{value}\n" for _, value, _ in series)
            plan.files[f"neptune/{path}.txt"] = _writer(text.encode("utf-8"))
    for path, source in data.files.items():
        if wanted(path) and _below_artifacts(path) is None:
            suffix = data.file_extensions.get(path, "")
            name = path if not suffix or path.endswith(f".{suffix}") else f"{path}.{suffix}"
            plan.files[f"neptune/{name}"] = source
    for path, files in data.file_sets.items():
        if wanted(path):
            for local in files:
                plan.files[f"neptune/{path}/{local.name}"] = _copier(local)
    for path, images in data.images.items():
        if wanted(path):
            for i, (_, content, label) in enumerate(images):
                plan.files[f"neptune/{path}/{label or f'{i}.png'}"] = _writer(content)


def _below_artifacts(path: str) -> str | None:
    return path[len(ARTIFACTS) + 1 :] if path.startswith(ARTIFACTS + "/") else None


def _plan(data: NeptuneRunData, include_system: bool) -> tuple[RunView, _Plan]:
    view = run_view(data)
    plan = _Plan(
        params=dict(view.params),
        metrics={k: list(v) for k, v in view.metrics.items()},
        tags=dict(view.tags),
        files=dict(view.artifacts),
        notes=list(data.skipped),
    )
    _native(view, data, plan, include_system)
    plan.tags.setdefault("neptune.run_id", data.id)
    if view.labels:
        plan.tags.setdefault("neptune.tags", json.dumps(sorted(view.labels)))
    description = data.atoms.get("sys/description")
    if isinstance(description, str) and description:
        plan.tags.setdefault("neptune.description", description)
    return view, plan


def _param_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _write(run: Run, plan: _Plan) -> None:
    """Log the plan into ``run``; a name the destination refuses is noted and left out."""
    for key, value in list(plan.params.items()):
        try:
            run.log_param(key, _param_value(value))
        except InvalidInput as e:
            plan.notes.append(f"param {key!r} not copied: {e}")
            del plan.params[key]
    for key, points in list(plan.metrics.items()):
        try:
            for step, value, stamp in points:
                run.log_metric(key, value, step=step, timestamp=stamp)
        except InvalidInput as e:  # refused at its first point: none of it was logged
            plan.notes.append(f"metric {key!r} not copied: {e}")
            del plan.metrics[key]
    with tempfile.TemporaryDirectory(prefix="trackkit-copy-") as tmp:
        for i, (path, source) in enumerate(sorted(plan.files.items())):
            directory, _, name = path.rpartition("/")
            local = Path(tmp) / str(i) / name
            local.parent.mkdir()
            source(local)
            run.log_artifact(local, directory or None)
            local.unlink()


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
    ended ``KILLED``). The destination run gets the tag ``neptune.run_id`` naming its source.

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
    results = []
    for data in read_offline_runs(source, run_ids):
        view, plan = _plan(data, include_system)
        status = view.status if view.status in ("FINISHED", "FAILED", "KILLED") else "KILLED"
        if status != view.status:
            plan.notes.append(f"the run was still {view.status}; it is ended KILLED")
        target = experiment or view.experiment
        run: Run | None = None
        error = None
        try:
            run = destination.start_run(experiment=target, name=view.name, tags=plan.tags)
            _write(run, plan)
            run.end(status)
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
            if run is not None and not run.ended:
                try:
                    run.end("FAILED")
                except TrackkitError as end_error:
                    plan.notes.append(f"could not end the destination run: {end_error}")
        results.append(
            CopyResult(
                source_id=data.id,
                run_id=None if run is None else run.id,
                name=view.name,
                experiment=run.experiment if run is not None else (target or ""),
                status=status if error is None else "FAILED",
                params=len(plan.params),
                metric_points=sum(len(p) for p in plan.metrics.values()),
                tags=len(plan.tags),
                files=len(plan.files),
                notes=tuple(plan.notes),
                error=error,
            )
        )
    return results
