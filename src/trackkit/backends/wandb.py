"""The Weights & Biases backend: runs, the step contract, run files, model artifacts, the registry.

Experiment -> W&B project (unless the ``project`` option fixes one); params -> ``run.config``;
each metric gets its own x-axis (``<key>:step``, via ``run.define_metric``) so steps per key and
out-of-order steps are all kept; tags -> the run summary (``tag:<key>``, mirrored as W&B tags
``key:value`` when short); artifacts -> run files under ``artifacts/``; models -> W&B
artifacts of type ``model`` holding a trackkit model package. Online, the registry is the W&B
Registry (``wandb-registry-model/<name>``); offline, a local registry file whose calls are
deferred to ``trackkit sync``. See ``docs/wandb.md``.
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from trackkit import env, hookimpl
from trackkit._lazy import import_sdk
from trackkit._secrets import redact
from trackkit.backend import Backend, Capabilities, Limits
from trackkit.entities import ModelRef, ModelVersion, RunHandle, RunInfo
from trackkit.errors import InvalidInput, NotFound, TrackkitError
from trackkit.normalize import value_text
from trackkit.search import Clause, Order

if TYPE_CHECKING:
    from trackkit.entities import Metric, ParamValue
    from trackkit.local_registry import LocalRegistry
    from trackkit.search import Query

#: the x-axis of metric ``k`` is the metric ``k:step`` (":" never occurs in a trackkit key)
STEP_SUFFIX = ":step"
#: summary keys trackkit writes; ":" keeps them apart from any metric a user can log
TAG_PREFIX = "tag:"
STATUS_KEY = "trackkit:status"
EXPERIMENT_KEY = "trackkit:experiment"
#: run files trackkit stores live under this directory of the run's files
FILES_PREFIX = "artifacts"
REGISTRY_PROJECT = "wandb-registry-model"
URI_PREFIX = "wandb-artifact:///"
MODEL_TYPE = "model"
EXIT_CODES = {"FINISHED": 0, "FAILED": 1, "KILLED": 130}
#: seconds between wandb's writes of a run's transaction log (wandb's default: 15). trackkit
#: deletes a point from its journal once wandb took it, and wandb loses what it has not
#: written when the process is killed: keep that window short.
LOG_FLUSH_INTERVAL = 0.5
MAX_WANDB_TAG = 64  # wandb.Settings rejects longer run tags
MAX_NAME = 128  # W&B project, artifact and registry collection names
_ARTIFACT_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_NOT_ARTIFACT_CHAR = re.compile(r"[^A-Za-z0-9_.\-]")
_PROJECT_FORBIDDEN = re.compile(r"[/\\#?%:\r\n]")
_NOT_FOUND = re.compile(r"not found|does not exist|could not find|no such", re.IGNORECASE)
_SECRET_SETTING = re.compile(r"key|token|secret|password|credential|proxy|header", re.IGNORECASE)
_SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=timezone.utc)
    text = str(value).rstrip("Z")
    if "." in text:  # W&B writes nanoseconds; datetime takes microseconds
        head, frac = text.split(".", 1)
        text = f"{head}.{frac[:6]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _segment_order(log: Path) -> tuple[str, float]:
    """Run directories are named ``[offline-]run-<YYYYMMDD_HHMMSS>-<id>``: order by start."""
    started = re.search(r"\d{8}_\d{6}", log.parent.name)
    return (started.group(0) if started else "", log.stat().st_mtime)


def _param_text(value: Any) -> str:
    """The trackkit text of a W&B config value (the inverse of logging a ParamValue)."""
    if isinstance(value, (str, bool, int, float)):
        return value_text(value)
    if value is None:
        return "None"
    return json.dumps(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[value]
    return None


def _user_config(config: Mapping[str, Any]) -> dict[str, str]:
    return {k: _param_text(v) for k, v in config.items() if not k.startswith("_")}


def _summary_parts(summary: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """Metrics (latest value per key) and trackkit tags held in a W&B run summary."""
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    for key, value in summary.items():
        if key.startswith(TAG_PREFIX):
            tags[key[len(TAG_PREFIX) :]] = str(value)
        elif key.startswith(("_", "trackkit:")) or key.endswith(STEP_SUFFIX):
            continue
        elif (number := _number(value)) is not None:
            metrics[key] = number
    return metrics, tags


def _last_steps(summary: Mapping[str, Any]) -> dict[str, int]:
    steps = {}
    for key, value in summary.items():
        if key.endswith(STEP_SUFFIX) and isinstance(value, (int, float)):
            steps[key[: -len(STEP_SUFFIX)]] = int(value)
    return steps


def _status(exit_code: Any, summary: Mapping[str, Any], state: str | None = None) -> str:
    recorded = summary.get(STATUS_KEY)
    if state is not None:  # a run read through the public API
        if state in ("running", "pending"):
            return "RUNNING"
        if state == "finished":
            return "FINISHED"
        if state == "killed":
            return "KILLED"
        return str(recorded) if recorded in ("FAILED", "KILLED") else "FAILED"
    if exit_code is None:
        return "RUNNING"
    if exit_code == 0:
        return "FINISHED"
    return str(recorded) if recorded in ("FAILED", "KILLED") else "FAILED"


# -- search: the parsed filter (trackkit.search) translated into a W&B pre-filter ---------------
_MONGO_OPS = {"!=": "$ne", "<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte"}


def _config_candidates(text: str) -> list[Any]:
    """The W&B config values whose trackkit text can equal ``text``."""
    found: list[Any] = [text]
    if text in ("True", "False"):
        found.append(text == "True")
    with contextlib.suppress(ValueError):
        found.append(int(text))
    with contextlib.suppress(ValueError):
        number = float(text)
        if math.isfinite(number):
            found.append(number)
    return found


def _server_clause(clause: Clause) -> dict[str, Any] | None:
    """A W&B (MongoDB-style) condition matching at least every run ``clause`` matches, or None.

    The server's answer is only narrowed by these; trackkit checks every clause exactly on the
    runs W&B returns. Config keys with a '.' are left to trackkit: W&B cannot filter them.
    """
    op, value, key = clause.op, clause.value, clause.key
    if clause.entity == "metrics":
        if key.count(".") > 4:  # W&B resolves summary names of at most 4 dots
            return None
        if not math.isfinite(value):
            return None
        path = f"summary_metrics.{key}"
        return {path: value} if op == "=" else {path: {_MONGO_OPS[op]: value}}
    if clause.entity == "params":
        if "." in key or op not in ("=", "IN"):
            return None
        texts = [value] if op == "=" else list(value)
        return {f"config.{key}": {"$in": [c for t in texts for c in _config_candidates(t)]}}
    if clause.entity == "tags":
        texts = [value] if op == "=" else list(value) if op == "IN" else []
        labels = [f"{key}:{t}" for t in texts]
        if not labels or any(len(label) > MAX_WANDB_TAG for label in labels):
            return None
        return {"tags": labels[0]} if op == "=" else {"tags": {"$in": labels}}
    column = {"run_name": "display_name", "run_id": "name"}.get(key)
    if column is None or op not in ("=", "IN"):
        return None
    return {column: value} if op == "=" else {column: {"$in": list(value)}}


def to_wandb_filter(clauses: Sequence[Clause]) -> dict[str, Any]:
    """The W&B ``Api.runs`` filter that narrows the search to (a superset of) the matches."""
    parts = [part for c in clauses if (part := _server_clause(c)) is not None]
    if not parts:
        return {}
    return parts[0] if len(parts) == 1 else {"$and": parts}


def to_wandb_order(orders: Sequence[Order]) -> str | None:
    """W&B's one-key ``order`` string for ``orders``, or None when trackkit must sort."""
    if len(orders) != 1:
        return "-created_at" if not orders else None
    (order,) = orders
    sign = "+" if order.ascending else "-"
    if order.entity == "metrics" and order.key.count(".") <= 4:
        return f"{sign}summary_metrics.{order.key}"
    if order.entity == "params" and "." not in order.key:
        return f"{sign}config.{order.key}.value"
    if order.entity == "attributes" and order.key == "start_time":
        return f"{sign}created_at"
    return None


