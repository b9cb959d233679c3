"""Bad input never vanishes: it is normalized in a documented way or rejected with InvalidInput.

Everything written is read back through MLflow's own client (never only through trackkit), and
the caller's objects are checked to be left exactly as they were. The cases are shared with
tests/test_normalize_core.py (tests/bad_input_cases.py), which runs them without any SDK.
"""

from __future__ import annotations

import copy
import json
import math
import re
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackkit
from bad_input_cases import (
    AFTER_END,
    BAD_ALIASES,
    BAD_DICT_FILES,
    BAD_KEYS,
    BAD_MODEL_NAMES,
    BAD_STATUSES,
    BAD_STEPS,
    BAD_TIMESTAMPS,
    BAD_VERSIONS,
    CALLER_PARAMS_TEXT,
    CALLER_TAGS_TEXT,
    COLLECTION_PARAMS_TEXT,
    CYCLE_PROBE,
    DATETIME_TIMESTAMP,
    ESCAPING_ARTIFACT_PATHS,
    FAILING_PARAM_BATCHES,
    FLATTENED_PARAMS,
    KEY_LENGTH,
    LOGGERS,
    LONG_TEXT,
    NAN_VALUES,
    NESTED_PARAM,
    NESTED_PARAMS,
    NON_NUMERIC_METRICS,
    NON_STR_TEXTS,
    NUMPY_PARAMS_TEXT,
    RENAMED_KEYS,
    VALUES_WITHOUT_TEXT,
    caller_metrics,
    caller_params,
    caller_tags,
    collection_params,
    numpy_params,
    self_containing,
)
from trackkit import InvalidInput, TrackkitError, TrackkitWarning, UnknownBackendError
from trackkit._secrets import MASK, redact
from trackkit.normalize import LONG_VALUES_DIR, TRUNCATION_MARKER
from trackkit.run import RENAMES_ARTIFACT

PARAM_LIMIT = 6000
TAG_LIMIT = 8000
MAX_FLOAT = sys.float_info.max


# -- helpers ----------------------------------------------------------------------------------
def _user_tags(client: Any, run_id: str) -> dict[str, str]:
    tags = client.get_run(run_id).data.tags
    return {k: v for k, v in tags.items() if not k.startswith("mlflow.")}


def _user_data(client: Any, run_id: str) -> tuple[dict, dict, dict]:
    data = client.get_run(run_id).data
    return dict(data.params), dict(data.metrics), _user_tags(client, run_id)


def _history(client: Any, run_id: str, key: str) -> list[tuple[int, float]]:
    points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return [(m.step, m.value) for m in points]


def _artifacts(client: Any, run_id: str, path: str | None = None) -> list[str]:
    return sorted(a.path for a in client.list_artifacts(run_id, path))


def _read_artifact(client: Any, run_id: str, path: str, tmp_path: Path) -> str:
    dst = tmp_path / "downloads"
    dst.mkdir(exist_ok=True)
    return Path(client.download_artifacts(run_id, path, str(dst))).read_text(encoding="utf-8")


def _assert_nothing_logged(client: Any, run_id: str) -> None:
    assert _user_data(client, run_id) == ({}, {}, {})
    assert _artifacts(client, run_id) == []


def _fitted_pipeline() -> Any:
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline

    rows = [{"a": 1.0, "b": "x"}, {"a": 2.0, "b": "y"}, {"a": 3.0, "b": "x"}, {"a": 4.0, "b": "y"}]
    return make_pipeline(DictVectorizer(), LinearRegression()).fit(rows, [1.0, 2.0, 3.0, 4.0])


def _registered(tracker: trackkit.Tracker, name: str = "m") -> Any:
    with tracker.start_run(experiment="registry") as run:
        ref = run.log_model(_fitted_pipeline())
    version = tracker.register_model(ref, name)
    assert version.version == 1
    return version


# -- metric values ------------------------------------------------------------------------------
def test_nan_metric_is_kept(mlflow_tracker, mlflow_client):
    with mlflow_tracker.start_run(experiment="e") as run:
        for nan in NAN_VALUES:
            run.log_metric("loss", nan)
    history = _history(mlflow_client, run.id, "loss")
    assert [step for step, _ in history] == [0, 1]
    assert all(math.isnan(value) for _, value in history)


