"""Keeping credentials out of reprs, logs, messages, exception chains and journals.

:func:`redact` masks secrets inside any text; :func:`scrub` gives an exception whose text, and
whose chained causes' text, went through :func:`redact` (for ``raise ... from scrub(e)``);
:func:`without_password` is a URI fit to be written down; :class:`RedactingFilter` redacts
every record of trackkit's logger, its traceback included. Masking too much is preferred to
masking too little: a password may hold any character, so the mask runs to the last ``@``.
"""

from __future__ import annotations

import logging
import os
import re
from urllib.parse import quote, quote_plus

MASK = "***"

_SCHEME = r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)"
# scheme://user:password@host -> scheme://user:***@host. The password may hold '@', ':', '/',
# '%' or quotes, so it runs to the last '@' of the whitespace-free token: HTTP clients split the
# user information at the last '@' too. A path holding '@' is over-masked, never leaked.
_USERINFO = re.compile(_SCHEME + r"(?P<user>[^:/\s]*):(?P<pw>\S*)@")
# scheme://<token>@host: user information without a password, long enough to be a token
_TOKEN_USER = re.compile(_SCHEME + r"(?P<user>[^:/@\s]{16,})@")
_SECRET_NAME = (
    r"[\w.\-]*(?:token|password|passwd|pwd|secret|api_?key|apikey|key|signature|sig|"
    r"credential|credentials|auth)"
)
# ?token=...&password=... in query strings (also X-Amz-Signature=, sig=, ...)
_QUERY_SECRET = re.compile(rf"(?P<key>[?&;]{_SECRET_NAME}=)(?P<val>[^&#\s]*)", re.IGNORECASE)
# password=... outside a query string (DSNs such as "host=db password=..."), and
# 'api_key': '...' / "token": "..." in reprs of mappings and in JSON
_ASSIGNED_SECRET = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd|secret|token|api_?key|apikey|access_key|secret_key)=)"
    r"(?P<val>[^\s&#,;'\"]+)",
    re.IGNORECASE,
)
_QUOTED_SECRET = re.compile(
    r"(?P<key>(?P<q>['\"])[\w.\-]*(?:token|password|passwd|secret|api_?key|apikey)(?P=q)\s*:\s*)"
    r"(?P<q2>['\"])(?P<val>(?:\\.|(?!(?P=q2)).)*)(?P=q2)",
    re.IGNORECASE,
)
# an Authorization header's credentials (base64 of user:password, a bearer token); a word of
# plain lowercase prose after "Basic" is left alone
_AUTH_HEADER = re.compile(
    r"\b(?P<key>Basic|Bearer)\s+(?P<val>(?=[\w+/=.~\-]*[A-Z0-9+/=.~_\-])[\w+/=.~\-]{8,})"
)

_SECRET_ENV = re.compile(r"(PASSWORD|PASSWD|TOKEN|API_KEY|APIKEY|SECRET)", re.IGNORECASE)


def _secret_env_values() -> list[str]:
    values: set[str] = set()
    for name, value in os.environ.items():
        if _SECRET_ENV.search(name) and len(value) >= 4:
            # a password from the environment may also show up percent-encoded inside a URI
            values.update((value, quote(value, safe=""), quote(value), quote_plus(value)))
    return sorted(values, key=len, reverse=True)


def redact(text: str) -> str:
    """Mask passwords and tokens in URIs, secret query parameters and assignments,
    Authorization credentials and the values of secret-named environment variables."""
    for value in _secret_env_values():
        text = text.replace(value, MASK)
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _TOKEN_USER.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    text = _QUERY_SECRET.sub(lambda m: f"{m['key']}{MASK}", text)
    text = _ASSIGNED_SECRET.sub(lambda m: f"{m['key']}{MASK}", text)
    text = _QUOTED_SECRET.sub(lambda m: f"{m['key']}{m['q2']}{MASK}{m['q2']}", text)
    return _AUTH_HEADER.sub(lambda m: f"{m['key']} {MASK}", text)


def without_password(uri: str) -> str:
    """``uri`` with no password or token in its user information and no secret query values:
    what may be written to a journal (credentials come from the environment again)."""
    uri = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}@" if m["user"] else m["scheme"], uri)
    uri = _TOKEN_USER.sub(lambda m: m["scheme"], uri)
    return _QUERY_SECRET.sub(lambda m: m["key"], uri)


