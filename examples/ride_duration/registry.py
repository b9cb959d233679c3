"""The model registry, the course's way with aliases instead of stages.

Find the best training run by validation rmse, register its model as a new version, point
``staging`` at it, evaluate the staged model on a test month against the current production
version, and promote it: ``production`` moves to the new version and the version gets a
description. Older versions are kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

import trackkit
from examples.ride_duration import EXPERIMENT, MODEL_NAME, data
from examples.ride_duration.train import MODEL_URI_TAG, scores

_MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>[^/@]+))")


@dataclass(frozen=True)
class Evaluation:
    """A model's scores on one month of rides."""

    rmse: float
    mae: float
    rides: int


@dataclass(frozen=True)
class RegistryResult:
    """What the registry step did."""

    best: trackkit.RunInfo
    version: trackkit.ModelVersion  # the new version, as it is after promotion
    staging: Evaluation
    previous: trackkit.ModelVersion | None  # production before this step, if any
    previous_evaluation: Evaluation | None
    promoted: bool
    aliases: dict[str, int]  # every alias of the model -> its version
    versions: list[int]


def parse_model_uri(uri: str) -> tuple[str, int | None, str | None]:
    """Split ``models:/<name>@<alias>`` or ``models:/<name>/<version>``.

    Raises:
        ValueError: ``uri`` is neither.
    """
    found = _MODEL_URI.fullmatch(uri) if isinstance(uri, str) else None
    if found is None:
        raise ValueError(
            f"expected a registered model URI, models:/<name>@<alias> or "
            f"models:/<name>/<version>, got {uri!r}"
        )
    number = found["version"]
    if number is not None and not number.isdigit():
        raise ValueError(f"the version in {uri!r} must be a number")
    return found["name"], int(number) if number else None, found["alias"]


def load_registered(tracker: trackkit.Tracker, uri: str) -> tuple[Any, trackkit.ModelVersion]:
    """Load a registered model and say which version it is.

    An alias is resolved once and that exact version is loaded, so the version returned is
    the one that answers, even if the alias moves meanwhile.

    Raises:
        trackkit.NotFound: no such model, version or alias.
    """
    name, version, alias = parse_model_uri(uri)
    found = tracker.get_model_version(name, version=version, alias=alias)
    model = tracker.load_model(f"models:/{found.name}/{found.version}")
    return model, found


def evaluate(model: Any, rides: pd.DataFrame) -> Evaluation:
    """Score ``model`` on rides read by :func:`data.read_dataframe`."""
    rmse, mae = scores(rides[data.TARGET].to_numpy(), model.predict(data.to_dicts(rides)))
    return Evaluation(rmse=rmse, mae=mae, rides=len(rides))


def best_run(
    tracker: trackkit.Tracker, experiment: str = EXPERIMENT, filter: str | None = None
) -> trackkit.RunInfo:
    """The run with the lowest validation rmse (among those matching ``filter``).

    Raises:
        LookupError: no run matches.
    """
    runs = tracker.search_runs(
        experiment, filter=filter, order_by=["metrics.rmse ASC"], max_results=1
    )
    if not runs or "rmse" not in runs[0].metrics:
        raise LookupError(f"no training run with an rmse in experiment {experiment!r} ({filter})")
    return runs[0]


#: the registered model's own description (each version's says where it came from)
MODEL_DESCRIPTION = "NYC taxi ride duration (minutes) from pickup/dropoff zones and trip distance"


def register_best(
    tracker: trackkit.Tracker,
    *,
    experiment: str = EXPERIMENT,
    name: str = MODEL_NAME,
    filter: str | None = None,
) -> tuple[trackkit.RunInfo, trackkit.ModelVersion]:
    """Register the best run's model as a new version of ``name`` and alias it ``staging``."""
    best = best_run(tracker, experiment, filter)
    source = best.tags.get(MODEL_URI_TAG)
    if not source:
        raise LookupError(f"run {best.id} has no {MODEL_URI_TAG!r} tag: it logged no model")
    description = (
        f"{best.tags.get('model_type', 'model')} from run {best.name} ({best.id}): "
        f"validation rmse {best.metrics['rmse']:.3f}, mae {best.metrics.get('mae', float('nan')):.3f}"
    )
    version = tracker.register_model(source, name, description=description)
    tracker.update_registered_model(name, MODEL_DESCRIPTION)
    tracker.set_model_alias(name, "staging", version.version)
    return best, version


def promote(
    tracker: trackkit.Tracker, name: str, version: int, description: str
) -> trackkit.ModelVersion:
    """Move ``production`` to ``version`` and describe the version; other versions are kept."""
    tracker.set_model_alias(name, "production", version)
    return tracker.update_model_version(name, version, description)


def run_registry(
    tracker: trackkit.Tracker,
    test_path: Path,
    *,
    experiment: str = EXPERIMENT,
    name: str = MODEL_NAME,
    filter: str | None = None,
) -> RegistryResult:
    """Register the best run, evaluate ``staging`` on the test month, and promote it.

    The staged version is promoted unless the current production version does better on the
    same test month; either way the outcome is written in the version's description.
    """
    best, registered = register_best(tracker, experiment=experiment, name=name, filter=filter)
    rides = data.read_dataframe(test_path)
    staged_model, staged = load_registered(tracker, f"models:/{name}@staging")
    staging = evaluate(staged_model, rides)
    try:
        current_model, previous = load_registered(tracker, f"models:/{name}@production")
    except trackkit.NotFound:  # the first promotion
        previous, previous_evaluation = None, None
    else:
        previous_evaluation = evaluate(current_model, rides)

    month = Path(test_path).name
    tested = f"test rmse {staging.rmse:.3f}, mae {staging.mae:.3f} on {month}"
    promoted = previous_evaluation is None or staging.rmse <= previous_evaluation.rmse
    if previous is None or previous_evaluation is None:
        outcome = "promoted to production (the first production version)"
    elif promoted:
        outcome = (
            f"promoted to production, replacing version {previous.version} "
            f"(test rmse {previous_evaluation.rmse:.3f})"
        )
    else:
        outcome = (
            f"kept in staging: production version {previous.version} does better "
            f"(test rmse {previous_evaluation.rmse:.3f})"
        )
    description = f"{registered.description}; {tested}; {outcome}"
    if promoted:
        version = promote(tracker, name, staged.version, description)
    else:
        version = tracker.update_model_version(name, staged.version, description)

    versions = tracker.list_model_versions(name)
    aliases = {alias: v.version for v in versions for alias in v.aliases}
    return RegistryResult(
        best=best,
        version=tracker.get_model_version(name, version.version),
        staging=staging,
        previous=previous,
        previous_evaluation=previous_evaluation,
        promoted=promoted,
        aliases=aliases,
        versions=[v.version for v in versions],
    )
