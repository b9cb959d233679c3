"""One normalization pipeline for every backend: flattening, key and value rules, limits.

Every rule here either normalizes in a documented way (docs/concepts.md, "Normalization") or
raises :class:`~trackkit.errors.InvalidInput` naming the key or value. Inputs are never
mutated: every function builds new objects.
"""

from __future__ import annotations

import datetime as _dt
import enum
import hashlib
import json
import math
import numbers
import posixpath
import re
from collections.abc import Iterable, Mapping
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from trackkit.errors import InvalidInput

if TYPE_CHECKING:
    from trackkit.backend import Limits
    from trackkit.entities import ParamValue

SEP = "."
TRUNCATION_MARKER = "...[truncated by trackkit; full value in artifact {path}]"
LONG_VALUES_DIR = "trackkit/long_values"
MAX_STEP = 2**63 - 1
#: the longest file name (UTF-8 bytes) of a long value's artifact; most file systems allow 255
MAX_FILE_NAME_BYTES = 255
_ALIAS = re.compile(r"[A-Za-z0-9_\-]+")
_RESERVED_ALIAS = re.compile(r"latest|v[0-9]+", re.IGNORECASE)
_MODEL_NAME_FORBIDDEN = re.compile(r"[/@:'\"]")
_DECIMAL = re.compile(r"[0-9]+")
MAX_ALIAS_LENGTH = 255
MAX_MODEL_NAME_LENGTH = 255


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _numpy_item(value: Any) -> Any:
    """A numpy scalar or 0-d array as the equivalent Python scalar; anything else unchanged."""
    module = type(value).__module__
    if module == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    return value


# -- flattening --------------------------------------------------------------------------------
def flatten(mapping: Mapping[Any, Any], what: str = "params") -> dict[str, Any]:
    """Flatten nested mappings into ``{"a.b.c": value}``; the input is left untouched.

    Keys must be strings (integers are converted with ``str``). An empty nested mapping is kept
    as the value ``"{}"`` so that no key disappears. Two spellings of one flattened key
    (``{"a.b": 1, "a": {"b": 2}}``) raise InvalidInput.
    """
    if not isinstance(mapping, Mapping):
        raise InvalidInput(
            f"{what} must be a mapping of names to values, got {type(mapping).__name__}"
        )
    out: dict[str, Any] = {}
    # Each pending mapping carries the ids of the mappings it is nested in, so a mapping that
    # contains itself (directly or further down) is caught, while one mapping shared by two
    # keys is not mistaken for a cycle.
    stack: list[tuple[str, Mapping[Any, Any], frozenset[int]]] = [("", mapping, frozenset())]
    while stack:
        prefix, current, ancestors = stack.pop()
        if id(current) in ancestors:
            raise InvalidInput(f"{what}: the mapping under {prefix or '<root>'!r} contains itself")
        inside = ancestors | {id(current)}
        for raw_key, value in current.items():
            key = _key_part(raw_key, prefix, what)
            full = f"{prefix}{SEP}{key}" if prefix else key
            if isinstance(value, Mapping) and value:
                stack.append((full, value, inside))
                continue
            if isinstance(value, Mapping):
                value = "{}"
            if full in out:
                raise InvalidInput(f"{what}: the key {full!r} is given twice once flattened")
            out[full] = value
    return out


def _key_part(raw_key: Any, prefix: str, what: str) -> str:
    if isinstance(raw_key, bool) or not isinstance(raw_key, (str, int)):
        where = f" under {prefix!r}" if prefix else ""
        raise InvalidInput(
            f"{what}: keys must be strings, got {type(raw_key).__name__} {_describe(raw_key)}{where}"
        )
    return str(raw_key)