@pytest.mark.parametrize("sign", [1, -1], ids=["+inf", "-inf"])
def test_infinite_metric_reaches_mlflow_with_its_sign(mlflow_tracker, mlflow_client, sign):
    # Not dropped: MLflow's SQL store holds the point, as inf or as +-max float (documented).
    with mlflow_tracker.start_run(experiment="e") as run:
        run.log_metric("grad", sign * math.inf)
    [(step, value)] = _history(mlflow_client, run.id, "grad")
    assert step == 0
    assert value == sign * math.inf or value == sign * MAX_FLOAT


@pytest.mark.parametrize(("value", "shown"), NON_NUMERIC_METRICS)
def test_non_numeric_metric_is_rejected(mlflow_tracker, mlflow_client, value, shown):
    with mlflow_tracker.start_run(experiment="e") as run:
        with pytest.raises(InvalidInput, match=rf"'acc'.*{re.escape(shown)}"):
            run.log_metric("acc", value)
        with pytest.raises(InvalidInput, match=rf"'val\.acc'.*{re.escape(shown)}"):
            run.log_metrics({"val": {"acc": value}, "ok": 1.0})  # the whole call is refused
    _assert_nothing_logged(mlflow_client, run.id)


def test_bool_metric_becomes_one_or_zero(mlflow_tracker, mlflow_client):
    with mlflow_tracker.start_run(experiment="e") as run:
        run.log_metric("converged", True)
        run.log_metric("converged", False)
        run.log_metrics({"flag": np.bool_(True)})
    assert _history(mlflow_client, run.id, "converged") == [(0, 1.0), (1, 0.0)]
    assert _history(mlflow_client, run.id, "flag") == [(0, 1.0)]


def test_numpy_scalar_metrics_and_steps_are_converted(mlflow_tracker, mlflow_client):
    with mlflow_tracker.start_run(experiment="e") as run:
        run.log_metric("f32", np.float32(0.25), step=np.int64(4))
        run.log_metrics({"i64": np.int64(7), "f64": np.float64(-1.5), "b": np.bool_(False)})
    assert _history(mlflow_client, run.id, "f32") == [(4, 0.25)]
    assert mlflow_client.get_run(run.id).data.metrics == {
        "f32": 0.25,
        "i64": 7.0,
        "f64": -1.5,
        "b": 0.0,
    }


# -- steps and timestamps -----------------------------------------------------------------------
@pytest.mark.parametrize(("step", "shown"), BAD_STEPS)
def test_bad_step_is_rejected(mlflow_tracker, mlflow_client, step, shown):
    with mlflow_tracker.start_run(experiment="e") as run:
        with pytest.raises(InvalidInput, match=rf"step of metric 'loss'.*{re.escape(shown)}"):
            run.log_metric("loss", 1.0, step=step)
        with pytest.raises(InvalidInput, match=re.escape(shown)):
            run.log_metrics({"loss": 1.0}, step=step)
    _assert_nothing_logged(mlflow_client, run.id)


def test_integral_float_step_becomes_int(mlflow_tracker, mlflow_client):
    with mlflow_tracker.start_run(experiment="e") as run:
        run.log_metric("loss", 0.5, step=3.0)
        run.log_metric("loss", 0.4)  # the next implicit step continues from 3
    history = _history(mlflow_client, run.id, "loss")
    assert history == [(3, 0.5), (4, 0.4)]
    assert all(type(step) is int for step, _ in history)


@pytest.mark.parametrize(("timestamp", "shown"), BAD_TIMESTAMPS)
def test_bad_timestamp_is_rejected(mlflow_tracker, mlflow_client, timestamp, shown):
    pattern = rf"timestamp of metric 'loss'.*{re.escape(shown)}"
    with (
        mlflow_tracker.start_run(experiment="e") as run,
        pytest.raises(InvalidInput, match=pattern),
    ):
        run.log_metric("loss", 1.0, timestamp=timestamp)
    _assert_nothing_logged(mlflow_client, run.id)


def test_datetime_and_int_millisecond_timestamps_are_accepted(mlflow_tracker, mlflow_client):
    when, when_ms = DATETIME_TIMESTAMP
    with mlflow_tracker.start_run(experiment="e") as run:
        run.log_metric("loss", 1.0, timestamp=when)
        run.log_metric("loss", 2.0, timestamp=1_700_000_000_123)
        run.log_metrics({"acc": 0.5}, timestamp=np.int64(1_700_000_000_456))
    points = sorted(mlflow_client.get_metric_history(run.id, "loss"), key=lambda p: p.step)
    assert [(p.step, p.value, p.timestamp) for p in points] == [
        (0, 1.0, when_ms),
        (1, 2.0, 1_700_000_000_123),
    ]
    assert [p.timestamp for p in mlflow_client.get_metric_history(run.id, "acc")] == [
        1_700_000_000_456
    ]


