"""The one place SDKs are imported: lazily, with an install hint when missing."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from trackkit import _heap
from trackkit.errors import MissingDependencyError


def import_sdk(module: str, *, extra: str, purpose: str) -> ModuleType:
    """Import ``module``; if it is missing, say which pip extra installs it.

    Args:
        module: the importable name, e.g. ``"mlflow"``.
        extra: trackkit's pip extra that installs it, e.g. ``"mlflow"``.
        purpose: what needs it, e.g. ``"the mlflow backend"``, for the message.

    A first import that loads many modules is followed by :func:`trackkit._heap.settle`.

    Raises:
        MissingDependencyError: the module (or one of its own dependencies) is not installed.
    """
    loaded = sys.modules.get(module)
    if loaded is not None:
        return loaded
    try:
        imported = importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"{purpose} needs the {module!r} package, which is not installed "
            f"({e}); install it with: pip install 'trackkit[{extra}]'"
        ) from e
    _heap.settle()
    return imported