# -- keys -------------------------------------------------------------------------------------
class KeyRules:
    """Checks keys against a backend's limits and sanitizes illegal characters.

    A key with characters the backend forbids is renamed (each such character becomes ``_``).
    :meth:`check` only validates; :meth:`claim` records the names a call really logged, so a
    refused call reserves nothing. Two different keys that would share one stored name raise
    InvalidInput instead of merging.
    """

    def __init__(self, limits: Limits) -> None:
        self._max = limits.key_length
        self._bad = re.compile(limits.key_invalid_chars) if limits.key_invalid_chars else None
        self._cache: dict[str, str] = {}
        self._owner: dict[str, str] = {}

    def check(self, key: Any, what: str) -> str:
        """The name ``key`` is stored under; raises InvalidInput for a bad or taken name."""
        stored = self._cache.get(key) if isinstance(key, str) else None
        if stored is None:
            stored = self._stored(key, what)
        owner = self._owner.get(stored)
        if owner is not None and owner != key:
            raise InvalidInput(
                f"{what} names {owner!r} and {key!r} both become {stored!r} on this backend; "
                "rename one of them"
            )
        return stored

    def check_all(self, keys: Iterable[Any], what: str) -> dict[str, str]:
        """``check`` for every key of one call, refusing two keys that share a stored name."""
        names: dict[str, str] = {}
        owners: dict[str, str] = {}
        for key in keys:
            stored = self.check(key, what)
            first = owners.setdefault(stored, key)
            if first != key:
                raise InvalidInput(
                    f"{what} names {first!r} and {key!r} both become {stored!r} on this "
                    "backend; rename one of them"
                )
            names[key] = stored
        return names

    def claim(self, names: Mapping[str, str]) -> dict[str, str]:
        """Record checked names as logged; return the renames seen for the first time."""
        new = {}
        for key, stored in names.items():
            first_time = self._cache.get(key) != stored
            if self._owner.setdefault(stored, key) == key and stored != key and first_time:
                new[key] = stored
            self._cache[key] = stored
        return new

    def _stored(self, key: Any, what: str) -> str:
        if not isinstance(key, str):
            raise InvalidInput(
                f"{what} names must be strings, got {type(key).__name__} {_describe(key)}"
            )
        if not key.strip():
            raise InvalidInput(f"{what} names must not be empty or blank, got {key!r}")
        stored = self._bad.sub("_", key) if self._bad else key
        norm = posixpath.normpath(stored)
        if norm != stored or norm.startswith(("/", "..")) or norm == ".":
            raise InvalidInput(
                f"{what} name {key!r} is not a clean relative path (it would read as {norm!r}); "
                "remove leading or doubled '/', '.' and '..' parts"
            )
        if self._max is not None and len(stored) > self._max:
            raise InvalidInput(
                f"{what} name {key[:40]!r}... is {len(stored)} characters; this backend allows "
                f"{self._max}: shorten it (trackkit does not cut names, to keep them unique)"
            )
        return stored


# -- values -----------------------------------------------------------------------------------
def param_value(key: str, value: Any) -> ParamValue:
    """Normalize one param (or tag) value.

    str, int, float and bool pass through; numpy scalars become Python scalars; ``None``
    becomes ``"None"``; lists, tuples, sets and arrays become JSON text; paths, dates and enums
    become their text. Anything else raises InvalidInput.
    """
    value = _numpy_item(value)
    if isinstance(value, (str, bool, int, float)):
        return value
    if value is None:
        return "None"
    if isinstance(value, enum.Enum):
        inner = value.value
        return inner if isinstance(inner, (str, int, float, bool)) else value.name
    if isinstance(value, (PurePath, _dt.date, _dt.time, _dt.timedelta)):
        return str(value)
    if isinstance(value, (list, tuple, set, frozenset)) or type(value).__module__ == "numpy":
        return json.dumps(jsonable(value, f"value of {key!r}"), allow_nan=True)
    if isinstance(value, numbers.Real):
        return _to_float(key, value, "value of")
    raise InvalidInput(
        f"value of {key!r} is a {type(value).__module__}.{type(value).__qualname__}, which has "
        "no faithful text form; pass str(value) or a plain number, string, bool or list"
    )


def value_text(value: ParamValue) -> str:
    """The text a backend stores for a param value (``True`` -> ``"True"``, ``0.1`` -> ``"0.1"``)."""
    return value if isinstance(value, str) else str(value)


def truncate(text: str, limit: int | None, artifact: str) -> str | None:
    """The stored form of an over-long value, or None if ``text`` fits within ``limit``."""
    if limit is None or len(text) <= limit:
        return None
    marker = TRUNCATION_MARKER.format(path=artifact)
    if len(marker) >= limit:
        marker = "..."
    return text[: limit - len(marker)] + marker


