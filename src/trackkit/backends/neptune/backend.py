"""The Neptune backend: trackkit on the ``neptune`` client (1.x), offline, in memory or on a server.

Modes: ``offline`` (operation logs under ``.trackkit/.neptune/offline``, uploaded later by
``neptune sync``), ``debug`` (in memory, for tests), and the server modes ``async`` and ``sync``.
This module adapts trackkit's calls to the client; where each piece of a run goes is in
``keys``, reading runs back in ``view`` and ``offline``, search in ``query``, the registry in
``registry`` (docs/neptune.md).
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import re
import shlex
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from trackkit import env
from trackkit._lazy import import_sdk
from trackkit._secrets import redact, without_password
from trackkit.backend import Backend, Capabilities, Limits
from trackkit.backends.neptune.client import NeptuneClient, Secret, decode_token
from trackkit.backends.neptune.keys import (
    ARTIFACTS,
    F_END,
    F_EXPERIMENT,
    F_FAILED,
    F_LABELS,
    F_PARENT,
    F_RUN_ID,
    F_START,
    F_STATUS,
    LABEL_MAX,
    MAX_EXACT_STEP,
    METRICS,
    PARAMS,
    POINT_STAMPS,
    POINTS,
    STAMPS,
    STEPS,
    TAGS,
    KeyPaths,
    below,
    field_path,
    key_of,
    param_field_value,
)
from trackkit.backends.neptune.offline import OfflineRuns, outside_warning
from trackkit.backends.neptune.query import to_nql
from trackkit.backends.neptune.registry import NeptuneRegistry
from trackkit.backends.neptune.view import (
    NeptuneRunData,
    RunView,
    artifact_entries,
    atom_text,
    client_data,
    row_info,
    run_view,
)
from trackkit.entities import MetricPoint, RunHandle
from trackkit.errors import InvalidInput, NotFound, TrackkitWarning

if TYPE_CHECKING:
    from trackkit.entities import (
        ArtifactInfo,
        Metric,
        ModelVersion,
        ParamValue,
        RegisteredModel,
        RunInfo,
    )
    from trackkit.search import Query

MODES = ("offline", "debug", "async", "sync")
SERVER_MODES = ("async", "sync")
OFFLINE_ENV = "TRACKKIT_OFFLINE"


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


def _address_secrets(url: str | None) -> list[Secret]:
    """The credentials inside a server address (``https://user:password@host``), if any."""
    if not url or without_password(url) == url:
        return []
    found = [Secret(url)]
    with contextlib.suppress(ValueError):
        password = urlsplit(url).password
        if password and len(password) >= 4:  # shorter ones are masked in the address only
            found += [Secret(password), Secret(unquote(password))]
    return found


def _artifact_conflict(files: set[str], path: str) -> str | None:
    parts = path.split("/")
    for i in range(1, len(parts)):
        if "/".join(parts[:i]) in files:
            return "/".join(parts[:i])
    prefix = path + "/"
    return next((f for f in files if f.startswith(prefix)), None)


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
        outside_files: offline mode: also read the files a run's logs name outside the folder
            it was made in (off by default: an offline directory from elsewhere could name any
            file; only for data you trust). A TrackkitWarning names each file read so.

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
        nested_runs=True,
        metric_history=True,
        list_artifacts=True,
        list_experiments=True,
        list_registered_models=True,
        registered_model_tags=True,
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
        outside_files: bool = False,
    ) -> None:
        neptune = import_sdk("neptune", extra="neptune", purpose="the neptune backend")
        self.project = project or os.environ.get("NEPTUNE_PROJECT") or None
        token = api_token or os.environ.get("NEPTUNE_API_TOKEN") or None
        self.mode = self._resolve_mode(mode, token)
        # a password in the address stays in memory: what is written down (journals, the
        # description) is the address without it, and messages mask it
        self.api_url = without_password(api_url) if api_url else None
        self.data_dir = Path(
            data_dir
            or os.environ.get("NEPTUNE_DATA_DIRECTORY")
            or Path(os.environ.get("TRACKKIT_DIR") or ".trackkit") / ".neptune"
        ).resolve()
        self.registry_path = Path(
            registry_path
            or Path(os.environ.get("TRACKKIT_DIR") or ".trackkit") / "neptune-registry.db"
        ).resolve()
        # -o monitoring=false passes text: "false" must not turn it on
        self.monitoring = env.on_off("monitoring", monitoring)
        self.outside_files = env.on_off("outside_files", outside_files)
        self._outside_shown: set[str] = set()  # outside files already warned about
        self._offline = OfflineRuns(self.data_dir, self.outside_files)
        secret: Secret | None = None
        secrets = [Secret(token)] if token else []
        secrets += _address_secrets(api_url)
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
            data = decode_token(token)
            if api_url:
                data.update(api_address=api_url, api_url=api_url)
                token = base64.b64encode(json.dumps(data).encode()).decode()
            secret = Secret(token)
            secrets.append(secret)
            address = data.get("api_url") or data.get("api_address")
            self.server = without_password(str(address)) if address else None
        # Neptune cannot reopen an offline run; Backend declares capabilities per class, but
        # the core reads them from the instance, so one instance may narrow them (as limits)
        self.capabilities = replace(type(self).capabilities, resume=self.mode != "offline")
        self._client = NeptuneClient(
            neptune, self.mode, self.project, secret, secrets, self.data_dir
        )
        self._registry = NeptuneRegistry(self._client)
        self._lock = threading.RLock()
        self._page: str | None = None  # the project's page on the server ("": unknown)
        self._runs: dict[str, _Run] = {}

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

    # -- descriptions, options ----------------------------------------------------------------
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

    # -- runs -------------------------------------------------------------------------------------
    def _init_run(self, *, name: str | None = None, with_id: str | None = None) -> Any:
        client = self._client
        options = client.connection()
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
        with client.data_directory(), client.errors("start a Neptune run", missing=True):
            return client.sdk.init_run(**options)

    def _object_id(self, obj: Any) -> str:
        if self.mode in SERVER_MODES:
            return str(obj["sys/id"].fetch())
        # offline and debug objects all report sys/id OFFLINE-1; their container id is unique
        # and names the offline directory `neptune sync` reads
        return str(obj._id)

    def start_run(
        self,
        experiment: str | None,
        name: str | None,
        run_id: str | None,
        parent_id: str | None = None,
    ) -> RunHandle:
        if run_id is not None:
            return self._resume(run_id, experiment)
        assert experiment is not None
        obj = self._init_run(name=name)
        new_id = self._object_id(obj)
        with self._client.errors(f"start run {new_id}"):
            obj[F_RUN_ID] = new_id
            obj[F_EXPERIMENT] = experiment
            if parent_id is not None:
                obj[F_PARENT] = parent_id
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
        with self._client.errors(f"resume run {run_id}"):
            state.obj[F_STATUS] = "RUNNING"
            state.obj[F_FAILED] = False
        state.ended = False
        with self._lock:
            self._runs[run_id] = state
        return RunHandle(
            id=run_id,
            name=state.name,
            experiment=state.experiment,
            params={k: atom_text(v) for k, v in view.params.items()},
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
                segments = below(path, root)
                if segments is not None:
                    codec.add(segments)
        view = run_view(data)
        for path, points in data.float_series.items():
            segments = below(path, METRICS)
            if segments is not None and points:
                # the series' own points come first in the view, before the points series
                lane = view.metrics[key_of(segments)][: len(points)]
                state.lane_last[key_of(segments)] = max(step for step, _, _ in lane)
        state.files = set(view.artifacts)
        labels = data.string_sets.get(F_LABELS, set())
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
        with state.lock, self._client.errors(f"end run {run_id}"):
            state.obj[F_STATUS] = status
            state.obj[F_END] = datetime.now(timezone.utc)
            state.obj[F_FAILED] = status != "FINISHED"
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
        with state.lock, self._client.errors(f"log to run {run_id}"):
            run = state.obj
            for key, value in params:
                run[field_path(PARAMS, state.params.path(key))] = param_field_value(value)
            for key, text in tags:
                run[field_path(TAGS, state.tags.path(key))] = text
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
            state.obj[F_LABELS].remove(old)
        if len(label) <= LABEL_MAX:
            if old != label:
                state.obj[F_LABELS].add(label)
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
            run[field_path(METRICS, path)].extend(values, steps=steps, timestamps=stamps)
            if self.mode == "debug":
                run[field_path(STEPS, path)].extend([float(s) for s in steps], timestamps=stamps)
                run[field_path(STAMPS, path)].extend([t * 1000 for t in stamps], timestamps=stamps)
            state.lane_last[key] = last
        if extra:
            run[field_path(POINTS, path)].extend(extra, timestamps=extra_stamps)
            if self.mode == "debug":
                ms = [t * 1000 for t in extra_stamps]
                run[field_path(POINT_STAMPS, path)].extend(ms, timestamps=extra_stamps)

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
        file_type = self._client.sdk.types.File
        with state.lock:
            for where in files:
                clash = _artifact_conflict(state.files - {where}, where)
                if clash is not None:
                    raise InvalidInput(
                        f"artifact {where!r} cannot be stored in run {run_id}: {clash!r} is "
                        "already a file there, and Neptune keeps a path either a file or a folder"
                    )
                field_path(ARTIFACTS, where.split("/"))
            for where, local in files.items():
                extension = local.suffix[1:] if local.suffix else ""
                with self._client.errors(f"store artifact {where!r}"), open(local, "rb") as stream:
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
        with self._client.errors(f"read run {run_id}", missing=True):
            return client_data(obj, run_id, self._client.sdk.attributes, self.mode == "debug")

    def _offline_views(self, run_id: str | None = None) -> list[RunView]:
        """The offline runs (or ``run_id``'s), oldest first, read from the data directory
        (each run open here flushed first; a run read before and unchanged is not read again)."""
        with self._lock:
            open_runs = [s for s in self._runs.values() if run_id is None or s.id == run_id]
        for state in open_runs:
            with state.lock, self._client.errors("flush an offline run"):
                state.obj.wait()
        if not (self.data_dir / "offline").is_dir():
            return []
        found = self._offline.runs(run_id)
        with self._lock:
            message = outside_warning([data for data, _ in found], self._outside_shown)
        if message is not None:
            warnings.warn(message, TrackkitWarning, stacklevel=3)
        return [view for _, view in found]

    def _view(self, run_id: str) -> RunView:
        if self.mode == "offline":
            found = self._offline_views(run_id)
            if not found:
                raise NotFound(f"no offline Neptune run {run_id!r} under {self.data_dir}")
            return found[0]
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
            with self._client.errors("close a read-only run"):
                obj.stop()

    def _open_read_only(self, run_id: str) -> Any:
        client = self._client
        options = client.connection(read_only=True)
        options["with_id"] = self._server_id(run_id)
        with client.data_directory(), client.errors(f"open run {run_id}", missing=True):
            return client.sdk.init_run(**options)

    def _server_id(self, run_id: str) -> str:
        """Neptune's id of a run: itself, or the run whose trackkit/run_id it is (offline ids)."""
        if re.fullmatch(r"[A-Za-z0-9]+-\d+", run_id):
            return run_id
        query = f'(`{F_RUN_ID}`:string = "{run_id}")' if '"' not in run_id else None
        if query is None:
            raise NotFound(f"no Neptune run {run_id!r}")
        with self._client.errors("find a run"):
            rows = (
                self._client.project_object()
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
        info = self._view(run_id).info()
        return replace(info, url=self.run_url(run_id)) if self.mode in SERVER_MODES else info

    def get_metric_history(self, run_id: str, key: str) -> list[MetricPoint]:
        return [
            MetricPoint(step=step, value=value, timestamp=0 if stamp is None else stamp)
            for step, value, stamp in self._view(run_id).metrics.get(key, [])
        ]

    def get_metric_histories(
        self, run_id: str, keys: Sequence[str]
    ) -> dict[str, list[MetricPoint]]:
        metrics = self._view(run_id).metrics  # the run is read once, not once per key
        return {
            key: [
                MetricPoint(step=step, value=value, timestamp=0 if stamp is None else stamp)
                for step, value, stamp in metrics.get(key, [])
            ]
            for key in keys
        }

    def list_artifacts(self, run_id: str, path: str) -> list[ArtifactInfo]:
        return artifact_entries(self._view(run_id).artifacts, path)

    def list_experiments(self) -> list[str]:
        if self.mode in SERVER_MODES:
            with self._client.errors("list experiments"):
                table = self._client.project_object().fetch_runs_table(
                    columns=[F_EXPERIMENT], limit=None, progress_bar=False
                )
                rows = table.to_rows()
            names = set()
            for row in rows:
                with contextlib.suppress(Exception):  # a run trackkit did not write has none
                    names.add(row.get_attribute_value(F_EXPERIMENT))
            return sorted(n for n in names if isinstance(n, str) and n)
        if self.mode == "offline":
            names = {view.experiment for view in self._offline_views()}
        else:
            names = set()
        with self._lock:
            names |= {s.experiment for s in self._runs.values()}
        return sorted(n for n in names if n)

    def _project_page(self) -> str | None:
        """The project's page as Neptune's client gives it (``<app address>/<workspace>/
        <project>/``, the app address from the server's own configuration), without
        credentials; None where the client cannot say. Asked once."""
        with self._lock:
            if self._page is None:
                self._page = ""
                with contextlib.suppress(Exception):  # an older server or client: the API's
                    page = self._client.project_object().get_url()
                    parts = urlsplit(page) if isinstance(page, str) else None
                    if parts and parts.scheme in ("http", "https") and parts.hostname:
                        self._page = without_password(page) if page.endswith("/") else ""
            return self._page or None

    def _url(self, server_id: str) -> str | None:
        """The page of a run on the Neptune server, as Neptune's client builds it (its
        ``get_url``: ``<app address>/<workspace>/<project>/e/<sys/id>``): on the project's page
        the client gives, else on the API's address (one server serves both), never with
        credentials."""
        if not self.server or not self.project:
            return None
        page = self._project_page()
        if page is not None:
            return f"{page}e/{server_id}"
        parts = urlsplit(self.server)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        address = parts.netloc.rpartition("@")[2]  # host and port as written, no user:password
        base = f"{parts.scheme}://{address}{parts.path.rstrip('/')}"
        return f"{base}/{self.project}/e/{server_id}"

    def run_url(self, run_id: str) -> str | None:
        if self.mode not in SERVER_MODES:
            return None
        return self._url(self._server_id(run_id))

    def run_hint(self, run_id: str) -> str | None:
        if self.mode == "debug":
            return "debug mode keeps runs in this process's memory only"
        if self.mode != "offline":
            return None
        project = shlex.quote(self.project) if self.project else "WORKSPACE/PROJECT"
        target = f"--project {project} --object {shlex.quote(f'offline/{run_id}')}"
        if self.data_dir.name != ".neptune":  # `neptune sync --path` reads only `.neptune`
            return (
                f"`neptune sync` reads a directory named .neptune: link {self.data_dir} as "
                f"DIR/.neptune, then upload the run with `neptune sync --path DIR {target}`"
            )
        command = f"neptune sync --path {shlex.quote(str(self.data_dir.parent))} {target}"
        return f"upload it to a Neptune server with `{command}`"

    def search_runs(self, query: Query) -> list[RunInfo]:
        if self.mode in SERVER_MODES:
            infos = self._search_server(query)
        elif self.mode == "offline":
            infos = [view.info() for view in self._offline_views()]
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
        with self._client.errors("search runs"):
            table = self._client.project_object().fetch_runs_table(
                query=nql or None,
                limit=None,
                sort_by="sys/creation_time",
                ascending=False,
                progress_bar=False,
            )
            rows = table.to_rows()
            return [
                replace(row_info(row), url=self._url(str(row.get_attribute_value("sys/id"))))
                for row in rows
            ]

    # -- registry ---------------------------------------------------------------------------------
    def offline_registry(self) -> Path | None:
        # Offline mode cannot create model objects: the core keeps the registry in this file
        # and `trackkit sync` repeats each change on the server.
        return self.registry_path if self.mode == "offline" else None

    def check_registration(self, name: str, source: str, run_id: str | None) -> str | None:
        if run_id is None and source.startswith("runs:/"):
            return source[len("runs:/") :].split("/", 1)[0] or None
        return run_id

    def create_model_version(
        self, name: str, source: str, run_id: str | None, description: str | None
    ) -> ModelVersion:
        run_id = self.check_registration(name, source, run_id)
        return self._registry.create_version(name, source, run_id, description)

    def get_model_version(self, name: str, version: int) -> ModelVersion:
        return self._registry.get_version(name, version)

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        return self._registry.get_version_by_alias(name, alias)

    def list_model_versions(self, name: str) -> list[ModelVersion]:
        return self._registry.list_versions(name)

    def set_model_alias(self, name: str, alias: str, version: int) -> None:
        self._registry.set_alias(name, alias, version)

    def delete_model_alias(self, name: str, alias: str) -> None:
        self._registry.delete_alias(name, alias)

    def set_model_stage(self, name: str, version: int, stage: str) -> None:
        self._registry.set_stage(name, version, stage)

    def update_model_version(self, name: str, version: int, description: str) -> ModelVersion:
        return self._registry.update_version(name, version, description)

    def update_registered_model(self, name: str, description: str) -> RegisteredModel:
        return self._registry.update_model(name, description)

    def set_model_version_tag(self, name: str, version: int, key: str, value: str) -> None:
        self._registry.set_version_tag(name, version, key, value)

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        self._registry.set_model_tag(name, key, value)

    def list_registered_models(self) -> list[RegisteredModel]:
        if self.mode == "offline":  # the core answers from the same local registry
            from trackkit.local_registry import LocalRegistry

            local = LocalRegistry(self.registry_path)
            try:
                return local.list_registered_models()
            finally:
                local.close()
        return self._registry.list_models()

    def model_objects(self, name: str) -> tuple[Any, dict[int, Any]]:
        """The client's model object of ``name`` and its version objects (debug mode reads)."""
        return self._registry.objects(name)

    # -- lifecycle --------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            objects = [s.obj for s in self._runs.values()]
            self._runs.clear()
        for obj in objects:
            self._client.stop(obj)
        self._registry.close()
        self._client.close()
