"""The plugin manager: entry-point discovery on first use, blocking, the name -> backend map."""

from __future__ import annotations

import difflib
import os
import threading
from importlib import metadata
from typing import TYPE_CHECKING, cast

import pluggy

from trackkit import hookspecs
from trackkit.errors import TrackkitError, UnknownBackendError

if TYPE_CHECKING:
    from trackkit.backend import Backend

ENTRY_POINT_GROUP = hookspecs.PROJECT
BLOCK_ENV = "TRACKKIT_DISABLE_PLUGINS"

_lock = threading.Lock()
_manager: PluginManager | None = None


class PluginManager:
    """Wraps pluggy's manager; the rest of trackkit never touches ``pm.hook`` directly."""

    def __init__(self, *, load_entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.distributions: dict[str, tuple[str, str]] = {}
        for name in blocked_names():
            self.pm.set_blocked(name)
        if load_entry_points:
            self._load_entry_points()
        self._backends: dict[str, type[Backend]] | None = None
        self._providers: dict[str, str] = {}

    def _load_entry_points(self) -> None:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist else "?"
            if self.pm.is_blocked(ep.name):
                continue
            if self.pm.get_plugin(ep.name) is not None:
                other = self.distributions.get(ep.name, ("?", ""))[0]
                if other == dist:
                    continue  # the same distribution seen twice on sys.path
                raise TrackkitError(
                    f"two installed distributions declare the trackkit plugin {ep.name!r}: "
                    f"{other} and {dist}; uninstall one of them"
                )
            try:
                plugin = ep.load()
            except Exception as e:
                raise TrackkitError(
                    f"trackkit plugin {ep.name!r} (from {dist}) failed to load: {e!r}; "
                    f"fix or uninstall it, or block it with {BLOCK_ENV}={ep.name}"
                ) from e
            self.register(plugin, ep.name, dist, ep.dist.version if ep.dist else "?")

    def register(self, plugin: object, name: str, dist: str = "", version: str = "") -> None:
        """Register a plugin object (tests and embedding applications use this directly)."""
        self.pm.register(plugin, name=name)
        self.distributions[name] = (dist, version)
        self._backends = None

    def backends(self) -> dict[str, type[Backend]]:
        """The name -> Backend class map, built from every plugin's ``trackkit_register_backends``."""
        if self._backends is None:
            from trackkit.backend import Backend

            found: dict[str, tuple[type[Backend], str]] = {}
            # Each implementation is called on its own so a conflict can name both plugins.
            for impl in self.pm.hook.trackkit_register_backends.get_hookimpls():
                plugin_name = impl.plugin_name
                try:
                    provided = cast("list[object]", impl.function() or [])
                except Exception as e:
                    raise TrackkitError(
                        f"trackkit plugin {plugin_name!r} failed to register its backends: "
                        f"{e!r}; fix or uninstall it, or block it with {BLOCK_ENV}={plugin_name}"
                    ) from e
                for cls in provided:
                    if not (isinstance(cls, type) and issubclass(cls, Backend)):
                        raise TrackkitError(
                            f"plugin {plugin_name!r} registered {cls!r}, which is not a "
                            "trackkit.backend.Backend subclass"
                        )
                    if cls.name in found and found[cls.name][0] is not cls:
                        raise TrackkitError(
                            f"backend name {cls.name!r} is registered by plugins "
                            f"{found[cls.name][1]!r} and {plugin_name!r}; block one with "
                            f"{BLOCK_ENV}=<plugin name>"
                        )
                    found[cls.name] = (cls, plugin_name)
            self._backends = {name: cls for name, (cls, _) in sorted(found.items())}
            self._providers = {name: plugin for name, (_, plugin) in found.items()}
        return self._backends

    def provider(self, backend: str) -> str:
        """The name of the plugin that registers ``backend``."""
        self.backends()
        return self._providers.get(backend, "")

    def backend_class(self, name: str) -> type[Backend]:
        backends = self.backends()
        if name in backends:
            return backends[name]
        known = ", ".join(sorted(backends)) or "none (is trackkit installed? pip install -e .)"
        close = difflib.get_close_matches(name.lower(), list(backends), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "."
        raise UnknownBackendError(f"unknown trackkit backend {name!r}{hint} Available: {known}")

    def plugins(self) -> list[tuple[str, str, str]]:
        """(plugin name, distribution, version) for each registered (not blocked) plugin."""
        return [
            (name, *self.distributions.get(name, ("", "")))
            for name, plugin in self.pm.list_name_plugin()
            if plugin is not None
        ]


def blocked_names() -> list[str]:
    return [n.strip() for n in os.environ.get(BLOCK_ENV, "").split(",") if n.strip()]


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, created (and entry points loaded) on first use."""
    global _manager
    with _lock:
        if _manager is None:
            _manager = PluginManager()
        return _manager


def reset() -> None:
    """Forget the process-wide manager so the next lookup rediscovers plugins."""
    global _manager
    with _lock:
        _manager = None