def metric_value(key: str, value: Any) -> float:
    """A metric value as a float: bools become 1.0/0.0; NaN and infinities are kept."""
    value = _numpy_item(value)
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (str, bytes)) or value is None or not isinstance(value, numbers.Real):
        if not isinstance(value, (str, bytes)) and value is not None and hasattr(value, "item"):
            try:  # a one-element tensor of another library
                return metric_value(key, value.item())
            except (ValueError, TypeError, RuntimeError):
                pass
        raise InvalidInput(
            f"metric {key!r} must be a real number, got {type(value).__name__} {_describe(value)}"
        )
    return _to_float(key, value, "metric")


def _to_float(key: str, value: Any, what: str) -> float:
    try:
        return float(value)
    except OverflowError:
        raise InvalidInput(
            f"{what} {key!r} is {_describe(value)}, too large for a float; "
            "pass float('inf') explicitly if that is meant"
        ) from None


def step_value(key: str, step: Any, limit: int = MAX_STEP) -> int:
    """A metric step: a non-negative integer up to ``limit`` (the backend's ``max_step``);
    integral floats such as ``3.0`` become ``3``."""
    step = _numpy_item(step)
    if isinstance(step, bool) or not isinstance(step, (int, float)):
        raise InvalidInput(
            f"step of metric {key!r} must be a non-negative integer, got {type(step).__name__} "
            f"{_describe(step)}"
        )
    if isinstance(step, float) and not (math.isfinite(step) and step.is_integer()):
        raise InvalidInput(f"step of metric {key!r} must be a whole number, got {step!r}")
    number = int(step)
    if number < 0 or number > limit:
        raise InvalidInput(f"step of metric {key!r} must be between 0 and {limit}, got {number}")
    return number


def next_step(key: str, last: int, limit: int) -> int:
    """The implicit step after ``last``; past the backend's ``max_step`` it raises InvalidInput."""
    if last >= limit:
        raise InvalidInput(
            f"metric {key!r} is at step {last}, the highest this backend stores; the next point "
            "needs an explicit step (steps cannot go past the backend's integer range)"
        )
    return last + 1


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_MS = _dt.timedelta(milliseconds=1)


