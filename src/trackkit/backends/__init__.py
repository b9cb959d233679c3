"""The built-in backends: plugins like any other, declared in pyproject.toml's entry points.

Nothing here is imported by ``import trackkit``; each backend is loaded by the plugin manager.
"""

from __future__ import annotations
