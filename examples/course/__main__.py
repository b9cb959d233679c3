"""Every course script in the course's order, in one process::

    python -m examples.course

The same as running ``python -m examples.course.<name>`` for each name of
``examples.course.SCRIPTS`` in turn (the scripts share one tracker, so this also works where
nothing survives the process, e.g. Neptune's debug mode).
"""

from __future__ import annotations

import importlib
from typing import Any

import trackkit
from examples.course import SCRIPTS


def main(tracker: trackkit.Tracker | None = None) -> dict[str, Any]:
    results = {}
    for name in SCRIPTS:
        print(f"== {name}")
        script = importlib.import_module(f"examples.course.{name}")
        results[name] = script.main(tracker)
    return results


if __name__ == "__main__":
    main()
