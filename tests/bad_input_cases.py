"""Bad and awkward input, written once: the cases of tests/test_bad_input.py (read back through
MLflow's own client) and tests/test_normalize_core.py (the SDK-free RecordingBackend).

Each table pairs an input with what trackkit's InvalidInput message shows for it, or with the
form it is stored in. The cases assume a backend whose names follow :data:`KEY_INVALID_CHARS`
and :data:`KEY_LENGTH` (MLflow's rule; the recording backend declares the same). Needs numpy,
no tracking SDK.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pytest

#: the name rule the cases assume: a character outside it is renamed to '_'
KEY_INVALID_CHARS = r"[^/\w.\- ]"
#: the longest key the cases assume a backend takes
KEY_LENGTH = 250

LOGGERS = {
    "param": lambda run, key, value: run.log_param(key, value),
    "metric": lambda run, key, value: run.log_metric(key, value),
    "tag": lambda run, key, value: run.set_tag(key, value),
}

# -- metric values, steps, timestamps ------------------------------------------------------------
NAN_VALUES = (float("nan"), np.float64("nan"))

NON_NUMERIC_METRICS = [
    pytest.param("0.5", "str '0.5'", id="str"),
    pytest.param(None, "NoneType None", id="None"),
    pytest.param([0.5], "list [0.5]", id="list"),
    pytest.param(1 + 2j, "complex (1+2j)", id="complex"),
    pytest.param(b"1", "bytes b'1'", id="bytes"),
    pytest.param(np.array([1.0, 2.0]), "ndarray", id="array"),
    pytest.param(10**400, "too large for a float", id="huge-int"),
]

BAD_STEPS = [
    pytest.param(-1, "-1", id="negative"),
    pytest.param(2.5, "2.5", id="fraction"),
    pytest.param(True, "True", id="bool"),
    pytest.param("3", "'3'", id="str"),
    pytest.param(float("nan"), "nan", id="nan"),
    pytest.param(float("inf"), "inf", id="inf"),
    pytest.param(2**63, str(2**63), id="too-big"),
    pytest.param([1], "[1]", id="list"),
]

BAD_TIMESTAMPS = [
    pytest.param(1.7e12, "1700000000000.0", id="float"),
    pytest.param(-1, "-1", id="negative"),
    pytest.param(True, "True", id="bool"),
    pytest.param("2024-01-01", "'2024-01-01'", id="str"),
    pytest.param(dt.date(2024, 1, 1), "datetime.date(2024, 1, 1)", id="date"),
]

#: an aware datetime and the milliseconds since the epoch it is stored as
DATETIME_TIMESTAMP = (
    dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=dt.timezone.utc),
    1_704_164_645_678,
)

# -- keys ----------------------------------------------------------------------------------------
#: keys with characters outside KEY_INVALID_CHARS, and the names they are stored under
RENAMED_KEYS = [("a@b", "a_b"), ("x:y", "x_y"), ("loss[0]", "loss_0_")]

BAD_KEYS = [
    pytest.param("", "empty or blank", id="empty"),
    pytest.param("   ", "empty or blank", id="spaces"),
    pytest.param("\t\n", "empty or blank", id="whitespace"),
    pytest.param(None, "NoneType None", id="None"),
    pytest.param(("a", "b"), "tuple ('a', 'b')", id="tuple"),
    pytest.param(True, "bool True", id="bool"),
    pytest.param(1.5, "float 1.5", id="float"),
    pytest.param("a//b", "not a clean relative path", id="double-slash"),
    pytest.param("/a", "not a clean relative path", id="leading-slash"),
    pytest.param("a/../b", "not a clean relative path", id="dotdot"),
    pytest.param("./x", "not a clean relative path", id="dot-slash"),
    pytest.param("a/", "not a clean relative path", id="trailing-slash"),
    pytest.param("..", "not a clean relative path", id="parent"),
]

# -- param and tag values ------------------------------------------------------------------------
NESTED_PARAMS = {
    "model": {"alpha": 0.1, "net": {"depth": 3, "act": "relu"}},
    "opt": "adam",
    "x": {},
}
NESTED_PARAM = ("data", {"split": {"seed": 42}})
FLATTENED_PARAMS = {
    "model.alpha": "0.1",
    "model.net.depth": "3",
    "model.net.act": "relu",
    "opt": "adam",
    "x": "{}",
    "data.split.seed": "42",
}


def numpy_params() -> dict[str, Any]:
    return {
        "f32": np.float32(0.5),
        "f32_inexact": np.float32(0.1),
        "i64": np.int64(-7),
        "flag": np.bool_(True),
        "arr": np.array([1, 2]),
    }


NUMPY_PARAMS_TEXT = {
    "f32": "0.5",
    "f32_inexact": str(float(np.float32(0.1))),  # the float32's exact value, not '0.1'
    "i64": "-7",
    "flag": "True",
    "arr": "[1, 2]",
}


def collection_params() -> dict[str, Any]:
    return {
        "list": [1, "a", None, 2.5],
        "tuple": (64, 32),
        "set": {3, 1, 2},
        "frozen": frozenset({"b", "a"}),
        "nested": [{"k": (1, 2)}],
        "none": None,
        "path": Path("data/train.csv"),
    }


COLLECTION_PARAMS_TEXT = {
    "list": '[1, "a", null, 2.5]',
    "tuple": "[64, 32]",
    "set": "[1, 2, 3]",
    "frozen": '["a", "b"]',
    "nested": '[{"k": [1, 2]}]',
    "none": "None",
    "path": "data/train.csv",
}


class Opaque:
    """An object with no faithful text form."""


VALUES_WITHOUT_TEXT = [
    pytest.param(object(), "builtins.object", id="object"),
    pytest.param(Opaque(), "Opaque", id="custom"),
    pytest.param(b"raw", "builtins.bytes", id="bytes"),
    pytest.param(1 + 1j, "builtins.complex", id="complex"),
    pytest.param([1, object()], "object cannot be written as JSON", id="list-of-object"),
]

#: calls of log_params made after ``log_param("lr", 0.1)``: each is refused as a whole
FAILING_PARAM_BATCHES = [
    pytest.param(
        {"good": 1, "nested": {"ok": 2}, "long": "z" * 7000, "bad": object()},
        "'bad'",
        id="bad-value",
    ),
    pytest.param({"good": 1, "": 2}, "''", id="bad-key"),
    pytest.param({"good": 1, "lr": 0.2}, "param 'lr' is already", id="conflict"),
    pytest.param(
        {"good": 1, "k" * (KEY_LENGTH + 1): 2}, f"{KEY_LENGTH + 1} characters", id="long-key"
    ),
]

# Run first in a child process with a memory cap and a timeout: a regression here is an endless,
# memory-eating loop that must not take the test process (or the machine) down with it.
CYCLE_PROBE = """
import resource
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
from trackkit import normalize
from trackkit.errors import InvalidInput
d = {"lr": 0.1}
d["inner"] = {"again": d}
items = [1, 2]
items.append(items)
for call in (lambda: normalize.flatten({"cfg": d}), lambda: normalize.param_value("cfg", items)):
    try:
        call()
    except InvalidInput:
        continue
    raise SystemExit("accepted a self-containing value")
