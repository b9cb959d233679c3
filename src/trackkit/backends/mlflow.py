"""The MLflow backend: runs, batches, artifacts, MLflow model flavors and the alias registry.

Default store: ``sqlite:///mlflow.db`` in the current directory (MLflow 3's file store is
deprecated); ``MLFLOW_TRACKING_URI`` or the ``tracking_uri`` option choose another, including
``http(s)://`` tracking servers. Models are logged with MLflow's own flavors, so MLflow's UI,
``mlflow.pyfunc.load_model`` and ``models:/<name>@<alias>`` URIs work on them. The registry uses
aliases, never the deprecated stages.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from trackkit import env, hookimpl
from trackkit._lazy import import_sdk
from trackkit._secrets import redact, scrub, without_password
from trackkit.backend import Backend, Capabilities, Limits
from trackkit.entities import (
    ArtifactInfo,
    MetricPoint,
    ModelRef,
    ModelVersion,
    RegisteredModel,
    RunHandle,
    RunInfo,
)
from trackkit.errors import InvalidInput, NotFound
from trackkit.normalize import value_text
from trackkit.search import NUMERIC_ATTRIBUTES, Clause

if TYPE_CHECKING:
    from trackkit.backends.mlflow_worker import BatchProcess
    from trackkit.entities import Metric, ParamValue
    from trackkit.models import Signature
    from trackkit.search import Query

DEFAULT_DB = "mlflow.db"
SYSTEM_TAG_PREFIX = "mlflow."
#: the tag MLflow's fluent ``start_run(nested=True)`` sets; its UI nests runs by it
PARENT_TAG = "mlflow.parentRunId"
# MLflow keeps the tracking URI in process globals; trackkit sets it only around the few
# fluent-only calls (model logging, loading, registration) and restores it afterwards.
_GLOBAL_URI_LOCK = threading.RLock()
#: set when the user has not set them: see MLflowBackend.__init__
_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def _without_password(uri: str) -> str:
    # the password may hold '@', ':', '/' or '%': trackkit's one rule for it, not a local regex
    return without_password(uri)


def _check_address(label: str, uri: str) -> None:
    """Refuse an http(s) URI whose host HTTP clients would misread: a password holding '/',
    '?' or '#' ends the address early, so pieces of the password would become host and port
    (and show in connection errors)."""
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.scheme.lower() not in ("http", "https"):
        return
    try:
        parts.port  # noqa: B018 - raises ValueError when the port is not a number
    except ValueError:
        misread = True
    else:  # an '@' past the address: user information the address did not take in
        misread = "@" not in parts.netloc and "@" in uri.split("://", 1)[-1]
    if misread:
        raise InvalidInput(
            redact(
                f"the mlflow backend cannot use {label} {uri!r}: its host and port cannot be "
                "read; a password holding '/', '?' or '#' must be percent-encoded (%2F, %3F, "
                "%23), or set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD instead"
            )
        )


#: the URI schemes MLflow's stores take (mlflow.tracking._tracking_service.utils)
_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "file", "databricks")


def _bad_uri(tracking_uri: str, registry_uri: str, error: Exception) -> str:
    """The message for a URI no MLflow store takes, with the closest known scheme."""
    import difflib

    wrong = registry_uri if registry_uri != tracking_uri and "registry" in str(error) else None
    uri = wrong or tracking_uri
    scheme = uri.split("://", 1)[0] if "://" in uri else uri.split(":", 1)[0]
    close = difflib.get_close_matches(scheme.lower(), _SCHEMES, n=1)
    hint = f"; did you mean {close[0]}://?" if close and close[0] != scheme else ""
    return redact(
        f"the mlflow backend cannot use {'registry_uri' if wrong else 'tracking_uri'} {uri!r}: "
        f"no MLflow store takes the scheme {scheme!r} (it takes {', '.join(_SCHEMES)}){hint}"
    )


def ui_base(tracking_uri: str) -> str | None:
    """The address of the MLflow UI that serves ``tracking_uri``: a tracking server's own
    address, without credentials, query or fragment; None for a store without a UI."""
    from urllib.parse import urlsplit

    parts = urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{host}{port}{parts.path.rstrip('/')}"


def _absolute(uri: str) -> str:
    """A sqlite URI with a relative path made absolute, so a printed command works anywhere."""
    prefix = "sqlite:///"
    path = uri[len(prefix) :] if uri.startswith(prefix) else None
    if not path or path.startswith("/") or path.startswith(":memory:"):
        return uri
    return f"{prefix}{Path(path).resolve()}"


def mlflow_command() -> str:
    """``mlflow`` as the running interpreter's environment has it, so a printed command works
    where that environment is not activated."""
    beside = Path(sys.executable).parent / "mlflow"
    return str(beside) if beside.is_file() else "mlflow"


def _ms_to_datetime(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


# -- search: the parsed filter as MLflow's own filter string ---------------------------------
#: the most runs MLflow returns in one page of a search
SEARCH_PAGE = 50_000
_ENTITY_PREFIX = {"metrics": "metrics", "params": "params", "tags": "tags"}
_SAFE_ID = re.compile(r"[\w\-]+")


def _mlflow_text(value: str) -> str | None:
    """``value`` as an MLflow string literal (MLflow does not unescape), or None if it cannot be."""
    if value.endswith("\\"):
        return None
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return None


def _mlflow_number(value: float) -> str | None:
    if not math.isfinite(value):
        return None
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _mlflow_clause(clause: Clause) -> str | None:
    """MLflow's filter for one clause, or None when MLflow cannot express it exactly."""
    op, value, key = clause.op, clause.value, clause.key
    if clause.entity == "attributes" and key == "parent_id":
        if op in ("IN", "NOT IN"):
            return None
        text = _mlflow_text(value)
        return None if text is None else f"tags.`{PARENT_TAG}` {op} {text}"
    if clause.entity == "attributes":
        name = f"attributes.{key}"
        if key in NUMERIC_ATTRIBUTES:
            number = _mlflow_number(value)
            return None if number is None else f"{name} {op} {number}"
        if op in ("IN", "NOT IN"):  # MLflow takes lists for run_id only
            if key != "run_id" or not all(_SAFE_ID.fullmatch(v) for v in value):
                return None
            return f"{name} {op} ({', '.join(repr(v) for v in value)})"
    elif "`" in key:
        return None
    else:
        name = f"{_ENTITY_PREFIX[clause.entity]}.`{key}`"
    if op in ("IS NULL", "IS NOT NULL"):
        return f"{name} {op}"
    if clause.entity == "metrics":
        number = _mlflow_number(value)
        return None if number is None else f"{name} {op} {number}"
    if op in ("IN", "NOT IN"):  # MLflow has no IN on params and tags
        return None
    text = _mlflow_text(value)
    return None if text is None else f"{name} {op} {text}"


