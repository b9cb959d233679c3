"""Where trackkit's data sits in a W&B run, and how to read it back into trackkit's terms.

Params are the run's config (with the exact text of the few values W&B's reader cannot give
back kept in the summary as ``trackkit:param:<key>``, and a child run's parent as the config entry
``trackkit:parent_id``); a metric point sits in the history row numbered by its step, or
carries its step as ``k:step`` (and its time as ``k:timestamp`` when the row's is another
point's, see ``layout``); tags,
the run's status and (with a fixed ``project``) its experiment are summary keys with a ``:``
in them, which no trackkit key can contain. See docs/wandb.md, "How trackkit maps onto W&B".
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from trackkit.entities import ArtifactInfo, MetricPoint
from trackkit.errors import InvalidInput
from trackkit.normalize import value_text

#: the x-axis of metric ``k`` is the metric ``k:step`` (":" never occurs in a trackkit key),
#: written only for points that cannot sit in the history row their step numbers
STEP_SUFFIX = ":step"
#: the time of a point of ``k`` in a row whose ``_timestamp`` is another point's (seconds)
TIME_SUFFIX = ":timestamp"
#: W&B's reader holds numbers as doubles: steps from here on are not row numbers
EXACT_STEP = 2**53
#: summary keys trackkit writes; ":" keeps them apart from any metric a user can log
TAG_PREFIX = "tag:"
STATUS_KEY = "trackkit:status"
#: a child run's config entry naming its parent run (trackkit's own: no param has a ":")
PARENT_KEY = "trackkit:parent_id"
#: ``trackkit:param:<key>`` holds the text of a param whose config value W&B reads back changed
PARAM_PREFIX = "trackkit:param:"
EXPERIMENT_KEY = "trackkit:experiment"
#: run files trackkit stores live under this directory of the run's files
FILES_PREFIX = "artifacts"
URI_PREFIX = "wandb-artifact:///"
MODEL_TYPE = "model"
EXIT_CODES = {"FINISHED": 0, "FAILED": 1, "KILLED": 130}
MAX_WANDB_TAG = 64  # wandb.Settings rejects longer run tags
MAX_NAME = 128  # W&B project, artifact and registry collection names
_PROJECT_FORBIDDEN = re.compile(r"[/\\#?%:\r\n]")
_EXACT_INT = 2**53  # W&B's reader holds numbers as doubles: larger ints lose digits
_SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def check_project(project: str) -> None:
    """Refuse a name W&B cannot take as a project."""
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


def parse_time(value: Any) -> datetime | None:
    """A time as W&B writes it (epoch seconds or ISO text with nanoseconds), in UTC."""
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


def param_text(value: Any) -> str:
    """The trackkit text of a W&B config value (the inverse of logging a ParamValue)."""
    if isinstance(value, (str, bool, int, float)):
        return value_text(value)
    if value is None:
        return "None"
    return json.dumps(value)


def number(value: Any) -> float | None:
    """A summary value as a metric value, or None when it is not one."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[value]
    return None


def user_config(config: Mapping[str, Any]) -> dict[str, str]:
    """The params in a W&B config (W&B's own entries start with ``_``, trackkit's ``trackkit:``)."""
    return {k: param_text(v) for k, v in config.items() if not k.startswith(("_", "trackkit:"))}


def parent_of(config: Mapping[str, Any]) -> str | None:
    """The parent run id a run's config names, or None."""
    parent = config.get(PARENT_KEY)
    return parent if isinstance(parent, str) and parent else None


def kept_texts(params: Mapping[str, Any]) -> dict[str, str]:
    """The summary entries that keep the text of params W&B cannot give back as logged.

    W&B writes ``1.0`` into its record, but its reader (``wandb leet inspect``) holds numbers as
    doubles and prints them back without a decimal point (``1``, ``100000000000000000000`` for
    ``1e20``); the SDK writes NaN as null, and large ints lose digits. Every other value reads
    back as it was logged, so only these are kept.
    """
    kept = {}
    for key, value in params.items():
        if isinstance(value, bool):
            continue
        if (isinstance(value, float) and (not math.isfinite(value) or value.is_integer())) or (
            isinstance(value, int) and abs(value) > _EXACT_INT
        ):
            kept[PARAM_PREFIX + key] = value_text(value)
    return kept


def params_of(config: Mapping[str, Any], summary: Mapping[str, Any]) -> dict[str, str]:
    """The params of a run: its config, with the texts the summary keeps (see kept_texts)."""
    params = user_config(config)
    for key, value in summary.items():
        if key.startswith(PARAM_PREFIX) and (name := key[len(PARAM_PREFIX) :]) in params:
            params[name] = str(value)
    return params


def summary_parts(summary: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """Metrics (latest value per key) and trackkit tags held in a W&B run summary."""
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    for key, value in summary.items():
        if key.startswith(TAG_PREFIX):
            tags[key[len(TAG_PREFIX) :]] = str(value)
        elif key.startswith(("_", "trackkit:")) or key.endswith((STEP_SUFFIX, TIME_SUFFIX)):
            continue
        elif (found := number(value)) is not None:
            metrics[key] = found
    return metrics, tags


def last_steps(summary: Mapping[str, Any]) -> dict[str, int]:
    """Each metric's step as the summary holds it (the step of its latest value)."""
    steps = {}
    for key, value in summary.items():
        if key.endswith(STEP_SUFFIX) and isinstance(value, (int, float)):
            steps[key[: -len(STEP_SUFFIX)]] = int(value)
    return steps


def metric_points(rows: Iterable[Mapping[str, Any]], key: str) -> list[MetricPoint]:
    """The points of metric ``key`` in W&B history rows: each row's value of ``key``, at its
    step ``key:step`` if the row has it, else the row's number ``_step`` (a point at its own
    step, or a run trackkit did not log), and at its time ``key:timestamp`` if the row has
    it, else the row's ``_timestamp`` (seconds). Rows without a number for ``key`` hold no
    point of it."""
    axis, clock = key + STEP_SUFFIX, key + TIME_SUFFIX
    points = []
    for row in rows:
        if key not in row or (value := number(row[key])) is None:
            continue
        step = row.get(axis, row.get("_step"))
        seconds = row.get(clock, row.get("_timestamp"))
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not math.isfinite(step):
            continue
        timestamp = (
            round(seconds * 1000)
            if isinstance(seconds, (int, float)) and math.isfinite(seconds)
            else 0
        )
        points.append(MetricPoint(step=int(step), value=value, timestamp=int(timestamp)))
    return points


def file_entries(files: Iterable[tuple[str, int | None]], path: str) -> list[ArtifactInfo]:
    """The entries directly under the artifact ``path`` among a run's files (name, size)."""
    prefix = "/".join(p for p in (FILES_PREFIX, path) if p) + "/"
    found: dict[str, ArtifactInfo] = {}
    for name, size in files:
        if not name.startswith(prefix):
            continue
        head, below, _ = name[len(prefix) :].partition("/")
        if not head:
            continue
        relative = f"{path}/{head}" if path else head
        if below:
            found[relative] = ArtifactInfo(path=relative, is_dir=True)
        else:
            found.setdefault(relative, ArtifactInfo(path=relative, is_dir=False, size=size))
    return sorted(found.values(), key=lambda e: e.path)


def run_status(exit_code: Any, summary: Mapping[str, Any], state: str | None = None) -> str:
    """trackkit's status of a run, from its exit code (offline) or its W&B state (online)."""
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
