"""The core's local registry (offline modes): registered models carry their description and
tags, read back with ``sqlite3`` on the registry file as well as through trackkit."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import trackkit
from trackkit.entities import RegisteredModel
from trackkit.errors import NotFound
from trackkit.local_registry import LocalRegistry


def test_registered_models_carry_description_and_tags(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    registry = LocalRegistry(path)
    registry.create_model_version("ride", "runs:/a/model", "a", "first")
    registry.create_model_version("ride", "runs:/b/model", "b", None)
    registry.create_model_version("taxi", "runs:/a/model", "a", None)
    registry.set_model_alias("ride", "production", 1)
    updated = registry.update_registered_model("ride", "ride durations")
    registry.set_registered_model_tag("ride", "team", "taxi")
    registry.set_registered_model_tag("ride", "team", "rides")  # setting it again replaces it
    registry.set_registered_model_tag("ride", "course", "mlops")
    assert updated.description == "ride durations"
    assert registry.list_registered_models() == [
        RegisteredModel(
            name="ride",
            description="ride durations",
            aliases={"production": 1},
            latest_version=2,
            tags={"course": "mlops", "team": "rides"},
        ),
        RegisteredModel(name="taxi", description=None, aliases={}, latest_version=1, tags={}),
    ]
    with pytest.raises(NotFound, match="nope"):
        registry.set_registered_model_tag("nope", "k", "v")
    registry.close()
    with sqlite3.connect(path) as db:  # what the file holds, read without trackkit
        assert db.execute("SELECT * FROM model_tags ORDER BY key").fetchall() == [
            ("ride", "course", "mlops"),
            ("ride", "team", "rides"),
        ]
        assert db.execute("SELECT * FROM models").fetchall() == [("ride", "ride durations")]


def test_a_registry_file_from_before_model_tags_opens_and_gains_them(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE versions(name TEXT, version INTEGER, source TEXT, run_id TEXT, "
            "description TEXT, created REAL, PRIMARY KEY (name, version));"
            "CREATE TABLE aliases(name TEXT, alias TEXT, version INTEGER, "
            "PRIMARY KEY (name, alias));"
            "INSERT INTO versions VALUES ('ride', 1, 'runs:/a/model', 'a', NULL, 0);"
        )
    registry = LocalRegistry(path)
    [model] = registry.list_registered_models()
    assert (model.name, model.description, model.tags) == ("ride", None, {})
    registry.set_registered_model_tag("ride", "team", "taxi")
    assert registry.list_registered_models()[0].tags == {"team": "taxi"}
    registry.close()


def test_an_offline_tracker_lists_the_description_it_was_given(tmp_path: Path) -> None:
    pytest.importorskip("neptune")
    tracker = trackkit.get_tracker(
        "neptune", mode="offline", data_dir=tmp_path / ".neptune", registry_path=tmp_path / "r.db"
    )
    with tracker.start_run(experiment="reg") as run:
        run.log_metric("m", 1.0)
    tracker.register_model(f"runs:/{run.id}/model", "ride")
    tracker.update_registered_model("ride", "ride durations")
    [model] = tracker.list_registered_models()
    assert model.description == "ride durations"
    tracker.close()
