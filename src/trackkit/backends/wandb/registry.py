"""The W&B Registry (online): model artifacts linked into ``wandb-registry-model/<name>``.

W&B numbers a collection's versions from ``v0``, trackkit from 1; an alias sits on one version
of a collection. While the backend is offline the core keeps the registry locally and
``trackkit sync`` repeats each change here: version numbers given then refer to the local
registry, and are matched to W&B's by the model's source.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trackkit.backends.wandb.keys import MAX_NAME, MODEL_TYPE, URI_PREFIX, parse_time
from trackkit.backends.wandb.sdk_errors import mapped
from trackkit.entities import ModelVersion, RegisteredModel
from trackkit.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from trackkit.local_registry import LocalRegistry

REGISTRY_PROJECT = "wandb-registry-model"
#: the projects that hold W&B registries (not experiments)
REGISTRY_PREFIX = "wandb-registry-"
_ARTIFACT_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


def collection(name: str) -> str:
    """The W&B Registry collection of the registered model ``name``."""
    if not _ARTIFACT_NAME.fullmatch(name) or len(name) > MAX_NAME:
        raise InvalidInput(
            f"{name!r} cannot name a W&B Registry collection: use 1 to {MAX_NAME} letters, "
            "digits, '-', '_' or '.'"
        )
    return f"{REGISTRY_PROJECT}/{name}"


def _version_of(name: str, artifact: Any) -> ModelVersion:
    meta = (artifact.metadata or {}).get("trackkit") or {}
    version = str(artifact.version)
    if meta.get("ref"):
        source = f"{URI_PREFIX}{artifact.source_entity}/{artifact.source_project}/"
        source += f"{str(artifact.source_name).split(':')[0]}:{meta['ref']}"
    else:
        source = f"{URI_PREFIX}{artifact.source_qualified_name}"
    aliases = (a for a in artifact.aliases if a != "latest" and not re.fullmatch(r"v\d+", a))
    return ModelVersion(
        name=name,
        version=int(version.lstrip("v")) + 1,  # W&B numbers from v0, trackkit from 1
        aliases=tuple(sorted(aliases)),
        run_id=meta.get("run_id"),
        source=source,
        description=artifact.description or None,
        created_at=parse_time(artifact.created_at),
        tags={str(k): str(v) for k, v in (meta.get("tags") or {}).items()},
    )


def _ref(member: Any) -> Any:
    """The trackkit reference a registry version was logged with (None if not trackkit's)."""
    return ((member.metadata or {}).get("trackkit") or {}).get("ref")


class WandbRegistry:
    """Registry operations on W&B, through the public API ``api()`` returns.

    Args:
        api: returns the ``wandb.Api`` client (created on first use).
        model_store: where the backend keeps the model packages it logged.
        local_path: the registry file kept while offline (read only when ``from_offline``).
        from_offline: version numbers refer to the local registry (``trackkit sync``).
    """

    def __init__(
        self, api: Callable[[], Any], model_store: Path, local_path: Path, from_offline: bool
    ) -> None:
        self._api = api
        self._model_store = model_store
        self._local_path = local_path
        self._from_offline = from_offline
        self._local: LocalRegistry | None = None

    def _registry(self) -> LocalRegistry:
        """The registry kept offline, read when replaying it to map its version numbers."""
        if self._local is None:
            from trackkit.local_registry import LocalRegistry

            self._local = LocalRegistry(self._local_path)
        return self._local

    def check_registration(self, name: str, source: str, run_id: str | None) -> str | None:
        """Refuse what W&B cannot register; the run ``source`` was logged from, when known."""
        collection(name)
        if not source.startswith(URI_PREFIX):
            raise InvalidInput(
                f"the wandb backend registers models logged with log_model ({URI_PREFIX}... "
                f"URIs), not {source!r}"
            )
        return run_id if run_id is not None else self._run_of(source)

    def _run_of(self, source: str) -> str | None:
        """The run a model URI was logged from, when this machine logged it."""
        path, _, ref = source[len(URI_PREFIX) :].rpartition(":")
        parts = path.split("/")
        if len(parts) < 2 or not ref:
            return None
        marker = self._model_store / parts[-2] / parts[-1] / f"{ref}.run_id"
        return marker.read_text() if marker.is_file() else None

    def _member(self, name: str, ref: str) -> Any:
        """The registry version ``<name>:<ref>`` (``v<n>`` or an alias), through the public API."""
        with mapped(f"registered model {name!r} has no {ref!r}"):
            return self._api().artifact(f"{collection(name)}:{ref}", type=MODEL_TYPE)

    def _members(self, name: str) -> list[Any]:
        with mapped(f"registered model {name!r}"):
            found = list(self._api().artifacts(type_name=MODEL_TYPE, name=collection(name)))
        if not found:
            raise NotFound(f"no registered model named {name!r} in the W&B Registry")
        return found

    def _online_version(self, name: str, version: int) -> int:
        """``version`` as W&B numbers it: when replaying offline work, match it by its source."""
        if not self._from_offline:
            return version
        local = self._registry().get_model_version(name, version)
        ref = local.source.rsplit(":", 1)[-1]
        for member in self._members(name):
            if _ref(member) == ref:
                return int(str(member.version).lstrip("v")) + 1
        raise NotFound(
            f"version {version} of {name!r}, registered offline from {local.source}, is not in "
            "the W&B Registry yet; run `wandb sync` on its run, then `trackkit sync` again"
        )

    def create_model_version(
        self, name: str, source: str, run_id: str | None, description: str | None
    ) -> ModelVersion:
        self.check_registration(name, source, run_id)
        target = collection(name)
        ref = source.rsplit(":", 1)[-1]
        if self._from_offline:  # a replay after an interrupted sync must not link twice
            with contextlib.suppress(NotFound):
                for member in self._members(name):
                    if _ref(member) == ref:
                        return _version_of(name, member)
        path = source[len(URI_PREFIX) :]
        with mapped(f"model artifact {path}"):
            artifact = self._api().artifact(path, type=MODEL_TYPE)
        with mapped(f"link {path} to {target}"):
            linked = artifact.link(target)
            if description:
                linked.description = description
                linked.save()
        return _version_of(name, linked)

    def get_model_version(self, name: str, version: int) -> ModelVersion:
        return _version_of(name, self._member(name, f"v{version - 1}"))

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        return _version_of(name, self._member(name, alias))

    def list_model_versions(self, name: str) -> list[ModelVersion]:
        return [_version_of(name, m) for m in self._members(name)]

    def set_model_alias(self, name: str, alias: str, version: int) -> None:
        target = self._member(name, f"v{self._online_version(name, version) - 1}")
        try:
            holder = self._member(name, alias)
        except NotFound:
            holder = None
        if holder is not None and holder.version != target.version:
            # W&B keeps an alias on one version of a collection; move it explicitly
            with mapped(f"move {name}@{alias}"):
                holder.aliases = [a for a in holder.aliases if a != alias]
                holder.save()
        if alias not in target.aliases:
            with mapped(f"set {name}@{alias}"):
                target.aliases = [*target.aliases, alias]
                target.save()

    def delete_model_alias(self, name: str, alias: str) -> None:
        holder = self._member(name, alias)
        with mapped(f"delete {name}@{alias}"):
            holder.aliases = [a for a in holder.aliases if a != alias]
            holder.save()

    def update_model_version(self, name: str, version: int, description: str) -> ModelVersion:
        member = self._member(name, f"v{self._online_version(name, version) - 1}")
        with mapped(f"update version {version} of {name!r}"):
            member.description = description
            member.save()
        return _version_of(name, member)

    def update_registered_model(self, name: str, description: str) -> RegisteredModel:
        """Set the description of the model's Registry collection."""
        versions = self.list_model_versions(name)  # NotFound for an unknown model
        with mapped(f"update registered model {name!r}"):
            found = self._api().artifact_collection(MODEL_TYPE, collection(name))
            found.description = description
            found.save()
        return RegisteredModel(
            name=name,
            description=found.description or None,
            aliases={a: v.version for v in versions for a in v.aliases},
            latest_version=max(v.version for v in versions),
        )

    def list_registered_models(self) -> list[RegisteredModel]:
        """The model Registry's collections, with their versions' aliases. A collection's W&B
        tags (labels) become tags: ``key:value`` splits at its first ``:``, a plain label maps
        to ``""``."""
        with mapped("list the models of the W&B Registry"):
            collections = list(self._api().artifact_collections(REGISTRY_PROJECT, MODEL_TYPE))
        found = []
        for item in collections:
            name = str(item.name)
            try:
                versions = self.list_model_versions(name)
            except NotFound:  # a collection without versions
                versions = []
            labels = [str(t) for t in (getattr(item, "tags", None) or ())]
            found.append(
                RegisteredModel(
                    name=name,
                    description=item.description or None,
                    aliases={a: v.version for v in versions for a in v.aliases},
                    latest_version=max((v.version for v in versions), default=None),
                    tags=dict(label.partition(":")[::2] for label in labels),
                )
            )
        return found

    def local_models(self) -> list[RegisteredModel]:
        """The registered models of the registry kept offline."""
        return self._registry().list_registered_models()

    def set_model_version_tag(self, name: str, version: int, key: str, value: str) -> None:
        """Keep the tag in the version's trackkit metadata. W&B applies a linked artifact's
        metadata to its source artifact, so every link of the same logged model shares it."""
        member = self._member(name, f"v{self._online_version(name, version) - 1}")
        metadata = dict(member.metadata or {})
        own = dict(metadata.get("trackkit") or {})
        own["tags"] = {**(own.get("tags") or {}), key: value}
        metadata["trackkit"] = own
        with mapped(f"tag version {version} of {name!r}"):
            member.metadata = metadata
            member.save()

    def close(self) -> None:
        if self._local is not None:
            self._local.close()
            self._local = None
