"""Model flavors, signatures and the trackkit model package.

A *flavor* names how a model is saved and loaded (``sklearn``, ``xgboost``, and ``python`` for
any other picklable object). Backends with their own model format (MLflow) use it directly;
the others store a *trackkit model package*: a directory holding ``trackkit-model.json``
(format, flavor, library versions, signature), the serialized model and its input example.
A :class:`Signature` describes a model's inputs and outputs in MLflow's schema format, so the
same one is stored natively on MLflow and in the package elsewhere. See docs/concepts.md,
"Models".
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import pickle
import platform
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from trackkit._lazy import import_sdk
from trackkit.errors import InvalidInput, MissingDependencyError, TrackkitWarning

PACKAGE_FORMAT = "trackkit-model/1"
METADATA_FILE = "trackkit-model.json"
EXAMPLE_FILE = "input_example.json"
#: flavor -> (distribution whose version is recorded, or "" for none; pip extra that installs it)
FLAVORS: dict[str, tuple[str, str]] = {
    "sklearn": ("scikit-learn", "ml"),
    "xgboost": ("xgboost", "ml"),
    "python": ("", "ml"),
}
#: rows of an input example used to infer a signature (as MLflow's autologging)
EXAMPLE_ROWS = 5


# -- signatures -------------------------------------------------------------------------------
@dataclass(frozen=True, eq=True)
class Signature:
    """A model's input and output schema, as MLflow writes it (``ModelSignature.to_dict``).

    ``inputs`` and ``outputs`` are lists of MLflow column specs (``{"type": "double",
    "name": "trip_distance", "required": True}``) or tensor specs (``{"type": "tensor",
    "tensor-spec": {"dtype": "float64", "shape": [-1, 4]}}``).
    """

    inputs: tuple[dict[str, Any], ...]
    outputs: tuple[dict[str, Any], ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain lists (JSON-ready)."""
        return {
            "inputs": [dict(spec) for spec in self.inputs],
            "outputs": None if self.outputs is None else [dict(spec) for spec in self.outputs],
        }

    def to_mlflow_dict(self) -> dict[str, Any]:
        """The dict ``mlflow.models.ModelSignature.from_dict`` takes (schemas as JSON text)."""
        plain = self.to_dict()
        return {
            "inputs": json.dumps(plain["inputs"]),
            "outputs": None if plain["outputs"] is None else json.dumps(plain["outputs"]),
            "params": None,
        }

    @property
    def input_names(self) -> list[str]:
        """The names of the input columns (empty for a tensor input)."""
        return [str(spec["name"]) for spec in self.inputs if "name" in spec]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        """Read :meth:`to_dict`'s or MLflow's form (where the schemas are JSON text)."""
        if not isinstance(data, Mapping) or "inputs" not in data:
            raise InvalidInput(f"a signature needs 'inputs', got {data!r}"[:300])

        def specs(value: Any, what: str) -> tuple[dict[str, Any], ...]:
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except ValueError as e:
                    raise InvalidInput(f"signature {what} is not JSON: {e}") from e
            if not isinstance(value, list) or not all(
                isinstance(v, Mapping) and isinstance(v.get("type"), str) for v in value
            ):
                raise InvalidInput(
                    f"signature {what} must be a list of specs with a 'type', got {value!r}"[:300]
                )
            return tuple(dict(v) for v in value)

        outputs = data.get("outputs")
        return cls(
            inputs=specs(data["inputs"], "inputs"),
            outputs=None if outputs is None else specs(outputs, "outputs"),
        )


def as_signature(value: Any) -> Signature | None:
    """``value`` as a Signature: one already, MLflow's ``ModelSignature``, or a mapping.

    Raises:
        InvalidInput: none of these.
    """
    if value is None or isinstance(value, Signature):
        return value
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict) and not isinstance(value, Mapping):
        value = to_dict()  # mlflow.models.ModelSignature
    if isinstance(value, Mapping):
        return Signature.from_dict(value)
    raise InvalidInput(
        "signature must be a trackkit.Signature, an MLflow ModelSignature or a dict with "
        f"'inputs' (and 'outputs'), got {type(value).__name__}"
    )


