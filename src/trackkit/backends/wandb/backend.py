"""The Weights & Biases backend: runs, the step contract, run files, model artifacts.

Experiment -> W&B project (unless the ``project`` option fixes one); params -> ``run.config``;
each metric gets its own x-axis (``<key>:step``, via ``run.define_metric``) so steps per key and
out-of-order steps are all kept; tags -> the run summary (``tag:<key>``, mirrored as W&B tags
``key:value`` when short); artifacts -> run files under ``artifacts/``; models -> W&B
artifacts of type ``model`` holding a trackkit model package. The key layout is in ``keys``,
the offline records' reader in ``records``, the search translation in ``query`` and the W&B
Registry in ``registry``; offline, the core keeps the registry locally and defers its calls to
``trackkit sync``. See ``docs/wandb.md``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import re
import shlex
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from trackkit import env
from trackkit._lazy import import_sdk
from trackkit._secrets import redact, without_password
from trackkit.backend import Backend, Capabilities, Limits
from trackkit.backends.wandb.keys import (
    EXIT_CODES,
    EXPERIMENT_KEY,
    FILES_PREFIX,
    MAX_NAME,
    MAX_WANDB_TAG,
    MODEL_TYPE,
    PARENT_KEY,
    STATUS_KEY,
    STEP_SUFFIX,
    TAG_PREFIX,
    TIME_SUFFIX,
    URI_PREFIX,
    check_project,
    file_entries,
    kept_texts,
    last_steps,
    metric_points,
    params_of,
    parent_of,
    parse_time,
    run_status,
    summary_parts,
)
from trackkit.backends.wandb.layout import Layout
from trackkit.backends.wandb.query import to_wandb_filter, to_wandb_order
from trackkit.backends.wandb.records import RecordReader
from trackkit.backends.wandb.registry import REGISTRY_PREFIX, WandbRegistry
from trackkit.backends.wandb.rows import NotSent, PartlySent, RowSender, Sdk
from trackkit.backends.wandb.sdk_errors import mapped
from trackkit.entities import ModelRef, RunHandle, RunInfo
from trackkit.errors import InvalidInput, NotFound
from trackkit.normalize import value_text

if TYPE_CHECKING:
    from trackkit.entities import (
        ArtifactInfo,
        Metric,
        MetricPoint,
        ModelVersion,
        ParamValue,
        RegisteredModel,
    )
    from trackkit.search import Query

#: seconds between wandb's writes of a run's transaction log (wandb's default: 15). trackkit
#: deletes a point from its journal once wandb took it, and wandb loses what it has not
#: written when the process is killed: keep that window short.
LOG_FLUSH_INTERVAL = 0.5
#: seconds beyond wandb's flush interval that reading an open run's history waits for wandb to
#: write the rows trackkit handed it
WRITE_GRACE = 10.0
_ROW = ("_step", "_timestamp")  # every W&B history row has its number and time
_NOT_ARTIFACT_CHAR = re.compile(r"[^A-Za-z0-9_.\-]")
_SECRET_SETTING = re.compile(r"key|token|secret|password|credential|proxy|header", re.IGNORECASE)
logger = logging.getLogger("trackkit")


def _without_passwords(value: Any) -> Any:
    """A setting's value with no password or token in the URIs it holds (``base_url``...)."""
    if isinstance(value, str):
        return without_password(value)
    if isinstance(value, Mapping):
        return {k: _without_passwords(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_without_passwords(v) for v in value)
    return value


def _page(url: Any) -> str | None:
    """A W&B page address without credentials, query or fragment (None if it is not one)."""
    if not isinstance(url, str) or not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass
class _Open:
    """A run this backend has open: the SDK's Run and what trackkit sent it."""

    run: Any
    project: str
    experiment: str
    name: str
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    layout: Layout = field(default_factory=Layout)  # where its points go in W&B's history
    started: datetime | None = None
    parent_id: str | None = None
    group: str | None = None  # the W&B group
    rows: RowSender | None = None  # the fast row path (rows.py), None: run.log
    logged_rows: int = 0  # history rows handed to wandb since this process opened the run

    @property
    def latest(self) -> dict[str, tuple[int, float, int]]:
        """Per metric key, its latest point: step, value, and its number among the points."""
        return self.layout.latest


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
        nested_runs=True,
        metric_history=True,
        list_artifacts=True,
        list_experiments=True,
        list_registered_models=True,
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
            check_project(project)
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
        self.from_offline = env.on_off("from_offline", from_offline)
        self._lock = threading.RLock()
        self._runs: dict[str, _Open] = {}
        self._reader = RecordReader(self.dir)
        self._public_api: Any = None
        self._fast_rows = Sdk.load(self._wandb)  # None: every row goes through run.log
        self._registry = WandbRegistry(
            self._api, self.model_store, self.registry_path, self.from_offline
        )
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

    def _sdk_settings(self) -> Any:
        settings = dict(self._settings)
        if self.mode == "offline":  # nothing is sent: W&B's files need no password
            settings = {k: _without_passwords(v) for k, v in settings.items()}
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
        # W&B reads its API key from the environment or netrc; no secret is ever recorded: no
        # secret-named setting, no password inside an address (sync compares addresses without
        # them, and the password comes from the configuration sync runs with).
        options: dict[str, Any] = {"dir": str(self.dir), "registry": str(self.registry_path)}
        if self.project:
            options["project"] = self.project
        if self.entity:
            options["entity"] = self.entity
        settings = {
            k: _without_passwords(v)
            for k, v in self._settings.items()
            if not _SECRET_SETTING.search(k)
        }
        if settings:
            options["settings"] = settings
        options["mode"] = "online"  # syncing means carrying the work to W&B
        if self.mode == "offline" or self.from_offline:
            options["from_offline"] = True
        return options

    @property
    def offline(self) -> bool:
        return self.mode == "offline"

    @property
    def fast_rows(self) -> bool:
        """Whether new runs send history rows below ``run.log`` (``rows.py``, docs/wandb.md)."""
        return self._fast_rows is not None

    def _api(self) -> Any:
        if self._public_api is None:
            factory = type(self).api_factory or self._wandb.Api
            overrides = {"entity": self.entity} if self.entity else {}
            if self._settings.get("base_url"):
                overrides["base_url"] = self._settings["base_url"]
            self._public_api = factory(overrides=overrides, timeout=30)
        return self._public_api

    def _info_from_open(self, run_id: str, state: _Open) -> RunInfo:
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
            parent_id=state.parent_id,
            url=self._open_url(state),
        )

    def _open_url(self, state: _Open) -> str | None:
        """The W&B page of a run this process has open (None offline)."""
        if self.offline:
            return None
        return _page(getattr(state.run, "url", None))

    # -- runs -----------------------------------------------------------------------------------
    def _init(
        self,
        project: str,
        name: str | None,
        run_id: str | None,
        group: str | None,
        parent_id: str | None = None,
    ) -> Any:
        arguments: dict[str, Any] = {
            "project": project,
            "entity": self.entity,
            "name": name,
            "dir": str(self.dir),
            "mode": self.mode,
            "reinit": "create_new",
            "settings": self._sdk_settings(),
        }
        if group is not None:
            arguments["group"] = group
        if parent_id is not None:
            arguments["config"] = {PARENT_KEY: parent_id}
        if run_id is not None:
            arguments["id"] = run_id
            # W&B cannot check offline that the run exists: offline resumes always succeed
            arguments["resume"] = "allow" if self.offline else "must"
        self.dir.mkdir(parents=True, exist_ok=True)
        return self._wandb.init(**arguments)

    def start_run(
        self,
        experiment: str | None,
        name: str | None,
        run_id: str | None,
        *,
        parent_id: str | None = None,
    ) -> RunHandle:
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
            check_project(project)
            group = self._group(experiment, project, parent_id, check=True)
            run = self._init(project, name, None, group, parent_id)
            state = _Open(
                run=run,
                project=project,
                experiment=experiment,
                name=name or run.name or run.id,
                started=datetime.now(timezone.utc),
                parent_id=parent_id,
                group=group,
            )
            if self.project:
                run.summary.update({EXPERIMENT_KEY: experiment})
            state.layout.next_row = self._first_row(run, None)
            state.rows = self._row_sender(run)
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
        record = self._reader.record(run_id)
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
        parent_id = record.parent_id if record else None
        group = self._group(experiment, project, parent_id, check=False)
        run = self._init(project, name or (record.name if record else None), run_id, group)
        config = dict(record.config) if record else {}
        summary = dict(record.summary) if record else {}
        with contextlib.suppress(Exception):  # online, W&B brings the server's state
            config.update({k: v for k, v in dict(run.config).items() if not k.startswith("_")})
            summary.update(dict(run.summary))
        metrics, tags = summary_parts(summary)
        steps = last_steps(summary)
        state = _Open(
            run=run,
            project=project,
            experiment=experiment,
            name=name or (record.name if record else None) or run.name or run_id,
            params=params_of(config, summary),
            tags=tags,
            layout=Layout(latest={k: (steps[k], v, 0) for k, v in metrics.items() if k in steps}),
            started=record.started if record else datetime.now(timezone.utc),
            parent_id=parent_of(config),
            group=group,
        )
        state.layout.next_row = self._first_row(run, record.step if record else None)
        state.rows = self._row_sender(run)
        self._runs[run_id] = state
        return state

    def _first_row(self, run: Any, recorded: int | None) -> int | None:
        """The first W&B row number a run opened here takes: after W&B's own (a run resumed
        online starts there) and after the last row recorded on this machine (a resumed
        offline run restarts W&B's counter at 0, and W&B keeps only rows numbered after the
        last one it has); None when W&B numbers rows itself (its TensorBoard patching)."""
        if self._tensorboard():
            return None
        first = int(getattr(run, "step", 0) or 0)
        return first if recorded is None else max(first, recorded + 1)

    def _tensorboard(self) -> bool:
        """Whether wandb's TensorBoard patching is active (``run.log`` then ignores ``step``)."""
        return bool(getattr(self._wandb, "patched", {}).get("tensorboard"))

    def _row_sender(self, run: Any) -> RowSender | None:
        if self._fast_rows is None:
            return None
        try:
            return RowSender(self._fast_rows, run)
        except Exception as e:  # a run without the parts the fast path needs
            logger.debug("W&B rows go through run.log for run %s: %r", run.id, e)
            return None

    def _group(
        self, experiment: str, project: str, parent_id: str | None, *, check: bool
    ) -> str | None:
        """A run's W&B group: the experiment when a ``project`` is fixed (experiments are told
        apart by it there); else, for a child, its parent's group, or the parent's id when the
        parent has none, so a search and its trials at every depth form one group.

        With ``check``, a parent that does not exist is NotFound (as on every backend).
        """
        under = None
        if parent_id is not None and (check or not self.project):
            under = self._group_under(parent_id, project, check)
        return experiment if self.project else under

    def _group_under(self, parent_id: str, project: str, check: bool) -> str:
        """The group of a child of ``parent_id`` (see ``_group``), walking up its ancestors."""
        seen: set[str] = set()
        run_id = parent_id
        while run_id not in seen:  # the records are untrusted: a loop of parents ends here
            seen.add(run_id)
            state = self._runs.get(run_id)
            if state is not None:
                return state.group or run_id
            record = self._reader.record(run_id)
            if record is not None:
                if record.parent_id is None:
                    return run_id
                run_id = record.parent_id
                continue
            if run_id != parent_id or not check:
                return run_id  # an ancestor recorded elsewhere: taken as the top of the tree
            if self.offline:
                raise NotFound(
                    f"no W&B run {parent_id!r} under {self.dir / 'wandb'} to be a parent"
                )
            path = (
                f"{self.entity}/{project}/{parent_id}" if self.entity else f"{project}/{parent_id}"
            )
            with mapped(f"parent run {parent_id!r} in project {project!r}"):
                public = self._api().run(path)
            return str(getattr(public, "group", None) or parent_id)
        return run_id

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
                with mapped(f"log params to run {run_id}"):
                    state.run.config.update(values, allow_val_change=False)
                if kept := kept_texts(values):
                    state.run.summary.update(kept)
                state.params.update({k: value_text(v) for k, v in values.items()})
            if metrics:
                self._log_points(state, metrics)
            if tags:
                self._set_tags(state, dict(tags))

    def _log_points(self, state: _Open, metrics: Sequence[Metric]) -> None:
        """Log a batch's points in as few W&B history rows as the step contract allows: at
        W&B's own row numbers where the steps allow, else with each point's step (``layout``)."""
        run, layout = state.run, state.layout
        if layout.next_row is not None and self._tensorboard():
            layout.next_row = None  # W&B numbers rows from now on: every point carries its step
        placed = layout.place(metrics)
        for key in placed.axes:
            # chart the key against its own step. Every row of it carries the step from now
            # on, so W&B's step_sync (which fills in a missing one) is off: with a '.' in the
            # name it overwrites the logged step with a stale one (wandb 0.31)
            run.define_metric(layout.axes[key], hidden=True)
            run.define_metric(key, step_metric=layout.axes[key], step_sync=False)
        for key in placed.clocks:  # a point's own time: no chart, no summary entry
            run.define_metric(layout.clocks[key], hidden=True, summary="none")
        rows, numbers = placed.rows, placed.numbers
        state.logged_rows += len(rows)
        if state.rows is not None:
            sent = self._send_fast(state, rows, numbers)
            rows = rows[sent:]
            numbers = None if numbers is None else numbers[sent:]
        if numbers is None:
            for row in rows:
                run.log(row)
        else:
            for row, number in zip(rows, numbers, strict=True):
                run.log(row, step=number, commit=True)
        if placed.summary:
            run.summary.update(placed.summary)

    @staticmethod
    def _send_fast(state: _Open, rows: list[dict[str, Any]], numbers: list[int] | None) -> int:
        """Send ``rows`` on the fast row path; how many wandb took (run.log sends the rest).

        On failure the run goes back to ``run.log`` for good. Only rows wandb did not take are
        sent again: a batch is never written twice, even in part.
        """
        assert state.rows is not None
        try:
            state.rows.send(rows, numbers)
            return len(rows)
        except (NotSent, PartlySent) as e:
            logger.debug("W&B rows of run %s go through run.log from now on: %s", state.run.id, e)
            state.rows = None
            return e.sent if isinstance(e, PartlySent) else 0
        except Exception:
            logger.debug("W&B rows of run %s go through run.log from now on", state.run.id)
            state.rows = None
            raise

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

    def download_artifacts(self, run_id: str, path: str, dst: Path) -> Path:
        with self._lock:
            local = self._reader.files(run_id, path)
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
        record = None if state else self._reader.record(run_id)
        project = state.project if state else record.project if record else self.project
        if not project:
            raise NotFound(
                f"cannot locate W&B run {run_id}: its run ids are unique within a project and "
                "this run was not started on this machine; set get_tracker('wandb', project=...)"
            )
        return f"{self.entity}/{project}/{run_id}" if self.entity else f"{project}/{run_id}"

    def _download_online(self, run_id: str, path: str, dst: Path) -> Path:
        wanted = f"{FILES_PREFIX}/{path}" if path else FILES_PREFIX
        with mapped(f"run {run_id}"):
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
        record = self._reader.record(run_id) if self.offline else None
        if record is not None:
            return record.info()
        if self.offline:
            raise NotFound(f"no W&B run {run_id!r} under {self.dir / 'wandb'}")
        with mapped(f"run {run_id}"):
            return self._info_from_public(self._api().run(self._run_path(run_id)))

    def _info_from_public(self, run: Any) -> RunInfo:
        summary = dict(run.summary_metrics or {})
        metrics, tags = summary_parts(summary)
        status = run_status(None, summary, str(run.state))
        return RunInfo(
            id=run.id,
            name=run.name or run.id,
            experiment=str(summary.get(EXPERIMENT_KEY) or run.project),
            status=status,
            params=params_of(run.config or {}, summary),
            metrics=metrics,
            tags=tags,
            start_time=parse_time(run.created_at),
            end_time=None if status == "RUNNING" else parse_time(run.heartbeat_at),
            parent_id=parent_of(run.config or {}),
            url=_page(run.url),
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
        for log in self._reader.logs():
            run_id = log.stem[len("run-") :]
            if run_id not in open_runs:
                by_run.setdefault(run_id, []).append(log)
        for run_id, logs in by_run.items():
            record = self._reader.record(run_id, logs)
            if record is not None and record.experiment in wanted:
                infos[run_id] = record.info()
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
            check_project(self.project or experiment)
            conditions = [narrowed] if narrowed else []
            if self.project:
                conditions.append({"group": experiment})
            filters: dict[str, Any] = {}
            if conditions:
                filters = conditions[0] if len(conditions) == 1 else {"$and": conditions}
            path = self.project or experiment
            path = f"{self.entity}/{path}" if self.entity else path
            with mapped(f"search runs of {path}"):
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

    # -- reading back: history, files, projects, links -----------------------------------------
    def _known_offline(self, run_id: str) -> None:
        """NotFound unless the run is recorded under ``<dir>/wandb`` or open here."""
        if run_id not in self._runs and not self._reader.logs(run_id):
            raise NotFound(f"no W&B run {run_id!r} under {self.dir / 'wandb'}")

    def get_metric_history(self, run_id: str, key: str) -> list[MetricPoint]:
        if self.offline:
            self._known_offline(run_id)
            self._wait_written(run_id)
            return metric_points(self._reader.history(run_id), key)
        # W&B's scan gives only the rows holding every key asked for: the key's rows, then
        # those where its points carry their own step or time, joined by row number
        with mapped(f"run {run_id}"):
            run = self._api().run(self._run_path(run_id))
            rows = {row["_step"]: dict(row) for row in run.scan_history(keys=[key, *_ROW])}
            for field_ in (key + STEP_SUFFIX, key + TIME_SUFFIX):
                for row in run.scan_history(keys=[key, "_step", field_]):
                    if (held := rows.get(row["_step"])) is not None:
                        held[field_] = row[field_]
        return metric_points(rows.values(), key)

    def _wait_written(self, run_id: str) -> None:
        """For a run open in this process, wait until wandb wrote the history rows trackkit
        handed it to the run's ``.wandb`` file (wandb writes it every flush interval)."""
        with self._lock:
            state = self._runs.get(run_id)
            if state is None or not state.logged_rows:
                return
            expected, log = state.logged_rows, Path(state.run.dir).parent / f"run-{run_id}.wandb"
        interval = self._settings.get("x_transaction_log_flush_interval", LOG_FLUSH_INTERVAL)
        deadline = time.monotonic() + max(float(interval or 0), 0.0) + WRITE_GRACE
        while True:
            written = len(self._reader.rows(log)) if log.is_file() else 0
            if written >= expected or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if written < expected:
            logger.warning(
                "wandb has written %d of the %d history rows of open run %s so far; the rest "
                "reads back once it writes them (and after the run ends)",
                written,
                expected,
                run_id,
            )

    def list_artifacts(self, run_id: str, path: str) -> list[ArtifactInfo]:
        if self.offline or self._reader.logs(run_id):  # a run of this machine: its own files
            self._known_offline(run_id)
            return self._reader.entries(run_id, path)
        with mapped(f"run {run_id}"):
            files = [(f.name, f.size) for f in self._api().run(self._run_path(run_id)).files()]
        return file_entries(files, path)

    def list_experiments(self) -> list[str]:
        if self.offline:
            with self._lock:  # an open run's records may not be written yet: it is known here
                names = {state.experiment for state in self._runs.values()}
                open_runs = set(self._runs)
            by_run: dict[str, list[Path]] = {}
            for log in self._reader.logs():
                run_id = log.stem[len("run-") :]
                if run_id not in open_runs:
                    by_run.setdefault(run_id, []).append(log)
            for run_id, logs in by_run.items():
                record = self._reader.record(run_id, logs)
                if record is not None and record.experiment:
                    names.add(record.experiment)
            return sorted(names)
        api = self._api()
        if self.project:  # experiments are the runs' groups in one project
            path = f"{self.entity}/{self.project}" if self.entity else self.project
            with mapped(f"list the runs of {path}"):
                runs = api.runs(path, per_page=1000)
                return sorted({self._info_from_public(run).experiment for run in runs})
        with mapped("list W&B projects"):
            projects = [str(p.name) for p in api.projects(entity=self.entity)]
        return sorted(p for p in projects if not p.startswith(REGISTRY_PREFIX))

    def run_url(self, run_id: str) -> str | None:
        if self.offline:
            return None
        with self._lock:
            state = self._runs.get(run_id)
            if state is not None:
                return self._open_url(state)
        with mapped(f"run {run_id}"):
            return _page(self._api().run(self._run_path(run_id)).url)

    def run_hint(self, run_id: str) -> str | None:
        if not self.offline:
            return None
        with self._lock:
            state = self._runs.get(run_id)
            directories = [Path(state.run.dir).parent] if state is not None else []
        directories = [log.parent for log in self._reader.logs(run_id)] or directories
        if not directories:
            return None
        paths = " ".join(shlex.quote(str(d)) for d in dict.fromkeys(directories))
        return f"upload it to W&B with `wandb sync {paths}`"

    def list_models(self, run_id: str) -> list[ModelRef]:
        """The models ``log_model`` stored in the run: its W&B model artifacts (offline, the
        artifact records of its transaction logs; online, the run's logged artifacts)."""
        found: dict[str, ModelRef] = {}
        if self.offline or self._reader.logs(run_id):
            self._known_offline(run_id)
            for record in self._reader.artifacts(run_id):
                with contextlib.suppress(ValueError, TypeError):
                    metadata = json.loads(record.get("metadata") or "{}")
                    ref = self._model_ref(
                        run_id, metadata, str(record.get("project")), str(record.get("name"))
                    )
                    if ref is not None and record.get("type") == MODEL_TYPE:
                        found[ref.uri] = ref
            return sorted(found.values(), key=lambda r: (r.name, r.uri))
        with mapped(f"run {run_id}"):
            run = self._api().run(self._run_path(run_id))
            for artifact in run.logged_artifacts():
                if artifact.type == MODEL_TYPE:
                    name = str(artifact.name).split(":")[0]
                    ref = self._model_ref(run_id, artifact.metadata, artifact.project, name)
                    if ref is not None:
                        found[ref.uri] = ref
        return sorted(found.values(), key=lambda r: (r.name, r.uri))

    def _model_ref(
        self, run_id: str, metadata: Any, project: str, artifact: str
    ) -> ModelRef | None:
        """The ModelRef of a model artifact trackkit logged (its metadata names it), else None."""
        own = metadata.get("trackkit") if isinstance(metadata, Mapping) else None
        if not isinstance(own, Mapping) or not own.get("ref") or not own.get("name"):
            return None
        prefix = f"{self.entity}/" if self.entity else ""
        return ModelRef(
            run_id=run_id,
            name=str(own["name"]),
            uri=f"{URI_PREFIX}{prefix}{project}/{artifact}:{own['ref']}",
            flavor=str(own.get("flavor") or ""),
            backend=self.name,
        )

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

    def _run_model_package(self, uri: str) -> Path:
        """The package of ``runs:/<run_id>/<name>``: the model the run last logged under that
        name, found in the local model store by the run-id marker ``log_model`` writes."""
        run_id, _, name = uri[len("runs:/") :].partition("/")
        if not run_id or not name:
            raise InvalidInput(f"expected runs:/<run_id>/<name>, got {uri!r}")
        artifact_name = self._artifact_name(name, run_id)
        markers = [
            marker
            for marker in self.model_store.glob(f"*/{artifact_name}/*.run_id")
            if marker.read_text() == run_id and marker.with_suffix("").is_dir()
        ]
        if not markers:
            raise NotFound(
                f"run {run_id} logged no model {name!r} in the local model store "
                f"{self.model_store}; a model logged on another machine loads by its "
                "wandb-artifact:/// URI (ModelRef.uri), with W&B online"
            )
        return max(markers, key=lambda m: m.stat().st_mtime_ns).with_suffix("")

    def load_model(self, uri: str) -> Any:
        from trackkit import models

        if uri.startswith("models:/"):
            name = uri[len("models:/") :]
            newest = max(self.list_model_versions(name), key=lambda v: v.version)
            return self.load_model_version(newest)
        if uri.startswith("runs:/"):
            return models.load_package(self._run_model_package(uri))
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
            with mapped(f"model {uri}"):
                root = self._api().artifact(path, type=MODEL_TYPE).download(root=tmp)
            return models.load_package(Path(root))

    # -- registry -------------------------------------------------------------------------------
    def offline_registry(self) -> Path | None:
        # Offline, the W&B Registry cannot be reached (linking needs a server): the core keeps
        # the registry in this file and `trackkit sync` repeats each change online.
        return self.registry_path if self.offline else None

    def check_registration(self, name: str, source: str, run_id: str | None) -> str | None:
        return self._registry.check_registration(name, source, run_id)

    def create_model_version(
        self, name: str, source: str, run_id: str | None, description: str | None
    ) -> ModelVersion:
        return self._registry.create_model_version(name, source, run_id, description)

    def get_model_version(self, name: str, version: int) -> ModelVersion:
        return self._registry.get_model_version(name, version)

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        return self._registry.get_model_version_by_alias(name, alias)

    def list_model_versions(self, name: str) -> list[ModelVersion]:
        return self._registry.list_model_versions(name)

    def set_model_alias(self, name: str, alias: str, version: int) -> None:
        self._registry.set_model_alias(name, alias, version)

    def delete_model_alias(self, name: str, alias: str) -> None:
        self._registry.delete_model_alias(name, alias)

    def update_model_version(self, name: str, version: int, description: str) -> ModelVersion:
        return self._registry.update_model_version(name, version, description)

    def update_registered_model(self, name: str, description: str) -> RegisteredModel:
        return self._registry.update_registered_model(name, description)

    def list_registered_models(self) -> list[RegisteredModel]:
        if self.offline:  # the core answers from the same local registry (offline_registry)
            return self._registry.local_models()
        return self._registry.list_registered_models()

    def set_model_version_tag(self, name: str, version: int, key: str, value: str) -> None:
        self._registry.set_model_version_tag(name, version, key, value)

    # -- lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        self._registry.close()
