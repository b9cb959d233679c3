"""Normalization is core behaviour: the bad-input cases, run with no tracking SDK installed.

The cases are those of tests/test_bad_input.py (shared in tests/bad_input_cases.py); here they
run through ``Tracker`` on :class:`RulesBackend`, the SDK-free ``RecordingBackend`` of
tests/recording.py with name rules and limits declared, so they run in the ``core`` env. Each
test checks what the backend received, or that it received nothing and InvalidInput said what
it says on MLflow, and that the caller's objects are left as they were. What only MLflow shows
(how its store keeps +-inf, its 6000/8000 value limits) stays in test_bad_input.py.
"""

from __future__ import annotations

import copy
import datetime as dt
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
    KEY_INVALID_CHARS,
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
from recording import RecordingBackend
from trackkit import InvalidInput, TrackkitError, TrackkitWarning
from trackkit.backend import Capabilities, Limits
from trackkit.entities import ModelVersion, ParamValue
from trackkit.normalize import LONG_VALUES_DIR, TRUNCATION_MARKER, value_text
from trackkit.run import RENAMES_ARTIFACT
from trackkit.tracker import Tracker

# this backend's own value limits: small, so that truncation is not MLflow's 6000/8000
PARAM_LIMIT = 500
TAG_LIMIT = 800


class RulesBackend(RecordingBackend):
    """``RecordingBackend`` with the name rules the shared cases assume, small value limits,
    artifacts kept in memory, and registry primitives that only record that they were called."""

    capabilities = Capabilities(artifacts=True, registry=True)
    limits = Limits(
        key_length=KEY_LENGTH,
        param_value_length=PARAM_LIMIT,
        tag_value_length=TAG_LIMIT,
        key_invalid_chars=KEY_INVALID_CHARS,
    )

    def __init__(self) -> None:
        super().__init__()
        self.artifacts: dict[str, str] = {}  # run-relative path -> text
        self.registry_calls: list[tuple[Any, ...]] = []

    def log_artifact(self, run_id: str, local_path: Path, artifact_path: str | None) -> None:
        prefix = f"{artifact_path}/" if artifact_path else ""
        files = sorted(local_path.rglob("*")) if local_path.is_dir() else [local_path]
        for file in (f for f in files if f.is_file()):
            relative = file.relative_to(local_path.parent).as_posix()
            self.artifacts[prefix + relative] = file.read_text(encoding="utf-8")

    def _version(self, name: str, version: int, source: str = "runs:/r0/model") -> ModelVersion:
        return ModelVersion(name, version, (), None, source, None, None)

    def create_model_version(
        self, name: str, source: str, run_id: str | None, description: str | None
    ) -> ModelVersion:
        self.registry_calls.append(("create_model_version", name, source))
        return self._version(name, 1, source)

    def get_model_version(self, name: str, version: int) -> ModelVersion:
        self.registry_calls.append(("get_model_version", name, version))
        return self._version(name, version)

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        self.registry_calls.append(("get_model_version_by_alias", name, alias))
        return self._version(name, 1)

    def list_model_versions(self, name: str) -> list[ModelVersion]:
        self.registry_calls.append(("list_model_versions", name))
        return [self._version(name, 1)]

    def set_model_alias(self, name: str, alias: str, version: int) -> None:
        self.registry_calls.append(("set_model_alias", name, alias, version))

    def delete_model_alias(self, name: str, alias: str) -> None:
        self.registry_calls.append(("delete_model_alias", name, alias))

    def update_model_version(self, name: str, version: int, description: str) -> ModelVersion:
        self.registry_calls.append(("update_model_version", name, version, description))
        return self._version(name, version)


@pytest.fixture
def backend() -> RulesBackend:
    return RulesBackend()


@pytest.fixture
def tracker(backend: RulesBackend) -> Tracker:
    return Tracker(backend)


# -- what the backend received -------------------------------------------------------------------
def _params(backend: RulesBackend) -> list[tuple[str, ParamValue]]:
    return [p for ps, _, _ in backend.batches for p in ps]


def _param_texts(backend: RulesBackend) -> dict[str, str]:
    return {key: value_text(value) for key, value in _params(backend)}


def _history(backend: RulesBackend, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for _, ms, _ in backend.batches for m in ms if m.key == key]


def _latest_metrics(backend: RulesBackend) -> dict[str, float]:
    return {m.key: m.value for _, ms, _ in backend.batches for m in ms}


