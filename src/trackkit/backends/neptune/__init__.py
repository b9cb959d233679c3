"""The Neptune backend, a trackkit plugin (entry point ``neptune``).

``backend`` holds the adapter (``NeptuneBackend``), ``client`` the connection to the neptune
client (options, secrets, errors) and ``logs`` keeps the client's log lines off stdout;
``keys`` is the field layout of a run, ``view`` reads a run's fields back and decodes that
layout, ``offline`` reads Neptune's offline logs from disk, ``query`` translates a search into
Neptune's query language, ``registry`` is the model registry on Neptune's model objects, and
``export`` turns offline runs into the records ``trackkit copy`` writes to another backend.
None imports neptune at module level. See docs/neptune.md.
"""

from __future__ import annotations

from trackkit import hookimpl
from trackkit.backend import Backend
from trackkit.backends.neptune.backend import NeptuneBackend
from trackkit.backends.neptune.export import copy_runs, source_run
from trackkit.backends.neptune.keys import KeyPaths, default_path, key_of
from trackkit.backends.neptune.offline import offline_run_dirs, read_offline_runs
from trackkit.backends.neptune.query import to_nql
from trackkit.backends.neptune.view import NeptuneRunData, RunView, run_view

__all__ = [
    "KeyPaths",
    "NeptuneBackend",
    "NeptuneRunData",
    "RunView",
    "copy_runs",
    "default_path",
    "key_of",
    "offline_run_dirs",
    "read_offline_runs",
    "run_view",
    "source_run",
    "to_nql",
    "trackkit_register_backends",
]


@hookimpl
def trackkit_register_backends() -> list[type[Backend]]:
    return [NeptuneBackend]
