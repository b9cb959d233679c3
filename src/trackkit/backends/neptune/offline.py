"""Neptune's offline runs read from disk, without the ``neptune`` package.

The client in offline mode appends every operation of a run as one JSON line to
``.neptune/offline/run__<id>__<pid>__<key>/data-<n>.log`` (``AssignFloat``, ``LogFloats``,
``UploadFile``...), keeps copies of uploaded files in ``upload_path/`` beside it and describes
the run in ``metadata.json``. :func:`read_offline_runs` replays those logs into one
:class:`~trackkit.backends.neptune.view.NeptuneRunData` per run; a line that cannot be read is
skipped and noted.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trackkit.backends.neptune.view import NeptuneRunData, RunView, run_view
from trackkit.copy import bytes_source, file_source
from trackkit.errors import InvalidInput, NotFound

#: the layout version of offline directories this reader knows (neptune 1.x)
STRUCTURE_VERSIONS = (3,)
_EARLIEST = datetime.min.replace(tzinfo=timezone.utc)


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
    source: str | Path, run_ids: Sequence[str] | None = None, *, outside_files: bool = False
) -> list[NeptuneRunData]:
    """Replay the operation logs of every offline run under ``source`` (or of ``run_ids``).

    An offline directory may come from someone else, and its logs name files by path
    (Neptune's ``upload("path")`` keeps the path, not a copy): only files inside the folder that
    holds the ``.neptune`` directory (the project the run was made in) are read, symlinks
    followed, unless ``outside_files`` is True. Any other is listed in ``skipped`` with how to
    include it; with ``outside_files``, each one read is listed in ``outside`` (see
    :func:`outside_warning`).

    Returns:
        One :class:`~trackkit.backends.neptune.view.NeptuneRunData` per run, oldest first; what
        could not be read is listed in its ``skipped``.

    Raises:
        InvalidInput: ``source`` holds no Neptune offline data.
        NotFound: a run in ``run_ids`` is not there.
    """
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
            _replay(directory, data, _project(directory).resolve(), outside_files)
        runs.append(data)
    runs.sort(key=lambda d: (d.created or _EARLIEST, d.id))
    return runs


#: how many runs :class:`OfflineRuns` keeps read (the runs a copier or a listing reads in turn)
CACHED_RUNS = 8


def _signature(directories: Sequence[Path]) -> tuple[tuple[str, int, int], ...]:
    """What changes when a run's directories are written to: each file's name, size and
    modification time."""
    found = []
    for directory in directories:
        with contextlib.suppress(OSError), os.scandir(directory) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    if entry.is_file():
                        info = entry.stat()
                        found.append((entry.path, info.st_size, info.st_mtime_ns))
    return tuple(sorted(found))


class OfflineRuns:
    """The offline runs under one data directory, as :func:`read_offline_runs` reads them,
    each read again only when its files changed: a copier asks for one run's metrics, its
    files and its models in turn, and a listing asks for every run. The last
    :data:`CACHED_RUNS` runs read are kept, each with its view (made once: making it notes
    what it cannot decode in the run's ``skipped``)."""

    def __init__(self, data_dir: Path, outside_files: bool = False) -> None:
        self.data_dir = data_dir
        self.outside_files = outside_files
        self._lock = threading.Lock()
        self._kept: OrderedDict[str, tuple[Any, NeptuneRunData, RunView]] = OrderedDict()

    def runs(self, run_id: str | None = None) -> list[tuple[NeptuneRunData, RunView]]:
        """Every run (or only ``run_id``, if it is there), oldest first, with its view."""
        directories = offline_run_dirs(self.data_dir)
        if run_id is not None:
            directories = {run_id: directories[run_id]} if run_id in directories else {}
        signatures = {r: _signature(d) for r, d in directories.items()}
        with self._lock:
            stale = [r for r, sig in signatures.items() if self._kept.get(r, (None,))[0] != sig]
        read = read_offline_runs(self.data_dir, stale, outside_files=self.outside_files)
        with self._lock:
            for data in read:
                self._kept[data.id] = (signatures[data.id], data, run_view(data))
            found = []
            for r in signatures:
                entry = self._kept.get(r)
                if entry is not None:
                    self._kept.move_to_end(r)
                    found.append(entry)
            while len(self._kept) > CACHED_RUNS:
                self._kept.popitem(last=False)
        found.sort(key=lambda e: (e[1].created or _EARLIEST, e[1].id))
        return [(data, view) for _, data, view in found]


def outside_warning(runs: Sequence[NeptuneRunData], shown: set[str] | None = None) -> str | None:
    """The warning naming the files ``runs`` read from outside the folder each was made in
    (``outside_files=True``), leaving out those in ``shown`` (then added to it); None when
    there are none."""
    lines = []
    for data in runs:
        new = [f for f in data.outside if shown is None or f not in shown]
        if new:
            lines.append(f"run {data.id}: {'; '.join(new)}")
            if shown is not None:
                shown.update(new)
    if not lines:
        return None
    return (
        "reading files from outside the folder each Neptune offline run was made in, as "
        f"asked (outside_files): {' | '.join(lines)}"
    )


def _replay(directory: Path, data: NeptuneRunData, root: Path, outside_files: bool) -> None:
    """Apply the run directory's logs to ``data``; files named by path are read only inside
    ``root`` (resolved), unless ``outside_files``."""
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
                _apply(op, path, directory, data, root, outside_files)


def _forget(data: NeptuneRunData, path: str) -> None:
    prefix = path + "/"
    for store in (
        data.atoms, data.float_series, data.string_series, data.string_sets,
        data.files, data.file_sets, data.images,
    ):  # fmt: skip
        for key in [k for k in store if k == path or k.startswith(prefix)]:
            del store[key]


def _inside(local: Path, root: Path) -> bool:
    """Whether ``local``, with every symlink followed, lies inside the resolved ``root``."""
    try:
        return local.resolve().is_relative_to(root)
    except (OSError, RuntimeError):
        return False


def _project(directory: Path) -> Path:
    """The folder an offline run was made in: the parent of ``.neptune/offline/<run>`` (or of
    the run's own directory when it is laid out otherwise)."""
    if directory.parent.name == "offline" and directory.parent.parent.name.endswith("neptune"):
        return directory.parents[2]
    return directory


def _readable(
    local: Path, root: Path, outside_files: bool, path: str, data: NeptuneRunData
) -> bool:
    """Whether the file ``local`` that field ``path`` names may be read; if not, noted why.
    One outside ``root`` is read only with ``outside_files``, and listed in ``outside``."""
    outside = not _inside(local, root)
    if outside and not outside_files:
        data.skipped.append(
            f"{path}: names the file {str(local)!r}, outside the folder the offline run was "
            f"made in ({str(root)!r}); not read (an offline directory from elsewhere could name "
            "any file): copy it with `trackkit copy --outside-files` (or read it with "
            "trackkit.backends.neptune.read_offline_runs(..., outside_files=True)) if you trust "
            "the directory"
        )
        return False
    if not local.is_file():
        data.skipped.append(f"{path}: the uploaded file {str(local)!r} is gone")
        return False
    if outside:
        data.outside.append(f"{path}: {local}")
    return True


def _apply(
    op: dict[str, Any],
    path: str,
    directory: Path,
    data: NeptuneRunData,
    root: Path,
    outside_files: bool,
) -> None:
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
        if _readable(local, root, outside_files, path, data):
            data.files[path] = file_source(local)
            data.file_extensions[path] = str(op.get("ext") or "")
    elif kind == "UploadFileContent":
        data.files[path] = bytes_source(base64.b64decode(op["file_content"]))
        data.file_extensions[path] = str(op.get("ext") or "")
    elif kind == "UploadFileSet":
        found = [
            Path(p)
            for pattern in op.get("file_globs", [])
            for p in glob.glob(pattern, recursive=True)
            if Path(p).is_file() and _readable(Path(p), root, outside_files, path, data)
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