def _tags(backend: RulesBackend) -> dict[str, str]:
    return dict(t for _, _, ts in backend.batches for t in ts)


def _assert_nothing_received(backend: RulesBackend) -> None:
    assert [op for batch in backend.batches for ops in batch for op in ops] == []
    assert backend.artifacts == {}
    assert backend.registry_calls == []


def _renames(backend: RulesBackend) -> dict[str, dict[str, str]]:
    return dict(json.loads(backend.artifacts[RENAMES_ARTIFACT]))


# -- metric values -------------------------------------------------------------------------------
def test_nan_metric_is_kept(tracker, backend):
    with tracker.start_run(experiment="e") as run:
        for nan in NAN_VALUES:
            run.log_metric("loss", nan)
    history = _history(backend, "loss")
    assert [step for step, _ in history] == [0, 1]
    assert all(math.isnan(value) for _, value in history)


@pytest.mark.parametrize("sign", [1, -1], ids=["+inf", "-inf"])
def test_infinite_metric_reaches_the_backend_as_infinity(tracker, backend, sign):
    with tracker.start_run(experiment="e") as run:
        run.log_metric("grad", sign * math.inf)
        run.log_metrics({"grad": np.float64(sign * np.inf)})
    assert _history(backend, "grad") == [(0, sign * math.inf), (1, sign * math.inf)]


@pytest.mark.parametrize(("value", "shown"), NON_NUMERIC_METRICS)
def test_non_numeric_metric_is_rejected(tracker, backend, value, shown):
    with tracker.start_run(experiment="e") as run:
        with pytest.raises(InvalidInput, match=rf"'acc'.*{re.escape(shown)}"):
            run.log_metric("acc", value)
        with pytest.raises(InvalidInput, match=rf"'val\.acc'.*{re.escape(shown)}"):
            run.log_metrics({"val": {"acc": value}, "ok": 1.0})  # the whole call is refused
    _assert_nothing_received(backend)
    assert backend.ended == {run.id: "FINISHED"}


def test_bool_metric_becomes_one_or_zero(tracker, backend):
    with tracker.start_run(experiment="e") as run:
        run.log_metric("converged", True)
        run.log_metric("converged", False)
        run.log_metrics({"flag": np.bool_(True)})
    assert _history(backend, "converged") == [(0, 1.0), (1, 0.0)]
    assert _history(backend, "flag") == [(0, 1.0)]


def test_numpy_scalar_metrics_and_steps_are_converted(tracker, backend):
    with tracker.start_run(experiment="e") as run:
        run.log_metric("f32", np.float32(0.25), step=np.int64(4))
        run.log_metrics({"i64": np.int64(7), "f64": np.float64(-1.5), "b": np.bool_(False)})
    assert _history(backend, "f32") == [(4, 0.25)]
    assert _latest_metrics(backend) == {"f32": 0.25, "i64": 7.0, "f64": -1.5, "b": 0.0}
    points = [m for _, ms, _ in backend.batches for m in ms]
    assert {(type(m.value), type(m.step), type(m.timestamp)) for m in points} == {(float, int, int)}


# -- steps and timestamps ------------------------------------------------------------------------
@pytest.mark.parametrize(("step", "shown"), BAD_STEPS)
def test_bad_step_is_rejected(tracker, backend, step, shown):
    with tracker.start_run(experiment="e") as run:
        with pytest.raises(InvalidInput, match=rf"step of metric 'loss'.*{re.escape(shown)}"):
            run.log_metric("loss", 1.0, step=step)
        with pytest.raises(InvalidInput, match=re.escape(shown)):
            run.log_metrics({"loss": 1.0}, step=step)
    _assert_nothing_received(backend)


def test_integral_float_step_becomes_int(tracker, backend):
    with tracker.start_run(experiment="e") as run:
        run.log_metric("loss", 0.5, step=3.0)
        run.log_metric("loss", 0.4)  # the next implicit step continues from 3
    history = _history(backend, "loss")
    assert history == [(3, 0.5), (4, 0.4)]
    assert all(type(step) is int for step, _ in history)


