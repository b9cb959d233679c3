"""A Neptune run's fields read back, and trackkit's layout decoded from them.

:class:`NeptuneRunData` holds every field of a run, whoever wrote it: read from a client object
(:func:`client_data`, debug mode or a server), from one row of a server's runs table
(:func:`row_info`), or from offline operation logs (``offline``). :func:`run_view` decodes
trackkit's layout (``keys``) from it.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trackkit.backends.neptune.keys import (
    ARTIFACTS,
    F_END,
    F_EXPERIMENT,
    F_FAILED,
    F_LABELS,
    F_NAME,
    F_PARENT,
    F_RUN_ID,
    F_START,
    F_STATUS,
    METRICS,
    PARAMS,
    POINT_STAMPS,
    POINTS,
    STAMPS,
    STEPS,
    TAGS,
    below,
    key_of,
)
from trackkit.entities import ArtifactInfo, RunInfo
from trackkit.normalize import TRUNCATION_MARKER, value_text

if TYPE_CHECKING:
    from trackkit.copy import FileSource


@dataclass
class NeptuneRunData:
    """One Neptune run's fields, read from a client object or from offline operation logs.

    Paths are ``/``-joined field paths. Series points are ``(step, value, timestamp_seconds)``
    in the order Neptune holds them; a step is None where Neptune assigned none.
    """

    id: str
    atoms: dict[str, Any] = field(default_factory=dict)
    float_series: dict[str, list[tuple[float | None, float, float | None]]] = field(
        default_factory=dict
    )
    string_series: dict[str, list[tuple[float | None, str, float | None]]] = field(
        default_factory=dict
    )
    string_sets: dict[str, set[str]] = field(default_factory=dict)
    files: dict[str, FileSource] = field(default_factory=dict)
    file_extensions: dict[str, str] = field(default_factory=dict)
    file_sets: dict[str, list[Path]] = field(default_factory=dict)
    images: dict[str, list[tuple[float | None, bytes, str | None]]] = field(default_factory=dict)
    created: datetime | None = None
    #: what could not be read (unknown operation types, missing files), one line each
    skipped: list[str] = field(default_factory=list)
    #: files read from outside the folder the offline run was made in (``outside_files``),
    #: ``<field>: <file>`` each
    outside: list[str] = field(default_factory=list)


def atom_text(value: Any) -> str:
    """A single value as the text every backend reads back for a param."""
    if isinstance(value, datetime):
        return value.isoformat()
    return value_text(value)


def as_datetime(value: Any) -> datetime | None:
    """``value`` if it is a datetime (naive ones taken as UTC), else None."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return None


@dataclass
class RunView:
    """A run as trackkit sees it: the layout of ``keys`` decoded."""

    id: str
    name: str
    experiment: str | None
    status: str
    start_time: datetime | None
    end_time: datetime | None
    params: dict[str, Any]
    #: key -> [(step, value, timestamp_ms)], every stored point
    metrics: dict[str, list[tuple[int, float, int | None]]]
    tags: dict[str, str]
    artifacts: dict[str, FileSource]
    #: sys/tags labels that are not mirrors of trackkit tags
    labels: set[str]
    #: field paths the view consumed; the rest is the run's own Neptune data
    used: set[str]
    written_by_trackkit: bool
    #: the parent run's id, for a nested run
    parent_id: str | None = None

    def latest_metrics(self) -> dict[str, float]:
        """The value at each key's highest step (the latest logged among equal steps)."""
        latest: dict[str, float] = {}
        for key, points in self.metrics.items():
            best = max(range(len(points)), key=lambda i: (points[i][0], i), default=None)
            if best is not None:
                latest[key] = points[best][1]
        return latest

    def info(self) -> RunInfo:
        return RunInfo(
            id=self.id,
            name=self.name,
            experiment=self.experiment or "",
            status=self.status,
            params={k: atom_text(v) for k, v in self.params.items()},
            metrics=self.latest_metrics(),
            tags=dict(self.tags),
            start_time=self.start_time,
            end_time=self.end_time,
            parent_id=self.parent_id,
        )


def artifact_entries(artifacts: Mapping[str, FileSource], path: str) -> list[ArtifactInfo]:
    """The entries directly under ``path`` among a run's artifacts. Neptune does not say a
    file's size: each file listed is read (into a temporary file) and measured."""
    prefix = f"{path}/" if path else ""
    found: dict[str, ArtifactInfo] = {}
    with tempfile.TemporaryDirectory(prefix="trackkit-") as tmp:
        for i, (where, source) in enumerate(sorted(artifacts.items())):
            if not where.startswith(prefix):
                continue
            head, rest, _ = where[len(prefix) :].partition("/")
            entry = prefix + head
            if rest:
                found[entry] = ArtifactInfo(path=entry, is_dir=True)
                continue
            local = Path(tmp) / str(i)
            source(local)
            found[entry] = ArtifactInfo(path=entry, is_dir=False, size=local.stat().st_size)
            local.unlink()
    return sorted(found.values(), key=lambda e: e.path)