# -- keys ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("key", "stored"), RENAMED_KEYS)
def test_illegal_key_characters_are_renamed_and_reported(
    mlflow_tracker, mlflow_client, tmp_path, key, stored
):
    run = mlflow_tracker.start_run(experiment="e")
    with pytest.warns(TrackkitWarning, match=re.escape(repr(key))) as caught:
        run.log_param(key, 1)
        run.log_metric(key, 0.5)
        run.set_tag(key, "t")
        run.flush()
    assert any(RENAMES_ARTIFACT in str(w.message) for w in caught)
    run.end()  # no new rename: no second warning (it would be an error here)
    assert mlflow_client.get_run(run.id).data.params == {stored: "1"}
    assert _history(mlflow_client, run.id, stored) == [(0, 0.5)]
    assert _user_tags(mlflow_client, run.id) == {stored: "t"}
    mapping = json.loads(_read_artifact(mlflow_client, run.id, RENAMES_ARTIFACT, tmp_path))
    assert mapping == {"param": {key: stored}, "metric": {key: stored}, "tag": {key: stored}}


def test_keys_collapsing_to_one_name_are_rejected(mlflow_tracker, mlflow_client, tmp_path):
    with mlflow_tracker.start_run(experiment="e") as run:
        # in one call (the clean spelling first: see test_refused_call_reserves_no_key_name)
        with pytest.raises(InvalidInput, match=r"'x_y' and 'x:y' both become 'x_y'"):
            run.log_params({"x_y": 1, "x:y": 2})
        with pytest.raises(InvalidInput, match=r"'x_y' and 'x:y' both become 'x_y'"):
            run.log_metrics({"x_y": 1.0, "x:y": 2.0})
        # across calls, both orders
        run.log_metric("m_n", 1.0)
        with pytest.raises(InvalidInput, match=r"'m_n' and 'm:n' both become 'm_n'"):
            run.log_metric("m:n", 2.0)
        with pytest.warns(TrackkitWarning, match=r"'a@b'.*'a_b'"):
            run.set_tag("a@b", "first")
            run.flush()
        with pytest.raises(InvalidInput, match=r"'a@b' and 'a_b' both become 'a_b'"):
            run.set_tag("a_b", "second")
    params, metrics, tags = _user_data(mlflow_client, run.id)
    assert params == {}
    assert metrics == {"m_n": 1.0}
    assert _history(mlflow_client, run.id, "m_n") == [(0, 1.0)]
    assert tags == {"a_b": "first"}
    mapping = json.loads(_read_artifact(mlflow_client, run.id, RENAMES_ARTIFACT, tmp_path))
    assert mapping == {"tag": {"a@b": "a_b"}}


@pytest.mark.parametrize("kind", sorted(LOGGERS))
def test_key_length_limit(mlflow_tracker, mlflow_client, kind):
    longest, too_long = "k" * KEY_LENGTH, "k" * (KEY_LENGTH + 1)
    with mlflow_tracker.start_run(experiment="e") as run:
        with pytest.raises(
            InvalidInput, match=rf"is {KEY_LENGTH + 1} characters.*allows {KEY_LENGTH}"
        ):
            LOGGERS[kind](run, too_long, 1)
        LOGGERS[kind](run, longest, 1)  # exactly at the limit is fine
    params, metrics, tags = _user_data(mlflow_client, run.id)
    stored = {"param": params, "metric": metrics, "tag": tags}[kind]
    assert list(stored) == [longest]


@pytest.mark.parametrize("kind", sorted(LOGGERS))
@pytest.mark.parametrize(("key", "why"), BAD_KEYS)
def test_bad_key_is_rejected(mlflow_tracker, mlflow_client, kind, key, why):
    shown = repr(key) if isinstance(key, str) else why
    with mlflow_tracker.start_run(experiment="e") as run:
        with pytest.raises(InvalidInput, match=re.escape(shown)) as raised:
            LOGGERS[kind](run, key, 1)
        assert why in str(raised.value)
    _assert_nothing_logged(mlflow_client, run.id)


