"""Where each piece of a trackkit run sits in a Neptune run: the field layout.

This module is the one place the layout is written down (docs/neptune.md, "Where things go"):
the namespaces, trackkit's own fields, and how a key becomes a field path and back.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from trackkit.errors import InvalidInput
from trackkit.normalize import value_text

if TYPE_CHECKING:
    from trackkit.entities import ParamValue

PARAMS = "parameters"
METRICS = "metrics"
TAGS = "tags"
ARTIFACTS = "artifacts"
POINTS = "trackkit/points"  # points the metric series cannot take, as "[step, value]" texts
STEPS = "trackkit/steps"  # debug mode only: the steps Neptune's in-memory series forget
#: debug mode only: the timestamps (ms) Neptune's in-memory series forget, of the metric series
#: and of the points series
STAMPS = "trackkit/timestamps"
POINT_STAMPS = "trackkit/point_timestamps"
F_RUN_ID = "trackkit/run_id"
F_EXPERIMENT = "trackkit/experiment"
F_STATUS = "trackkit/status"
F_START = "trackkit/start_time"
F_END = "trackkit/end_time"
#: the parent run's id, for a nested run (``start_run(parent=...)``)
F_PARENT = "trackkit/parent_id"
#: Neptune's own fields a run shows
F_NAME = "sys/name"
F_FAILED = "sys/failed"
F_LABELS = "sys/tags"
F_DESCRIPTION = "sys/description"
#: the segment holding a key's own value when its path is already a namespace
SELF = "%"
#: Neptune keeps steps as float64: larger steps would be rounded in a series
MAX_EXACT_STEP = 2**53
#: a tag is mirrored into sys/tags as "key:value" while that label is this short
LABEL_MAX = 128
FIELD_PATH_MAX_BYTES = 1024
#: Neptune's Integer field
INT32 = (-(2**31), 2**31 - 1)
#: namespaces Neptune (or its client) fills itself, and trackkit's own
RESERVED_ROOTS = ("sys", "trackkit", "monitoring", "source_code")

_UNESCAPE = re.compile(r"%(25|2F)")


def escape_segment(text: str) -> str:
    """One path segment for ``text``: ``%`` becomes ``%25`` and ``/`` becomes ``%2F``."""
    return text.replace("%", "%25").replace("/", "%2F")


def unescape_segment(segment: str) -> str:
    return _UNESCAPE.sub(lambda m: "%" if m[1] == "25" else "/", segment)


def key_of(segments: Sequence[str]) -> str:
    """The trackkit key a field path (below its namespace) stands for."""
    parts = list(segments)
    if len(parts) > 1 and parts[-1] == SELF:
        parts.pop()
    return ".".join(unescape_segment(p) for p in parts)


class KeyPaths:
    """Where trackkit keys live below one Neptune namespace.

    A key's ``.``-parts become nested namespaces (``model.alpha`` -> ``model/alpha``), except
    where that would make one path both a field and a namespace: then parts stay together in
    one segment (``model.alpha`` when ``model`` is already a value), or a value whose path is
    already a namespace goes to the segment ``%`` below it (``model/%``). ``%`` and ``/`` in a
    part are escaped (``%25``, ``%2F``). :func:`key_of` turns any of these paths back into its key.
    """

    def __init__(self) -> None:
        self._fields: set[tuple[str, ...]] = set()
        self._namespaces: set[tuple[str, ...]] = set()
        self._placed: dict[str, tuple[str, ...]] = {}

    def add(self, path: tuple[str, ...]) -> None:
        """Record an existing field (read back from a run)."""
        self._fields.add(path)
        self._namespaces.update(path[:i] for i in range(1, len(path)))
        self._placed.setdefault(key_of(path), path)

    def path(self, key: str) -> tuple[str, ...]:
        """The field path of ``key``, placed on first use and stable afterwards."""
        found = self._placed.get(key)
        if found is None:
            found = self._place(key)
            self.add(found)
        return found

    def _place(self, key: str) -> tuple[str, ...]:
        parts = key.split(".")
        prefix: tuple[str, ...] = ()
        start = 0
        while True:
            for end in range(start + 1, len(parts) + 1):
                segment = escape_segment(".".join(parts[start:end]))
                if not segment:
                    continue
                here = (*prefix, segment)
                if end == len(parts):
                    return (*here, SELF) if here in self._namespaces else here
                # a value cannot hold a namespace, and the rest must not be an empty segment
                if here in self._fields or not ".".join(parts[end:]):
                    continue
                prefix, start = here, end
                break


def default_path(key: str) -> str:
    """The path of ``key`` in a run where it clashes with no other key (used in queries)."""
    return "/".join(KeyPaths().path(key))


def field_path(root: str, path: Sequence[str]) -> str:
    """The full field path of ``path`` below ``root``.

    Raises:
        InvalidInput: the path is over Neptune's 1024 bytes.
    """
    full = "/".join((root, *path))
    if len(full.encode()) > FIELD_PATH_MAX_BYTES:
        raise InvalidInput(
            f"the Neptune field path {full[:60]!r}... is over Neptune's limit of "
            f"{FIELD_PATH_MAX_BYTES} bytes; use a shorter name"
        )
    return full


def below(path: str, root: str) -> tuple[str, ...] | None:
    """The segments of ``path`` below the namespace ``root``, or None if it is not below it."""
    prefix = root + "/"
    return tuple(path[len(prefix) :].split("/")) if path.startswith(prefix) else None


def param_field_value(value: ParamValue) -> str | int | float | bool:
    """The value Neptune stores for a param: its own type where Neptune holds it exactly."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        # Neptune's Integer field is 32-bit (the client skips larger values): keep the text
        return value if INT32[0] <= value <= INT32[1] else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else value_text(value)
    return value
