"""trackkit: write tracking and model-registry code once; run it on MLflow, W&B or Neptune.

Choose the backend with ``TRACKKIT_BACKEND`` (default ``mlflow``)::

    import trackkit

    tracker = trackkit.get_tracker()
    with tracker.start_run(experiment="demo") as run:
        run.log_params({"model": {"alpha": 0.1}})
        run.log_metric("rmse", 6.4)

Importing trackkit imports no SDK and loads no plugin; both happen on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trackkit.entities import (
        ArtifactInfo,
        MetricPoint,
        ModelRef,
        ModelVersion,
        RegisteredModel,
        RunInfo,
    )
    from trackkit.errors import (
        BackendError,
        InvalidInput,
        JournalError,
        MissingDependencyError,
        NotFound,
        TrackkitError,
        TrackkitWarning,
        UnknownBackendError,
        UnsupportedOperation,
    )
    from trackkit.fluent import (
        active_run,
        end_run,
        get_default_tracker,
        get_tracking_uri,
        last_active_run,
        load_model,
        log_artifact,
        log_dict,
        log_figure,
        log_metric,
        log_metrics,
        log_model,
        log_param,
        log_params,
        log_table,
        log_text,
        register_model,
        search_runs,
        set_experiment,
        set_tag,
        set_tags,
        set_tracker,
        set_tracking_uri,
        start_run,
    )
    from trackkit.hookspecs import hookimpl
    from trackkit.integrations.autolog import autolog
    from trackkit.models import Signature
    from trackkit.multi import get_tracker
    from trackkit.replay import SyncResult, sync
    from trackkit.run import Run
    from trackkit.tracker import Tracker
    from trackkit.transfer import copy_runs

__version__ = "0.1.0"

# Public names are imported on first access, so `import trackkit` costs almost nothing.
_LAZY = {
    "trackkit.entities": (
        "ArtifactInfo",
        "MetricPoint",
        "ModelRef",
        "ModelVersion",
        "RegisteredModel",
        "RunInfo",
    ),
    "trackkit.errors": (
        "BackendError",
        "InvalidInput",
        "JournalError",
        "MissingDependencyError",
        "NotFound",
        "TrackkitError",
        "TrackkitWarning",
        "UnknownBackendError",
        "UnsupportedOperation",
    ),
    "trackkit.fluent": (
        "active_run",
        "end_run",
        "get_default_tracker",
        "get_tracking_uri",
        "last_active_run",
        "load_model",
        "log_artifact",
        "log_dict",
        "log_figure",
        "log_metric",
        "log_metrics",
        "log_model",
        "log_param",
        "log_params",
        "log_table",
        "log_text",
        "register_model",
        "search_runs",
        "set_experiment",
        "set_tag",
        "set_tags",
        "set_tracker",
        "set_tracking_uri",
        "start_run",
    ),
    "trackkit.hookspecs": ("hookimpl",),
    "trackkit.integrations.autolog": ("autolog",),
    "trackkit.models": ("Signature",),
    "trackkit.replay": ("sync", "SyncResult"),
    "trackkit.transfer": ("copy_runs",),  # runs and models, from any backend to any other
    "trackkit.run": ("Run",),
    "trackkit.tracker": ("Tracker",),
    "trackkit.multi": ("get_tracker",),  # one backend, or several at once
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'trackkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


def available_backends() -> list[str]:
    """The names of every registered backend (loads plugins, imports no SDK)."""
    from trackkit.plugins import get_plugin_manager

    return list(get_plugin_manager().backends())


__all__ = [
    "ArtifactInfo",
    "BackendError",
    "InvalidInput",
    "JournalError",
    "MetricPoint",
    "MissingDependencyError",
    "ModelRef",
    "ModelVersion",
    "NotFound",
    "RegisteredModel",
    "Run",
    "RunInfo",
    "Signature",
    "SyncResult",
    "Tracker",
    "TrackkitError",
    "TrackkitWarning",
    "UnknownBackendError",
    "UnsupportedOperation",
    "__version__",
    "active_run",
    "autolog",
    "available_backends",
    "copy_runs",
    "end_run",
    "get_default_tracker",
    "get_tracker",
    "get_tracking_uri",
    "hookimpl",
    "last_active_run",
    "load_model",
    "log_artifact",
    "log_dict",
    "log_figure",
    "log_metric",
    "log_metrics",
    "log_model",
    "log_param",
    "log_params",
    "log_table",
    "log_text",
    "register_model",
    "search_runs",
    "set_experiment",
    "set_tag",
    "set_tags",
    "set_tracker",
    "set_tracking_uri",
    "start_run",
    "sync",
]