def test_int_keys_in_nested_dicts_become_strings(mlflow_tracker, mlflow_client):
    with mlflow_tracker.start_run(experiment="e") as run:
        run.log_params({"layers": {0: 64, 1: 32}, 7: "seven"})
        run.log_metrics({"acc": {0: 0.5, 1: 0.75}})
        run.set_tags({"fold": {3: "held-out"}})
    params, metrics, tags = _user_data(mlflow_client, run.id)
    assert params == {"layers.0": "64", "layers.1": "32", "7": "seven"}
    assert metrics == {"acc.0": 0.5, "acc.1": 0.75}
    assert tags == {"fold.3": "held-out"}


# -- param and tag values ----------------------------------------------------------------------
def test_long_param_value_is_truncated_and_kept_whole(mlflow_tracker, mlflow_client, tmp_path):
    full = "".join(f"{i:05d}," for i in range(1200))  # 7200 characters
    exact = "e" * PARAM_LIMIT
    with mlflow_tracker.start_run(experiment="e") as run:
        run.log_params({"big": full, "exact": exact})
        run.log_param("big", full)  # the same long value again is not a conflict
    params = mlflow_client.get_run(run.id).data.params
    artifact = f"{LONG_VALUES_DIR}/params/big.txt"
    marker = TRUNCATION_MARKER.format(path=artifact)
    assert len(params["big"]) == PARAM_LIMIT
    assert params["big"].endswith(marker)
    assert params["big"] == full[: PARAM_LIMIT - len(marker)] + marker
    assert _read_artifact(mlflow_client, run.id, artifact, tmp_path) == full
    assert params["exact"] == exact  # at the limit: stored whole, no artifact
    assert _artifacts(mlflow_client, run.id, f"{LONG_VALUES_DIR}/params") == [artifact]


def test_long_tag_value_is_truncated_and_kept_whole(mlflow_tracker, mlflow_client, tmp_path):
    full = "t" * 4000 + "u" * 4500
    with mlflow_tracker.start_run(experiment="e") as run:
        run.set_tag("notes/long", full)
        run.set_tag("fits", "f" * TAG_LIMIT)
    tags = _user_tags(mlflow_client, run.id)
    artifact = f"{LONG_VALUES_DIR}/tags/notes/long.txt"
    marker = TRUNCATION_MARKER.format(path=artifact)
    assert len(tags["notes/long"]) == TAG_LIMIT
    assert tags["notes/long"] == full[: TAG_LIMIT - len(marker)] + marker
    assert _read_artifact(mlflow_client, run.id, artifact, tmp_path) == full
    assert tags["fits"] == "f" * TAG_LIMIT
    assert _artifacts(mlflow_client, run.id, f"{LONG_VALUES_DIR}/tags/notes") == [artifact]
    assert _artifacts(mlflow_client, run.id, f"{LONG_VALUES_DIR}/params") == []


def test_nested_params_are_flattened_with_dots(mlflow_tracker, mlflow_client):
    with mlflow_tracker.start_run(experiment="e") as run:
        run.log_params(NESTED_PARAMS)
        run.log_param(*NESTED_PARAM)
    assert mlflow_client.get_run(run.id).data.params == FLATTENED_PARAMS


def test_same_key_spelled_twice_once_flattened_is_rejected(mlflow_tracker, mlflow_client):
    with mlflow_tracker.start_run(experiment="e") as run:
        with pytest.raises(InvalidInput, match=r"'a\.b' is given twice"):
            run.log_params({"a.b": 1, "a": {"b": 2}})
        with pytest.raises(InvalidInput, match=r"'1' is given twice"):
            run.log_params({1: "int", "1": "str"})
    _assert_nothing_logged(mlflow_client, run.id)