# -- the backend ----------------------------------------------------------------------------
@dataclass
class _Open:
    """A run this backend has open: the SDK's Run and what trackkit sent it."""

    run: Any
    project: str
    experiment: str
    name: str
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    latest: dict[str, tuple[int, float, int]] = field(default_factory=dict)  # step, value, seq
    axes: dict[str, str] = field(default_factory=dict)  # each defined key's x-axis metric
    next_row: int | None = None  # W&B row number to continue from (a resumed offline run)
    started: datetime | None = None
    seq: int = 0


@dataclass
class _Record:
    """A run as its local transaction logs hold it (every segment, oldest first)."""

    run_id: str
    project: str
    name: str
    config: dict[str, Any]
    summary: dict[str, Any]
    exit_code: int | None
    step: int
    started: datetime | None
    ended: datetime | None

    @property
    def experiment(self) -> str:
        return str(self.summary.get(EXPERIMENT_KEY) or self.project)


class WandbBackend(Backend):
    """trackkit on Weights & Biases (``pip install 'trackkit[wandb]'``).

    Args:
        project: put every run in this W&B project (the experiment becomes the run's group);
            by default each experiment is its own project.
        entity: the W&B entity (team or user); default ``$WANDB_ENTITY``, else your default.
        mode: ``"online"`` or ``"offline"``; default offline when ``$TRACKKIT_OFFLINE`` is set
            or ``$WANDB_MODE`` is ``offline``, else online.
        dir: where W&B writes runs (``<dir>/wandb/``) and trackkit keeps its W&B files;
            default ``$WANDB_DIR``, else ``$TRACKKIT_DIR``, else ``./.trackkit``.
        registry: the local registry file used offline (default
            ``<dir>/trackkit-wandb/registry.db``).
        settings: keyword arguments for ``wandb.Settings`` (e.g. ``{"console": "off"}``).
        from_offline: set by ``trackkit sync``: this backend carries work recorded offline, so
            registry version numbers refer to the local registry.

    Raises:
        InvalidInput: a bad option, or online mode without W&B credentials.
    """

    name = "wandb"
    extra = "wandb"
    sdk = "wandb"
    capabilities = Capabilities(
        artifacts=True,
        models=True,
        registry=True,
        search_runs=True,
        resume=True,
        download_artifacts=True,
        native_tables=False,
    )
    # W&B has no hard name or value limits; these are conservative (docs/wandb.md, "Limits"):
    # names portable across backends, values well under W&B's 1 MB-per-value guidance.
    limits = Limits(
        key_length=250,
        param_value_length=100_000,
        tag_value_length=100_000,
        key_invalid_chars=r"[^/\w.\- ]",
        batch_metrics=1000,
        batch_params_tags=100,
        batch_total=1000,
    )
    #: Creates the public API client (``wandb.Api``); the one seam tests replace with a fake,
    #: since no W&B server can run in the test environment.
    api_factory: ClassVar[Callable[..., Any] | None] = None

    def __init__(
        self,
        project: str | None = None,
        entity: str | None = None,
        mode: str | None = None,
        dir: str | os.PathLike[str] | None = None,
        registry: str | os.PathLike[str] | None = None,
        settings: Mapping[str, Any] | None = None,
        from_offline: bool = False,
    ) -> None:
        self._wandb = import_sdk("wandb", extra="wandb", purpose="the wandb backend")
        if project is not None:
            self._check_project(project)
        self.project = project
        self.entity = entity or os.environ.get("WANDB_ENTITY") or None
        self.mode = self._resolve_mode(mode)
        base = dir or os.environ.get("WANDB_DIR") or os.environ.get("TRACKKIT_DIR") or ".trackkit"
        self.dir = Path(base).resolve()
        own = self.dir / "trackkit-wandb"
        self.registry_path = Path(registry).resolve() if registry else own / "registry.db"
        self.model_store = own / "models"
        if settings is not None and not isinstance(settings, Mapping):
            raise InvalidInput(f"settings must be a mapping, got {type(settings).__name__}")
        self._settings = dict(settings or {})
        try:
            self._sdk_settings()
        except Exception as e:
            raise InvalidInput(f"wandb.Settings rejected settings: {redact(str(e))}") from e
        self.from_offline = bool(from_offline)
        self._lock = threading.RLock()
        self._runs: dict[str, _Open] = {}
        self._records: dict[Path, tuple[tuple[float, int], dict[str, Any]]] = {}
        self._local: LocalRegistry | None = None
        self._public_api: Any = None
        if self.mode == "online" and not self._has_credentials():
            raise InvalidInput(
                "W&B online mode needs an API key and none was found (set WANDB_API_KEY or run "
                "`wandb login`); to record runs locally without one, set TRACKKIT_OFFLINE=1 "
                "(or get_tracker('wandb', mode='offline')) and upload them later with "
                "`wandb sync` then `trackkit sync`"
            )

    # -- configuration ------------------------------------------------------------------------
    @staticmethod
    def _resolve_mode(mode: str | None) -> str:
        if mode is None:
            wandb_mode = os.environ.get("WANDB_MODE", "").strip().lower()
            if wandb_mode == "disabled":
                raise InvalidInput(
                    "WANDB_MODE=disabled would drop everything trackkit logs; use "
                    "TRACKKIT_OFFLINE=1 (W&B offline mode) to keep runs local instead"
                )
            offline = env.flag("TRACKKIT_OFFLINE") or wandb_mode in ("offline", "dryrun")
            return "offline" if offline else "online"
        if mode not in ("online", "offline"):
            raise InvalidInput(f"mode must be 'online' or 'offline', got {mode!r}")
        return mode

    @staticmethod
    def _check_project(project: str) -> None:
        if (
            not isinstance(project, str)
            or not project
            or _PROJECT_FORBIDDEN.search(project)
            or len(project) > MAX_NAME
        ):
            raise InvalidInput(
                f"{project!r} cannot be a W&B project name: 1 to {MAX_NAME} characters, "
                "none of / \\ # ? % : or line breaks"
            )

    def _sdk_settings(self) -> Any:
        settings = dict(self._settings)
        if "x_transaction_log_flush_interval" in getattr(self._wandb.Settings, "model_fields", {}):
            settings.setdefault("x_transaction_log_flush_interval", LOG_FLUSH_INTERVAL)
        return self._wandb.Settings(**settings)

    def _has_credentials(self) -> bool:
        if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
            return True
        if self._settings.get("api_key") or self._settings.get("identity_token_file"):
            return True
        host = (
            self._settings.get("base_url")
            or os.environ.get("WANDB_BASE_URL")
            or "https://api.wandb.ai"
        )
        try:
            auth = importlib.import_module("wandb.sdk.lib.wbauth")
            return auth.read_netrc_auth(host=host) is not None
        except Exception:  # an SDK without this helper: let wandb.init decide
            return True

    def describe(self) -> str:
        where = f", project {self.project}" if self.project else ""
        who = f", entity {self.entity}" if self.entity else ""
        return f"wandb ({self.mode}{who}{where}, dir {self.dir})"

    def replay_options(self) -> dict[str, Any]:
        # W&B reads its API key from the environment or netrc; no secret is ever recorded.
        options: dict[str, Any] = {"dir": str(self.dir), "registry": str(self.registry_path)}
        if self.project:
            options["project"] = self.project
        if self.entity:
            options["entity"] = self.entity
        settings = {k: v for k, v in self._settings.items() if not _SECRET_SETTING.search(k)}
        if settings:
            options["settings"] = settings
        options["mode"] = "online"  # syncing means carrying the work to W&B
        if self.mode == "offline" or self.from_offline:
            options["from_offline"] = True
        return options

    @property
    def offline(self) -> bool:
        return self.mode == "offline"

    def _api(self) -> Any:
        if self._public_api is None:
            factory = type(self).api_factory or self._wandb.Api
            overrides = {"entity": self.entity} if self.entity else {}
            if self._settings.get("base_url"):
                overrides["base_url"] = self._settings["base_url"]
            self._public_api = factory(overrides=overrides, timeout=30)
        return self._public_api

    @contextlib.contextmanager
    def _mapped(self, what: str) -> Iterator[None]:
        """Turn the SDK's "not found" errors into NotFound and config conflicts into InvalidInput."""
        try:
            yield
        except TrackkitError:
            raise
        except Exception as e:
            text = redact(str(e))
            if type(e).__name__ == "ConfigError":
                raise InvalidInput(f"{what}: {text}") from e
            if _NOT_FOUND.search(text):
                raise NotFound(f"{what}: {text}") from e
            raise

    # -- local transaction logs -----------------------------------------------------------------
    def _leet(self, log: Path, *extra: str) -> str:
        """Run W&B's own reader of ``.wandb`` transaction logs (``wandb leet inspect``)."""
        util = importlib.import_module("wandb.util")
        core = util.get_core_path()
        command = [core, "leet", "inspect", "--no-observability", *extra]
        command += ["--run-file", str(log), str(log.parent.parent)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"wandb leet inspect {log} failed: {done.stderr.strip()[-500:]}")
        return done.stdout

    def _segment(self, log: Path) -> dict[str, Any]:
        """One run directory's final state, read with W&B's reader (cached until it changes)."""
        status = log.stat()
        key = (status.st_mtime, status.st_size)
        cached = self._records.get(log)
        if cached is None or cached[0] != key:
            cached = (key, json.loads(self._leet(log, "--summary", "--json")))
            self._records[log] = cached
        return cached[1]

    def _logs(self, run_id: str | None = None) -> list[Path]:
        """The run's ``.wandb`` files (every run's with None), oldest segment first."""
        pattern = f"*/run-{glob.escape(run_id)}.wandb" if run_id else "*/run-*.wandb"
        found = (self.dir / "wandb").glob(pattern)
        # skip W&B's `latest-run` link to the newest run directory
        return sorted((p for p in found if not p.parent.is_symlink()), key=_segment_order)

    def _record(self, run_id: str, logs: list[Path] | None = None) -> _Record | None:
        logs = self._logs(run_id) if logs is None else logs
        if not logs:
            return None
        config: dict[str, Any] = {}
        summary: dict[str, Any] = {}
        step, first, last = -1, None, None
        for log in logs:
            segment = self._segment(log)
            config.update(segment.get("config") or {})
            rows = segment.get("summary") or {}
            summary.update(rows)
            if isinstance(rows.get("_step"), (int, float)):
                step = max(step, int(rows["_step"]))
            first = first or segment
            last = segment
        assert first is not None and last is not None
        exit_code = last.get("exit_code")
        return _Record(
            run_id=run_id,
            project=str(first.get("project") or ""),
            name=str(last.get("name") or first.get("name") or run_id),
            config=config,
            summary=summary,
            exit_code=None if exit_code is None else int(exit_code),
            step=step,
            started=_parse_time(first.get("start_time")),
            ended=None if exit_code is None else _parse_time(last.get("last_write")),
        )

    def _info_from_record(self, record: _Record) -> RunInfo:
        metrics, tags = _summary_parts(record.summary)
        return RunInfo(
            id=record.run_id,
            name=record.name,
            experiment=record.experiment,
            status=_status(record.exit_code, record.summary),
            params=_user_config(record.config),
            metrics=metrics,
            tags=tags,
            start_time=record.started,
            end_time=record.ended,
        )

    @staticmethod
    def _info_from_open(run_id: str, state: _Open) -> RunInfo:
        return RunInfo(
            id=run_id,
            name=state.name,
            experiment=state.experiment,
            status="RUNNING",
            params=dict(state.params),
            metrics={k: v for k, (_, v, _) in state.latest.items()},
            tags=dict(state.tags),
            start_time=state.started,
            end_time=None,
        )

    # -- runs -----------------------------------------------------------------------------------
    def _init(self, project: str, experiment: str, name: str | None, run_id: str | None) -> Any:
        arguments: dict[str, Any] = {
            "project": project,
            "entity": self.entity,
            "name": name,
            "dir": str(self.dir),
            "mode": self.mode,
            "reinit": "create_new",
            "settings": self._sdk_settings(),
        }
        if self.project:
            arguments["group"] = experiment
        if run_id is not None:
            arguments["id"] = run_id
            # W&B cannot check offline that the run exists: offline resumes always succeed
            arguments["resume"] = "allow" if self.offline else "must"
        self.dir.mkdir(parents=True, exist_ok=True)
        return self._wandb.init(**arguments)

    def start_run(self, experiment: str | None, name: str | None, run_id: str | None) -> RunHandle:
        with self._lock:
            if run_id is not None:
                state = self._resume(run_id, experiment, name)
                return RunHandle(
                    id=run_id,
                    name=state.name,
                    experiment=state.experiment,
                    params=dict(state.params),
                    last_steps={k: step for k, (step, _, _) in state.latest.items()},
                )
            assert experiment is not None
            project = self.project or experiment
            self._check_project(project)
            run = self._init(project, experiment, name, None)
            state = _Open(
                run=run,
                project=project,
                experiment=experiment,
                name=name or run.name or run.id,
                started=datetime.now(timezone.utc),
            )
            if self.project:
                run.summary.update({EXPERIMENT_KEY: experiment})
            self._runs[run.id] = state
            return RunHandle(id=run.id, name=state.name, experiment=experiment)

    def _resume(self, run_id: str, experiment: str | None, name: str | None) -> _Open:
        if run_id in self._runs:
            state = self._runs[run_id]
            if experiment is not None and experiment != state.experiment:
                raise InvalidInput(
                    f"run {run_id} belongs to experiment {state.experiment!r}, not {experiment!r}"
                )
            return state
        record = self._record(run_id)
        if record is not None:
            if experiment is not None and experiment != record.experiment:
                raise InvalidInput(
                    f"run {run_id} belongs to experiment {record.experiment!r}, not {experiment!r}"
                )
            project, experiment = record.project, record.experiment
        elif self.offline:
            raise NotFound(f"no W&B run {run_id!r} under {self.dir / 'wandb'}")
        else:
            project = self.project or experiment or ""
            if not project:
                raise InvalidInput(
                    f"W&B run ids are unique within a project, and run {run_id} was not "
                    "started on this machine: pass experiment=<its project> to resume it"
                )
            experiment = experiment or project
        run = self._init(project, experiment, name or (record.name if record else None), run_id)
        config = dict(record.config) if record else {}
        summary = dict(record.summary) if record else {}
        with contextlib.suppress(Exception):  # online, W&B brings the server's state
            config.update({k: v for k, v in dict(run.config).items() if not k.startswith("_")})
            summary.update(dict(run.summary))
        metrics, tags = _summary_parts(summary)
        steps = _last_steps(summary)
        state = _Open(
            run=run,
            project=project,
            experiment=experiment,
            name=name or (record.name if record else None) or run.name or run_id,
            params=_user_config(config),
            tags=tags,
            latest={k: (steps[k], v, 0) for k, v in metrics.items() if k in steps},
            started=record.started if record else datetime.now(timezone.utc),
        )
        if self.offline and record is not None:
            # a resumed offline run restarts W&B's row counter at 0, and W&B keeps only rows
            # numbered after the last one it has: continue the numbering instead
            state.next_row = record.step + 1
        self._runs[run_id] = state
        return state

    def _open(self, run_id: str) -> _Open:
        """The open run ``run_id``, resuming it when this process has not (``trackkit sync``)."""
        state = self._runs.get(run_id)
        return state if state is not None else self._resume(run_id, None, None)

    def end_run(self, run_id: str, status: str) -> None:
        with self._lock:
            state = self._open(run_id)
            state.run.summary.update({STATUS_KEY: status})
            state.run.finish(exit_code=EXIT_CODES[status])
            del self._runs[run_id]

    def log_batch(
        self,
        run_id: str,
        params: Sequence[tuple[str, ParamValue]],
        metrics: Sequence[Metric],
        tags: Sequence[tuple[str, str]],
    ) -> None:
        with self._lock:
            state = self._open(run_id)
            if params:
                values = dict(params)
                with self._mapped(f"log params to run {run_id}"):
                    state.run.config.update(values, allow_val_change=False)
                state.params.update({k: value_text(v) for k, v in values.items()})
            if metrics:
                self._log_points(state, metrics)
            if tags:
                self._set_tags(state, dict(tags))

    @staticmethod
    def _define(run: Any, key: str) -> str:
        """Chart ``key`` against its own step; return the name of that x-axis metric."""
        # W&B keeps every row, whatever order these steps come in. Every row carries the
        # step, so W&B's step_sync (which fills in a missing one) is off: with a '.' in the
        # name it overwrites the logged step with a stale one (wandb 0.31).
        axis = key + STEP_SUFFIX
        run.define_metric(axis, hidden=True)
        run.define_metric(key, step_metric=axis, step_sync=False)
        return axis

    def _log_points(self, state: _Open, metrics: Sequence[Metric]) -> None:
        """Log a batch's points in as few W&B history rows as the step contract allows.

        A row has one timestamp and one value per key; each key carries its own step (its
        x-axis), so points of different keys share a row whatever their steps. Among the
        points with one timestamp, the n-th point of a key goes in the n-th row: a key's
        points keep their order, and W&B's row counter grows by one a row.
        """
        run, axes, latest = state.run, state.axes, state.latest
        rows: list[dict[str, Any]] = []
        first = 0  # the first row of the points with the current timestamp
        moment: int | None = None
        placed: dict[str, int] = {}  # per key, how many of its points those rows hold
        last: dict[str, int] = {}  # per key, the number of its last point in this batch
        seq = state.seq
        for key, value, step, timestamp in metrics:
            axis = axes.get(key)
            if axis is None:
                axis = axes[key] = self._define(run, key)
            if timestamp != moment:
                moment, first, placed = timestamp, len(rows), {}
            index = first + placed.get(key, 0)
            placed[key] = index - first + 1
            if index == len(rows):
                rows.append({"_timestamp": timestamp / 1000})
            row = rows[index]
            row[key] = value
            row[axis] = step
            seq += 1
            last[key] = seq
            known = latest.get(key)
            if known is None or step >= known[0]:
                latest[key] = (step, value, seq)
        state.seq = seq
        if state.next_row is None:
            for row in rows:
                run.log(row)
        else:
            for row in rows:
                run.log(row, step=state.next_row)
                state.next_row += 1
        # W&B's summary holds the last value logged; trackkit's latest is the highest step's
        fix: dict[str, Any] = {}
        for key, number in last.items():
            step, value, best = latest[key]
            if best != number:
                fix[key], fix[axes[key]] = value, step
        if fix:
            run.summary.update(fix)

    def _set_tags(self, state: _Open, tags: dict[str, str]) -> None:
        state.tags.update(tags)
        state.run.summary.update({TAG_PREFIX + k: v for k, v in tags.items()})
        # mirror as W&B tags "key:value" (W&B allows 64 characters) for W&B's UI and filters
        current = tuple(state.run.tags or ())
        others = [t for t in current if t.partition(":")[0] not in state.tags]
        mirror = [
            f"{k}:{v}" for k, v in sorted(state.tags.items()) if len(f"{k}:{v}") <= MAX_WANDB_TAG
        ]
        if tuple(others + mirror) != current:  # each assignment sends W&B a run record
            state.run.tags = tuple(others + mirror)

    # -- artifacts ------------------------------------------------------------------------------
    def log_artifact(self, run_id: str, local_path: Path, artifact_path: str | None) -> None:
        with self._lock:
            state = self._open(run_id)
            files = Path(state.run.dir)
            target = files / FILES_PREFIX / (artifact_path or "") / local_path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if local_path.is_dir():
                shutil.copytree(local_path, target, dirs_exist_ok=True)
                saved = sorted(p for p in target.rglob("*") if p.is_file())
            else:
                shutil.copy2(local_path, target)
                saved = [target]
            for path in saved:
                state.run.save(str(path), base_path=str(files), policy="now")

    def _local_files(self, run_id: str, path: str) -> dict[str, Path]:
        """The run's stored files at or under ``path`` in its local run directories."""
        found: dict[str, Path] = {}
        for log in self._logs(run_id):  # oldest first: later segments win
            base = log.parent / "files" / FILES_PREFIX
            where = base / path if path else base
            if where.is_file():
                found[path] = where
            elif where.is_dir():
                for item in where.rglob("*"):
                    if item.is_file():
                        found[item.relative_to(base).as_posix()] = item
        return found

    def download_artifacts(self, run_id: str, path: str, dst: Path) -> Path:
        with self._lock:
            local = self._local_files(run_id, path)
        if not local and not self.offline:
            return self._download_online(run_id, path, dst)
        if not local:
            raise NotFound(f"run {run_id} has no artifact {path!r} under {self.dir / 'wandb'}")
        for relative, source in local.items():
            target = dst / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        return dst / path if path else dst

    def _run_path(self, run_id: str) -> str:
        state = self._runs.get(run_id)
        record = None if state else self._record(run_id)
        project = state.project if state else record.project if record else self.project
        if not project:
            raise NotFound(
                f"cannot locate W&B run {run_id}: its run ids are unique within a project and "
                "this run was not started on this machine; set get_tracker('wandb', project=...)"
            )
        return f"{self.entity}/{project}/{run_id}" if self.entity else f"{project}/{run_id}"

    def _download_online(self, run_id: str, path: str, dst: Path) -> Path:
        wanted = f"{FILES_PREFIX}/{path}" if path else FILES_PREFIX
        with self._mapped(f"run {run_id}"):
            run = self._api().run(self._run_path(run_id))
            files = [f for f in run.files() if f.name == wanted or f.name.startswith(wanted + "/")]
        if not files:
            raise NotFound(f"run {run_id} has no artifact {path!r}")
        with tempfile.TemporaryDirectory(prefix="trackkit-wandb-") as tmp:
            for file in files:
                file.download(root=tmp, replace=True)
                target = dst / file.name[len(FILES_PREFIX) + 1 :]
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(Path(tmp) / file.name), target)
        return dst / path if path else dst

    # -- runs: reading back ---------------------------------------------------------------------
    def get_run(self, run_id: str) -> RunInfo:
        with self._lock:
            state = self._runs.get(run_id)
            if state is not None:
                return self._info_from_open(run_id, state)
        record = self._record(run_id) if self.offline else None
        if record is not None:
            return self._info_from_record(record)
        if self.offline:
            raise NotFound(f"no W&B run {run_id!r} under {self.dir / 'wandb'}")
        with self._mapped(f"run {run_id}"):
            return self._info_from_public(self._api().run(self._run_path(run_id)))

    def _info_from_public(self, run: Any) -> RunInfo:
        summary = dict(run.summary_metrics or {})
        metrics, tags = _summary_parts(summary)
        status = _status(None, summary, str(run.state))
        return RunInfo(
            id=run.id,
            name=run.name or run.id,
            experiment=str(summary.get(EXPERIMENT_KEY) or run.project),
            status=status,
            params=_user_config(run.config or {}),
            metrics=metrics,
            tags=tags,
            start_time=_parse_time(run.created_at),
            end_time=None if status == "RUNNING" else _parse_time(run.heartbeat_at),
        )

    def search_runs(self, query: Query) -> list[RunInfo]:
        if self.offline:
            return self._local_runs(query.experiments)
        return self._search_online(query)

    def _local_runs(self, experiments: Sequence[str]) -> list[RunInfo]:
        """Every run of ``experiments`` recorded under ``<dir>/wandb`` (open ones as sent)."""
        wanted = set(experiments)
        with self._lock:  # reading the transaction logs below needs no lock
            infos = {
                run_id: self._info_from_open(run_id, state)
                for run_id, state in self._runs.items()
                if state.experiment in wanted
            }
            open_runs = set(self._runs)
        by_run: dict[str, list[Path]] = {}
        for log in self._logs():
            run_id = log.stem[len("run-") :]
            if run_id not in open_runs:
                by_run.setdefault(run_id, []).append(log)
        for run_id, logs in by_run.items():
            record = self._record(run_id, logs)
            if record is not None and record.experiment in wanted:
                infos[run_id] = self._info_from_record(record)
        missing = wanted - {info.experiment for info in infos.values()}
        if missing:
            raise NotFound(
                f"no W&B run of experiment {sorted(missing)[0]!r} under {self.dir / 'wandb'}"
            )
        return list(infos.values())

    def _search_online(self, query: Query) -> list[RunInfo]:
        """Every run W&B's pre-filter lets through; the core checks and sorts them."""
        narrowed = to_wandb_filter(query.clauses)
        server_order = to_wandb_order(query.orders) if len(query.experiments) == 1 else None
        found: list[RunInfo] = []
        api = self._api()
        for experiment in query.experiments:
            self._check_project(self.project or experiment)
            conditions = [narrowed] if narrowed else []
            if self.project:
                conditions.append({"group": experiment})
            filters: dict[str, Any] = {}
            if conditions:
                filters = conditions[0] if len(conditions) == 1 else {"$and": conditions}
            path = self.project or experiment
            path = f"{self.entity}/{path}" if self.entity else path
            with self._mapped(f"search runs of {path}"):
                runs = api.runs(
                    path,
                    filters=filters,
                    order=server_order or "-created_at",
                    per_page=min(max(query.max_results, 50), 1000),
                )
                for run in runs:
                    info = self._info_from_public(run)
                    with self._lock:
                        if (state := self._runs.get(info.id)) is not None:
                            info = self._info_from_open(info.id, state)
                    found.append(info)
        return found

    # -- models ---------------------------------------------------------------------------------
    @staticmethod
    def _artifact_name(name: str, run_id: str) -> str:
        suffix = f"-{run_id}"
        return _NOT_ARTIFACT_CHAR.sub("-", name)[: MAX_NAME - len(suffix)] + suffix

    def log_model(self, run_id: str, model: Any, name: str, flavor: str) -> ModelRef:
        from trackkit import models

        with self._lock:
            state = self._open(run_id)
        artifact_name = self._artifact_name(name, run_id)
        # an alias of its own names this very version, online and offline (W&B numbers
        # versions only when they reach the server, and merges identical ones)
        ref = f"trackkit-{uuid.uuid4().hex[:12]}"
        package = self.model_store / state.project / artifact_name / ref
        package.parent.mkdir(parents=True, exist_ok=True)
        models.save_package(model, flavor, package)
        # lets register_model find the run again from the URI alone
        (package.parent / f"{ref}.run_id").write_text(run_id)
        artifact = self._wandb.Artifact(
            artifact_name,
            type=MODEL_TYPE,
            metadata={"trackkit": {"name": name, "flavor": flavor, "run_id": run_id, "ref": ref}},
        )
        # the package stays in the model store, so the artifact points at it instead of
        # copying it to W&B's staging area; `wandb sync` uploads it from there
        artifact.add_dir(str(package), policy="immutable")
        with self._lock:
            state.run.log_artifact(artifact, aliases=["latest", ref])
        if not self.offline:
            artifact.wait()  # committed, so it can be registered at once
        entity = self.entity or getattr(state.run, "entity", "") or ""
        prefix = f"{entity}/" if entity else ""
        uri = f"{URI_PREFIX}{prefix}{state.project}/{artifact_name}:{ref}"
        return ModelRef(run_id=run_id, name=name, uri=uri, flavor=flavor, backend=self.name)

    def _stored_package(self, path: str) -> Path | None:
        parts = path.split("/")
        if len(parts) < 2 or ":" not in parts[-1]:
            return None
        artifact, ref = parts[-1].rsplit(":", 1)
        package = self.model_store / parts[-2] / artifact / ref
        return package if package.is_dir() else None

    def load_model(self, uri: str) -> Any:
        from trackkit import models

        if uri.startswith("models:/"):
            name = uri[len("models:/") :]
            newest = max(self.list_model_versions(name), key=lambda v: v.version)
            return self.load_model_version(newest)
        if not uri.startswith(URI_PREFIX):
            return super().load_model(uri)
        path = uri[len(URI_PREFIX) :]
        stored = self._stored_package(path)
        if stored is not None:
            return models.load_package(stored)
        if self.offline:
            raise NotFound(
                f"model {uri} is not in the local model store {self.model_store}; it was "
                "logged on another machine: load it with W&B online"
            )
        with tempfile.TemporaryDirectory(prefix="trackkit-wandb-") as tmp:
            with self._mapped(f"model {uri}"):
                root = self._api().artifact(path, type=MODEL_TYPE).download(root=tmp)
            return models.load_package(Path(root))

    # -- registry -------------------------------------------------------------------------------
    def _registry(self) -> LocalRegistry:
        """The registry kept offline, read when replaying it to map its version numbers."""
        if self._local is None:
            from trackkit.local_registry import LocalRegistry

            self._local = LocalRegistry(self.registry_path)
        return self._local

    @staticmethod
    def _collection(name: str) -> str:
        if not _ARTIFACT_NAME.fullmatch(name) or len(name) > MAX_NAME:
            raise InvalidInput(
                f"{name!r} cannot name a W&B Registry collection: use 1 to {MAX_NAME} letters, "
                "digits, '-', '_' or '.'"
            )
        return f"{REGISTRY_PROJECT}/{name}"

    def offline_registry(self) -> Path | None:
        # Offline, the W&B Registry cannot be reached (linking needs a server): the core keeps
        # the registry in this file and `trackkit sync` repeats each change online.
        return self.registry_path if self.offline else None

    def check_registration(self, name: str, source: str, run_id: str | None) -> str | None:
        self._collection(name)
        if not source.startswith(URI_PREFIX):
            raise InvalidInput(
                f"the wandb backend registers models logged with log_model ({URI_PREFIX}... "
                f"URIs), not {source!r}"
            )
        return run_id if run_id is not None else self._run_of(source)

    @staticmethod
    def _version_of(name: str, artifact: Any) -> ModelVersion:
        meta = (artifact.metadata or {}).get("trackkit") or {}
        version = str(artifact.version)
        if meta.get("ref"):
            source = f"{URI_PREFIX}{artifact.source_entity}/{artifact.source_project}/"
            source += f"{str(artifact.source_name).split(':')[0]}:{meta['ref']}"
        else:
            source = f"{URI_PREFIX}{artifact.source_qualified_name}"
        aliases = (a for a in artifact.aliases if a != "latest" and not re.fullmatch(r"v\d+", a))
        return ModelVersion(
            name=name,
            version=int(version.lstrip("v")) + 1,  # W&B numbers from v0, trackkit from 1
            aliases=tuple(sorted(aliases)),
            run_id=meta.get("run_id"),
            source=source,
            description=artifact.description or None,
            created_at=_parse_time(artifact.created_at),
        )

    def _member(self, name: str, ref: str) -> Any:
        """The registry version ``<name>:<ref>`` (``v<n>`` or an alias), through the public API."""
        with self._mapped(f"registered model {name!r} has no {ref!r}"):
            return self._api().artifact(f"{self._collection(name)}:{ref}", type=MODEL_TYPE)

    def _members(self, name: str) -> list[Any]:
        with self._mapped(f"registered model {name!r}"):
            found = list(self._api().artifacts(type_name=MODEL_TYPE, name=self._collection(name)))
        if not found:
            raise NotFound(f"no registered model named {name!r} in the W&B Registry")
        return found

    def _online_version(self, name: str, version: int) -> int:
        """``version`` as W&B numbers it: when replaying offline work, match it by its source."""
        if not self.from_offline:
            return version
        local = self._registry().get_model_version(name, version)
        ref = local.source.rsplit(":", 1)[-1]
        for member in self._members(name):
            if ((member.metadata or {}).get("trackkit") or {}).get("ref") == ref:
                return int(str(member.version).lstrip("v")) + 1
        raise NotFound(
            f"version {version} of {name!r}, registered offline from {local.source}, is not in "
            "the W&B Registry yet; run `wandb sync` on its run, then `trackkit sync` again"
        )

    def _run_of(self, source: str) -> str | None:
        """The run a model URI was logged from, when this machine logged it."""
        path, _, ref = source[len(URI_PREFIX) :].rpartition(":")
        parts = path.split("/")
        if len(parts) < 2 or not ref:
            return None
        marker = self.model_store / parts[-2] / parts[-1] / f"{ref}.run_id"
        return marker.read_text() if marker.is_file() else None

    def create_model_version(
        self, name: str, source: str, run_id: str | None, description: str | None
    ) -> ModelVersion:
        self.check_registration(name, source, run_id)
        collection = self._collection(name)
        ref = source.rsplit(":", 1)[-1]
        if self.from_offline:  # a replay after an interrupted sync must not link twice
            with contextlib.suppress(NotFound):
                for member in self._members(name):
                    if ((member.metadata or {}).get("trackkit") or {}).get("ref") == ref:
                        return self._version_of(name, member)
        path = source[len(URI_PREFIX) :]
        with self._mapped(f"model artifact {path}"):
            artifact = self._api().artifact(path, type=MODEL_TYPE)
        with self._mapped(f"link {path} to {collection}"):
            linked = artifact.link(collection)
            if description:
                linked.description = description
                linked.save()
        return self._version_of(name, linked)

    def get_model_version(self, name: str, version: int) -> ModelVersion:
        return self._version_of(name, self._member(name, f"v{version - 1}"))

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        return self._version_of(name, self._member(name, alias))

    def list_model_versions(self, name: str) -> list[ModelVersion]:
        return [self._version_of(name, m) for m in self._members(name)]

    def set_model_alias(self, name: str, alias: str, version: int) -> None:
        target = self._member(name, f"v{self._online_version(name, version) - 1}")
        try:
            holder = self._member(name, alias)
        except NotFound:
            holder = None
        if holder is not None and holder.version != target.version:
            # W&B keeps an alias on one version of a collection; move it explicitly
            with self._mapped(f"move {name}@{alias}"):
                holder.aliases = [a for a in holder.aliases if a != alias]
                holder.save()
        if alias not in target.aliases:
            with self._mapped(f"set {name}@{alias}"):
                target.aliases = [*target.aliases, alias]
                target.save()

    def delete_model_alias(self, name: str, alias: str) -> None:
        holder = self._member(name, alias)
        with self._mapped(f"delete {name}@{alias}"):
            holder.aliases = [a for a in holder.aliases if a != alias]
            holder.save()

    def update_model_version(self, name: str, version: int, description: str) -> ModelVersion:
        member = self._member(name, f"v{self._online_version(name, version) - 1}")
        with self._mapped(f"update version {version} of {name!r}"):
            member.description = description
            member.save()
        return self._version_of(name, member)

    # -- lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        if self._local is not None:
            self._local.close()
            self._local = None


@hookimpl
def trackkit_register_backends() -> list[type[Backend]]:
    return [WandbBackend]