@pytest.mark.parametrize(("timestamp", "shown"), BAD_TIMESTAMPS)
def test_bad_timestamp_is_rejected(tracker, backend, timestamp, shown):
    pattern = rf"timestamp of metric 'loss'.*{re.escape(shown)}"
    with tracker.start_run(experiment="e") as run, pytest.raises(InvalidInput, match=pattern):
        run.log_metric("loss", 1.0, timestamp=timestamp)
    _assert_nothing_received(backend)


def test_datetime_and_int_millisecond_timestamps_are_accepted(tracker, backend):
    when, when_ms = DATETIME_TIMESTAMP
    with tracker.start_run(experiment="e") as run:
        run.log_metric("loss", 1.0, timestamp=when)
        run.log_metric("loss", 2.0, timestamp=1_700_000_000_123)
        run.log_metrics({"acc": 0.5}, timestamp=np.int64(1_700_000_000_456))
    points = [(m.key, m.step, m.value, m.timestamp) for _, ms, _ in backend.batches for m in ms]
    assert points == [
        ("loss", 0, 1.0, when_ms),
        ("loss", 1, 2.0, 1_700_000_000_123),
        ("acc", 0, 0.5, 1_700_000_000_456),
    ]


def test_a_datetime_timestamp_keeps_its_exact_millisecond_and_refuses_before_1970(tracker, backend):
    # float seconds give 1074498736349 for this moment: one millisecond lost
    when = dt.datetime(2004, 1, 19, 7, 52, 16, 350000, tzinfo=dt.timezone.utc)
    with tracker.start_run(experiment="e") as run:
        run.log_metric("loss", 1.0, timestamp=when)
        with pytest.raises(InvalidInput, match="timestamp of metric 'loss' is -1000 ms"):
            run.log_metric(
                "loss", 2.0, timestamp=dt.datetime(1969, 12, 31, 23, 59, 59, tzinfo=dt.timezone.utc)
            )
    assert [m.timestamp for _, ms, _ in backend.batches for m in ms] == [1_074_498_736_350]


# -- keys ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("key", "stored"), RENAMED_KEYS)
def test_illegal_key_characters_are_renamed_and_reported(tracker, backend, key, stored):
    run = tracker.start_run(experiment="e")
    with pytest.warns(TrackkitWarning, match=re.escape(repr(key))) as caught:
        run.log_param(key, 1)
        run.log_metric(key, 0.5)
        run.set_tag(key, "t")
        run.flush()
    assert any(RENAMES_ARTIFACT in str(w.message) for w in caught)
    run.end()  # no new rename: no second warning (it would be an error here)
    assert _params(backend) == [(stored, 1)]
    assert _history(backend, stored) == [(0, 0.5)]
    assert _tags(backend) == {stored: "t"}
    expected = {"param": {key: stored}, "metric": {key: stored}, "tag": {key: stored}}
    assert run.renames == expected
    assert _renames(backend) == expected


def test_keys_collapsing_to_one_name_are_rejected(tracker, backend):
    with tracker.start_run(experiment="e") as run:
        with pytest.raises(InvalidInput, match=r"'x_y' and 'x:y' both become 'x_y'"):
            run.log_params({"x_y": 1, "x:y": 2})
        with pytest.raises(InvalidInput, match=r"'x_y' and 'x:y' both become 'x_y'"):
            run.log_metrics({"x_y": 1.0, "x:y": 2.0})
        run.log_metric("m_n", 1.0)
        with pytest.raises(InvalidInput, match=r"'m_n' and 'm:n' both become 'm_n'"):
            run.log_metric("m:n", 2.0)
        with pytest.warns(TrackkitWarning, match=r"'a@b'.*'a_b'"):
            run.set_tag("a@b", "first")
            run.flush()
        with pytest.raises(InvalidInput, match=r"'a@b' and 'a_b' both become 'a_b'"):
            run.set_tag("a_b", "second")
    assert _params(backend) == []
    assert _latest_metrics(backend) == {"m_n": 1.0}
    assert _history(backend, "m_n") == [(0, 1.0)]
    assert _tags(backend) == {"a_b": "first"}
    assert _renames(backend) == {"tag": {"a@b": "a_b"}}