"""


def self_containing(make: str) -> tuple[dict[str, Any], str]:
    """Params holding a dict (``make="dict"``) or a list that contains itself, and the message."""
    if make == "dict":
        bad: Any = {"lr": 0.1}
        bad["inner"] = {"again": bad}
        return {"ok": 1, "cfg": bad}, r"'cfg\.inner\.again' contains itself"
    bad = [1, 2]
    bad.append(bad)
    return {"ok": 1, "cfg": bad}, r"'cfg'.*list contains itself"


# -- the caller's objects ------------------------------------------------------------------------
#: long enough to pass every value limit the tests declare, so it is kept whole as an artifact
LONG_TEXT = 7000


def caller_params() -> dict[Any, Any]:
    return {
        "opt": {"lr@1": np.float32(0.5), "notes": "n" * LONG_TEXT, "layers": [64, 32]},
        "sizes": {3, 1},
        "shape": (2, [3, 4]),
        5: {"deep": {"deeper": None}},
    }


CALLER_PARAMS_TEXT = {
    "opt.lr_1": "0.5",
    "opt.layers": "[64, 32]",
    "sizes": "[1, 3]",
    "shape": "[2, [3, 4]]",
    "5.deep.deeper": "None",
}


def caller_metrics() -> dict[Any, Any]:
    return {
        "train": {"loss@0": np.float32(0.5), "acc": np.float64(0.75)},
        "val": {"converged": True, 2: float("nan")},
    }


def caller_tags() -> dict[Any, Any]:
    return {"env": {"host:name": "box", "long": "y" * 9000}, "ver": (1, 2), "owner": None}


CALLER_TAGS_TEXT = {"env.host_name": "box", "ver": "[1, 2]", "owner": "None"}

# -- artifacts -----------------------------------------------------------------------------------
ESCAPING_ARTIFACT_PATHS = ["../x", "/abs", "a/../../b", "..", "\\abs"]
BAD_DICT_FILES = ["data.txt", "data", "data.jsonl", "dir/"]
NON_STR_TEXTS = [(b"bytes", "bytes"), (12, "int"), (None, "NoneType")]

# -- the registry --------------------------------------------------------------------------------
BAD_ALIASES = ["latest", "LATEST", "v1", "V2", "v10", "bad alias", "a/b", "", "ok\n", "x@y", None]
BAD_MODEL_NAMES = ["a/b", "x@y", "a:b", "it's", "", "   ", None, "n" * 256]
BAD_VERSIONS = [0, -1, "abc", True, False, 1.0, "1.0", "²", " 1", [1]]

# -- the run's lifecycle -------------------------------------------------------------------------
AFTER_END = {
    "log_param": lambda run, f: run.log_param("p", 1),
    "log_params": lambda run, f: run.log_params({"p": {"q": 1}}),
    "log_metric": lambda run, f: run.log_metric("m", 1.0),
    "log_metrics": lambda run, f: run.log_metrics({"m": 1.0}),
    "set_tag": lambda run, f: run.set_tag("t", "v"),
    "set_tags": lambda run, f: run.set_tags({"t": "v"}),
    "log_text": lambda run, f: run.log_text("x", "notes.txt"),
    "log_dict": lambda run, f: run.log_dict({"a": 1}, "d.json"),
    "log_artifact": lambda run, f: run.log_artifact(f),
}

BAD_STATUSES = ["DONE", "finished", "", None, "RUNNING"]
