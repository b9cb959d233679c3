"""Keeping credentials out of reprs, logs, messages and logged data."""

from __future__ import annotations

import os
import re

# scheme://user:password@host  ->  scheme://user:***@host; the password runs to the last '@'
# before the host, as HTTP clients split it
_USERINFO = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^/\s]*)@"
)
# ?token=...&password=... in query strings
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&](?:[A-Za-z_]*(?:token|password|passwd|secret|api_?key|key))=)(?P<val>[^&#\s]*)",
    re.IGNORECASE,
)

MASK = "***"
_SECRET_ENV = re.compile(r"(PASSWORD|TOKEN|API_KEY|SECRET)", re.IGNORECASE)


def _secret_env_values() -> list[str]:
    values = {v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= 4}
    return sorted(values, key=len, reverse=True)


def redact(text: str) -> str:
    """Mask passwords in URIs, secret query parameters and secret env values inside ``text``."""
    for value in _secret_env_values():
        text = text.replace(value, MASK)
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['key']}{MASK}", text)