@pytest.mark.parametrize("make", ["dict", "list"])
def test_self_containing_value_is_rejected_not_looped_on(mlflow_tracker, mlflow_client, make):
    try:
        probe = subprocess.run(
            [sys.executable, "-c", CYCLE_PROBE], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail("normalizing a self-containing value never returned")
    assert probe.returncode == 0, probe.stderr[-2000:]
    params, pattern = self_containing(make)
    with (
        mlflow_tracker.start_run(experiment="e") as run,
        pytest.raises(InvalidInput, match=pattern),
    ):
        run.log_params(params)
    _assert_nothing_logged(mlflow_client, run.id)


def test_numpy_scalar_params_are_converted(mlflow_tracker, mlflow_client):
    with mlflow_tracker.start_run(experiment="e") as run:
        run.log_params(numpy_params())
        run.set_tag("t", np.int64(3))
    assert mlflow_client.get_run(run.id).data.params == NUMPY_PARAMS_TEXT
    assert _user_tags(mlflow_client, run.id) == {"t": "3"}


def test_collection_and_none_params_become_text(mlflow_tracker, mlflow_client):
    with mlflow_tracker.start_run(experiment="e") as run:
        run.log_params(collection_params())
        run.set_tag("none", None)
    assert mlflow_client.get_run(run.id).data.params == COLLECTION_PARAMS_TEXT
    assert _user_tags(mlflow_client, run.id) == {"none": "None"}


@pytest.mark.parametrize(("value", "shown"), VALUES_WITHOUT_TEXT)
@pytest.mark.parametrize("kind", ["param", "tag"])
def test_value_without_faithful_text_is_rejected(mlflow_tracker, mlflow_client, kind, value, shown):
    with (
        mlflow_tracker.start_run(experiment="e") as run,
        pytest.raises(InvalidInput, match=rf"'key'.*{re.escape(shown)}"),
    ):
        LOGGERS[kind](run, "key", value)
    _assert_nothing_logged(mlflow_client, run.id)


def test_conflicting_param_is_rejected_and_first_value_kept(mlflow_tracker, mlflow_client):
    with mlflow_tracker.start_run(experiment="e") as run:
        run.log_param("lr", 0.1)
        run.flush()
        with pytest.raises(InvalidInput, match=r"param 'lr' is already '0\.1'"):
            run.log_param("lr", 0.2)
        run.log_param("bs", 32)  # still pending: the check does not depend on flushing
        with pytest.raises(InvalidInput, match=r"param 'bs' is already '32'"):
            run.log_params({"bs": 64})
    assert mlflow_client.get_run(run.id).data.params == {"lr": "0.1", "bs": "32"}


def test_same_param_value_twice_is_fine(mlflow_tracker, mlflow_client):
    with mlflow_tracker.start_run(experiment="e") as run:
        run.log_param("lr", 0.1)
        run.flush()
        run.log_param("lr", 0.1)
        run.log_params({"lr": "0.1", "model": {"depth": 3}})  # same stored text
        run.log_params({"model": {"depth": 3}})
    assert mlflow_client.get_run(run.id).data.params == {"lr": "0.1", "model.depth": "3"}


@pytest.mark.parametrize(("batch", "shown"), FAILING_PARAM_BATCHES)
def test_failing_log_params_logs_nothing_of_that_call(mlflow_tracker, mlflow_client, batch, shown):
    with mlflow_tracker.start_run(experiment="e") as run:
        run.log_param("lr", 0.1)
        with pytest.raises(InvalidInput, match=re.escape(shown)):
            run.log_params(batch)
    assert mlflow_client.get_run(run.id).data.params == {"lr": "0.1"}
    assert _artifacts(mlflow_client, run.id) == []


@pytest.mark.parametrize("kind", ["param", "metric"])
def test_refused_call_reserves_no_key_name(mlflow_tracker, mlflow_client, kind):
    run = mlflow_tracker.start_run(experiment="e")
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with pytest.raises(InvalidInput, match="bad"):
                if kind == "param":
                    run.log_params({"q@r": 1, "bad": object()})
                else:
                    run.log_metric("q@r", "bad")
        assert [str(w.message) for w in seen if "q@r" in str(w.message)] == []
        LOGGERS[kind](run, "q_r", 2)  # 'q@r' was never logged: 'q_r' must still be free
        run.flush()
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TrackkitWarning)
            run.end()
    params, metrics, _ = _user_data(mlflow_client, run.id)
    assert (params if kind == "param" else metrics) == {"q_r": "2" if kind == "param" else 2.0}
    assert _artifacts(mlflow_client, run.id) == []  # no renamed_keys.json for 'q@r'


# -- artifacts ---------------------------------------------------------------------------------
def test_missing_artifact_file_is_rejected(mlflow_tracker, mlflow_client):
    with mlflow_tracker.start_run(experiment="e") as run:
        with pytest.raises(InvalidInput, match=r"'does-not-exist\.txt' does not exist"):
            run.log_artifact("does-not-exist.txt")
        with pytest.raises(InvalidInput, match=r"local_path must be a path, got int"):
            run.log_artifact(123)
    assert _artifacts(mlflow_client, run.id) == []


