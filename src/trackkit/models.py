"""Model flavors and the trackkit model package.

A *flavor* names how a model is saved and loaded (``sklearn``, ``xgboost``). Backends with
their own model format (MLflow) use it directly; the others store a *trackkit model package*:
a directory holding ``trackkit-model.json`` (format, flavor, library versions) and the
serialized model. See docs/concepts.md, "Models".
"""

from __future__ import annotations

import json
import platform
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

from trackkit._lazy import import_sdk
from trackkit.errors import InvalidInput, TrackkitWarning

PACKAGE_FORMAT = "trackkit-model/1"
METADATA_FILE = "trackkit-model.json"
#: flavor -> (distribution whose version is recorded, pip extra that installs it)
FLAVORS: dict[str, tuple[str, str]] = {
    "sklearn": ("scikit-learn", "ml"),
    "xgboost": ("xgboost", "ml"),
}


def _modules(model: Any) -> list[str]:
    return [cls.__module__ for cls in type(model).__mro__]


def detect_flavor(model: Any) -> str:
    """The flavor of ``model``, from its class hierarchy (xgboost before scikit-learn).

    Raises:
        InvalidInput: no supported flavor matches.
    """
    modules = _modules(model)
    if any(m == "xgboost" or m.startswith("xgboost.") for m in modules):
        return "xgboost"
    if any(m.startswith("sklearn.") for m in modules):
        return "sklearn"
    raise InvalidInput(
        f"cannot log a {type(model).__module__}.{type(model).__qualname__} as a model: supported "
        f"flavors are {sorted(FLAVORS)}; save other objects yourself and use log_artifact"
    )


def _classes(model: Any) -> list[type]:
    """The classes a model is made of: its own and, for scikit-learn, every nested estimator's."""
    classes, stack, seen = [], [model], set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        classes.append(type(obj))
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
    pins = {FLAVORS[check_flavor(flavor)][0]}
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


def save_package(model: Any, flavor: str, path: Path) -> None:
    """Write ``model`` as a trackkit model package into the new directory ``path``."""
    check_flavor(flavor)
    path.mkdir(parents=True)
    info: dict[str, Any] = {
        "format": PACKAGE_FORMAT,
        "flavor": flavor,
        "python": platform.python_version(),
        "libraries": dict(pin.split("==", 1) for pin in requirements(model, flavor)),
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
    }
    if flavor == "xgboost":
        info["file"] = "model.ubj"
        model.save_model(str(path / info["file"]))
    else:
        import pickle

        info["file"] = "model.pkl"
        with open(path / info["file"], "wb") as f:
            pickle.dump(model, f, protocol=pickle.HIGHEST_PROTOCOL)
    (path / METADATA_FILE).write_text(json.dumps(info, indent=2) + "\n")


def load_package(path: Path) -> Any:
    """Load the model a trackkit model package holds.

    Raises:
        InvalidInput: ``path`` is not a trackkit model package.
        MissingDependencyError: the flavor's library is not installed.
    """
    meta_path = path / METADATA_FILE
    if not meta_path.is_file():
        raise InvalidInput(f"{path} is not a trackkit model package (no {METADATA_FILE})")
    info = json.loads(meta_path.read_text())
    flavor = check_flavor(info.get("flavor", ""))
    dist, extra = FLAVORS[flavor]
    saved, here = info.get("libraries", {}).get(dist), _version(dist)
    if saved and here and saved != here:
        warnings.warn(
            f"model was saved with {dist} {saved} and is loaded with {here}",
            TrackkitWarning,
            stacklevel=3,
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
    import_sdk("sklearn", extra=extra, purpose="loading a scikit-learn model")
    import pickle

    with open(file, "rb") as f:
        return pickle.load(f)
