"""Registered models as Neptune Model and ModelVersion objects (debug mode and servers).

A registered model is a Model object named by ``sys/name``; its aliases are the fields
``trackkit/aliases/<alias>`` on it (the source of truth), mirrored on each version as the
StringSet ``trackkit/aliases`` and, for the stage aliases, as the version's stage. Offline, the
client cannot create model objects: the core keeps the registry then (the backend's
``offline_registry``), and this module is not used. See docs/neptune.md, "Registry".
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from trackkit.backends.neptune.client import NeptuneClientError
from trackkit.backends.neptune.keys import F_DESCRIPTION
from trackkit.backends.neptune.view import as_datetime, flatten_structure
from trackkit.entities import ModelVersion, RegisteredModel
from trackkit.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from trackkit.backends.neptune.client import NeptuneClient

#: registry aliases kept as Neptune stages too, strongest first
STAGES = ("production", "staging", "archived")
#: where a version keeps its tags (``set_model_version_tag``): one field per key
_TAGS = "trackkit/tags/"


class NeptuneRegistry:
    """The registry primitives of the backend, on the client's model objects."""

    def __init__(self, client: NeptuneClient) -> None:
        self._client = client
        self._lock = threading.RLock()
        self._models: dict[str, tuple[Any, dict[int, Any]]] = {}

    @property
    def _debug(self) -> bool:
        return self._client.mode == "debug"

    def objects(self, name: str, create: bool = False) -> tuple[Any, dict[int, Any]]:
        """The model object of ``name`` and its versions' objects (opened as needed)."""
        with self._lock:
            found = self._models.get(name)
        if found is not None:
            return found
        model = None if self._debug else self._find_server_model(name)
        if model is None:
            if not create:
                raise NotFound(f"no registered model named {name!r}")
            model = self._create_model(name)
        entry: tuple[Any, dict[int, Any]] = (model, {})
        with self._lock:
            return self._models.setdefault(name, entry)

    def _create_model(self, name: str) -> Any:
        client = self._client
        key = re.sub(r"[^A-Z0-9]", "", name.upper())[:8] or "MODEL"
        conflict = getattr(client.sdk.exceptions, "NeptuneModelKeyAlreadyExistsError", None)
        for attempt in range(10):
            candidate = key if attempt == 0 else f"{key}{attempt + 1}"
            try:
                with client.data_directory(), client.errors(f"create model {name!r}", quiet=True):
                    model = client.sdk.init_model(key=candidate, name=name, **client.connection())
                    model["trackkit/name"] = name
                    return model
            except NeptuneClientError as e:
                if conflict is None or not isinstance(e.__cause__, conflict):
                    raise
        raise InvalidInput(f"no free Neptune model key for {name!r} (tried {key}..{key}10)")

    def _find_server_model(self, name: str) -> Any:
        client = self._client
        with client.errors("list models", quiet=True):
            rows = (
                client.project_object()
                .fetch_models_table(columns=["sys/name"], progress_bar=False)
                .to_rows()
            )
        for row in rows:
            if row.get_attribute_value("sys/name") == name:
                with client.data_directory(), client.errors(f"open model {name!r}", True, True):
                    return client.sdk.init_model(
                        with_id=row.get_attribute_value("sys/id"), **client.connection()
                    )
        return None

    def _version_numbers(self, name: str) -> list[int]:
        model, versions = self.objects(name)
        if self._debug:
            return sorted(versions)
        with self._client.errors(f"list versions of {name!r}", quiet=True):
            rows = model.fetch_model_versions_table(columns=["sys/id"], progress_bar=False)
            ids = [str(r.get_attribute_value("sys/id")) for r in rows.to_rows()]
        return sorted(int(i.rsplit("-", 1)[1]) for i in ids if re.search(r"-\d+$", i))

    def _version_object(self, name: str, number: int) -> Any:
        client = self._client
        model, versions = self.objects(name)
        if number in versions:
            return versions[number]
        if self._debug or number not in self._version_numbers(name):
            raise NotFound(f"registered model {name!r} has no version {number}")
        with client.errors("read the model id"):
            model_id = model["sys/id"].fetch()
        with (
            client.data_directory(),
            client.errors(f"open version {number} of {name!r}", True, True),
        ):
            obj = client.sdk.init_model_version(
                with_id=f"{model_id}-{number}", **client.connection()
            )
        versions[number] = obj
        return obj

    def _aliases(self, name: str) -> dict[str, int]:
        model, _ = self.objects(name)
        with self._client.errors(f"read aliases of {name!r}"):
            if "aliases" not in model.get_structure().get("trackkit", {}):
                return {}
            return {a: int(n) for a, n in model["trackkit/aliases"].fetch().items()}

    def _model_version(self, name: str, number: int, aliases: Mapping[str, int]) -> ModelVersion:
        obj = self._version_object(name, number)
        with self._client.errors(f"read version {number} of {name!r}"):
            fields = flatten_structure(obj.fetch())
            structure = flatten_structure(obj.get_structure())

            def read(path: str) -> Any:
                if path in fields:
                    return fields[path]
                return structure[path].fetch() if path in structure else None

            description = read(F_DESCRIPTION)
            return ModelVersion(
                name=name,
                version=number,
                aliases=tuple(sorted(a for a, n in aliases.items() if n == number)),
                run_id=read("trackkit/run_id") or None,
                source=str(read("trackkit/source") or ""),
                description=description or None,
                created_at=as_datetime(read("trackkit/created")),
                tags={
                    path[len(_TAGS) :]: str(read(path))
                    for path in sorted({*fields, *structure})
                    if path.startswith(_TAGS)
                },
            )

    def create_version(
        self, name: str, source: str, run_id: str | None, description: str | None
    ) -> ModelVersion:
        client = self._client
        model, versions = self.objects(name, create=True)
        with client.data_directory(), client.errors(f"register a version of {name!r}", quiet=True):
            obj = client.sdk.init_model_version(
                model=str(model["sys/id"].fetch()), **client.connection()
            )
            if self._debug:  # in-memory versions are all numbered 1: count them here
                number = max(versions, default=0) + 1
            else:
                number = int(str(obj["sys/id"].fetch()).rsplit("-", 1)[1])
            versions[number] = obj
            obj["trackkit/version"] = number
            obj["trackkit/source"] = source
            if run_id:
                obj["trackkit/run_id"] = run_id
            if description:
                obj[F_DESCRIPTION] = description
            obj["trackkit/created"] = datetime.now(timezone.utc)
        return self._model_version(name, number, {})

    def get_version(self, name: str, version: int) -> ModelVersion:
        return self._model_version(name, version, self._aliases(name))

    def get_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        aliases = self._aliases(name)
        if alias not in aliases:
            raise NotFound(f"registered model {name!r} has no alias {alias!r}")
        return self._model_version(name, aliases[alias], aliases)

    def list_versions(self, name: str) -> list[ModelVersion]:
        aliases = self._aliases(name)
        return [self._model_version(name, n, aliases) for n in self._version_numbers(name)]

    def set_alias(self, name: str, alias: str, version: int) -> None:
        self._version_object(name, version)  # NotFound for a missing version
        aliases = self._aliases(name)
        previous = aliases.get(alias)
        model, _ = self.objects(name)
        with self._client.errors(f"set alias {alias!r} of {name!r}"):
            model[f"trackkit/aliases/{alias}"] = version
        aliases[alias] = version
        self._mirror_aliases(name, version, aliases, newest=alias)
        if previous is not None and previous != version:
            self._mirror_aliases(name, previous, aliases)

    def delete_alias(self, name: str, alias: str) -> None:
        aliases = self._aliases(name)
        if alias not in aliases:
            raise NotFound(f"registered model {name!r} has no alias {alias!r}")
        number = aliases.pop(alias)
        model, _ = self.objects(name)
        with self._client.errors(f"delete alias {alias!r} of {name!r}"):
            del model[f"trackkit/aliases/{alias}"]
        self._mirror_aliases(name, number, aliases)

    def _mirror_aliases(
        self, name: str, number: int, aliases: Mapping[str, int], newest: str | None = None
    ) -> None:
        """Show a version's aliases on it, as a set and as a stage: the stage alias it was just
        given (``newest``), else the strongest stage alias it holds, else ``none``."""
        obj = self._version_object(name, number)
        held = sorted(a for a, n in aliases.items() if n == number)
        stage = newest if newest in STAGES else next((s for s in STAGES if s in held), "none")
        with self._client.errors(f"update version {number} of {name!r}", quiet=True):
            obj.change_stage(stage)
            if "aliases" in obj.get_structure().get("trackkit", {}):
                obj["trackkit/aliases"].clear()
            if held:
                obj["trackkit/aliases"].add(held)

    def set_stage(self, name: str, version: int, stage: str) -> None:
        """Make ``stage`` the version's Neptune stage (a stage transition asked for it).

        Raises:
            InvalidInput: ``stage`` is not one of :data:`STAGES`.
            NotFound: the version does not exist.
        """
        if stage not in STAGES:
            raise InvalidInput(f"a Neptune stage is one of {', '.join(STAGES)}, not {stage!r}")
        obj = self._version_object(name, version)
        with self._client.errors(f"set the stage of version {version} of {name!r}", quiet=True):
            obj.change_stage(stage)

    def update_version(self, name: str, version: int, description: str) -> ModelVersion:
        obj = self._version_object(name, version)
        with self._client.errors(f"update version {version} of {name!r}"):
            obj[F_DESCRIPTION] = description
        return self._model_version(name, version, self._aliases(name))

    def update_model(self, name: str, description: str) -> RegisteredModel:
        """Set the model object's own description (``sys/description``)."""
        model, _ = self.objects(name)
        with self._client.errors(f"update registered model {name!r}"):
            model[F_DESCRIPTION] = description
        numbers = self._version_numbers(name)
        return RegisteredModel(
            name=name,
            description=description or None,
            aliases=dict(sorted(self._aliases(name).items())),
            latest_version=max(numbers, default=None),
        )

    def _names(self) -> list[str]:
        """The registered models: in debug mode those of this process, else the server's."""
        if self._debug:
            with self._lock:
                return sorted(self._models)
        with self._client.errors("list models"):
            rows = (
                self._client.project_object()
                .fetch_models_table(columns=["sys/name"], progress_bar=False)
                .to_rows()
            )
        return sorted({str(r.get_attribute_value("sys/name")) for r in rows})

    def list_models(self) -> list[RegisteredModel]:
        """Every registered model with its description, aliases, latest version and tags (the
        model's ``sys/tags`` labels: ``key:value`` splits at its first ``:``, a plain label
        maps to ``""``)."""
        found = []
        for name in self._names():
            model, _ = self.objects(name)
            with self._client.errors(f"read registered model {name!r}"):
                structure = flatten_structure(model.get_structure())
                labels = structure["sys/tags"].fetch() if "sys/tags" in structure else ()
                description = (
                    structure[F_DESCRIPTION].fetch() if F_DESCRIPTION in structure else None
                )
            numbers = self._version_numbers(name)
            found.append(
                RegisteredModel(
                    name=name,
                    description=description or None,
                    aliases=dict(sorted(self._aliases(name).items())),
                    latest_version=max(numbers, default=None),
                    tags=dict(str(label).partition(":")[::2] for label in labels),
                )
            )
        return found

    def set_version_tag(self, name: str, version: int, key: str, value: str) -> None:
        obj = self._version_object(name, version)
        with self._client.errors(f"tag version {version} of {name!r}"):
            obj[f"{_TAGS}{key}"] = value

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        """Set a tag of the model object: the label ``key:value`` in its ``sys/tags`` (as
        :meth:`list_models` reads them), replacing the key's earlier label."""
        if ":" in key:
            raise InvalidInput(
                f"a Neptune registered model tag key cannot contain ':' (the model keeps "
                f"'key:value' labels), got {key!r}"
            )
        model, _ = self.objects(name)
        label = f"{key}:{value}"
        with self._client.errors(f"tag registered model {name!r}"):
            structure = flatten_structure(model.get_structure())
            labels = structure["sys/tags"].fetch() if "sys/tags" in structure else ()
            stale = [str(t) for t in labels if str(t).partition(":")[0] == key and t != label]
            if stale:
                model["sys/tags"].remove(stale)
            model["sys/tags"].add(label)

    def close(self) -> None:
        """Stop every model and version object this registry opened."""
        with self._lock:
            objects = [
                o for model, versions in self._models.values() for o in (model, *versions.values())
            ]
            self._models.clear()
        for obj in objects:
            self._client.stop(obj)
