"""The Backend contract: what a plugin implements to put trackkit on a tracking service.

A backend is a thin adapter over one SDK. It receives data the core has already validated,
flattened and cut into batches that fit its declared :class:`Limits`, and it declares what it
can do in :class:`Capabilities`; the core answers every other request with a uniform
:class:`~trackkit.errors.UnsupportedOperation`. See ``docs/writing-a-backend.md``.
"""

from __future__ import annotations

import inspect
import json
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from trackkit._secrets import redact, scrub
from trackkit.errors import BackendError, TrackkitError, UnsupportedOperation

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from trackkit.entities import (
        ArtifactInfo,
        Metric,
        MetricPoint,
        ModelRef,
        ModelVersion,
        ParamValue,
        RegisteredModel,
        RunHandle,
        RunInfo,
    )
    from trackkit.models import Signature
    from trackkit.search import Query


T = TypeVar("T")


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; an operation whose capability is False raises UnsupportedOperation."""

    artifacts: bool = False
    models: bool = False
    registry: bool = False
    search_runs: bool = False
    resume: bool = False
    download_artifacts: bool = False
    native_tables: bool = False
    #: runs can have a parent run (``start_run(parent=...)``), stored natively and read back
    #: as ``RunInfo.parent_id``
    nested_runs: bool = False
    #: the read side (what ``trackkit runs``/``history`` and a copier use; ``search_runs`` and
    #: ``download_artifacts`` above are part of it): every stored point of a metric
    metric_history: bool = False
    #: the entries of a run's artifacts, with their sizes
    list_artifacts: bool = False
    #: the names of every experiment
    list_experiments: bool = False
    #: the registered models, with their descriptions, aliases, latest versions and tags
    list_registered_models: bool = False
    #: a run keeps start and end times it is given (``start_run(start_time=...)``,
    #: ``end_run(end_time=...)``) and reads them back as ``RunInfo.start_time``/``end_time``;
    #: what ``trackkit copy`` keeps a source run's times with
    run_times: bool = False
    #: a registered model holds tags of its own (``set_registered_model_tag``), read back in
    #: ``RegisteredModel.tags``
    registered_model_tags: bool = False

    def as_dict(self) -> dict[str, bool]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Limits:
    """A backend's limits; the core normalizes and batches to stay inside them.

    ``None`` means "no limit". ``key_invalid_chars`` is a regular expression matching one
    character a key may not contain; the core replaces each such character with ``_`` and
    reports the rename.
    """

    key_length: int | None = None
    param_value_length: int | None = None
    tag_value_length: int | None = None
    key_invalid_chars: str | None = None
    batch_metrics: int = 1000
    batch_params_tags: int = 100
    batch_total: int = 1000
    #: batches the writer may send at once (ops keep their order within each batch)
    concurrent_batches: int = 1
    #: the highest metric step the backend stores (its integer range); a higher one, given or
    #: implied (the step after it), is refused at the call with InvalidInput
    max_step: int = 2**63 - 1
    #: the highest metric timestamp (milliseconds) the backend stores; ``None``: no limit
    max_timestamp: int | None = None


class Backend(ABC):
    """Base class of every backend.

    Subclasses set ``name`` (the registry name users pass as ``TRACKKIT_BACKEND``), ``extra``
    (the pip extra that installs their SDK), ``sdk`` (the SDK's importable module, checked
    without importing it by ``trackkit backends``), ``capabilities`` and ``limits``. The SDK is
    imported in ``__init__`` (through :func:`trackkit._lazy.import_sdk`), never at module level.
    """

    name: ClassVar[str]
    extra: ClassVar[str | None] = None
    sdk: ClassVar[str | None] = None
    capabilities: Capabilities = Capabilities()  # an instance may narrow it (e.g. per mode)
    limits: Limits = Limits()  # an instance may narrow it (e.g. per store)

    def __init__(self, **options: Any) -> None:
        if options:
            raise TypeError(f"the {self.name} backend takes no options; got {sorted(options)}")

    # -- runs -------------------------------------------------------------------------------
    @abstractmethod
    def start_run(self, experiment: str | None, name: str | None, run_id: str | None) -> RunHandle:
        """Create a run in ``experiment`` (created if missing), or resume ``run_id``.

        ``experiment`` is None only when resuming: the run's own experiment applies.

        A backend that declares ``nested_runs`` also takes the keyword ``parent_id: str | None
        = None`` (a backend run id): the new run is a child of that run. The core passes it
        only when a parent is given, and only to such a backend (see :func:`start_run`), so a
        backend without nested runs keeps this signature and its type checks unchanged.

        Likewise, a backend that declares ``run_times`` takes the keyword ``start_time: int |
        None = None``: the new run's start time in milliseconds since the epoch (default: now).
        """

    @abstractmethod
    def end_run(self, run_id: str, status: str) -> None:
        """Mark the run ended with ``status`` (FINISHED, FAILED or KILLED).

        A backend that declares ``run_times`` also takes the keyword ``end_time: int | None =
        None`` (milliseconds since the epoch; default: now), also for a run that has ended
        already: its status and end time are then set again (see :func:`end_run`).
        """

    @abstractmethod
    def log_batch(
        self,
        run_id: str,
        params: Sequence[tuple[str, ParamValue]],
        metrics: Sequence[Metric],
        tags: Sequence[tuple[str, str]],
    ) -> None:
        """Write one batch; it is already within ``limits``."""

    def log_artifact(self, run_id: str, local_path: Path, artifact_path: str | None) -> None:
        """Store a file, or a directory, under ``artifact_path/<its name>`` in the run."""
        raise self.unsupported("log_artifact", "log the data as params, metrics or tags")

    def log_table(self, run_id: str, table: Any, file: str) -> None:
        """Store a DataFrame as the backend's native table (only if ``native_tables``)."""
        raise self.unsupported("native tables", "log the table as .parquet or .csv")

    def download_artifacts(self, run_id: str, path: str, dst: Path) -> Path:
        """Copy the run's artifact ``path`` (file or directory) under ``dst``; return the copy."""
        raise self.unsupported("download_artifacts", "keep a local copy when you log it")

    def get_run(self, run_id: str) -> RunInfo:
        raise self.unsupported("get_run", "keep the run's data in your own code")

    def search_runs(self, query: Query) -> list[RunInfo]:
        """The candidate runs of ``query.experiments``; the core filters, sorts and cuts them.

        ``query`` is already parsed and checked. A backend may translate its clauses into its
        server's own pre-filter and return a superset of the matches; it may return fewer runs
        than every candidate (e.g. ``query.max_results``) only where its filter and order are
        exactly the core's (see :mod:`trackkit.search`).
        """
        raise self.unsupported("search_runs", "use the backend's own UI to compare runs")

    # -- reading back -------------------------------------------------------------------------
    # Runs come back whole from get_run and search_runs (params, tags, status, times, parent,
    # url); these read the rest, so a run can be shown, compared or copied elsewhere.
    def get_metric_history(self, run_id: str, key: str) -> list[MetricPoint]:
        """Every stored point of metric ``key`` in the run, in any order (``metric_history``).

        An empty list when the run has no such metric; NotFound when there is no such run.
        """
        raise self.unsupported("get_metric_history", "read each metric's latest value (get_run)")

    def get_metric_histories(
        self, run_id: str, keys: Sequence[str]
    ) -> dict[str, list[MetricPoint]]:
        """Every stored point of each metric of ``keys`` in the run, in any order, by key
        (``metric_history``); a key without points maps to an empty list.

        What a copier reads a run's metrics with. The default asks :meth:`get_metric_history`
        once per key; a backend that can read them all at once (MLflow's database stores: one
        query a run) overrides it.
        """
        return {key: self.get_metric_history(run_id, key) for key in keys}

    def list_artifacts(self, run_id: str, path: str) -> list[ArtifactInfo]:
        """The entries directly under ``path`` (``""``: the run's root), with run-relative
        paths (``list_artifacts``); an empty list for a path that does not exist. Download
        them with ``download_artifacts``."""
        raise self.unsupported("list_artifacts", "download the artifact paths you know")

    def list_experiments(self) -> list[str]:
        """The names of every experiment (``list_experiments``)."""
        raise self.unsupported("list_experiments", "name the experiments to search")

    def list_registered_models(self) -> list[RegisteredModel]:
        """Every registered model (``list_registered_models``); the core sorts them by name.
        Its versions come from ``list_model_versions``."""
        raise self.unsupported("list_registered_models", "list the versions of a model you name")

    def list_models(self, run_id: str) -> list[ModelRef]:
        """The models logged in the run (what ``trackkit copy`` copies as models), each with
        the URI ``load_model`` takes.

        The default finds the trackkit model packages among the run's artifacts (a directory
        holding ``trackkit-model.json``; ``list_artifacts`` needed, else an empty list). A
        backend that keeps models elsewhere (MLflow's logged models, W&B model artifacts)
        overrides it.
        """
        from trackkit import models
        from trackkit.entities import ModelRef

        if not (self.capabilities.list_artifacts and self.capabilities.download_artifacts):
            return []
        found: list[ModelRef] = []
        todo = [""]
        while todo:
            entries = self.list_artifacts(run_id, todo.pop())
            names = {e.path.rsplit("/", 1)[-1]: e for e in entries}
            meta = names.get(models.METADATA_FILE)
            where = meta.path.rpartition("/")[0] if meta is not None and not meta.is_dir else ""
            if meta is not None and where:
                with tempfile.TemporaryDirectory(prefix="trackkit-model-") as tmp:
                    local = self.download_artifacts(run_id, meta.path, Path(tmp))
                    try:
                        info = json.loads(local.read_text(encoding="utf-8"))
                    except (OSError, ValueError):
                        info = {}
                flavor = info.get("flavor") if isinstance(info, dict) else None
                uri = f"runs:/{run_id}/{where}"
                found.append(ModelRef(run_id, where, uri, str(flavor or ""), self.name))
                continue  # a package's own files are not searched further
            todo += [e.path for e in entries if e.is_dir]
        return sorted(found, key=lambda r: r.name)

    def run_url(self, run_id: str) -> str | None:
        """The run's page in the backend's UI, never with credentials in it; None (the
        default) where there is none, e.g. a local store or an offline mode.

        A backend that has URLs also fills ``RunInfo.url`` in what ``get_run`` and
        ``search_runs`` return.
        """
        return None

    def run_hint(self, run_id: str) -> str | None:
        """Where ``run_url`` is None: how to see the run, as one line naming the command that
        shows it (``mlflow ui --backend-store-uri ...``, ``wandb sync ...``), without
        secrets. None (the default) when there is nothing to add to ``describe()``."""
        return None

    # -- models -----------------------------------------------------------------------------
    def log_model(self, run_id: str, model: Any, name: str, flavor: str) -> ModelRef:
        """Store ``model`` in the run. The default stores a trackkit model package artifact.

        A backend that stores signatures natively also takes the keywords ``signature``
        (a :class:`trackkit.models.Signature` or None) and ``input_example``; the core passes
        them where the method takes them (see :func:`log_model`). Otherwise a package written
        with ``models.save_package`` keeps them.
        """
        from trackkit import models
        from trackkit.entities import ModelRef

        with tempfile.TemporaryDirectory(prefix="trackkit-model-") as tmp:
            package = Path(tmp) / name.rsplit("/", 1)[-1]
            models.save_package(model, flavor, package)
            parent = name.rsplit("/", 1)[0] if "/" in name else None
            self.log_artifact(run_id, package, parent)
        return ModelRef(
            run_id=run_id,
            name=name,
            uri=f"runs:/{run_id}/{name}",
            flavor=flavor,
            backend=self.name,
        )

    def load_model(self, uri: str) -> Any:
        """Load a model from the backend's own URI. The default reads a trackkit model package."""
        from trackkit import models

        prefix = "runs:/"
        if not uri.startswith(prefix) or "/" not in uri[len(prefix) :]:
            raise self.unsupported(f"load_model({uri!r})", "pass a runs:/<run_id>/<name> URI")
        run_id, path = uri[len(prefix) :].split("/", 1)
        with tempfile.TemporaryDirectory(prefix="trackkit-model-") as tmp:
            local = self.download_artifacts(run_id, path, Path(tmp))
            return models.load_package(local)

    # -- registry ---------------------------------------------------------------------------
    def create_model_version(
        self, name: str, source: str, run_id: str | None, description: str | None
    ) -> ModelVersion:
        """Register ``source`` as a new version of ``name`` (created if missing)."""
        raise self.unsupported("register_model", "load the model from its run with load_model")

    def get_model_version(self, name: str, version: int) -> ModelVersion:
        raise self.unsupported("get_model_version", "keep the ModelRef that log_model returned")

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        raise self.unsupported("get_model_version(alias=...)", "ask by version number")

    def list_model_versions(self, name: str) -> list[ModelVersion]:
        raise self.unsupported("list_model_versions", "keep the ModelRef that log_model returned")

    def set_model_alias(self, name: str, alias: str, version: int) -> None:
        raise self.unsupported("set_model_alias", "record the chosen version in a tag")

    def delete_model_alias(self, name: str, alias: str) -> None:
        raise self.unsupported("delete_model_alias", "record the chosen version in a tag")

    def update_model_version(self, name: str, version: int, description: str) -> ModelVersion:
        raise self.unsupported("update_model_version", "log the description as a run tag")

    def update_registered_model(self, name: str, description: str) -> RegisteredModel:
        """Set the description of the registered model ``name``; return the model."""
        raise self.unsupported(
            "update_registered_model", "describe each version with update_model_version"
        )

    def set_model_version_tag(self, name: str, version: int, key: str, value: str) -> None:
        """Set the tag ``key`` of a registered version to ``value`` (text)."""
        raise self.unsupported(
            "set_model_version_tag", "describe the version with update_model_version"
        )

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        """Set the tag ``key`` of the registered model ``name`` to ``value`` (text;
        ``registered_model_tags``). NotFound when there is no such model."""
        raise self.unsupported(
            "set_registered_model_tag", "tag each version (set_model_version_tag)"
        )

    def model_details(self, uri: str) -> tuple[str | None, Signature | None, Any]:
        """The flavor, signature and input example of the model at ``uri``, for a backend that
        stores models in its own format (MLflow). The default, ``(None, None, None)``, means
        they are in the trackkit model package ``load_model`` reads."""
        return None, None, None

    def set_model_stage(self, name: str, version: int, stage: str) -> None:
        """Also record ``stage`` (staging, production or archived) natively, where the
        registry has stages of its own. Called by ``transition_model_version_stage`` after it
        moved the stage's alias; the default does nothing (the alias is the stage)."""

    def load_model_version(self, version: ModelVersion) -> Any:
        """Load a registered version; the default loads its ``source`` URI."""
        return self.load_model(version.source)

    def activate_run(self, run_id: str) -> None:
        """The run became the module-level active run (``trackkit.start_run``) in this thread.

        MLflow makes it MLflow's own active run too, so MLflow's fluent calls and its own
        autologging inside a trackkit run log into that run. The default does nothing.
        """

    def deactivate_run(self, run_id: str, status: str) -> None:
        """The active run ended with ``status`` (undo :meth:`activate_run`)."""

    # -- lifecycle --------------------------------------------------------------------------
    def close(self) -> None:
        """Release SDK resources; called by ``Tracker.close``."""

    def offline_registry(self) -> Path | None:
        """Where the core keeps this backend's registry while its own is out of reach.

        ``None`` (the default) means the backend's registry is reachable in its current mode.
        A path makes the core answer registry calls from a local registry in that file and
        journal each change for ``trackkit sync`` to repeat on the real registry later.
        """
        return None

    def check_registration(self, name: str, source: str, run_id: str | None) -> str | None:
        """Check that ``source`` can be registered as ``name``; return the run it came from.

        Called by the core before it registers a model in the offline registry, so offline
        registrations are refused as the backend's own registry would refuse them. The default
        accepts everything and returns ``run_id``.
        """
        return run_id

    def replay_options(self) -> dict[str, Any]:
        """Options that recreate this backend for ``trackkit sync``, without secrets."""
        return {}

    def describe(self) -> str:
        """A one-line, secret-free description used in reprs and messages."""
        return self.name

    def unsupported(self, operation: str, alternative: str) -> UnsupportedOperation:
        """The uniform error for an operation this backend cannot do."""
        return UnsupportedOperation(
            f"the {self.name} backend does not support {operation}; instead, {alternative}"
        )