def timestamp_ms(key: str, timestamp: Any, limit: int | None = None, *, what: str = "") -> int:
    """A metric timestamp in milliseconds since the epoch, from int milliseconds or a datetime
    (naive: local time); at least 0, and at most ``limit`` (the backend's ``max_timestamp``)
    when given. ``what`` names the value in messages (default: the timestamp of metric
    ``key``), for the other times trackkit takes, such as a run's ``start_time``."""
    value = _numpy_item(timestamp)
    if isinstance(value, _dt.datetime):
        moment = value if value.tzinfo is not None else value.astimezone()
        # exact: float seconds (datetime.timestamp()) drop a millisecond now and then
        ms = int((moment - _EPOCH) // _MS)
    elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(
            f"{what or f'timestamp of metric {key!r}'} must be a datetime or non-negative int "
            f"milliseconds since the epoch, got {_describe(value)} (for time.time() use "
            "int(time.time() * 1000))"
        )
    else:
        ms = value
    if ms < 0:  # a datetime before 1970
        raise InvalidInput(
            f"{what or f'timestamp of metric {key!r}'} is {ms} ms, before the epoch (1970), "
            "which backends do not store"
        )
    if limit is not None and ms > limit:
        raise InvalidInput(
            f"{what or f'timestamp of metric {key!r}'} is {ms}, past the highest this backend "
            f"stores ({limit} ms); pass milliseconds since the epoch"
        )
    return ms


def jsonable(obj: Any, where: str = "value") -> Any:
    """A JSON-ready copy of ``obj``: numpy values, tuples, sets, paths and dates converted."""
    return _jsonable(obj, where, frozenset())


def _jsonable(obj: Any, where: str, ancestors: frozenset[int]) -> Any:
    obj = _numpy_item(obj)
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    if isinstance(obj, (Mapping, list, tuple, set, frozenset)):
        if id(obj) in ancestors:
            raise InvalidInput(f"{where}: a {type(obj).__name__} contains itself")
        inside = ancestors | {id(obj)}
        if isinstance(obj, Mapping):
            return {
                str(_key_part(k, where, where)): _jsonable(v, where, inside) for k, v in obj.items()
            }
        if isinstance(obj, (list, tuple)):
            return [_jsonable(v, where, inside) for v in obj]
        return sorted((_jsonable(v, where, inside) for v in obj), key=repr)
    if type(obj).__module__ == "numpy" and hasattr(obj, "tolist"):
        return _jsonable(obj.tolist(), where, ancestors)
    if isinstance(obj, (PurePath, _dt.date, _dt.time, _dt.timedelta, enum.Enum)):
        return str(obj.value if isinstance(obj, enum.Enum) else obj)
    if isinstance(obj, numbers.Real):
        return float(obj)
    raise InvalidInput(
        f"{where}: a {type(obj).__qualname__} cannot be written as JSON or YAML; convert it first"
    )


# -- paths and registry names ----------------------------------------------------------------
def artifact_dir(path: Any) -> str | None:
    """A run-relative artifact directory: ``None``/``""`` is the root; no escaping the run."""
    if path is None or path == "":
        return None
    if not isinstance(path, (str, PurePath)):
        raise InvalidInput(f"artifact path must be a string, got {type(path).__name__}")
    if "\0" in str(path):
        raise InvalidInput(f"artifact path {str(path)!r} contains a NUL character")
    text = str(path).replace("\\", "/")
    norm = posixpath.normpath(text)
    if text.startswith("/") or norm == ".." or norm.startswith("../"):
        raise InvalidInput(
            f"artifact path {str(path)!r} must stay inside the run: use a relative path "
            "without '..'"
        )
    return None if norm == "." else norm


def long_value_file(kind: str, key: str) -> str:
    """The artifact that keeps an over-long ``kind`` value of ``key`` whole.

    ``trackkit/long_values/<kind>/<key>.txt``, unless a part of the key would make a file name
    over :data:`MAX_FILE_NAME_BYTES` bytes (a long key of non-ASCII letters, for example): then
    ``<the key's first characters>-<16 hex digits of its SHA-256>.txt``. The truncated value
    names the file either way.
    """
    parts = key.split("/")
    if all(0 < len(p.encode()) + 4 <= MAX_FILE_NAME_BYTES for p in parts):
        return f"{LONG_VALUES_DIR}/{kind}/{key}.txt"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    head = key.replace("/", "_").encode()[:64].decode(errors="ignore").strip(". ") or "key"
    return f"{LONG_VALUES_DIR}/{kind}/{head}-{digest}.txt"


def artifact_file(file: Any) -> tuple[str | None, str]:
    """Split a run-relative artifact file path into (directory, file name)."""
    directory = artifact_dir(file)
    if directory is None or str(file).endswith(("/", "\\")):
        raise InvalidInput(f"artifact file name must name a file, got {file!r}")
    head, _, tail = directory.rpartition("/")
    return (head or None), tail


def model_name(name: Any) -> str:
    """A registered model name: non-empty, at most 255 characters, no '/', '@', ':' or quotes."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput(f"registered model name must be a non-empty string, got {name!r}")
    if _MODEL_NAME_FORBIDDEN.search(name) or len(name) > MAX_MODEL_NAME_LENGTH:
        raise InvalidInput(
            f"registered model name {name!r} must be at most {MAX_MODEL_NAME_LENGTH} characters "
            "without '/', '@', ':' or quotes (they would make models:/ URIs and registry "
            "filters ambiguous)"
        )
    return name


def model_version(version: Any) -> int:
    """A model version number: a positive int, or its decimal text (``"3"``)."""
    version = _numpy_item(version)
    if isinstance(version, str) and _DECIMAL.fullmatch(version):
        version = int(version)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidInput(f"model version must be a positive integer, got {_describe(version)}")
    return version


def alias(name: Any) -> str:
    """A settable alias: letters, digits, '_' and '-'; not the reserved 'latest' or 'v<n>'."""
    if not isinstance(name, str) or not _ALIAS.fullmatch(name) or len(name) > MAX_ALIAS_LENGTH:
        raise InvalidInput(
            f"alias {name!r} must be 1 to {MAX_ALIAS_LENGTH} letters, digits, '_' or '-'"
        )
    if _RESERVED_ALIAS.fullmatch(name):
        raise InvalidInput(
            f"alias {name!r} is reserved: 'latest' always means the newest version and "
            "'v<number>' names a version; choose another alias"
        )
    return name