_NUMPY_TYPES = {
    "bool": "boolean",
    "int8": "integer",
    "int16": "integer",
    "int32": "integer",
    "int64": "long",
    "uint8": "integer",
    "uint16": "integer",
    "uint32": "long",
    "uint64": "long",
    "float16": "float",
    "float32": "float",
    "float64": "double",
}


def _scalar_type(value: Any) -> str | None:
    """MLflow's column type of one Python or numpy scalar; None for None (unknown)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (bytes, bytearray)):
        return "binary"
    if isinstance(value, (dt.datetime, dt.date)):
        return "datetime"
    dtype = getattr(value, "dtype", None)
    if dtype is not None and str(dtype) in _NUMPY_TYPES:
        return _NUMPY_TYPES[str(dtype)]
    raise InvalidInput(f"cannot infer a schema type for a {type(value).__name__} value")


def _merge(a: str | None, b: str | None) -> str | None:
    if a is None or a == b:
        return b
    if b is None:
        return a
    if {a, b} <= {"integer", "long", "float", "double"}:
        return "double" if "double" in (a, b) or "float" in (a, b) else "long"
    raise InvalidInput(f"a column holds both {a} and {b} values")


def _records_schema(rows: list[Mapping[str, Any]]) -> tuple[dict[str, Any], ...]:
    types: dict[str, str | None] = {}
    seen: dict[str, int] = {}
    for row in rows:
        for key, value in row.items():
            types[str(key)] = _merge(types.get(str(key)), _scalar_type(value))
            seen[str(key)] = seen.get(str(key), 0) + 1
    return tuple(
        {"type": kind or "string", "name": key, "required": seen[key] == len(rows)}
        for key, kind in types.items()
    )


def _frame_schema(frame: Any) -> tuple[dict[str, Any], ...]:
    specs = []
    for name in frame.columns:
        column = frame[name]
        kind = _NUMPY_TYPES.get(str(column.dtype))
        if kind is None:
            if str(column.dtype).startswith("datetime64"):
                kind = "datetime"
            else:
                kind = None
                for value in column.dropna().tolist():
                    kind = _merge(kind, _scalar_type(value))
                kind = kind or "string"
        specs.append({"type": kind, "name": str(name), "required": not column.isna().any()})
    return tuple(specs)


def _tensor(dtype: Any, shape: tuple[int, ...]) -> dict[str, Any]:
    return {"type": "tensor", "tensor-spec": {"dtype": str(dtype), "shape": [-1, *shape[1:]]}}


def schema_of(data: Any) -> tuple[dict[str, Any], ...]:
    """The MLflow schema of ``data``: columns for a DataFrame, a Series, a dict or a list of
    dicts; a tensor for a numpy array, a scipy sparse matrix or a list of numbers (lists).

    Raises:
        InvalidInput: no schema can be inferred from ``data``.
    """
    if hasattr(data, "columns") and hasattr(data, "dtypes"):  # pandas DataFrame
        return _frame_schema(data)
    if hasattr(data, "to_frame") and hasattr(data, "dtype"):  # pandas Series
        return _frame_schema(data.to_frame())
    if hasattr(data, "tocsr") and hasattr(data, "shape"):  # scipy sparse
        return (_tensor(data.dtype, tuple(data.shape)),)
    if hasattr(data, "dtype") and hasattr(data, "shape") and data.shape:  # numpy array
        return (_tensor(data.dtype, tuple(data.shape)),)
    if isinstance(data, Mapping):
        return _records_schema([data])
    if isinstance(data, (list, tuple)) and data:
        if all(isinstance(row, Mapping) for row in data):
            return _records_schema(list(data))
        np = import_sdk("numpy", extra="ml", purpose="inferring a signature")
        try:
            array = np.asarray(data)
        except ValueError as e:
            raise InvalidInput(f"cannot infer a schema from a ragged list: {e}") from e
        if array.dtype.kind in "biuf":
            return (_tensor(array.dtype, tuple(array.shape)),)
    raise InvalidInput(
        f"cannot infer a signature from a {type(data).__name__}: pass a pandas DataFrame, a "
        "numpy array, a scipy sparse matrix, a dict or a list of dicts, or pass signature="
    )


def head(data: Any, rows: int = EXAMPLE_ROWS) -> Any:
    """The first ``rows`` rows of ``data`` (DataFrame, array, sparse matrix or list); a copy
    or a view, never the caller's object changed."""
    if hasattr(data, "iloc"):
        return data.iloc[:rows]
    if isinstance(data, (list, tuple)):
        return list(data[:rows])
    if hasattr(data, "shape") and getattr(data, "ndim", 2) >= 1 and not isinstance(data, Mapping):
        return data[:rows]
    return data


