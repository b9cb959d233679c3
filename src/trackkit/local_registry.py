"""A model registry in a local sqlite file, for backends whose own registry is out of reach.

Offline modes (W&B offline, Neptune offline) keep registering, aliasing and loading models
here, with the same rules as a server registry: versions numbered from 1 per model, one
version per alias (setting an alias moves it), descriptions and tags of models and versions. The backend also defers each
call with :meth:`trackkit.Tracker.defer`, so ``trackkit sync`` repeats it on the real registry.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path

from trackkit.entities import ModelVersion, RegisteredModel
from trackkit.errors import NotFound

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions(
    name TEXT, version INTEGER, source TEXT, run_id TEXT, description TEXT, created REAL,
    PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS aliases(
    name TEXT, alias TEXT, version INTEGER, PRIMARY KEY (name, alias));
CREATE TABLE IF NOT EXISTS models(name TEXT PRIMARY KEY, description TEXT);
CREATE TABLE IF NOT EXISTS version_tags(
    name TEXT, version INTEGER, key TEXT, value TEXT, PRIMARY KEY (name, version, key));
CREATE TABLE IF NOT EXISTS model_tags(
    name TEXT, key TEXT, value TEXT, PRIMARY KEY (name, key));
"""
# each statement is IF NOT EXISTS: a registry file written before the models, version_tags
# and model_tags tables existed opens as it is and gains them


class LocalRegistry:
    """Registered models, versions and aliases in ``path`` (created if missing)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def _row(self, row: tuple[str, int, str, str | None, str | None, float]) -> ModelVersion:
        name, version = row[0], row[1]
        aliases = self._db.execute(
            "SELECT alias FROM aliases WHERE name = ? AND version = ? ORDER BY alias",
            (name, version),
        ).fetchall()
        tags = self._db.execute(
            "SELECT key, value FROM version_tags WHERE name = ? AND version = ? ORDER BY key",
            (name, version),
        ).fetchall()
        return ModelVersion(
            name=name,
            version=version,
            aliases=tuple(a for (a,) in aliases),
            run_id=row[3],
            source=row[2],
            description=row[4],
            created_at=datetime.fromtimestamp(row[5], tz=timezone.utc),
            tags=dict(tags),
        )

    def _one(self, name: str, version: int) -> ModelVersion:
        row = self._db.execute(
            "SELECT name, version, source, run_id, description, created FROM versions "
            "WHERE name = ? AND version = ?",
            (name, version),
        ).fetchone()
        if row is None:
            raise NotFound(f"registered model {name!r} has no version {version}")
        return self._row(row)

    def create_model_version(
        self, name: str, source: str, run_id: str | None, description: str | None
    ) -> ModelVersion:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            (last,) = self._db.execute(
                "SELECT COALESCE(MAX(version), 0) FROM versions WHERE name = ?", (name,)
            ).fetchone()
            self._db.execute(
                "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?)",
                (
                    name,
                    last + 1,
                    source,
                    run_id,
                    description,
                    datetime.now(timezone.utc).timestamp(),
                ),
            )
            self._db.execute("COMMIT")
            return self._one(name, last + 1)

    def get_model_version(self, name: str, version: int) -> ModelVersion:
        with self._lock:
            return self._one(name, version)

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        with self._lock:
            row = self._db.execute(
                "SELECT version FROM aliases WHERE name = ? AND alias = ?", (name, alias)
            ).fetchone()
            if row is None:
                raise NotFound(f"registered model {name!r} has no alias {alias!r}")
            return self._one(name, row[0])

    def list_model_versions(self, name: str) -> list[ModelVersion]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, version, source, run_id, description, created FROM versions "
                "WHERE name = ? ORDER BY version",
                (name,),
            ).fetchall()
            if not rows:
                raise NotFound(f"no registered model named {name!r}")
            return [self._row(r) for r in rows]

    def list_registered_models(self) -> list[RegisteredModel]:
        """Every registered model, by name, with its description, aliases, latest version and
        tags."""
        with self._lock:
            latest = self._db.execute(
                "SELECT name, MAX(version) FROM versions GROUP BY name ORDER BY name"
            ).fetchall()
            aliases: dict[str, dict[str, int]] = {}
            for name, alias, version in self._db.execute(
                "SELECT name, alias, version FROM aliases ORDER BY name, alias"
            ):
                aliases.setdefault(name, {})[alias] = version
            described = dict(self._db.execute("SELECT name, description FROM models").fetchall())
            tags: dict[str, dict[str, str]] = {}
            for name, key, value in self._db.execute(
                "SELECT name, key, value FROM model_tags ORDER BY name, key"
            ):
                tags.setdefault(name, {})[key] = value
        return [
            RegisteredModel(
                name=name,
                description=described.get(name),
                aliases=aliases.get(name, {}),
                latest_version=last,
                tags=tags.get(name, {}),
            )
            for name, last in latest
        ]

    def set_model_alias(self, name: str, alias: str, version: int) -> None:
        with self._lock:
            self._one(name, version)
            self._db.execute(
                "INSERT OR REPLACE INTO aliases VALUES (?, ?, ?)", (name, alias, version)
            )

    def delete_model_alias(self, name: str, alias: str) -> None:
        with self._lock:
            deleted = self._db.execute(
                "DELETE FROM aliases WHERE name = ? AND alias = ?", (name, alias)
            ).rowcount
            if not deleted:
                raise NotFound(f"registered model {name!r} has no alias {alias!r}")

    def update_model_version(self, name: str, version: int, description: str) -> ModelVersion:
        with self._lock:
            self._one(name, version)
            self._db.execute(
                "UPDATE versions SET description = ? WHERE name = ? AND version = ?",
                (description, name, version),
            )
            return self._one(name, version)

    def update_registered_model(self, name: str, description: str) -> RegisteredModel:
        with self._lock:
            if (
                self._db.execute("SELECT 1 FROM versions WHERE name = ?", (name,)).fetchone()
                is None
            ):
                raise NotFound(f"no registered model named {name!r}")
            self._db.execute("INSERT OR REPLACE INTO models VALUES (?, ?)", (name, description))
        return next(m for m in self.list_registered_models() if m.name == name)

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        """Set the tag ``key`` of the registered model ``name`` (one with versions) to ``value``."""
        with self._lock:
            if (
                self._db.execute("SELECT 1 FROM versions WHERE name = ?", (name,)).fetchone()
                is None
            ):
                raise NotFound(f"no registered model named {name!r}")
            self._db.execute(
                "INSERT OR REPLACE INTO model_tags VALUES (?, ?, ?)", (name, key, value)
            )

    def set_model_version_tag(self, name: str, version: int, key: str, value: str) -> None:
        with self._lock:
            self._one(name, version)
            self._db.execute(
                "INSERT OR REPLACE INTO version_tags VALUES (?, ?, ?, ?)",
                (name, version, key, value),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
