"""The exception hierarchy: every error trackkit raises is a ``TrackkitError``."""

from __future__ import annotations


class TrackkitError(Exception):
    """Base class of every trackkit error."""


class UnknownBackendError(TrackkitError, LookupError):
    """No backend is registered under the requested name."""


class MissingDependencyError(TrackkitError, ImportError):
    """A backend's SDK (or a model library) is not installed; the message names the pip extra."""


class UnsupportedOperation(TrackkitError, NotImplementedError):
    """The backend cannot do this; the message names the backend, the operation and an alternative."""


class InvalidInput(TrackkitError, ValueError):
    """A key, value, step, path or name was rejected; the message names which and why."""


class BackendError(TrackkitError):
    """The backend's SDK failed; the original exception is chained as ``__cause__``."""


class JournalError(TrackkitError):
    """The local journal cannot be written (a full disk, a size limit, permissions, an I/O
    error): raised in strict mode, and when an artifact can be neither uploaded nor kept."""


class TrackkitWarning(UserWarning):
    """A documented normalization happened (a key renamed, a value truncated and kept whole)."""


class NotFound(TrackkitError, LookupError):
    """A run, experiment, registered model, version or alias does not exist."""