def infer_signature(model_input: Any, model: Any = None, output: Any = None) -> Signature:
    """A Signature from an input example; the outputs from ``output``, else from
    ``model.predict(model_input)`` when the model has ``predict`` (skipped if it fails).

    Raises:
        InvalidInput: no schema can be inferred from ``model_input``.
    """
    inputs = schema_of(model_input)
    if output is None and model is not None and callable(getattr(model, "predict", None)):
        try:
            output = model.predict(model_input)
        except Exception:  # a model that cannot predict its example has no output schema
            output = None
    outputs = None
    if output is not None:
        try:
            outputs = schema_of(output)
        except InvalidInput:
            outputs = None
    return Signature(inputs=inputs, outputs=outputs)


# -- input examples ---------------------------------------------------------------------------
def encode_example(example: Any) -> dict[str, Any]:
    """An input example as JSON-ready data that :func:`decode_example` turns back into it.

    Raises:
        InvalidInput: the example is not a DataFrame, an array, a sparse matrix or JSON data.
    """
    if hasattr(example, "columns") and hasattr(example, "to_json"):
        return {"type": "dataframe", "data": json.loads(example.to_json(orient="split"))}
    if hasattr(example, "tocsr") and hasattr(example, "shape"):
        csr = example.tocsr()
        return {
            "type": "sparse",
            "shape": list(csr.shape),
            "dtype": str(csr.dtype),
            "data": csr.data.tolist(),
            "indices": csr.indices.tolist(),
            "indptr": csr.indptr.tolist(),
        }
    if hasattr(example, "dtype") and hasattr(example, "tolist"):
        return {"type": "ndarray", "dtype": str(example.dtype), "data": example.tolist()}
    try:
        text = json.dumps(example, allow_nan=True)
    except (TypeError, ValueError) as e:
        raise InvalidInput(
            f"input_example must be a pandas DataFrame, a numpy array, a scipy sparse matrix, "
            f"or JSON data (dicts, lists, numbers, strings): {e}"
        ) from e
    return {"type": "json", "data": json.loads(text)}


def decode_example(data: Mapping[str, Any]) -> Any:
    """The input example :func:`encode_example` stored (untrusted input: data only)."""
    kind = data.get("type")
    if kind == "json":
        return data.get("data")
    if kind == "dataframe":
        pd = import_sdk("pandas", extra="ml", purpose="reading a DataFrame input example")
        split = data.get("data") or {}
        return pd.DataFrame(split.get("data", []), columns=split.get("columns"))
    np = import_sdk("numpy", extra="ml", purpose="reading an array input example")
    if kind == "ndarray":
        return np.asarray(data.get("data", []), dtype=np.dtype(str(data.get("dtype"))))
    if kind == "sparse":
        sparse = import_sdk("scipy.sparse", extra="ml", purpose="reading a sparse input example")
        dtype = np.dtype(str(data.get("dtype")))
        arrays = (np.asarray(data["data"], dtype=dtype), data["indices"], data["indptr"])
        return sparse.csr_matrix(arrays, shape=tuple(data["shape"]))
    raise InvalidInput(f"unknown input example type {kind!r}")