@pytest.mark.parametrize("where", ESCAPING_ARTIFACT_PATHS)
def test_artifact_path_escaping_the_run_is_rejected(mlflow_tracker, mlflow_client, tmp_path, where):
    local = tmp_path / "f.txt"
    local.write_text("data")
    with mlflow_tracker.start_run(experiment="e") as run:
        with pytest.raises(InvalidInput, match=re.escape(repr(where))):
            run.log_artifact(local, where)
        with pytest.raises(InvalidInput, match=r"must stay inside the run"):
            run.log_text("data", f"{where}/f.txt")
        with pytest.raises(InvalidInput, match=r"must stay inside the run"):
            run.log_dict({"a": 1}, f"{where}/f.json")
    assert _artifacts(mlflow_client, run.id) == []
    root = mlflow_client.get_run(run.id).info.artifact_uri.removeprefix("file://")
    assert not (Path(root).parent / "x").exists()
    assert not Path("/abs").exists()


@pytest.mark.parametrize("file", BAD_DICT_FILES)
def test_log_dict_with_unsupported_file_name(mlflow_tracker, mlflow_client, file):
    with mlflow_tracker.start_run(experiment="e") as run:
        with pytest.raises(InvalidInput, match=re.escape(repr(file))):
            run.log_dict({"a": 1}, file)
        with pytest.raises(InvalidInput, match=r"object cannot be written as JSON"):
            run.log_dict({"a": object()}, "ok.json")
        run.log_dict({"a": (1, 2)}, "ok.json")  # the positive control
    assert _artifacts(mlflow_client, run.id) == ["ok.json"]


@pytest.mark.parametrize(("text", "shown"), NON_STR_TEXTS)
def test_log_text_with_non_str(mlflow_tracker, mlflow_client, text, shown):
    with (
        mlflow_tracker.start_run(experiment="e") as run,
        pytest.raises(InvalidInput, match=rf"log_text takes a str, got {shown}"),
    ):
        run.log_text(text, "notes.txt")
    assert _artifacts(mlflow_client, run.id) == []


# -- models and the registry -------------------------------------------------------------------
def test_log_model_of_an_unpicklable_object_or_unknown_flavor_is_refused(
    mlflow_tracker, mlflow_client
):
    with mlflow_tracker.start_run(experiment="e") as run:
        # any picklable object is a model (flavor "python"); one that cannot be pickled is not
        with pytest.raises(InvalidInput, match=r"_thread\.lock as a model: it cannot be pickled"):
            run.log_model(threading.Lock())
        with pytest.raises(InvalidInput, match=r"unknown model flavor 'pickle'.*'python'"):
            run.log_model(object(), flavor="pickle")
    experiment_id = mlflow_client.get_run(run.id).info.experiment_id
    assert list(mlflow_client.search_logged_models(experiment_ids=[experiment_id])) == []
    assert _artifacts(mlflow_client, run.id) == []


def test_reserved_and_invalid_alias_names_are_rejected(mlflow_tracker, mlflow_client):
    _registered(mlflow_tracker)
    for bad in BAD_ALIASES:
        with pytest.raises(InvalidInput, match=re.escape(f"alias {bad!r}")):
            mlflow_tracker.set_model_alias("m", bad, 1)
        with pytest.raises(InvalidInput, match=re.escape(f"alias {bad!r}")):
            mlflow_tracker.delete_model_alias("m", bad)
    with pytest.raises(InvalidInput, match=r"alias 'a/b'"):
        mlflow_tracker.get_model_version("m", alias="a/b")
    assert mlflow_client.get_registered_model("m").aliases == {}
    mlflow_tracker.set_model_alias("m", "champion-2", 1)  # a valid alias does work
    aliases = mlflow_client.get_registered_model("m").aliases
    assert {k: str(v) for k, v in aliases.items()} == {"champion-2": "1"}


def test_bad_model_names_are_rejected(mlflow_tracker, mlflow_client):
    version = _registered(mlflow_tracker)
    source = version.source
    for bad in BAD_MODEL_NAMES:
        pattern = rf"registered model name .*{re.escape(repr(bad))}"
        with pytest.raises(InvalidInput, match=pattern):
            mlflow_tracker.register_model(source, bad)
        with pytest.raises(InvalidInput, match=pattern):
            mlflow_tracker.get_model_version(bad)
        with pytest.raises(InvalidInput, match=pattern):
            mlflow_tracker.set_model_alias(bad, "champion", 1)
    names = [m.name for m in mlflow_client.search_registered_models()]
    assert names == ["m"]
    assert [str(v.version) for v in mlflow_client.search_model_versions("name = 'm'")] == ["1"]


