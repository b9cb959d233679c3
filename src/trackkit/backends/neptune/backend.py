"""The Neptune backend: trackkit on the ``neptune`` client (1.x), offline, in memory or on a server.

Modes: ``offline`` (operation logs under ``.trackkit/.neptune/offline``, uploaded later by
``neptune sync``),
``debug`` (in memory, for tests), and the server modes ``async`` and ``sync``. Where each piece
of a run goes (the field layout), how steps Neptune refuses are kept, and how the registry maps
onto Neptune's stages is described in docs/neptune.md; this module is the one place that layout
is written and read.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trackkit import env, hookimpl
from trackkit._lazy import import_sdk
from trackkit._secrets import redact
from trackkit.backend import Backend, Capabilities, Limits
from trackkit.entities import ModelVersion, RunHandle, RunInfo
from trackkit.errors import InvalidInput, NotFound, TrackkitError
from trackkit.normalize import TRUNCATION_MARKER, value_text
from trackkit.search import Clause

if TYPE_CHECKING:
    from trackkit.entities import Metric, ParamValue
    from trackkit.search import Query

MODES = ("offline", "debug", "async", "sync")
SERVER_MODES = ("async", "sync")
OFFLINE_ENV = "TRACKKIT_OFFLINE"

# -- the field layout of a run (docs/neptune.md, "Where things go") ----------------------------
PARAMS = "parameters"
METRICS = "metrics"
TAGS = "tags"
ARTIFACTS = "artifacts"
POINTS = "trackkit/points"  # points the metric series cannot take, as "[step, value]" texts
STEPS = "trackkit/steps"  # debug mode only: the steps Neptune's in-memory series forget
F_RUN_ID = "trackkit/run_id"
F_EXPERIMENT = "trackkit/experiment"
F_STATUS = "trackkit/status"
F_START = "trackkit/start_time"
F_END = "trackkit/end_time"
#: the segment holding a key's own value when its path is already a namespace
SELF = "%"
#: Neptune keeps steps as float64: larger steps would be rounded in a series
MAX_EXACT_STEP = 2**53
#: a tag is mirrored into sys/tags as "key:value" while that label is this short
LABEL_MAX = 128
#: registry aliases kept as Neptune stages too, strongest first
STAGES = ("production", "staging", "archived")
FIELD_PATH_MAX_BYTES = 1024
INT32 = (-(2**31), 2**31 - 1)
RESERVED_ROOTS = ("sys", "trackkit", "monitoring", "source_code")

_UNESCAPE = re.compile(r"%(25|2F)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ENV_LOCK = threading.RLock()  # NEPTUNE_DATA_DIRECTORY is read from the environment at init
#: set to a true value to see the client's own log lines (on stderr)
VERBOSE_ENV = "TRACKKIT_VERBOSE"
#: the client's loggers: they write to stdout and do not propagate
SDK_LOGGERS = ("neptune", "neptune_no_prefix")


def escape_segment(text: str) -> str:
    """One path segment for ``text``: ``%`` becomes ``%25`` and ``/`` becomes ``%2F``."""
    return text.replace("%", "%25").replace("/", "%2F")


def unescape_segment(segment: str) -> str:
    return _UNESCAPE.sub(lambda m: "%" if m[1] == "25" else "/", segment)


def key_of(segments: Sequence[str]) -> str:
    """The trackkit key a field path (below its namespace) stands for."""
    parts = list(segments)
    if len(parts) > 1 and parts[-1] == SELF:
        parts.pop()
    return ".".join(unescape_segment(p) for p in parts)


class KeyPaths:
    """Where trackkit keys live below one Neptune namespace.

    A key's ``.``-parts become nested namespaces (``model.alpha`` -> ``model/alpha``), except
    where that would make one path both a field and a namespace: then parts stay together in
    one segment (``model.alpha`` when ``model`` is already a value), or a value whose path is
    already a namespace goes to the segment ``%`` below it (``model/%``). ``%`` and ``/`` in a
    part are escaped (``%25``, ``%2F``). :func:`key_of` turns any of these paths back into its key.
    """

    def __init__(self) -> None:
        self._fields: set[tuple[str, ...]] = set()
        self._namespaces: set[tuple[str, ...]] = set()
        self._placed: dict[str, tuple[str, ...]] = {}

    def add(self, path: tuple[str, ...]) -> None:
        """Record an existing field (read back from a run)."""
        self._fields.add(path)
        self._namespaces.update(path[:i] for i in range(1, len(path)))
        self._placed.setdefault(key_of(path), path)

    def path(self, key: str) -> tuple[str, ...]:
        """The field path of ``key``, placed on first use and stable afterwards."""
        found = self._placed.get(key)
        if found is None:
            found = self._place(key)
            self.add(found)
        return found

    def _place(self, key: str) -> tuple[str, ...]:
        parts = key.split(".")
        prefix: tuple[str, ...] = ()
        start = 0
        while True:
            for end in range(start + 1, len(parts) + 1):
                segment = escape_segment(".".join(parts[start:end]))
                if not segment:
                    continue
                here = (*prefix, segment)
                if end == len(parts):
                    return (*here, SELF) if here in self._namespaces else here
                # a value cannot hold a namespace, and the rest must not be an empty segment
                if here in self._fields or not ".".join(parts[end:]):
                    continue
                prefix, start = here, end
                break


def default_path(key: str) -> str:
    """The path of ``key`` in a run where it clashes with no other key (used in queries)."""
    return "/".join(KeyPaths().path(key))


def _join(root: str, path: Sequence[str]) -> str:
    full = "/".join((root, *path))
    if len(full.encode()) > FIELD_PATH_MAX_BYTES:
        raise InvalidInput(
            f"the Neptune field path {full[:60]!r}... is over Neptune's limit of "
            f"{FIELD_PATH_MAX_BYTES} bytes; use a shorter name"
        )
    return full


def _param_field_value(value: ParamValue) -> str | int | float | bool:
    """The value Neptune stores for a param: its own type where Neptune holds it exactly."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        # Neptune's Integer field is 32-bit (the client skips larger values): keep the text
        return value if INT32[0] <= value <= INT32[1] else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else value_text(value)
    return value