_PENDING: contextvars.ContextVar[tuple[Signature | None, Any]] = contextvars.ContextVar(
    "trackkit_model_extras", default=(None, None)
)


@contextlib.contextmanager
def extras(signature: Signature | None, input_example: Any) -> Iterator[None]:
    """Within this block, :func:`save_package` stores ``signature`` and ``input_example``
    when its caller passes none: the core uses it around a backend's ``log_model`` that
    predates those keywords, so its packages keep them too."""
    token = _PENDING.set((signature, input_example))
    try:
        yield
    finally:
        _PENDING.reset(token)


def _modules(model: Any) -> list[str]:
    return [cls.__module__ for cls in type(model).__mro__]


def detect_flavor(model: Any) -> str:
    """The flavor of ``model``, from its class hierarchy (xgboost before scikit-learn); any
    other picklable object is ``python``.

    Raises:
        InvalidInput: the object cannot be pickled.
    """
    modules = _modules(model)
    if any(m == "xgboost" or m.startswith("xgboost.") for m in modules):
        return "xgboost"
    if any(m.startswith("sklearn.") for m in modules):
        return "sklearn"
    check_picklable(model)
    return "python"


def check_picklable(model: Any) -> None:
    """Raise InvalidInput unless ``model`` pickles (what the ``python`` flavor stores)."""
    try:
        pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:
        raise InvalidInput(
            f"cannot log a {type(model).__module__}.{type(model).__qualname__} as a model: it "
            f"cannot be pickled ({type(e).__name__}: {e}); define its functions at module "
            "level, or save it yourself and use log_artifact"
        ) from e


def _classes(model: Any) -> list[type]:
    """The classes a model is made of: its own and, for scikit-learn, every nested estimator's."""
    classes, stack, seen = [], [model], set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        classes.append(type(obj))
        if isinstance(obj, (list, tuple)):  # e.g. the course's (vectorizer, model) pair
            stack.extend(obj)
            continue
        if isinstance(obj, Mapping):
            stack.extend(obj.values())
            continue
        get_params = getattr(obj, "get_params", None)
        if callable(get_params) and not isinstance(obj, type):
            try:
                values = get_params(deep=False).values()
            except Exception:  # an estimator whose params cannot be read lists only itself
                continue
            for value in values:
                if isinstance(value, (list, tuple)):
                    stack.extend(v[-1] if isinstance(v, tuple) else v for v in value)
                elif hasattr(value, "get_params") or hasattr(value, "predict"):
                    stack.append(value)
    return classes


def requirements(model: Any, flavor: str) -> list[str]:
    """Pinned pip requirements of the libraries a model's classes come from (``dist==version``)."""
    distributions = metadata.packages_distributions()
    pins = {dist} if (dist := FLAVORS[check_flavor(flavor)][0]) else set()
    for cls in _classes(model):
        top = cls.__module__.split(".")[0]
        pins.update(distributions.get(top, []))
    found = (f"{dist}=={v}" for dist in sorted(pins) if (v := _version(dist)) is not None)
    return list(found)


def check_flavor(flavor: str) -> str:
    if flavor not in FLAVORS:
        raise InvalidInput(f"unknown model flavor {flavor!r}; supported: {sorted(FLAVORS)}")
    return flavor


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def save_package(
    model: Any,
    flavor: str,
    path: Path,
    signature: Signature | None = None,
    input_example: Any = None,
) -> None:
    """Write ``model`` as a trackkit model package into the new directory ``path``, with its
    signature and input example (by default those of the enclosing :func:`extras`)."""
    check_flavor(flavor)
    if signature is None and input_example is None:
        signature, input_example = _PENDING.get()
    encoded = None if input_example is None else encode_example(input_example)
    path.mkdir(parents=True)
    info: dict[str, Any] = {
        "format": PACKAGE_FORMAT,
        "flavor": flavor,
        "python": platform.python_version(),
        "libraries": dict(pin.split("==", 1) for pin in requirements(model, flavor)),
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
    }
    if signature is not None:
        info["signature"] = signature.to_dict()
    if encoded is not None:
        info["input_example"] = EXAMPLE_FILE
        (path / EXAMPLE_FILE).write_text(json.dumps(encoded, allow_nan=True) + "\n")
    if flavor == "xgboost":
        info["file"] = "model.ubj"
        model.save_model(str(path / info["file"]))
    else:
        info["file"] = "model.pkl"
        with open(path / info["file"], "wb") as f:
            pickle.dump(model, f, protocol=pickle.HIGHEST_PROTOCOL)
    (path / METADATA_FILE).write_text(json.dumps(info, indent=2) + "\n")


