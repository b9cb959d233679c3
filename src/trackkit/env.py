"""Reading trackkit's environment variables: one parser for each kind of setting."""

from __future__ import annotations

import math
import os

from trackkit.errors import InvalidInput

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def flag(name: str) -> bool:
    """Whether the variable ``name`` is set to a true value (1, true, yes or on; any case)."""
    return os.environ.get(name, "").strip().lower() in TRUE


def switch(name: str, default: bool) -> bool:
    """The variable ``name`` as on (1, true, yes, on) or off (0, false, no, off; any case).

    Unset or empty gives ``default``.

    Raises:
        InvalidInput: any other value.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    on = _on_off(raw)
    if on is None:
        raise InvalidInput(f"${name} must be one of {', '.join(TRUE + FALSE)}, got {raw!r}")
    return on


def _on_off(text: str) -> bool | None:
    """``text`` as on (True) or off (False), in any case; None when it is neither."""
    word = text.strip().lower()
    return True if word in TRUE else False if word in FALSE else None


def on_off(name: str, value: object) -> bool:
    """An on/off option, given in code (``True``/``False``) or as text, as ``-o name=false``
    passes it: 1, true, yes, on or 0, false, no, off, in any case.

    Raises:
        InvalidInput: any other value (``"false"`` is never taken as true), naming the option.
    """
    if isinstance(value, bool):
        return value
    on = _on_off(value) if isinstance(value, str) else None
    if on is not None:
        return on
    raise InvalidInput(
        f"{name} must be True or False (as text: {', '.join(TRUE + FALSE)}), got {value!r}"
    )


def seconds(name: str, default: float) -> float:
    """The variable ``name`` as a positive, finite number of seconds, or ``default`` if unset.

    Raises:
        InvalidInput: the value is not a number, or is not positive and finite.
    """
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(f"${name} must be a number of seconds, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise InvalidInput(f"${name} must be a positive, finite number of seconds, got {raw!r}")
    return value