def _atom_text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return value_text(value)


# -- a run's fields, read back from the client or from offline logs ------------------------------
#: writes one stored file to the given local path
FileSource = Callable[[Path], None]


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


@dataclass
class RunView:
    """A run as trackkit sees it: the layout of this module decoded."""

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
            params={k: _atom_text(v) for k, v in self.params.items()},
            metrics=self.latest_metrics(),
            tags=dict(self.tags),
            start_time=self.start_time,
            end_time=self.end_time,
        )


def _below(path: str, root: str) -> tuple[str, ...] | None:
    prefix = root + "/"
    return tuple(path[len(prefix) :].split("/")) if path.startswith(prefix) else None


def _point(text: str) -> tuple[int, float] | None:
    try:
        step, value = json.loads(text)
    except (ValueError, TypeError):
        return None
    if not isinstance(step, int) or isinstance(step, bool) or not isinstance(value, (int, float)):
        return None
    return step, float(value)


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return None


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
        if (below := _below(path, PARAMS)) is not None:
            params[key_of(below)] = value
            used.add(path)
        elif (below := _below(path, TAGS)) is not None and isinstance(value, str):
            tags[key_of(below)] = value
            used.add(path)
    metrics: dict[str, list[tuple[int, float, int | None]]] = {}
    for path, points in data.float_series.items():
        below = _below(path, METRICS)
        if below is None:
            continue
        used.add(path)
        steps_path = "/".join((STEPS, *below))
        companion = data.float_series.get(steps_path)
        if companion is not None and len(companion) == len(points):
            used.add(steps_path)
            steps = [int(value) for _, value, _ in companion]
        else:
            steps = [int(s) if s is not None else i for i, (s, _, _) in enumerate(points)]
        metrics[key_of(below)] = [
            (step, value, None if ts is None else round(ts * 1000))
            for step, (_, value, ts) in zip(steps, points, strict=True)
        ]
    for path, texts in data.string_series.items():
        below = _below(path, POINTS)
        if below is None:
            continue
        used.add(path)
        for _, text, ts in texts:
            found = _point(text)
            if found is None:
                data.skipped.append(f"{path}: unreadable point {text[:80]!r}")
                continue
            metrics.setdefault(key_of(below), []).append(
                (found[0], found[1], None if ts is None else round(ts * 1000))
            )
    artifacts: dict[str, FileSource] = {}
    for path, source in data.files.items():
        if (below := _below(path, ARTIFACTS)) is not None:
            artifacts["/".join(below)] = source
            used.add(path)
    _restore_long_values(params, tags, artifacts)
    mirrored = {f"{k}:{v}" for k, v in tags.items()}
    labels = set(data.string_sets.get("sys/tags", set())) - mirrored
    used.add("sys/tags")
    status = atom(F_STATUS)
    failed = atom("sys/failed")
    if not isinstance(status, str) or not status:
        status = "FAILED" if failed else "FINISHED"
    name = atom("sys/name")
    experiment = atom(F_EXPERIMENT)
    written = any(p in atoms for p in (F_RUN_ID, F_STATUS, F_EXPERIMENT))
    return RunView(
        id=data.id,
        name=name if isinstance(name, str) and name else data.id,
        experiment=experiment if isinstance(experiment, str) else None,
        status=status,
        start_time=_as_datetime(atom(F_START)) or data.created,
        end_time=_as_datetime(atom(F_END)),
        params=params,
        metrics=metrics,
        tags=tags,
        artifacts=artifacts,
        labels=labels,
        used=used,
        written_by_trackkit=written,
    )


def _restore_long_values(
    params: dict[str, Any], tags: dict[str, str], artifacts: Mapping[str, FileSource]
) -> None:
    """Values trackkit cut at Neptune's limit get their whole text back from their artifact."""
    import tempfile

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


# -- search: the parsed filter (trackkit.search) translated into Neptune's query language -----
def _nql_string(value: str) -> str | None:
    return None if '"' in value or "\\" in value else f'"{value}"'


def _nql_number(value: float) -> str:
    return repr(int(value)) if value.is_integer() else repr(value)


def _nql_param_equals(path: str, text: str) -> str | None:
    """Every typed field a param with this text may be stored as (params keep their type)."""
    quoted = _nql_string(text)
    if quoted is None:
        return None
    options = [f"(`{path}`:string = {quoted})"]
    if text in ("True", "False"):
        options.append(f"(`{path}`:bool = {text.lower()})")
    with contextlib.suppress(ValueError):
        number = float(text)
        if math.isfinite(number):
            if re.fullmatch(r"[-+]?\d+", text) and INT32[0] <= int(text) <= INT32[1]:
                options.append(f"(`{path}`:integer = {int(text)})")
            elif repr(number) == text:
                options.append(f"(`{path}`:float = {text})")
    return options[0] if len(options) == 1 else "(" + " OR ".join(options) + ")"


def _nql_condition(c: Clause) -> str | None:
    """The Neptune query for one clause, or None when only the core can evaluate it."""
    if "`" in c.key:
        return None
    if c.entity == "metrics":
        if not math.isfinite(c.value):
            return None
        return (
            f"(last(`{METRICS}/{default_path(c.key)}`:floatSeries) {c.op} {_nql_number(c.value)})"
        )
    if c.entity == "attributes":
        fields = {"status": F_STATUS, "run_name": "sys/name"}
        path = fields.get(c.key)
        if path is None:
            return None
        kind, key = "string-field", path
    else:
        kind, key = c.entity, f"{PARAMS if c.entity == 'params' else TAGS}/{default_path(c.key)}"
    values = c.value if c.op in ("IN",) else (c.value,) if c.op in ("=",) else None
    if values is not None:
        if kind == "params":
            options = [_nql_param_equals(key, v) for v in values]
        else:
            options = [
                None if (q := _nql_string(v)) is None else f"(`{key}`:string = {q})" for v in values
            ]
        if any(o is None for o in options) or not options:
            return None
        return (
            options[0] if len(options) == 1 else "(" + " OR ".join(o or "" for o in options) + ")"
        )
    if c.op == "LIKE" and kind != "params":
        inner = c.value[1:-1] if len(c.value) >= 2 and c.value[0] == c.value[-1] == "%" else None
        if inner and not re.search(r"[%_]", inner) and (q := _nql_string(inner)) is not None:
            return f"(`{key}`:string CONTAINS {q})"
    return None