# -- exceptions ----------------------------------------------------------------------------------
_STAND_INS: dict[type[BaseException], type[BaseException]] = {}


def _text(error: BaseException) -> str | None:
    try:
        return str(error)
    except Exception:  # printed as "<exception str() failed>": nothing of it shows
        return None


def _leaks(error: BaseException) -> bool:
    text = _text(error)
    notes = getattr(error, "__notes__", None)
    texts = [text] if text is not None else []
    if isinstance(notes, list):
        texts += [n for n in notes if isinstance(n, str)]
    return any(redact(t) != t for t in texts)


def _stand_in_class(kind: type[BaseException]) -> type[BaseException]:
    """A subclass of ``kind`` with its name and module, whose text is set per instance.

    A subclass keeps ``except kind`` and ``isinstance`` working on the chain; a type that
    cannot be subclassed gets a plain stand-in of the same name.
    """
    found = _STAND_INS.get(kind)
    if found is not None:
        return found

    def __str__(self: BaseException) -> str:
        return str(getattr(self, "_trackkit_text", ""))

    def __repr__(self: BaseException) -> str:
        return f"{type(self).__name__}({getattr(self, '_trackkit_text', '')!r})"

    namespace = {
        "__str__": __str__,
        "__repr__": __repr__,
        "__module__": kind.__module__,
        "__qualname__": kind.__qualname__,
        "__doc__": "Stands in for an exception whose text held a secret (see trackkit docs).",
    }
    try:
        made: type[BaseException] = type(kind.__name__, (kind,), namespace)
        made.__new__(made)  # some types cannot be made without their own arguments
    except Exception:
        base: type[BaseException] = Exception if issubclass(kind, Exception) else BaseException
        made = type(kind.__name__, (base,), namespace)
    _STAND_INS[kind] = made
    return made


def _stand_in(error: BaseException, text: str) -> BaseException:
    cls = _stand_in_class(type(error))
    made = cls.__new__(cls)
    made.args = (text,)
    for name, value in list(getattr(error, "__dict__", {}).items()):
        try:  # attributes callers read (MLflow's ``message``, ``error_code``), redacted
            setattr(made, name, redact(value) if isinstance(value, str) else value)
        except Exception:  # a read-only attribute: the text above still holds
            continue
    made._trackkit_text = text  # type: ignore[attr-defined]
    notes = getattr(error, "__notes__", None)
    if isinstance(notes, list):
        made.__notes__ = [redact(n) if isinstance(n, str) else n for n in notes]  # type: ignore[attr-defined]
    return made


def scrub(error: BaseException) -> BaseException:
    """``error`` itself if no text in it or in its chain of causes holds a secret; else a
    stand-in of the same type name whose text (and whose chain's text) is redacted, keeping the
    original's traceback frames. Use it as ``raise TrackkitError(...) from scrub(e)``."""
    return _scrub(error, {})


def _scrub(error: BaseException, seen: dict[int, BaseException]) -> BaseException:
    if id(error) in seen:
        return seen[id(error)]
    seen[id(error)] = error  # a cycle in the chain ends here
    cause = None if error.__cause__ is None else _scrub(error.__cause__, seen)
    context = None if error.__context__ is None else _scrub(error.__context__, seen)
    if not _leaks(error) and cause is error.__cause__ and context is error.__context__:
        return error
    text = _text(error)
    made = _stand_in(error, "<exception str() failed>" if text is None else redact(text))
    made.__cause__, made.__context__ = cause, context
    made.__suppress_context__ = error.__suppress_context__
    made.__traceback__ = error.__traceback__
    seen[id(error)] = made
    return made


# -- logging -------------------------------------------------------------------------------------
class RedactingFilter(logging.Filter):
    """Redacts a record's message, and the exception it carries, before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format: leave it to logging's own error report
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and record.exc_info[1] is not None:
            error = scrub(record.exc_info[1])
            record.exc_info = (type(error), error, record.exc_info[2])
            record.exc_text = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def protect(logger: logging.Logger) -> logging.Logger:
    """Add a :class:`RedactingFilter` to ``logger`` (once) and return it."""
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())
    return logger


protect(logging.getLogger("trackkit"))