@dataclass(frozen=True)
class Package:
    """A trackkit model package read back: the model, its flavor, signature and input example."""

    model: Any
    flavor: str
    signature: Signature | None
    input_example: Any
    libraries: dict[str, str]


_OPENED: contextvars.ContextVar[list[Package] | None] = contextvars.ContextVar(
    "trackkit_opened_packages", default=None
)


@contextlib.contextmanager
def capture() -> Iterator[list[Package]]:
    """Collect the packages :func:`load_package` opens within this block (the core uses it to
    hand out a package's signature and input example, whichever backend loaded it)."""
    opened: list[Package] = []
    token = _OPENED.set(opened)
    try:
        yield opened
    finally:
        _OPENED.reset(token)


def load_package(path: Path) -> Any:
    """Load the model a trackkit model package holds (see :func:`open_package` for the rest).

    Raises:
        InvalidInput: ``path`` is not a trackkit model package.
        MissingDependencyError: the flavor's library is not installed.
    """
    package = open_package(path)
    opened = _OPENED.get()
    if opened is not None:
        opened.append(package)
    return package.model


def open_package(path: Path) -> Package:
    """Read a trackkit model package: its model, flavor, signature and input example.

    Raises:
        InvalidInput: ``path`` is not a trackkit model package.
        MissingDependencyError: the flavor's library is not installed.
    """
    meta_path = path / METADATA_FILE
    if not meta_path.is_file():
        raise InvalidInput(f"{path} is not a trackkit model package (no {METADATA_FILE})")
    info = json.loads(meta_path.read_text())
    flavor = check_flavor(info.get("flavor", ""))
    libraries = {str(k): str(v) for k, v in dict(info.get("libraries", {})).items()}
    signature = info.get("signature")
    example_file = info.get("input_example")
    example = None
    if example_file == EXAMPLE_FILE and (path / EXAMPLE_FILE).is_file():
        example = decode_example(json.loads((path / EXAMPLE_FILE).read_text()))
    return Package(
        model=_load_model(path, info, flavor, libraries),
        flavor=flavor,
        signature=None if signature is None else Signature.from_dict(signature),
        input_example=example,
        libraries=libraries,
    )


def _load_model(path: Path, info: dict[str, Any], flavor: str, libraries: dict[str, str]) -> Any:
    dist, extra = FLAVORS[flavor]
    saved, here = libraries.get(dist), _version(dist) if dist else None
    if saved and here and saved != here:
        warnings.warn(
            f"model was saved with {dist} {saved} and is loaded with {here}",
            TrackkitWarning,
            stacklevel=4,
        )
    file = path / info["file"]
    if flavor == "xgboost":
        xgb = import_sdk("xgboost", extra=extra, purpose="loading an xgboost model")
        module, _, name = info.get("class", "xgboost.core.Booster").rpartition(".")
        cls = getattr(
            import_sdk(module, extra=extra, purpose="loading an xgboost model"), name, None
        )
        model = cls() if cls is not None else xgb.Booster()
        model.load_model(str(file))
        return model
    if flavor == "sklearn":
        import_sdk("sklearn", extra=extra, purpose="loading a scikit-learn model")
    with open(file, "rb") as f:
        try:
            return pickle.load(f)
        except ImportError as e:
            needed = ", ".join(f"{d}=={v}" for d, v in sorted(libraries.items())) or "its libraries"
            raise MissingDependencyError(
                f"loading this {flavor} model needs {needed} ({e}); install them with pip"
            ) from e