def to_nql(clauses: Sequence[Clause], experiments: Sequence[str]) -> tuple[str, bool]:
    """Neptune's query for ``clauses`` in ``experiments``, and whether it is exact.

    Clauses Neptune's query language cannot express are left to the core, which evaluates the
    whole filter again on what the server returns; the query then only narrows the search.
    """
    parts: list[str] = []
    quoted = [_nql_string(e) for e in experiments]
    if all(q is not None for q in quoted):
        options = [f"(`{F_EXPERIMENT}`:string = {q})" for q in quoted]
        parts.append(options[0] if len(options) == 1 else "(" + " OR ".join(options) + ")")
    exact = len(parts) == 1
    for c in clauses:
        translated = _nql_condition(c)
        if translated is None:
            exact = False
        else:
            parts.append(translated)
    return " AND ".join(parts), exact


# -- the backend -----------------------------------------------------------------------------
class NeptuneClientError(Exception):
    """The neptune client failed; the message names the operation and holds no secret."""


class _Secret:
    """Holds a credential; prints as ``***`` everywhere."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__


def _decode_token(token: str) -> dict[str, Any]:
    try:
        data = json.loads(base64.b64decode(token.strip().encode()).decode("utf-8"))
    except Exception:
        data = None
    if not isinstance(data, dict):
        raise InvalidInput(
            "the Neptune API token is not valid (Neptune tokens are base64-encoded JSON); copy "
            "it again from your Neptune server and set NEPTUNE_API_TOKEN"
        )
    return data


@dataclass
class _Run:
    """What the backend keeps about one run this process writes to."""

    id: str
    obj: Any
    name: str
    experiment: str
    params: KeyPaths = field(default_factory=KeyPaths)
    metrics: KeyPaths = field(default_factory=KeyPaths)
    tags: KeyPaths = field(default_factory=KeyPaths)
    files: set[str] = field(default_factory=set)
    lane_last: dict[str, int] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    ended: bool = False


def _artifact_conflict(files: set[str], path: str) -> str | None:
    parts = path.split("/")
    for i in range(1, len(parts)):
        if "/".join(parts[:i]) in files:
            return "/".join(parts[:i])
    prefix = path + "/"
    return next((f for f in files if f.startswith(prefix)), None)


class _ToTrackkitLogger(logging.Handler):
    """Hands the client's log records to the ``trackkit.neptune`` logger."""

    def emit(self, record: logging.LogRecord) -> None:
        target = logging.getLogger("trackkit.neptune")
        if target.isEnabledFor(record.levelno):
            target.handle(record)