def _stamps(
    data: NeptuneRunData,
    used: set[str],
    root: str,
    segments: tuple[str, ...],
    seconds: list[float | None],
) -> list[int | None]:
    """A series' point timestamps in ms: from its debug-mode companion under ``root`` when it
    has one of the same length (Neptune's in-memory series forget them), else Neptune's."""
    path = "/".join((root, *segments))
    companion = data.float_series.get(path)
    if companion is not None and len(companion) == len(seconds):
        used.add(path)
        return [round(value) for _, value, _ in companion]
    return [None if ts is None else round(ts * 1000) for ts in seconds]


def _point(text: str) -> tuple[int, float] | None:
    try:
        step, value = json.loads(text)
    except (ValueError, TypeError):
        return None
    if not isinstance(step, int) or isinstance(step, bool) or not isinstance(value, (int, float)):
        return None
    return step, float(value)


def run_view(data: NeptuneRunData) -> RunView:
    """Decode the trackkit layout of a run (fields trackkit did not write are left in ``data``)."""
    used: set[str] = set()
    atoms = data.atoms

    def atom(path: str) -> Any:
        if path in atoms:
            used.add(path)
        return atoms.get(path)

    params: dict[str, Any] = {}
    tags: dict[str, str] = {}
    for path, value in atoms.items():
        if (segments := below(path, PARAMS)) is not None:
            params[key_of(segments)] = value
            used.add(path)
        elif (segments := below(path, TAGS)) is not None and isinstance(value, str):
            tags[key_of(segments)] = value
            used.add(path)
    metrics: dict[str, list[tuple[int, float, int | None]]] = {}
    for path, points in data.float_series.items():
        segments = below(path, METRICS)
        if segments is None:
            continue
        used.add(path)
        steps_path = "/".join((STEPS, *segments))
        companion = data.float_series.get(steps_path)
        if companion is not None and len(companion) == len(points):
            used.add(steps_path)
            steps = [int(value) for _, value, _ in companion]
        else:
            steps = [int(s) if s is not None else i for i, (s, _, _) in enumerate(points)]
        stamps = _stamps(data, used, STAMPS, segments, [ts for _, _, ts in points])
        metrics[key_of(segments)] = [
            (step, value, stamp)
            for step, (_, value, _), stamp in zip(steps, points, stamps, strict=True)
        ]
    for path, texts in data.string_series.items():
        segments = below(path, POINTS)
        if segments is None:
            continue
        used.add(path)
        stamps = _stamps(data, used, POINT_STAMPS, segments, [ts for _, _, ts in texts])
        for (_, text, _), stamp in zip(texts, stamps, strict=True):
            found = _point(text)
            if found is None:
                data.skipped.append(f"{path}: unreadable point {text[:80]!r}")
                continue
            metrics.setdefault(key_of(segments), []).append((found[0], found[1], stamp))
    artifacts: dict[str, FileSource] = {}
    for path, source in data.files.items():
        if (segments := below(path, ARTIFACTS)) is not None:
            artifacts["/".join(segments)] = source
            used.add(path)
    _restore_long_values(params, tags, artifacts)
    mirrored = {f"{k}:{v}" for k, v in tags.items()}
    labels = set(data.string_sets.get(F_LABELS, set())) - mirrored
    used.add(F_LABELS)
    status = atom(F_STATUS)
    failed = atom(F_FAILED)
    if not isinstance(status, str) or not status:
        status = "FAILED" if failed else "FINISHED"
    name = atom(F_NAME)
    experiment = atom(F_EXPERIMENT)
    parent = atom(F_PARENT)
    written = any(p in atoms for p in (F_RUN_ID, F_STATUS, F_EXPERIMENT))
    return RunView(
        id=data.id,
        name=name if isinstance(name, str) and name else data.id,
        experiment=experiment if isinstance(experiment, str) else None,
        status=status,
        start_time=as_datetime(atom(F_START)) or data.created,
        end_time=as_datetime(atom(F_END)),
        params=params,
        metrics=metrics,
        tags=tags,
        artifacts=artifacts,
        labels=labels,
        used=used,
        written_by_trackkit=written,
        parent_id=parent if isinstance(parent, str) and parent else None,
    )