@pytest.mark.parametrize("kind", sorted(LOGGERS))
def test_key_length_limit(tracker, backend, kind):
    longest, too_long = "k" * KEY_LENGTH, "k" * (KEY_LENGTH + 1)
    with tracker.start_run(experiment="e") as run:
        with pytest.raises(
            InvalidInput, match=rf"is {KEY_LENGTH + 1} characters.*allows {KEY_LENGTH}"
        ):
            LOGGERS[kind](run, too_long, 1)
        LOGGERS[kind](run, longest, 1)  # exactly at the limit is fine
    received = {
        "param": [k for k, _ in _params(backend)],
        "metric": list(_latest_metrics(backend)),
        "tag": list(_tags(backend)),
    }
    assert received == {k: [longest] if k == kind else [] for k in LOGGERS}


@pytest.mark.parametrize("kind", sorted(LOGGERS))
@pytest.mark.parametrize(("key", "why"), BAD_KEYS)
def test_bad_key_is_rejected(tracker, backend, kind, key, why):
    shown = repr(key) if isinstance(key, str) else why
    with tracker.start_run(experiment="e") as run:
        with pytest.raises(InvalidInput, match=re.escape(shown)) as raised:
            LOGGERS[kind](run, key, 1)
        assert why in str(raised.value)
    _assert_nothing_received(backend)


def test_int_keys_in_nested_dicts_become_strings(tracker, backend):
    with tracker.start_run(experiment="e") as run:
        run.log_params({"layers": {0: 64, 1: 32}, 7: "seven"})
        run.log_metrics({"acc": {0: 0.5, 1: 0.75}})
        run.set_tags({"fold": {3: "held-out"}})
    assert _param_texts(backend) == {"layers.0": "64", "layers.1": "32", "7": "seven"}
    assert _latest_metrics(backend) == {"acc.0": 0.5, "acc.1": 0.75}
    assert _tags(backend) == {"fold.3": "held-out"}