class _VerboseHandler(logging.Handler):
    """Prints the client's log lines on stderr (``TRACKKIT_VERBOSE=1``)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def _route_sdk_logs() -> None:
    """Keep the client's log lines off stdout, where they mixed into a program's own output.

    The client's own handlers (they write to stdout) are replaced: its records go to the
    ``trackkit.neptune`` logger (warnings reach stderr unless the program configured logging),
    or, with ``TRACKKIT_VERBOSE=1``, are printed on stderr. Handlers a program added are kept.
    """
    verbose = env.flag(VERBOSE_ENV)
    for name in SDK_LOGGERS:
        sdk_logger = logging.getLogger(name)
        formatter = None
        for handler in list(sdk_logger.handlers):
            own = type(handler).__module__.startswith("neptune.")
            if own or isinstance(handler, (_ToTrackkitLogger, _VerboseHandler)):
                formatter = formatter or handler.formatter
                sdk_logger.removeHandler(handler)
        if verbose:
            handler = _VerboseHandler()
            handler.setFormatter(formatter or logging.Formatter("[%(name)s] %(message)s"))
            sdk_logger.addHandler(handler)
        else:
            sdk_logger.addHandler(_ToTrackkitLogger())
        sdk_logger.propagate = False


class NeptuneBackend(Backend):
    """trackkit on Neptune (``pip install 'trackkit[neptune]'``); see docs/neptune.md.

    Args:
        mode: ``"offline"``, ``"debug"``, ``"async"`` or ``"sync"``. Default: ``"offline"`` when
            ``$TRACKKIT_OFFLINE`` is set; else ``$NEPTUNE_MODE``; else ``"async"`` when a project
            and an API token are configured; else ``"offline"``.
        project: ``workspace/project``; defaults to ``$NEPTUNE_PROJECT``.
        api_token: defaults to ``$NEPTUNE_API_TOKEN``; never printed, logged or journaled.
        api_url: the address of a self-hosted Neptune server, when it differs from the one
            recorded in the token.
        data_dir: Neptune's local directory (offline runs, the async queue); defaults to
            ``$NEPTUNE_DATA_DIRECTORY``, else ``<$TRACKKIT_DIR or .trackkit>/.neptune``.
        registry_path: the offline registry's sqlite file; defaults to
            ``<$TRACKKIT_DIR or .trackkit>/neptune-registry.db``.
        monitoring: let Neptune capture stdout, stderr and hardware metrics (off by default).

    Raises:
        InvalidInput: an unknown mode, or a server mode without a project or token.
    """

    name = "neptune"
    extra = "neptune"
    sdk = "neptune"
    capabilities = Capabilities(
        artifacts=True,
        models=True,
        registry=True,
        search_runs=True,
        resume=True,
        download_artifacts=True,
        native_tables=False,
    )
    # Field paths: 1024 bytes; String fields: 16,384 characters (the client cuts longer ones).
    # Keys stay at 250 characters so that the longest escaped path fits in 1024 bytes.
    limits = Limits(
        key_length=250,
        param_value_length=16384,
        tag_value_length=16384,
        key_invalid_chars=None,
        batch_metrics=1000,
        batch_params_tags=100,
        batch_total=1000,
    )

    def __init__(
        self,
        mode: str | None = None,
        project: str | None = None,
        api_token: str | None = None,
        api_url: str | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        registry_path: str | os.PathLike[str] | None = None,
        monitoring: bool = False,
    ) -> None:
        self._neptune = import_sdk("neptune", extra="neptune", purpose="the neptune backend")
        self.project = project or os.environ.get("NEPTUNE_PROJECT") or None
        token = api_token or os.environ.get("NEPTUNE_API_TOKEN") or None
        self.mode = self._resolve_mode(mode, token)
        self.api_url = api_url
        self.data_dir = Path(
            data_dir
            or os.environ.get("NEPTUNE_DATA_DIRECTORY")
            or Path(os.environ.get("TRACKKIT_DIR") or ".trackkit") / ".neptune"
        ).resolve()
        self.registry_path = Path(
            registry_path
            or Path(os.environ.get("TRACKKIT_DIR") or ".trackkit") / "neptune-registry.db"
        ).resolve()
        self.monitoring = bool(monitoring)
        self._token: _Secret | None = None
        self._secrets = [_Secret(token)] if token else []
        self.server: str | None = None
        if self.mode in SERVER_MODES:
            if not self.project:
                raise InvalidInput(
                    f"the neptune backend in {self.mode} mode needs a project: set "
                    "NEPTUNE_PROJECT=workspace/project or pass project=..."
                )
            if not token:
                raise InvalidInput(
                    f"the neptune backend in {self.mode} mode needs an API token: set "
                    "NEPTUNE_API_TOKEN (or use mode='offline' and `neptune sync` later)"
                )
            data = _decode_token(token)
            if api_url:
                data.update(api_address=api_url, api_url=api_url)
                token = base64.b64encode(json.dumps(data).encode()).decode()
            self._token = _Secret(token)
            self._secrets.append(self._token)
            address = data.get("api_url") or data.get("api_address")
            self.server = str(address) if address else None
        # Neptune cannot reopen an offline run; Backend declares capabilities per class, but
        # the core reads them from the instance, so one instance may narrow them (as limits)
        self.capabilities = replace(type(self).capabilities, resume=self.mode != "offline")
        self._lock = threading.RLock()
        self._runs: dict[str, _Run] = {}
        self._closed_objects: list[Any] = []
        self._models: dict[str, tuple[Any, dict[int, Any]]] = {}
        self._project_obj: Any = None

    @staticmethod
    def _resolve_mode(mode: str | None, token: str | None) -> str:
        if mode is None:
            if env.flag(OFFLINE_ENV):
                mode = "offline"
            elif os.environ.get("NEPTUNE_MODE"):
                mode = os.environ["NEPTUNE_MODE"].strip()
            else:
                has_project = bool(os.environ.get("NEPTUNE_PROJECT"))
                mode = "async" if (has_project and token) else "offline"
        if mode not in MODES:
            raise InvalidInput(f"neptune mode must be one of {MODES}, got {mode!r}")
        return mode

    # -- descriptions, options, secrets ---------------------------------------------------------
    def describe(self) -> str:
        if self.mode in SERVER_MODES:
            where = f"project {self.project}" + (f" on {self.server}" if self.server else "")
            return redact(f"neptune ({self.mode}, {where})")
        if self.mode == "offline":
            return f"neptune (offline, {self.data_dir})"
        return "neptune (debug, in memory)"

    def replay_options(self) -> dict[str, Any]:
        # `trackkit sync` repeats deferred calls on the server: offline work syncs to async mode.
        # The token never goes to a journal: sync reads NEPTUNE_API_TOKEN.
        options: dict[str, Any] = {
            "mode": "debug"
            if self.mode == "debug"
            else (self.mode if self.mode in SERVER_MODES else "async"),
            "data_dir": str(self.data_dir),
        }
        if self.project:
            options["project"] = self.project
        if self.api_url:
            options["api_url"] = self.api_url
        if self.monitoring:
            options["monitoring"] = True
        return options

    def _clean(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret.value, "***")
        return redact(text)

    @contextlib.contextmanager
    def _sdk(self, what: str, missing: bool = False, quiet: bool = False) -> Iterator[None]:
        """Map the client's errors to trackkit's, with secrets and colour codes removed.

        ``quiet`` silences the client's warnings (its model-registry deprecation notice), only
        around calls made from the user's thread: ``warnings.catch_warnings`` is process-wide.
        """
        exceptions = self._neptune.exceptions
        try:
            if quiet:
                with warnings.catch_warnings():
                    for category in self._neptune_warnings():
                        warnings.simplefilter("ignore", category)
                    yield
            else:
                yield
        except TrackkitError:
            raise
        except Exception as e:
            text = self._clean(" ".join(_ANSI.sub("", f"{type(e).__name__}: {e}").split()))
            not_found = tuple(
                t
                for name in (
                    "ContainerUUIDNotFound",
                    "RunNotFound",
                    "ModelNotFound",
                    "ModelVersionNotFound",
                    "FetchAttributeNotFoundException",
                )
                if isinstance(t := getattr(exceptions, name, None), type)
            )
            if missing and isinstance(e, not_found):
                raise NotFound(f"{what}: {text}") from e
            metadata = getattr(exceptions, "MetadataInconsistency", None)
            if isinstance(metadata, type) and isinstance(e, metadata):
                raise InvalidInput(f"{what}: {text}") from e
            # not a TrackkitError: the core's handling of an unreachable service applies (the
            # run goes on locally, its journal is retried); a message that held a secret does
            # not keep the original exception either
            cause = (
                e if text == " ".join(_ANSI.sub("", f"{type(e).__name__}: {e}").split()) else None
            )
            raise NeptuneClientError(f"{what}: {text}") from cause

    def _neptune_warnings(self) -> tuple[type[Warning], ...]:
        module = import_sdk("neptune.common.warnings", extra="neptune", purpose="neptune")
        names = ("NeptuneDeprecationWarning", "NeptuneWarning", "NeptuneUnsupportedValue")
        return tuple(getattr(module, n) for n in names if hasattr(module, n))

    @contextlib.contextmanager
    def _data_directory(self) -> Iterator[None]:
        """Neptune reads its data directory from the environment when an object starts."""
        with _ENV_LOCK:
            _route_sdk_logs()
            saved = os.environ.get("NEPTUNE_DATA_DIRECTORY")
            os.environ["NEPTUNE_DATA_DIRECTORY"] = str(self.data_dir)
            try:
                yield
            finally:
                if saved is None:
                    os.environ.pop("NEPTUNE_DATA_DIRECTORY", None)
                else:
                    os.environ["NEPTUNE_DATA_DIRECTORY"] = saved

    def _connection(self, read_only: bool = False) -> dict[str, Any]:
        options: dict[str, Any] = {"mode": "read-only" if read_only else self.mode}
        if self.project:
            options["project"] = self.project
        if self._token is not None:
            options["api_token"] = self._token.value
        return options

    # -- runs -------------------------------------------------------------------------------------
    def _init_run(self, *, name: str | None = None, with_id: str | None = None) -> Any:
        options = self._connection()
        options["fail_on_exception"] = False
        if not self.monitoring:
            options.update(
                capture_stdout=False,
                capture_stderr=False,
                capture_hardware_metrics=False,
                capture_traceback=False,
                source_files=[],
                git_ref=False,
                dependencies=None,
            )
        if name is not None:
            options["name"] = name
        if with_id is not None:
            options["with_id"] = with_id
        with self._data_directory(), self._sdk("start a Neptune run", missing=True):
            return self._neptune.init_run(**options)

    def _object_id(self, obj: Any) -> str:
        if self.mode in SERVER_MODES:
            return str(obj["sys/id"].fetch())
        # offline and debug objects all report sys/id OFFLINE-1; their container id is unique
        # and names the offline directory `neptune sync` reads
        return str(obj._id)

    def start_run(self, experiment: str | None, name: str | None, run_id: str | None) -> RunHandle:
        if run_id is not None:
            return self._resume(run_id, experiment)
        assert experiment is not None
        obj = self._init_run(name=name)
        new_id = self._object_id(obj)
        with self._sdk(f"start run {new_id}"):
            obj[F_RUN_ID] = new_id
            obj[F_EXPERIMENT] = experiment
            obj[F_STATUS] = "RUNNING"
            obj[F_START] = datetime.now(timezone.utc)
        state = _Run(id=new_id, obj=obj, name=name or "Untitled", experiment=experiment)
        with self._lock:
            self._runs[new_id] = state
        return RunHandle(id=new_id, name=state.name, experiment=experiment)

    def _resume(self, run_id: str, experiment: str | None) -> RunHandle:
        if self.mode == "offline":
            raise self.unsupported(
                "resuming runs in offline mode (Neptune cannot reopen an offline run)",
                "start a new run, or resume it on the server after `neptune sync`",
            )
        with self._lock:
            state = self._runs.get(run_id)
        if state is None:
            if self.mode == "debug":
                raise NotFound(
                    f"no Neptune run {run_id!r} in this process (debug mode keeps runs in memory)"
                )
            obj = self._init_run(with_id=self._server_id(run_id))
            data = self._object_data(obj, run_id)
            view = run_view(data)
            state = _Run(id=run_id, obj=obj, name=view.name, experiment=view.experiment or "")
            self._load_layout(state, data)
        else:
            data = self._object_data(state.obj, run_id)
            view = run_view(data)
        if experiment is not None and experiment != state.experiment:
            raise InvalidInput(
                f"run {run_id} belongs to experiment {state.experiment!r}, not {experiment!r}"
            )
        with self._sdk(f"resume run {run_id}"):
            state.obj[F_STATUS] = "RUNNING"
            state.obj["sys/failed"] = False
        state.ended = False
        with self._lock:
            self._runs[run_id] = state
        return RunHandle(
            id=run_id,
            name=state.name,
            experiment=state.experiment,
            params={k: _atom_text(v) for k, v in view.params.items()},
            last_steps={k: max(p[0] for p in pts) for k, pts in view.metrics.items() if pts},
        )

    def _load_layout(self, state: _Run, data: NeptuneRunData) -> None:
        """Know the fields a resumed run holds, so new keys are placed around them."""
        for paths, root, codec in (
            (data.atoms, PARAMS, state.params),
            (data.atoms, TAGS, state.tags),
            (data.float_series, METRICS, state.metrics),
            (data.string_series, POINTS, state.metrics),
        ):
            for path in paths:
                below = _below(path, root)
                if below is not None:
                    codec.add(below)
        view = run_view(data)
        for path, points in data.float_series.items():
            below = _below(path, METRICS)
            if below is not None and points:
                # the series' own points come first in the view, before the points series
                lane = view.metrics[key_of(below)][: len(points)]
                state.lane_last[key_of(below)] = max(step for step, _, _ in lane)
        state.files = set(view.artifacts)
        labels = data.string_sets.get("sys/tags", set())
        state.labels = {k: f"{k}:{v}" for k, v in view.tags.items() if f"{k}:{v}" in labels}

    def _state(self, run_id: str) -> _Run:
        with self._lock:
            state = self._runs.get(run_id)
        if state is None:
            if self.mode in SERVER_MODES:
                handle = self._resume(run_id, None)  # e.g. `trackkit sync` of a journal
                state = self._runs[handle.id]
            else:
                raise NotFound(
                    f"run {run_id} is not open in this process; in {self.mode} mode Neptune "
                    "cannot reopen a run"
                )
        return state

    def end_run(self, run_id: str, status: str) -> None:
        state = self._state(run_id)
        with state.lock, self._sdk(f"end run {run_id}"):
            state.obj[F_STATUS] = status
            state.obj[F_END] = datetime.now(timezone.utc)
            state.obj["sys/failed"] = status != "FINISHED"
            state.ended = True
            if self.mode != "debug":  # debug runs stay readable in memory until close()
                state.obj.stop()
                with self._lock:
                    self._runs.pop(run_id, None)

    def log_batch(
        self,
        run_id: str,
        params: Sequence[tuple[str, ParamValue]],
        metrics: Sequence[Metric],
        tags: Sequence[tuple[str, str]],
    ) -> None:
        state = self._state(run_id)
        with state.lock, self._sdk(f"log to run {run_id}"):
            run = state.obj
            for key, value in params:
                run[_join(PARAMS, state.params.path(key))] = _param_field_value(value)
            for key, text in tags:
                run[_join(TAGS, state.tags.path(key))] = text
                self._mirror_label(state, key, text)
            by_key: dict[str, list[Metric]] = {}
            for metric in metrics:
                by_key.setdefault(metric.key, []).append(metric)
            for key, points in by_key.items():
                self._append(state, key, points)

    def _mirror_label(self, state: _Run, key: str, text: str) -> None:
        label = f"{key}:{text}"
        old = state.labels.pop(key, None)
        if old is not None and old != label:
            state.obj["sys/tags"].remove(old)
        if len(label) <= LABEL_MAX:
            if old != label:
                state.obj["sys/tags"].add(label)
            state.labels[key] = label

    def _append(self, state: _Run, key: str, points: list[Metric]) -> None:
        """Append in step order; points a Neptune series would refuse go to the points series."""
        path = state.metrics.path(key)
        last = state.lane_last.get(key, -1)
        values: list[float] = []
        steps: list[int] = []
        stamps: list[float] = []
        extra: list[str] = []
        extra_stamps: list[float] = []
        for point in sorted(points, key=lambda m: m.step):
            if math.isfinite(point.value) and last < point.step <= MAX_EXACT_STEP:
                values.append(point.value)
                steps.append(point.step)
                stamps.append(point.timestamp / 1000)
                last = point.step
            else:
                extra.append(json.dumps([point.step, point.value]))
                extra_stamps.append(point.timestamp / 1000)
        run = state.obj
        if values:
            run[_join(METRICS, path)].extend(values, steps=steps, timestamps=stamps)
            if self.mode == "debug":
                run[_join(STEPS, path)].extend([float(s) for s in steps], timestamps=stamps)
            state.lane_last[key] = last
        if extra:
            run[_join(POINTS, path)].extend(extra, timestamps=extra_stamps)

    # -- artifacts --------------------------------------------------------------------------------
    def log_artifact(self, run_id: str, local_path: Path, artifact_path: str | None) -> None:
        state = self._state(run_id)
        base = f"{artifact_path}/{local_path.name}" if artifact_path else local_path.name
        if local_path.is_dir():
            files = {
                f"{base}/{p.relative_to(local_path).as_posix()}": p
                for p in sorted(local_path.rglob("*"))
                if p.is_file()
            }
        else:
            files = {base: local_path}
        file_type = self._neptune.types.File
        with state.lock:
            for where in files:
                clash = _artifact_conflict(state.files - {where}, where)
                if clash is not None:
                    raise InvalidInput(
                        f"artifact {where!r} cannot be stored in run {run_id}: {clash!r} is "
                        "already a file there, and Neptune keeps a path either a file or a folder"
                    )
                _join(ARTIFACTS, where.split("/"))
            for where, local in files.items():
                extension = local.suffix[1:] if local.suffix else ""
                with self._sdk(f"store artifact {where!r}"), open(local, "rb") as stream:
                    # a stream is copied at once (to Neptune's upload directory, or memory), so
                    # the caller may delete its file as soon as this returns
                    state.obj[f"{ARTIFACTS}/{where}"].upload(
                        file_type.from_stream(stream, extension=extension or "bin")
                    )
                state.files.add(where)

    def download_artifacts(self, run_id: str, path: str, dst: Path) -> Path:
        view = self._view(run_id)
        wanted = {
            rel: source
            for rel, source in view.artifacts.items()
            if not path or rel == path or rel.startswith(path + "/")
        }
        if not wanted:
            raise NotFound(f"run {run_id} has no artifact {path!r}")
        for rel, source in wanted.items():
            target = dst / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            source(target)
        return dst / path if path else dst

    # -- reading runs back --------------------------------------------------------------------------
    def run_object(self, run_id: str) -> Any:
        """The client's own object of a run this backend holds open (e.g. in debug mode)."""
        with self._lock:
            state = self._runs.get(run_id)
        if state is None:
            raise NotFound(f"run {run_id} is not open in this backend")
        return state.obj

    def _object_data(self, obj: Any, run_id: str) -> NeptuneRunData:
        """Every field of a client object (debug mode, or a run on the server)."""
        attributes = self._neptune.attributes
        atom_types = (
            attributes.Float,
            attributes.Integer,
            attributes.Boolean,
            attributes.String,
            attributes.Datetime,
        )
        data = NeptuneRunData(id=run_id)
        with self._sdk(f"read run {run_id}", missing=True):
            fetched = _flatten_structure(obj.fetch())
            for path, attr in _flatten_structure(obj.get_structure()).items():
                if isinstance(attr, atom_types):
                    data.atoms[path] = fetched[path] if path in fetched else attr.fetch()
                elif isinstance(attr, attributes.FloatSeries):
                    data.float_series[path] = _series_points(attr, self.mode == "debug")
                elif isinstance(attr, attributes.StringSeries):
                    data.string_series[path] = _series_points(attr, self.mode == "debug")
                elif isinstance(attr, attributes.StringSet):
                    data.string_sets[path] = set(attr.fetch())
                elif isinstance(attr, attributes.File):
                    data.files[path] = _downloader(attr)
                else:
                    data.skipped.append(f"{path}: {type(attr).__name__} is not read by trackkit")
        return data

    def _offline_data(self, run_id: str | None = None) -> list[NeptuneRunData]:
        from trackkit.copy import read_offline_runs

        with self._lock:
            open_runs = [s for s in self._runs.values() if run_id is None or s.id == run_id]
        for state in open_runs:
            with state.lock, self._sdk("flush an offline run"):
                state.obj.wait()
        if not (self.data_dir / "offline").is_dir():
            return []
        return read_offline_runs(self.data_dir, run_ids=None if run_id is None else [run_id])

    def _view(self, run_id: str) -> RunView:
        if self.mode == "offline":
            found = self._offline_data(run_id)
            if not found:
                raise NotFound(f"no offline Neptune run {run_id!r} under {self.data_dir}")
            return run_view(found[0])
        with self._lock:
            state = self._runs.get(run_id)
        if state is not None:
            with state.lock:
                return run_view(self._object_data(state.obj, run_id))
        if self.mode == "debug":
            raise NotFound(f"no Neptune run {run_id!r} in this process (debug mode)")
        obj = self._open_read_only(run_id)
        try:
            return run_view(self._object_data(obj, run_id))
        finally:
            with self._sdk("close a read-only run"):
                obj.stop()

    def _open_read_only(self, run_id: str) -> Any:
        options = self._connection(read_only=True)
        options["with_id"] = self._server_id(run_id)
        with self._data_directory(), self._sdk(f"open run {run_id}", missing=True):
            return self._neptune.init_run(**options)

    def _project(self) -> Any:
        if self._project_obj is None:
            options = self._connection(read_only=True)
            with self._sdk("open the Neptune project", quiet=True):
                self._project_obj = self._neptune.init_project(**options)
        return self._project_obj

    def _server_id(self, run_id: str) -> str:
        """Neptune's id of a run: itself, or the run whose trackkit/run_id it is (offline ids)."""
        if re.fullmatch(r"[A-Za-z0-9]+-\d+", run_id):
            return run_id
        query = f'(`{F_RUN_ID}`:string = "{run_id}")' if '"' not in run_id else None
        if query is None:
            raise NotFound(f"no Neptune run {run_id!r}")
        with self._sdk("find a run"):
            rows = (
                self._project()
                .fetch_runs_table(query=query, columns=["sys/id"], progress_bar=False)
                .to_rows()
            )
        if not rows:
            raise NotFound(
                f"no Neptune run {run_id!r} on the server (an offline run gets a new id on "
                "`neptune sync`; trackkit finds it by trackkit/run_id once it is synced)"
            )
        return str(rows[0].get_attribute_value("sys/id"))

    def get_run(self, run_id: str) -> RunInfo:
        return self._view(run_id).info()

    def search_runs(self, query: Query) -> list[RunInfo]:
        if self.mode in SERVER_MODES:
            infos = self._search_server(query)
        elif self.mode == "offline":
            infos = [run_view(d).info() for d in self._offline_data()]
        else:
            with self._lock:
                states = list(self._runs.values())
            infos = []
            for state in states:
                with state.lock:
                    infos.append(run_view(self._object_data(state.obj, state.id)).info())
        wanted = set(query.experiments)
        return [info for info in infos if info.experiment in wanted]

    def _search_server(self, query: Query) -> list[RunInfo]:
        """Every run the NQL pre-filter lets through, uncut: the server orders runs by
        ``sys/creation_time`` (a synced offline run's is its upload), not as the core does."""
        nql, _exact = to_nql(query.clauses, query.experiments)
        with self._sdk("search runs"):
            table = self._project().fetch_runs_table(
                query=nql or None,
                limit=None,
                sort_by="sys/creation_time",
                ascending=False,
                progress_bar=False,
            )
            return [_row_info(row) for row in table.to_rows()]

    # -- registry ---------------------------------------------------------------------------------
    def offline_registry(self) -> Path | None:
        # Offline mode cannot create model objects: the core keeps the registry in this file
        # and `trackkit sync` repeats each change on the server.
        return self.registry_path if self.mode == "offline" else None

    def check_registration(self, name: str, source: str, run_id: str | None) -> str | None:
        if run_id is None and source.startswith("runs:/"):
            return source[len("runs:/") :].split("/", 1)[0] or None
        return run_id

    def _model(self, name: str, create: bool = False) -> tuple[Any, dict[int, Any]]:
        """The model object of ``name`` and its versions' objects (opened as needed)."""
        with self._lock:
            found = self._models.get(name)
        if found is not None:
            return found
        model = None if self.mode == "debug" else self._find_server_model(name)
        if model is None:
            if not create:
                raise NotFound(f"no registered model named {name!r}")
            model = self._create_model(name)
        entry: tuple[Any, dict[int, Any]] = (model, {})
        with self._lock:
            return self._models.setdefault(name, entry)

    def _create_model(self, name: str) -> Any:
        key = re.sub(r"[^A-Z0-9]", "", name.upper())[:8] or "MODEL"
        conflict = getattr(self._neptune.exceptions, "NeptuneModelKeyAlreadyExistsError", None)
        for attempt in range(10):
            candidate = key if attempt == 0 else f"{key}{attempt + 1}"
            try:
                with self._data_directory(), self._sdk(f"create model {name!r}", quiet=True):
                    model = self._neptune.init_model(key=candidate, name=name, **self._connection())
                    model["trackkit/name"] = name
                    return model
            except NeptuneClientError as e:
                if conflict is None or not isinstance(e.__cause__, conflict):
                    raise
        raise InvalidInput(f"no free Neptune model key for {name!r} (tried {key}..{key}10)")

    def _find_server_model(self, name: str) -> Any:
        with self._sdk("list models", quiet=True):
            rows = (
                self._project()
                .fetch_models_table(columns=["sys/name"], progress_bar=False)
                .to_rows()
            )
        for row in rows:
            if row.get_attribute_value("sys/name") == name:
                with self._data_directory(), self._sdk(f"open model {name!r}", True, True):
                    return self._neptune.init_model(
                        with_id=row.get_attribute_value("sys/id"), **self._connection()
                    )
        return None

    def _version_numbers(self, name: str) -> list[int]:
        model, versions = self._model(name)
        if self.mode == "debug":
            return sorted(versions)
        with self._sdk(f"list versions of {name!r}", quiet=True):
            rows = model.fetch_model_versions_table(columns=["sys/id"], progress_bar=False)
            ids = [str(r.get_attribute_value("sys/id")) for r in rows.to_rows()]
        return sorted(int(i.rsplit("-", 1)[1]) for i in ids if re.search(r"-\d+$", i))

    def _version_object(self, name: str, number: int) -> Any:
        model, versions = self._model(name)
        if number in versions:
            return versions[number]
        if self.mode == "debug" or number not in self._version_numbers(name):
            raise NotFound(f"registered model {name!r} has no version {number}")
        with self._sdk("read the model id"):
            model_id = model["sys/id"].fetch()
        with self._data_directory(), self._sdk(f"open version {number} of {name!r}", True, True):
            obj = self._neptune.init_model_version(
                with_id=f"{model_id}-{number}", **self._connection()
            )
        versions[number] = obj
        return obj

    def _aliases(self, name: str) -> dict[str, int]:
        model, _ = self._model(name)
        with self._sdk(f"read aliases of {name!r}"):
            if "aliases" not in model.get_structure().get("trackkit", {}):
                return {}
            return {a: int(n) for a, n in model["trackkit/aliases"].fetch().items()}

    def _model_version(self, name: str, number: int, aliases: Mapping[str, int]) -> ModelVersion:
        obj = self._version_object(name, number)
        with self._sdk(f"read version {number} of {name!r}"):
            fields = _flatten_structure(obj.fetch())
            structure = _flatten_structure(obj.get_structure())

            def read(path: str) -> Any:
                if path in fields:
                    return fields[path]
                return structure[path].fetch() if path in structure else None

            description = read("sys/description")
            return ModelVersion(
                name=name,
                version=number,
                aliases=tuple(sorted(a for a, n in aliases.items() if n == number)),
                run_id=read("trackkit/run_id") or None,
                source=str(read("trackkit/source") or ""),
                description=description or None,
                created_at=_as_datetime(read("trackkit/created")),
            )

    def create_model_version(
        self, name: str, source: str, run_id: str | None, description: str | None
    ) -> ModelVersion:
        run_id = self.check_registration(name, source, run_id)
        model, versions = self._model(name, create=True)
        with self._data_directory(), self._sdk(f"register a version of {name!r}", quiet=True):
            obj = self._neptune.init_model_version(
                model=str(model["sys/id"].fetch()), **self._connection()
            )
            if self.mode == "debug":  # in-memory versions are all numbered 1: count them here
                number = max(versions, default=0) + 1
            else:
                number = int(str(obj["sys/id"].fetch()).rsplit("-", 1)[1])
            versions[number] = obj
            obj["trackkit/version"] = number
            obj["trackkit/source"] = source
            if run_id:
                obj["trackkit/run_id"] = run_id
            if description:
                obj["sys/description"] = description
            obj["trackkit/created"] = datetime.now(timezone.utc)
        return self._model_version(name, number, {})

    def get_model_version(self, name: str, version: int) -> ModelVersion:
        return self._model_version(name, version, self._aliases(name))

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        aliases = self._aliases(name)
        if alias not in aliases:
            raise NotFound(f"registered model {name!r} has no alias {alias!r}")
        return self._model_version(name, aliases[alias], aliases)

    def list_model_versions(self, name: str) -> list[ModelVersion]:
        aliases = self._aliases(name)
        return [self._model_version(name, n, aliases) for n in self._version_numbers(name)]

    def set_model_alias(self, name: str, alias: str, version: int) -> None:
        self._version_object(name, version)  # NotFound for a missing version
        aliases = self._aliases(name)
        previous = aliases.get(alias)
        model, _ = self._model(name)
        with self._sdk(f"set alias {alias!r} of {name!r}"):
            model[f"trackkit/aliases/{alias}"] = version
        aliases[alias] = version
        for number in {version, previous} - {None}:
            self._mirror_aliases(name, int(number), aliases)  # type: ignore[arg-type]

    def delete_model_alias(self, name: str, alias: str) -> None:
        aliases = self._aliases(name)
        if alias not in aliases:
            raise NotFound(f"registered model {name!r} has no alias {alias!r}")
        number = aliases.pop(alias)
        model, _ = self._model(name)
        with self._sdk(f"delete alias {alias!r} of {name!r}"):
            del model[f"trackkit/aliases/{alias}"]
        self._mirror_aliases(name, number, aliases)

    def _mirror_aliases(self, name: str, number: int, aliases: Mapping[str, int]) -> None:
        """Show a version's aliases on it: a stage for the strongest stage alias, and a set."""
        obj = self._version_object(name, number)
        held = sorted(a for a, n in aliases.items() if n == number)
        stage = next((s for s in STAGES if s in held), "none")
        with self._sdk(f"update version {number} of {name!r}", quiet=True):
            obj.change_stage(stage)
            if "aliases" in obj.get_structure().get("trackkit", {}):
                obj["trackkit/aliases"].clear()
            if held:
                obj["trackkit/aliases"].add(held)

    def update_model_version(self, name: str, version: int, description: str) -> ModelVersion:
        obj = self._version_object(name, version)
        with self._sdk(f"update version {version} of {name!r}"):
            obj["sys/description"] = description
        return self._model_version(name, version, self._aliases(name))

    def model_objects(self, name: str) -> tuple[Any, dict[int, Any]]:
        """The client's model object of ``name`` and its version objects (debug mode reads)."""
        return self._model(name)

    # -- lifecycle --------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            objects = [s.obj for s in self._runs.values()]
            for model, versions in self._models.values():
                objects.extend([model, *versions.values()])
            if self._project_obj is not None:
                objects.append(self._project_obj)
            self._runs.clear()
            self._models.clear()
            self._project_obj = None
        for obj in objects:
            with contextlib.suppress(Exception), self._sdk("stop a Neptune object"):
                obj.stop()


def _flatten_structure(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(_flatten_structure(value, path))
        else:
            flat[path] = value
    return flat


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


def _row_info(row: Any) -> RunInfo:
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
    data.created = _as_datetime(created)
    info = run_view(data).info()
    return replace(info, id=str(data.atoms.get(F_RUN_ID) or info.id))


@hookimpl
def trackkit_register_backends() -> list[type[Backend]]:
    return [NeptuneBackend]