def _restore_long_values(
    params: dict[str, Any], tags: dict[str, str], artifacts: Mapping[str, FileSource]
) -> None:
    """Values trackkit cut at Neptune's limit get their whole text back from their artifact."""
    head, _, tail = TRUNCATION_MARKER.partition("{path}")
    for kind, values in (("params", params), ("tags", tags)):
        for key, value in list(values.items()):
            if not isinstance(value, str) or not value.endswith(tail) or head not in value:
                continue
            where = value[value.rindex(head) + len(head) : -len(tail) or None]
            source = artifacts.get(where)
            if source is None or not where.startswith(f"trackkit/long_values/{kind}/"):
                continue
            with tempfile.TemporaryDirectory(prefix="trackkit-") as tmp:
                local = Path(tmp) / "value.txt"
                source(local)
                values[key] = local.read_text(encoding="utf-8")


# -- reading client objects (debug mode, or runs on a server) ------------------------------------
def flatten_structure(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A client object's nested structure (or fetched values) as ``path -> leaf``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_structure(value, path))
        else:
            flat[path] = value
    return flat


def client_data(obj: Any, run_id: str, attributes: Any, debug: bool) -> NeptuneRunData:
    """Every field of a client object; ``attributes`` is the client's ``neptune.attributes``."""
    atom_types = (
        attributes.Float,
        attributes.Integer,
        attributes.Boolean,
        attributes.String,
        attributes.Datetime,
    )
    data = NeptuneRunData(id=run_id)
    fetched = flatten_structure(obj.fetch())
    for path, attr in flatten_structure(obj.get_structure()).items():
        if isinstance(attr, atom_types):
            data.atoms[path] = fetched[path] if path in fetched else attr.fetch()
        elif isinstance(attr, attributes.FloatSeries):
            data.float_series[path] = _series_points(attr, debug)
        elif isinstance(attr, attributes.StringSeries):
            data.string_series[path] = _series_points(attr, debug)
        elif isinstance(attr, attributes.StringSet):
            data.string_sets[path] = set(attr.fetch())
        elif isinstance(attr, attributes.File):
            data.files[path] = _downloader(attr)
        else:
            data.skipped.append(f"{path}: {type(attr).__name__} is not read by trackkit")
    return data


def _unrepeat(rows: list[Any]) -> list[Any]:
    """Undo a neptune 1.14 debug-mode quirk: fetch_values returns a series of n points once
    per 1000 it fetches (its in-memory backend ignores the offset), so n * ceil(n / 1000) rows."""
    total = len(rows)
    n = next((n for n in range(1, total + 1) if n * -(-n // 1000) == total), total)
    if total > n and rows == rows[:n] * (total // n):
        return rows[:n]
    return rows


def _series_points(attr: Any, debug: bool) -> list[tuple[float | None, Any, float | None]]:
    frame = attr.fetch_values(include_timestamp=True, progress_bar=False)
    points: list[tuple[float | None, Any, float | None]] = []
    for step, value, stamp in zip(frame["step"], frame["value"], frame["timestamp"], strict=True):
        seconds = stamp.timestamp() if hasattr(stamp, "timestamp") else None
        points.append((float(step), value if isinstance(value, str) else float(value), seconds))
    return _unrepeat(points) if debug else points


def _downloader(attr: Any) -> FileSource:
    def download(target: Path) -> None:
        attr.download(destination=str(target))

    return download


def row_info(row: Any) -> RunInfo:
    """A RunInfo from one row of Neptune's runs table."""
    # A TableEntry lists its fields only in `_attributes`, as Neptune's own to_pandas reads them.
    paths = [a.path for a in getattr(row, "_attributes", [])]
    data = NeptuneRunData(id=str(row.get_attribute_value("sys/id")))
    for path in paths:
        kind = str(getattr(row.get_attribute_type(path), "value", row.get_attribute_type(path)))
        if kind in ("float", "int", "bool", "string", "datetime"):
            data.atoms[path] = row.get_attribute_value(path)
        elif kind == "floatSeries":
            last = row.get_attribute_value(path)
            if last is not None:
                data.float_series[path] = [(None, float(last), None)]
        elif kind == "stringSet":
            data.string_sets[path] = set(row.get_attribute_value(path) or ())
    created = data.atoms.get("sys/creation_time")
    data.created = as_datetime(created)
    info = run_view(data).info()
    return replace(info, id=str(data.atoms.get(F_RUN_ID) or info.id))