def to_mlflow_filter(clauses: Sequence[Clause]) -> tuple[str, bool]:
    """MLflow's filter string for ``clauses``, and whether it is exact.

    A clause MLflow cannot express (IN on params or tags, a value holding both quote kinds) is
    left out, so MLflow returns a superset that the core narrows.
    """
    parts = [_mlflow_clause(c) for c in clauses]
    return " and ".join(p for p in parts if p is not None), None not in parts


def _skops_types(model: Any) -> list[str] | None:
    """The types ``model`` is made of that skops does not trust by default.

    MLflow saves scikit-learn models with skops, which refuses to load any type outside its
    default list (scikit-learn, numpy, scipy ufuncs): an xgboost step in a Pipeline, or a
    FunctionTransformer's function. The model being logged is the caller's own object, so its
    types are trusted for loading it back; MLflow records the list in the model's MLmodel file.
    """
    skops_io = import_sdk("skops.io", extra="mlflow", purpose="MLflow's sklearn flavor")
    return list(skops_io.get_untrusted_types(data=skops_io.dumps(model))) or None


#: the attribute of trackkit's pyfunc wrapper that holds the logged object
PYFUNC_OBJECT = "trackkit_object"


def _is_records(example: Any) -> bool:
    return isinstance(example, dict) or (
        isinstance(example, (list, tuple)) and bool(example) and isinstance(example[0], dict)
    )


def _python_model(mlflow: Any, obj: Any, records: bool) -> Any:
    """An MLflow ``PythonModel`` whose ``predict`` calls ``obj.predict``.

    The class is made here, not defined at module level, so cloudpickle stores it by value:
    the MLflow model loads where trackkit is not installed. ``records``: the model takes a
    list of dicts, so a DataFrame MLflow built from the signature's columns is turned back
    into records.
    """

    # no annotations: MLflow reads a PythonModel's type hints as an input schema
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        target = getattr(self, "trackkit_object")  # noqa: B009 - no trackkit name at load time
        if not callable(getattr(target, "predict", None)):
            raise TypeError(
                f"the logged {type(target).__name__} has no predict method; load it with "
                "trackkit.load_model (or unwrap_python_model().trackkit_object) and use it"
            )
        if getattr(self, "trackkit_records", False) and hasattr(model_input, "to_dict"):
            model_input = model_input.to_dict(orient="records")
        return target.predict(model_input)

    with warnings.catch_warnings():  # MLflow asks for type hints: see predict
        warnings.filterwarnings("ignore", message=".*type hints to the `predict`")
        cls = type(
            "TrackkitPythonModel",
            (mlflow.pyfunc.PythonModel,),
            {"predict": predict, "__module__": "trackkit_pyfunc_model"},
        )
    wrapper = cls()
    setattr(wrapper, PYFUNC_OBJECT, obj)
    wrapper.trackkit_records = records
    return wrapper


