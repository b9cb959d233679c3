"""The Backend contract: what a plugin implements to put trackkit on a tracking service.

A backend is a thin adapter over one SDK. It receives data the core has already validated,
flattened and cut into batches that fit its declared :class:`Limits`, and it declares what it
can do in :class:`Capabilities`; the core answers every other request with a uniform
:class:`~trackkit.errors.UnsupportedOperation`. See ``docs/writing-a-backend.md``.
"""

from __future__ import annotations

import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from trackkit._secrets import redact, scrub
from trackkit.errors import BackendError, TrackkitError, UnsupportedOperation

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from trackkit.entities import Metric, ModelRef, ModelVersion, ParamValue, RunHandle, RunInfo
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
        """

    @abstractmethod
    def end_run(self, run_id: str, status: str) -> None:
        """Mark the run ended with ``status`` (FINISHED, FAILED or KILLED)."""

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

    # -- models -----------------------------------------------------------------------------
    def log_model(self, run_id: str, model: Any, name: str, flavor: str) -> ModelRef:
        """Store ``model`` in the run. The default stores a trackkit model package artifact."""
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

    def load_model_version(self, version: ModelVersion) -> Any:
        """Load a registered version; the default loads its ``source`` URI."""
        return self.load_model(version.source)

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


def call(backend: Backend, operation: str, fn: Callable[[], T]) -> T:
    """Run one SDK-facing call; wrap SDK failures in BackendError with context (redacted)."""
    try:
        return fn()
    except TrackkitError:
        raise
    except Exception as e:
        message = f"the {backend.describe()} backend failed to {operation}: {type(e).__name__}: {e}"
        raise BackendError(redact(message)) from scrub(e)
