"""The connection to the neptune client: options, secrets, and its errors mapped to trackkit's.

The backend and the registry share one :class:`NeptuneClient`. It opens nothing by itself
except the project (for its runs and models tables), on first use.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from trackkit._lazy import import_sdk
from trackkit._secrets import redact
from trackkit.backends.neptune.logs import route_sdk_logs
from trackkit.errors import InvalidInput, NotFound, TrackkitError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ENV_LOCK = threading.RLock()  # NEPTUNE_DATA_DIRECTORY is read from the environment at init
_NOT_FOUND = (
    "ContainerUUIDNotFound",
    "RunNotFound",
    "ModelNotFound",
    "ModelVersionNotFound",
    "FetchAttributeNotFoundException",
)


class NeptuneClientError(Exception):
    """The neptune client failed; the message names the operation and holds no secret."""


class Secret:
    """Holds a credential; prints as ``***`` everywhere."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__


def decode_token(token: str) -> dict[str, Any]:
    """The JSON inside a Neptune API token.

    Raises:
        InvalidInput: ``token`` is not base64-encoded JSON (the message does not show it).
    """
    try:
        data = json.loads(base64.b64decode(token.strip().encode()).decode("utf-8"))
    except Exception:
        data = None
    if not isinstance(data, dict):
        raise InvalidInput(
            "the Neptune API token is not valid (Neptune tokens are base64-encoded JSON); copy "
            "it again from your Neptune server and set NEPTUNE_API_TOKEN"
        )
    return data


class NeptuneClient:
    """The client module with the options every object is opened with.

    Args:
        sdk: the imported ``neptune`` module.
        mode: the client's mode for runs and models.
        project: ``workspace/project``, or None (offline and debug modes).
        token: the API token handed to the client (server modes), or None.
        secrets: every credential to remove from messages.
        data_dir: Neptune's local directory.
    """

    def __init__(
        self,
        sdk: ModuleType,
        mode: str,
        project: str | None,
        token: Secret | None,
        secrets: list[Secret],
        data_dir: Path,
    ) -> None:
        self.sdk = sdk
        self.mode = mode
        self.project = project
        self._token = token
        self._secrets = secrets
        self.data_dir = data_dir
        self._lock = threading.RLock()
        self._project_obj: Any = None

    def clean(self, text: str) -> str:
        """``text`` with every secret replaced by ``***``."""
        for secret in self._secrets:
            text = text.replace(secret.value, "***")
        return redact(text)

    @contextlib.contextmanager
    def errors(self, what: str, missing: bool = False, quiet: bool = False) -> Iterator[None]:
        """Map the client's errors to trackkit's, with secrets and colour codes removed.

        ``missing`` maps the client's not-found errors to NotFound. ``quiet`` silences the
        client's warnings (its model-registry deprecation notice), only around calls made from
        the user's thread: ``warnings.catch_warnings`` is process-wide.
        """
        exceptions = self.sdk.exceptions
        try:
            if quiet:
                with warnings.catch_warnings():
                    for category in self._warnings():
                        warnings.simplefilter("ignore", category)
                    yield
            else:
                yield
        except TrackkitError:
            raise
        except Exception as e:
            plain = " ".join(_ANSI.sub("", f"{type(e).__name__}: {e}").split())
            text = self.clean(plain)
            not_found = tuple(
                t for name in _NOT_FOUND if isinstance(t := getattr(exceptions, name, None), type)
            )
            if missing and isinstance(e, not_found):
                raise NotFound(f"{what}: {text}") from e
            metadata = getattr(exceptions, "MetadataInconsistency", None)
            if isinstance(metadata, type) and isinstance(e, metadata):
                raise InvalidInput(f"{what}: {text}") from e
            # not a TrackkitError: the core's handling of an unreachable service applies (the
            # run goes on locally, its journal is retried); a message that held a secret does
            # not keep the original exception either
            raise NeptuneClientError(f"{what}: {text}") from (e if text == plain else None)

    def _warnings(self) -> tuple[type[Warning], ...]:
        module = import_sdk("neptune.common.warnings", extra="neptune", purpose="neptune")
        names = ("NeptuneDeprecationWarning", "NeptuneWarning", "NeptuneUnsupportedValue")
        return tuple(getattr(module, n) for n in names if hasattr(module, n))

    @contextlib.contextmanager
    def data_directory(self) -> Iterator[None]:
        """Neptune reads its data directory from the environment when an object starts."""
        with _ENV_LOCK:
            route_sdk_logs()
            saved = os.environ.get("NEPTUNE_DATA_DIRECTORY")
            os.environ["NEPTUNE_DATA_DIRECTORY"] = str(self.data_dir)
            try:
                yield
            finally:
                if saved is None:
                    os.environ.pop("NEPTUNE_DATA_DIRECTORY", None)
                else:
                    os.environ["NEPTUNE_DATA_DIRECTORY"] = saved

    def connection(self, read_only: bool = False) -> dict[str, Any]:
        """The options every client object is opened with (mode, project, token)."""
        options: dict[str, Any] = {"mode": "read-only" if read_only else self.mode}
        if self.project:
            options["project"] = self.project
        if self._token is not None:
            options["api_token"] = self._token.value
        return options

    def project_object(self) -> Any:
        """The client's project object (opened read-only on first use)."""
        with self._lock:
            if self._project_obj is None:
                options = self.connection(read_only=True)
                with self.errors("open the Neptune project", quiet=True):
                    self._project_obj = self.sdk.init_project(**options)
            return self._project_obj

    def stop(self, obj: Any) -> None:
        """Stop a client object, ignoring its failure (closing must go on)."""
        with contextlib.suppress(Exception), self.errors("stop a Neptune object"):
            obj.stop()

    def close(self) -> None:
        with self._lock:
            project, self._project_obj = self._project_obj, None
        if project is not None:
            self.stop(project)