# -- param and tag values ------------------------------------------------------------------------
def test_long_param_value_is_truncated_and_kept_whole(tracker, backend):
    full = "".join(f"{i:04d}," for i in range(2 * PARAM_LIMIT // 5))  # twice the limit
    exact = "e" * PARAM_LIMIT
    with tracker.start_run(experiment="e") as run:
        run.log_params({"big": full, "exact": exact})
        run.log_param("big", full)  # the same long value again is not a conflict
    params = _param_texts(backend)
    artifact = f"{LONG_VALUES_DIR}/params/big.txt"
    marker = TRUNCATION_MARKER.format(path=artifact)
    assert params["big"] == full[: PARAM_LIMIT - len(marker)] + marker
    assert len(params["big"]) == PARAM_LIMIT
    assert params["exact"] == exact  # at the limit: sent whole, no artifact
    assert [k for k, _ in _params(backend)] == ["big", "exact"]  # each sent once
    assert backend.artifacts == {artifact: full}


def test_long_tag_value_is_truncated_and_kept_whole(tracker, backend):
    full = "t" * TAG_LIMIT + "u" * TAG_LIMIT
    with tracker.start_run(experiment="e") as run:
        run.set_tag("notes/long", full)
        run.set_tag("fits", "f" * TAG_LIMIT)
    tags = _tags(backend)
    artifact = f"{LONG_VALUES_DIR}/tags/notes/long.txt"
    marker = TRUNCATION_MARKER.format(path=artifact)
    assert tags["notes/long"] == full[: TAG_LIMIT - len(marker)] + marker
    assert len(tags["notes/long"]) == TAG_LIMIT
    assert tags["fits"] == "f" * TAG_LIMIT
    assert backend.artifacts == {artifact: full}


def test_nested_params_are_flattened_with_dots(tracker, backend):
    with tracker.start_run(experiment="e") as run:
        run.log_params(NESTED_PARAMS)
        run.log_param(*NESTED_PARAM)
    assert _param_texts(backend) == FLATTENED_PARAMS


def test_same_key_spelled_twice_once_flattened_is_rejected(tracker, backend):
    with tracker.start_run(experiment="e") as run:
        with pytest.raises(InvalidInput, match=r"'a\.b' is given twice"):
            run.log_params({"a.b": 1, "a": {"b": 2}})
        with pytest.raises(InvalidInput, match=r"'1' is given twice"):
            run.log_params({1: "int", "1": "str"})
    _assert_nothing_received(backend)


@pytest.mark.parametrize("make", ["dict", "list"])
def test_self_containing_value_is_rejected_not_looped_on(tracker, backend, make):
    try:
        probe = subprocess.run(
            [sys.executable, "-c", CYCLE_PROBE], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail("normalizing a self-containing value never returned")
    assert probe.returncode == 0, probe.stderr[-2000:]
    params, pattern = self_containing(make)
    with tracker.start_run(experiment="e") as run, pytest.raises(InvalidInput, match=pattern):
        run.log_params(params)
    _assert_nothing_received(backend)


def test_numpy_scalar_params_are_converted(tracker, backend):
    with tracker.start_run(experiment="e") as run:
        run.log_params(numpy_params())
        run.set_tag("t", np.int64(3))
    assert _param_texts(backend) == NUMPY_PARAMS_TEXT
    # plain Python values reach the backend, never numpy's
    assert {key: type(value) for key, value in _params(backend)} == {
        "f32": float,
        "f32_inexact": float,
        "i64": int,
        "flag": bool,
        "arr": str,
    }
    assert _tags(backend) == {"t": "3"}


def test_collection_and_none_params_become_text(tracker, backend):
    with tracker.start_run(experiment="e") as run:
        run.log_params(collection_params())
        run.set_tag("none", None)
    assert _param_texts(backend) == COLLECTION_PARAMS_TEXT
    assert _tags(backend) == {"none": "None"}


@pytest.mark.parametrize(("value", "shown"), VALUES_WITHOUT_TEXT)
@pytest.mark.parametrize("kind", ["param", "tag"])
def test_value_without_faithful_text_is_rejected(tracker, backend, kind, value, shown):
    with (
        tracker.start_run(experiment="e") as run,
        pytest.raises(InvalidInput, match=rf"'key'.*{re.escape(shown)}"),
    ):
        LOGGERS[kind](run, "key", value)
    _assert_nothing_received(backend)


def test_conflicting_param_is_rejected_and_first_value_kept(tracker, backend):
    with tracker.start_run(experiment="e") as run:
        run.log_param("lr", 0.1)
        run.flush()
        with pytest.raises(InvalidInput, match=r"param 'lr' is already '0\.1'"):
            run.log_param("lr", 0.2)
        run.log_param("bs", 32)  # still pending: the check does not depend on flushing
        with pytest.raises(InvalidInput, match=r"param 'bs' is already '32'"):
            run.log_params({"bs": 64})
    assert _params(backend) == [("lr", 0.1), ("bs", 32)]


def test_same_param_value_twice_is_fine(tracker, backend):
    with tracker.start_run(experiment="e") as run:
        run.log_param("lr", 0.1)
        run.flush()
        run.log_param("lr", 0.1)
        run.log_params({"lr": "0.1", "model": {"depth": 3}})  # same stored text
        run.log_params({"model": {"depth": 3}})
    assert _params(backend) == [("lr", 0.1), ("model.depth", 3)]  # each sent once


@pytest.mark.parametrize(("batch", "shown"), FAILING_PARAM_BATCHES)
def test_failing_log_params_logs_nothing_of_that_call(tracker, backend, batch, shown):
    before = copy.copy(batch)
    with tracker.start_run(experiment="e") as run:
        run.log_param("lr", 0.1)
        with pytest.raises(InvalidInput, match=re.escape(shown)):
            run.log_params(batch)
    assert _params(backend) == [("lr", 0.1)]
    assert backend.artifacts == {}  # not even the long value's artifact
    assert batch.keys() == before.keys() and all(batch[k] is before[k] for k in batch)


@pytest.mark.parametrize("kind", ["param", "metric"])
def test_refused_call_reserves_no_key_name(tracker, backend, kind):
    run = tracker.start_run(experiment="e")
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
    received = _params(backend) if kind == "param" else list(_latest_metrics(backend).items())
    assert received == [("q_r", 2 if kind == "param" else 2.0)]
    assert run.renames == {}
    assert backend.artifacts == {}  # no renamed_keys.json for 'q@r'


# -- artifacts -----------------------------------------------------------------------------------
def test_missing_artifact_file_is_rejected(tracker, backend):
    with tracker.start_run(experiment="e") as run:
        with pytest.raises(InvalidInput, match=r"'does-not-exist\.txt' does not exist"):
            run.log_artifact("does-not-exist.txt")
        with pytest.raises(InvalidInput, match=r"local_path must be a path, got int"):
            run.log_artifact(123)
    _assert_nothing_received(backend)


@pytest.mark.parametrize("where", ESCAPING_ARTIFACT_PATHS)
def test_artifact_path_escaping_the_run_is_rejected(tracker, backend, tmp_path, where):
    local = tmp_path / "f.txt"
    local.write_text("data")
    with tracker.start_run(experiment="e") as run:
        with pytest.raises(InvalidInput, match=re.escape(repr(where))):
            run.log_artifact(local, where)
        with pytest.raises(InvalidInput, match=r"must stay inside the run"):
            run.log_text("data", f"{where}/f.txt")
        with pytest.raises(InvalidInput, match=r"must stay inside the run"):
            run.log_dict({"a": 1}, f"{where}/f.json")
        run.log_text("data", "inside/f.txt")  # the positive control
    assert backend.artifacts == {"inside/f.txt": "data"}


@pytest.mark.parametrize("file", BAD_DICT_FILES)
def test_log_dict_with_unsupported_file_name(tracker, backend, file):
    with tracker.start_run(experiment="e") as run:
        with pytest.raises(InvalidInput, match=re.escape(repr(file))):
            run.log_dict({"a": 1}, file)
        with pytest.raises(InvalidInput, match=r"object cannot be written as JSON"):
            run.log_dict({"a": object()}, "ok.json")
        run.log_dict({"a": (1, 2)}, "ok.json")  # the positive control
    assert list(backend.artifacts) == ["ok.json"]
    assert json.loads(backend.artifacts["ok.json"]) == {"a": [1, 2]}


@pytest.mark.parametrize(("text", "shown"), NON_STR_TEXTS)
def test_log_text_with_non_str(tracker, backend, text, shown):
    with (
        tracker.start_run(experiment="e") as run,
        pytest.raises(InvalidInput, match=rf"log_text takes a str, got {shown}"),
    ):
        run.log_text(text, "notes.txt")
    _assert_nothing_received(backend)


# -- models and the registry ---------------------------------------------------------------------
def test_log_model_of_an_unpicklable_object_or_unknown_flavor_is_refused(tracker, backend):
    with tracker.start_run(experiment="e") as run:
        # any picklable object is a model (flavor "python"); one that cannot be pickled is not
        with pytest.raises(InvalidInput, match=r"_thread\.lock as a model: it cannot be pickled"):
            run.log_model(threading.Lock())
        with pytest.raises(InvalidInput, match=r"unknown model flavor 'pickle'.*'python'"):
            run.log_model(object(), flavor="pickle")
    _assert_nothing_received(backend)


def test_reserved_and_invalid_alias_names_are_rejected(tracker, backend):
    for bad in BAD_ALIASES:
        with pytest.raises(InvalidInput, match=re.escape(f"alias {bad!r}")):
            tracker.set_model_alias("m", bad, 1)
        with pytest.raises(InvalidInput, match=re.escape(f"alias {bad!r}")):
            tracker.delete_model_alias("m", bad)
    with pytest.raises(InvalidInput, match=r"alias 'a/b'"):
        tracker.get_model_version("m", alias="a/b")
    _assert_nothing_received(backend)
    tracker.set_model_alias("m", "champion-2", 1)  # a valid alias does reach the backend
    assert backend.registry_calls == [("set_model_alias", "m", "champion-2", 1)]


def test_bad_model_names_are_rejected(tracker, backend):
    source = "runs:/r0/model"
    for bad in BAD_MODEL_NAMES:
        pattern = rf"registered model name .*{re.escape(repr(bad))}"
        with pytest.raises(InvalidInput, match=pattern):
            tracker.register_model(source, bad)
        with pytest.raises(InvalidInput, match=pattern):
            tracker.get_model_version(bad)
        with pytest.raises(InvalidInput, match=pattern):
            tracker.set_model_alias(bad, "champion", 1)
    _assert_nothing_received(backend)
    tracker.register_model(source, "m")  # the positive control
    assert backend.registry_calls == [("create_model_version", "m", source)]


def test_bad_version_numbers_are_rejected(tracker, backend):
    for bad in BAD_VERSIONS:
        shown = re.escape(repr(bad))
        with pytest.raises(InvalidInput, match=rf"positive integer, got {shown}"):
            tracker.get_model_version("m", bad)
        with pytest.raises(InvalidInput, match=rf"positive integer, got {shown}"):
            tracker.set_model_alias("m", "champion", bad)
        with pytest.raises(InvalidInput, match=rf"positive integer, got {shown}"):
            tracker.update_model_version("m", bad, "changed")
    _assert_nothing_received(backend)
    assert tracker.get_model_version("m", "1").version == 1  # decimal text is accepted
    assert backend.registry_calls == [("get_model_version", "m", 1)]


def test_version_alias_with_non_ascii_digit_is_invalid_input(tracker, backend):
    with pytest.raises(InvalidInput, match=r"'v²'|'²'"):
        tracker.get_model_version("m", alias="v²")
    _assert_nothing_received(backend)


# -- the run's lifecycle -------------------------------------------------------------------------
@pytest.mark.parametrize("operation", sorted(AFTER_END))
def test_logging_after_the_run_ended_is_an_error(tracker, backend, tmp_path, operation):
    local = tmp_path / "f.txt"
    local.write_text("data")
    run = tracker.start_run(experiment="e")
    run.end()
    with pytest.raises(TrackkitError, match=rf"run {run.id} has ended \(FINISHED\)"):
        AFTER_END[operation](run, local)
    _assert_nothing_received(backend)
    assert backend.ended == {run.id: "FINISHED"}


@pytest.mark.parametrize("status", BAD_STATUSES)
def test_invalid_run_status_is_rejected(tracker, backend, status):
    run = tracker.start_run(experiment="e")
    run.log_metric("m", 1.0)
    with pytest.raises(
        InvalidInput, match=rf"run status must be one of .* got {re.escape(repr(status))}"
    ):
        run.end(status)
    assert backend.ended == {}
    assert not run.ended
    run.end("FAILED")
    assert backend.ended == {run.id: "FAILED"}
    assert _history(backend, "m") == [(0, 1.0)]


# -- the caller's objects are never mutated ------------------------------------------------------
def test_log_params_does_not_mutate_the_callers_dict(tracker, backend):
    params = caller_params()
    before = copy.deepcopy(params)
    with tracker.start_run(experiment="e") as run:
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
    stored = _param_texts(backend)
    assert {k: stored[k] for k in CALLER_PARAMS_TEXT} == CALLER_PARAMS_TEXT
    assert "x" not in stored
    artifact = f"{LONG_VALUES_DIR}/params/opt.notes.txt"
    marker = TRUNCATION_MARKER.format(path=artifact)
    assert stored["opt.notes"] == "n" * (PARAM_LIMIT - len(marker)) + marker
    assert backend.artifacts[artifact] == "n" * LONG_TEXT
    assert _renames(backend) == {"param": {"opt.lr@1": "opt.lr_1"}}
    assert len(backend.artifacts) == 2


def test_log_metrics_does_not_mutate_the_callers_dict(tracker, backend):
    metrics = caller_metrics()
    before = copy.deepcopy(metrics)
    with tracker.start_run(experiment="e") as run:
        with pytest.warns(TrackkitWarning, match=r"'train\.loss@0'.*'train\.loss_0'"):
            run.log_metrics(metrics, step=2.0)
            run.flush()
        with pytest.raises(InvalidInput, match=r"'val\.bad'"):
            run.log_metrics({"val": {"bad": "x"}})
    # NaN != NaN, so compare the NaN separately
    assert math.isnan(metrics["val"].pop(2)) and math.isnan(before["val"].pop(2))
    assert metrics == before
    assert _history(backend, "train.loss_0") == [(2, 0.5)]
    assert _history(backend, "train.acc") == [(2, 0.75)]
    assert _history(backend, "val.converged") == [(2, 1.0)]
    [(step, value)] = _history(backend, "val.2")
    assert step == 2 and math.isnan(value)


def test_set_tags_does_not_mutate_the_callers_dict(tracker, backend):
    tags = caller_tags()
    before = copy.deepcopy(tags)
    with tracker.start_run(experiment="e") as run:
        with pytest.warns(TrackkitWarning, match=r"'env\.host:name'.*'env\.host_name'"):
            run.set_tags(tags)
            run.flush()
        assert tags == before  # also while the run is open
    assert tags == before
    stored = _tags(backend)
    assert {k: stored[k] for k in CALLER_TAGS_TEXT} == CALLER_TAGS_TEXT
    assert len(stored["env.long"]) == TAG_LIMIT
    assert backend.artifacts[f"{LONG_VALUES_DIR}/tags/env.long.txt"] == before["env"]["long"]
    assert _renames(backend) == {"tag": {"env.host:name": "env.host_name"}}
    assert len(backend.artifacts) == 2