def require(backend: Backend, capability: str, operation: str, alternative: str) -> None:
    """Raise the backend's UnsupportedOperation unless it has ``capability``."""
    if not getattr(backend.capabilities, capability):
        raise backend.unsupported(operation, alternative)


def start_run(
    backend: Backend,
    experiment: str | None,
    name: str | None,
    run_id: str | None,
    parent_id: str | None = None,
    start_time: int | None = None,
) -> RunHandle:
    """Start a run on ``backend``; with ``parent_id``, a child run (``nested_runs`` only); with
    ``start_time`` (ms), a run that started then (``run_times`` only).

    Raises:
        UnsupportedOperation: a parent or a start time is given and the backend does not
            declare nested runs, or run times.
    """
    keywords: dict[str, Any] = {}
    if parent_id is not None:
        require(backend, "nested_runs", "start_run(parent=...)", "tag the run with its parent's id")
        keywords["parent_id"] = parent_id
    if start_time is not None:
        require(backend, "run_times", "start_run(start_time=...)", "keep the time in a tag")
        keywords["start_time"] = start_time
    if not keywords:
        return backend.start_run(experiment, name, run_id)
    extended: Any = backend  # the keywords are part of the contract only for such backends
    handle: RunHandle = extended.start_run(experiment, name, run_id, **keywords)
    return handle