def test_bad_version_numbers_are_rejected(mlflow_tracker, mlflow_client):
    _registered(mlflow_tracker)
    for bad in BAD_VERSIONS:
        shown = re.escape(repr(bad))
        with pytest.raises(InvalidInput, match=rf"positive integer, got {shown}"):
            mlflow_tracker.get_model_version("m", bad)
        with pytest.raises(InvalidInput, match=rf"positive integer, got {shown}"):
            mlflow_tracker.set_model_alias("m", "champion", bad)
        with pytest.raises(InvalidInput, match=rf"positive integer, got {shown}"):
            mlflow_tracker.update_model_version("m", bad, "changed")
    stored = mlflow_client.get_model_version("m", "1")
    assert stored.description in (None, "")
    assert mlflow_client.get_registered_model("m").aliases == {}
    assert mlflow_tracker.get_model_version("m", "1").version == 1  # decimal text is accepted


def test_version_alias_with_non_ascii_digit_is_invalid_input(mlflow_tracker):
    with pytest.raises(InvalidInput, match=r"'v²'|'²'"):
        mlflow_tracker.get_model_version("m", alias="v²")


# -- backends, options and the run lifecycle ---------------------------------------------------
@pytest.mark.parametrize("how", ["argument", "environment"])
def test_unknown_backend_suggests_closest_name(monkeypatch, how):
    if how == "environment":
        monkeypatch.setenv("TRACKKIT_BACKEND", "mlfow")
        call = trackkit.get_tracker
    else:

        def call() -> trackkit.Tracker:
            return trackkit.get_tracker("mlfow")

    with pytest.raises(UnknownBackendError, match=r"'mlfow'.*did you mean 'mlflow'") as raised:
        call()
    assert isinstance(raised.value, LookupError)
    assert not Path("mlflow.db").exists()


def test_unknown_backend_option_is_rejected():
    with pytest.raises(InvalidInput, match=r"mlflow backend rejected.*'tracking_url'"):
        trackkit.get_tracker("mlflow", tracking_url="sqlite:///elsewhere.db")
    # no silent fallback to the default store, and the misspelled option was not used either
    assert not Path("mlflow.db").exists()
    assert not Path("elsewhere.db").exists()


@pytest.mark.parametrize("operation", sorted(AFTER_END))
def test_logging_after_the_run_ended_is_an_error(
    mlflow_tracker, mlflow_client, tmp_path, operation
):
    local = tmp_path / "f.txt"
    local.write_text("data")
    run = mlflow_tracker.start_run(experiment="e")
    run.end()
    with pytest.raises(TrackkitError, match=rf"run {run.id} has ended \(FINISHED\)"):
        AFTER_END[operation](run, local)
    _assert_nothing_logged(mlflow_client, run.id)
    assert mlflow_client.get_run(run.id).info.status == "FINISHED"


@pytest.mark.parametrize("status", BAD_STATUSES)
def test_invalid_run_status_is_rejected(mlflow_tracker, mlflow_client, status):
    run = mlflow_tracker.start_run(experiment="e")
    run.log_metric("m", 1.0)
    with pytest.raises(
        InvalidInput, match=rf"run status must be one of .* got {re.escape(repr(status))}"
    ):
        run.end(status)
    assert mlflow_client.get_run(run.id).info.status == "RUNNING"
    assert not run.ended
    run.end("FAILED")
    assert mlflow_client.get_run(run.id).info.status == "FAILED"
    assert _history(mlflow_client, run.id, "m") == [(0, 1.0)]


# -- the caller's objects are never mutated ----------------------------------------------------
def test_log_params_does_not_mutate_the_callers_dict(mlflow_tracker, mlflow_client, tmp_path):
    params = caller_params()
    before = copy.deepcopy(params)
    with mlflow_tracker.start_run(experiment="e") as run:
        with pytest.warns(TrackkitWarning, match=r"'opt\.lr@1'.*'opt\.lr_1'"):
            run.log_params(params)
            run.flush()
        assert params == before
        opaque = object()  # deepcopy would make a new, unequal object: compare by hand
        failing = {"x": [1, 2], "bad": {"obj": opaque}}
        with pytest.raises(InvalidInput, match=r"'bad\.obj'"):
            run.log_params(failing)
        assert failing == {"x": [1, 2], "bad": {"obj": opaque}}
    assert params == before
    stored = mlflow_client.get_run(run.id).data.params
    assert {k: stored[k] for k in CALLER_PARAMS_TEXT} == CALLER_PARAMS_TEXT
    assert stored["opt.notes"].startswith("n" * 100)
    assert len(stored["opt.notes"]) == PARAM_LIMIT
    assert (
        _read_artifact(mlflow_client, run.id, f"{LONG_VALUES_DIR}/params/opt.notes.txt", tmp_path)
        == "n" * LONG_TEXT
    )


