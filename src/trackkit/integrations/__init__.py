"""Integrations with training and search libraries, each imported only when used.

- :mod:`trackkit.integrations.autolog`: ``trackkit.autolog()`` for scikit-learn, xgboost and
  LightGBM;
- :mod:`trackkit.integrations.optuna`: ``TrackkitCallback`` for ``study.optimize``;
- :mod:`trackkit.integrations.hyperopt`: ``tracked(objective)`` for ``fmin``.

The search integrations share :func:`start_trial`: each trial is a child run of the active
run where the backend has nested runs, and elsewhere a run tagged with the search's run id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trackkit.run import Run

#: the tag a trial carries on a backend without nested runs: the id of the search's run
SEARCH_RUN_TAG = "trackkit.search_run_id"


def start_trial(name: str, nested: bool, tags: Mapping[str, Any] | None = None) -> Run:
    """Start a trial's run and make it the active run (``trackkit.start_run``).

    The active run is the search's run: one started with ``trackkit.start_run()`` or entered
    with ``with tracker.start_run(...)``; the trial starts on that run's tracker.

    With ``nested`` and an active run, the trial is the active run's child where the backend
    declares ``nested_runs`` (each backend, for a run on several); elsewhere it is a top-level
    run in the same experiment, tagged ``trackkit.search_run_id`` with the active run's id, so
    ``search_runs(filter="tags.`trackkit.search_run_id` = '<id>'")`` finds every trial of the
    search.
    """
    from trackkit import fluent

    parent = fluent.active_run() if nested else None
    all_tags = dict(tags or {})
    if parent is None:
        return fluent.start_run(name=name, tags=all_tags)
    all_tags[SEARCH_RUN_TAG] = parent.id
    # on the search run's tracker, which may not be the default one (`with tracker.start_run()`)
    if all(backend.capabilities.nested_runs for backend in parent.backends()):
        return fluent.start_active_run(parent.tracker, name=name, tags=all_tags, parent=parent)
    return fluent.start_active_run(
        parent.tracker, experiment=parent.experiment, name=name, tags=all_tags
    )


def plain_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Sampled params as loggable values: numpy scalars as Python numbers, None as text."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            out[str(key)] = plain_params(value)
        elif value is None:
            out[str(key)] = "None"
        elif hasattr(value, "item") and callable(value.item):
            out[str(key)] = value.item()  # numpy scalar
        elif isinstance(value, (str, bool, int, float)):
            out[str(key)] = value
        else:
            out[str(key)] = str(value)
    return out
