"""Registered-model descriptions and model-version tags on every backend.

MLflow is read back through MlflowClient, Neptune debug through the client's own objects
(``fetch``), the offline registries through their sqlite file and the deferred journal, and
W&B online through the fake ``wandb.Api`` of tests/test_wandb.py (no W&B server runs here).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import trackkit
from test_wandb import FAST, FakeWandbApi
from trackkit import journal as jn
from trackkit.backends.wandb.backend import WandbBackend
from trackkit.entities import ModelVersion
from trackkit.local_registry import LocalRegistry

DESCRIPTION = "NYC taxi ride duration (minutes) from pickup/dropoff zones and trip distance"


def _deferred(journal_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(journal_dir.glob("deferred-*.db")):
        journal = jn.Journal(path, own=False)
        found += [(row[2] or "", json.loads(row[6] or "{}")) for row in journal.pending(1000)]
        journal.close()
    return found


def test_model_version_keeps_positional_construction_and_defaults_to_no_tags() -> None:
    version = ModelVersion("m", 1, (), None, "runs:/r/model", None, None)
    assert version.tags == {}
    assert hash(version) == hash(ModelVersion("m", 1, (), None, "runs:/r/model", None, None))


# -- MLflow --------------------------------------------------------------------------------------
def test_mlflow_stores_the_model_description_and_version_tags(
    mlflow_tracker, mlflow_client
) -> None:  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LinearRegression

    with mlflow_tracker.start_run(experiment="e") as run:
        ref = run.log_model(LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0]))
    mlflow_tracker.register_model(ref, "ride")
    mlflow_tracker.set_model_alias("ride", "production", 1)
    updated = mlflow_tracker.update_registered_model("ride", DESCRIPTION)
    assert (updated.description, updated.aliases, updated.latest_version) == (
        DESCRIPTION,
        {"production": 1},
        1,
    )
    mlflow_tracker.set_model_version_tag("ride", 1, "validated", True)
    mlflow_tracker.set_model_version_tag("ride", "1", "rmse", 5.25)
    assert mlflow_client.get_registered_model("ride").description == DESCRIPTION
    assert mlflow_client.get_model_version("ride", "1").tags == {
        "validated": "True",
        "rmse": "5.25",
    }
    assert mlflow_tracker.get_model_version("ride", 1).tags == {"validated": "True", "rmse": "5.25"}
    assert [m.description for m in mlflow_tracker.list_registered_models()] == [DESCRIPTION]
    with pytest.raises(trackkit.NotFound):
        mlflow_tracker.update_registered_model("nope", "x")
    with pytest.raises(trackkit.NotFound):
        mlflow_tracker.set_model_version_tag("ride", 9, "k", "v")
    with pytest.raises(trackkit.InvalidInput):
        mlflow_tracker.set_model_version_tag("ride", 1, "", "v")
    with pytest.raises(trackkit.InvalidInput):
        mlflow_tracker.update_registered_model("ride", None)  # type: ignore[arg-type]


# -- the local registry (offline modes) -----------------------------------------------------------
def test_a_registry_file_from_before_descriptions_and_tags_still_opens(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE versions(name TEXT, version INTEGER, source TEXT, run_id TEXT, "
        "description TEXT, created REAL, PRIMARY KEY (name, version));"
        "CREATE TABLE aliases(name TEXT, alias TEXT, version INTEGER, "
        "PRIMARY KEY (name, alias));"
        "INSERT INTO versions VALUES ('ride', 1, 'runs:/r/model', 'r', 'old', 0);"
    )
    db.commit()
    db.close()
    registry = LocalRegistry(path)
    assert registry.get_model_version("ride", 1).tags == {}
    assert registry.update_registered_model("ride", "now described").description == "now described"
    registry.set_model_version_tag("ride", 1, "k", "v")
    assert registry.get_model_version("ride", 1).tags == {"k": "v"}
    registry.close()


def test_wandb_offline_keeps_them_locally_and_defers_them(tmp_path: Path) -> None:
    root = tmp_path / "w"
    tracker = trackkit.get_tracker("wandb", mode="offline", dir=root, settings=FAST)
    source = "wandb-artifact:///p/m:trackkit-1"
    tracker.register_model(source, "ride")
    with pytest.raises(trackkit.NotFound):
        tracker.update_registered_model("other", DESCRIPTION)
    with pytest.raises(trackkit.NotFound):
        tracker.set_model_version_tag("ride", 2, "k", "v")
    assert tracker.update_registered_model("ride", DESCRIPTION).description == DESCRIPTION
    tracker.set_model_version_tag("ride", 1, "validated", "yes")
    assert tracker.get_model_version("ride", 1).tags == {"validated": "yes"}
    [model] = tracker.list_registered_models()
    assert (model.name, model.description, model.latest_version) == ("ride", DESCRIPTION, 1)
    tracker.close()
    # the registry file itself, read with sqlite
    db = sqlite3.connect(root / "trackkit-wandb" / "registry.db")
    assert db.execute("SELECT name, description FROM models").fetchall() == [("ride", DESCRIPTION)]
    assert db.execute("SELECT * FROM version_tags").fetchall() == [("ride", 1, "validated", "yes")]
    db.close()
    assert _deferred(tmp_path / ".trackkit" / "journal") == [
        ("register_model", {"source": source, "name": "ride", "description": None}),
        ("update_registered_model", {"name": "ride", "description": DESCRIPTION}),
        (
            "set_model_version_tag",
            {"name": "ride", "version": 1, "key": "validated", "value": "yes"},
        ),
    ]


class _Collection:
    """A W&B Registry collection as ``wandb.Api().artifact_collection`` returns it (fake)."""

    def __init__(self, api: FakeWandbApi, name: str) -> None:
        self._api, self.name, self.description = api, name, None

    def save(self) -> None:
        self._api.calls.append(("save collection", self.name, self.description))


def test_wandb_online_describes_the_collection_and_tags_the_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeWandbApi()
    collections: dict[str, _Collection] = {}

    def artifact_collection(type_name: str, name: str) -> _Collection:
        fake.calls.append(("artifact_collection", type_name, name))
        return collections.setdefault(name, _Collection(fake, name))

    fake.artifact_collection = artifact_collection  # type: ignore[attr-defined]
    monkeypatch.setattr(WandbBackend, "api_factory", lambda **_: fake)
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    fake.add_logged(
        "ride",
        "model-run1",
        tmp_path,
        {"trackkit": {"ref": "trackkit-1", "run_id": "run1"}},
        ["trackkit-1"],
    )
    tracker = trackkit.get_tracker("wandb", mode="online", dir=tmp_path / "w", settings=FAST)
    tracker.register_model("wandb-artifact:///ana/ride/model-run1:trackkit-1", "ride")
    model = tracker.update_registered_model("ride", DESCRIPTION)
    assert (model.description, model.latest_version) == (DESCRIPTION, 1)
    assert collections["wandb-registry-model/ride"].description == DESCRIPTION
    assert ("save collection", "wandb-registry-model/ride", DESCRIPTION) in fake.calls
    tracker.set_model_version_tag("ride", 1, "validated", "yes")
    [member] = fake.collections[("wandb-registry-model", "ride")]
    assert member.metadata["trackkit"]["tags"] == {"validated": "yes"}
    assert tracker.get_model_version("ride", 1).tags == {"validated": "yes"}
    with pytest.raises(trackkit.NotFound):
        tracker.update_registered_model("other", DESCRIPTION)
    tracker.close()


# -- Neptune ----------------------------------------------------------------------------------------
def test_neptune_debug_sets_the_model_description_and_version_fields() -> None:
    tracker = trackkit.get_tracker("neptune", mode="debug")
    tracker.register_model("runs:/RUN-1/model", "ride")
    tracker.register_model("runs:/RUN-2/model", "ride")
    model = tracker.update_registered_model("ride", DESCRIPTION)
    assert (model.description, model.latest_version) == (DESCRIPTION, 2)
    tracker.set_model_version_tag("ride", 2, "validated", "yes")
    model_obj, versions = tracker.backend.model_objects("ride")  # type: ignore[attr-defined]
    assert model_obj["sys/description"].fetch() == DESCRIPTION
    assert versions[2]["trackkit/tags/validated"].fetch() == "yes"
    assert tracker.get_model_version("ride", 2).tags == {"validated": "yes"}
    assert tracker.get_model_version("ride", 1).tags == {}
    with pytest.raises(trackkit.NotFound):
        tracker.set_model_version_tag("ride", 3, "k", "v")
    tracker.close()


def test_neptune_offline_keeps_them_locally_and_defers_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACKKIT_OFFLINE", "1")
    tracker = trackkit.get_tracker(
        "neptune", project="ws/proj", journal_dir=tmp_path / "tk", api_token="t" * 40
    )
    assert tracker.backend.mode == "offline"  # type: ignore[attr-defined]
    tracker.register_model("runs:/abc/model", "ride")
    assert tracker.update_registered_model("ride", DESCRIPTION).description == DESCRIPTION
    tracker.set_model_version_tag("ride", 1, "validated", True)
    assert tracker.get_model_version("ride", 1).tags == {"validated": "True"}
    tracker.close()
    assert _deferred(tmp_path / "tk" / "journal")[1:] == [
        ("update_registered_model", {"name": "ride", "description": DESCRIPTION}),
        (
            "set_model_version_tag",
            {"name": "ride", "version": 1, "key": "validated", "value": "True"},
        ),
    ]