def test_log_metrics_does_not_mutate_the_callers_dict(mlflow_tracker, mlflow_client):
    metrics = caller_metrics()
    before = copy.deepcopy(metrics)
    with mlflow_tracker.start_run(experiment="e") as run:
        with pytest.warns(TrackkitWarning, match=r"'train\.loss@0'.*'train\.loss_0'"):
            run.log_metrics(metrics, step=2.0)
            run.flush()
        with pytest.raises(InvalidInput, match=r"'val\.bad'"):
            run.log_metrics({"val": {"bad": "x"}})
    # NaN != NaN, so compare the NaN separately
    assert math.isnan(metrics["val"].pop(2)) and math.isnan(before["val"].pop(2))
    assert metrics == before
    assert _history(mlflow_client, run.id, "train.loss_0") == [(2, 0.5)]
    assert _history(mlflow_client, run.id, "train.acc") == [(2, 0.75)]
    assert _history(mlflow_client, run.id, "val.converged") == [(2, 1.0)]
    [(step, value)] = _history(mlflow_client, run.id, "val.2")
    assert step == 2 and math.isnan(value)


def test_set_tags_does_not_mutate_the_callers_dict(mlflow_tracker, mlflow_client, tmp_path):
    tags = caller_tags()
    before = copy.deepcopy(tags)
    with mlflow_tracker.start_run(experiment="e") as run:
        with pytest.warns(TrackkitWarning, match=r"'env\.host:name'.*'env\.host_name'"):
            run.set_tags(tags)
            run.flush()
        assert tags == before  # also while the run is open
    assert tags == before
    stored = _user_tags(mlflow_client, run.id)
    assert {k: stored[k] for k in CALLER_TAGS_TEXT} == CALLER_TAGS_TEXT
    assert len(stored["env.long"]) == TAG_LIMIT
    artifact = f"{LONG_VALUES_DIR}/tags/env.long.txt"
    assert _read_artifact(mlflow_client, run.id, artifact, tmp_path) == "y" * 9000


# -- secrets -------------------------------------------------------------------------------------
@pytest.fixture(autouse=False)
def no_secret_env(monkeypatch):
    """Secret-looking variables of the machine running the tests would be masked too."""
    import os

    for name in list(os.environ):
        if re.search(r"PASSWORD|TOKEN|API_KEY|SECRET", name, re.IGNORECASE):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        ("http://user:pw@host:5000/api", "pw", "http://user:***@host:5000/api"),
        ("postgresql://u:p4ss@h/db", "p4ss", "postgresql://u:***@h/db"),
        (
            "failed to reach https://srv/api?token=abc123&x=1",
            "abc123",
            "https://srv/api?token=***&x=1",
        ),
        ("https://srv/?a=1&API_KEY=k3y#frag", "k3y", "?a=1&API_KEY=***#frag"),
        ("https://srv/?access_token=t0k", "t0k", "?access_token=***"),
        ("mysql+pymysql://root:hunter2@db:3306/x", "hunter2", "root:***@db:3306/x"),
    ],
    ids=["http", "postgresql", "token", "api-key", "access-token", "mysql"],
)
def test_redact_masks_passwords_and_tokens(no_secret_env, text, secret, kept):
    masked = redact(text)
    assert secret not in masked
    assert kept in masked
    assert MASK in masked


@pytest.mark.parametrize(
    "text", ["http://host:5000/api", "sqlite:///tmp/mlflow.db", "plain text, a:b@c"]
)
def test_redact_leaves_secret_free_text_alone(no_secret_env, text):
    assert redact(text) == text


def test_redact_masks_secret_environment_values(no_secret_env, monkeypatch):
    monkeypatch.setenv("MY_SERVICE_API_TOKEN", "zz-s3cr3t-zz")
    assert redact("auth with zz-s3cr3t-zz failed") == "auth with *** failed"


def test_redact_masks_a_password_containing_at_sign(no_secret_env):
    masked = redact("http://user:p@ss@host:5000/api")
    assert "ss@host" not in masked
    assert masked == "http://user:***@host:5000/api"
