"""The W&B SDK's errors in trackkit's terms: "not found" becomes NotFound, a config conflict
InvalidInput; secrets are redacted from the message."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from trackkit._secrets import redact
from trackkit.errors import InvalidInput, NotFound, TrackkitError

_NOT_FOUND = re.compile(r"not found|does not exist|could not find|no such", re.IGNORECASE)


@contextlib.contextmanager
def mapped(what: str) -> Iterator[None]:
    """Turn the SDK's "not found" errors into NotFound and config conflicts into InvalidInput."""
    try:
        yield
    except TrackkitError:
        raise
    except Exception as e:
        text = redact(str(e))
        if type(e).__name__ == "ConfigError":
            raise InvalidInput(f"{what}: {text}") from e
        if _NOT_FOUND.search(text):
            raise NotFound(f"{what}: {text}") from e
        raise
