"""Pluggy markers and hook specifications for project ``trackkit``.

A plugin is a module (or object) with hook implementations, declared in its package's
``pyproject.toml`` under the entry-point group ``trackkit``::

    # my_backend.py
    import trackkit
    from trackkit.backend import Backend

    class MyBackend(Backend):
        name = "mine"
        ...

    @trackkit.hookimpl
    def trackkit_register_backends():
        return [MyBackend]

    # pyproject.toml
    [project.entry-points.trackkit]
    mine = "my_backend"
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from trackkit.backend import Backend

PROJECT = "trackkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def trackkit_register_backends() -> list[type[Backend]]:  # type: ignore[empty-body]
    """Return the Backend classes this plugin provides (each with a unique ``name``)."""