def end_run(backend: Backend, run_id: str, status: str, end_time: int | None = None) -> None:
    """End a run on ``backend``; with ``end_time`` (ms), at that time (``run_times`` only; the
    run may have ended already: its status and end time are set again).

    Raises:
        UnsupportedOperation: an end time is given and the backend does not declare run times.
    """
    if end_time is None:
        backend.end_run(run_id, status)
        return
    require(backend, "run_times", "end_run(end_time=...)", "keep the time in a tag")
    extended: Any = backend  # the keyword is part of the contract only for run_times backends
    extended.end_run(run_id, status, end_time=end_time)


def log_model(
    backend: Backend,
    run_id: str,
    model: Any,
    name: str,
    flavor: str,
    signature: Signature | None = None,
    input_example: Any = None,
) -> ModelRef:
    """Call ``backend.log_model`` with the model's signature and input example.

    A backend whose ``log_model`` takes the keywords ``signature`` and ``input_example``
    receives them; any other gets them through :func:`trackkit.models.extras`, which the
    trackkit model package it writes with ``save_package`` picks up.
    """
    from trackkit import models

    if signature is None and input_example is None:
        return backend.log_model(run_id, model, name, flavor)
    accepts = inspect.signature(backend.log_model).parameters
    if "signature" in accepts and "input_example" in accepts:
        native: Any = backend
        ref: ModelRef = native.log_model(
            run_id, model, name, flavor, signature=signature, input_example=input_example
        )
        return ref
    with models.extras(signature, input_example):
        return backend.log_model(run_id, model, name, flavor)


def call(backend: Backend, operation: str, fn: Callable[[], T]) -> T:
    """Run one SDK-facing call; wrap SDK failures in BackendError with context (redacted)."""
    try:
        return fn()
    except TrackkitError:
        raise
    except Exception as e:
        message = f"the {backend.describe()} backend failed to {operation}: {type(e).__name__}: {e}"
        raise BackendError(redact(message)) from scrub(e)