class MLflowBackend(Backend):
    """trackkit on MLflow (``pip install 'trackkit[mlflow]'``).

    Args:
        tracking_uri: defaults to ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the
            current directory (made absolute, so a later ``chdir`` does not move it).
        registry_uri: defaults to ``$MLFLOW_REGISTRY_URI``, else the tracking URI.
        batch_process: write batches from a worker process with its own MLflow store, so
            MLflow's Python work leaves this process's interpreter (see
            ``trackkit.backends.mlflow_worker``). Defaults to
            ``$TRACKKIT_MLFLOW_BATCH_PROCESS`` (``1``/``0``), else off.
    """

    name = "mlflow"
    extra = "mlflow"
    sdk = "mlflow"
    capabilities = Capabilities(
        artifacts=True,
        models=True,
        registry=True,
        search_runs=True,
        resume=True,
        download_artifacts=True,
        native_tables=True,
        nested_runs=True,
        metric_history=True,
        list_artifacts=True,
        list_experiments=True,
        list_registered_models=True,
        run_times=True,
        registered_model_tags=True,
    )
    # mlflow.utils.validation; names follow the portable rule (no ':' as on Windows servers).
    limits = Limits(
        key_length=250,
        param_value_length=6000,
        tag_value_length=8000,
        key_invalid_chars=r"[^/\w.\- ]",
        batch_metrics=1000,
        batch_params_tags=100,
        batch_total=1000,
        # steps and timestamps are signed 64-bit integers in MLflow's stores
        max_step=2**63 - 1,
        max_timestamp=2**63 - 1,
    )

    def __init__(
        self,
        tracking_uri: str | None = None,
        registry_uri: str | None = None,
        batch_process: bool | str | None = None,
    ) -> None:
        # -o batch_process=true passes text; a value that is not on/off is refused
        if batch_process is not None:
            batch_process = env.on_off("batch_process", batch_process)
        for label, given in (("tracking_uri", tracking_uri), ("registry_uri", registry_uri)):
            if given is not None and not isinstance(given, str):
                raise InvalidInput(
                    f"{label} must be a URI string such as 'sqlite:///mlflow.db' or "
                    f"'http://127.0.0.1:5000', got {type(given).__name__}"
                )
        self._mlflow = import_sdk("mlflow", extra="mlflow", purpose="the mlflow backend")
        self.tracking_uri = (
            tracking_uri
            or os.environ.get("MLFLOW_TRACKING_URI")
            or f"sqlite:///{Path(DEFAULT_DB).resolve()}"
        )
        self.registry_uri = (
            registry_uri or os.environ.get("MLFLOW_REGISTRY_URI") or self.tracking_uri
        )
        _check_address("tracking_uri", self.tracking_uri)
        _check_address("registry_uri", self.registry_uri)
        # trackkit retries failed sends itself, with backoff, in its background writer; MLflow's
        # own retries (7, minutes of backoff by default) would only delay the journal.
        for variable, default in _HTTP_DEFAULTS.items():
            os.environ.setdefault(variable, default)
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self._error = MlflowException
        try:
            self.client = MlflowClient(
                tracking_uri=self.tracking_uri, registry_uri=self.registry_uri
            )
        except MlflowException as e:  # no store for the URI's scheme (e.g. a typo: htpp://)
            raise InvalidInput(_bad_uri(self.tracking_uri, self.registry_uri, e)) from None
        self._experiment_names: dict[str, str] = {}
        self._activated: list[str] = []  # runs made MLflow's active run (activate_run)
        self._saved_uris: tuple[Any, Any, dict[str, str | None]] | None = None
        self._run_experiments: dict[str, str] = {}  # run id -> experiment id, for run_url
        self._ui = ui_base(self.tracking_uri)
        #: the worker process that writes batches, when on (started now, in the background)
        self.batch_process: BatchProcess | None = None
        from trackkit.backends import mlflow_worker

        if mlflow_worker.enabled(batch_process, default=False):
            self.batch_process = mlflow_worker.BatchProcess(self.tracking_uri, self.registry_uri)

    def describe(self) -> str:
        return f"mlflow ({redact(self.tracking_uri)})"

    def close(self) -> None:
        if self.batch_process is not None:
            self.batch_process.close()

    # -- MLflow's own active run ----------------------------------------------------------------
    def activate_run(self, run_id: str) -> None:
        # MLflow's fluent API (mlflow.log_metric, mlflow.sklearn.autolog...) logs into its
        # active run, on its global tracking URI: both point at this run while it is active,
        # so MLflow's calls inside a trackkit run land in it instead of a new run in Default.
        from mlflow.tracking._model_registry import utils as registry_utils
        from mlflow.tracking._tracking_service import utils as tracking_utils

        with _GLOBAL_URI_LOCK:
            if not self._activated:
                self._saved_uris = (
                    tracking_utils._tracking_uri,
                    registry_utils._registry_uri,
                    {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")},
                )
            self._mlflow.set_tracking_uri(self.tracking_uri)
            self._mlflow.set_registry_uri(self.registry_uri)
            self._activated.append(run_id)
            try:
                self._mlflow.start_run(run_id=run_id, nested=True)
            except BaseException:
                self._release(run_id)
                raise

    def deactivate_run(self, run_id: str, status: str) -> None:
        with _GLOBAL_URI_LOCK:
            if run_id not in self._activated:
                return
            try:
                active = self._mlflow.active_run()
                if active is not None and active.info.run_id == run_id:
                    self._mlflow.end_run(status)  # flushes what MLflow's own calls queued
            finally:
                self._release(run_id)

    def _release(self, run_id: str) -> None:
        """(holds the lock) Forget an activation; the last one restores MLflow's global URIs."""
        from mlflow.tracking._model_registry import utils as registry_utils
        from mlflow.tracking._tracking_service import utils as tracking_utils

        self._activated.remove(run_id)
        if self._activated or self._saved_uris is None:
            return
        tracking, registry, saved_env = self._saved_uris
        self._saved_uris = None
        tracking_utils._tracking_uri, registry_utils._registry_uri = tracking, registry
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def replay_options(self) -> dict[str, Any]:
        # a password inside a URI is never written to the journal: sync takes credentials
        # from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, or an explicit URI
        return {
            "tracking_uri": _without_password(self.tracking_uri),
            "registry_uri": _without_password(self.registry_uri),
        }

    # -- error and URI plumbing ---------------------------------------------------------------
    @contextmanager
    def _mapped(self, what: str, missing: bool = False) -> Iterator[None]:
        """Turn MLflow's not-found and bad-parameter errors into trackkit's."""
        try:
            yield
        except self._error as e:
            code = getattr(e, "error_code", "")
            text = redact(getattr(e, "message", str(e)))
            if code == "RESOURCE_DOES_NOT_EXIST" or (missing and "not found" in text.lower()):
                raise NotFound(f"{what}: {text}") from scrub(e)
            if code == "INVALID_PARAMETER_VALUE":
                raise InvalidInput(f"{what}: {text}") from scrub(e)
            raise

    @contextmanager
    def _global_uris(self) -> Iterator[None]:
        from mlflow.tracking._model_registry import utils as registry_utils
        from mlflow.tracking._tracking_service import utils as tracking_utils

        with _GLOBAL_URI_LOCK:
            saved_env = {
                k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
            }
            saved = (tracking_utils._tracking_uri, registry_utils._registry_uri)
            self._mlflow.set_tracking_uri(self.tracking_uri)
            self._mlflow.set_registry_uri(self.registry_uri)
            try:
                yield
            finally:
                tracking_utils._tracking_uri, registry_utils._registry_uri = saved
                for key, value in saved_env.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value

    @contextmanager
    def _run_experiment(self, run_id: str) -> Iterator[None]:
        """Make the run's experiment MLflow's active one for a fluent call.

        MLflow 3 files a run's logged model under the *active* experiment (Default when none
        is set), not the run's: a user allowed only in their own experiment gets a 403.
        """
        from mlflow.tracking import fluent

        with self._mapped(f"run {run_id!r}"):
            experiment_id = self.client.get_run(run_id).info.experiment_id
        state = cast(Any, fluent)  # a private global of MLflow's fluent API
        with _GLOBAL_URI_LOCK:
            saved = state._active_experiment_id
            state._active_experiment_id = experiment_id
            try:
                yield
            finally:
                state._active_experiment_id = saved

    # -- runs ---------------------------------------------------------------------------------
    def _experiment_id(self, name: str) -> str:
        with self._mapped(f"experiment {name!r}"):
            found = self.client.get_experiment_by_name(name)
            if found is None:
                try:
                    return str(self.client.create_experiment(name))
                except self._error:  # created meanwhile by another process
                    found = self.client.get_experiment_by_name(name)
                    if found is None:
                        raise
            if found.lifecycle_stage == "deleted":
                raise InvalidInput(
                    f"experiment {name!r} is deleted in MLflow; restore it "
                    "(mlflow experiments restore) or use another name"
                )
            return str(found.experiment_id)

    def _experiment_name(self, experiment_id: str) -> str:
        if experiment_id not in self._experiment_names:
            self._experiment_names[experiment_id] = self.client.get_experiment(experiment_id).name
        return self._experiment_names[experiment_id]

    def start_run(
        self,
        experiment: str | None,
        name: str | None,
        run_id: str | None,
        *,
        parent_id: str | None = None,
        start_time: int | None = None,
    ) -> RunHandle:
        if run_id is not None:
            with self._mapped(f"run {run_id!r}"):
                run = self.client.get_run(run_id)
            actual = self._experiment_name(run.info.experiment_id)
            if experiment is not None and experiment != actual:
                raise InvalidInput(
                    f"run {run_id} belongs to experiment {actual!r}, not {experiment!r}"
                )
            if run.info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
            self._run_experiments[run_id] = run.info.experiment_id
            return RunHandle(
                id=run_id,
                name=run.info.run_name,
                experiment=actual,
                params=dict(run.data.params),
                last_steps={m.key: m.step for m in run.data._metric_objs},
            )
        assert experiment is not None
        from mlflow.tracking.context.registry import resolve_tags

        tags = resolve_tags()
        if parent_id is not None:
            with self._mapped(f"parent run {parent_id!r}"):
                self.client.get_run(parent_id)  # a child of a run that does not exist: NotFound
            tags[PARENT_TAG] = parent_id
        run = self.client.create_run(
            self._experiment_id(experiment), start_time=start_time, run_name=name, tags=tags
        )
        self._run_experiments[run.info.run_id] = run.info.experiment_id
        return RunHandle(id=run.info.run_id, name=run.info.run_name, experiment=experiment)

    def end_run(self, run_id: str, status: str, *, end_time: int | None = None) -> None:
        self.client.set_terminated(run_id, status=status, end_time=end_time)

    def log_batch(
        self,
        run_id: str,
        params: Sequence[tuple[str, ParamValue]],
        metrics: Sequence[Metric],
        tags: Sequence[tuple[str, str]],
    ) -> None:
        from mlflow.entities import Metric as MlflowMetric
        from mlflow.entities import Param, RunTag
        from mlflow.tracking.fluent import get_active_model_id

        # MlflowClient.log_batch copies every metric once more (to attach the active model id,
        # which is set here instead) and, with MLFLOW_ENABLE_ASYNC_LOGGING on, only queues the
        # batch: the journal would then forget points MLflow has not written. The store's own
        # log_batch (the one the client ends in, validating the same) is synchronous.
        model_id = get_active_model_id()
        worker = self.batch_process
        if worker is not None and worker.ready:
            with self._mapped(f"log to run {run_id}"):
                if worker.log_batch(
                    run_id,
                    [(k, value_text(v)) for k, v in params],
                    [(m.key, m.value, m.timestamp, m.step) for m in metrics],
                    list(tags),
                    model_id,
                ):
                    return
        batch: dict[str, Any] = {
            "metrics": [
                MlflowMetric(m.key, m.value, m.timestamp, m.step, model_id=model_id)
                for m in metrics
            ],
            "params": [Param(k, value_text(v)) for k, v in params],
            "tags": [RunTag(k, v) for k, v in tags],
        }
        with self._mapped(f"log to run {run_id}"):
            store: Any = getattr(getattr(self.client, "_tracking_client", None), "store", None)
            if callable(getattr(store, "log_batch", None)):
                store.log_batch(run_id, **batch)
            else:  # an MLflow without that layout: the client's call, made synchronous
                self.client.log_batch(run_id, **batch, synchronous=True)

    def log_artifact(self, run_id: str, local_path: Path, artifact_path: str | None) -> None:
        self.client.log_artifact(run_id, str(local_path), artifact_path)

    def log_table(self, run_id: str, table: Any, file: str) -> None:
        self.client.log_table(run_id, table, file)

    def download_artifacts(self, run_id: str, path: str, dst: Path) -> Path:
        if path:
            parent = path.rpartition("/")[0] or None
            with self._mapped(f"run {run_id!r}"):
                listed = {a.path for a in self.client.list_artifacts(run_id, parent)}
            if path not in listed:
                raise NotFound(f"run {run_id} has no artifact {path!r}")
        local = self._mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=path, dst_path=str(dst), tracking_uri=self.tracking_uri
        )
        return Path(local)

    def _run_info(self, run: Any) -> RunInfo:
        tags = dict(run.data.tags)
        self._run_experiments.setdefault(run.info.run_id, run.info.experiment_id)
        return RunInfo(
            id=run.info.run_id,
            name=run.info.run_name,
            experiment=self._experiment_name(run.info.experiment_id),
            status=run.info.status,
            params=dict(run.data.params),
            metrics=dict(run.data.metrics),
            tags={k: v for k, v in tags.items() if not k.startswith(SYSTEM_TAG_PREFIX)},
            start_time=_ms_to_datetime(run.info.start_time),
            end_time=_ms_to_datetime(run.info.end_time),
            parent_id=run.data.tags.get(PARENT_TAG) or None,
            url=self._url(run.info.experiment_id, run.info.run_id),
            experiment_id=str(run.info.experiment_id),
            artifact_uri=run.info.artifact_uri,
            system_tags={k: v for k, v in tags.items() if k.startswith(SYSTEM_TAG_PREFIX)},
        )

    # -- reading back -------------------------------------------------------------------------
    def _url(self, experiment_id: str, run_id: str) -> str | None:
        if self._ui is None:
            return None
        return f"{self._ui}/#/experiments/{experiment_id}/runs/{run_id}"

    def _run_experiment_id(self, run_id: str) -> str:
        if run_id not in self._run_experiments:
            with self._mapped(f"run {run_id!r}"):
                self._run_experiments[run_id] = self.client.get_run(run_id).info.experiment_id
        return self._run_experiments[run_id]

    def run_url(self, run_id: str) -> str | None:
        if self._ui is None:
            return None
        return self._url(self._run_experiment_id(run_id), run_id)

    def run_hint(self, run_id: str) -> str | None:
        if self._ui is not None or self.tracking_uri.startswith("databricks"):
            return None
        command = [mlflow_command(), "ui", "--backend-store-uri", _absolute(self.tracking_uri)]
        if self.registry_uri != self.tracking_uri:
            command += ["--registry-store-uri", _absolute(self.registry_uri)]
        experiment_id = self._run_experiment_id(run_id)
        page = f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{run_id}"
        shown = " ".join(shlex.quote(_without_password(part)) for part in command)
        return f"see it with `{shown}`, then open {page}"

    def get_metric_history(self, run_id: str, key: str) -> list[MetricPoint]:
        with self._mapped(f"run {run_id!r}"):
            history = self.client.get_metric_history(run_id, key)
        return [MetricPoint(int(m.step), float(m.value), int(m.timestamp)) for m in history]

    def get_metric_histories(
        self, run_id: str, keys: Sequence[str]
    ) -> dict[str, list[MetricPoint]]:
        # A database store answers one query of plain rows for the whole run; MLflow's client
        # builds two objects per point per key (its ORM row, then a Metric), ten times the cost
        # of reading them. Another store (a server, files) is asked key by key.
        wanted = set(keys)
        store: Any = getattr(getattr(self.client, "_tracking_client", None), "store", None)
        rows = self._metric_rows(store, run_id) if wanted else None
        if rows is None:
            found = super().get_metric_histories(run_id, keys)
        else:
            found = {key: [] for key in keys}
            nan = math.nan
            for key, step, value, stamp, is_nan in rows:
                if key in wanted:
                    # as MLflow's own reader gives them: NaN is stored as 0 with is_nan set
                    found[key].append(MetricPoint(step, nan if is_nan else value, stamp))
        if not any(found.values()):
            # no points: NotFound when there is no such run (a server answers an unknown
            # run's history with an empty list, as a database store's query does)
            self.get_run(run_id)
        return found

    def _metric_rows(self, store: Any, run_id: str) -> list[Any] | None:
        """(key, step, value, timestamp, is_nan) of every point of the run, read from a
        database store's own metrics table; None for another kind of store."""
        try:
            from mlflow.store.tracking.dbmodels.models import SqlMetric
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
        except ImportError:  # an MLflow without the database store's layout
            return None
        if not isinstance(store, SqlAlchemyStore):
            return None
        columns = (SqlMetric.key, SqlMetric.step, SqlMetric.value, SqlMetric.timestamp)
        with self._mapped(f"run {run_id!r}"), store.ManagedSessionMaker() as session:
            query = session.query(*columns, SqlMetric.is_nan).filter(SqlMetric.run_uuid == run_id)
            return list(query.all())

    def list_artifacts(self, run_id: str, path: str) -> list[ArtifactInfo]:
        with self._mapped(f"run {run_id!r}"):
            listed = self.client.list_artifacts(run_id, path or None)
        return [
            ArtifactInfo(path=f.path, is_dir=bool(f.is_dir), size=None if f.is_dir else f.file_size)
            for f in listed
        ]

    def list_experiments(self) -> list[str]:
        found: list[str] = []
        token = None
        while True:
            with self._mapped("list experiments"):
                page = self.client.search_experiments(max_results=1000, page_token=token)
            found += [e.name for e in page]
            token = page.token
            if not token:
                return found

    def list_registered_models(self) -> list[RegisteredModel]:
        found: list[RegisteredModel] = []
        token = None
        while True:
            with self._mapped("list registered models"):
                page = self.client.search_registered_models(max_results=1000, page_token=token)
            for model in page:
                versions = [int(v.version) for v in model.latest_versions or ()]
                found.append(
                    RegisteredModel(
                        name=model.name,
                        description=model.description or None,
                        aliases={a: int(v) for a, v in sorted((model.aliases or {}).items())},
                        latest_version=max(versions) if versions else None,
                        tags=dict(model.tags or {}),
                    )
                )
            token = page.token
            if not token:
                return found

    def list_models(self, run_id: str) -> list[ModelRef]:
        # MLflow 3 keeps a run's models as logged models, outside the run's artifacts; trackkit
        # packages (and MLflow 2 models) stored as artifacts are found by the default
        experiment_id = self._run_experiment_id(run_id)  # read with the run, as a rule
        with self._mapped(f"run {run_id!r}"):
            logged = self.client.search_logged_models(
                experiment_ids=[experiment_id], filter_string=f"source_run_id = '{run_id}'"
            )
        # the flavor is read with the model (model_details)
        found = [ModelRef(run_id, m.name, m.model_uri, "", self.name) for m in logged]
        return sorted([*found, *super().list_models(run_id)], key=lambda r: (r.name, r.uri))

    def get_run(self, run_id: str) -> RunInfo:
        with self._mapped(f"run {run_id!r}"):
            return self._run_info(self.client.get_run(run_id))

    def search_runs(self, query: Query) -> list[RunInfo]:
        ids = []
        for name in query.experiments:
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise NotFound(f"no MLflow experiment named {name!r}")
            ids.append(found.experiment_id)
        text, exact = to_mlflow_filter(query.clauses)
        if exact and not query.orders:
            # MLflow's order (newest first) is the core's except among runs that started in
            # the same millisecond: the first page, and every run sharing its last start time
            runs = self._search_page(ids, text, query.max_results, None)
            if len(runs) == query.max_results and runs[-1].info.start_time is not None:
                same = f"attributes.start_time = {runs[-1].info.start_time}"
                runs += self._search_all(ids, f"{text} and {same}" if text else same)
        else:  # the core sorts, or checks clauses MLflow cannot: every candidate
            runs = self._search_all(ids, text)
        return [self._run_info(r) for r in runs]

    def _search_page(self, ids: list[str], text: str, size: int, token: str | None) -> Any:
        with self._mapped("search_runs"):
            return self.client.search_runs(
                ids, filter_string=text, max_results=size, page_token=token
            )

    def _search_all(self, ids: list[str], text: str) -> list[Any]:
        found: list[Any] = []
        token = None
        while True:
            page = self._search_page(ids, text, SEARCH_PAGE, token)
            found += page
            token = page.token
            if not token:
                return found

    # -- models -------------------------------------------------------------------------------
    def _flavor_module(self, flavor: str) -> Any:
        return import_sdk(f"mlflow.{flavor}", extra="ml", purpose=f"MLflow's {flavor} flavor")

    def log_model(
        self,
        run_id: str,
        model: Any,
        name: str,
        flavor: str,
        *,
        signature: Signature | None = None,
        input_example: Any = None,
    ) -> ModelRef:
        if "/" in name:
            raise InvalidInput(f"MLflow model names cannot contain '/', got {name!r}")
        from trackkit.models import requirements

        # Pinning requirements ourselves skips MLflow's inference, which loads the model in a
        # subprocess and costs seconds per call.
        pins = requirements(model, flavor)
        extra: dict[str, Any] = {}
        if signature is not None:
            from mlflow.models import ModelSignature

            extra["signature"] = ModelSignature.from_dict(signature.to_mlflow_dict())
        if input_example is not None:
            extra["input_example"] = input_example
        if flavor == "python":
            # any picklable object, as an MLflow pyfunc model: mlflow.pyfunc.load_model(uri)
            # .predict(...) calls the object's own predict
            cloudpickle = import_sdk("cloudpickle", extra="mlflow", purpose="MLflow pyfunc models")
            pins = sorted({*pins, f"cloudpickle=={cloudpickle.__version__}"})
            records = input_example is not None and _is_records(input_example)
            python_model = _python_model(self._mlflow, model, records)
            with self._global_uris(), self._run_experiment(run_id), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*type hints to the `predict`")
                warnings.filterwarnings("ignore", message=".*input example was not provided")
                # Model.log is what mlflow.pyfunc.log_model calls, with the run given
                info = self._mlflow.models.Model.log(
                    artifact_path=None,
                    name=name,
                    flavor=self._mlflow.pyfunc,
                    python_model=python_model,
                    run_id=run_id,
                    pip_requirements=pins,
                    **extra,
                )
        else:
            module = self._flavor_module(flavor)
            if flavor == "sklearn":
                extra["skops_trusted_types"] = _skops_types(model)
            with self._global_uris(), self._run_experiment(run_id):
                info = module.log_model(
                    model, name=name, run_id=run_id, pip_requirements=pins, **extra
                )
        return ModelRef(
            run_id=run_id, name=name, uri=info.model_uri, flavor=flavor, backend=self.name
        )

    def load_model(self, uri: str) -> Any:
        rest = uri[len("models:/") :] if uri.startswith("models:/") else None
        if rest is not None and "/" not in rest and "@" not in rest and not rest.startswith("m-"):
            uri = f"models:/{rest}/latest"  # a registered model's name alone: its latest version
        with self._global_uris(), self._mapped(f"model {uri!r}", missing=True):
            flavors = self._mlflow.models.get_model_info(uri).flavors
            for flavor in ("xgboost", "sklearn"):
                if flavor in flavors:
                    return self._flavor_module(flavor).load_model(uri)
            loaded = self._mlflow.pyfunc.load_model(uri)
            unwrap = getattr(loaded, "unwrap_python_model", None)
            try:
                inner = unwrap() if callable(unwrap) else None
            except Exception:  # a pyfunc model without a Python model inside
                inner = None
            if inner is not None and hasattr(inner, PYFUNC_OBJECT):
                return getattr(inner, PYFUNC_OBJECT)  # logged by trackkit: the object itself
            return loaded

    def model_details(self, uri: str) -> tuple[str | None, Signature | None, Any]:
        import tempfile

        from trackkit.models import as_signature

        with self._global_uris(), self._mapped(f"model {uri!r}", missing=True):
            info = self._mlflow.models.get_model_info(uri)
            flavor = next((f for f in ("xgboost", "sklearn") if f in info.flavors), "python")
            signature = as_signature(info.signature)
            example = None
            if info.saved_input_example_info:
                with tempfile.TemporaryDirectory(prefix="trackkit-mlflow-") as tmp:
                    local = self._mlflow.artifacts.download_artifacts(
                        artifact_uri=uri, dst_path=tmp
                    )
                    model = self._mlflow.models.Model.load(local)
                    example = model.load_input_example(local)
        return flavor, signature, example

    def load_model_version(self, version: ModelVersion) -> Any:
        return self.load_model(f"models:/{version.name}/{version.version}")

    # -- registry -----------------------------------------------------------------------------
    def _version(self, mv: Any) -> ModelVersion:
        return ModelVersion(
            name=mv.name,
            version=int(mv.version),
            aliases=tuple(sorted(mv.aliases or ())),
            run_id=mv.run_id or None,
            source=mv.source,
            description=mv.description or None,
            created_at=_ms_to_datetime(mv.creation_timestamp),
            tags=dict(mv.tags or {}),
        )

    def create_model_version(
        self, name: str, source: str, run_id: str | None, description: str | None
    ) -> ModelVersion:
        with self._global_uris(), self._mapped(f"register {source!r} as {name!r}", missing=True):
            mv = self._mlflow.register_model(source, name)
        if description:
            return self.update_model_version(name, int(mv.version), description)
        return self.get_model_version(name, int(mv.version))

    def get_model_version(self, name: str, version: int) -> ModelVersion:
        with self._mapped(f"version {version} of {name!r}", missing=True):
            return self._version(self.client.get_model_version(name, str(version)))

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        with self._mapped(f"{name}@{alias}", missing=True):
            return self._version(self.client.get_model_version_by_alias(name, alias))

    def list_model_versions(self, name: str) -> list[ModelVersion]:
        with self._mapped(f"registered model {name!r}", missing=True):
            # search results carry no aliases: take them from the registered model
            aliases: dict[int, list[str]] = {}
            for alias, number in self.client.get_registered_model(name).aliases.items():
                aliases.setdefault(int(number), []).append(alias)
            found: list[ModelVersion] = []
            token = None
            while True:
                page = self.client.search_model_versions(
                    f"name = '{name}'", max_results=1000, page_token=token
                )
                found.extend(self._version(mv) for mv in page)
                token = page.token
                if not token:
                    return [
                        replace(v, aliases=tuple(sorted(aliases.get(v.version, ())))) for v in found
                    ]

    def set_model_alias(self, name: str, alias: str, version: int) -> None:
        with self._mapped(f"version {version} of {name!r}", missing=True):
            self.client.get_model_version(name, str(version))
            self.client.set_registered_model_alias(name, alias, str(version))

    def delete_model_alias(self, name: str, alias: str) -> None:
        with self._mapped(f"{name}@{alias}", missing=True):
            self.client.get_model_version_by_alias(name, alias)
            self.client.delete_registered_model_alias(name, alias)

    def update_model_version(self, name: str, version: int, description: str) -> ModelVersion:
        with self._mapped(f"version {version} of {name!r}", missing=True):
            return self._version(
                self.client.update_model_version(name, str(version), description=description)
            )

    def update_registered_model(self, name: str, description: str) -> RegisteredModel:
        with self._mapped(f"registered model {name!r}", missing=True):
            model = self.client.update_registered_model(name, description=description)
            # the update's reply may leave out aliases and versions: read the model back
            model = self.client.get_registered_model(model.name)
        versions = [int(v.version) for v in model.latest_versions or ()]
        return RegisteredModel(
            name=model.name,
            description=model.description or None,
            aliases={a: int(v) for a, v in sorted((model.aliases or {}).items())},
            latest_version=max(versions) if versions else None,
            tags=dict(model.tags or {}),
        )

    def set_model_version_tag(self, name: str, version: int, key: str, value: str) -> None:
        with self._mapped(f"version {version} of {name!r}", missing=True):
            self.client.set_model_version_tag(name, str(version), key, value)

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        with self._mapped(f"registered model {name!r}", missing=True):
            self.client.set_registered_model_tag(name, key, value)


@hookimpl
def trackkit_register_backends() -> list[type[Backend]]:
    return [MLflowBackend]
